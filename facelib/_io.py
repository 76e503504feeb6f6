"""Small file helpers shared by every module that writes results (atomic writes, JSON-safe values)."""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

from .errors import InputError

__all__ = ["atomic_path", "jsonable", "remove_stale_parts", "check_output_file", "check_output_folder",
           "safe_name", "sniff_file"]

#: Image file suffixes PIL writes, for output paths.
WRITABLE_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


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
    # the writer's pid is in the name, so a later run can tell a killed run's leftovers from live writes
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.{os.getpid()}-", suffix=f".part{path.suffix}", dir=path.parent)
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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_stale_parts(folder: "str | os.PathLike[str]") -> list[Path]:
    """Delete the temporary files (``.<stem>.<pid>-XXXX.part<suffix>``) that a killed run left in
    ``folder`` (recursively); files of a writer that is still running are kept. Returns those removed."""
    root = Path(folder)
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if not name.startswith(".") or ".part" not in name:
                continue
            pid = name[1:].rsplit(".part", 1)[0].rpartition(".")[2].partition("-")[0]
            if pid.isdigit() and (int(pid) == os.getpid() or _pid_alive(int(pid))):
                continue  # a write in progress (this process or another running one)
            path = Path(dirpath) / name
            try:
                path.unlink()
                removed.append(path)
            except OSError:
                pass
    return removed


def _folder_problem(path: Path) -> str | None:
    """Why ``path`` cannot be (or become) a writable folder, else None."""
    if path.exists() and not path.is_dir():
        return f"{path} is a file, expected a folder"
    here = path
    while not here.exists() and here.parent != here:
        here = here.parent
    if here.exists() and not here.is_dir():
        return f"{here} is a file, so the folder cannot be created"
    if here.exists() and not os.access(here, os.W_OK | os.X_OK):
        return f"{here} is not writable"
    return None


def check_output_folder(path: "str | os.PathLike[str]", name: str) -> Path:
    """Check that ``path`` can be an output folder (existing and writable, or creatable).

    Raises:
        InputError: ``path`` is a file, a parent is a file, or the folder is not writable (message names ``name``).
    """
    path = Path(path)
    problem = _folder_problem(path)
    if problem:
        raise InputError(f"{name} {path}: {problem}")
    return path


def check_output_file(path: "str | os.PathLike[str]", name: str,
                      suffixes: "tuple[str, ...]" = WRITABLE_IMAGE_SUFFIXES) -> Path:
    """Check an output file path before any work: a known suffix, a parent that is (or can be) a
    writable folder, and not an existing folder.

    Raises:
        InputError: naming ``name`` and the path, e.g. "OUT x.gif: unknown extension '.gif'; use one of ...".
    """
    path = Path(path)
    if not path.suffix:
        raise InputError(f"{name} {path}: no file extension; use one of {', '.join(suffixes)}")
    if path.suffix.lower() not in suffixes:
        raise InputError(f"{name} {path}: unknown extension {path.suffix!r}; use one of {', '.join(suffixes)}")
    if path.is_dir():
        raise InputError(f"{name} {path}: is a folder, expected a file name")
    problem = _folder_problem(path.parent)
    if problem:
        raise InputError(f"{name} {path}: {problem}")
    return path


def safe_name(name: str) -> str:
    """``name`` made safe as a file name: runs of characters other than ``A-Za-z0-9._-`` become
    ``_``, leading/trailing dots and underscores go; "image" when nothing is left."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._") or "image"


#: The first bytes of a legacy (pre-1.6) ``torch.save`` file: pickle protocol 2 and torch's magic number.
LEGACY_TORCH_MAGIC = bytes.fromhex("80028a0a6cfc9c46f9206aa85019")


def sniff_file(path: Path) -> str:
    """Classify a file by its first bytes: 'zip', 'torch-legacy', 'pickle', 'html', 'text', 'empty', 'other'."""
    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        return "empty"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head.startswith(LEGACY_TORCH_MAGIC):
        return "torch-legacy"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    stripped = head.lstrip().lower()
    if stripped.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")):
        return "html"
    try:
        head.decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return "other"
