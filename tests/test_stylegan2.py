"""Generator maths: parity with the reference outputs, ops, determinism, batching."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import facelib
from facelib.stylegan2 import _FIR, StyleGAN2Generator, default_channels, make_kernel, upfirdn2d
from facelib.weights import infer_generator_config

from .conftest import import_from, shared_path


def _reference_generator(tmp_path, size: int):
    folder = shared_path("refs", "stylegan2")
    synth = import_from(folder, "synth")
    ref_file = folder / f"ref_{size}.npz"
    if not ref_file.exists():
        pytest.skip(f"{ref_file} is absent")
    ref = np.load(ref_file)
    layout = synth.load_layout(size)
    sd = synth.make_state_dict(layout, int(ref["seed"]))
    path = tmp_path / "g.pt"
    torch.save({"g_ema": sd, "latent_avg": synth.make_latent_avg(layout, int(ref["seed"]))}, path)
    return facelib.load_generator(path), ref, np.load(folder / f"ref_{size}_trunc.npz")


@pytest.mark.parametrize("fused", [False, True])
def test_parity_with_reference_outputs(tmp_path, fused):
    G, ref, ref_t = _reference_generator(tmp_path, 64)
    G.set_fused_modconv(fused)
    assert G.resolution == 64 and G.n_latent == int(ref["n_latent"]) == 10
    with torch.no_grad():
        w = G.mapping(torch.from_numpy(ref["z"]))
        img = G.synthesis(torch.from_numpy(ref["wplus"]))
        lat = torch.from_numpy(ref["latent_avg"])
        img_t = G.synthesis((lat + 0.7 * (w - lat))[:, None].repeat(1, G.n_latent, 1))
    assert np.abs(w.numpy() - ref["w"]).max() < 1e-3
    assert np.abs(img.numpy() - ref["img"]).max() < 1e-3
    assert np.abs(img_t.numpy() - ref_t["img_trunc"]).max() < 1e-3
    # the references are far from trivial: a wrong network would not pass by accident
    assert float(np.abs(ref["img"]).std()) > 1.0


@pytest.mark.parametrize("size", [64, 256, 1024])
def test_config_inferred_from_every_real_layout(size):
    layout = json.loads(shared_path("refs", "stylegan2", f"layout_{size}.json").read_text())
    state = {k: torch.empty(s, device="meta") for k, s in layout["keys"]}
    cfg = infer_generator_config(state)
    assert cfg["resolution"] == size and cfg["style_dim"] == 512 and cfg["n_mlp"] == layout["n_mlp"]
    assert cfg["channels"] == default_channels(size, 2)
    with torch.device("meta"):
        G = StyleGAN2Generator(**cfg)
    assert G.n_latent == layout["n_latent"] and G.num_layers == layout["num_layers"]
    ours = {k: list(v.shape) for k, v in G.state_dict().items()}
    assert ours == {k: s for k, s in layout["keys"]}


def test_config_inference_takes_unusual_widths_and_depth():
    widths = {4: 48, 8: 40, 16: 24, 32: 16}
    G = StyleGAN2Generator(32, style_dim=32, n_mlp=3, channels=widths, seed=1)
    cfg = infer_generator_config(G.state_dict())
    assert cfg == {"resolution": 32, "style_dim": 32, "n_mlp": 3, "channels": widths}
    G2 = facelib.load_generator(G.state_dict())
    w = torch.randn(2, G.n_latent, 32)
    with torch.no_grad():
        assert torch.equal(G.synthesis(w), G2.synthesis(w))


def test_upfirdn2d_separable_matches_reference_with_gradients():
    k = make_kernel(2)
    for up, down, pad in [(1, 1, (1, 1)), (2, 1, (2, 1)), (1, 2, (1, 1)), (2, 1, (-1, 3)), (1, 1, (0, 0, 2, 1))]:
        x1 = torch.randn(2, 5, 11, 9, dtype=torch.float64, requires_grad=True)
        x2 = x1.detach().clone().requires_grad_(True)
        a = upfirdn2d(x1, k.double(), up=up, down=down, pad=pad, impl="ref")
        b = upfirdn2d(x2, k.double(), up=up, down=down, pad=pad, impl="separable")
        assert a.shape == b.shape
        assert torch.allclose(a, b, atol=1e-12)
        g = torch.randn_like(a)
        a.backward(g)
        b.backward(g)
        assert torch.allclose(x1.grad, x2.grad, atol=1e-12)
    # a non-separable kernel goes through the reference path automatically
    k2 = torch.tensor([[1.0, 2.0], [3.0, 5.0]])
    x = torch.randn(1, 2, 6, 6)
    assert torch.allclose(upfirdn2d(x, k2, pad=(1, 0)), upfirdn2d(x, k2, pad=(1, 0), impl="ref"))
    with pytest.raises(facelib.InputError):
        upfirdn2d(x, k2, impl="separable")
    with pytest.raises(facelib.InputError, match="impl"):
        upfirdn2d(x, k2, impl="fast")


def test_upfirdn2d_upsampling_preserves_a_constant():
    x = torch.ones(1, 3, 8, 8)
    y = upfirdn2d(x, make_kernel(2), up=2, pad=(2, 1))
    assert y.shape == (1, 3, 16, 16)
    assert torch.allclose(y[..., 2:-2, 2:-2], torch.ones(1, 3, 12, 12))


def test_fused_and_split_modconv_agree_in_value_and_gradient(small_generator):
    G = small_generator
    w = torch.randn(3, G.n_latent, G.style_dim)
    grads = []
    for fused in (False, True):
        G.set_fused_modconv(fused)
        wp = w.clone().requires_grad_(True)
        img = G.synthesis(wp)
        img.square().mean().backward()
        grads.append((img.detach(), wp.grad))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-4)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-5, rtol=1e-3)


def test_determinism_noise_modes_and_batch_consistency(small_generator):
    G = small_generator
    w = torch.randn(2, G.n_latent, G.style_dim)
    with torch.no_grad():
        a, b = G.synthesis(w), G.synthesis(w)
        assert torch.equal(a, b)  # stored noise: deterministic
        singles = torch.cat([G.synthesis(w[:1]), G.synthesis(w[1:])])
        assert torch.allclose(a, singles, atol=1e-5)
        r1, r2 = G.synthesis(w, noise="random"), G.synthesis(w, noise="random")
        assert not torch.allclose(r1, r2)
        explicit = G.make_noise(2, generator=torch.Generator().manual_seed(3))
        e1 = G.synthesis(w, noise=explicit)
        e2 = G.synthesis(w, noise=[n.clone() for n in explicit])
        assert torch.equal(e1, e2) and not torch.allclose(e1, a)
        assert torch.allclose(G.synthesis(w, noise=G.noise_buffers), a)
        none = G.synthesis(w, noise="none")
        assert not torch.allclose(none, a)
        # a (N, D) w is broadcast to every row
        assert torch.allclose(G.synthesis(w[:, 0]), G.synthesis(w[:, :1].expand(-1, G.n_latent, -1)))
    assert a.shape == (2, 3, 32, 32)


def test_seeded_construction_is_deterministic_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    G1 = StyleGAN2Generator(16, style_dim=16, n_mlp=1, channel_max=8, seed=5)
    after = torch.rand(1)
    assert torch.equal(before, after)
    G2 = StyleGAN2Generator(16, style_dim=16, n_mlp=1, channel_max=8, seed=5)
    assert all(torch.equal(a, b) for a, b in zip(G1.state_dict().values(), G2.state_dict().values()))


def test_small_configuration_trains_backward(small_generator):
    G = small_generator
    G.requires_grad_(True)
    w = torch.randn(2, G.n_latent, G.style_dim, requires_grad=True)
    G.synthesis(w).mean().backward()
    assert w.grad is not None and torch.isfinite(w.grad).all()
    assert G.convs[0].conv.weight.grad is not None


def test_mean_latent_and_sample(small_generator):
    G = small_generator
    m1, m2 = G.mean_latent(512, seed=1), G.mean_latent(512, seed=1)
    assert m1.shape == (G.style_dim,) and torch.equal(m1, m2)
    assert torch.allclose(G.mean_latent(600, seed=2, batch=128), G.mean_latent(600, seed=2), atol=1e-5)
    imgs = G.sample(3, seed=4, truncation=0.5)
    assert imgs.shape == (3, 3, 32, 32) and torch.equal(imgs, G.sample(3, seed=4, truncation=0.5))


def test_shape_errors(small_generator):
    G = small_generator
    with pytest.raises(facelib.ShapeError):
        G.synthesis(torch.randn(1, G.n_latent + 1, G.style_dim))
    with pytest.raises(facelib.ShapeError):
        G.mapping(torch.randn(1, G.style_dim + 1))
    with pytest.raises(facelib.InputError):
        G.synthesis(torch.randn(1, G.n_latent, G.style_dim), noise="fresh")
    with pytest.raises(facelib.InputError):
        StyleGAN2Generator(48)


def test_conv_clamp_limits_activations(small_generator):
    G = small_generator
    w = 3 * torch.randn(1, G.n_latent, G.style_dim)
    with torch.no_grad():
        free = G.synthesis(w)
        G.set_conv_clamp(0.05)
        clamped = G.synthesis(w)
    assert not torch.allclose(free, clamped)
    # every ToRGB output is within +-0.05, so the image is bounded by their (upsampled) sum
    assert clamped.abs().max() <= 0.05 * len(G.to_rgbs) + 0.05 + 1e-5


def test_memory_format_does_not_change_the_result(small_generator):
    G = small_generator
    w = torch.randn(2, G.n_latent, G.style_dim)
    with torch.no_grad():
        G.channels_last = True
        a = G.synthesis(w)
        G.channels_last = False
        b = G.synthesis(w)
    G.channels_last = None
    assert torch.allclose(a, b, atol=1e-5)


def test_fir_layers_use_their_taps_and_honour_a_loaded_kernel(small_generator):
    G = small_generator
    w = torch.randn(2, G.n_latent, G.style_dim, generator=torch.Generator().manual_seed(0))
    firs = [m for m in G.modules() if isinstance(m, _FIR)]
    assert len(firs) == 2 * len(G.to_rgbs) and all(m.taps is not None for m in firs)
    assert not any(k.endswith("taps") for k in G.state_dict())  # derived, never stored
    with torch.no_grad():
        fast = G.synthesis(w)
        for m in firs:
            m.taps = None  # the kernel buffer itself
        assert torch.equal(G.synthesis(w), fast)
        sd = G.state_dict()
        box = torch.full((4, 4), 1 / 16)
        sd["convs.0.conv.blur.kernel"] = box
        G.load_state_dict(sd)
        assert G.convs[0].conv.blur.taps is None and G.convs[2].conv.blur.taps is not None
        assert not torch.allclose(G.synthesis(w), fast, atol=1e-4)
        x = torch.randn(1, 3, 9, 9)
        assert torch.equal(G.convs[0].conv.blur(x), upfirdn2d(x, box, pad=(1, 1)))


def test_sample_command_renders_the_seeded_samples(small_generator, tmp_path, capsys):
    from PIL import Image

    from facelib.cli import main
    from facelib.stamps import SMOKE_STAMP
    from facelib.session import smoke_generator
    from facelib.grids import make_grid, stamp
    from facelib.weights import save_generator

    def pixels(im):
        return np.asarray(im.convert("RGB"))

    save_generator(small_generator, tmp_path / "G.pt")
    out = tmp_path / "samples.png"
    assert main(["sample", str(out), "--weights", str(tmp_path / "G.pt"), "--n", "5", "--seed", "3",
                 "--truncation", "0.5"]) == 0
    assert "5 samples, 32 px" in capsys.readouterr().out
    imgs = small_generator.sample(5, seed=3, truncation=0.5)
    assert np.array_equal(pixels(Image.open(out)), pixels(make_grid([list(imgs[:4]), list(imgs[4:])], cell=64)))
    # without weights: the untrained smoke generator, stamped as such
    assert main(["sample", str(tmp_path / "smoke.png"), "--n", "2", "--seed", "1"]) == 0
    want = stamp(make_grid([list(smoke_generator(1).sample(2, seed=1))], cell=128), SMOKE_STAMP)
    assert np.array_equal(pixels(Image.open(tmp_path / "smoke.png")), pixels(want))
    assert main(["sample", str(tmp_path / "none.png"), "--n", "0"]) == 1
    assert "--n" in capsys.readouterr().err and not (tmp_path / "none.png").exists()
