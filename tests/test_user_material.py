"""The user's own material and session: report-named datasets, caches, no-op swaps, progress,
data status, report layout, CLI row scaling, and the notebooks' kernel check."""
from __future__ import annotations

import pytest
import torch

import facelib


pytestmark = pytest.mark.usefixtures("single_thread")


# ----------------------------------------------------------------------------------------
# Progress bar
# ----------------------------------------------------------------------------------------

class _RecordingBar:
    """Stands in for tqdm: records the postfix present at each update."""

    instances: list["_RecordingBar"] = []

    def __init__(self, *args, **kwargs):
        self.postfix: dict = {}
        self.at_update: list[dict] = []
        _RecordingBar.instances.append(self)

    def set_postfix(self, refresh=True, **kw):
        self.postfix = dict(kw)

    def update(self, n=1):
        self.at_update.append(dict(self.postfix))

    def close(self):
        pass


@pytest.mark.slow
def test_progress_bar_shows_loss_and_lr_of_every_step(small_generator, monkeypatch):
    import facelib._optim
    from facelib.projection import ProjectConfig, project

    monkeypatch.setattr(facelib._optim, "tqdm", _RecordingBar)  # the optimisation driver's progress bar
    _RecordingBar.instances.clear()
    G = small_generator
    with torch.no_grad():
        x = G.synthesis(G.mapping(torch.randn(1, G.style_dim))[:, None].repeat(1, G.n_latent, 1)).clamp(-1, 1)
    cfg = ProjectConfig(steps=12, scheduler="rampupdown", lr=0.2, mse_weight=1.0, lpips=None)
    p = project(G, x, config=cfg, progress=True)
    bar = _RecordingBar.instances[-1]
    assert len(bar.at_update) == 12
    assert all("loss" in pf and "lr" in pf for pf in bar.at_update)  # present from the first update on
    losses = [pf["loss"] for pf in bar.at_update]
    assert losses == [f"{v:.4g}" for v in p.history[0]["loss"]]  # refreshed every step
    assert all(float(pf["lr"]) > 0 for pf in bar.at_update)  # never the warm-up's lr=0
    assert bar.at_update[0]["lr"] == f"{cfg.lr_at(1):.3g}"


# ----------------------------------------------------------------------------------------
# data status: packed downloads and NVIDIA pickles
# ----------------------------------------------------------------------------------------

def test_data_status_reports_downloads_that_are_still_packed(tmp_path):
    import gzip
    import io
    import lzma
    import tarfile
    import zipfile

    from facelib.data import classify_file, locate

    root = tmp_path / "downloads"
    (root / "photos").mkdir(parents=True)
    photo = root / "photos" / "Neutral copy.JPG"
    photo.write_bytes(b"\xff\xd8\xff\xe0" + bytes(200))
    with tarfile.open(root / "aligned-data.tar", "w") as tf:
        tf.add(photo, arcname="AJoly/2.jpg")
    with tarfile.open(root / "style-gan-data.TAR.GZ", "w:gz") as tf:
        tf.add(photo, arcname="x.jpg")
    with zipfile.ZipFile(root / "styles-expressions.zip", "w") as zf:
        zf.writestr("expressions/Happy copy.jpg", b"jpeg")
    (root / "stylegan2-ffhq-config-f.pt.gz").write_bytes(gzip.compress(b"\x80\x02weights" * 100))
    (root / "model.xz").write_bytes(lzma.compress(b"abc" * 100))
    expected = {"aligned-data.tar": "tar -xf", "style-gan-data.TAR.GZ": "tar -xzf",
                "styles-expressions.zip": "unzip", "stylegan2-ffhq-config-f.pt.gz": "gunzip -k",
                "model.xz": "unxz -k"}
    for name, command in expected.items():
        res = classify_file(root / name)
        assert res is not None and "not unpacked" in res.problem and f"{command} '{name}'" in res.problem, (name, res)
    inv = locate([root])
    assert {p.path.name for p in inv.problems} == set(expected)  # problems, not silently skipped
    text = inv.summary()
    assert all(name in text for name in expected)


def _synthetic_nvidia_pickle(path, *, resolution: int, num_ws: int | None, w_dim: int = 512) -> None:
    """A pickle with the persistence marker and a generator's constructor arguments, as
    stylegan2-ada-pytorch writes them (built with a stand-in module; never unpickled by facelib)."""
    import pickle
    import sys
    import types

    mod = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # pragma: no cover - never called
        return meta

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    mod._reconstruct_persistent_obj = _reconstruct_persistent_obj

    class Net:
        def __init__(self, kwargs):
            self.kwargs = kwargs

        def __reduce__(self):
            return (_reconstruct_persistent_obj, ({"type": "class", "module_src": "", "class_name": "Generator",
                                                   "state": {"init_kwargs": self.kwargs}},))

    synth = {"w_dim": w_dim, "img_resolution": resolution, "img_channels": 3}
    if num_ws is not None:
        synth["num_ws"] = num_ws
    g_kwargs = {"z_dim": 512, "c_dim": 0, "w_dim": w_dim, "img_resolution": resolution, "img_channels": 3,
                "synthesis_kwargs": synth}
    pkg = types.ModuleType("torch_utils")
    saved = {k: sys.modules.get(k) for k in ("torch_utils", "torch_utils.persistence")}
    sys.modules["torch_utils"], sys.modules["torch_utils.persistence"] = pkg, mod
    try:
        data = pickle.dumps({"G": Net(g_kwargs), "D": Net({"img_resolution": resolution}), "G_ema": Net(g_kwargs)},
                            protocol=4)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    path.write_bytes(data + bytes(1000))


@pytest.mark.parametrize("resolution,num_ws,rows", [(1024, 18, 18), (256, None, 14), (64, 10, 10)])
def test_data_status_shows_resolution_and_rows_of_nvidia_pickles(tmp_path, resolution, num_ws, rows):
    from facelib.data import classify_file, locate

    path = tmp_path / "network-snapshot.pkl"
    _synthetic_nvidia_pickle(path, resolution=resolution, num_ws=num_ws)
    found = classify_file(path)
    assert found.kind == "generator" and found.format == "nvidia-pickle"
    assert f"{resolution} px" in found.detail and f"{rows} W+ rows" in found.detail
    assert f"{resolution} px, {rows} W+ rows" in locate([tmp_path]).summary()


def test_data_status_reads_the_reference_nvidia_pickle():
    from facelib.data import classify_file

    from .conftest import SHARED

    ref = SHARED / "refs" / "nvidia" / "nvidia_g64_nosrc.pkl"
    if not ref.is_file():
        pytest.skip(f"{ref} is absent")
    assert classify_file(ref).detail.startswith("64 px, 10 W+ rows, style dim 512")


# ----------------------------------------------------------------------------------------
# The report's own datasets, as attached (hostile but valid layouts)
# ----------------------------------------------------------------------------------------

def _photo(path, seed=0, size=48):
    import numpy as np
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    fmt = {".png": "PNG"}.get(path.suffix.lower(), "JPEG")
    img.save(path, format=fmt)
    return path


def test_emotion_labels_from_any_name():
    from facelib.data import emotion_label, is_emotion_name

    cases = {"Neutral copy": "neutral", "Happy copy": "happy", "Sad copy": "sad", "Fear copy": "fear",
             "HAPPY COPY (2)": "happy", "sadness_3": "sad", "Fear - Copy": "fear", "happy2": "happy",
             "Angry копия": "angry", "surprised-final": "surprise", "Smug copy": "smug",
             "very happy": "very_happy"}
    assert {k: emotion_label(k) for k in cases} == cases
    assert is_emotion_name("Neutral copy") and is_emotion_name("FEARFUL")
    assert not is_emotion_name("bad_trip1") and not is_emotion_name("green") and emotion_label("IMG_1234") == ""


def test_expression_photos_flat_nested_any_case(tmp_path):
    from facelib.edit_inputs import expression_photos

    root = tmp_path / "styles-expressions" / "out" / "expressions"
    flat = ["Neutral copy.jpg", "Happy copy.JPEG", "sadness (2).png", "Fear - Copy.Jpg", "Smug copy.jpg"]
    for i, name in enumerate(flat):
        _photo(root / name, i)
    _photo(root / "HAPPY" / "1.PNG", 10)
    _photo(root / "person1" / "Neutral" / "2.jpeg", 11)   # emotion folder below a non-emotion one
    _photo(root / "Confused" / "3.jpg", 12)              # an emotion facelib has no word for
    (root / "notes.txt").write_text("not a photo")
    groups = expression_photos(root)
    assert list(groups) == ["neutral", "happy", "sad", "fear", "confused", "smug"]
    names = {k: sorted(p.relative_to(root).as_posix() for p in v) for k, v in groups.items()}
    assert names["neutral"] == ["Neutral copy.jpg", "person1/Neutral/2.jpeg"]
    assert names["happy"] == ["HAPPY/1.PNG", "Happy copy.JPEG"]
    assert names["sad"] == ["sadness (2).png"] and names["fear"] == ["Fear - Copy.Jpg"]
    assert names["confused"] == ["Confused/3.jpg"] and names["smug"] == ["Smug copy.jpg"]


def test_located_datasets_are_found_with_the_reports_layouts(tmp_path):
    from facelib.data import locate
    from facelib.edit_inputs import aligned_dir, reference_dir

    kaggle = tmp_path / "input"
    for i, name in enumerate(["Neutral copy.jpg", "Happy copy.jpg", "Sad copy.jpg", "Fear copy.jpg"]):
        _photo(kaggle / "styles-expressions" / "expressions" / name, i)
    for i, name in enumerate(["bad_trip1.jpeg", "bad_trip2.JPEG", "green.jpeg"]):
        _photo(kaggle / "bad-trip-styles" / name, 10 + i)
    for i, name in enumerate(["AJoly/2.jpg", "LDCaprio/0.JPG", "Stethem/3.png"]):
        _photo(kaggle / "aligned-data" / name, 20 + i)
    inv = locate([kaggle])
    roles = {f.path.relative_to(kaggle).as_posix(): f.role for f in inv.image_folders}
    assert roles["styles-expressions/expressions"] == "expressions"
    assert roles["bad-trip-styles"] == "styles"
    assert roles["aligned-data/AJoly"] == roles["aligned-data/LDCaprio"] == "aligned"
    expressions = kaggle / "styles-expressions" / "expressions"
    assert reference_dir("missing/dir", role="expressions", inventory=inv) == expressions
    assert reference_dir("", role="styles", inventory=inv) == kaggle / "bad-trip-styles"
    assert aligned_dir("", out_dir=tmp_path / "out", inventory=inv) == kaggle / "aligned-data"
    # a folder whose name says nothing: its photos' names make it the expressions folder
    _photo(tmp_path / "mine" / "my-photos" / "Happy copy.jpg", 30)
    _photo(tmp_path / "mine" / "my-photos" / "Sad copy.jpg", 31)
    assert reference_dir(None, role="expressions", inventory=locate([tmp_path / "mine"])) == \
        tmp_path / "mine" / "my-photos"
    # an <emotion>/ folder layout: the folder holding the emotion folders
    nested = tmp_path / "nested"
    _photo(nested / "expressions-set" / "Happy" / "1.jpg")
    inv2 = locate([nested])
    assert reference_dir(None, role="expressions", inventory=inv2) == nested / "expressions-set"
    # an aligned folder of notebook 01 wins over the dataset
    _photo(tmp_path / "out" / "aligned" / "me" / "0.png")
    assert aligned_dir("", out_dir=tmp_path / "out", inventory=inv) == tmp_path / "out" / "aligned"


def test_swap_sources_find_aligned_photos_in_any_case(tmp_path):
    from facelib.swap_pairs import _aligned_photo

    _photo(tmp_path / "AJoly" / "2.JPG")
    _photo(tmp_path / "Stethem" / "3.Jpeg")
    assert _aligned_photo(tmp_path, "AJoly/2") == tmp_path / "AJoly" / "2.JPG"
    assert _aligned_photo(tmp_path, "Stethem/3") == tmp_path / "Stethem" / "3.Jpeg"
    assert _aligned_photo(tmp_path, "LDCaprio/0") is None


@pytest.mark.slow
def test_expression_and_style_inputs_use_the_attached_photos(tmp_path, small_generator):
    from facelib import edit_inputs

    G = small_generator
    expr = tmp_path / "expressions"
    for i, name in enumerate(["Neutral copy.jpg", "Happy copy.JPG", "sad copy.png", "FEAR copy.jpeg"]):
        _photo(expr / name, i)
    inputs = edit_inputs.expression_inputs(G, latents_dir=tmp_path / "none", expressions_dir=expr,
                                           work_dir=tmp_path / "work", project_steps=2, progress=False)
    assert list(inputs.references) == ["neutral", "happy", "sad", "fear"]
    assert all(not any(k.startswith("random") for k in refs) for refs in inputs.references.values())
    assert inputs.stand_in_for == ("targets",)  # only the targets (no projections given) are random
    assert set(inputs.photos) == {"neutral", "happy", "sad", "fear"}
    assert "random latents stand in for: targets" in inputs.stand_in_note()
    # given in another case and form, and an emotion without photos: that one (only) stands in
    again = edit_inputs.expression_inputs(G, latents_dir=tmp_path / "none", expressions_dir=expr,
                                          work_dir=tmp_path / "work", emotions=["Neutral", "happiness", "Angry"],
                                    project_steps=2, progress=False)
    assert list(again.references) == ["neutral", "happy", "angry"]
    assert again.stand_in_for == ("targets", "angry")
    styles = tmp_path / "bad-trip-styles"
    for i, name in enumerate(["bad_trip1.jpeg", "GREEN.JPEG", "more/bad_trip2.png"]):
        _photo(styles / name, 10 + i)
    sin = edit_inputs.style_inputs(G, latents_dir=tmp_path / "none", styles_dir=styles, work_dir=tmp_path / "sw",
                                   project_steps=2, progress=False)
    assert list(sin.references["styles"]) == ["GREEN", "bad_trip1", "more/bad_trip2"]
    assert sin.stand_in_for == ("targets",)
    assert set(sin.photos) == set(sin.references["styles"])


def test_report_labels_stand_ins_as_such(tmp_path):
    import json

    from facelib.report import build_report

    out = tmp_path / "out"
    for i, name in enumerate(["neutral", "happy", "target", "transferred_happy"]):
        _photo(out / "expressions" / f"{name}.jpg", i)
    (out / "provenance.json").write_text(json.dumps({"04_expressions": {"smoke": False,
                                                                        "stand_ins": ["targets", "neutral"]}}))
    md = build_report(out).markdown.read_text()
    assert "neutral: random latent standing in (no usable photo)" in md
    assert "happy: projection" in md
    assert "target (random latent standing in (no projection))" in md


# ----------------------------------------------------------------------------------------
# The notebooks' kernel check (Kaggle's image lacks lpips and face_recognition_models)
# ----------------------------------------------------------------------------------------

_KAGGLE_LACKS = {"lpips", "face_recognition_models"}


def _kaggle_like(module: str) -> bool:
    return module not in _KAGGLE_LACKS


def test_kernel_check_installs_exactly_what_is_missing_when_online(tmp_path, monkeypatch):
    from facelib import kernel

    def no_network_probe(*a, **k):
        raise AssertionError("the network is probed only when something is missing")

    monkeypatch.setattr(kernel, "_online", no_network_probe)
    assert kernel.missing_packages(importable=lambda m: True, search=[tmp_path]) == []
    monkeypatch.setattr(kernel, "_online", lambda *a, **k: True)
    assert kernel.missing_packages(importable=_kaggle_like, search=[tmp_path]) == ["lpips", "face_recognition_models"]
    # dlib missing too: the prebuilt wheel's name
    assert kernel.missing_packages(importable=lambda m: m not in _KAGGLE_LACKS | {"dlib"},
                                   search=[tmp_path]) == ["lpips", "dlib-bin", "face_recognition_models"]
    # the landmark model attached as a dataset: face_recognition_models is not needed
    (tmp_path / "dlib-models").mkdir()
    (tmp_path / "dlib-models" / kernel.LANDMARK_MODEL).write_bytes(b"model")
    assert kernel.missing_packages(importable=_kaggle_like, search=[tmp_path / "dlib-models"]) == ["lpips"]


def test_kernel_check_offline_installs_attached_wheels_or_says_what_to_attach(tmp_path, monkeypatch, caplog):
    import logging

    from facelib import kernel

    monkeypatch.setattr(kernel, "_online", lambda *a, **k: False)
    caplog.set_level(logging.WARNING, logger="facelib.kernel")
    assert kernel.missing_packages(importable=_kaggle_like, search=[tmp_path]) == []
    text = caplog.text
    assert "lpips" in text and "face_recognition_models" in text and kernel.LANDMARK_MODEL in text
    assert "no internet" in text and "attach" in text
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "lpips-0.1.4-py3-none-any.whl").write_bytes(b"PK")
    caplog.clear()
    got = kernel.missing_packages(importable=_kaggle_like, search=[tmp_path, wheels])
    assert got == ["--no-index", "--find-links", str(wheels), "lpips"]
    assert kernel.LANDMARK_MODEL in caplog.text and "lpips (" not in caplog.text
    check = kernel.check_kernel(importable=_kaggle_like, search=[wheels], online=False)
    assert check.missing == ("lpips", "face_recognition_models") and check.online is False


def test_kernel_check_imports_nothing_heavy():
    import subprocess
    import sys

    from .conftest import REPO

    code = ("import sys, facelib.kernel; facelib.kernel.check_kernel(online=False); "
            "print(sorted(m for m in ('torch', 'numpy', 'PIL', 'dlib', 'lpips') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_bootstrap_cell_is_identical_in_every_notebook_and_installs_what_is_missing():
    import json

    from .conftest import REPO

    boots = {}
    for nb in sorted((REPO / "notebooks").glob("0*.ipynb")):
        cells = [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
        boots[nb.name] = "".join(cells[0]["source"])
    assert len(boots) == 6 and len(set(boots.values())) == 1
    boot = next(iter(boots.values()))
    assert "facelib.kernel.missing_packages()" in boot
    assert '%pip install -q {" ".join(MISSING)}' in boot
    assert boot.index("sys.path.insert") < boot.index("import facelib.kernel")


# ----------------------------------------------------------------------------------------
# Caches: row effects (03, 04) and face swaps (05)
# ----------------------------------------------------------------------------------------

def _latents(G, n, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return G.mapping(torch.randn(n, G.style_dim, generator=g))[:, None].repeat(1, G.n_latent, 1)


@pytest.mark.slow
def test_row_effects_are_cached_by_their_inputs(small_generator, tmp_path, monkeypatch):
    from facelib import row_measure

    G = small_generator
    t, style = _latents(G, 2, 3)
    cache = tmp_path / "cache"
    first = row_measure.row_effects(G, t, style_wplus=style, mask_region="ellipse", progress=False, cache_dir=cache)
    assert len(list(cache.rglob("*.pt"))) == 1
    real_render = row_measure.render

    def no_render(*a, **k):
        raise AssertionError("a cached measurement is not rendered again")

    monkeypatch.setattr(row_measure, "render", no_render)
    again = row_measure.row_effects(G, t, style_wplus=style, mask_region="ellipse", progress=False, cache_dir=cache)
    assert again.to_dict() == first.to_dict()
    assert torch.equal(again.thumbnails, first.thumbnails) and torch.equal(again.region, first.region)
    # another strength, edit or generator is measured anew
    monkeypatch.setattr(row_measure, "render", real_render)
    other = row_measure.row_effects(G, t, style_wplus=style, strength=0.5, mask_region="ellipse", progress=False,
                                    cache_dir=cache)
    assert other.strength == 0.5 and len(list(cache.rglob("*.pt"))) == 2
    delta = row_measure.row_effects(G, t, delta=style - t, mask_region="ellipse", progress=False, cache_dir=cache)
    assert delta.kind == "delta" and len(list(cache.rglob("*.pt"))) == 3
    from .conftest import make_small_generator

    row_measure.row_effects(make_small_generator(seed=5), t, style_wplus=style, mask_region="ellipse", progress=False,
                            cache_dir=cache)
    assert len(list(cache.rglob("*.pt"))) == 4
    # an unreadable entry is recomputed, not an error
    for p in cache.rglob("*.pt"):
        p.write_bytes(b"garbage")
    assert row_measure.row_effects(G, t, style_wplus=style, mask_region="ellipse", progress=False,
                                   cache_dir=cache).to_dict() == first.to_dict()


@pytest.fixture(scope="module")
def swap_setup():
    from .conftest import make_small_generator
    from .test_losses import TinyIdNet

    G = make_small_generator()
    targets = _latents(G, 1, 11)
    with torch.no_grad():
        sources = G.synthesis(_latents(G, 1, 12)).clamp(-1, 1)
    return G, TinyIdNet(), sources, targets


@pytest.mark.slow
def test_face_swaps_are_cached_by_inputs_weights_and_settings(swap_setup, tmp_path, monkeypatch):
    import facelib.swap as swap_mod

    G, id_net, sources, targets = swap_setup
    cache = tmp_path / "swaps"
    opts = dict(steps=3, lpips=None, judge=False, progress=False, cache_dir=cache)
    first = swap_mod.face_swap(G, id_net, sources, targets, **opts)
    assert len(list(cache.rglob("*.pt"))) == 1
    real = swap_mod.optimise

    def no_optimise(*a, **k):
        raise AssertionError("a cached swap is not optimised again")

    monkeypatch.setattr(swap_mod, "optimise", no_optimise)
    again = swap_mod.face_swap(G, id_net, sources, targets, **opts)
    assert torch.equal(again.wplus, first.wplus) and again.metrics == first.metrics
    monkeypatch.setattr(swap_mod, "optimise", real)
    swap_mod.face_swap(G, id_net, sources, targets, **{**opts, "steps": 4})          # settings
    from .test_losses import TinyIdNet

    other_net = TinyIdNet()
    with torch.no_grad():
        other_net.fc.weight.add_(0.1)
    swap_mod.face_swap(G, other_net, sources, targets, **opts)                        # identity weights
    swap_mod.face_swap(G, id_net, sources.flip(-1), targets, **opts)                  # inputs
    assert len(list(cache.rglob("*.pt"))) == 4


# ----------------------------------------------------------------------------------------
# A swap that did nothing
# ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_swap_that_did_nothing_says_so(swap_setup, tmp_path, capsys):
    import json

    from facelib.cli import main
    from facelib.grids import save_image
    from facelib.report import build_report
    from facelib.swap import face_swap, load_swap
    from facelib.weights import save_generator

    G, id_net, sources, targets = swap_setup
    still = face_swap(G, id_net, sources, targets, steps=3, lr=1e-30, scheduler="constant", lpips=None, judge=False,
                      progress=False)
    assert still.unchanged == [True] and still.metrics[0]["best_step"] == 0
    assert torch.equal(still.wplus, still.target_wplus)
    assert "did nothing" in still.no_change_note(0) and "best step 0" in still.no_change_note(0)
    assert "UNCHANGED" in still.caption(0) and "UNCHANGED" in repr(still)
    moved = face_swap(G, id_net, sources, targets, steps=6, lpips=None, judge=False, progress=False)
    assert moved.unchanged == [False] and moved.no_change_note(0) == "" and "UNCHANGED" not in moved.caption(0)
    # saved and loaded, old results without the flag read it from best_step
    still.save(tmp_path / "s.pt")
    assert load_swap(tmp_path / "s.pt").unchanged == [True]
    # the command line says so and stamps the image
    save_generator(G, tmp_path / "g.pt")
    torch.save(id_net.state_dict(), tmp_path / "arcface.pth")
    proj = facelib.project(G, G.synthesis(targets).clamp(-1, 1).detach(), steps=2, lpips=None, progress=False)
    proj.save(tmp_path / "target.pt")
    save_image(sources[0], tmp_path / "source.png")
    out = tmp_path / "out" / "face_swap" / "AJoly_2_on_LDCaprio_0.png"
    rc = main(["swap", str(tmp_path / "source.png"), str(tmp_path / "target.pt"), str(out), "--weights",
               str(tmp_path / "g.pt"), "--steps", "3", "--lr", "1e-30", "--lpips", "none", "--no-judge", "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0 and "did nothing" in text and "UNCHANGED" in text
    from PIL import Image

    assert Image.open(out).height > G.resolution  # the stamp's banner sits above the image
    # the report says so next to the image, and its metrics end cleanly
    md = build_report(tmp_path / "out").markdown.read_text()
    line = next(l for l in md.splitlines() if "AJoly_2 on LDCaprio_0" in l)
    assert "UNCHANGED" in line and "did nothing" in line
    metrics_cell = line.rstrip(" |").rsplit("|", 1)[-1].strip()
    assert metrics_cell and not metrics_cell.endswith(",")
    json.loads(out.with_suffix(".json").read_text())


# ----------------------------------------------------------------------------------------
# Report layout: badges beside (not over) images, stamps wrapped
# ----------------------------------------------------------------------------------------

def test_long_stamps_and_titles_wrap_instead_of_running_off_the_image():
    import numpy as np
    from PIL import Image, ImageDraw

    from facelib.stamps import SMOKE_HINT, SMOKE_STAMP
    from facelib.grids import _font, make_grid, stamp, wrap_text

    img = Image.new("RGB", (128, 128), (0, 128, 0))
    text = SMOKE_STAMP + " | " + SMOKE_HINT
    out = stamp(img, text)
    font = _font(max(12, img.width // 40))
    lines = wrap_text(text, font, img.width - 8)
    assert len(lines) > 1 and " ".join(lines).split() == text.split()  # every word kept, in order
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    assert all(measure.textlength(l, font=font) <= img.width - 8 for l in lines)
    banner = out.height - img.height
    assert banner >= len(lines) * 18  # room for every line
    assert np.array_equal(np.asarray(out)[banner:], np.asarray(img))  # the image itself is not covered
    short = stamp(img, "SMOKE")
    assert short.height - img.height < banner
    grid = make_grid([[img]], cell=64, title=text)
    assert grid.width == 64 + 8  # the title does not widen or overflow the grid: it wraps
    assert grid.height > 64 + 4 * 18
    assert wrap_text("averyveryverylongwordwithoutspaces" * 3, font, 40)  # cut, never clipped
    assert all(measure.textlength(l, font=font) <= 40
               for l in wrap_text("averyveryverylongwordwithoutspaces" * 3, font, 40))


def test_report_badges_sit_above_the_images_not_over_them(tmp_path):
    import re

    from facelib.report import _CSS, build_report

    rule = re.search(r"figure \.badge \{([^}]*)\}", _CSS).group(1)
    assert "absolute" not in rule and "display: block" in rule  # its own line above the image
    assert "position: relative" not in re.search(r"figure \.frame \{([^}]*)\}", _CSS).group(1)
    out = tmp_path / "out"
    _photo(out / "grids" / "03_style_transfer.jpg")
    html = build_report(out).html.read_text()
    fig = re.search(r'<figure class="[^"]*"><div class="frame">(<span class="badge">[^<]*</span>)(<img [^>]*>)', html)
    assert fig, "badge first, then the image, inside the frame"


# ----------------------------------------------------------------------------------------
# CLI rows: the report's 18-row numbers adapt to smaller generators as in the notebooks
# ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_cli_rows_and_masks_adapt_like_the_notebooks(small_generator, tmp_path, capsys):
    import json

    from facelib import edit_inputs, edits, latents
    from facelib.cli import main
    from facelib.edits import LayerMask
    from facelib.weights import load_generator, save_generator

    weights = tmp_path / "G.pt"
    save_generator(small_generator, weights)
    G = load_generator(weights)
    assert G.n_latent < 18
    lat = edit_inputs.random_latents(G, 3, seed=2)
    for i, name in enumerate(["content", "style", "neutral"]):
        torch.save({"wplus": lat[i:i + 1]}, tmp_path / f"{name}.pt")
    out = tmp_path / "mix.png"
    assert main(["mix", str(tmp_path / "content.pt"), str(tmp_path / "style.pt"), str(out), "--rows", "9-17",
                 "--weights", str(weights)]) == 0
    notebook_rows = LayerMask.scaled("9-17", G.n_latent)  # what notebook 03 uses for ROWS = "9-17"
    assert json.loads((tmp_path / "mix.edit.json").read_text())["rows"] == str(notebook_rows)
    assert torch.equal(latents.load_latents(out.with_suffix(".pt")).wplus,
                       edits.mix_styles(lat[:1], lat[1:2], rows=notebook_rows))
    out2 = tmp_path / "exp.png"
    assert main(["express", str(tmp_path / "content.pt"), str(tmp_path / "neutral.pt"), str(tmp_path / "style.pt"),
                 str(out2), "--mask", "1-17", "--weights", str(weights)]) == 0
    assert json.loads((tmp_path / "exp.edit.json").read_text())["mask"] == str(LayerMask.scaled("1-17", G.n_latent))
    capsys.readouterr()
    assert main(["express", str(tmp_path / "content.pt"), str(tmp_path / "neutral.pt"), str(tmp_path / "style.pt"),
                 str(out2), "--mask", "1-25", "--weights", str(weights)]) == 1
    err = capsys.readouterr().err
    assert "--mask '1-25'" in err and "Traceback" not in err


def test_weight_fingerprints_cover_zero_dim_buffers():
    from facelib.weights import state_fingerprint

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))  # num_batches_tracked: 0-d long
    a = state_fingerprint(net.state_dict())
    net[1].num_batches_tracked += 1
    assert state_fingerprint(net.state_dict()) != a
