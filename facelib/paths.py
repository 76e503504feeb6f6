"""Where facelib looks for files: the repository root and the folders searched for weights.

The lowest layer of the package: it imports nothing of facelib. ``$FACELIB_DATA``
(``os.pathsep``-separated), Kaggle datasets under ``/kaggle/input/``, ``./data``, the
repository's ``data/`` and the ``models/`` folder of the ``face_recognition_models`` package.
"""
from __future__ import annotations

import glob
import importlib.util
import os
from pathlib import Path
from typing import Sequence

__all__ = ["IMAGE_EXTENSIONS", "repo_root", "package_models_dir", "env_dirs", "kaggle_dirs", "search_dirs"]

#: Photo file extensions facelib reads (compared lower-case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


def repo_root() -> Path:
    """The folder holding the ``facelib`` package (the repository root of a clone)."""
    return Path(__file__).resolve().parents[1]


def package_models_dir() -> Path | None:
    """``face_recognition_models/models`` (dlib models), located without importing the package.

    Its ``__init__`` imports ``pkg_resources``, which recent setuptools no longer ship.
    """
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        return None
    for loc in (spec.submodule_search_locations or []) if spec is not None else []:
        models = Path(loc) / "models"
        if models.is_dir():
            return models
    return None


def env_dirs() -> list[Path]:
    """The folders named by ``$FACELIB_DATA`` (``os.pathsep``-separated)."""
    return [Path(e).expanduser() for e in os.environ.get("FACELIB_DATA", "").split(os.pathsep) if e]


def kaggle_dirs(levels: int = 1) -> list[Path]:
    """Kaggle datasets (``/kaggle/input/<dataset>``) and, with ``levels`` > 1, the folders below, level by level."""
    return [Path(p) for k in range(1, levels + 1) for p in sorted(glob.glob("/kaggle/input" + "/*" * k))
            if os.path.isdir(p)]


def search_dirs(*, extra: Sequence["str | os.PathLike[str]"] = (), package_models: bool = True) -> list[Path]:
    """Folders searched for a weight file by name, in order, without duplicates.

    ``$FACELIB_DATA`` (``os.pathsep``-separated), Kaggle datasets (``/kaggle/input/<dataset>/``
    and up to two levels below, where datasets often nest their files), ``./data``, the
    repository's ``data/``, then ``extra``, then the ``face_recognition_models`` models folder.
    """
    dirs = [*env_dirs(), *kaggle_dirs(3), Path.cwd() / "data", repo_root() / "data",
            *(Path(e).expanduser() for e in extra)]
    models = package_models_dir() if package_models else None
    if models is not None:
        dirs.append(models)
    return list(dict.fromkeys(dirs))
