"""What the notebooks need from the Jupyter kernel they run in, and what to install or attach.

A hosted kernel (Kaggle's image: torch, ipywidgets, papermill, jupyterlab, kagglehub and
usually dlib) lacks some of facelib's requirements, typically ``lpips`` and
``face_recognition_models``. :func:`missing_packages` finds out which, without importing them
(``importlib.util.find_spec``), and returns the ``%pip install -q`` arguments for exactly those:

* with internet: the PyPI names;
* without internet: the same names installed from wheels found in attached datasets
  (``--no-index --find-links <folder>``), when there are any; for everything else a warning
  names the file or dataset to attach (or to turn the session's internet on).

The dlib landmark model needs no package when an attached dataset (or ``data/``, or
``$FACELIB_DATA``) holds ``shape_predictor_68_face_landmarks.dat``. This module imports
only the standard library and :mod:`facelib.data` (itself light), so the notebooks' first cell
can call it before anything heavy is imported.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .paths import search_dirs

__all__ = ["Requirement", "REQUIREMENTS", "LANDMARK_MODEL", "KernelCheck", "check_kernel", "missing_packages"]

log = logging.getLogger(__name__)

#: The dlib 68-point landmark model file (alignment); ``face_recognition_models`` ships it.
LANDMARK_MODEL = "shape_predictor_68_face_landmarks.dat"


@dataclass(frozen=True)
class Requirement:
    """One package the notebooks import: its module, its PyPI name, and what it is for."""

    module: str
    pip: str
    purpose: str


#: What the notebooks import (requirements.txt lists the versions).
REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("torch", "torch", "every model"),
    Requirement("torchvision", "torchvision", "VGG16 for LPIPS"),
    Requirement("numpy", "numpy", "arrays"),
    Requirement("PIL", "pillow", "images"),
    Requirement("matplotlib", "matplotlib", "plots"),
    Requirement("tqdm", "tqdm", "progress bars"),
    Requirement("scipy", "scipy", "alignment"),
    Requirement("skimage", "scikit-image", "sample photos"),
    Requirement("ipywidgets", "ipywidgets", "the interactive cells"),
    Requirement("lpips", "lpips", "the LPIPS loss of projection and face swap"),
    Requirement("dlib", "dlib-bin", "face detection and landmarks"),
    Requirement("face_recognition_models", "face_recognition_models",
                f"the dlib models ({LANDMARK_MODEL} and the face-recognition ResNet)"),
)

_PYPI = ("pypi.org", 443)


@dataclass(frozen=True)
class KernelCheck:
    """The outcome of :func:`check_kernel`.

    Attributes:
        missing: the requirements this kernel lacks (PyPI names), in :data:`REQUIREMENTS` order.
        online: whether PyPI could be reached (None: not tried, nothing was missing).
        install: the arguments for ``%pip install -q`` (empty: nothing to install, or nothing installable).
        attach: one line per requirement that cannot be installed here, saying what to attach.
    """

    missing: tuple[str, ...]
    online: bool | None
    install: tuple[str, ...]
    attach: tuple[str, ...]


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _online(timeout: float = 3.0) -> bool:
    """True when PyPI answers a TCP connection within ``timeout`` seconds."""
    try:
        with socket.create_connection(_PYPI, timeout=timeout):
            return True
    except OSError:
        return False


def _search_dirs() -> list[Path]:
    return search_dirs(package_models=False)


def _find_file(name: str, dirs: Sequence[Path]) -> Path | None:
    return next((d / name for d in dirs if (d / name).is_file()), None)


def _wheel_dir(pip_name: str, dirs: Sequence[Path]) -> Path | None:
    """A folder holding a wheel or source archive of ``pip_name`` (``lpips-0.1.4-py3-none-any.whl``)."""
    stem = pip_name.lower().replace("-", "_")
    for d in dirs:
        try:
            names = [n.lower().replace("-", "_") for n in os.listdir(d)]
        except OSError:
            continue
        if any(n.startswith(stem + "_") and n.endswith((".whl", ".tar.gz", ".zip")) for n in names):
            return d
    return None


def _attach_hint(req: Requirement) -> str:
    if req.module == "face_recognition_models":
        return (f"{req.pip} ({req.purpose}): no internet; attach a Kaggle dataset holding {LANDMARK_MODEL} "
                "(dlib.net/files, bunzip2-decompressed; facelib finds it by name under /kaggle/input) or the "
                f"package's wheel/source archive, or turn the session's internet on")
    return (f"{req.pip} ({req.purpose}): no internet; attach a Kaggle dataset holding its wheel "
            f"(`pip download {req.pip} --no-deps -d wheels/` on a machine with internet, upload wheels/), "
            "or turn the session's internet on")


def check_kernel(*, importable: Callable[[str], bool] | None = None, online: bool | None = None,
                 search: Sequence["str | os.PathLike[str]"] | None = None) -> KernelCheck:
    """Which requirements this kernel lacks and how to get them (nothing is installed here).

    ``face_recognition_models`` counts as missing only when :data:`LANDMARK_MODEL` is not found
    by name in the data folders (``$FACELIB_DATA``, ``/kaggle/input``, ``data/``).

    Args:
        importable: ``module -> bool`` (default: ``importlib.util.find_spec``); for tests.
        online: whether PyPI is reachable (default: tried with a 3 s connection, only when
            something is missing).
        search: folders to search for the landmark model and for wheels (default: facelib's
            data folders, :func:`facelib.paths.search_dirs`).
    Returns:
        A :class:`KernelCheck`.
    """
    have = importable or _importable
    dirs = [Path(d) for d in search] if search is not None else _search_dirs()
    missing: list[Requirement] = []
    for req in REQUIREMENTS:
        if have(req.module):
            continue
        if req.module == "face_recognition_models" and _find_file(LANDMARK_MODEL, dirs) is not None:
            continue
        missing.append(req)
    if not missing:
        return KernelCheck((), None, (), ())
    reachable = _online() if online is None else bool(online)
    if reachable:
        return KernelCheck(tuple(r.pip for r in missing), True, tuple(r.pip for r in missing), ())
    local: dict[Path, list[str]] = {}
    attach: list[str] = []
    for req in missing:
        where = _wheel_dir(req.pip, dirs)
        if where is not None:
            local.setdefault(where, []).append(req.pip)
        else:
            attach.append(_attach_hint(req))
    install: list[str] = []
    if local:
        install = ["--no-index", *[a for d in local for a in ("--find-links", str(d))],
                   *[p for names in local.values() for p in names]]
    return KernelCheck(tuple(r.pip for r in missing), False, tuple(install), tuple(attach))


def missing_packages(**options) -> list[str]:
    """The ``%pip install -q`` arguments for what this kernel lacks ([] when nothing can or need be
    installed); what cannot be installed is logged as a warning naming the file or dataset to attach.

    The notebooks' first cell runs ``%pip install -q {" ".join(MISSING)}`` when the list is not
    empty. ``options`` go to :func:`check_kernel`.
    """
    check = check_kernel(**options)
    if check.install:
        log.warning("this kernel lacks %s; installing: pip install -q %s", ", ".join(check.missing),
                    " ".join(check.install))
    for line in check.attach:
        log.warning("%s", line)
    return list(check.install)
