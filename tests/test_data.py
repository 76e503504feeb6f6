"""facelib.data: content-based discovery of weight files, Kaggle downloads (clients faked), notebook setup."""
from __future__ import annotations

import argparse
import bz2
import glob
import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pytest
import torch

from facelib import data as D
from facelib import kaggle as K
from facelib import session as Se
from facelib.stamps import SMOKE_STAMP
from facelib.errors import CheckpointError, DependencyError

from .conftest import REPO, SHARED


# ----------------------------------------------------------------------------------------
# Synthetic files of every format (tensors built with expand() so big layouts stay tiny)
# ----------------------------------------------------------------------------------------

def _zeros(shape, dtype=torch.float32) -> torch.Tensor:
    shape = tuple(shape)
    return torch.zeros(1, dtype=dtype).expand(*shape) if shape else torch.zeros((), dtype=dtype)


def _layout_state(layout: Path) -> dict[str, torch.Tensor]:
    keys = json.loads(layout.read_text())["keys"]
    return {k: _zeros(s, torch.int64 if k.endswith("num_batches_tracked") else torch.float32) for k, s in keys}


def _vgg16_state() -> dict[str, torch.Tensor]:
    import torchvision

    with torch.device("meta"):
        sd = torchvision.models.vgg16().state_dict()
    return {k: _zeros(v.shape) for k, v in sd.items()}


def _dlib_int(v: int) -> bytes:
    mag = abs(v)
    body = mag.to_bytes(max(1, (mag.bit_length() + 7) // 8), "little")
    return bytes([len(body) | (0x80 if v < 0 else 0)]) + body


def _dlib_float(x: float) -> bytes:
    import math

    mant, exp = math.frexp(x)
    m = int(mant * (1 << 24))
    return _dlib_int(m) + _dlib_int(exp - 24)


def _fake_shape_predictor(k: int) -> bytes:
    body = _dlib_int(1) + _dlib_int(-2 * k) + _dlib_int(-1)
    body += b"".join(_dlib_float(0.1 + 0.8 * (i % 7) / 7) for i in range(2 * k))
    return body + bytes(range(256)) * 4


def _fake_dlib_dnn(loss: str) -> bytes:
    return _dlib_int(1) + _dlib_int(len(loss)) + loss.encode() + bytes(range(256)) * 4


def _fake_nvidia_pickle() -> bytes:
    # the head of a stylegan2-ada-pytorch network pickle (protocol 3); never unpickled
    return (b"\x80\x03}q\x00X\x05\x00\x00\x00G_emaq\x01ctorch_utils.persistence\n_reconstruct_persistent_obj\n"
            b"q\x02}q\x03(X\x04\x00\x00\x00typeq\x04X\x05\x00\x00\x00classq\x05" + b"\x00" * 512)


@pytest.fixture
def zoo(tmp_path: Path, small_generator) -> Path:
    """A folder of weight files whose names all lie about what they are, plus unrelated files."""
    root = tmp_path / "zoo"
    (root / "nested" / "deeper").mkdir(parents=True)
    g = {k: v.clone() for k, v in small_generator.state_dict().items()}
    torch.save({"g_ema": g, "latent_avg": torch.zeros(64)}, root / "arcface_r50.pth")
    torch.save({"g": g, "d": {"x": torch.zeros(2)}, "g_ema": g, "args": argparse.Namespace(size=32)},
               root / "nested" / "vgg16-397923af.pth")
    torch.save(g, root / "nested" / "deeper" / "mmod_human_face_detector.dat", _use_new_zipfile_serialization=False)
    (root / "backbone.pth").write_bytes(_fake_nvidia_pickle())
    from facelib.identity import build_arcface

    net = build_arcface("iresnet", layers=(1, 1, 1, 1), base_channels=8, seed=0)
    torch.save({"module." + k: v for k, v in net.state_dict().items()}, root / "stylegan2-ffhq-config-f.pt")
    torch.save(_vgg16_state(), root / "model_ir_se50.pth")
    (root / "ffhq.pkl").write_bytes(_fake_shape_predictor(68))
    (root / "generator.pt").write_bytes(_fake_shape_predictor(5))
    (root / "vgg.bin").write_bytes(_fake_dlib_dnn("loss_mmod_"))
    (root / "G.pkl").write_bytes(_fake_dlib_dnn("loss_metric_2"))
    # unusable and unrelated files
    (root / "stylegan2-ffhq-1024.pkl").write_text("<!DOCTYPE html><html><body>Quota exceeded</body></html>")
    (root / "empty.pt").write_bytes(b"")
    (root / "shape_predictor_68_face_landmarks.dat.bz2").write_bytes(bz2.compress(_fake_shape_predictor(68)))
    (root / "README.md").write_text("# my weights\n")
    (root / "notes.txt").write_text("nothing here\n")
    torch.save({"optimizer": {"lr": torch.tensor(0.1)}, "epoch": 3}, root / "checkpoint.pt")
    (root / "random.bin").write_bytes(os.urandom(4096))
    import numpy as np

    np.savez(root / "arrays.npz", a=np.zeros(3))
    faces = root / "faces" / "alice"
    faces.mkdir(parents=True)
    from PIL import Image

    for i in range(2):
        Image.new("RGB", (8, 8)).save(faces / f"{i}.jpg")
    return root


def _by_name(inv: D.DataInventory) -> dict[str, D.FoundFile]:
    return {f.path.name: f for f in (*inv.generators, *inv.arcface, *inv.dlib, *inv.vgg16)}


def test_locate_classifies_by_content_not_name(zoo: Path) -> None:
    inv = D.locate([zoo])
    found = _by_name(inv)
    expect = {
        "arcface_r50.pth": ("generator", "rosinality"),
        "vgg16-397923af.pth": ("generator", "rosinality-training"),
        "mmod_human_face_detector.dat": ("generator", "state-dict"),
        "backbone.pth": ("generator", "nvidia-pickle"),
        "stylegan2-ffhq-config-f.pt": ("arcface", "iresnet-1-1-1-1-c8"),
        "model_ir_se50.pth": ("vgg16", "torchvision"),
        "ffhq.pkl": ("dlib", "shape_predictor_68"),
        "generator.pt": ("dlib", "shape_predictor_5"),
        "vgg.bin": ("dlib", "mmod_detector"),
        "G.pkl": ("dlib", "face_recognition"),
    }
    got = {name: (f.kind, f.format) for name, f in found.items()}
    assert got == expect
    assert "32 px" in found["arcface_r50.pth"].detail and "style_dim 64" in found["arcface_r50.pth"].detail
    assert found["ffhq.pkl"].canonical_name == "shape_predictor_68_face_landmarks.dat"
    problems = {p.path.name: p.problem for p in inv.problems}
    assert "HTML" in problems["stylegan2-ffhq-1024.pkl"]
    assert "empty" in problems["empty.pt"]
    assert "bz2" in problems["shape_predictor_68_face_landmarks.dat.bz2"]
    assert "shape_predictor_68" in problems["shape_predictor_68_face_landmarks.dat.bz2"]
    unrec = {p.path.name for p in inv.unrecognised}
    assert {"checkpoint.pt", "random.bin", "arrays.npz"} <= unrec
    listed = set(found) | set(problems) | unrec
    assert not listed & {"README.md", "notes.txt", "0.jpg", "1.jpg"}
    assert [(f.path.name, f.n_images, f.role) for f in inv.image_folders] == [("alice", 2, "faces")]
    assert inv.first("generator").path.name == "arcface_r50.pth"
    assert inv.first("dlib", "mmod_detector").path.name == "vgg.bin"
    as_json = json.loads(json.dumps(inv.to_dict()))
    assert [g["path"] for g in as_json["generators"]] == [str(f.path) for f in inv.generators]
    assert as_json["image_folders"] == [{"path": str(zoo / "faces" / "alice"), "n_images": 2, "role": "faces"}]


def test_real_layouts_from_shared_fixtures(tmp_path: Path) -> None:
    refs = SHARED / "refs"
    if not refs.is_dir():
        pytest.skip(f"reference fixtures {refs} are absent (../shared is not beside the checkout)")
    torch.save({"g_ema": _layout_state(refs / "stylegan2" / "layout_1024.json"), "latent_avg": torch.zeros(512)},
               tmp_path / "iresnet50.pth")
    torch.save(_layout_state(refs / "arcface" / "layout_iresnet50.json"), tmp_path / "ffhq-1024.pt")
    torch.save({"state_dict": {"module." + k: v for k, v in
                               _layout_state(refs / "arcface" / "layout_ir_se50.json").items()}}, tmp_path / "g.pt")
    nvidia = refs / "nvidia" / "nvidia_g64_nosrc.pkl"
    if nvidia.is_file():
        (tmp_path / "weights.dat").symlink_to(nvidia)
    got = {f.path.name: (f.kind, f.format) for f in (*D.locate([tmp_path]).generators,
                                                       *D.locate([tmp_path]).arcface)}
    assert got["iresnet50.pth"] == ("generator", "rosinality")
    assert got["ffhq-1024.pt"] == ("arcface", "iresnet50")
    assert got["g.pt"] == ("arcface", "ir_se50")
    if nvidia.is_file():
        assert got["weights.dat"] == ("generator", "nvidia-pickle")
    detail = D.classify_file(tmp_path / "iresnet50.pth").detail
    assert "1024 px" in detail and "18 W+ rows" in detail and "8 mapping layers" in detail


def test_real_dlib_models_recognised_under_other_names(tmp_path: Path) -> None:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None:
        pytest.skip("face_recognition_models is not installed")
    models = Path(spec.submodule_search_locations[0]) / "models"
    for i, src in enumerate(sorted(models.glob("*.dat"))):
        (tmp_path / f"weights_{i}.pt").symlink_to(src)
    inv = D.locate([tmp_path])
    got = sorted((f.format, f.canonical_name) for f in inv.dlib)
    assert [c for _, c in got] == sorted(p.name for p in models.glob("*.dat"))
    assert all("same size as the released file" in f.detail for f in inv.dlib)
    assert not inv.generators and not inv.arcface and not inv.problems


def test_zip_classification_reads_only_data_pkl(tmp_path: Path, small_generator, monkeypatch) -> None:
    path = tmp_path / "G.pt"
    torch.save({"g_ema": small_generator.state_dict(), "latent_avg": torch.zeros(64)}, path)
    read: list[str] = []
    real_open = zipfile.ZipFile.open

    def spy(self, name, *args, **kwargs):  # every member read goes through ZipFile.open
        read.append(name if isinstance(name, str) else name.filename)
        return real_open(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
    assert D.classify_file(path).kind == "generator"
    assert read == ["G/data.pkl"]


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_code_is_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"g_ema": {"style.1.weight": torch.zeros(2, 2)}, "x": _Evil(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="not allowed"):
        D.read_torch_metadata(tmp_path / "evil.pt")
    res = D.classify_file(tmp_path / "evil.pt")
    assert isinstance(res, D.Problem) and "system is not allowed" in res.problem
    assert not marker.exists()


def test_missing_generator_names_what_and_where(tmp_path: Path, monkeypatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("FACELIB_DATA", str(empty))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(D, "repo_root", lambda: tmp_path / "repo")
    monkeypatch.setattr(glob, "glob", lambda pattern: [])
    inv = D.locate(package_models=False)
    with pytest.raises(DependencyError) as e:
        inv.require("generator")
    msg = str(e.value)
    assert "StyleGAN2 generator" in msg and str(empty) in msg and str(tmp_path / "data") in msg
    assert "(absent)" in msg and "data/" in msg
    with pytest.raises(DependencyError, match="SMOKE = True"):
        Se.notebook_setup("02_projection", out_dir=tmp_path / "out", smoke=False)
    S = Se.notebook_setup("02_projection", out_dir=tmp_path / "out", smoke=False, smoke_if_missing=True, device="cpu")
    assert S.smoke and S.weights is None and S.stamp == SMOKE_STAMP
    with pytest.raises(DependencyError, match="ArcFace"):
        inv.require("arcface")
    with pytest.raises(CheckpointError, match="does not exist"):
        Se.notebook_setup("02_projection", out_dir=tmp_path / "out", weights=tmp_path / "nope.pt")


def test_default_roots_env_kaggle_data(tmp_path: Path, monkeypatch) -> None:
    a, kag = tmp_path / "a", tmp_path / "kaggle_ds"
    a.mkdir()
    kag.mkdir()
    monkeypatch.setenv("FACELIB_DATA", os.pathsep.join([str(a), str(tmp_path / "missing")]))
    monkeypatch.setattr(glob, "glob", lambda pattern: [str(kag)] if pattern == "/kaggle/input/*" else [])
    monkeypatch.chdir(tmp_path)
    roots = D.default_roots(package_models=False)
    assert [(r.path, r.source, r.exists) for r in roots[:4]] == [
        (a, "$FACELIB_DATA", True), (tmp_path / "missing", "$FACELIB_DATA", False), (kag, "kaggle", True),
        (tmp_path / "data", "data", False)]
    styles = kag / "styles"
    styles.mkdir()
    from PIL import Image

    Image.new("RGB", (4, 4)).save(styles / "bad_trip1.jpeg")
    (kag / "expressions" / "happy").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(kag / "expressions" / "happy" / "Happy copy.jpg")
    roles = {f.path.name: f.role for f in D.locate(package_models=False).image_folders}
    assert roles == {"styles": "styles", "happy": "expressions"}


def test_notebook_setup_smoke(tmp_path: Path) -> None:
    S = Se.notebook_setup("02_projection", out_dir=tmp_path / "out", smoke=True, device="cpu", seed=3)
    G = S.generator()
    assert G is S.generator()  # cached
    assert (G.resolution, G.style_dim, G.n_latent) == (64, 64, 10)
    assert S.stamp == SMOKE_STAMP and S.title("x").startswith(SMOKE_STAMP) and S.title("x").endswith("x")
    from PIL import Image

    img = Image.new("RGB", (200, 100), "white")
    assert S.label(img).getpixel((1, 1)) != (255, 255, 255)
    S.record(images=2, psnr=float("nan"), score=torch.tensor(0.5), folder=tmp_path)
    prov = json.loads((tmp_path / "out" / "provenance.json").read_text(),
                      parse_constant=lambda c: pytest.fail(f"provenance.json holds {c}, which is not JSON"))
    assert prov["02_projection"]["smoke"] is True and prov["02_projection"]["images"] == 2
    assert prov["02_projection"]["psnr"] is None and prov["02_projection"]["score"] == 0.5
    assert prov["02_projection"]["folder"] == str(tmp_path)
    net = S.arcface()
    assert net(torch.zeros(1, 3, 112, 112)).shape == (1, 512)


def test_identity_network_choice(tmp_path):
    from facelib.data import locate
    from facelib.session import identity_network
    from facelib.identity import build_arcface

    real = build_arcface("iresnet", layers=(1, 1, 1, 1), base_channels=8, seed=3)
    torch.save(real.state_dict(), tmp_path / "weights.bin")  # a misleading name: found by content
    inventory = locate([tmp_path], kaggle=False)
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    found = identity_network(inventory=inventory)
    assert found.path == tmp_path / "weights.bin" and not found.random
    assert torch.allclose(found.net(x), real.eval()(x), atol=1e-5)
    given = identity_network(tmp_path / "weights.bin", smoke=True, inventory=inventory)
    assert given.path == tmp_path / "weights.bin"  # an explicit file wins even in a smoke run
    smoke = identity_network(smoke=True, inventory=inventory, seed=3)
    assert smoke.random and "RANDOM" in smoke.describe()
    assert identity_network(inventory=locate([tmp_path / "empty"], kaggle=False)).random


# ----------------------------------------------------------------------------------------
# Kaggle downloads, with the clients replaced by fakes (no network)
# ----------------------------------------------------------------------------------------

def _fake_module(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
    for k, v in attrs.items():
        setattr(mod, k, v)
    return mod


def _write_dataset(folder: Path, small_state: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"g_ema": small_state}, folder / "stylegan2.pt")
    (folder / "backbone.pth").write_text("<html><head><title>Kaggle: sign in</title></head></html>")


@pytest.fixture
def creds(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-kaggle-dir"))
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", "0123")


def test_download_with_kagglehub_records_and_flags_html(tmp_path: Path, monkeypatch, creds, small_generator) -> None:
    calls = []

    def dataset_download(handle, path=None, *, force_download=False, output_dir=None):
        calls.append((handle, output_dir))
        _write_dataset(Path(output_dir), small_generator.state_dict())
        return output_dir

    monkeypatch.setitem(sys.modules, "kagglehub", _fake_module("kagglehub", dataset_download=dataset_download))
    dest = tmp_path / "data"
    res = K.download(dest, ["sirtimio/style-gan-data"])
    assert calls == [("sirtimio/style-gan-data", str(dest / "style-gan-data"))]
    (r,) = res
    assert (r.status, r.client) == ("downloaded", "kagglehub")
    assert [p.path.name for p in r.problems] == ["backbone.pth"] and "HTML" in r.problems[0].problem
    manifest = json.loads((dest / "MANIFEST.json").read_text())
    files = {f["path"]: f for f in manifest["datasets"]["sirtimio/style-gan-data"]["files"]}
    g = files["style-gan-data/stylegan2.pt"]
    assert g["size"] == (dest / "style-gan-data" / "stylegan2.pt").stat().st_size
    assert len(g["sha256"]) == 64 and g["kind"] == "generator"
    assert files["style-gan-data/backbone.pth"]["header"] == "html"
    # verification: the recorded HTML page is reported; a changed file is caught
    assert [p.path.name for p in K.verify_manifest(dest)] == ["backbone.pth"]
    size = g["size"]
    with open(dest / "style-gan-data" / "stylegan2.pt", "ab") as f:
        f.write(b"x")
    assert [(p.path.name, p.problem) for p in K.verify_manifest(dest)] == [
        ("backbone.pth", files["style-gan-data/backbone.pth"]["problem"]),
        ("stylegan2.pt", f"size {size + 1} != recorded {size}")]
    assert D.locate([dest]).first("generator").path.name == "stylegan2.pt"


def test_download_skips_verified_copy_and_falls_back_to_kaggle_api(tmp_path: Path, monkeypatch, creds,
                                                                   small_generator) -> None:
    def broken(*a, **k):
        raise ConnectionError("kagglehub is down")

    api_calls = []

    class KaggleApi:
        def authenticate(self):
            api_calls.append("auth")

        def dataset_download_files(self, handle, path=None, force=False, quiet=True, unzip=False):
            api_calls.append((handle, path, unzip))
            Path(path).mkdir(parents=True, exist_ok=True)
            torch.save({"g_ema": small_generator.state_dict()}, Path(path) / "g.pt")

    monkeypatch.setitem(sys.modules, "kagglehub", _fake_module("kagglehub", dataset_download=broken))
    monkeypatch.setitem(sys.modules, "kaggle", _fake_module("kaggle"))
    monkeypatch.setitem(sys.modules, "kaggle.api", _fake_module("kaggle.api"))
    monkeypatch.setitem(sys.modules, "kaggle.api.kaggle_api_extended",
                        _fake_module("kaggle.api.kaggle_api_extended", KaggleApi=KaggleApi))
    dest = tmp_path / "data"
    (r,) = K.download(dest, ["sirtimio/arcface-weights"])
    assert (r.status, r.client, r.problems) == ("downloaded", "kaggle", ())
    assert api_calls == ["auth", ("sirtimio/arcface-weights", str(dest / "arcface-weights"), True)]
    (again,) = K.download(dest, ["sirtimio/arcface-weights"])
    assert again.status == "present" and len(api_calls) == 2


def test_download_without_credentials_says_what_to_do(tmp_path: Path, monkeypatch) -> None:
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "nothing"))
    monkeypatch.setitem(sys.modules, "kagglehub",
                        _fake_module("kagglehub", dataset_download=lambda *a, **k: pytest.fail("network")))
    assert K.kaggle_credentials() is None
    with pytest.raises(DependencyError) as e:
        K.download(tmp_path / "data")
    msg = str(e.value)
    assert "kaggle.json" in msg and "KAGGLE_USERNAME" in msg and "Add Data" in msg
    assert all(f"https://www.kaggle.com/datasets/{h}" in msg for h in K.KAGGLE_DATASETS)
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "kaggle.json").write_text("{}")
    assert K.kaggle_credentials() == str(tmp_path / "nothing" / "kaggle.json")


def test_cli_data_status_and_no_client_imports(tmp_path: Path) -> None:
    code = ("import sys, facelib, facelib.data, facelib.cli, facelib.pipeline, facelib.report\n"
            "from facelib.cli import main\n"
            "rc = main(['data', 'status'])\n"
            "bad = [m for m in ('kaggle', 'kagglehub', 'ipywidgets', 'papermill') if m in sys.modules]\n"
            "print('IMPORTED', bad, rc)\n")
    env = {**os.environ, "FACELIB_DATA": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "IMPORTED [] 0" in out.stdout
    assert "searched:" in out.stdout and str(tmp_path) in out.stdout and "generator: none found" in out.stdout
