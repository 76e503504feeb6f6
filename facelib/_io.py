"""Small file helpers shared by every module that writes results (atomic writes, JSON-safe values)."""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

__all__ = ["atomic_path", "jsonable"]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: "str | os.PathLike[str]") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    An interrupted or failed write therefore never leaves a half-written file at ``path``.
    The temporary name keeps the suffix, so writers that pick a format from it still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".part{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp creates 0600; give the result the usual permissions
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def jsonable(x: Any) -> Any:
    """JSON-ready copy: dataclasses and mappings become dicts, tuples lists, paths strings,
    non-finite floats None (JSON has no inf / nan), numpy and 0-d tensor scalars numbers, the rest strings."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: jsonable(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if hasattr(x, "item") and getattr(x, "ndim", None) == 0:  # numpy / torch scalars
        x = x.item()
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, (str, int, bool)) or x is None:
        return x
    return str(x)
