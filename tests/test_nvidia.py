"""NVIDIA stylegan2-ada-pytorch network pickles: safe reading, conversion, the convert command.

The pickles here are written by a small stand-in writer with the same persistence structure
as stylegan2-ada-pytorch's training loop: every network reduces to
``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with ``meta = {type, version,
module_src, class_name, state}``, ``state`` being the module's ``__dict__`` (parameters,
buffers, children, hook dicts, attributes, ``_init_args``/``_init_kwargs`` as an EasyDict).
No NVIDIA source is embedded; the weights come from a directly built facelib generator, put
under NVIDIA's names with NVIDIA's gain conventions.
"""
from __future__ import annotations

import builtins
import collections
import contextlib
import json
import math
import os
import pickle
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from facelib import load_generator
from facelib.errors import CheckpointError, InputError
from facelib.nvidia import is_nvidia_pickle, load_nvidia_pickle, read_nvidia_pickle, select_generator
from facelib.nvidia_convert import RecordedGenerator, convert_checkpoint
from facelib.stylegan2 import StyleGAN2Generator

from .conftest import shared_path

TOL = 1e-3


# ----------------------------------------------------------------------------------------
# A stand-in writer of the persistence structure
# ----------------------------------------------------------------------------------------

def _reconstruct_persistent_obj(meta):  # resolved by pickle under torch_utils.persistence
    raise AssertionError("the writer's stand-in is never called when reading")


_reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
_reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"


class EasyDict(dict):
    """Written under dnnlib.util.EasyDict, as the training loop does."""


EasyDict.__module__ = "dnnlib.util"
EasyDict.__qualname__ = "EasyDict"


@contextlib.contextmanager
def _nvidia_module_names():
    """Make pickle resolve the writer's stand-ins under NVIDIA's module names while writing."""
    names = ["torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util"]
    saved = {n: sys.modules.get(n) for n in names}
    persistence = types.ModuleType("torch_utils.persistence")
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util = types.ModuleType("dnnlib.util")
    util.EasyDict = EasyDict
    sys.modules.update({"torch_utils": types.ModuleType("torch_utils"), "torch_utils.persistence": persistence,
                        "dnnlib": types.ModuleType("dnnlib"), "dnnlib.util": util})
    try:
        yield
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


class Persisted:
    """One persisted network object."""

    module_src = "# no source: written by the facelib test suite\n"

    def __init__(self, class_name, params=None, buffers=None, modules=None, attrs=None, init_args=(),
                 init_kwargs=None):
        state = {"training": False,
                 "_parameters": {k: torch.nn.Parameter(v.detach().clone(), requires_grad=False)
                                 for k, v in (params or {}).items()},
                 "_buffers": {k: v.detach().clone() for k, v in (buffers or {}).items()},
                 "_non_persistent_buffers_set": set(),
                 "_backward_pre_hooks": collections.OrderedDict(),
                 "_backward_hooks": collections.OrderedDict(),
                 "_is_full_backward_hook": None,
                 "_forward_hooks": collections.OrderedDict(),
                 "_forward_pre_hooks": collections.OrderedDict(),
                 "_state_dict_hooks": collections.OrderedDict(),
                 "_load_state_dict_pre_hooks": collections.OrderedDict(),
                 "_modules": dict(modules or {})}
        state.update(attrs or {})
        state["_init_args"] = tuple(init_args)
        state["_init_kwargs"] = EasyDict(init_kwargs or {})
        self.class_name, self.state = class_name, state

    def __reduce__(self):
        meta = {"type": "class", "version": 6, "module_src": self.module_src,
                "class_name": self.class_name, "state": self.state}
        return _reconstruct_persistent_obj, (meta,)


def _fc(weight, bias, *, weight_gain, bias_gain, activation, init_kwargs):
    return Persisted("FullyConnectedLayer", params={"weight": weight, "bias": bias},
                     attrs={"activation": activation, "weight_gain": np.float64(weight_gain), "bias_gain": bias_gain},
                     init_args=(weight.shape[1], weight.shape[0]), init_kwargs=init_kwargs)


def _fir():
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k = torch.outer(k, k)
    return k / k.sum()


def nvidia_tree(G: StyleGAN2Generator, *, conv_clamp=None, lr_mapping=0.01, architecture="skip",
                resample_filter=(1, 3, 3, 1)) -> Persisted:
    """A stylegan2-ada-pytorch ``Generator`` holding G's weights under NVIDIA's names and conventions."""
    sd = {k: v.detach().float() for k, v in G.state_dict().items()}
    D, res = G.style_dim, G.resolution
    lr_old = 0.01  # facelib stores mapping values divided by 0.01; NVIDIA's divided by lr_mapping
    fcs = {}
    for i in range(G.n_mlp):
        fcs[f"fc{i}"] = _fc(sd[f"style.{i + 1}.weight"] * lr_old / lr_mapping,
                            sd[f"style.{i + 1}.bias"] * lr_old / lr_mapping,
                            weight_gain=lr_mapping / math.sqrt(D), bias_gain=lr_mapping, activation="lrelu",
                            init_kwargs={"activation": "lrelu", "lr_multiplier": lr_mapping})
    n_ws = G.n_latent
    w_avg = G.latent_avg if G.latent_avg is not None else torch.zeros(D)
    mapping = Persisted("MappingNetwork", buffers={"w_avg": w_avg}, modules=fcs,
                        attrs={"z_dim": D, "c_dim": 0, "w_dim": D, "num_ws": n_ws, "num_layers": G.n_mlp,
                               "w_avg_beta": 0.995},
                        init_kwargs={"z_dim": D, "c_dim": 0, "w_dim": D, "num_ws": n_ws, "num_layers": G.n_mlp})
    fir = _fir()

    def affine(prefix):
        return _fc(sd[f"{prefix}.conv.modulation.weight"], sd[f"{prefix}.conv.modulation.bias"],
                   weight_gain=1 / math.sqrt(D), bias_gain=1, activation="linear", init_kwargs={"bias_init": 1})

    def layer(prefix, noise, r, up):
        w = sd[f"{prefix}.conv.weight"][0]
        kwargs = {"w_dim": D, "resolution": r, "conv_clamp": conv_clamp, "channels_last": False}
        if up == 2:
            kwargs.update(up=2, resample_filter=list(resample_filter))
        return Persisted("SynthesisLayer",
                         params={"weight": w, "noise_strength": sd[f"{prefix}.noise.weight"].reshape(()),
                                 "bias": sd[f"{prefix}.activate.bias"]},
                         buffers={"resample_filter": fir, "noise_const": sd[f"noises.noise_{noise}"][0, 0]},
                         modules={"affine": affine(prefix)},
                         attrs={"resolution": r, "up": up, "use_noise": True, "activation": "lrelu",
                                "conv_clamp": conv_clamp, "padding": 1, "act_gain": np.float64(math.sqrt(2))},
                         init_args=(w.shape[1], w.shape[0]), init_kwargs=kwargs)

    def torgb(prefix):
        w = sd[f"{prefix}.conv.weight"][0]
        return Persisted("ToRGBLayer", params={"weight": w, "bias": sd[f"{prefix}.bias"].reshape(3)},
                         modules={"affine": affine(prefix)},
                         attrs={"conv_clamp": conv_clamp, "weight_gain": np.float64(1 / math.sqrt(w.shape[1]))},
                         init_args=(w.shape[1], 3), init_kwargs={"w_dim": D, "conv_clamp": conv_clamp})

    def block(r, in_ch, out_ch, children, params):
        return Persisted("SynthesisBlock", params=params, buffers={"resample_filter": fir}, modules=children,
                         attrs={"in_channels": in_ch, "w_dim": D, "resolution": r, "img_channels": 3,
                                "is_last": r == res, "architecture": architecture, "use_fp16": False,
                                "channels_last": False, "num_conv": len(children) - 1, "num_torgb": 1},
                         init_args=(in_ch, out_ch),
                         init_kwargs={"w_dim": D, "resolution": r, "img_channels": 3, "is_last": r == res,
                                      "use_fp16": False, "conv_clamp": conv_clamp, "architecture": architecture})

    ch = G.channels
    blocks = {"b4": block(4, 0, ch[4], {"conv1": layer("conv1", 0, 4, 1), "torgb": torgb("to_rgb1")},
                          {"const": sd["input.input"][0]})}
    for k in range(3, int(math.log2(res)) + 1):
        r, j = 2 ** k, k - 3
        blocks[f"b{r}"] = block(r, ch[r // 2], ch[r], {"conv0": layer(f"convs.{2 * j}", 2 * k - 5, r, 2),
                                                       "conv1": layer(f"convs.{2 * j + 1}", 2 * k - 4, r, 1),
                                                       "torgb": torgb(f"to_rgbs.{j}")}, {})
    syn_kwargs = {"channel_base": 1024, "channel_max": max(ch.values()), "num_fp16_res": 0, "conv_clamp": conv_clamp,
                  "architecture": architecture}
    synthesis = Persisted("SynthesisNetwork", modules=blocks,
                          attrs={"w_dim": D, "img_resolution": res, "img_resolution_log2": int(math.log2(res)),
                                 "img_channels": 3, "block_resolutions": [2 ** k for k in range(2, int(math.log2(res)) + 1)],
                                 "num_ws": n_ws},
                          init_kwargs={"w_dim": D, "img_resolution": res, "img_channels": 3, **syn_kwargs})
    return Persisted("Generator", modules={"synthesis": synthesis, "mapping": mapping},
                     attrs={"z_dim": D, "c_dim": 0, "w_dim": D, "img_resolution": res, "img_channels": 3,
                            "num_ws": n_ws},
                     init_kwargs={"z_dim": D, "w_dim": D, "mapping_kwargs": EasyDict(num_layers=G.n_mlp),
                                  "synthesis_kwargs": EasyDict(syn_kwargs), "c_dim": 0, "img_resolution": res,
                                  "img_channels": 3})


def write_pickle(path: Path, obj, protocol: int = 3) -> Path:
    """Protocol 3 is what the training loop writes (``pickle.dump(data, f)`` under Python 3.7)."""
    with _nvidia_module_names(), open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


def training_pickle(G_ema, G=None, **tree_kwargs):
    """The training loop's top-level dict."""
    return {"training_set_kwargs": EasyDict(resolution=(G_ema or G).resolution, xflip=False),
            "G": None if G is None else nvidia_tree(G, **tree_kwargs), "D": None,
            "G_ema": None if G_ema is None else nvidia_tree(G_ema, **tree_kwargs), "augment_pipe": None}


def make_generator(resolution=32, style_dim=32, n_mlp=2, channels=None, seed=0) -> StyleGAN2Generator:
    """A directly built generator with every parameter non-trivial (biases, noise strengths, w_avg)."""
    channels = channels or {4: 16, 8: 16, 16: 12, 32: 8, 64: 8}
    channels = {r: c for r, c in channels.items() if r <= resolution}
    G = StyleGAN2Generator(resolution, style_dim=style_dim, n_mlp=n_mlp, channels=channels, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in G.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if name.startswith("style."):
                p.copy_((r if name.endswith("weight") else 0.1 * r) / 0.01)
            elif name.endswith("modulation.bias"):
                p.copy_(1 + 0.1 * r)
            elif name.endswith(("noise.weight", "activate.bias")) or name.endswith("bias"):
                p.copy_(0.1 * r)
            else:
                p.copy_(r)
        G.latent_avg = 0.1 * torch.randn(style_dim, generator=g)
    return G.eval()


def fixed_wplus(G, n=2, seed=3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = G.mapping(torch.randn(n * G.n_latent, G.style_dim, generator=g))
    return w.reshape(n, G.n_latent, G.style_dim)


def max_err(a, b) -> float:
    return float((a.double() - b.double()).abs().max())


# ----------------------------------------------------------------------------------------
# Loading and parity with the directly built generator
# ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def direct():
    return make_generator()


@pytest.fixture(scope="module")
def direct_pkl(direct, tmp_path_factory):
    return write_pickle(tmp_path_factory.mktemp("nv") / "net.pkl", training_pickle(direct))


def test_written_pickle_has_nvidia_structure(direct_pkl):
    import pickletools

    globals_seen = {arg for op, arg, _ in pickletools.genops(direct_pkl.read_bytes()) if op.name == "GLOBAL"}
    assert "torch_utils.persistence _reconstruct_persistent_obj" in globals_seen
    assert "torch.storage _load_from_bytes" in globals_seen and "dnnlib.util EasyDict" in globals_seen
    assert is_nvidia_pickle(direct_pkl)


def test_loads_and_matches_direct_generator(direct, direct_pkl):
    G = load_generator(direct_pkl)
    assert (G.resolution, G.n_latent, G.style_dim, G.n_mlp) == (32, 8, 32, 2)
    assert G.channels == direct.channels
    ref = direct.state_dict()
    got = G.state_dict()
    assert set(got) == set(ref)
    for k in ref:  # same lr conventions: every value is carried over bit-exactly
        assert torch.equal(got[k], ref[k]), k
    assert torch.equal(G.latent_avg, direct.latent_avg)
    wplus = fixed_wplus(direct)
    z = torch.randn(3, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert max_err(G.mapping(z), direct.mapping(z)) < 1e-6
        assert max_err(G.synthesis(wplus, noise=None), direct.synthesis(wplus, noise=None)) < 1e-5
        assert max_err(G.synthesis(wplus, noise="none"), direct.synthesis(wplus, noise="none")) < 1e-5


def test_nvidia_convention_evaluator_matches_direct_generator(direct, direct_pkl):
    """The record evaluator (NVIDIA's gains and FIR padding on NVIDIA names) is the same network."""
    R = RecordedGenerator(select_generator(read_nvidia_pickle(direct_pkl)))
    wplus = fixed_wplus(direct)
    z = torch.randn(3, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ws = R.mapping(z)
        assert ws.shape == (3, direct.n_latent, 32)
        assert max_err(ws[:, 0], direct.mapping(z)) < 1e-5
        assert max_err(R.mapping(z, truncation_psi=0.5)[:, 3],
                       direct.latent_avg + 0.5 * (direct.mapping(z) - direct.latent_avg)) < 1e-5
        assert max_err(R.synthesis(wplus, "const"), direct.synthesis(wplus, noise=None)) < 1e-4
        assert max_err(R.synthesis(wplus, "none"), direct.synthesis(wplus, noise="none")) < 1e-4


def test_checkpoint_dict_layout(direct, direct_pkl):
    ckpt = load_nvidia_pickle(direct_pkl)
    assert set(ckpt["g_ema"]) == set(direct.state_dict())
    assert all(v.dtype == torch.float32 for v in ckpt["g_ema"].values())
    assert ckpt["latent_avg"].shape == (32,)
    assert ckpt["facelib"] == {"conv_clamp": None, "channels": {4: 16, 8: 16, 16: 12, 32: 8}, "n_mlp": 2,
                               "style_dim": 32, "resolution": 32, "source": "nvidia"}


@pytest.mark.parametrize("protocol", [4, 5])  # Python 3.8+ defaults
def test_other_pickle_protocols(direct, tmp_path, protocol):
    path = write_pickle(tmp_path / "p.pkl", training_pickle(direct), protocol=protocol)
    assert is_nvidia_pickle(path)
    got = load_nvidia_pickle(path)["g_ema"]
    assert all(torch.equal(got[k], v) for k, v in direct.state_dict().items())


def test_conv_clamp_is_carried_over(direct, tmp_path):
    clamp = 0.25  # small enough to bite on these weights
    path = write_pickle(tmp_path / "clamped.pkl", training_pickle(direct, conv_clamp=clamp))
    G = load_generator(path)
    assert G.conv_clamp == clamp and load_nvidia_pickle(path)["facelib"]["conv_clamp"] == clamp
    R = RecordedGenerator(select_generator(read_nvidia_pickle(path)))
    clamped = make_generator()
    clamped.set_conv_clamp(clamp)
    wplus = fixed_wplus(direct)
    with torch.no_grad():
        img = G.synthesis(wplus, noise=None)
        assert max_err(img, clamped.synthesis(wplus, noise=None)) < 1e-5
        assert max_err(img, R.synthesis(wplus)) < 1e-4
        assert max_err(img, direct.synthesis(wplus, noise=None)) > 1e-2  # the clamp changed something


def test_other_mapping_lr_multiplier_is_rescaled(direct, tmp_path):
    path = write_pickle(tmp_path / "lr.pkl", training_pickle(direct, lr_mapping=0.1))
    G = load_generator(path)
    z = torch.randn(4, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert max_err(G.mapping(z), direct.mapping(z)) < 1e-5


def test_g_without_g_ema_and_g_ema_preferred(tmp_path):
    a, b = make_generator(seed=0), make_generator(seed=5)
    only_g = write_pickle(tmp_path / "only_g.pkl", training_pickle(None, G=a) | {"G_ema": None})
    both = write_pickle(tmp_path / "both.pkl", training_pickle(a, G=b))
    wplus = fixed_wplus(a)
    with torch.no_grad():
        assert max_err(load_generator(only_g).synthesis(wplus), a.synthesis(wplus)) < 1e-5
        assert max_err(load_generator(both).synthesis(wplus), a.synthesis(wplus)) < 1e-5
    neither = write_pickle(tmp_path / "neither.pkl", {"D": None, "augment_pipe": None})
    with pytest.raises(CheckpointError, match="no 'G_ema' or 'G'"):
        load_generator(neither)


@pytest.mark.parametrize("resolution,n_latent", [(256, 14), (512, 16), (1024, 18)])
def test_row_counts_at_larger_resolutions(resolution, n_latent, tmp_path):
    channels = {2 ** k: 4 for k in range(2, 11)}
    direct = make_generator(resolution=resolution, style_dim=16, n_mlp=1, channels=channels)
    path = write_pickle(tmp_path / f"g{resolution}.pkl", training_pickle(direct))
    G = load_generator(path)
    assert (G.resolution, G.n_latent, G.num_layers) == (resolution, n_latent, n_latent - 1)
    ref = direct.state_dict()
    assert set(G.state_dict()) == set(ref)
    assert all(torch.equal(v, ref[k]) for k, v in G.state_dict().items())
    if resolution == 256:  # one forward is enough to show the rows line up; larger sizes only cost time
        wplus = fixed_wplus(direct, n=1)
        with torch.no_grad():
            assert max_err(G.synthesis(wplus), direct.synthesis(wplus)) < 1e-4


# ----------------------------------------------------------------------------------------
# Safety
# ----------------------------------------------------------------------------------------

class _Payload:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _os_system(command):  # pickled as os.system (the real one is posix.system on Linux)
    return _REAL_OS_SYSTEM(command)


_REAL_OS_SYSTEM = os.system
_os_system.__module__, _os_system.__qualname__ = "os", "system"


def _payloads(sentinel: Path):
    return {
        "os.system": (_os_system, (f"touch '{sentinel}'",)),
        "builtins.eval": (builtins.eval, (f"open({str(sentinel)!r}, 'w').close()",)),
        "subprocess.Popen": (subprocess.Popen, (["touch", str(sentinel)],)),
    }


@pytest.mark.parametrize("name", ["os.system", "builtins.eval", "subprocess.Popen"])
def test_payload_is_live_without_the_restricted_reader(name, tmp_path):
    """Control: an ordinary unpickler does run the payloads the next test feeds to facelib."""
    sentinel = tmp_path / "ran"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "system", _os_system)
        data = pickle.dumps({"G_ema": _Payload(*_payloads(sentinel)[name])}, protocol=3)
    assert f"{name.replace('.', ' ')}".encode() in data.replace(b"\n", b" ")
    result = pickle.loads(data)["G_ema"]
    if isinstance(result, subprocess.Popen):
        result.wait(timeout=30)
    assert sentinel.exists()


@pytest.mark.parametrize("name", ["os.system", "builtins.eval", "subprocess.Popen"])
@pytest.mark.parametrize("where", ["top", "nested"])
def test_foreign_globals_are_refused_and_nothing_runs(name, where, direct, tmp_path):
    sentinel = tmp_path / "ran"
    payload = _Payload(*_payloads(sentinel)[name])
    if where == "top":
        obj = {"G_ema": payload}
    else:  # deep inside an otherwise valid generator, where a real attack would hide it
        obj = training_pickle(direct)
        obj["G_ema"].state["_modules"]["synthesis"].state["_modules"]["b8"].state["_init_kwargs"]["x"] = payload
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "system", _os_system)
        path = write_pickle(tmp_path / "evil.pkl", obj)
    with pytest.raises(CheckpointError) as info:
        load_generator(path)
    assert f"refusing global {name}" in str(info.value) and str(path) in str(info.value)
    assert not sentinel.exists()


def test_module_src_is_never_executed(direct, tmp_path, monkeypatch):
    sentinel = tmp_path / "ran"
    monkeypatch.setattr(Persisted, "module_src", f"open({str(sentinel)!r}, 'w').close()\n")
    G = load_generator(write_pickle(tmp_path / "src.pkl", training_pickle(direct)))
    assert G.resolution == 32 and not sentinel.exists()


def test_tensorflow_pickle_is_refused_with_a_hint(tmp_path):
    path = tmp_path / "tf.pkl"
    path.write_bytes(b"\x80\x03cdnnlib.tflib.network\nNetwork\nq\x00)\x81q\x01.")
    with pytest.raises(CheckpointError, match=r"refusing global dnnlib\.tflib\.network\.Network.*TensorFlow"):
        load_generator(path)


@pytest.mark.parametrize("keep", [3, 0.5, -1])
def test_truncated_pickle_gives_a_clear_error(direct_pkl, tmp_path, keep):
    data = direct_pkl.read_bytes()
    n = keep if isinstance(keep, int) and keep > 0 else (len(data) - 1 if keep == -1 else int(len(data) * keep))
    path = tmp_path / "cut.pkl"
    path.write_bytes(data[:n])
    with pytest.raises(CheckpointError, match="truncated or corrupt pickle") as info:
        load_generator(path)
    assert str(path) in str(info.value)


def test_sniffing(direct, direct_pkl, tmp_path):
    torch.save({"a": torch.zeros(1)}, tmp_path / "zip.pt")
    torch.save({"a": torch.zeros(1)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    (tmp_path / "text.pkl").write_text("hello")
    assert is_nvidia_pickle(direct_pkl)
    assert not is_nvidia_pickle(tmp_path / "zip.pt")
    assert not is_nvidia_pickle(tmp_path / "legacy.pt")
    assert not is_nvidia_pickle(tmp_path / "text.pkl")
    assert not is_nvidia_pickle(tmp_path / "missing.pkl")


# ----------------------------------------------------------------------------------------
# Refusals of networks facelib cannot represent
# ----------------------------------------------------------------------------------------

def test_other_architectures_are_refused(direct, tmp_path):
    path = write_pickle(tmp_path / "resnet.pkl", training_pickle(direct, architecture="resnet"))
    with pytest.raises(CheckpointError, match="architecture 'resnet' is not supported"):
        load_generator(path)


def test_other_resample_filters_are_refused(direct, tmp_path):
    path = write_pickle(tmp_path / "fir.pkl", training_pickle(direct, resample_filter=(1, 2, 1)))
    with pytest.raises(CheckpointError, match=r"resample filter \[1, 2, 1\].*only \[1, 3, 3, 1\]"):
        load_generator(path)
    obj = training_pickle(direct)
    obj["G_ema"].state["_modules"]["synthesis"].state["_modules"]["b16"].state["_buffers"]["resample_filter"] = \
        torch.ones(4, 4) / 16
    with pytest.raises(CheckpointError, match=r"b16\.resample_filter is not the \[1, 3, 3, 1\] filter"):
        load_generator(write_pickle(tmp_path / "fir2.pkl", obj))


def test_unmatched_parameter_is_refused(direct, tmp_path):
    obj = training_pickle(direct)
    layer = obj["G_ema"].state["_modules"]["synthesis"].state["_modules"]["b8"].state["_modules"]["conv1"]
    layer.state["_parameters"]["extra_gain"] = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(CheckpointError, match=r"unmatched generator parameters \['synthesis\.b8\.conv1\.extra_gain'\]"):
        load_generator(write_pickle(tmp_path / "extra.pkl", obj))


def test_conditional_generator_is_refused(direct, tmp_path):
    obj = training_pickle(direct)
    obj["G_ema"].state["c_dim"] = 10
    with pytest.raises(CheckpointError, match="conditional generator"):
        load_generator(write_pickle(tmp_path / "cond.pkl", obj))


# ----------------------------------------------------------------------------------------
# The convert command
# ----------------------------------------------------------------------------------------

def test_convert_pickle_then_round_trip(direct, direct_pkl, tmp_path, capsys):
    from facelib.cli import main

    out = tmp_path / "out" / "g.pt"
    assert main(["convert", str(direct_pkl), str(out), "--check-images", "1"]) == 0
    printed = capsys.readouterr().out
    assert "max abs diff" in printed and "nvidia-pickle" in printed
    ckpt = torch.load(out, map_location="cpu", weights_only=True)
    assert set(ckpt) == {"g_ema", "latent_avg"}
    for k, v in direct.state_dict().items():
        assert torch.equal(ckpt["g_ema"][k], v), k
    out2 = tmp_path / "g2.pt"
    r = convert_checkpoint(out, out2, n_check=1)
    assert r.source_format == "torch" and r.max_abs_err == 0.0 and out2.exists()
    wplus = fixed_wplus(direct)
    with torch.no_grad():
        assert max_err(load_generator(out2).synthesis(wplus), direct.synthesis(wplus)) < 1e-5


def test_convert_keeps_conv_clamp(direct, tmp_path):
    src = write_pickle(tmp_path / "clamped.pkl", training_pickle(direct, conv_clamp=0.25))
    r = convert_checkpoint(src, tmp_path / "c.pt", n_check=1)
    assert r.conv_clamp == 0.25 and r.max_abs_err < TOL
    assert torch.load(tmp_path / "c.pt", weights_only=True)["facelib"] == {"conv_clamp": 0.25}
    assert load_generator(tmp_path / "c.pt").conv_clamp == 0.25


def test_convert_writes_nothing_when_the_check_fails(direct_pkl, tmp_path, monkeypatch):
    import facelib.weights as weights

    real = weights.load_generator

    def broken(path, **kwargs):
        G = real(path, **kwargs)
        with torch.no_grad():
            G.to_rgbs[1].conv.weight.mul_(1.01)
        return G

    monkeypatch.setattr(weights, "load_generator", broken)
    out = tmp_path / "g.pt"
    with pytest.raises(CheckpointError, match="does not reproduce"):
        convert_checkpoint(direct_pkl, out, n_check=1)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_convert_refuses_pickle_output(direct_pkl, tmp_path):
    with pytest.raises(InputError, match=r"\.pt"):
        convert_checkpoint(direct_pkl, tmp_path / "x.pkl")


# ----------------------------------------------------------------------------------------
# The shared NVIDIA fixture (real structure, NVIDIA's own outputs)
# ----------------------------------------------------------------------------------------

def test_shared_fixture_parity():
    folder = shared_path("refs", "nvidia")
    pkl, ref = folder / "nvidia_g64_nosrc.pkl", np.load(folder / "nvidia_g64_ref.npz")
    layout = json.loads((folder.parent / "stylegan2" / "layout_64.json").read_text())
    keys = [k for k, _ in layout["keys"] if not k.startswith("style.") or int(k.split(".")[1]) <= 2]
    assert list(load_nvidia_pickle(pkl)["g_ema"]) == keys  # rosinality's key order, 2 mapping layers
    G = load_generator(pkl)
    assert (G.resolution, G.n_latent, G.n_mlp) == (64, 10, 2)
    assert G.channels == {4: 32, 8: 32, 16: 32, 32: 32, 64: 16}
    R = RecordedGenerator(select_generator(read_nvidia_pickle(pkl)))
    z, ws = torch.from_numpy(ref["z"]), torch.from_numpy(ref["ws"])
    with torch.no_grad():
        assert max_err(G.latent_avg, torch.from_numpy(ref["w_avg"])) < TOL
        assert max_err(G.mapping(z), torch.from_numpy(ref["w_psi1"][:, 0])) < TOL
        assert max_err(G.synthesis(ws, noise=None), torch.from_numpy(ref["img_const"])) < TOL
        assert max_err(G.synthesis(ws, noise="none"), torch.from_numpy(ref["img_noise_none"])) < TOL
        assert max_err(G.synthesis(G.mapping(z)), torch.from_numpy(ref["img_from_w_psi1"])) < TOL
        assert max_err(R.mapping(z, truncation_psi=0.7), torch.from_numpy(ref["w_psi07"])) < TOL
        assert max_err(R.synthesis(ws), torch.from_numpy(ref["img_const"])) < TOL
