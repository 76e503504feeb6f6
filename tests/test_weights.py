"""Checkpoint loading: formats, inference, and every bad-file case raising a facelib error."""
from __future__ import annotations

import argparse
import os
import pickle

import pytest
import torch

import facelib
from facelib.stylegan2 import StyleGAN2Generator
from facelib.weights import load_generator, safe_torch_load, save_generator


@pytest.fixture
def gen():
    return StyleGAN2Generator(16, style_dim=16, n_mlp=2, channel_max=8, seed=0).eval()


def _same(G1, G2):
    w = torch.randn(2, G1.n_latent, G1.style_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(G1.synthesis(w), G2.synthesis(w)) and torch.equal(G1.mapping(w[:, 0]), G2.mapping(w[:, 0]))


def test_convert_weight_format_with_latent_avg(tmp_path, gen):
    avg = torch.randn(16)
    path = tmp_path / "g.pt"
    torch.save({"g_ema": gen.state_dict(), "latent_avg": avg}, path)
    G = load_generator(path)
    assert _same(gen, G) and torch.equal(G.latent_avg, avg)
    assert not G.training and not any(p.requires_grad for p in G.parameters())
    assert len(G.weights_sha256) == 64


def test_training_checkpoint_with_namespace_args_and_no_latent_avg(tmp_path, gen):
    other = StyleGAN2Generator(16, style_dim=16, n_mlp=2, channel_max=8, seed=1)
    ckpt = {"g": other.state_dict(), "d": {"convs.0.0.weight": torch.randn(4, 3, 1, 1)}, "g_ema": gen.state_dict(),
            "g_optim": {"state": {}, "param_groups": [{"lr": 0.002}]}, "d_optim": {"state": {}, "param_groups": []},
            "args": argparse.Namespace(size=16, channel_multiplier=2, iter=10), "ada_aug_p": 0.0}
    path = tmp_path / "train.pt"
    torch.save(ckpt, path)
    G = load_generator(path)
    assert _same(gen, G) and G.latent_avg is None


def test_bare_state_dict_prefixed_g_only_and_in_memory(tmp_path, gen):
    path = tmp_path / "bare.pt"
    torch.save(gen.state_dict(), path)
    assert _same(gen, load_generator(path))
    assert _same(gen, load_generator({f"module.{k}": v for k, v in gen.state_dict().items()}))
    assert _same(gen, load_generator({"g": gen.state_dict(), "d": {}}))


def test_save_generator_round_trip(tmp_path, gen):
    gen.latent_avg = torch.randn(16)
    gen.set_conv_clamp(256.0)
    save_generator(gen, tmp_path / "out.pt")
    G = load_generator(tmp_path / "out.pt")
    assert _same(gen, G) and torch.equal(G.latent_avg, gen.latent_avg) and G.conv_clamp == 256.0
    assert [p.name for p in tmp_path.iterdir()] == ["out.pt"]  # no temp file left


def _err(path):
    with pytest.raises(facelib.CheckpointError) as e:
        load_generator(path)
    assert str(path) in str(e.value)
    return str(e.value)


def test_bad_files_raise_checkpoint_errors_naming_the_file(tmp_path, gen):
    assert "not found" in _err(tmp_path / "missing.pt")
    assert "directory" in _err(tmp_path)
    (tmp_path / "empty.pt").write_bytes(b"")
    assert "empty" in _err(tmp_path / "empty.pt")
    (tmp_path / "notes.pt").write_text("these are not weights\n")
    assert "text file" in _err(tmp_path / "notes.pt")
    (tmp_path / "quota.pt").write_text("<!DOCTYPE html><html><body>Quota exceeded</body></html>")
    assert "HTML" in _err(tmp_path / "quota.pt")
    (tmp_path / "noise.pt").write_bytes(os.urandom(256) + b"\xff\xfe")
    _err(tmp_path / "noise.pt")
    (tmp_path / "one_byte.pt").write_bytes(b"\x80")  # a pickle opcode with no protocol byte
    assert "unrecognised file header" in _err(tmp_path / "one_byte.pt")
    good = tmp_path / "good.pt"
    torch.save({"g_ema": gen.state_dict()}, good)
    data = good.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    assert "truncated" in _err(tmp_path / "truncated.pt") or "corrupt" in _err(tmp_path / "truncated.pt")


def test_other_kinds_and_unknown_layouts(tmp_path, gen):
    arc = {"conv1.weight": torch.randn(64, 3, 3, 3), "layer1.0.bn1.weight": torch.ones(64), "fc.weight": torch.randn(2, 2)}
    torch.save(arc, tmp_path / "arcface.pth")
    assert "ArcFace" in _err(tmp_path / "arcface.pth")
    torch.save({"weights": [1, 2, 3]}, tmp_path / "other.pt")
    assert "not a StyleGAN2 generator" in _err(tmp_path / "other.pt")
    torch.save([torch.zeros(3)], tmp_path / "list.pt")
    assert "expected a checkpoint dict" in _err(tmp_path / "list.pt")
    sd = gen.state_dict()
    del sd["convs.1.noise.weight"]
    torch.save({"g_ema": sd}, tmp_path / "missing_key.pt")
    assert "convs.1.noise.weight" in _err(tmp_path / "missing_key.pt")
    sd = gen.state_dict()
    sd["convs.1.conv.weight"] = torch.randn(1, 8, 8, 5, 5)
    torch.save({"g_ema": sd}, tmp_path / "bad_shape.pt")
    assert "shape" in _err(tmp_path / "bad_shape.pt")
    torch.save({"g_ema": gen.state_dict(), "latent_avg": torch.randn(7)}, tmp_path / "bad_avg.pt")
    assert "latent_avg" in _err(tmp_path / "bad_avg.pt")


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned_by_checkpoint",))


def test_code_in_a_checkpoint_is_never_run(tmp_path, gen, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"g_ema": gen.state_dict(), "extra": _Evil()}, tmp_path / "evil.pt")
    msg = _err(tmp_path / "evil.pt")
    assert "not allowed" in msg
    assert not (tmp_path / "pwned_by_checkpoint").exists()
    with pytest.raises(facelib.CheckpointError):
        safe_torch_load(tmp_path / "evil.pt")
    # a plain pickle is not treated as a torch file by safe_torch_load
    with open(tmp_path / "plain.pkl", "wb") as f:
        pickle.dump({"a": 1}, f)
    with pytest.raises(facelib.CheckpointError, match="plain pickle"):
        safe_torch_load(tmp_path / "plain.pkl")
    assert not (tmp_path / "pwned_by_checkpoint").exists()


def test_errors_are_one_hierarchy():
    assert issubclass(facelib.CheckpointError, facelib.FacelibError)
    assert issubclass(facelib.ShapeError, ValueError) and issubclass(facelib.NoFaceError, facelib.FacelibError)


def test_every_lazy_export_resolves():
    import importlib

    missing = [f"{module}.{name}" for name, module in facelib._LAZY.items()
               if not hasattr(importlib.import_module(f"facelib.{module}"), name)]
    assert missing == []
    assert facelib.load_generator is load_generator and set(facelib._LAZY) <= set(dir(facelib))
