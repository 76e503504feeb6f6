"""NVIDIA stylegan2-ada-pytorch network pickles, read as data and converted to facelib's layout.

A network pickle from stylegan2-ada-pytorch (``{"G", "D", "G_ema", ...}``) stores every network
as ``torch_utils.persistence._reconstruct_persistent_obj(meta)``, where ``meta`` carries the
class's Python source (``module_src``) and the module's ``__dict__``. Loading it the ordinary
way executes that source. This module never does: a restricted unpickler admits only the few
globals such a file legitimately references, each replaced by a stand-in that builds plain
data, and turns every persisted object into a :class:`PersistentRecord` (parameters, buffers,
child records, init arguments, plain attributes). Anything else is refused before it is called.

The generator record is then mapped through an explicit name table onto the rosinality
``g_ema`` layout that :class:`facelib.stylegan2.StyleGAN2Generator` loads with ``strict=True``.
:class:`facelib.nvidia_convert.RecordedGenerator` evaluates a record with NVIDIA's own conventions,
so a conversion can be checked against the source network without NVIDIA's code.

Name table (NVIDIA -> rosinality):

=====================================  ==========================================
``mapping.fc{i}.weight/bias``          ``style.{i+1}.weight/bias``
``mapping.w_avg``                      ``latent_avg``
``synthesis.b4.const`` (C,4,4)         ``input.input`` (1,C,4,4)
``synthesis.b4.conv1``                 ``conv1``
``synthesis.b{r}.conv0`` / ``conv1``   ``convs.{2(log2 r - 3)}`` / ``convs.{2(log2 r - 3) + 1}``
``synthesis.b4.torgb``                 ``to_rgb1``
``synthesis.b{r}.torgb``               ``to_rgbs.{log2 r - 3}``
layer ``weight`` (O,I,k,k)             ``conv.weight`` (1,O,I,k,k), not flipped
layer ``affine.weight/bias``           ``conv.modulation.weight/bias``
layer ``bias``                         ``activate.bias`` (ToRGB: ``bias`` (1,3,1,1))
layer ``noise_strength`` ()            ``noise.weight`` (1,)
layer ``noise_const`` (r,r)            ``noises.noise_{n}`` (1,1,r,r)
``resample_filter`` buffers            checked to be [1,3,3,1]; rosinality's kernels are rebuilt
=====================================  ==========================================
"""
from __future__ import annotations

import collections
import io
import logging
import math
import os
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from ._io import sniff_file
from .errors import CheckpointError
from .stylegan2 import BLUR_TAPS, SQRT2, make_kernel

__all__ = [
    "PersistentRecord",
    "is_nvidia_pickle",
    "read_nvidia_pickle",
    "select_generator",
    "load_nvidia_pickle",
    "nvidia_to_rosinality",
    "GeneratorSpec",
    "inspect_generator",
]

log = logging.getLogger(__name__)

# rosinality's mapping layers use this learning-rate multiplier (every released model does)
_ROSINALITY_LR_MLP = 0.01


# ----------------------------------------------------------------------------------------
# Records and stand-ins for the admitted globals
# ----------------------------------------------------------------------------------------

class _Refused(Exception):
    """Raised inside the unpickler; turned into a CheckpointError naming the file."""


@dataclass
class PersistentRecord:
    """The state of one persisted stylegan2-ada-pytorch object, read as plain data.

    Attributes:
        class_name: the persisted class (``"Generator"``, ``"SynthesisLayer"``, ...).
        version: the persistence format version (6 for stylegan2-ada-pytorch).
        parameters: name -> tensor (``None`` for an absent optional parameter).
        buffers: name -> tensor.
        modules: child name -> record (``None`` for an absent child).
        init_args: positional constructor arguments.
        init_kwargs: keyword constructor arguments (nested dicts for ``mapping_kwargs`` etc.).
        attrs: every other plain attribute of the object (``z_dim``, ``weight_gain``, ...).
    """

    class_name: str
    version: int
    parameters: dict[str, torch.Tensor | None] = field(default_factory=dict)
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)
    modules: dict[str, "PersistentRecord | None"] = field(default_factory=dict)
    init_args: tuple = ()
    init_kwargs: dict[str, Any] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)

    def tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Every parameter and buffer of this record and its children, by dotted name."""
        out: dict[str, torch.Tensor] = {}
        for name, t in list(self.parameters.items()) + list(self.buffers.items()):
            if t is not None:
                out[prefix + name] = t
        for name, child in self.modules.items():
            if child is not None:
                out.update(child.tensors(f"{prefix}{name}."))
        return out

    def child(self, path: str) -> "PersistentRecord":
        """The record at a dotted path of child names (``"synthesis.b8.conv0"``)."""
        rec: PersistentRecord | None = self
        for part in path.split("."):
            rec = rec.modules.get(part) if rec is not None else None
            if rec is None:
                raise KeyError(path)
        return rec

    def __repr__(self) -> str:
        return (f"PersistentRecord({self.class_name!r}, {len(self.parameters)} parameters, "
                f"{len(self.buffers)} buffers, children={list(self.modules)})")


class _EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict``: a plain dict (attribute access is not needed)."""


# Attributes that every torch.nn.Module carries and that hold nothing of the network.
_MODULE_BOOKKEEPING = {"_parameters", "_buffers", "_modules", "_non_persistent_buffers_set",
                       "_init_args", "_init_kwargs"}


def _reconstruct_persistent_obj(meta: Any) -> PersistentRecord:
    """Stand-in for ``torch_utils.persistence._reconstruct_persistent_obj``: never runs module_src."""
    if not isinstance(meta, dict):
        raise _Refused(f"persistent object metadata is a {type(meta).__name__}, expected a dict")
    if meta.get("type") != "class":
        raise _Refused(f"unsupported persistent object type {meta.get('type')!r} (expected 'class')")
    class_name, state = meta.get("class_name"), meta.get("state")
    if not isinstance(class_name, str) or not isinstance(state, dict):
        raise _Refused("persistent object metadata lacks a class name or a state dict")
    version = meta.get("version")

    def _plain(name: str, value: Any, kind: type) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise _Refused(f"{class_name}.{name} is a {type(value).__name__}, expected a dict")
        for k, v in value.items():
            if v is not None and not isinstance(v, kind):
                raise _Refused(f"{class_name}.{name}[{k!r}] is a {type(v).__name__}, expected a {kind.__name__}")
        return dict(value)

    init_args = state.get("_init_args", ())
    return PersistentRecord(
        class_name=class_name,
        version=int(version) if isinstance(version, int) else -1,
        parameters=_plain("_parameters", state.get("_parameters"), torch.Tensor),
        buffers={k: v for k, v in _plain("_buffers", state.get("_buffers"), torch.Tensor).items() if v is not None},
        modules=_plain("_modules", state.get("_modules"), PersistentRecord),
        init_args=tuple(init_args) if isinstance(init_args, (tuple, list)) else (),
        init_kwargs=dict(state.get("_init_kwargs") or {}),
        attrs={k: v for k, v in state.items() if k not in _MODULE_BOOKKEEPING and not k.startswith("_")},
    )


def _load_storage(data: Any) -> torch.storage.TypedStorage:
    """Stand-in for ``torch.storage._load_from_bytes``: the bytes are read with weights_only=True."""
    if not isinstance(data, (bytes, bytearray)):
        raise _Refused(f"tensor storage is a {type(data).__name__}, expected bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            storage = torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means an unreadable storage
        raise _Refused(f"unreadable tensor storage ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    if not isinstance(storage, torch.storage.TypedStorage):
        raise _Refused(f"tensor storage bytes hold a {type(storage).__name__}, expected a storage")
    return storage


def _is_int_tuple(x: Any) -> bool:
    return isinstance(x, (tuple, list, torch.Size)) and all(isinstance(v, int) and not isinstance(v, bool) for v in x)


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                    backward_hooks: Any = None, metadata: Any = None) -> torch.Tensor:
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: a bounds-checked view of a storage."""
    if not isinstance(storage, torch.storage.TypedStorage):
        raise _Refused(f"tensor built from a {type(storage).__name__}, expected a storage")
    if not isinstance(offset, int) or not _is_int_tuple(size) or not _is_int_tuple(stride) or len(size) != len(stride):
        raise _Refused("tensor with a malformed offset, size or stride")
    if offset < 0 or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise _Refused("tensor with a negative offset, size or stride")
    if backward_hooks:
        raise _Refused("tensor with backward hooks")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TypedStorage deprecation notices
        n = storage.size()
        if math.prod(size) > 0 and offset + sum((s - 1) * st for s, st in zip(size, stride)) >= n:
            raise _Refused(f"tensor of size {tuple(size)} reaches past its storage of {n} elements")
        return torch.empty(0, dtype=storage.dtype).set_(storage.untyped(), offset, tuple(size), tuple(stride))


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None) -> torch.Tensor:
    """Stand-in for ``torch._utils._rebuild_parameter``: the plain tensor (no Parameter, no hooks)."""
    if not isinstance(data, torch.Tensor):
        raise _Refused(f"parameter built from a {type(data).__name__}, expected a tensor")
    if backward_hooks:
        raise _Refused("parameter with backward hooks")
    return data


class _NumpyDType:
    """Stand-in for ``numpy.dtype``: admits numeric kinds only; BUILD may set the byte order."""

    def __init__(self, name: Any, align: Any = False, copy: Any = False) -> None:
        if not isinstance(name, str):
            raise _Refused(f"numpy dtype from a {type(name).__name__}, expected a type code")
        try:
            dtype = np.dtype(name)
        except TypeError:
            raise _Refused(f"unknown numpy dtype {name!r}") from None
        if dtype.kind not in "biufc" or dtype.fields is not None:
            raise _Refused(f"numpy dtype {name!r} is not a plain number type")
        self.dtype = dtype

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) < 2 or state[1] not in ("<", ">", "=", "|"):
            raise _Refused("malformed numpy dtype state")
        if state[1] in "<>":
            self.dtype = self.dtype.newbyteorder(state[1])


def _numpy_scalar(dtype: Any, data: Any = None) -> int | float | complex | bool:
    """Stand-in for ``numpy.core.multiarray.scalar``: the value as a plain Python number."""
    if not isinstance(dtype, _NumpyDType) or not isinstance(data, (bytes, bytearray)):
        raise _Refused("numpy scalar that is not a plain number")
    if len(data) != dtype.dtype.itemsize:
        raise _Refused(f"numpy scalar of {len(data)} bytes for dtype {dtype.dtype}")
    return np.frombuffer(bytes(data), dtype=dtype.dtype, count=1)[0].item()


_ADMITTED: dict[tuple[str, str], Callable[..., Any]] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("numpy", "dtype"): _NumpyDType,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
}


class _RecordUnpickler(pickle.Unpickler):
    """Unpickler that resolves only :data:`_ADMITTED` globals, to their stand-ins."""

    def find_class(self, module: str, name: str) -> Any:
        stand_in = _ADMITTED.get((module, name))
        if stand_in is None:
            hint = ""
            if module.startswith("dnnlib.tflib"):
                hint = " (a TensorFlow-era StyleGAN pickle, a different format; convert it with a TF tool first)"
            raise _Refused(f"refusing global {module}.{name}: a network pickle may only reference tensor "
                           f"rebuilders and stylegan2-ada-pytorch persistence records{hint}")
        return stand_in

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("refusing a persistent id (this is not a stylegan2-ada-pytorch network pickle)")


# ----------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------

def is_nvidia_pickle(path: "str | os.PathLike[str]") -> bool:
    """True when the file starts like a plain pickle (protocol 2-5) and not like a torch.save file.

    Only the first bytes are read (:func:`facelib._io.sniff_file`); a missing or unreadable
    file gives False.
    """
    try:
        return sniff_file(Path(path)) == "pickle"
    except OSError:
        return False


def read_nvidia_pickle(path: "str | os.PathLike[str]") -> Any:
    """Unpickle a network pickle as data: persisted objects become :class:`PersistentRecord`.

    No code from the file runs: only tensor rebuilders, storages (read with
    ``torch.load(weights_only=True)``), persistence records, EasyDict, OrderedDict, set and
    numpy number scalars are admitted, each through a stand-in.

    Returns:
        The top-level object, usually ``{"G_ema": PersistentRecord, "G": ..., ...}``.
    Raises:
        CheckpointError: missing, truncated or corrupt file, or a refused global (named).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "file not found" if not path.exists() else "not a regular file")
    try:
        with open(path, "rb") as f:
            return _RecordUnpickler(f).load()
    except _Refused as e:
        raise CheckpointError(path, str(e)) from None
    except (EOFError, pickle.UnpicklingError) as e:
        detail = str(e) or type(e).__name__
        raise CheckpointError(path, f"truncated or corrupt pickle ({detail}); download the file again") from None
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RuntimeError, MemoryError) as e:
        raise CheckpointError(path, f"malformed network pickle ({type(e).__name__}: {str(e)[:200]})") from None


def select_generator(obj: Any, *, source: "str | os.PathLike[str] | None" = None) -> PersistentRecord:
    """The generator record of an unpickled network pickle: ``G_ema`` if present, else ``G``."""
    if isinstance(obj, PersistentRecord):
        rec = obj
    elif isinstance(obj, Mapping):
        rec = obj.get("G_ema")
        if rec is None and obj.get("G") is not None:
            log.warning("%s: no 'G_ema' in the pickle; using the training generator 'G'", source or "pickle")
            rec = obj.get("G")
        if rec is None:
            raise CheckpointError(source, f"no 'G_ema' or 'G' generator in the pickle (found keys {list(obj)[:8]})")
    else:
        raise CheckpointError(source, f"not a network pickle: the top-level object is a {type(obj).__name__}")
    if not isinstance(rec, PersistentRecord) or rec.class_name != "Generator":
        what = rec.class_name if isinstance(rec, PersistentRecord) else type(rec).__name__
        raise CheckpointError(source, f"the generator entry is a {what}, expected a stylegan2-ada-pytorch Generator")
    return rec


# ----------------------------------------------------------------------------------------
# Conversion to the rosinality layout
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GeneratorSpec:
    """What the checks below established about a Generator record."""

    resolution: int
    z_dim: int
    w_dim: int
    num_ws: int
    n_mlp: int
    channels: dict[int, int]
    conv_clamp: float | None
    num_fp16_res: int


def _as_float(value: Any, what: str, source: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CheckpointError(source, f"{what} is {value!r}, expected a number")
    return float(value)


def inspect_generator(G: PersistentRecord, source: Any) -> GeneratorSpec:
    """Check that the record is a generator facelib can represent exactly; refuse clearly otherwise."""
    def fail(problem: str) -> CheckpointError:
        return CheckpointError(source, problem)

    a = G.attrs
    for key in ("z_dim", "w_dim", "img_resolution", "num_ws"):
        if not isinstance(a.get(key), int):
            raise fail(f"Generator record lacks {key!r}: not a stylegan2-ada-pytorch Generator")
    if a.get("c_dim", 0):
        raise fail(f"conditional generator (c_dim={a['c_dim']}): facelib's generator has no class input")
    if a.get("img_channels", 3) != 3:
        raise fail(f"img_channels={a['img_channels']}: only RGB generators are supported")
    if a["z_dim"] != a["w_dim"]:
        raise fail(f"z_dim={a['z_dim']} differs from w_dim={a['w_dim']}: facelib's mapping keeps one width")
    try:
        mapping, synthesis = G.child("mapping"), G.child("synthesis")
    except KeyError as e:
        raise fail(f"Generator record has no {e.args[0]!r} network") from None
    n_mlp = mapping.attrs.get("num_layers")
    if not isinstance(n_mlp, int) or n_mlp < 1:
        raise fail(f"mapping network has num_layers={n_mlp!r}")
    for i in range(n_mlp):
        fc = mapping.modules.get(f"fc{i}")
        if fc is None:
            raise fail(f"mapping.fc{i} is missing (num_layers={n_mlp})")
        if fc.attrs.get("activation") != "lrelu":
            raise fail(f"mapping.fc{i} uses activation {fc.attrs.get('activation')!r}; only 'lrelu' is supported")

    res = a["img_resolution"]
    log_res = int(round(math.log2(res))) if res > 0 else 0
    if res < 8 or 2 ** log_res != res:
        raise fail(f"img_resolution={res} is not a power of two >= 8")
    if a["num_ws"] != 2 * log_res - 2:
        raise fail(f"num_ws={a['num_ws']} does not match {res} px (expected {2 * log_res - 2})")

    syn_kwargs = G.init_kwargs.get("synthesis_kwargs") or {}
    arch = syn_kwargs.get("architecture", synthesis.init_kwargs.get("architecture", "skip"))
    fir = make_kernel(1)  # NVIDIA's normalised resample filter, summing to 1
    channels: dict[int, int] = {}
    clamps: set = set()
    for k in range(2, log_res + 1):
        r = 2 ** k
        blk = synthesis.modules.get(f"b{r}")
        if blk is None:
            raise fail(f"synthesis.b{r} is missing")
        block_arch = blk.attrs.get("architecture", arch)
        if block_arch != "skip" or arch != "skip":
            bad = block_arch if block_arch != "skip" else arch
            raise fail(f"synthesis architecture {bad!r} is not supported: facelib (like rosinality's generator) "
                       "implements only 'skip' (StyleGAN2 config-f); 'orig' and 'resnet' have no counterpart")
        layers = ["conv1", "torgb"] if r == 4 else ["conv0", "conv1", "torgb"]
        for name in layers:
            if blk.modules.get(name) is None:
                raise fail(f"synthesis.b{r}.{name} is missing")
        for holder, label in [(blk, f"b{r}")] + [(blk.modules[n], f"b{r}.{n}") for n in layers]:
            taps = holder.init_kwargs.get("resample_filter")
            if taps is not None and [float(t) for t in taps] != list(BLUR_TAPS):
                raise fail(f"synthesis.{label} uses resample filter {list(taps)}; only [1, 3, 3, 1] is supported")
            buf = holder.buffers.get("resample_filter")
            if buf is not None and (tuple(buf.shape) != (4, 4) or not torch.allclose(buf.float(), fir, atol=1e-6)):
                raise fail(f"synthesis.{label}.resample_filter is not the [1, 3, 3, 1] filter; "
                           "only [1, 3, 3, 1] is supported")
        for name in layers:
            layer = blk.modules[name]
            clamps.add(layer.attrs.get("conv_clamp"))
            if name == "torgb":
                continue
            la = layer.attrs
            if la.get("activation", "lrelu") != "lrelu":
                raise fail(f"synthesis.b{r}.{name} uses activation {la.get('activation')!r}; only 'lrelu'")
            if not la.get("use_noise", True):
                raise fail(f"synthesis.b{r}.{name} has no noise input (use_noise=False): not supported")
            want_up = 2 if name == "conv0" else 1
            if la.get("up", 1) != want_up:
                raise fail(f"synthesis.b{r}.{name} has up={la.get('up')}, expected {want_up}")
            if abs(_as_float(la.get("act_gain", SQRT2), f"b{r}.{name}.act_gain", source) - SQRT2) > 1e-6:
                raise fail(f"synthesis.b{r}.{name}.act_gain={la.get('act_gain')} differs from sqrt(2)")
            weight = layer.parameters.get("weight")
            if weight is None or weight.ndim != 4 or tuple(weight.shape[2:]) != (3, 3) or la.get("padding", 1) != 1:
                raise fail(f"synthesis.b{r}.{name} is not a 3x3 convolution with padding 1")
        out = blk.modules["conv1"].parameters.get("weight")
        channels[r] = int(out.shape[0])
    if len(clamps) > 1:
        raise fail(f"layers use different conv_clamp values {sorted(map(str, clamps))}: not supported")
    clamp = next(iter(clamps), None)
    conv_clamp = None if clamp is None else _as_float(clamp, "conv_clamp", source)
    num_fp16 = syn_kwargs.get("num_fp16_res", synthesis.init_kwargs.get("num_fp16_res", 0)) or 0
    return GeneratorSpec(resolution=res, z_dim=a["z_dim"], w_dim=a["w_dim"], num_ws=a["num_ws"], n_mlp=n_mlp,
                          channels=channels, conv_clamp=conv_clamp, num_fp16_res=int(num_fp16))


def _name_table(spec: GeneratorSpec) -> list[tuple[str | None, str, str]]:
    """Rows (nvidia name or None for a rebuilt buffer, rosinality name, conversion), in rosinality order."""
    rows: list[tuple[str | None, str, str]] = []
    for i in range(spec.n_mlp):
        rows.append((f"mapping.fc{i}.weight", f"style.{i + 1}.weight", "mapping_weight"))
        rows.append((f"mapping.fc{i}.bias", f"style.{i + 1}.bias", "mapping_bias"))
    rows.append(("synthesis.b4.const", "input.input", "const"))

    def affine(nv: str, ro: str) -> None:
        rows.append((f"{nv}.affine.weight", f"{ro}.conv.modulation.weight", "affine_weight"))
        rows.append((f"{nv}.affine.bias", f"{ro}.conv.modulation.bias", "affine_bias"))

    def conv(nv: str, ro: str, noise_index: int, upsample: bool) -> None:
        rows.append((f"{nv}.weight", f"{ro}.conv.weight", "conv_weight"))
        if upsample:
            rows.append((None, f"{ro}.conv.blur.kernel", "fir_kernel"))
        affine(nv, ro)
        rows.append((f"{nv}.noise_strength", f"{ro}.noise.weight", "noise_strength"))
        rows.append((f"{nv}.bias", f"{ro}.activate.bias", "plain"))
        rows.append((f"{nv}.noise_const", f"noises.noise_{noise_index}", "noise_const"))

    def torgb(nv: str, ro: str, upsample: bool) -> None:
        rows.append((f"{nv}.bias", f"{ro}.bias", "rgb_bias"))
        if upsample:
            rows.append((None, f"{ro}.upsample.kernel", "fir_kernel"))
        rows.append((f"{nv}.weight", f"{ro}.conv.weight", "rgb_weight"))
        affine(nv, ro)

    conv("synthesis.b4.conv1", "conv1", 0, False)
    torgb("synthesis.b4.torgb", "to_rgb1", False)
    log_res = int(math.log2(spec.resolution))
    for k in range(3, log_res + 1):
        r, j = 2 ** k, k - 3
        conv(f"synthesis.b{r}.conv0", f"convs.{2 * j}", 2 * k - 5, True)
        conv(f"synthesis.b{r}.conv1", f"convs.{2 * j + 1}", 2 * k - 4, False)
    for k in range(3, log_res + 1):
        torgb(f"synthesis.b{2 ** k}.torgb", f"to_rgbs.{k - 3}", True)
    # rosinality lists its noise buffers last
    rows.sort(key=lambda row: row[1].startswith("noises."))
    return rows


def _gain_ratio(have: float, want: float) -> float | None:
    """have/want, or None when they agree to float precision (so values are copied bit-exactly)."""
    ratio = have / want
    return None if abs(ratio - 1.0) < 1e-6 else ratio


def nvidia_to_rosinality(G: PersistentRecord, *, source: "str | os.PathLike[str] | None" = None) -> dict[str, Any]:
    """Map a stylegan2-ada-pytorch Generator record onto facelib's (rosinality's) checkpoint layout.

    Every NVIDIA parameter and buffer must be consumed by the name table (``resample_filter``
    buffers are checked, then dropped); anything left over is an error, as are missing names
    and shape mismatches. Gains are converted so the network computes the same function:
    mapping layers to rosinality's lr multiplier 0.01, affine layers to 1/sqrt(w_dim), and
    ToRGB's 1/sqrt(I) style gain moved onto the weight (a no-op for NVIDIA's own gains).

    Args:
        G: the ``Generator`` record (see :func:`select_generator`).
        source: the file, for error messages.
    Returns:
        ``{"g_ema": state dict (float32), "latent_avg": (w_dim,) or absent, "facelib": {"conv_clamp",
        "channels", "n_mlp", "style_dim", "resolution", "source": "nvidia"}}``.
    Raises:
        CheckpointError: unsupported architecture/filter/settings, unmatched or missing names.
    """
    spec = inspect_generator(G, source)
    tensors = G.tensors()
    used: set[str] = set()
    state: dict[str, torch.Tensor] = {}

    def take(name: str) -> torch.Tensor:
        t = tensors.get(name)
        if t is None:
            raise CheckpointError(source, f"generator parameter {name!r} is missing")
        used.add(name)
        return t.detach().to(torch.float32)

    def gains(nv_name: str) -> tuple[float, float, int]:
        layer = G.child(nv_name.rsplit(".", 1)[0])
        w = layer.parameters.get("weight")
        fan_in = int(w.shape[1]) if w is not None and w.ndim >= 2 else 1
        return (_as_float(layer.attrs.get("weight_gain", 1.0), f"{nv_name} weight_gain", source),
                _as_float(layer.attrs.get("bias_gain", 1.0), f"{nv_name} bias_gain", source), fan_in)

    for nv, ro, how in _name_table(spec):
        if how == "fir_kernel":
            state[ro] = make_kernel(2)  # the filter with the gain of a 2x upsampling step (up**2)
            continue
        t = take(nv)
        if how in ("mapping_weight", "affine_weight"):
            weight_gain, _, fan_in = gains(nv)
            lr = _ROSINALITY_LR_MLP if how == "mapping_weight" else 1.0
            ratio = _gain_ratio(weight_gain, lr / math.sqrt(fan_in))
            t = t if ratio is None else t * ratio
        elif how in ("mapping_bias", "affine_bias"):
            _, bias_gain, _ = gains(nv)
            ratio = _gain_ratio(bias_gain, _ROSINALITY_LR_MLP if how == "mapping_bias" else 1.0)
            t = t if ratio is None else t * ratio
        elif how == "rgb_weight":
            weight_gain, _, fan_in = gains(nv)
            ratio = _gain_ratio(weight_gain, 1.0 / math.sqrt(fan_in * t.shape[2] * t.shape[3]))
            t = (t if ratio is None else t * ratio)[None]
        elif how == "conv_weight":
            t = t[None]
        elif how == "const":
            t = t[None]
        elif how == "noise_strength":
            t = t.reshape(1)
        elif how == "noise_const":
            t = t[None, None]
        elif how == "rgb_bias":
            t = t.reshape(1, -1, 1, 1)
        state[ro] = t.clone().contiguous()

    leftover = sorted(n for n in tensors if n not in used and not n.endswith("resample_filter")
                      and n != "mapping.w_avg")
    if leftover:
        more = " ..." if len(leftover) > 6 else ""
        raise CheckpointError(source, f"unmatched generator parameters {leftover[:6]}{more}: "
                                      "not a generator layout facelib can convert")
    _check_shapes(state, spec, source)
    out: dict[str, Any] = {"g_ema": state}
    w_avg = tensors.get("mapping.w_avg")
    if w_avg is not None:
        if w_avg.numel() != spec.w_dim:
            raise CheckpointError(source, f"mapping.w_avg has {w_avg.numel()} values, expected {spec.w_dim}")
        out["latent_avg"] = w_avg.detach().to(torch.float32).reshape(spec.w_dim).clone()
    else:
        log.warning("%s: the mapping network has no w_avg; latent_avg is left unset", source or "pickle")
    if spec.num_fp16_res:
        log.info("%s: %d fp16 resolutions in the source run in float32 here", source or "pickle", spec.num_fp16_res)
    out["facelib"] = {"conv_clamp": spec.conv_clamp, "channels": dict(spec.channels), "n_mlp": spec.n_mlp,
                      "style_dim": spec.w_dim, "resolution": spec.resolution, "source": "nvidia"}
    return out


def _check_shapes(state: Mapping[str, torch.Tensor], spec: GeneratorSpec, source: Any) -> None:
    """Shapes implied by the channel table, so a malformed file fails here and not deep in a forward."""
    D, ch = spec.w_dim, spec.channels
    want: dict[str, tuple[int, ...]] = {}
    for i in range(spec.n_mlp):
        want[f"style.{i + 1}.weight"], want[f"style.{i + 1}.bias"] = (D, D), (D,)
    want["input.input"] = (1, ch[4], 4, 4)

    def conv(ro: str, i: int, o: int, r: int, n: int) -> None:
        want.update({f"{ro}.conv.weight": (1, o, i, 3, 3), f"{ro}.conv.modulation.weight": (i, D),
                     f"{ro}.conv.modulation.bias": (i,), f"{ro}.noise.weight": (1,), f"{ro}.activate.bias": (o,),
                     f"noises.noise_{n}": (1, 1, r, r)})

    def rgb(ro: str, i: int) -> None:
        want.update({f"{ro}.conv.weight": (1, 3, i, 1, 1), f"{ro}.conv.modulation.weight": (i, D),
                     f"{ro}.conv.modulation.bias": (i,), f"{ro}.bias": (1, 3, 1, 1)})

    conv("conv1", ch[4], ch[4], 4, 0)
    rgb("to_rgb1", ch[4])
    for k in range(3, int(math.log2(spec.resolution)) + 1):
        r, j = 2 ** k, k - 3
        conv(f"convs.{2 * j}", ch[r // 2], ch[r], r, 2 * k - 5)
        conv(f"convs.{2 * j + 1}", ch[r], ch[r], r, 2 * k - 4)
        rgb(f"to_rgbs.{j}", ch[r])
    bad = [f"{k} {tuple(state[k].shape)} != {v}" for k, v in want.items() if tuple(state[k].shape) != v]
    if bad:
        raise CheckpointError(source, f"unexpected parameter shapes: {bad[:4]}{' ...' if len(bad) > 4 else ''}")


def load_nvidia_pickle(path: "str | os.PathLike[str]") -> dict[str, Any]:
    """Read a stylegan2-ada-pytorch network pickle (without running its code) into facelib's layout.

    Returns:
        ``{"g_ema": rosinality-layout state dict (float32), "latent_avg": (w_dim,), "facelib":
        {"conv_clamp": float | None, "channels": {res: ch}, "n_mlp", "style_dim", "resolution",
        "source": "nvidia"}}``; ``G_ema`` is used when present, else ``G``.
    Raises:
        CheckpointError: unreadable/unsafe files and generators facelib cannot represent.
    """
    G = select_generator(read_nvidia_pickle(path), source=path)
    return nvidia_to_rosinality(G, source=path)
