"""facelib.tuning: pivotal tuning never touches G, gains on a real photo, saves compactly, refuses another base."""
from __future__ import annotations

import json

import pytest
import torch

import facelib
from facelib.errors import CheckpointError, InputError
from facelib.projection import load_projection
from facelib.tuning import TuneConfig, Tuning, as_generator, load_tuning, tune_generator, tuning_path
from facelib.weights import state_fingerprint

from .conftest import make_small_generator


def _targets(G, n=2, seed=3):
    """Photos slightly outside the generator's range: renderings plus a fixed pattern."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        img = G.synthesis(G.mapping(torch.randn(n, G.style_dim, generator=g)))
    return (img + 0.3 * torch.randn(img.shape, generator=g)).clamp(-1, 1)


@pytest.fixture
def projected(single_thread):
    G = make_small_generator()
    x = _targets(G)
    p = facelib.project(G, x, steps=5, lpips=None, mse_weight=1.0, scheduler="constant", progress=False)
    return G, p, x


def test_tuning_never_modifies_G_and_improves_each_photo(projected):
    G, p, x = projected
    before = state_fingerprint(G.state_dict())
    flags = [q.requires_grad for q in G.parameters()]
    t = tune_generator(G, p, x, steps=20, lr=3e-3, lpips=None, progress=False)
    assert state_fingerprint(G.state_dict()) == before
    assert [q.requires_grad for q in G.parameters()] == flags
    assert isinstance(t, Tuning) and len(t) == 2 and len(t.generators) == 2
    assert t.generators[0] is not t.generators[1] and t.generators[0] is not G
    for m in t.metrics:
        assert m["psnr"] > m["psnr_before"] + 0.5
        assert m["steps_done"] == 20 and not m["early_stopped"]
    # the mapping network is not tuned; each delta holds only synthesis tensors
    assert all(not k.startswith("style.") for d in t.deltas for k in d)
    # the stored images are the tuned generators' renderings of the pivots
    torch.testing.assert_close(t[1].render(p.wplus[1]), t.images[1:2], atol=1e-5, rtol=0)
    assert t.history[0]["mse"][-1] < t.history[0]["mse"][0]
    with pytest.raises(InputError, match="tuning\\[i\\]"):
        t.generator
    assert as_generator(t[0]) is t.generators[0] and as_generator(G) is G


def test_batched_tuning_matches_single_photo(projected):
    G, p, x = projected
    both = tune_generator(G, p, x, steps=6, lr=3e-3, lpips=None, progress=False)
    one = tune_generator(G, p[1], x[1:2], steps=6, lr=3e-3, lpips=None, progress=False)
    torch.testing.assert_close(both.images[1], one.images[0], atol=2e-4, rtol=0)


def test_save_load_round_trip_and_fp16_error(projected, tmp_path):
    G, p, x = projected
    t = tune_generator(G, p, x, steps=10, lr=3e-3, lpips=None, progress=False)
    path = tmp_path / "ann.tune.pt"
    meta_path = t.save(path)
    assert meta_path == tmp_path / "ann.tune.json"
    meta = json.loads(meta_path.read_text())
    assert meta["format"] == "facelib.tuning" and meta["weights_sha256"] == t.weights_sha256
    dtypes = {v["dtype"] for d in meta["deltas"] for v in d.values()}
    assert "float16" in dtypes
    # compact: the diff file is smaller than the full synthesis weights per photo in float32
    full = sum(q.numel() * 4 for k, q in G.named_parameters() if not k.startswith("style."))
    assert path.stat().st_size < 2 * full * 0.75
    back = load_tuning(path, G)
    assert back.config == t.config and back.metrics == t.metrics
    for a, b in zip(back.generators, t.generators):
        sa, sb = dict(a.named_parameters()), dict(b.named_parameters())
        for k in sa:  # float16 rounding of the deltas only
            torch.testing.assert_close(sa[k], sb[k], atol=1e-3 * (1 + float(sb[k].abs().max())), rtol=0)
    err = (back.render(p.wplus[0], index=0) - t.render(p.wplus[0], index=0)).abs().max()
    assert float(err) < 1e-2
    torch.testing.assert_close(back.images, t.images, atol=2e-3, rtol=0)  # float16 renderings


def test_load_refuses_another_base(projected, tmp_path):
    G, p, x = projected
    t = tune_generator(G, p, x[:1].expand(2, -1, -1, -1), steps=2, lr=3e-3, lpips=None, progress=False)
    t.save(tmp_path / "a.tune.pt")
    other = make_small_generator(seed=1)
    with pytest.raises(CheckpointError, match="weights hash"):
        load_tuning(tmp_path / "a.tune.pt", other)
    with pytest.raises(InputError, match="generator"):
        tune_generator(other, p, x, steps=1, lpips=None, progress=False)


def test_bad_settings_are_named():
    with pytest.raises(InputError, match="steps"):
        TuneConfig(steps=-1)
    with pytest.raises(InputError, match="lr"):
        TuneConfig(lr=0)
    with pytest.raises(InputError, match="nothing to fit"):
        TuneConfig(l2_weight=0, lpips_weight=0)


def test_locality_regulariser_keeps_other_latents_closer(projected):
    G, p, x = projected
    free = tune_generator(G, p[0], x[:1], steps=15, lr=3e-3, lpips=None, progress=False)
    held = tune_generator(G, p[0], x[:1], steps=15, lr=3e-3, lpips=None, locality_weight=10.0,
                          locality_alpha=2.0, progress=False)
    assert "locality" in held.history[0] and "locality" not in free.history[0]
    with torch.no_grad():
        w = G.mapping(torch.randn(4, G.style_dim, generator=torch.Generator().manual_seed(9)))
        ref = G.synthesis(w)
        d_free = (free.generator.synthesis(w) - ref).square().mean()
        d_held = (held.generator.synthesis(w) - ref).square().mean()
    assert float(d_held) < float(d_free)


def test_tuning_path():
    assert tuning_path("out/latents/ann/0.pt").as_posix() == "out/latents/ann/0.tune.pt"


@pytest.mark.slow
def test_real_photo_gains_3db_over_its_projection(single_thread):
    """A real aligned photo lies outside a small random generator's range: tuning its
    synthesis weights at PTI's lr (3e-4, 200 steps, MSE only) closes part of the gap."""
    skdata = pytest.importorskip("skimage.data")
    pytest.importorskip("dlib")
    try:
        face = facelib.align_faces(skdata.astronaut(), output_size=64)[0]
    except facelib.DependencyError as e:
        pytest.skip(str(e))
    G = make_small_generator()
    p = facelib.project(G, face.image, steps=100, lpips=None, mse_weight=1.0, scheduler="constant", progress=False)
    t = tune_generator(G, p, face.image, steps=200, lpips=None, progress=False)
    gain = t.metrics[0]["psnr"] - t.metrics[0]["psnr_before"]
    assert t.config.lr == 3e-4 and gain >= 3.0, t.metrics[0]
    assert abs(t.metrics[0]["psnr_before"] - p.metrics[0]["psnr"]) < 1e-3


@pytest.mark.slow
def test_cli_project_tune_then_edits_render_tuned_and_paste_back(tmp_path, single_thread, capsys):
    """project --tune writes <stem>.tune.pt beside the latent; mix picks it up, --paste-back writes the photo."""
    skdata = pytest.importorskip("skimage.data")
    pytest.importorskip("dlib")
    import numpy as np
    from PIL import Image

    from facelib.align_batch import align_folder
    from facelib.cli import main

    photos = tmp_path / "photos" / "ann"
    photos.mkdir(parents=True)
    Image.fromarray(skdata.astronaut()).save(photos / "a.png")
    Image.fromarray(np.ascontiguousarray(skdata.astronaut()[:, ::-1])).save(photos / "b.png")
    try:
        align_folder(tmp_path / "photos", tmp_path / "aligned", output_size=64, progress=False, layout="mirror")
    except facelib.DependencyError as e:
        pytest.skip(str(e))
    lat = tmp_path / "latents"
    assert main(["project", str(tmp_path / "aligned"), str(lat), "--steps", "3", "--lpips", "none", "--tune",
                 "--tune-steps", "4", "--tune-lr", "3e-3", "--quiet"]) == 0
    assert (lat / "ann" / "a.tune.pt").is_file() and (lat / "ann" / "a.tune.json").is_file()
    meta = json.loads((lat / "ann" / "a.tune.json").read_text())
    assert meta["config"]["steps"] == 4 and meta["metrics"][0]["psnr"] > meta["metrics"][0]["psnr_before"]
    assert main(["project", str(tmp_path / "aligned"), str(lat), "--steps", "3", "--lpips", "none", "--tune",
                 "--tune-steps", "4", "--tune-lr", "3e-3", "--quiet"]) == 0
    assert "tuned 0, skipped 2" in capsys.readouterr().out
    out = tmp_path / "edits" / "mix.png"
    assert main(["mix", str(lat / "ann" / "a.pt"), str(lat / "ann" / "b.pt"), str(out),
                 "--paste-back", str(tmp_path / "aligned" / "ann" / "a.png")]) == 0
    edit = json.loads((tmp_path / "edits" / "mix.edit.json").read_text())
    assert edit["tuning"].endswith("a.tune.pt")
    pasted = Image.open(tmp_path / "edits" / "mix.photo.png")
    assert pasted.size[0] == 512 and pasted.size[1] >= 512  # the smoke-run stamp adds a caption band
    # already done: a missing pasted photo is made from the saved image; plain rendering is another setting
    (tmp_path / "edits" / "mix.photo.png").unlink()
    capsys.readouterr()
    assert main(["mix", str(lat / "ann" / "a.pt"), str(lat / "ann" / "b.pt"), str(out),
                 "--paste-back", str(tmp_path / "aligned" / "ann" / "a.png")]) == 0
    assert "already done" in capsys.readouterr().out and (tmp_path / "edits" / "mix.photo.png").is_file()
    assert main(["mix", str(lat / "ann" / "a.pt"), str(lat / "ann" / "b.pt"), str(out), "--no-tuning"]) == 1
    assert "tuning" in capsys.readouterr().out
    plain = tmp_path / "edits" / "plain.png"
    assert main(["mix", str(lat / "ann" / "a.pt"), str(lat / "ann" / "b.pt"), str(plain), "--no-tuning"]) == 0
    assert np.abs(np.asarray(Image.open(out), float) - np.asarray(Image.open(plain), float)).max() > 0
    # a missing alignment fails before anything is written
    bad = tmp_path / "edits" / "bad.png"
    assert main(["mix", str(lat / "ann" / "a.pt"), str(lat / "ann" / "b.pt"), str(bad),
                 "--paste-back", str(tmp_path / "nothing.png")]) == 1
    assert not bad.exists()


def test_edits_and_face_swap_render_through_a_tuning(projected):
    from facelib.edits import render

    from .test_losses import TinyIdNet

    G, p, x = projected
    t = tune_generator(G, p[0], x[:1], steps=5, lr=3e-3, lpips=None, progress=False)
    torch.testing.assert_close(render(t, p.wplus[:1], noise=p[0].noises), t.images, atol=1e-5, rtol=0)
    table = facelib.style_table(t, p[0], p[1], progress=False)
    torch.testing.assert_close(table.content_images, t.images, atol=1e-5, rtol=0)
    plain = facelib.style_table(G, p[0], p[1], progress=False)
    assert float((table.mixed_images - plain.mixed_images).detach().abs().max()) > 1e-3
    r = facelib.face_swap(t, TinyIdNet(), x[1:2], p[0], steps=2, lpips=None, judge=False, progress=False,
                          mask="ellipse")
    assert "+tuned-" in r.weights_sha256 and r.weights_sha256.startswith(t.weights_sha256)
    with pytest.raises(InputError, match="tuning\\[i\\]"):
        facelib.style_table(tune_generator(G, p, x, steps=1, lpips=None, progress=False), p[0], p[1])


def test_a_projection_carries_its_tuning_into_edits_and_previews(projected, tmp_path):
    """attach_tuning / load_tuned_projection: edits given the projection render through its tuning,
    selection carries it, a tuning of other pivots or of another base is refused; previews switch."""
    from facelib import previews
    from facelib.tuning import attach_tuning, load_tuned_projection

    from .test_losses import TinyIdNet

    G, p, x = projected
    t = tune_generator(G, p, x, steps=5, lr=3e-3, lpips=None, progress=False)
    tp = attach_tuning(p, t)
    assert tp.tuning is t and "tuned" in repr(tp) and tp[1].tuning.names == t[1].names
    with_t = facelib.style_table(G, tp[0], p[1], progress=False)
    through = facelib.style_table(t[0], p[0], p[1], progress=False)
    torch.testing.assert_close(with_t.mixed_images, through.mixed_images, atol=1e-6, rtol=0)
    plain = facelib.style_table(G, p[0], p[1], progress=False)
    assert float((with_t.mixed_images - plain.mixed_images).detach().abs().max()) > 1e-3
    r = facelib.face_swap(G, TinyIdNet(), x[1:2], tp[0], steps=1, lpips=None, judge=False, progress=False,
                          mask="ellipse")
    assert "+tuned-" in r.weights_sha256
    with pytest.raises(InputError, match="one photo at a time"):
        facelib.style_table(G, tp, p[1])
    with pytest.raises(InputError, match="pivots"):
        attach_tuning(p[0], t[1])
    with pytest.raises(InputError, match="concatenate"):
        facelib.Projection.cat([tp[0], tp[1]])
    with pytest.raises(InputError, match="another generator"):
        facelib.style_table(make_small_generator(seed=7), tp[0], p[1])
    # saved beside the projection, restored with it
    p[0].save(tmp_path / "a.pt")
    t[0].save(tuning_path(tmp_path / "a.pt"))
    back = load_tuned_projection(tmp_path / "a.pt", G)
    torch.testing.assert_close(facelib.style_table(G, back, p[1], progress=False).mixed_images,
                               with_t.mixed_images, atol=2e-3, rtol=0)  # float16 deltas
    p[1].save(tmp_path / "b.pt")
    assert load_tuned_projection(tmp_path / "b.pt", G).tuning is None
    # previews: tuned=None follows the tuning, True / False choose, True without one is an error
    mix = previews.MixPreview(G, tp[0], p[1], cell=32)
    assert mix.has_tuning and mix.generator() is t.generators[0] and mix.generator(False) is G
    a, b = mix(rows="all", tuned=True), mix(rows="all", tuned=False)
    assert a.tobytes() != b.tobytes() and mix(rows="all").tobytes() == a.tobytes()
    delta = previews.DeltaPreview(G, p[0], p.wplus[1] - p.wplus[0], cell=32, tuning=t[0])
    assert delta(tuned=True).tobytes() != delta(tuned=False).tobytes()
    bare = previews.MixPreview(G, p[0], p[1], cell=32)
    assert not bare.has_tuning and bare.generator() is G
    with pytest.raises(InputError, match="no pivotal tuning"):
        bare(tuned=True)


def test_tuning_toggle_is_disabled_without_a_tuning():
    pytest.importorskip("ipywidgets")
    from facelib.widgets import tuning_toggle

    box, get = tuning_toggle(False, True)
    assert box.disabled and not box.value and get() is False and "TUNE" in box.tooltip
    box, get = tuning_toggle(True, True)
    assert get() is True
    box.value = False
    assert get() is False


def test_tune_folder_keeps_finished_tunings_of_other_settings(single_thread, tmp_path, monkeypatch):
    """A finished tuning is skipped with the same settings, kept byte-identical with others unless
    overwrite, its lost rendering is remade from the file; Ctrl-C lists what was not reached."""
    import facelib.tuning as tuning_mod
    from facelib.errors import BatchInterrupted
    from facelib.grids import to_pil
    from facelib.projection_folder import project_folder
    from facelib.tuning import tune_folder

    G = make_small_generator()
    (tmp_path / "aligned" / "ann").mkdir(parents=True)
    for i, im in enumerate(to_pil(_targets(G, n=2))):
        im.save(tmp_path / "aligned" / "ann" / f"{i}.png")
    src, lat = tmp_path / "aligned", tmp_path / "latents"
    project_folder(src, lat, G, steps=2, lpips=None, mse_weight=1.0, progress=False)
    fast = dict(lpips=None, progress=False, lr=3e-3)
    first = tune_folder(src, lat, G, steps=2, **fast)
    assert len(first.written) == 2 and first.ok
    files = sorted(p for p in (lat / "ann").iterdir() if ".tune." in p.name)
    assert [p.name for p in files] == ["0.tune.json", "0.tune.png", "0.tune.pt",
                                       "1.tune.json", "1.tune.png", "1.tune.pt"]
    before = {p: p.read_bytes() for p in files}
    assert len(tune_folder(src, lat, G, steps=2, **fast).skipped) == 2
    other = tune_folder(src, lat, G, steps=3, **fast)
    assert not other.written and len(other.kept) == 2 and other.nothing_done and not other.ok
    assert "steps 2 (now 3)" in next(iter(other.kept.values())) and "rerun with --overwrite" in other.summary()
    assert {p: p.read_bytes() for p in files} == before
    (lat / "ann" / "0.tune.png").unlink()
    again = tune_folder(src, lat, G, steps=2, **fast)
    assert len(again.written) == 1 and (lat / "ann" / "0.tune.png").is_file()
    assert json.loads((lat / "ann" / "0.tune.json").read_bytes()) == json.loads(before[lat / "ann" / "0.tune.json"])
    replaced = tune_folder(src, lat, G, steps=3, overwrite=True, **fast)
    assert len(replaced.written) == 2
    assert json.loads((lat / "ann" / "1.tune.json").read_text())["config"]["steps"] == 3
    real = tuning_mod.tune_generator
    calls = []

    def interrupted_on_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(tuning_mod, "tune_generator", interrupted_on_second)
    with pytest.raises(BatchInterrupted) as e:
        tune_folder(src, lat, G, steps=4, overwrite=True, batch_size=1, **fast)
    r = e.value.result
    assert r.interrupted and len(r.written) == 1 and [p.name for p in r.not_reached] == ["1.png"]
    assert "not reached" in r.summary()


def test_tune_folder_batches_by_memory_and_splits_on_out_of_memory(single_thread, tmp_path, monkeypatch):
    """Photos are tuned together when memory allows (the plan is a note), the result matches
    one-at-a-time tuning up to float rounding, a batch that runs out of memory is halved, and one
    photo that cannot fit is refused before anything large is allocated."""
    import facelib.memory as memory
    import facelib.tuning as tuning_mod
    from facelib.errors import MemoryLimitError
    from facelib.grids import to_pil
    from facelib.projection_folder import project_folder
    from facelib.tuning import tune_folder

    G = make_small_generator()
    (tmp_path / "aligned" / "ann").mkdir(parents=True)
    for i, im in enumerate(to_pil(_targets(G, n=3))):
        im.save(tmp_path / "aligned" / "ann" / f"{i}.png")
    src, lat = tmp_path / "aligned", tmp_path / "latents"
    project_folder(src, lat, G, steps=2, lpips=None, mse_weight=1.0, progress=False)
    fast = dict(lpips=None, progress=False, lr=3e-3, steps=3)
    together = tune_folder(src, lat, G, **fast)
    assert len(together.written) == 3 and any("batch size 3 chosen" in n for n in together.notes)
    joint = load_tuning(lat / "ann" / "1.tune.pt", G)
    for f in (lat / "ann").glob("*.tune.*"):
        f.unlink()
    alone = tune_folder(src, lat, G, batch_size=1, **fast)
    assert len(alone.written) == 3 and not alone.notes
    torch.testing.assert_close(load_tuning(lat / "ann" / "1.tune.pt", G).images, joint.images, atol=2e-3, rtol=0)

    real = tuning_mod.tune_generator
    sizes = []

    def oom_over_one(G_, projection, *a, **k):
        sizes.append(len(projection))
        if len(projection) > 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(G_, projection, *a, **k)

    monkeypatch.setattr(tuning_mod, "tune_generator", oom_over_one)
    for f in (lat / "ann").glob("*.tune.*"):
        f.unlink()
    split = tune_folder(src, lat, G, batch_size=3, **fast)
    assert len(split.written) == 3 and sizes[:3] == [3, 1, 2] and "going on with 1" in split.summary()
    monkeypatch.setattr(tuning_mod, "tune_generator", real)
    monkeypatch.setattr(memory, "free_bytes", lambda device="cpu": 10 * 2 ** 20)  # 10 MB free
    for f in (lat / "ann").glob("*.tune.*"):
        f.unlink()
    with pytest.raises(MemoryLimitError, match="pivotal tuning .* needs about"):
        tune_folder(src, lat, G, **fast)
    monkeypatch.setattr(memory, "free_bytes", lambda device="cpu": 1024)  # even the small generator's copy
    with pytest.raises(MemoryLimitError, match="pivotal tuning of 1 image"):
        tune_generator(G, load_projection(lat / "ann" / "0.pt"), src / "ann" / "0.png", **fast)
