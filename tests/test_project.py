"""facelib.projection and facelib.projection_folder: recovery of known latents, schedules, batching,
robustness, persistence, cache, CLI."""
from __future__ import annotations

import json
import logging
import math
import urllib.request
import warnings

import pytest
import torch
from PIL import Image

import facelib
import facelib.projection as P
from facelib.errors import CheckpointError, DependencyError, InputError, OptimisationError, RangeError, ShapeError
from facelib.grids import to_pil
from facelib.projection import ProjectConfig, Projection, load_projection, lr_schedule, project
from facelib.projection_folder import project_folder

from .test_losses import TinyIdNet


def _known_targets(G, n=2, seed=1):
    """Targets rendered from known W+ (a random w per image, every row perturbed)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = G.mapping(torch.randn(n, G.style_dim, generator=g))
        wplus = w[:, None].repeat(1, G.n_latent, 1) + 0.3 * w.std() * torch.randn(n, G.n_latent, G.style_dim,
                                                                                   generator=g)
        return G.synthesis(wplus).clamp(-1, 1), wplus


FAST = dict(lpips=None, mse_weight=1.0, progress=False)


pytestmark = pytest.mark.usefixtures("single_thread")


# ----------------------------------------------------------------------------------------
# Schedules
# ----------------------------------------------------------------------------------------

def test_schedules_follow_their_documented_curves():
    T, lr = 200, 0.1
    assert [lr_schedule("constant", s, T, lr) for s in (0, 50, 199)] == [lr, lr, lr]
    # exp: lr * gamma^step; gamma=None reaches 10 % at the last step
    assert math.isclose(lr_schedule("exp", 10, T, lr, 0.9), lr * 0.9 ** 10)
    assert math.isclose(lr_schedule("exp", T - 1, T, lr), 0.1 * lr, rel_tol=1e-9)
    exp = [lr_schedule("exp", s, T, lr) for s in range(T)]
    assert all(a > b for a, b in zip(exp, exp[1:]))
    # cosine: lr at 0, lr/2 half way, towards 0 at the end
    assert lr_schedule("cosine", 0, T, lr) == lr
    assert math.isclose(lr_schedule("cosine", T // 2, T, lr), lr / 2)
    assert lr_schedule("cosine", T - 1, T, lr) < 1e-3 * lr
    # rampupdown: 0 at step 0, linear to lr by 5 %, flat, half-cosine to 0 over the last 25 %
    ramp = [lr_schedule("rampupdown", s, T, lr) for s in range(T)]
    assert ramp[0] == 0 and math.isclose(ramp[5], lr * 5 / 10)
    assert all(math.isclose(v, lr) for v in ramp[10:150])
    assert math.isclose(ramp[175], lr * 0.5, rel_tol=1e-9)  # mid-way down the cosine
    assert all(a >= b for a, b in zip(ramp[150:], ramp[151:])) and ramp[-1] < 0.01 * lr
    with pytest.raises(InputError, match="scheduler"):
        lr_schedule("linear", 0, T, lr)
    with pytest.raises(InputError, match="scheduler"):
        ProjectConfig(scheduler="linear")


def test_history_records_the_schedule(small_generator):
    G = small_generator
    x, _ = _known_targets(G, 1)
    cfg = ProjectConfig(steps=12, scheduler="rampupdown", lr=0.2, mse_weight=1.0, lpips=None)
    p = project(G, x, config=cfg, progress=False)
    assert p.history[0]["lr"] == [cfg.lr_at(s) for s in range(12)]
    assert set(p.history[0]) == {"lr", "loss", "image_loss", "mse", "noise"}
    h = p.history[0]
    assert all(math.isclose(l, i + 1e5 * nz, rel_tol=1e-5) for l, i, nz in zip(h["loss"], h["image_loss"], h["noise"]))
    assert p.metrics[0]["best_loss"] == min(h["image_loss"])
    assert p.metrics[0]["best_step"] == h["image_loss"].index(min(h["image_loss"]))
    assert p.steps_done == 12 and not p.interrupted


# ----------------------------------------------------------------------------------------
# Quality on the synthetic-truth task
# ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_recovers_latents_made_from_known_wplus(small_generator):
    G = small_generator
    x, true_wplus = _known_targets(G, 2)
    start = project(G, x, steps=0, **FAST)
    p = project(G, x, steps=300, scheduler="constant", **FAST)
    gain = [m["psnr"] - s["psnr"] for m, s in zip(p.metrics, start.metrics)]
    assert all(g >= 10 for g in gain), gain
    assert all(m["psnr"] >= 14 for m in p.metrics), p.metrics
    # W+ proper: the rows moved apart from the broadcast start
    row_spread = (p.wplus - p.wplus.mean(1, keepdim=True)).norm(dim=2).mean(1)
    assert (row_spread > 0.05 * p.wplus.norm(dim=2).mean(1)).all()
    assert p.wplus.shape == true_wplus.shape and p.images.shape == x.shape
    assert p.images.min() >= -1 and p.images.max() <= 1
    # the kept rendering is G(wplus, noises)
    with torch.no_grad():
        again = G.synthesis(p.wplus, noise=p.noises).clamp(-1, 1)
    assert torch.allclose(again, p.images, atol=1e-5)


@pytest.mark.slow
def test_batched_equals_single_with_per_image_seeds(small_generator):
    # Batched convolutions round differently from single-image ones (~1e-7 relative), and Adam's
    # per-element normalisation turns such differences into steps of up to lr; after 30 steps the
    # latents agree to a few 1e-3 (on values of order 1) and the renderings to well under one
    # 8-bit level, which is the tolerance used here.
    G = small_generator
    x, _ = _known_targets(G, 2, seed=2)
    batch = project(G, x, steps=30, seed=7, **FAST)
    assert batch.seeds == [7, 8]
    for i in range(2):
        one = project(G, x[i:i + 1], steps=30, seed=7 + i, **FAST)
        assert torch.allclose(one.wplus, batch.wplus[i:i + 1], atol=1e-2, rtol=0)
        assert torch.allclose(one.images, batch.images[i:i + 1], atol=1e-2, rtol=0)
        assert all(torch.allclose(a, b[i:i + 1], atol=1e-3, rtol=0) for a, b in zip(one.noises, batch.noises))
        assert abs(one.metrics[0]["psnr"] - batch.metrics[i]["psnr"]) < 0.01
        assert one.metrics[0]["best_step"] == batch.metrics[i]["best_step"]
        for a, b in zip(one.history[0]["loss"], batch.history[i]["loss"]):
            assert abs(a - b) <= 1e-4 * abs(a)
        # the selected image's config reproduces it alone
        assert batch[i].config.seed == 7 + i
    # a different seed for the same image gives a different path (the seed matters)
    other = project(G, x[:1], steps=30, seed=8, **FAST)
    assert not torch.allclose(other.wplus, batch.wplus[:1], atol=1e-2)


def test_deterministic_under_seed(small_generator):
    G = small_generator
    x, _ = _known_targets(G, 2)
    a = project(G, x, steps=15, seed=3, **FAST)
    b = project(G, x, steps=15, seed=3, **FAST)
    assert torch.equal(a.wplus, b.wplus) and all(torch.equal(u, v) for u, v in zip(a.noises, b.noises))
    assert a.history == b.history


# ----------------------------------------------------------------------------------------
# Robustness
# ----------------------------------------------------------------------------------------

def test_nan_loss_raises_with_best_so_far(small_generator, monkeypatch):
    G = small_generator
    x, _ = _known_targets(G, 2)
    real = G.synthesis
    calls = {"n": 0}

    def flaky(w, noise=None):
        out = real(w, noise)
        if torch.is_grad_enabled():  # optimisation steps; the final render runs without grad
            calls["n"] += 1
            if calls["n"] > 6:
                out = out * float("nan")
        return out

    monkeypatch.setattr(G, "synthesis", flaky)
    with pytest.raises(OptimisationError, match=r"step 6 .*lower lr") as info:
        project(G, x, steps=20, **FAST)
    best = info.value.best
    assert isinstance(best, Projection) and best.steps_done == 6
    assert torch.isfinite(best.wplus).all() and all(math.isfinite(m["psnr"]) for m in best.metrics)
    # divergence from the very first step leaves nothing to keep
    calls["n"] = 100
    with pytest.raises(OptimisationError) as info:
        project(G, x, steps=5, **FAST)
    assert info.value.best is None


def test_keyboard_interrupt_returns_best_so_far(small_generator, tmp_path):
    G = small_generator
    x, _ = _known_targets(G, 2)
    seen = []

    def on_step(step, total, state):
        seen.append((step, total, len(state.losses), tuple(state.images.shape)))
        if step == 5:
            raise KeyboardInterrupt

    p = project(G, x, steps=50, on_step=on_step, cache_dir=tmp_path / "cache", **FAST)
    assert p.interrupted and p.steps_done == 5 and all(m["interrupted"] for m in p.metrics)
    assert seen[0] == (1, 50, 2, tuple(x.shape)) and len(seen) == 5
    assert torch.isfinite(p.wplus).all()
    assert not list((tmp_path / "cache").rglob("*.pt"))  # unfinished runs are not cached


def test_bad_inputs_are_clear_errors(small_generator, tmp_path):
    G = small_generator
    x, _ = _known_targets(G, 1)
    with pytest.raises(RangeError, match=r"\[-1, 1\]"):
        project(G, x * 3, steps=1, **FAST)
    with pytest.raises(ShapeError):
        project(G, torch.zeros(1, 4, 32, 32), steps=1, **FAST)
    with pytest.raises(InputError, match="unknown option"):
        project(G, x, steps=1, stesp=3, **FAST)
    with pytest.raises(InputError, match="id_net"):
        project(G, x, steps=1, id_weight=1.0, **FAST)
    with pytest.raises(ShapeError, match="init"):
        project(G, x, steps=1, init=torch.zeros(3, 5), **FAST)
    with pytest.raises(InputError, match="no image loss"):
        project(G, x, steps=1, lpips=None, mse_weight=0.0, progress=False)
    with pytest.raises(InputError, match="no such image"):
        project(G, [tmp_path / "missing.png"], steps=1, **FAST)
    with pytest.raises(InputError, match="steps"):
        ProjectConfig(steps=True)
    with pytest.raises(InputError, match="lpips"):
        project(G, x, steps=1, lpips=3, mse_weight=1.0, progress=False)


def test_inputs_paths_pil_and_given_start(small_generator, tmp_path):
    G = small_generator
    x, true_wplus = _known_targets(G, 2)
    big = [im.resize((64, 64)) for im in to_pil(x)]
    big[0].save(tmp_path / "a.png")
    p = project(G, [tmp_path / "a.png", big[1]], steps=2, **FAST)
    assert p.names == ["a", None] and p.images.shape == (2, 3, 32, 32)
    # a list may mix batches, single images and files; every image is kept, in order
    batch, names = P.load_targets([x, x[1], tmp_path / "a.png"], G.resolution)
    assert batch.shape == (4, 3, 32, 32) and names == [None, None, None, "a"]
    assert torch.equal(batch[:2], x) and torch.equal(batch[2], x[1])
    # lpips="none" (as the command line spells it) is off, like None
    assert project(G, x[:1], steps=1, lpips="none", mse_weight=1.0, progress=False).config.lpips is None
    # a start latent with G's stored noise: with 0 steps the result is exactly the target
    q = project(G, x, steps=0, init=true_wplus, optimize_noise=False, **FAST)
    assert q.config.init == "given" and torch.allclose(q.wplus, true_wplus)
    assert all(m["psnr"] > 40 for m in q.metrics)
    # a config object or keyword settings, not both
    r = project(G, x[:1], config=ProjectConfig(steps=3, lpips=None, mse_weight=1.0, seed=5), progress=False)
    assert r.config.steps == 3 and r.config.seed == 5
    with pytest.raises(InputError, match=r"^project: pass either config= or keyword settings, not both "
                                         r"\(got config= and seed, steps\)"):
        project(G, x[:1], config=ProjectConfig(lpips=None), seed=5, steps=2, progress=False)
    # the objects a config cannot hold still go with one
    z = project(G, x[:1], config=ProjectConfig(steps=0, lpips=None, optimize_noise=False), init=true_wplus[:1],
                progress=False)
    assert z.config.init == "given" and torch.allclose(z.wplus, true_wplus[:1])


def test_identity_term(small_generator):
    G = small_generator
    x, _ = _known_targets(G, 2)
    net = TinyIdNet().train()
    ids = []
    p = project(G, x, steps=5, id_net=net, id_weight=0.5, on_step=lambda s, t, state: ids.append(state.id_similarity),
                **FAST)
    assert "id" in p.history[0] and len(p.history[0]["id"]) == 5
    assert ids == [[1 - h["id"][k] for h in p.history] for k in range(5)]  # the step's cosines reach on_step
    assert all(-1 <= m["id_similarity"] <= 1 for m in p.metrics)
    assert net.training and all(q.requires_grad for q in net.parameters())  # restored afterwards


# ----------------------------------------------------------------------------------------
# Persistence and cache
# ----------------------------------------------------------------------------------------

def test_save_load_round_trip(small_generator, tmp_path):
    G = small_generator
    x, _ = _known_targets(G, 3)
    p = project(G, x, steps=6, seed=4, **FAST)
    meta = p.save(tmp_path / "p.pt")
    assert meta == tmp_path / "p.json"
    raw = torch.load(tmp_path / "p.pt", weights_only=True)
    assert set(raw) == {"wplus", "images"} | {f"noise_{k}" for k in range(G.num_layers)}
    side = json.loads(meta.read_text())
    assert side["format"] == "facelib.projection" and side["config"]["seed"] == 4 and side["n"] == 3
    q = load_projection(tmp_path / "p.pt")
    assert torch.equal(q.wplus, p.wplus) and all(torch.equal(a, b) for a, b in zip(q.noises, p.noises))
    assert torch.allclose(q.images, p.images, atol=1e-3)
    assert q.config == p.config and q.metrics == p.metrics and q.history == p.history
    assert q.seeds == [4, 5, 6] and q.target_sha256 == p.target_sha256
    assert not list(tmp_path.glob(".*part*"))  # no temporary files left
    # selecting and concatenating
    one = p[1]
    assert len(one) == 1 and one.config.seed == 5 and torch.equal(one.wplus, p.wplus[1:2])
    back = Projection.cat([p[0], p[1:]])
    assert torch.equal(back.wplus, p.wplus) and back.seeds == p.seeds and back.metrics == p.metrics
    with pytest.raises(InputError):
        Projection.cat([p, project(G, x[:1], steps=1, lr=0.2, **FAST)])
    with pytest.raises(IndexError, match="projection index 3"):
        p.select([0, 3])
    assert facelib.load_projection is load_projection
    # without its sidecar the tensors still load (settings default); a foreign sidecar is refused
    meta.unlink()
    bare = load_projection(tmp_path / "p.pt")
    assert torch.equal(bare.wplus, p.wplus) and bare.config == ProjectConfig() and bare.metrics == [{}] * 3
    meta.write_text(json.dumps({"format": "facelib.swap"}))
    with pytest.raises(CheckpointError, match="sidecar"):
        load_projection(tmp_path / "p.pt")


def test_cache_hit_skips_optimisation(small_generator, tmp_path, monkeypatch):
    G = small_generator
    x, _ = _known_targets(G, 2)
    calls = []
    real = P._project_batch

    def counting(G_, targets, seeds, cfg, **kw):
        calls.append(list(seeds))
        return real(G_, targets, seeds, cfg, **kw)

    monkeypatch.setattr(P, "_project_batch", counting)
    cache = tmp_path / "cache"
    first = project(G, x, steps=8, cache_dir=cache, **FAST)
    assert calls == [[0, 1]] and len(list(cache.rglob("*.pt"))) == 2
    again = project(G, x, steps=8, cache_dir=cache, **FAST)
    assert calls == [[0, 1]]  # nothing optimised
    assert torch.equal(again.wplus, first.wplus) and again.metrics == first.metrics
    # a new image next to a cached one: only the new one is optimised, with its own seed
    y, _ = _known_targets(G, 1, seed=9)
    mixed = project(G, torch.cat([x[:1], y]), steps=8, cache_dir=cache, **FAST)
    assert calls[-1] == [1] and torch.equal(mixed.wplus[:1], first.wplus[:1])
    # different settings or generator weights miss
    project(G, x[:1], steps=9, cache_dir=cache, **FAST)
    assert calls[-1] == [0]
    G.weights_sha256 = "another-file"
    project(G, x[:1], steps=8, cache_dir=cache, **FAST)
    assert calls[-1] == [0] and len(calls) == 4


# ----------------------------------------------------------------------------------------
# LPIPS inside projection
# ----------------------------------------------------------------------------------------

def test_lpips_module_passed_in_without_download(small_generator, monkeypatch):
    lpips = pytest.importorskip("lpips")

    def refuse(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)
    G = small_generator
    x, _ = _known_targets(G, 2)
    p = project(G, x, steps=4, lpips=net, progress=False)
    assert p.config.lpips == "module" and p.lpips == "module"
    assert len(p.history[0]["lpips"]) == 4 and all(m["lpips"] >= 0 for m in p.metrics)
    with torch.no_grad():
        want = net(p.images, x).flatten()
    assert torch.allclose(torch.tensor([m["lpips"] for m in p.metrics]), want, atol=1e-5)


def test_offline_default_warns_once_and_explicit_vgg_raises(small_generator, monkeypatch, tmp_path, caplog):
    import facelib.losses as L

    monkeypatch.setenv("FACELIB_DATA", "")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.chdir(tmp_path)
    if L.find_vgg16_weights() is not None:
        pytest.skip("a VGG16 file is present on this machine")
    monkeypatch.setattr(L, "_WARNED", set())
    G = small_generator
    x, _ = _known_targets(G, 1)
    with caplog.at_level(logging.WARNING):
        a = project(G, x, steps=2, progress=False)  # lpips="auto" by default
        project(G, x, steps=2, progress=False)
    assert len([r for r in caplog.records if "LPIPS is off" in r.getMessage()]) == 1
    assert a.lpips is None and "lpips" not in a.metrics[0] and "lpips" not in a.history[0]
    with pytest.raises(DependencyError, match="never downloads"):
        project(G, x, steps=2, lpips="vgg", progress=False)


# ----------------------------------------------------------------------------------------
# Folders and the command line
# ----------------------------------------------------------------------------------------

def test_cli_project_folder(small_generator, tmp_path, capsys):
    from facelib.cli import main
    from facelib.distributed import item_seed
    from facelib.weights import save_generator

    G = small_generator
    save_generator(G, tmp_path / "G.pt")
    x, _ = _known_targets(G, 2)
    src = tmp_path / "aligned"
    (src / "ann").mkdir(parents=True)
    for i, im in enumerate(to_pil(x)):
        im.save(src / "ann" / f"{i}.png")
    (src / "ann" / "broken.jpg").write_bytes(b"not an image")
    dst = tmp_path / "latents"
    argv = ["project", str(src), str(dst), "--weights", str(tmp_path / "G.pt"), "--steps", "3",
            "--lpips", "none", "--mse-weight", "1", "--batch-size", "4", "--quiet", "--device", "cpu"]
    assert main(argv) == 1  # the broken image is reported
    out = capsys.readouterr().out
    assert "projected 2" in out and "broken.jpg" in out
    for i in range(2):
        assert (dst / "ann" / f"{i}.pt").is_file() and (dst / "ann" / f"{i}.png").is_file()
        p = load_projection(dst / "ann" / f"{i}.pt")
        assert p.names == [str(i)] and p.config.steps == 3 and p.config.seed == item_seed(f"ann/{i}", 0)
        assert Image.open(dst / "ann" / f"{i}.png").size == (32, 32)
    main(argv)
    assert "projected 0, skipped 2" in capsys.readouterr().out
    before = {p: p.read_bytes() for p in dst.rglob("*") if p.is_file()}
    assert main(argv + ["--steps", "4"]) == 1  # other settings: finished results are kept, nothing done
    out = capsys.readouterr().out
    assert "projected 0" in out and "kept 3 result(s) made with other settings" not in out
    assert "kept 2 result(s) made with other settings; rerun with --overwrite" in out and "steps 3 (now 4)" in out
    assert {p: p.read_bytes() for p in dst.rglob("*") if p.is_file()} == before
    main(argv + ["--steps", "4", "--overwrite"])
    assert "projected 2, skipped 0" in capsys.readouterr().out
    res = project_folder(src / "ann" / "0.png", tmp_path / "one", G, steps=1, progress=False, lpips=None)
    assert res.ok and res.written == [tmp_path / "one" / "0.pt"]


def test_frozen_context_restores_each_submodule_mode():
    from torch import nn

    from facelib._optim import Frozen as _Frozen

    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    net[1].eval()  # the root trains, the BatchNorm was deliberately put in eval mode
    net[0].weight.requires_grad_(False)
    with _Frozen(net):
        assert not net.training and not net[1].training
        assert not any(p.requires_grad for p in net.parameters())
    assert net.training and net[0].training and not net[1].training
    assert [p.requires_grad for p in net.parameters()] == [False, True, True, True]


def test_project_folder_ignores_its_own_output_inside_the_source(small_generator, tmp_path):
    x, _ = _known_targets(small_generator, 1)
    src = tmp_path / "aligned"
    src.mkdir()
    to_pil(x)[0].save(src / "a.png")
    dst = src / "latents"  # output folder inside the input folder
    opts = dict(steps=1, progress=False, lpips=None)
    first = project_folder(src, dst, small_generator, **opts)
    assert first.written == [dst / "a.pt"] and (dst / "a.png").is_file()
    again = project_folder(src, dst, small_generator, **opts)
    assert again.written == [] and not (dst / "latents").exists()  # the rendering a.png is not an input


# ----------------------------------------------------------------------------------------
# Speed options: precision, compile
# ----------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_reaches_fp32_quality_on_the_synthetic_truth_task(small_generator, precision):
    """Autocast (bf16; fp16 with loss scaling) projects as well as fp32: mean PSNR within 0.5 dB
    after 80 steps on targets made from known W+ (CPU autocast; the same code runs on CUDA)."""
    G = small_generator
    x, _ = _known_targets(G, 2)
    ref = project(G, x, steps=80, scheduler="constant", **FAST)
    mixed = project(G, x, steps=80, scheduler="constant", precision=precision, **FAST)
    mean = lambda p: sum(m["psnr"] for m in p.metrics) / len(p)  # noqa: E731
    assert mean(ref) >= 14 and abs(mean(mixed) - mean(ref)) < 0.5, (mean(ref), mean(mixed))
    assert mixed.config.precision == precision and mixed.wplus.dtype == torch.float32
    assert not torch.equal(mixed.wplus, ref.wplus)  # autocast really ran in lower precision


def test_precision_and_compile_options(small_generator, monkeypatch):
    with pytest.raises(InputError, match="precision"):
        ProjectConfig(precision="int8")
    calls = []

    def fake_compile(fn, **kw):  # counts dispatch without paying for a real compile
        calls.append(kw)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    G = small_generator
    x, _ = _known_targets(G, 1)
    plain = project(G, x, steps=2, **FAST)
    assert calls == []
    a = project(G, x, steps=2, compile=True, **FAST)
    b = project(G, x, steps=2, compile=True, **FAST)
    assert len(calls) == 1 and calls[0]["dynamic"] is False  # compiled once per generator
    assert torch.equal(a.wplus, plain.wplus) and torch.equal(b.wplus, plain.wplus)


@pytest.mark.slow
def test_bf16_with_an_lpips_module_stays_close_to_fp32(small_generator):
    lpips = pytest.importorskip("lpips")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)
    G = small_generator
    x, _ = _known_targets(G, 1)
    ref = project(G, x, steps=3, lpips=net, progress=False, lpips_size=32)
    bf = project(G, x, steps=3, lpips=net, progress=False, lpips_size=32, precision="bf16")
    a, b = ref.history[0]["lpips"], bf.history[0]["lpips"]
    assert all(math.isfinite(v) for v in b) and abs(a[0] - b[0]) < 0.05 * max(a[0], 1e-3), (a, b)
    assert abs(ref.metrics[0]["psnr"] - bf.metrics[0]["psnr"]) < 0.5


def test_facelib_project_is_the_function_after_a_module_import(small_generator):
    code = ("import facelib\nfrom facelib.projection import ProjectConfig\nfrom facelib.projection_folder import "
            "project_folder\nimport facelib.projection_folder\n"
            "print(facelib.project.__module__, facelib.project.__name__, facelib.project_folder.__name__)\n")
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["facelib.projection", "project", "project_folder"]


def test_project_folder_takes_a_config_or_options_not_both(small_generator, tmp_path):
    with pytest.raises(InputError, match=r"^project_folder: pass either config= or keyword settings, not both "
                                         r"\(got config= and steps\)"):
        project_folder(tmp_path, tmp_path / "out", small_generator, config=ProjectConfig(lpips=None), steps=2)
    assert not (tmp_path / "out").exists()


def test_loss_history_figure_draws_every_run_and_marks_the_best_step():
    from facelib.plots import loss_history_figure

    runs = [{"loss": [4.0, 2.0, 3.0], "mse": [1.0, 0.5, 0.6], "lpips": [0.4, 0.3, 0.35], "lr": [0.1, 0.05, 0.0]},
            {"loss": [5.0, 1.0], "mse": [2.0, 0.1]}, {}]
    fig = loss_history_figure(runs, names=["ann/0", "bob/0", "empty"], best_steps=[1, 1, None], scheduler="cosine")
    ax_loss, ax_img, ax_lr = fig.axes
    assert [ln.get_label() for ln in ax_loss.get_lines() if not ln.get_label().startswith("_")] == ["ann/0", "bob/0"]
    marks = [ln for ln in ax_loss.get_lines() if ln.get_marker() == "o"]
    assert [(list(m.get_xdata()), list(m.get_ydata())) for m in marks] == [([1], [2.0]), ([1], [1.0])]
    assert len(ax_img.get_lines()) == 3 and list(ax_lr.get_lines()[0].get_ydata()) == [0.1, 0.05, 0.0]
    assert ax_lr.get_title() == "schedule: cosine" and ax_loss.get_yscale() == "log"
