"""pSp / e4e encoders: loading, the forward against an independent functional version, safety,
the decoder, and projection started from the encoder.

Small encoders in the real key layout (IR-SE units, map2style heads, lateral convs) with
(1, 1, 1, 1) units of width 4..32 and 64 px input keep these tests fast; the full-size
parity check against the reference pipeline is ``../shared/refs/encoders/check_encoder.py``
(and the slow test at the end, on the real 621-key layout).
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import facelib
from facelib.encoders import EncoderSpec, StyleEncoder, infer_encoder_spec, load_encoder
from facelib.errors import CheckpointError, ShapeError

from .conftest import import_from, shared_path

OPTS = {"psp": {"encoder_type": "GradualStyleEncoder", "input_nc": 3, "label_nc": 0, "learn_in_w": False,
                "start_from_latent_avg": True, "device": "cuda:0"},
        "e4e": {"encoder_type": "Encoder4Editing", "stylegan_size": 32, "start_from_latent_avg": True,
                "progressive_steps": [0, 2, 4, 6, 8, 10, 12, 14], "device": "cuda:0"}}
# 8 W+ rows (a 32 px generator), style width 32 = 8 * 4; 64 px input: heads read c3 (4x4), p2, p1
SPEC = dict(layers=(1, 1, 1, 1), base_channels=4, se_reduction=4, head_depths=(2, 2, 2, 3, 3, 3, 3, 4),
            style_dim=32)


def _decoder(seed: int = 0):
    from facelib.stylegan2 import StyleGAN2Generator

    return StyleGAN2Generator(resolution=32, style_dim=32, n_mlp=2, channel_max=32, seed=seed).eval()


def tiny_checkpoint(kind: str = "e4e", seed: int = 0, *, decoder: bool = True) -> dict:
    """{"state_dict": encoder.* + decoder.*, "opts", "latent_avg"} with deterministic weights."""
    net = StyleEncoder(EncoderSpec(kind, **SPEC))
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in net.state_dict().items():
        if k.endswith("num_batches_tracked"):
            t = torch.tensor(7, dtype=torch.long)
        elif k.endswith("running_var"):
            t = torch.rand(v.shape, generator=g) + 0.5
        elif k.endswith(("running_mean", "bias")):
            t = 0.1 * torch.randn(v.shape, generator=g)
        elif k.endswith(("input_layer.2.weight", "res_layer.2.weight")):  # PReLU slopes
            t = 0.2 + 0.1 * torch.rand(v.shape, generator=g)
        elif v.ndim == 1:  # BatchNorm scales
            t = 0.8 + 0.4 * torch.rand(v.shape, generator=g)
        elif v.ndim == 4:
            fan_in = v[0].numel()
            t = torch.randn(v.shape, generator=g) * math.sqrt(2.0 / fan_in)
        else:  # EqualLinear: stored unscaled
            t = torch.randn(v.shape, generator=g)
        sd["encoder." + k] = t
    if decoder:
        sd.update({"decoder." + k: v for k, v in _decoder(seed).state_dict().items()})
    avg = 0.5 * torch.randn(1, 32, generator=g) + 0.1 * torch.randn(8, 32, generator=g)
    return {"state_dict": sd, "opts": dict(OPTS[kind]), "latent_avg": avg}


def reference_wplus(ckpt: dict, x: torch.Tensor, kind: str) -> torch.Tensor:
    """An independent float64 functional forward written from the pSp / e4e description."""
    p = {k[len("encoder."):]: v.double() for k, v in ckpt["state_dict"].items()
         if k.startswith("encoder.") and v.is_floating_point()}

    def bn(h, pre):
        return F.batch_norm(h, p[pre + ".running_mean"], p[pre + ".running_var"], p[pre + ".weight"],
                            p[pre + ".bias"], False, 0.0, 1e-5)

    def prelu(h, key):
        return torch.where(h >= 0, h, h * p[key].view(1, -1, 1, 1))

    def unit(h, i, stride):
        r = f"body.{i}.res_layer"
        y = bn(h, r + ".0")
        y = F.conv2d(y, p[r + ".1.weight"], padding=1)
        y = prelu(y, r + ".2.weight")
        y = F.conv2d(y, p[r + ".3.weight"], stride=stride, padding=1)
        y = bn(y, r + ".4")
        gate = torch.sigmoid(F.conv2d(F.relu(F.conv2d(y.mean((2, 3), keepdim=True), p[r + ".5.fc1.weight"])),
                                      p[r + ".5.fc2.weight"]))
        y = y * gate
        s = f"body.{i}.shortcut_layer"
        short = bn(F.conv2d(h, p[s + ".0.weight"], stride=stride), s + ".1") if s + ".0.weight" in p \
            else h[:, :, ::stride, ::stride]
        return y + short

    h = prelu(bn(F.conv2d(x.double(), p["input_layer.0.weight"], padding=1), "input_layer.1"), "input_layer.2.weight")
    taps = []
    for i in range(4):  # one unit per stage, stride 2 each
        h = unit(h, i, 2)
        taps.append(h)
    c1, c2, c3 = taps[1], taps[2], taps[3]
    up = lambda a, b: F.interpolate(a, size=b.shape[-2:], mode="bilinear", align_corners=True) + b
    p2 = up(c3, F.conv2d(c2, p["latlayer1.weight"], p["latlayer1.bias"]))
    p1 = up(p2, F.conv2d(c1, p["latlayer2.weight"], p["latlayer2.bias"]))

    def head(i, f):
        for j in range(SPEC["head_depths"][i]):
            f = F.leaky_relu(F.conv2d(f, p[f"styles.{i}.convs.{2 * j}.weight"], p[f"styles.{i}.convs.{2 * j}.bias"],
                                      stride=2, padding=1), 0.01)
        w = p[f"styles.{i}.linear.weight"]
        return f.reshape(-1, 32) @ (w / math.sqrt(w.shape[1])).t() + p[f"styles.{i}.linear.bias"]

    feats = [c3] * 3 + [p2] * 4 + [p1]
    rows = [head(i, feats[i]) for i in range(8)]
    if kind == "psp":
        codes = torch.stack(rows, 1)
    else:
        codes = torch.stack([rows[0]] + [rows[0] + r for r in rows[1:]], 1)
    return codes + ckpt["latent_avg"].double()[None]


def _inputs(n: int = 2, seed: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, 64, 64, generator=g) * 2 - 1)


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a.double(), b.double(), dim=-1)


@pytest.mark.parametrize("kind", ["psp", "e4e"])
def test_forward_matches_independent_version(kind, tmp_path, single_thread):
    ckpt = tiny_checkpoint(kind)
    path = tmp_path / "model.pt"
    torch.save(ckpt, path)
    enc = load_encoder(path)
    assert enc.spec.kind == kind and enc.spec.input_size == 64 and enc.n_styles == 8
    assert not any(m.training for m in enc.modules()) and not any(p.requires_grad for p in enc.parameters())
    x = _inputs()
    with torch.no_grad():
        y = enc(x)
    want = reference_wplus(ckpt, x, kind)
    assert y.shape == (2, 8, 32)
    assert torch.allclose(y.double(), want, rtol=1e-4, atol=1e-4), float((y.double() - want).abs().max())
    assert float(_cos(y, want).min()) > 0.99999
    # the two samples differ (the net reads its input), and latent_avg is part of the output
    assert float((y[0] - y[1]).abs().max()) > 1e-2
    assert torch.allclose(enc.codes(x) + enc.latent_avg[None], y, atol=1e-6)


def test_kind_comes_from_opts_not_the_file_name(tmp_path, single_thread):
    ckpt = tiny_checkpoint("e4e")
    path = tmp_path / "psp_ffhq_encode.pt"  # a misleading name
    torch.save(ckpt, path)
    enc = load_encoder(path)
    assert enc.spec.kind == "e4e"
    x = _inputs(1)
    with torch.no_grad():
        e4e = enc(x)
        as_psp = load_encoder({**ckpt, "opts": dict(OPTS["psp"])}, decoder=False)(x)
    assert torch.allclose(e4e.double(), reference_wplus(ckpt, x, "e4e"), atol=1e-4)
    assert not torch.allclose(e4e, as_psp, atol=1e-2)  # the same weights mean something else as pSp


def test_module_prefix_and_extra_keys_are_accepted(tmp_path, single_thread):
    ckpt = tiny_checkpoint("psp")
    x = _inputs(1)
    with torch.no_grad():
        plain = load_encoder(ckpt)(x)
    resaved = {"state_dict": {"module." + k: v for k, v in ckpt["state_dict"].items()}, "opts": ckpt["opts"],
               "latent_avg": ckpt["latent_avg"], "global_step": 10, "best_val_loss": 0.5}
    path = tmp_path / "resaved.pt"
    torch.save(resaved, path)
    enc = load_encoder(path)
    with torch.no_grad():
        assert torch.equal(enc(x), plain)
    assert enc.decoder is not None


def test_spec_is_read_from_keys():
    ckpt = tiny_checkpoint("psp", decoder=False)
    enc_sd = {k[len("encoder."):]: v for k, v in ckpt["state_dict"].items()}
    spec = infer_encoder_spec(enc_sd, ckpt["opts"])
    assert spec == EncoderSpec("psp", **SPEC)
    full = EncoderSpec("e4e")  # released layout: 24 units, 18 heads, 256 px
    assert (full.layers, full.n_styles, full.input_size, full.style_dim) == ((3, 4, 14, 3), 18, 256, 512)


def test_decoder_is_the_checkpoint_generator(tmp_path, single_thread):
    ckpt = tiny_checkpoint("e4e", seed=3)
    path = tmp_path / "e4e.pt"
    torch.save(ckpt, path)
    enc = load_encoder(path)
    G = enc.decoder
    ref = _decoder(3)
    w = torch.randn(2, G.n_latent, G.style_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(G.synthesis(w, noise=None), ref.synthesis(w, noise=None), atol=1e-6)
    assert G.weights_sha256 == facelib.file_sha256(path) == enc.weights_sha256
    assert torch.allclose(G.latent_avg, ckpt["latent_avg"].mean(0))
    G2 = facelib.load_generator(path)  # the generator loader reads encoder checkpoints' decoder too
    assert G2.weights_sha256 == G.weights_sha256
    with torch.no_grad():
        assert torch.equal(G2.synthesis(w, noise=None), G.synthesis(w, noise=None))


def test_other_input_sizes(single_thread):
    enc = load_encoder(tiny_checkpoint("psp", decoder=False))
    with pytest.raises(ShapeError, match="64x64"):
        enc(torch.zeros(1, 3, 32, 32))
    x = _inputs(1)
    big = F.interpolate(x, size=(128, 128), mode="bilinear", align_corners=False)
    small = F.interpolate(big, size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        assert torch.allclose(enc.encode(big), enc(small), atol=1e-5)  # resized to the input size first
        assert torch.allclose(enc.encode(x), enc(x), atol=1e-6)


def test_foreign_and_unsafe_files(tmp_path, small_generator):
    gen = tmp_path / "generator.pt"
    facelib.save_generator(small_generator, gen)
    with pytest.raises(CheckpointError, match="load_generator"):
        load_encoder(gen)
    arc = tmp_path / "arcface.pt"
    torch.save(facelib.build_arcface("ir_se", layers=(1, 1, 1, 1), base_channels=8).state_dict(), arc)
    with pytest.raises(CheckpointError, match="load_arcface"):
        load_encoder(arc)
    no_type = tiny_checkpoint("psp", decoder=False)
    no_type["opts"] = {"input_nc": 3}
    with pytest.raises(CheckpointError, match="encoder_type"):
        load_encoder(no_type)
    other = tiny_checkpoint("psp", decoder=False)
    other["opts"]["encoder_type"] = "BackboneEncoderUsingLastLayerIntoWPlus"
    with pytest.raises(CheckpointError, match="not supported"):
        load_encoder(other)
    bad_avg = tiny_checkpoint("psp", decoder=False)
    bad_avg["latent_avg"] = torch.zeros(3, 32)
    with pytest.raises(CheckpointError, match="latent_avg"):
        load_encoder(bad_avg)
    cut = tiny_checkpoint("psp", decoder=False)
    del cut["state_dict"]["encoder.latlayer2.weight"]
    with pytest.raises(CheckpointError, match="missing"):
        load_encoder(cut)
    html = tmp_path / "e4e_ffhq_encode.pt"
    html.write_text("<!DOCTYPE html><html>quota exceeded</html>")
    with pytest.raises(CheckpointError, match="HTML"):
        load_encoder(html)
    code = tmp_path / "code.pt"
    torch.save({"state_dict": {}, "opts": EncoderSpec("psp")}, code)  # a pickled class instance
    with pytest.raises(CheckpointError, match="not allowed"):
        load_encoder(code)


def test_cli_reports_a_foreign_encoder_file(tmp_path, capsys, small_generator):
    from facelib.cli import main

    gen = tmp_path / "g.pt"
    facelib.save_generator(small_generator, gen)
    img = tmp_path / "faces" / "a.png"
    img.parent.mkdir()
    facelib.to_pil(torch.zeros(1, 3, 32, 32))[0].save(img)
    rc = main(["project", str(img.parent), str(tmp_path / "out"), "--weights", str(gen), "--init-encoder", str(gen),
               "--steps", "1", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "load_generator" in err and "Traceback" not in err


@pytest.mark.parametrize("kind", ["psp", "e4e"])
def test_projection_starts_from_the_encoder(kind, single_thread):
    enc = load_encoder(tiny_checkpoint(kind, seed=1))
    G = enc.decoder
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    want = enc.encode(x)
    zero = facelib.project(G, x, init=enc, steps=0, lpips=None, mse_weight=1.0, progress=False)
    assert zero.config.init == "encoder"
    assert torch.equal(zero.wplus, want) and torch.equal(zero.init_wplus, want)
    seen = []
    run = facelib.project(G, x, init=enc, steps=3, lpips=None, mse_weight=1.0, initial_noise_factor=0.0,
                          progress=False, on_step=lambda s, t, st: seen.append(st.wplus.clone()))
    assert torch.allclose(seen[0], want, atol=1e-6)  # step 0 renders the encoder's latent
    assert not torch.allclose(seen[-1], want)       # and the optimisation moves on from there
    mean = facelib.project(G, x, steps=0, lpips=None, mse_weight=1.0, progress=False)
    assert not torch.allclose(mean.wplus, want)
    card = run.to_json()["quality"]
    assert card["n"] == 2 and card["mean"]["steps"] == 3 and card["mean"]["seconds"] > 0
    assert [m["method"] for m in card["published"]["methods"]] == ["W+ optimisation, 1000 steps",
                                                                    "PTI (pivotal tuning)"]


@pytest.mark.slow
def test_real_layout_matches_the_reference(single_thread):
    """The e4e reference output on the real 621-key layout (about 1.1 GB of synthetic weights, ~30 s)."""
    import numpy as np

    folder = shared_path("refs", "encoders")
    ref_path = folder / "ref_e4e.npz"
    if not ref_path.exists():
        pytest.skip(f"{ref_path} is absent")
    synth = import_from(folder, "synth")
    ref = np.load(ref_path)
    seed = int(ref["seed"])
    ckpt = {"state_dict": synth.make_encoder_state_dict(synth.load_layout("e4e"), seed),
            "opts": synth.load_layout("e4e")["opts"], "latent_avg": synth.make_latent_avg(seed)}
    enc = load_encoder(ckpt, decoder=False)
    del ckpt
    with torch.no_grad():
        y = enc(torch.from_numpy(ref["x"]).float())
    want = torch.from_numpy(ref["wplus"]).double()
    assert float(_cos(y, want).min()) > 0.9999
    assert float((y.double().norm(dim=-1) / want.norm(dim=-1) - 1).abs().max()) < 1e-3


def test_locate_recognises_encoder_checkpoints_by_content(tmp_path):
    from facelib.data import classify_file

    for kind in ("psp", "e4e"):
        path = tmp_path / f"weights_{kind}.bin"  # the name says nothing
        torch.save(tiny_checkpoint(kind), path)
        found = classify_file(path)
        assert found.kind == "generator" and found.format == f"{kind}-encoder", found
        assert "W+ (8 x 32)" in found.detail and "32 px" in found.detail
    no_decoder = tmp_path / "encoder_only.pt"
    torch.save(tiny_checkpoint("e4e", decoder=False), no_decoder)
    assert getattr(classify_file(no_decoder), "kind", None) != "generator"
    inv = facelib.locate([tmp_path], kaggle=False)
    assert {f.format for f in inv.found("generator")} == {"psp-encoder", "e4e-encoder"}


def test_quality_card_means_and_published_figures(tmp_path, small_generator, single_thread):
    from facelib.quality import quality_card

    card = quality_card([{"psnr": 20.0, "lpips": 0.2, "steps": 10, "seconds": 1.0},
                         {"psnr": 22.0, "steps": 10, "seconds": 3.0, "lpips": float("nan")}], names=["a", "b"])
    assert card.mean == {"psnr": 21.0, "lpips": 0.2, "steps": 10.0, "seconds": 2.0}  # NaN / absent are skipped
    text = card.to_markdown()
    assert "| a | 20.00 | 0.200 | - | 10 | 1.0 |" in text and "| published: PTI (pivotal tuning) | 24.60 | 0.082" \
        in text and "smoke run" not in text
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    p = facelib.project(small_generator, x, steps=2, lpips=None, mse_weight=1.0, progress=False)
    out = tmp_path / "out"
    p.save(out / "latents" / "ann" / "0.pt")
    from facelib.report import build_report

    build_report(out)
    md = (out / "report.md").read_text()
    assert "published: W+ optimisation, 1000 steps | 20.60 | 0.109 | 0.770" in md
    assert f"this run, mean of 1 | {p.metrics[0]['psnr']:.2f}" in md
    assert quality_card(p, smoke=True).note().endswith("its figures are not comparable.")


def test_cli_projects_from_the_encoder(tmp_path, capsys, single_thread):
    import json

    from facelib.cli import main
    from facelib.projection import load_targets

    enc_path = tmp_path / "e4e.pt"
    torch.save(tiny_checkpoint("e4e", seed=4), enc_path)
    img = tmp_path / "faces" / "a.png"
    img.parent.mkdir()
    facelib.to_pil(torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1)[0].save(img)
    rc = main(["project", str(img.parent), str(tmp_path / "out"), "--encoder", str(enc_path), "--steps", "0",
               "--lpips", "none", "--mse-weight", "1", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    meta = json.loads((tmp_path / "out" / "a.json").read_text())
    assert meta["config"]["init"] == "encoder" and meta["weights_sha256"] == facelib.file_sha256(enc_path)
    assert meta["quality"]["n"] == 1 and meta["quality"]["mean"]["steps"] == 0
    enc = load_encoder(enc_path)
    saved = facelib.load_projection(tmp_path / "out" / "a.pt")
    target = load_targets([img], enc.decoder.resolution)[0]  # the image as the projection reads it
    assert torch.allclose(saved.wplus, enc.encode(target), atol=1e-5)
