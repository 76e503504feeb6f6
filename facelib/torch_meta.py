"""Reading the structure of a ``torch.save`` file without loading its tensors or running its code.

Only the small ``<archive>/data.pkl`` member is read, with a restricted unpickler that knows
a dozen names (tensor rebuild functions, storage types, ``OrderedDict``) and turns tensors
into shape-only stand-ins (:class:`TensorMeta`). Legacy (pre-1.6) files are read the same
way: their object pickle comes before the tensor bytes.
"""
from __future__ import annotations

import io
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._io import sniff_file
from .errors import CheckpointError

__all__ = ["TensorMeta", "read_torch_metadata", "human_size"]

_DATA_PKL_LIMIT = 64 << 20        # a data.pkl larger than this is not a state dict worth scanning


def human_size(n: int) -> str:
    """A byte count for people: "512 B", "1.5 KB", "3.2 MB", "1.1 GB"."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


# ========================================================================================
# Reading torch files without loading them
# ========================================================================================

@dataclass(frozen=True)
class TensorMeta:
    """Stand-in for a tensor found in a ``torch.save`` pickle: its shape and storage type only."""

    shape: tuple[int, ...]
    dtype: str = "?"

    def dim(self) -> int:
        return len(self.shape)


class _Opaque:
    """Stand-in for an allowed non-tensor object (argparse.Namespace, numpy scalars, ...)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _StateDict(dict):
    """``collections.OrderedDict`` stand-in; ``state_dict()`` pickles carry a ``_metadata`` attribute."""

    def __setstate__(self, state: Any) -> None:
        self.metadata = state


def _opaque(*args: Any, **kwargs: Any) -> _Opaque:
    return _Opaque()


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any = None, *args: Any) -> TensorMeta:
    dtype = storage if isinstance(storage, str) else "?"
    return TensorMeta(tuple(int(s) for s in size), dtype)


def _rebuild_parameter(data: Any, *args: Any) -> Any:
    return data


def _rebuild_from_type(func: Any, type_: Any, args: Any, state: Any = None) -> Any:
    return func(*args) if callable(func) else _Opaque()


class _MetaUnpickler(pickle.Unpickler):
    """Restricted unpickler: builds dicts/lists/scalars and :class:`TensorMeta`; refuses the rest."""

    _ALLOWED: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): _StateDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
        ("torch", "Size"): tuple,
        ("argparse", "Namespace"): _Opaque,
        ("torch", "device"): _opaque,
        ("numpy.core.multiarray", "scalar"): _opaque,
        ("numpy._core.multiarray", "scalar"): _opaque,
        ("numpy", "dtype"): _opaque,
        ("_codecs", "encode"): _opaque,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
    }

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name.endswith("Storage"):
            return name  # a storage type: keep its name as the dtype tag
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "torch" and name in ("float32", "float16", "bfloat16", "float64", "int64", "uint8"):
            return name
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")

    def persistent_load(self, pid: Any) -> Any:
        # zip format: ('storage', storage_type, key, location, numel); legacy adds view metadata
        if isinstance(pid, tuple) and pid and pid[0] == "storage" and len(pid) >= 2:
            return pid[1] if isinstance(pid[1], str) else "?"
        return "?"


def read_torch_metadata(path: "str | os.PathLike[str]") -> Any:
    """The object structure of a ``torch.save`` file, with :class:`TensorMeta` leaves.

    Reads only the pickle part (zip member ``<archive>/data.pkl``, or the object pickle at
    the start of a legacy file); tensor bytes are never read and nothing from the file is
    executed. Use it to see what a checkpoint holds without loading it.

    Raises:
        CheckpointError: not a torch file, truncated, or containing objects outside the
            small allow-list (see :class:`_MetaUnpickler`).
    """
    path = Path(path)
    kind = sniff_file(path)
    try:
        if kind == "zip":
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
                if not names:
                    raise CheckpointError(path, "a zip file without <archive>/data.pkl: not a torch.save file")
                info = zf.getinfo(names[0])
                if info.file_size > _DATA_PKL_LIMIT:
                    raise CheckpointError(path, f"data.pkl is {human_size(info.file_size)}: too large to be a state dict")
                blob = zf.read(info)
            return _MetaUnpickler(io.BytesIO(blob)).load()
        if kind == "torch-legacy":
            with open(path, "rb") as f:
                up = _MetaUnpickler(f)
                up.load()                 # magic number
                up.load()                 # protocol version
                up.load()                 # sys info
                return _MetaUnpickler(f).load()
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, TypeError, AttributeError,
            IndexError, KeyError, OSError, RecursionError) as e:
        raise CheckpointError(path, f"cannot be read as a torch file: {type(e).__name__}: {e}") from None
    raise CheckpointError(path, f"not a torch.save file (the header looks like {kind!r})")
