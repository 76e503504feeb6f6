"""Identity networks (ArcFace loaders and parity), the identity crop (facelib.identity), and the dlib
judge (facelib.dlib_judge)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import facelib
from facelib import dlib_judge as J
from facelib import identity as I
from facelib.errors import CheckpointError, InputError, NoFaceError, RangeError, ShapeError

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
ARCFACE_REFS = SHARED / "refs" / "arcface"
FACES = SHARED / "faces"
COS_MIN = 0.9999  # the parity threshold of refs/arcface (see its README)


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"reference fixture {path} is absent")
    return path


def _synth():
    _need(ARCFACE_REFS / "synth.py")
    import importlib.util

    spec = importlib.util.spec_from_file_location("arcface_synth", ARCFACE_REFS / "synth.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _layout(fmt: str) -> list[tuple[str, tuple[int, ...]]]:
    data = json.loads(_need(ARCFACE_REFS / f"layout_{fmt}.json").read_text())
    return [(k, tuple(s)) for k, s in data["keys"]]


def _meta_state(layout) -> dict[str, torch.Tensor]:
    """Shape-only stand-in of a state dict (no memory, no weights)."""
    return {k: torch.empty(s, device="meta") for k, s in layout}


def _meta_net(arch: str, **kw) -> torch.nn.Module:
    with torch.device("meta"):
        return I.build_arcface(arch, seed=None, **kw)


def _small(seed: int = 0, family: str = "iresnet") -> torch.nn.Module:
    return I.build_arcface(family, layers=(1, 1, 1, 1), base_channels=8, seed=seed)


def _inputs(n: int = 3, size: int = 112, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = F.interpolate(torch.randn(n, 3, 7, 7, generator=g), size=(size, size), mode="bicubic", align_corners=False)
    return torch.tanh(low + 0.2 * torch.randn(n, 3, size, size, generator=g))


# ---------------------------------------------------------------------------------------------
# Parity with the reference implementations (synthetic weights in the released layouts)
# ---------------------------------------------------------------------------------------------

def _variants(fmt: str):
    out = ["plain", "module_prefix"]
    return out + (["no_num_batches_tracked"] if fmt == "ir_se50" else [])


PARITY_CASES = [(fmt, v) for fmt in ("iresnet50", "ir_se50") for v in _variants(fmt)]


@pytest.mark.parametrize("fmt,variant", PARITY_CASES, ids=[f"{f}-{v}" for f, v in PARITY_CASES])
def test_parity_with_reference(fmt, variant, tmp_path):
    ref = np.load(_need(ARCFACE_REFS / f"ref_{fmt}.npz"))
    sd = _synth().make_state_dict(str(ARCFACE_REFS / f"layout_{fmt}.json"), int(ref["seed"]))
    if variant == "module_prefix":
        sd = {"module." + k: v for k, v in sd.items()}
    elif variant == "no_num_batches_tracked":
        sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / f"{fmt}.pth"
    torch.save(sd, path)
    net = facelib.load_arcface(path)
    assert not net.training and net.spec.name == fmt
    x = torch.from_numpy(ref["x"])
    with torch.no_grad():
        emb = net(x)
    assert emb.shape == (4, 512) and emb.dtype == torch.float32
    assert torch.allclose(emb.norm(dim=1), torch.ones(4), atol=1e-5)
    want = torch.from_numpy(ref["emb_normalized"])
    cos = (emb.double() * want.double()).sum(1)
    assert cos.min() > COS_MIN, cos
    if variant == "plain":  # the un-normalised output is the reference's own (final BatchNorm included)
        with torch.no_grad():
            raw = net.embed_raw(x[:2])
        want_raw = torch.from_numpy(ref["emb_raw"][:2])
        assert ((raw - want_raw).norm(dim=1) / want_raw.norm(dim=1)).max() < 1e-3
    if "x256" in ref.files:  # pSp's id-loss path: crop + pool from 256 px, then the backbone
        with torch.no_grad():
            emb256 = net(I.identity_crop(torch.from_numpy(ref["x256"])))
        assert (emb256.double() * torch.from_numpy(ref["emb256_normalized"]).double()).sum(1).min() > COS_MIN


# ---------------------------------------------------------------------------------------------
# Layouts and architecture detection
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["iresnet50", "ir_se50"])
def test_built_layout_matches_released_layout(fmt):
    layout = _layout(fmt)
    built = [(k, tuple(v.shape)) for k, v in _meta_net(fmt).state_dict().items()]
    assert built == layout  # same keys, shapes and order as the released file


@pytest.mark.parametrize("fmt", ["iresnet50", "ir_se50"])
def test_detect_released_layouts_and_variants(fmt):
    layout = _layout(fmt)
    sd = _meta_state(layout)
    assert I.detect_arcface_arch(sd) == fmt
    assert I.detect_arcface_arch({"module." + k: v for k, v in sd.items()}) == fmt
    assert I.detect_arcface_arch({k: v for k, v in sd.items() if "num_batches" not in k}) == fmt
    assert I.detect_arcface_arch({k: v.half() for k, v in sd.items()}) == fmt
    assert I.detect_arcface_arch({"state_dict": sd, "epoch": 3}) == fmt


def test_detect_ir50_without_se_and_non_affine_output():
    sd = _meta_state(_layout("ir_se50"))
    plain = {k: v for k, v in sd.items() if ".res_layer.5." not in k}
    assert I.detect_arcface_arch(plain) == "ir50"
    no_affine = {k: v for k, v in sd.items() if k not in ("output_layer.4.weight", "output_layer.4.bias")}
    assert I.detect_arcface_arch(no_affine) == "ir_se50"
    spec = I._infer_spec(no_affine)
    assert spec is not None and not spec.affine_output


@pytest.mark.parametrize("arch", sorted(I.ARCFACE_ARCHS))
def test_detect_every_standard_architecture(arch):
    sd = _meta_net(arch).state_dict()
    assert I.detect_arcface_arch(sd) == arch
    assert I.detect_arcface_arch({"module." + k: v.half() for k, v in sd.items()}) == arch


def test_block_counts_of_standard_architectures():
    counts = {a: sum(1 for k in _meta_net(a).state_dict() if k.endswith("conv1.weight") and k.startswith("layer"))
              for a in ("iresnet18", "iresnet34", "iresnet50", "iresnet100")}
    assert counts == {"iresnet18": 8, "iresnet34": 16, "iresnet50": 24, "iresnet100": 49}
    units = {a: len(_meta_net(a).body) for a in ("ir_se50", "ir_se100", "ir_se152")}
    assert units == {"ir_se50": 24, "ir_se100": 49, "ir_se152": 50}


def test_detect_returns_none_for_other_layouts():
    assert I.detect_arcface_arch({}) is None
    assert I.detect_arcface_arch({"style.1.weight": torch.zeros(2)}) is None
    assert I.detect_arcface_arch({"conv1.weight": torch.zeros(8, 3, 3, 3)}) is None


def test_custom_layout_name_round_trip():
    net = I.build_arcface("ir_se", layers=(1, 2, 1, 1), base_channels=16, seed=None)
    name = I.detect_arcface_arch(net.state_dict())
    assert name == "ir_se-1-2-1-1-c16" == net.spec.name
    again = I.build_arcface(name, seed=None)
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in net.state_dict().items()}


def test_build_arcface_rejects_unknown_arch():
    with pytest.raises(InputError, match="unknown arch"):
        I.build_arcface("resnet50")
    with pytest.raises(InputError, match="layers"):
        I.build_arcface("iresnet")
    with pytest.raises(InputError, match="iresnet50"):
        I.build_arcface("iresnet50", layers=(1, 1, 1, 1))


# ---------------------------------------------------------------------------------------------
# Loading: round trips and dtypes
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["iresnet", "ir_se", "ir"])
def test_load_round_trip_small_network(tmp_path, family):
    net = _small(seed=3, family=family)
    x = _inputs()
    path = tmp_path / "net.pth"
    torch.save({"module." + k: v for k, v in net.state_dict().items()}, path)
    loaded = facelib.load_arcface(path)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    with torch.no_grad():
        assert torch.allclose(loaded(x), net(x), atol=1e-6)


def test_fp16_checkpoint_is_cast_to_float32(tmp_path):
    net = _small(seed=1)
    path = tmp_path / "half.pth"
    torch.save({k: (v.half() if v.is_floating_point() else v) for k, v in net.state_dict().items()}, path)
    loaded = facelib.load_arcface(path)
    assert all(p.dtype == torch.float32 for p in loaded.state_dict().values() if p.is_floating_point())
    x = _inputs()
    with torch.no_grad():
        cos = (loaded(x) * net(x)).sum(1)
    assert cos.min() > 0.999


def test_load_from_state_dict_and_device():
    net = _small(seed=2)
    loaded = facelib.load_arcface(net.state_dict(), device="cpu")
    x = _inputs(2)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))


# ---------------------------------------------------------------------------------------------
# Bad files
# ---------------------------------------------------------------------------------------------

def _write_bad(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.pth"
    sd = _small().state_dict()
    if kind == "truncated":
        full = tmp_path / "full.pth"
        torch.save(sd, full)
        data = full.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "text":
        path.write_text("model_ir_se50.pth\nsee README\n")
    elif kind == "html":
        path.write_text("<!DOCTYPE html><html><body>Quota exceeded</body></html>")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "stylegan2":
        torch.save({"g_ema": {"style.1.weight": torch.zeros(4, 4)}, "latent_avg": torch.zeros(4)}, path)
    elif kind == "stylegan2_bare":
        torch.save({"style.1.weight": torch.zeros(4, 4), "convs.0.conv.weight": torch.zeros(1, 4, 4, 3, 3)}, path)
    elif kind == "unknown":
        torch.save({"encoder.0.weight": torch.zeros(3, 3)}, path)
    elif kind == "missing_key":
        torch.save({k: v for k, v in sd.items() if k != "layer2.0.conv2.weight"}, path)
    elif kind == "extra_key":
        torch.save({**sd, "head.kernel": torch.zeros(512, 10)}, path)
    elif kind == "wrong_shape":
        torch.save({**sd, "features.bias": torch.zeros(7)}, path)
    elif kind == "pickled_module":
        torch.save(_small(), path)
    elif kind == "not_a_dict":
        torch.save([torch.zeros(2)], path)
    return path


BAD = {
    "missing": "not found",
    "truncated": "corrupt|truncated",
    "text": "text",
    "html": "HTML",
    "empty": "empty",
    "stylegan2": "StyleGAN2",
    "stylegan2_bare": "StyleGAN2",
    "unknown": "unknown network layout",
    "missing_key": r"1 missing \(layer2\.0\.conv2\.weight\)",
    "extra_key": r"1 unexpected \(head\.kernel\)",
    "wrong_shape": r"shape mismatch.*features\.bias",
    "pickled_module": "not allowed",
    "not_a_dict": "list",
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_files_raise_checkpoint_error(tmp_path, kind):
    path = _write_bad(tmp_path, kind)
    with pytest.raises(CheckpointError, match=BAD[kind]) as info:
        facelib.load_arcface(path)
    assert str(path) in str(info.value)


def test_detect_on_paths(tmp_path):
    good = tmp_path / "good.pth"
    torch.save(_small().state_dict(), good)
    assert I.detect_arcface_arch(good) == "iresnet-1-1-1-1-c8"
    assert I.detect_arcface_arch(_write_bad(tmp_path, "stylegan2")) is None
    with pytest.raises(CheckpointError):
        I.detect_arcface_arch(tmp_path / "missing.pth")


# ---------------------------------------------------------------------------------------------
# The networks themselves
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["iresnet", "ir_se"])
def test_small_random_network_is_a_usable_identity_loss(family):
    net = _small(seed=0, family=family)
    x = _inputs(4).requires_grad_(True)
    emb = net(x)
    assert emb.shape == (4, 512) and torch.allclose(emb.norm(dim=1), torch.ones(4), atol=1e-5)
    cos = emb @ emb.t()
    assert cos[~torch.eye(4, dtype=torch.bool)].max() < 0.9  # distinct inputs, distinct embeddings
    (1 - (emb[0] * emb[1].detach()).sum()).backward()
    assert torch.isfinite(x.grad).all() and x.grad[0].abs().sum() > 0 and x.grad[1:].abs().sum() == 0
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_random_init_is_deterministic_under_seed():
    a, b, c = _small(seed=5), _small(seed=5), _small(seed=6)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["fc.weight"], sc["fc.weight"])


def test_forward_rejects_wrong_input_size():
    with pytest.raises(ShapeError, match="112"):
        _small()(torch.zeros(1, 3, 64, 64))


# ---------------------------------------------------------------------------------------------
# Identity crop
# ---------------------------------------------------------------------------------------------

def _psp_crop(x: torch.Tensor) -> torch.Tensor:
    if x.shape[-1] != 256:
        x = F.adaptive_avg_pool2d(x, (256, 256))
    return F.adaptive_avg_pool2d(x[:, :, 35:223, 32:220], (112, 112))


@pytest.mark.parametrize("size", [256, 512, 1024])
def test_identity_crop_equals_psp_path_on_multiples_of_256(size):
    x = _inputs(2, size)
    out = I.identity_crop(x)
    assert out.shape == (2, 3, 112, 112)
    assert (out - _psp_crop(x)).abs().max() < 1e-5


@pytest.mark.parametrize("h,w", [(64, 64), (320, 320), (200, 300)])
def test_identity_crop_fractional_window_geometry(h, w):
    # A ramp holding each pixel centre's coordinate in 256-px units: the area average of every
    # output cell must be the centre of that cell's window slice.
    ys = ((torch.arange(h) + 0.5) * 256 / h)[:, None].expand(h, w)
    xs = ((torch.arange(w) + 0.5) * 256 / w)[None, :].expand(h, w)
    img = torch.stack([ys, xs, ys])[None]
    out = I.identity_crop(img)
    centres = torch.arange(112) + 0.5
    want_y = 35 + centres * (188 / 112)
    want_x = 32 + centres * (188 / 112)
    # piecewise-constant pixels: exact up to a fraction of one source pixel
    assert (out[0, 0] - want_y[:, None]).abs().max() < 0.5 * 256 / h
    assert (out[0, 1] - want_x[None, :]).abs().max() < 0.5 * 256 / w


def test_identity_crop_other_sizes_agree_with_256():
    x1024 = _inputs(2, 1024)
    ref = I.identity_crop(F.adaptive_avg_pool2d(x1024, 256))
    for size in (320, 384, 200):
        other = I.identity_crop(F.interpolate(x1024, size=(size, size), mode="area"))
        assert (other - ref).abs().mean() < 0.02, size


def test_identity_crop_is_differentiable_and_local():
    x = _inputs(1, 64).requires_grad_(True)
    _small()(I.identity_crop(x)).sum().backward()
    g = x.grad[0].abs().sum(0)
    assert torch.isfinite(g).all() and g[12:52, 10:53].gt(0).float().mean() > 0.95
    assert g[:8].sum() == 0 and g[57:].sum() == 0 and g[:, :7].sum() == 0 and g[:, 56:].sum() == 0


def test_identity_crop_rejects_bad_shapes():
    with pytest.raises(ShapeError):
        I.identity_crop(torch.zeros(3, 64, 64))
    with pytest.raises(ShapeError):
        I.identity_crop(torch.zeros(1, 4, 64, 64))
    with pytest.raises(ShapeError):
        I.identity_crop(torch.zeros(1, 3, 4, 4))


# ---------------------------------------------------------------------------------------------
# Independent judge (dlib)
# ---------------------------------------------------------------------------------------------

def _judge_available() -> bool:
    try:
        import dlib  # noqa: F401

        from facelib.align import dlib_model_path
        for name in J._DLIB_MODELS.values():
            dlib_model_path(name)
        return True
    except Exception:
        return False


needs_dlib = pytest.mark.skipif(not _judge_available(),
                                reason="dlib or the face_recognition_models files are not installed")


@pytest.fixture(scope="module")
def aligned():
    """FFHQ-aligned 256 px crops of the shared test photos."""
    from facelib.align import align_face

    names = ["obama.jpg", "obama2_exif6.jpg", "obama-240p.jpg", "biden.jpg"]
    return {n: align_face(_need(FACES / n), output_size=256) for n in names}


@pytest.mark.slow
@needs_dlib
def test_dlib_same_person_closer_than_different_people(aligned):
    d = J.dlib_descriptors([aligned[n] for n in ("obama.jpg", "obama2_exif6.jpg", "obama-240p.jpg", "biden.jpg")])
    assert d.descriptors.shape == (4, 128) and all(d.detected)
    same = J.dlib_distance(d.descriptors[1:3], d.descriptors[0])
    different = J.dlib_distance(d.descriptors[3], d.descriptors[:3])
    assert same.max() < J.DLIB_SAME_PERSON_THRESHOLD < different.min()
    assert same.max() < different.min()
    # the raw photo gives the same identity as its aligned crop
    raw = J.dlib_descriptors(FACES / "obama.jpg")
    assert J.dlib_distance(raw, d.descriptors[0])[0] < 0.3
    assert J.dlib_distance(raw, d.descriptors[3])[0] > J.DLIB_SAME_PERSON_THRESHOLD


@pytest.mark.slow
@needs_dlib
def test_dlib_fallback_box_on_aligned_faces(aligned, monkeypatch):
    img = aligned["obama.jpg"]
    detected = J.dlib_descriptors(img)
    monkeypatch.setattr(J, "detect_faces", lambda *a, **k: [])
    fb = J.dlib_descriptors(img)
    assert fb.detected == (False,)
    l, t, r, b = J.FFHQ_FACE_BOX
    assert fb.boxes[0] == (round(l * 256), round(t * 256), round(r * 256) - 1, round(b * 256) - 1)
    assert J.dlib_distance(fb, detected)[0] < 0.3  # the fixed box still finds the same person
    with pytest.raises(NoFaceError):
        J.dlib_descriptors(img, fallback=None)


@pytest.mark.slow
@needs_dlib
def test_dlib_detected_box_is_near_the_ffhq_box(aligned):
    d = J.dlib_descriptors(list(aligned.values()))
    want = np.array(J.FFHQ_FACE_BOX) * 256
    assert np.abs(np.array(d.boxes) - want).max() < 0.1 * 256


@pytest.mark.slow
@needs_dlib
def test_dlib_input_types_agree(aligned):
    from facelib.grids import to_tensor

    img = aligned["biden.jpg"]
    a = J.dlib_descriptors(img)
    b = J.dlib_descriptors(np.asarray(img))
    c = J.dlib_descriptors(to_tensor(img))
    u8 = J.dlib_descriptors(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1))
    assert J.dlib_distance(a, b)[0] < 1e-6 and J.dlib_distance(a, c)[0] < 1e-6
    assert J.dlib_distance(a, u8)[0] < 1e-6
    with pytest.raises(RangeError):
        J.dlib_descriptors(to_tensor(img) * 127.5 + 127.5)
    with pytest.raises(InputError):
        J.dlib_descriptors(42)


@needs_dlib
def test_dlib_flat_image_uses_fallback_or_raises():
    gray = np.full((128, 128, 3), 128, np.uint8)
    assert J.dlib_descriptors(gray).detected == (False,)
    with pytest.raises(NoFaceError):
        J.dlib_landmarks(gray, fallback=None)


def test_dlib_judge_rejects_bad_fallback_before_loading_models(monkeypatch):
    def no_models(*a, **k):
        raise AssertionError("models loaded before the arguments were checked")

    monkeypatch.setattr(J, "dlib_model_path", no_models)
    img = np.zeros((16, 16, 3), np.uint8)
    for fn in (J.dlib_descriptors, J.dlib_landmarks):
        with pytest.raises(InputError, match="fallback"):
            fn(img, fallback="center")


@needs_dlib
def test_dlib_judge_shares_the_alignment_model_cache():
    import facelib.dlib_models as M

    predictor, model = J._judge_models()
    assert predictor is M.shape_predictor(str(M.dlib_model_path(J._DLIB_MODELS["landmarks5"])))
    assert model is M.face_recognizer(str(M.dlib_model_path(J._DLIB_MODELS["descriptor"])))
    assert J._judge_models() == (predictor, model)  # loaded once


def test_dlib_distance_shapes():
    a = np.zeros((3, 128))
    b = np.ones(128)
    assert np.allclose(J.dlib_distance(a, b), np.sqrt(128))
    with pytest.raises(ShapeError):
        J.dlib_distance(np.zeros((3, 128)), np.zeros((2, 128)))
    with pytest.raises(ShapeError):
        J.dlib_distance(np.zeros((3, 64)), np.zeros((3, 64)))


@pytest.mark.slow
@needs_dlib
def test_pose_proxy_on_real_landmarks(aligned):
    from PIL import ImageOps

    turned = aligned["obama2_exif6.jpg"]
    lm = J.dlib_landmarks([aligned["obama.jpg"], turned, ImageOps.mirror(turned)])
    yaw, pitch = J.pose_proxy(lm)
    assert lm.points.shape == (3, 68, 2) and all(lm.detected)
    assert abs(yaw[0]) < 0.1 and abs(pitch[0]) < 0.1  # frontal
    assert abs(yaw[1]) > 0.12 and abs(yaw[1] + yaw[2]) < 0.05  # a mirror flips the yaw
    assert abs(pitch[1] - pitch[2]) < 0.05


def test_pose_proxy_invariances_and_signs():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(68, 2)) * 2 + 50
    pts[36:42] = [30, 40]
    pts[42:48] = [70, 40]
    pts[48], pts[54] = [40, 85], [60, 85]
    pts[30] = [50, 62]  # nose tip on the midline, 0.55 inter-ocular distances below the eyes
    yaw, pitch = J.pose_proxy(pts)
    assert abs(yaw) < 1e-9 and abs(pitch) < 1e-9
    turned = pts.copy()
    turned[30, 0] += 8
    assert J.pose_proxy(turned)[0] == pytest.approx(0.2)
    down = pts.copy()
    down[30, 1] += 4
    assert J.pose_proxy(down)[1] == pytest.approx(0.1)
    angle = np.deg2rad(30)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = (turned @ rot.T) * 2.5 + 17
    assert np.allclose(J.pose_proxy(moved), J.pose_proxy(turned))
    with pytest.raises(ShapeError):
        J.pose_proxy(np.zeros((5, 2)))
