"""Edit directions: SeFa against an independent closed form, planted directions, exact application, files."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facelib.directions import (Direction, apply_direction, conditional_direction, direction_strip,
                                fit_direction, load_directions, pca_directions, sefa_directions, sefa_layers)
from facelib.attributes import label_latents, latents_with_scores
from facelib.edits import LayerMask
from facelib.errors import CheckpointError, InputError, ShapeError
from .conftest import make_small_generator


def _closed_form(state: dict, rows: list[int]) -> np.ndarray:
    """SeFa from the raw state dict: rows -> conv keys by name, ToRGB keys never used."""
    keys = []
    for r in rows:
        key = "conv1.conv.modulation.weight" if r == 0 else f"convs.{r - 1}.conv.modulation.weight"
        if key in state:
            keys.append(key)
    assert keys and not any("to_rgb" in k for k in keys)
    A = np.concatenate([state[k].double().numpy() for k in keys], axis=0)  # (channels, style_dim)
    A = A / np.linalg.norm(A, axis=1, keepdims=True)
    vals, vecs = np.linalg.eigh(A.T @ A)
    return vecs[:, np.argsort(vals)[::-1]].T


@pytest.mark.parametrize("rows", ["all", "coarse", "middle", "fine", "2-5", [0]])
def test_sefa_matches_closed_form_from_state_dict(single_thread, rows):
    G = make_small_generator()  # 32 px: 8 W+ rows, convs 0..5
    d = sefa_directions(G, rows, k=5, sigma_samples=0)
    chosen = list(LayerMask.coerce(rows, G.n_latent).rows)
    assert d.rows == tuple(chosen)
    ref = _closed_form({k: v for k, v in G.state_dict().items()}, chosen)
    assert d.vectors.shape == (5, G.style_dim)
    assert torch.allclose(d.vectors.norm(dim=1), torch.ones(5), atol=1e-5)
    assert np.all(np.diff(d.values) <= 1e-9)
    for i in range(5):
        cos = abs(float(np.dot(d.vectors[i].double().numpy(), ref[i])))
        assert cos > 0.999, (rows, i, cos)


def test_sefa_row_to_layer_map_excludes_torgb():
    G = make_small_generator()
    layers = sefa_layers(G, "all")
    assert layers[0] == ["conv1.conv"]
    assert layers[1] == ["convs.0.conv"] and layers[2] == ["convs.1.conv"]
    assert layers[G.n_latent - 1] == []  # read only by the last ToRGB
    # the map agrees with what synthesis actually feeds: perturbing row r changes that conv's style only
    seen = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: seen.__setitem__(name, inp[0].clone()))
             for name, m in G.named_modules() if name.endswith("conv.modulation")]
    w = G.mapping(torch.randn(1, G.style_dim, generator=torch.Generator().manual_seed(0)))[:, None].repeat(1, G.n_latent, 1)
    G.synthesis(w)
    base = dict(seen)
    for r in range(G.n_latent):
        w2 = w.clone()
        w2[:, r] += 1.0
        G.synthesis(w2)
        changed = sorted(n[:-len(".modulation")] for n in seen if not torch.equal(seen[n], base[n]))
        assert [c for c in changed if "to_rgb" not in c] == layers[r], (r, changed)
        assert (r % 2 == 1) == any("to_rgb" in c for c in changed)  # ToRGB reads the odd rows
    for h in hooks:
        h.remove()


def test_sefa_last_row_alone_is_an_error_and_k_checked():
    G = make_small_generator()
    with pytest.raises(InputError, match="ToRGB"):
        sefa_directions(G, [G.n_latent - 1])
    with pytest.raises(InputError, match="k"):
        sefa_directions(G, "all", k=0)


@pytest.mark.slow
def test_planted_direction_recovered_from_noisy_labels():
    g = torch.Generator().manual_seed(1)
    D, n = 32, 1500
    w = torch.randn(n, D, generator=g) * torch.linspace(0.5, 2.0, D)  # anisotropic like W
    planted = torch.randn(D, generator=g)
    planted /= planted.norm()
    score = w @ planted + 0.3 * torch.randn(n, generator=g)  # noisy continuous scores
    score[::50] = float("nan")  # some images without a face
    d = fit_direction(w, score.numpy(), name="planted")
    assert abs(float(d.vector.norm()) - 1) < 1e-5
    assert float(d.vector @ planted) > 0.95
    assert d.accuracy is not None and d.accuracy > 0.9
    assert d.meta["dropped_nan"] == 30
    # binary flipped labels (10% noise) still find it
    labels = (w @ planted > 0).double()
    flip = torch.rand(n, generator=g) < 0.1
    labels[flip] = 1 - labels[flip]
    d2 = fit_direction(w, labels)
    assert float(d2.vector @ planted) > 0.9
    assert 0.8 < d2.accuracy < 0.97  # the flipped tenth caps held-out accuracy


def test_fit_direction_input_errors():
    w = torch.randn(20, 8)
    with pytest.raises(ShapeError):
        fit_direction(w, np.zeros(19))
    with pytest.raises(InputError, match="positive"):
        fit_direction(w, np.r_[np.ones(2), np.zeros(18)])


def test_conditional_direction_is_orthogonal_to_conditions():
    g = torch.Generator().manual_seed(2)
    a, b, c = (torch.randn(16, generator=g) for _ in range(3))
    d = conditional_direction(Direction(a / a.norm(), "fit", "smile", accuracy=0.9),
                              Direction(b / b.norm(), "fit", "yaw"), c)
    assert abs(float(d.vector.norm()) - 1) < 1e-5
    assert abs(float(d.vector @ b)) < 1e-5 and abs(float(d.vector @ c)) < 1e-5
    assert float(d.vector @ a) > 0 and d.accuracy == 0.9 and d.name.startswith("smile|yaw")
    with pytest.raises(InputError, match="span"):
        conditional_direction(a, a * 2)


def test_pca_directions_find_the_dominant_axis():
    G = make_small_generator()
    d = pca_directions(G, k=3, n=1000)
    assert d.vectors.shape == (3, G.style_dim) and d.rows is None
    assert torch.allclose(d.vectors @ d.vectors.T, torch.eye(3), atol=1e-5)
    w = G.mapping(torch.randn(4000, G.style_dim, generator=torch.Generator().manual_seed(9))).detach()
    var = ((w - w.mean(0)) @ d.vectors.T).var(0)
    rand = torch.nn.functional.normalize(torch.randn(50, G.style_dim), dim=1)
    assert float(var[0]) > float(((w - w.mean(0)) @ rand.T).var(0).max())
    assert np.allclose(d.sigmas ** 2, d.values)


@pytest.mark.parametrize("mask", ["coarse", [1, 5], LayerMask.coerce("fine", 8), None])
def test_apply_direction_changes_exactly_the_masked_rows(mask):
    g = torch.Generator().manual_seed(3)
    w = torch.randn(2, 8, 64, generator=g)
    v = torch.nn.functional.normalize(torch.randn(64, generator=g), dim=0)
    out = apply_direction(w, Direction(v, "sefa"), 2.5, mask=mask)
    rows = set(LayerMask.coerce(mask, 8).rows)
    for r in range(8):
        if r in rows:
            assert torch.allclose(out[:, r] - w[:, r], (2.5 * v).expand(2, -1), atol=1e-6, rtol=0)
        else:
            assert torch.equal(out[:, r], w[:, r])
    assert not torch.equal(out, w) and torch.equal(w, torch.randn(2, 8, 64, generator=torch.Generator().manual_seed(3)))


def test_apply_direction_uses_its_rows_and_fractional_weights():
    w = torch.zeros(8, 4)
    v = torch.tensor([1.0, 0, 0, 0])
    out = apply_direction(w, Direction(v, "sefa", rows=(0, 1)), 1.0)
    assert out[:2, 0].tolist() == [1.0, 1.0] and out[2:].abs().sum() == 0
    half = apply_direction(w, v, 2.0, mask=[0.5] * 8)
    assert torch.allclose(half[:, 0], torch.ones(8))
    with pytest.raises(ShapeError):
        apply_direction(w, torch.ones(5), 1.0)
    with pytest.raises(InputError):
        apply_direction(w, v, float("nan"))


def test_save_load_roundtrip_and_sidecar(tmp_path):
    G = make_small_generator()
    G.weights_sha256 = "abc123"
    d = sefa_directions(G, "coarse", k=3, sigma_samples=256)
    path = d.save(tmp_path / "directions" / "sefa_coarse.pt")
    info = json.loads(path.with_suffix(".json").read_text())
    assert info["method"] == "sefa" and info["rows"] == list(LayerMask.coerce("coarse", G.n_latent).rows) and info["weights_sha256"] == "abc123"
    back = load_directions(path)
    assert torch.equal(back.vectors, d.vectors) and back.rows == d.rows and np.allclose(back.sigmas, d.sigmas)
    one = fit_direction(torch.randn(100, 64), np.r_[np.ones(50), np.zeros(50)], name="coin")
    one.save(tmp_path / "coin.pt")
    assert load_directions(tmp_path / "coin.pt")[0].accuracy == pytest.approx(one.accuracy)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(CheckpointError):
        load_directions(tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="sidecar"):
        (tmp_path / "lonely.pt").write_bytes(path.read_bytes())
        load_directions(tmp_path / "lonely.pt")


def test_strip_renders_through_a_wrapping_object(single_thread):
    G = make_small_generator()

    class Tuned:  # anything with .generator renders through that generator
        generator = G

    w = G.mapping(torch.randn(1, G.style_dim, generator=torch.Generator().manual_seed(0)))[:, None].repeat(1, G.n_latent, 1)
    d = sefa_directions(G, "all", k=1, sigma_samples=128)[0]
    strip = direction_strip(Tuned(), w, d, sigmas=(-3, 0, 3))
    assert strip.shape == (3, 3, 32, 32)
    assert torch.allclose(strip[1], G.synthesis(w).clamp(-1, 1)[0], atol=1e-5)
    assert (strip[0] - strip[2]).abs().mean() > 1e-3


@pytest.mark.slow
def test_untrained_samples_have_no_faces_and_are_counted(tmp_path, single_thread):
    pytest.importorskip("dlib")
    G = make_small_generator()
    lab = label_latents(G, 4, ("smile", "yaw"), progress=False, cache=tmp_path / "labels.pt")
    assert lab.w.shape == (4, G.style_dim) and lab.skipped == 4
    assert np.isnan(lab.scores["smile"]).all()
    G.synthesis = None  # a second call with the same settings must not render
    again = label_latents(G, 4, ("smile", "yaw"), progress=False, cache=tmp_path / "labels.pt")
    assert torch.equal(again.w, lab.w) and again.skipped == 4 and np.isnan(again.scores["yaw"]).all()


def test_latents_with_scores_matches_names():
    lat = {"anna": torch.ones(1, 8, 4), "ben": torch.zeros(8, 4)}
    lab = latents_with_scores(lat, {"anna": 2.0, "carl": 1.0}, attribute="age")
    assert lab.names == ("anna",) and lab.scores["age"].tolist() == [2.0]
    with pytest.raises(InputError, match="match"):
        latents_with_scores(lat, {"zed": 1.0})


@pytest.mark.slow
def test_cli_directions_and_edit(tmp_path, monkeypatch, capsys, single_thread):
    from facelib.cli import main
    from facelib.session import smoke_generator
    from facelib.latents import load_latents, save_latents

    monkeypatch.chdir(tmp_path)
    G = smoke_generator(0)
    w = G.mapping(torch.randn(1, G.style_dim, generator=torch.Generator().manual_seed(4)))
    save_latents("lat.pt", w[:, None].repeat(1, G.n_latent, 1), weights_sha256=G.weights_sha256)
    assert main(["directions", "sefa", "--rows", "coarse", "--k", "3"]) == 0
    files = sorted(p.name for p in (tmp_path / "out" / "directions").iterdir())
    assert len(files) == 2 and files[0].startswith("sefa_") and files[1].endswith(".pt")
    path = tmp_path / "out" / "directions" / files[1]
    assert main(["directions", "sefa", "--rows", "coarse", "--k", "3"]) == 1  # kept unless --overwrite
    assert "exists" in capsys.readouterr().err
    assert main(["edit", "lat.pt", "--direction", str(path), "--strength", "2", "--rows", "fine", "e.png"]) == 0
    d = load_directions(path)[0]
    edited = load_latents("e.pt").wplus
    expected = apply_direction(load_latents("lat.pt").wplus, d, 2 * d.sigma, mask="fine")
    assert torch.allclose(edited, expected) and (tmp_path / "e.png").is_file()
    meta = json.loads((tmp_path / "e.edit.json").read_text())
    assert meta["units"] == "sigma" and meta["rows"] == str(LayerMask.coerce("fine", G.n_latent))
    assert main(["edit", "lat.pt", "--direction", "missing.pt", "x.png"]) == 1
    assert main(["edit", "lat.pt", "--direction", str(path), "--index", "7", "x.png"]) == 1
    assert main(["directions", "fit", "--samples", "2"]) == 1  # untrained samples have no faces
    assert main(["directions", "fit", "--attribute", "identity", "--samples", "2"]) == 1
    err = capsys.readouterr().err
    assert "not found" in err and "out of range" in err and "no face" in err and "--reference" in err
    assert "Traceback" not in err
