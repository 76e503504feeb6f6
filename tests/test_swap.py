"""facelib.swap, facelib.swap_judge, facelib.swap_pairs: identity moves towards the source, rows and
image held, robustness, judge, persistence, CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import facelib
from facelib.errors import CheckpointError, InputError, NoFaceError, OptimisationError, RangeError, ShapeError
from facelib.swap import SwapConfig, SwapResult, face_swap, face_weight_map, load_swap, resolve_rows
from facelib.swap_judge import judge_swap

from .conftest import make_small_generator, shared_path

STEPS = 40
FAST = dict(lpips=None, judge=False, progress=False)




@pytest.fixture(scope="module")
def G():
    return make_small_generator()


@pytest.fixture(scope="module")
def id_net():
    return facelib.build_arcface("iresnet", layers=(1, 1, 1, 1), base_channels=8, seed=0)


@pytest.fixture(scope="module")
def pairs(G):
    """Two target W+ and two source images rendered from other random w (seed 1)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        w = G.mapping(torch.randn(4, G.style_dim, generator=g))[:, None].repeat(1, G.n_latent, 1)
        sources = G.synthesis(w[2:]).clamp(-1, 1)
    return w[:2].clone(), sources


@pytest.fixture(scope="module")
def swapped(G, id_net, pairs):
    targets, sources = pairs
    return face_swap(G, id_net, sources, targets, steps=STEPS, **FAST)


def _cos(id_net, images, ref_images):
    from facelib.losses import identity_similarity

    with torch.no_grad():
        ref = id_net(facelib.identity_crop(ref_images))
        return identity_similarity(id_net, images, ref)


# ----------------------------------------------------------------------------------------
# The optimisation
# ----------------------------------------------------------------------------------------

def test_identity_moves_towards_source_while_image_stays_near_target(G, id_net, pairs, swapped):
    targets, sources = pairs
    r = swapped
    assert isinstance(r, SwapResult) and len(r) == 2 and r.steps_done == STEPS and not r.interrupted
    with torch.no_grad():
        target_images = G.synthesis(targets).clamp(-1, 1)
    assert torch.allclose(r.target_images, target_images, atol=1e-6)
    before = _cos(id_net, target_images, sources)
    after = _cos(id_net, r.images, sources)
    moved = (after - before) / (1 - before)
    # a sound optimiser moves 0.3-0.85 of the way with a random identity network; ignoring the term: 0
    assert (moved >= 0.2).all() and (moved < 1).all(), moved
    assert np.allclose([m["id_moved"] for m in r.metrics], moved.numpy(), atol=1e-4)
    assert np.allclose([m["id_to_source"] for m in r.metrics], after.numpy(), atol=1e-4)
    # the image stays closer to the target than to the source
    mse_t = (r.images - target_images).square().flatten(1).mean(1)
    mse_s = (r.images - sources).square().flatten(1).mean(1)
    assert (mse_t < mse_s).all(), (mse_t, mse_s)
    assert np.allclose([m["mse_to_target"] for m in r.metrics], mse_t.numpy(), rtol=1e-4)
    # the kept step renders exactly from the kept W+ and noise maps
    with torch.no_grad():
        again = G.synthesis(r.wplus, noise=r.noises).clamp(-1, 1)
    assert torch.allclose(again, r.images, atol=1e-5)
    h = r.history[0]
    assert len(h["id"]) == STEPS and h["id"][-1] < h["id"][0] and h["mse"][0] == 0.0
    assert r.config.rows == tuple(range(G.n_latent))  # the default rows 0-8, clipped to this generator
    assert r.mask_kinds == ["ellipse", "ellipse"] and all(m["mask"] == "ellipse" for m in r.metrics)


def test_rows_outside_the_chosen_rows_are_unchanged_exactly(G, id_net, pairs):
    targets, sources = pairs
    r = face_swap(G, id_net, sources, targets, steps=6, rows="2-4", **FAST)
    assert r.config.rows == (2, 3, 4)
    others = [i for i in range(G.n_latent) if i not in (2, 3, 4)]
    assert torch.equal(r.wplus[:, others], targets[:, others])
    assert not torch.equal(r.wplus[:, 2:5], targets[:, 2:5])
    assert torch.equal(r.target_wplus, targets)


def test_row_specs(G):
    n = G.n_latent
    assert resolve_rows(None, 18) == tuple(range(9)) and resolve_rows(None, n) == tuple(range(n))
    assert resolve_rows("0-2,5", n) == (0, 1, 2, 5) == resolve_rows([5, 0, 1, 2], n) == resolve_rows(range(3), n) + (5,)
    assert resolve_rows(facelib.LayerMask.from_rows([1, 3], n), n) == (1, 3)
    assert resolve_rows([i in (1, 3) for i in range(n)], n) == (1, 3)
    assert resolve_rows("all", n) == tuple(range(n))
    with pytest.raises(InputError, match="rows"):
        resolve_rows("0-40", n)
    with pytest.raises(InputError, match="0/1"):
        resolve_rows([0.5] * n, n)
    with pytest.raises(InputError, match="nothing"):
        resolve_rows("none", n)


def test_id_weight_zero_with_latent_weight_stays_at_the_target(G, id_net, pairs):
    targets, sources = pairs
    r = face_swap(G, id_net, sources, targets, steps=8, id_weight=0.0, latent_weight=1.0, **FAST)
    assert torch.equal(r.wplus, targets)
    assert torch.equal(r.images, r.target_images)
    assert all(m["best_step"] == 0 and abs(m["id_moved"]) < 1e-6 for m in r.metrics)


def test_deterministic_and_one_source_broadcasts(G, id_net, pairs):
    targets, sources = pairs
    a = face_swap(G, id_net, sources[:1], targets, steps=5, **FAST)
    b = face_swap(G, id_net, sources[:1], targets, steps=5, **FAST)
    assert len(a) == 2 and torch.equal(a.wplus, b.wplus) and a.history == b.history
    # image 1 of the batch is what a swap of that pair alone gives
    c = face_swap(G, id_net, sources[:1], targets[1:], steps=5, **FAST)
    assert torch.allclose(a.wplus[1], c.wplus[0], atol=1e-5)


class _NaNAfter(nn.Module):
    """Wraps an identity network; forward call number ``k`` (1-based) returns NaN."""

    def __init__(self, net: nn.Module, k: int) -> None:
        super().__init__()
        self.net, self.k, self.calls = net, k, 0
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out = self.net(x)
        return torch.full_like(out, float("nan")) if self.calls == self.k else out


def test_nan_loss_raises_with_the_best_steps_so_far(G, id_net, pairs):
    targets, sources = pairs
    # call 1 embeds the sources; calls 2, 3, 4 are steps 0-2; call 5 (step 3) is NaN
    with pytest.raises(OptimisationError, match="step 3") as err:
        face_swap(G, _NaNAfter(id_net, 5), sources, targets, steps=10, **FAST)
    best = err.value.best
    assert isinstance(best, SwapResult) and best.steps_done == 3
    assert all(m["best_step"] <= 2 for m in best.metrics) and torch.isfinite(best.wplus).all()
    with pytest.raises(OptimisationError) as err:
        face_swap(G, _NaNAfter(id_net, 2), sources, targets, steps=10, **FAST)
    assert err.value.best is None


def test_keyboard_interrupt_returns_the_best_so_far(G, id_net, pairs):
    targets, sources = pairs
    seen, states = [], []

    def on_step(step, total, state):
        seen.append((step, total, len(state.id_similarity)))
        states.append(state)
        if step == 3:
            raise KeyboardInterrupt

    r = face_swap(G, id_net, sources, targets, steps=20, on_step=on_step, **FAST)
    assert r.interrupted and r.steps_done == 3 and seen == [(1, 20, 2), (2, 20, 2), (3, 20, 2)]
    assert all(m["interrupted"] for m in r.metrics) and all(m["best_step"] <= 2 for m in r.metrics)
    # each state describes one evaluated step: its W+ renders its images, its cosines are its "id" terms
    for k, state in enumerate(states):
        with torch.no_grad():
            assert torch.allclose(G.synthesis(state.wplus, noise=r.noises), state.images, atol=1e-5)
        assert np.allclose(state.id_similarity, [1 - h["id"][k] for h in r.history])
        assert state.losses == [h["loss"][k] for h in r.history]


def test_projection_inputs_use_their_images_and_noise_maps(G, id_net, pairs):
    targets, sources = pairs
    with torch.no_grad():
        photos = G.synthesis(targets, noise="random").clamp(-1, 1)
    proj = facelib.project(G, photos, steps=2, lpips=None, progress=False)
    src = facelib.project(G, sources, steps=2, lpips=None, progress=False)
    r = face_swap(G, id_net, src, proj, steps=3, **FAST)
    assert all(torch.equal(a, b) for a, b in zip(r.noises, proj.noises))
    with torch.no_grad():
        assert torch.allclose(r.target_images, G.synthesis(proj.wplus, noise=proj.noises).clamp(-1, 1), atol=1e-6)
    assert np.allclose([m["id_target_to_source"] for m in r.metrics],
                       _cos(id_net, r.target_images, src.images).numpy(), atol=1e-4)


def test_bad_inputs_are_clear_errors(G, id_net, pairs):
    targets, sources = pairs
    with pytest.raises(ShapeError, match="target"):
        face_swap(G, id_net, sources, targets[:, :3], **FAST)
    with pytest.raises(RangeError, match="source"):
        face_swap(G, id_net, sources * 3, targets, **FAST)
    with pytest.raises(ShapeError, match="batch"):
        face_swap(G, id_net, sources, torch.cat([targets, targets[:1]]), **FAST)
    with pytest.raises(InputError, match="unknown option"):
        face_swap(G, id_net, sources, targets, stepz=3, **FAST)
    with pytest.raises(InputError, match="id_net"):
        face_swap(G, None, sources, targets, **FAST)
    with pytest.raises(InputError, match=r"^face_swap: pass either config= or keyword settings, not both "
                                         r"\(got config= and rows, steps\)"):
        face_swap(G, id_net, sources, targets, config=SwapConfig(lpips=None), steps=2, rows="0-3")
    with pytest.raises(RangeError, match="NaN"):
        face_swap(G, id_net, sources, targets * float("nan"), **FAST)
    with pytest.raises(InputError, match="mask"):
        SwapConfig(mask="circle")
    with pytest.raises(InputError, match="id_weight"):
        SwapConfig(id_weight=-1)


# ----------------------------------------------------------------------------------------
# Face region and LPIPS
# ----------------------------------------------------------------------------------------

def test_face_region_kinds_and_weight_map(G, id_net, pairs):
    targets, sources = pairs
    r = face_swap(G, id_net, sources, targets, steps=0, mask="none", **FAST)
    assert r.mask_kinds == ["none"] * 2 and float(r.face_masks.abs().max()) == 0
    e = face_swap(G, id_net, sources, targets, steps=0, mask="ellipse", **FAST)
    m = e.face_masks[0, 0]
    assert m[int(0.65 * 32), 16] > 0.9 and m[1, 1] < 0.01  # face centre inside, corner outside
    w = face_weight_map(e.face_masks, 0.1)
    assert torch.allclose(w, 1 - 0.9 * e.face_masks) and float(w.min()) >= 0.1 - 1e-6
    with pytest.raises(NoFaceError):  # an untrained generator renders no face dlib can find
        face_swap(G, id_net, sources, targets, steps=0, mask="landmarks", **FAST)


def test_lpips_module_and_masked_lpips(G, id_net, pairs):
    lpips = pytest.importorskip("lpips")
    import warnings

    from facelib.losses import LPIPSLoss
    from facelib.swap import _weighted_lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    loss = LPIPSLoss(net)
    targets, sources = pairs
    with torch.no_grad():
        a, b = G.synthesis(targets), sources
        feats = loss.features(b)
        uniform = _weighted_lpips(loss, a, feats, torch.ones(2, 1, 32, 32))
        assert torch.allclose(uniform, loss.distance(a, feats), atol=1e-6)
        left = torch.zeros(2, 1, 32, 32)
        left[..., :16] = 1
        right = 1 - left
        wl, wr = _weighted_lpips(loss, a, feats, left), _weighted_lpips(loss, a, feats, right)
        assert not torch.allclose(wl, wr)
    r = face_swap(G, id_net, sources, targets, steps=3, lpips=net, judge=False, progress=False)
    assert r.lpips == "module" and r.config.lpips == "module" and len(r.history[0]["lpips"]) == 3
    assert all(m["lpips_to_target"] >= 0 for m in r.metrics)


# ----------------------------------------------------------------------------------------
# The independent judge
# ----------------------------------------------------------------------------------------

def _dlib_ready() -> bool:
    try:
        import dlib  # noqa: F401

        from facelib.align import dlib_model_path

        dlib_model_path("dlib_face_recognition_resnet_model_v1.dat")
        dlib_model_path("shape_predictor_68_face_landmarks.dat")
    except Exception:
        return False
    return True


needs_dlib = pytest.mark.skipif(not _dlib_ready(), reason="dlib or its face_recognition_models files are missing")


@pytest.mark.slow
@needs_dlib
def test_judge_swap_on_real_aligned_photos(id_net):
    from facelib.align import align_face
    from facelib.grids import to_tensor

    faces = shared_path("faces")
    x = {n: to_tensor(align_face(faces / f"{n}.jpg", output_size=256)) for n in ("obama", "obama2_exif6", "biden")}
    # "result" = obama, "source" = another photo of obama, "target" = biden
    j = judge_swap(x["obama"], x["obama2_exif6"], x["biden"], id_net)
    assert len(j) == 1 and j.detected[0] == {"result": True, "source": True, "target": True}
    assert bool(j.dlib_same_as_source[0]) and not bool(j.dlib_same_as_target[0])
    assert j.dlib_to_source[0] < 0.6 < j.dlib_to_target[0] and j.dlib_target_to_source[0] > 0.6
    assert abs(j.yaw_change[0] - (j.yaw[0] - j.target_yaw[0])) < 1e-12
    # the roles swapped: biden as the result is judged the target's person, not the source's
    k = judge_swap(x["biden"], x["obama2_exif6"], x["biden"], id_net)
    assert not bool(k.dlib_same_as_source[0]) and bool(k.dlib_same_as_target[0])
    assert k.dlib_to_target[0] < 1e-6 and abs(k.yaw_change[0]) < 1e-12 and abs(k.id_to_target[0] - 1) < 1e-5
    m = j.metrics(0)
    assert m["dlib_same_as_source"] is True and m["dlib_threshold"] == 0.6 and "id_moved" in m
    assert "dlib" in j.summary(0)


@needs_dlib
def test_face_swap_judge_marks_the_fallback_box(G, id_net, pairs):
    targets, sources = pairs
    r = face_swap(G, id_net, sources, targets, steps=2, lpips=None, progress=False, judge=True)
    for m in r.metrics:
        assert m["dlib_detected"] == {"result": False, "source": False, "target": False}
        assert {"dlib_to_source", "dlib_to_target", "yaw_change", "pitch_change"} <= set(m)
    assert "(no face)" in r.caption(0)


# ----------------------------------------------------------------------------------------
# Persistence and the command line
# ----------------------------------------------------------------------------------------

def test_save_load_round_trip(G, swapped, tmp_path):
    meta = swapped.save(tmp_path / "s.pt")
    data = json.loads(meta.read_text())
    assert data["format"] == "facelib.swap" and data["config"]["rows"] == list(swapped.config.rows)
    back = load_swap(tmp_path / "s.pt")
    assert torch.equal(back.wplus, swapped.wplus) and torch.equal(back.target_wplus, swapped.target_wplus)
    assert back.config == swapped.config and back.metrics == swapped.metrics and back.mask_kinds == swapped.mask_kinds
    assert all(torch.equal(a, b) for a, b in zip(back.noises, swapped.noises))
    assert torch.allclose(back.images, swapped.images, atol=2e-3)
    assert len(back.select([1])) == 1 and torch.equal(back[1].wplus, swapped.wplus[1:])
    assert torch.equal(back[np.int64(-1)].wplus, swapped.wplus[1:]) and back.select(slice(None)).mask_kinds == back.mask_kinds
    with pytest.raises(IndexError, match="swap index 5"):
        back.select([0, 5])
    from facelib.weights import state_fingerprint

    assert back.weights_sha256 == state_fingerprint(G.state_dict())  # recorded without a weights file too
    # the sidecar is required: without it the tensors alone are not a swap result
    (tmp_path / "s.json").unlink()
    with pytest.raises(CheckpointError, match="metadata"):
        load_swap(tmp_path / "s.pt")
    with torch.serialization.safe_globals([]):
        torch.load(tmp_path / "s.pt", weights_only=True)


def test_cli_round_trip(G, id_net, pairs, tmp_path, capsys):
    from facelib.cli import main
    from facelib.grids import save_image
    from facelib.weights import save_generator

    targets, sources = pairs
    save_generator(G, tmp_path / "g.pt")
    torch.save(id_net.state_dict(), tmp_path / "arcface.pth")
    with torch.no_grad():
        photo = G.synthesis(targets[:1]).clamp(-1, 1)
    proj = facelib.project(G, photo, steps=2, lpips=None, progress=False)
    proj.save(tmp_path / "target.pt")
    save_image(sources[0], tmp_path / "source.png")
    out = tmp_path / "res" / "swap.png"
    rc = main(["swap", str(tmp_path / "source.png"), str(tmp_path / "target.pt"), str(out),
               "--weights", str(tmp_path / "g.pt"), "--arcface", str(tmp_path / "arcface.pth"),
               "--steps", "4", "--rows", "1-3", "--lpips", "none", "--no-judge", "--quiet"])
    assert rc == 0 and out.is_file() and out.with_suffix(".json").is_file()
    assert "id src" in capsys.readouterr().out
    r = load_swap(out.with_suffix(".pt"))
    assert r.config.rows == (1, 2, 3) and r.steps_done == 4 and r.source_names == [str(tmp_path / "source.png")]
    assert torch.equal(r.target_wplus, proj.wplus) and all(torch.equal(a, b) for a, b in zip(r.noises, proj.noises))
    others = [i for i in range(G.n_latent) if i not in (1, 2, 3)]
    assert torch.equal(r.wplus[:, others], proj.wplus[:, others])
    assert not list(out.parent.glob(".*part*"))  # no temporary files left behind
    # rerun: the same settings are done; other settings keep the finished result unless --overwrite
    argv = ["swap", str(tmp_path / "source.png"), str(tmp_path / "target.pt"), str(out),
            "--weights", str(tmp_path / "g.pt"), "--arcface", str(tmp_path / "arcface.pth"),
            "--rows", "1-3", "--lpips", "none", "--no-judge", "--quiet"]
    before = {p: p.read_bytes() for p in out.parent.iterdir()}
    assert main(argv + ["--steps", "4"]) == 0 and "already done" in capsys.readouterr().out
    assert main(argv + ["--steps", "5"]) == 1 and "rerun with --overwrite" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in out.parent.iterdir()} == before
    assert main(argv + ["--steps", "5", "--overwrite"]) == 0 and load_swap(out.with_suffix(".pt")).steps_done == 5
    capsys.readouterr()
    # a bad target file is a clear error, not a traceback
    (tmp_path / "bad.pt").write_text("<html>quota exceeded</html>")
    assert main(["swap", str(tmp_path / "source.png"), str(tmp_path / "bad.pt"), str(out), "--quiet"]) == 1
    assert "bad.pt" in capsys.readouterr().err


def test_swap_inputs_pairs_projections_with_their_photos(G, tmp_path):
    from facelib.grids import save_image
    from facelib.swap_pairs import swap_inputs

    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        w = G.mapping(torch.randn(3, G.style_dim, generator=g))[:, None].repeat(1, G.n_latent, 1)
        photos = G.synthesis(w).clamp(-1, 1)
    proj = facelib.project(G, photos, steps=1, lpips=None, progress=False)
    latents, aligned = tmp_path / "latents", tmp_path / "aligned"
    for i, name in enumerate(["ann/0", "ann/1", "bob/0"]):
        proj[i].save(latents / f"{name}.pt")
    save_image(photos[0], aligned / "ann" / "0.png")
    # automatic: the first projection is the source, other people's projections come first as targets
    inp = swap_inputs(G, latents_dir=latents, aligned_dir=aligned, max_pairs=2)
    assert list(zip(inp.source_names, inp.target_names)) == [("ann/0", "bob/0"), ("ann/0", "ann/1")]
    assert not inp.stand_ins and inp.file_names() == ["ann_0_on_bob_0", "ann_0_on_ann_1"]
    assert torch.equal(inp.targets.wplus, torch.cat([proj.wplus[2:3], proj.wplus[1:2]]))
    assert all(torch.equal(a, torch.cat([b[2:3], b[1:2]])) for a, b in zip(inp.targets.noises, proj.noises))
    assert torch.allclose(inp.sources, photos[:1].expand(2, -1, -1, -1), atol=1 / 127.5)  # ann's aligned photo
    assert inp.target_photos == [None, None] and "2 aligned photo(s)" in inp.notes[0]
    # named pairs; a source without a photo is its projection's rendering
    named = swap_inputs(G, latents_dir=latents, aligned_dir=aligned, pairs=[("bob/0", "ann/0")])
    assert named.source_names == ["bob/0"] and torch.allclose(named.sources, proj.images[2:3], atol=1e-3)
    assert named.target_photos == [aligned / "ann" / "0.png"]
    with pytest.raises(InputError, match="carl/0"):
        swap_inputs(G, latents_dir=latents, aligned_dir=aligned, pairs=[("carl/0", "ann/0")])
    # fewer than two projections: random latents stand in, and say so
    stand = swap_inputs(G, latents_dir=tmp_path / "none", aligned_dir=None, max_pairs=2, seed=0)
    assert stand.stand_ins and len(stand) == 2 and stand.targets.wplus.shape == (2, G.n_latent, G.style_dim)
    assert "random" in stand.notes[0]


def test_one_text_for_a_swaps_figures():
    from facelib.swap_judge import swap_metrics_text

    m = {"id_to_source": 0.62, "id_target_to_source": 0.31, "id_moved": 0.4493, "id_to_target": 0.71,
         "dlib_to_source": 0.52, "dlib_same_as_source": True, "dlib_to_target": 0.47,
         "dlib_detected": {"result": True, "source": True, "target": False}, "yaw_change": 0.02, "pitch_change": -0.01}
    assert swap_metrics_text(m) == ("id src 0.62 (was 0.31, moved 45%) tgt 0.71 | dlib src 0.52= tgt 0.47 "
                                    "(no face) | dyaw +0.02 dpitch -0.01")
    assert swap_metrics_text({"id_to_source": 0.5, "unchanged": True}) == (
        "UNCHANGED: the swap did nothing (best step 0) | id src 0.50")
    assert swap_metrics_text({"id_similarity": 0.61}) == ""


def test_save_swaps_stamps_and_writes_each_pair(G, id_net, pairs, tmp_path):
    from PIL import Image

    from facelib.grids import stamp, to_pil
    from facelib.swap import UNCHANGED_STAMP, save_swaps

    targets, sources = pairs
    r = face_swap(G, id_net, sources[:2], targets[:2], steps=0, **FAST)  # no step: both pairs unchanged
    assert r.unchanged == [True, True]
    paths = save_swaps(r, [tmp_path / "a.png", tmp_path / "b.png"], stamps=["SMOKE RUN", None], random_id=True)
    assert paths == [tmp_path / "a.png", tmp_path / "b.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.png", "a.pt", "b.json", "b.png", "b.pt"]
    from facelib.stamps import RANDOM_ID_STAMP

    want = stamp(stamp(stamp(to_pil(r.images[1]), "SMOKE RUN"), RANDOM_ID_STAMP), UNCHANGED_STAMP)
    assert Image.open(tmp_path / "b.png").tobytes() == want.tobytes()
    assert torch.equal(load_swap(tmp_path / "b.pt").wplus, r.select(1).wplus)
    with pytest.raises(InputError, match=r"paths: expected one per pair \(2\), got 1"):
        save_swaps(r, [tmp_path / "c.png"])
