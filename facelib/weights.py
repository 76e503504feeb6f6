"""Loading and saving weight files safely.

* :func:`safe_torch_load` reads ``torch.save`` files with ``weights_only=True`` (plus an
  allow-list of what training checkpoints legitimately contain) and turns every failure into
  a :class:`~facelib.errors.CheckpointError` naming the file and what was found.
* :func:`load_generator` builds a :class:`~facelib.stylegan2.StyleGAN2Generator` from a
  rosinality-format checkpoint, a bare ``g_ema`` state dict or an NVIDIA network pickle,
  inferring every architecture setting from the keys and shapes.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch

from ._io import atomic_path, sniff_file
from .errors import CheckpointError, InputError
from .nvidia import load_nvidia_pickle
from .stylegan2 import StyleGAN2Generator

__all__ = ["safe_torch_load", "load_generator", "save_generator", "generator_checkpoint", "file_sha256",
           "resolve_device", "infer_generator_config", "state_fingerprint", "sniff_file",
           "looks_like_generator"]

log = logging.getLogger(__name__)

# pickle protocol-2 header + the magic number that legacy (non-zip) torch.save writes first
# globals that rosinality training checkpoints legitimately contain besides tensors
_SAFE_GLOBALS = [argparse.Namespace]


def resolve_device(device: "str | torch.device | None" = None, *, name: str = "device") -> torch.device:
    """None -> CPU; "auto" -> CUDA, else Apple MPS, else CPU; anything else as given, checked.

    Raises:
        InputError: not a device name, or a device that is not available here (message names ``name``).
    """
    if device is None:
        return torch.device("cpu")
    if isinstance(device, str) and device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(f"{name} {device!r}: not a device; use auto, cpu, cuda, cuda:<index> or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"{name} {device!r}: cuda requested but no CUDA device is visible")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise InputError(f"{name} {device!r}: there are {count} CUDA device(s) here (cuda:0 .. cuda:{count - 1})")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InputError(f"{name} {device!r}: mps requested but Apple's MPS backend is not available here")
    elif dev.type != "cpu":
        raise InputError(f"{name} {device!r}: device type {dev.type!r} is not supported; use auto, cpu, cuda or mps")
    return dev


def check_finite_tensors(tensors: Mapping[str, Any], source: "str | os.PathLike[str] | None", what: str) -> None:
    """Refuse NaN or inf in any floating tensor of ``tensors`` (naming the first one).

    Raises:
        CheckpointError: ``<source>: <what> tensor '<name>' holds NaN/inf values``.
    """
    for key, t in tensors.items():
        if not (torch.is_tensor(t) and t.is_floating_point()) or t.device.type == "meta":
            continue
        if not bool(torch.isfinite(t).all()):
            kinds = []
            if bool(torch.isnan(t).any()):
                kinds.append("NaN")
            if bool(torch.isinf(t).any()):
                kinds.append("inf")
            raise CheckpointError(source, f"{what} tensor {key!r} holds {'/'.join(kinds)} values; the file is "
                                          "damaged or was saved from a diverged run")


def file_sha256(path: "str | os.PathLike[str]", chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def state_fingerprint(state: Mapping[str, torch.Tensor]) -> str:
    """Hex SHA-256 over a state dict's names, shapes, dtypes and values (order-independent)."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key]
        if not torch.is_tensor(t):
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{key}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # 0-d: reshape first
    return h.hexdigest()


def _check_file(path: Path) -> str:
    if not path.exists():
        raise CheckpointError(path, "file not found")
    if path.is_dir():
        raise CheckpointError(path, "is a directory, not a weight file")
    kind = sniff_file(path)
    if kind == "empty":
        raise CheckpointError(path, "file is empty (an interrupted download?)")
    if kind == "html":
        raise CheckpointError(path, "file is an HTML page, not weights (a download that returned an error or "
                                    "quota page?); download it again")
    if kind == "text":
        raise CheckpointError(path, "file is a text file, not a weight file")
    return kind


def safe_torch_load(path: "str | os.PathLike[str]") -> Any:
    """``torch.load`` without code execution: tensors, containers, numbers, strings, argparse.Namespace.

    Raises:
        CheckpointError: missing, empty, truncated, HTML/text, or needing other Python objects.
    """
    path = Path(path)
    kind = _check_file(path)
    if kind == "zip":
        try:
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
        except (zipfile.BadZipFile, EOFError, OSError):
            raise CheckpointError(path, f"truncated or incomplete download ({path.stat().st_size} bytes; the zip "
                                        "archive's directory is missing or damaged); download it again") from None
        if bad is not None:
            raise CheckpointError(path, f"corrupt torch file (bad member {bad})")
    elif kind == "pickle":
        raise CheckpointError(path, "a plain pickle, not a torch.save file (NVIDIA network pickles are read by "
                                    "facelib.load_generator)")
    elif kind == "other":
        raise CheckpointError(path, "not a torch checkpoint (unrecognised file header)")
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        msg = str(e).strip().splitlines()
        first = next((m for m in msg if m.strip()), type(e).__name__)
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            found = re.search(r"GLOBAL ([\w.]+)", str(e))
            what = f" ({found.group(1)})" if found else ""
            raise CheckpointError(path, f"contains Python objects that are not allowed when loading safely{what}; "
                                        "facelib never unpickles code from weight files") from None
        raise CheckpointError(path, f"cannot be read as a torch checkpoint: {first[:300]}") from None


# ----------------------------------------------------------------------------------------
# StyleGAN2 generators
# ----------------------------------------------------------------------------------------

_ARCFACE_HINTS = ("layer1.0.bn1.weight", "input_layer.0.weight", "body.0.res_layer.0.weight", "features.weight")


def _strip_prefix(state: Mapping[str, Any], prefix: str = "module.") -> dict[str, Any]:
    if state and all(isinstance(k, str) and k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return dict(state)


def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        keys = list(obj.keys())[:6]
        return f"a dict with keys {keys}{' ...' if len(obj) > 6 else ''}"
    return f"a {type(obj).__name__}"


def looks_like_generator(state: Mapping[str, Any]) -> bool:
    """True when ``state`` has the keys of a rosinality-layout StyleGAN2 generator (``g_ema``)."""
    return "input.input" in state and "style.1.weight" in state and "conv1.conv.weight" in state


def infer_generator_config(state: Mapping[str, torch.Tensor], *, source: "str | os.PathLike[str] | None" = None) -> dict:
    """Architecture of a rosinality-layout ``g_ema`` state dict, from its keys and shapes.

    Returns:
        {"resolution", "style_dim", "n_mlp", "channels": {res: width}} for :class:`StyleGAN2Generator`.
    Raises:
        CheckpointError: keys or shapes that do not form a StyleGAN2 generator.
    """
    def shape(key: str) -> tuple[int, ...]:
        t = state.get(key)
        if not torch.is_tensor(t):
            raise CheckpointError(source, f"generator state dict lacks {key!r}")
        return tuple(t.shape)

    w1 = shape("style.1.weight")
    if len(w1) != 2:
        raise CheckpointError(source, f"style.1.weight has shape {w1}, expected (style_dim, style_dim)")
    style_dim = w1[1]
    n_mlp = 0
    while f"style.{n_mlp + 1}.weight" in state:
        n_mlp += 1
    n_rgbs = 0
    while f"to_rgbs.{n_rgbs}.conv.weight" in state:
        n_rgbs += 1
    resolution = 2 ** (n_rgbs + 2)
    inp = shape("input.input")
    if len(inp) != 4 or inp[2:] != (4, 4):
        raise CheckpointError(source, f"input.input has shape {inp}, expected (1, C, 4, 4)")
    channels = {4: inp[1]}
    for k in range(n_rgbs):
        wk = shape(f"convs.{2 * k}.conv.weight")
        if len(wk) != 5:
            raise CheckpointError(source, f"convs.{2 * k}.conv.weight has shape {wk}, expected (1, O, I, 3, 3)")
        channels[2 ** (k + 3)] = wk[1]
    if f"convs.{2 * n_rgbs}.conv.weight" in state:
        raise CheckpointError(source, f"convs.{2 * n_rgbs} has no matching to_rgbs entry: unknown layout")
    return {"resolution": resolution, "style_dim": style_dim, "n_mlp": n_mlp, "channels": channels}


def _select_generator_state(ckpt: Any, source: "Path | None") -> tuple[dict, Any, dict]:
    """(g_ema state dict, latent_avg or None, extra facelib settings) from a loaded object."""
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(source, f"expected a checkpoint dict, found {_describe(ckpt)}")
    extra = dict(ckpt["facelib"]) if isinstance(ckpt.get("facelib"), Mapping) else {}
    if "g_ema" in ckpt and isinstance(ckpt["g_ema"], Mapping):
        return _strip_prefix(ckpt["g_ema"]), ckpt.get("latent_avg"), extra
    if "g" in ckpt and isinstance(ckpt["g"], Mapping) and looks_like_generator(_strip_prefix(ckpt["g"])):
        log.warning("%s: no 'g_ema' in the checkpoint; using the training generator 'g'", source or "checkpoint")
        return _strip_prefix(ckpt["g"]), ckpt.get("latent_avg"), extra
    if isinstance(ckpt.get("state_dict"), Mapping):  # pSp / e4e encoder checkpoint: its decoder
        sd = _strip_prefix(ckpt["state_dict"])
        dec = {k[len("decoder."):]: v for k, v in sd.items() if isinstance(k, str) and k.startswith("decoder.")}
        if looks_like_generator(dec):
            avg = ckpt.get("latent_avg")
            if torch.is_tensor(avg) and avg.ndim == 2:  # stored once per W+ row (equal rows in released files)
                avg = avg.float().mean(0)
            return dec, avg, extra
    state = _strip_prefix(ckpt)
    if looks_like_generator(state):
        return state, None, extra
    if any(k in state for k in _ARCFACE_HINTS):
        raise CheckpointError(source, "this is an ArcFace identity network, not a StyleGAN2 generator "
                                      "(load it with facelib.load_arcface)")
    if "d" in ckpt and "g_ema" not in ckpt:
        raise CheckpointError(source, "training checkpoint without a generator ('g_ema' or 'g')")
    raise CheckpointError(source, f"not a StyleGAN2 generator checkpoint: found {_describe(ckpt)}; expected "
                                  "{'g_ema': state_dict, 'latent_avg': ...} or a bare g_ema state dict")


def load_generator(path_or_state: "str | os.PathLike[str] | Mapping[str, Any]", *,
                   device: "str | torch.device | None" = None) -> StyleGAN2Generator:
    """Build a StyleGAN2 generator from a checkpoint, inferring its architecture.

    Accepts rosinality/stylegan2-pytorch files (``{"g_ema", "latent_avg"}`` from
    convert_weight.py, or training checkpoints ``{"g", "d", "g_ema", "g_optim", "d_optim", "args"}``),
    a bare ``g_ema`` state dict (a path or an in-memory dict), NVIDIA stylegan2-ada-pytorch
    network pickles (read without executing pickled code), and the ``decoder.*`` generator of
    pSp / e4e encoder checkpoints (``latent_avg`` = the mean of their stored W+ rows).

    Args:
        path_or_state: file path or an already loaded checkpoint / state dict.
        device: None (CPU), "auto", or any torch device.
    Returns:
        The generator in eval mode with ``requires_grad=False`` parameters; ``G.latent_avg`` is
        the stored average w (style_dim,) or None; ``G.weights_sha256`` the file's SHA-256 (or a
        fingerprint of the state dict).
    Raises:
        CheckpointError: missing/corrupt/unsafe files, other kinds of checkpoint, unknown layouts.
    """
    source: Path | None = None
    if isinstance(path_or_state, Mapping):
        ckpt = path_or_state
    else:
        source = Path(path_or_state)
        kind = _check_file(source)
        if kind == "pickle":
            ckpt = load_nvidia_pickle(source)
        else:
            ckpt = safe_torch_load(source)
    state, latent_avg, extra = _select_generator_state(ckpt, source)
    check_finite_tensors(state, source, "generator")
    if torch.is_tensor(latent_avg):
        check_finite_tensors({"latent_avg": latent_avg}, source, "generator")
    cfg = infer_generator_config(state, source=source)
    G = StyleGAN2Generator(**cfg, conv_clamp=extra.get("conv_clamp"))
    try:
        G.load_state_dict(state, strict=True)
    except RuntimeError as e:
        expected = G.state_dict()
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
                 if k in state and torch.is_tensor(state[k]) and tuple(state[k].shape) != tuple(v.shape)]
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if wrong:
            parts.append(f"shape mismatches {wrong[:3]}{' ...' if len(wrong) > 3 else ''}")
        detail = "; ".join(parts) or str(e).splitlines()[0]
        raise CheckpointError(source, f"unknown generator layout ({cfg['resolution']} px inferred): {detail}") from None
    if latent_avg is not None:
        if not torch.is_tensor(latent_avg) or latent_avg.numel() != cfg["style_dim"]:
            raise CheckpointError(source, f"latent_avg should hold {cfg['style_dim']} values, found "
                                          f"{getattr(latent_avg, 'shape', type(latent_avg).__name__)}")
        G.latent_avg = latent_avg.detach().float().reshape(cfg["style_dim"]).clone()
    G.weights_sha256 = file_sha256(source) if source is not None else state_fingerprint(state)
    G.source_path = str(source) if source is not None else None
    G.eval().requires_grad_(False)
    return G.to(resolve_device(device))


def generator_checkpoint(G: StyleGAN2Generator) -> dict[str, Any]:
    """``{"g_ema": state_dict (CPU), "latent_avg": (style_dim,) if set, "facelib": {"conv_clamp"} if set}``."""
    ckpt: dict[str, Any] = {"g_ema": {k: v.detach().cpu() for k, v in G.state_dict().items()}}
    if G.latent_avg is not None:
        ckpt["latent_avg"] = G.latent_avg.detach().cpu()
    if G.conv_clamp is not None:
        ckpt["facelib"] = {"conv_clamp": float(G.conv_clamp)}
    return ckpt


def save_generator(G: StyleGAN2Generator, path: "str | os.PathLike[str]") -> None:
    """Write :func:`generator_checkpoint` (rosinality layout, loadable by rosinality's code) atomically."""
    with atomic_path(path) as tmp:
        torch.save(generator_checkpoint(G), tmp)
