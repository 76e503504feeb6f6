"""dlib models: locating the ``.dat`` files and loading them once (cached).

dlib is an optional dependency, imported only inside :func:`import_dlib`; every loader
goes through it, so a missing dlib becomes a :class:`~facelib.errors.DependencyError`.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

from .errors import DependencyError
from .paths import search_dirs

__all__ = ["PREDICTOR_68", "PREDICTOR_5", "CNN_DETECTOR", "FACE_RECOGNIZER", "dlib_model_path", "import_dlib",
           "hog_detector", "cnn_detector", "shape_predictor", "face_recognizer", "landmark_model"]

#: The 68-point landmark predictor the FFHQ alignment uses.
PREDICTOR_68 = "shape_predictor_68_face_landmarks.dat"
#: The 5-point landmark predictor dlib's face-recognition ResNet expects.
PREDICTOR_5 = "shape_predictor_5_face_landmarks.dat"
#: The CNN (MMOD) face detector.
CNN_DETECTOR = "mmod_human_face_detector.dat"
#: The face-recognition ResNet (128-d descriptors).
FACE_RECOGNIZER = "dlib_face_recognition_resnet_model_v1.dat"


def dlib_model_path(name: str, user_path: "str | os.PathLike[str] | None" = None) -> Path:
    """Locate a dlib model file such as ``shape_predictor_68_face_landmarks.dat``.

    Looked up in this order: ``user_path`` (the file itself, or a folder holding ``name``);
    the folders in ``$FACELIB_DATA`` (``os.pathsep``-separated); Kaggle datasets
    (``/kaggle/input/*/``, up to two levels deeper); ``./data/`` and the repository's ``data/``;
    finally the ``models/`` folder of the ``face_recognition_models`` package, which ships
    the 68- and 5-point predictors, the mmod CNN detector and the face-recognition ResNet.

    Args:
        name: file name, e.g. ``"dlib_face_recognition_resnet_model_v1.dat"``.
        user_path: explicit file or folder; when given it must exist and is used alone.
    Returns:
        Path of an existing file.
    Raises:
        DependencyError: the file was not found (the message lists where it looked).
    """
    if user_path is not None:
        p = Path(user_path).expanduser()
        if p.is_dir():
            p = p / name
        if not p.is_file():
            raise DependencyError(f"{p}: dlib model file not found (expected {name})")
        return p
    dirs = search_dirs()
    for d in dirs:
        p = d / name
        if p.is_file():
            return p
    shown = ", ".join(str(d) for d in dirs) or "(none)"
    raise DependencyError(
        f"{name}: dlib model file not found; looked in {shown}. Install the "
        f"'face_recognition_models' package, or put the (bz2-decompressed) file in ./data/ "
        f"or a folder named by $FACELIB_DATA")


def import_dlib(purpose: str = "face alignment"):
    """The ``dlib`` module; ``purpose`` names what needed it in the error when it is missing.

    Raises:
        DependencyError: dlib is not installed.
    """
    try:
        import dlib  # optional heavy dependency, imported only when a dlib model is used
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise DependencyError(
            f"{purpose} needs dlib: pip install dlib-bin (prebuilt) or dlib") from e
    return dlib


@functools.lru_cache(maxsize=None)
def hog_detector():
    """dlib's HOG frontal face detector (cached)."""
    return import_dlib().get_frontal_face_detector()


@functools.lru_cache(maxsize=4)
def cnn_detector(path: str):
    """dlib's CNN (MMOD) face detector loaded from ``path`` (cached per path)."""
    return import_dlib().cnn_face_detection_model_v1(path)


@functools.lru_cache(maxsize=4)
def shape_predictor(path: str):
    """A dlib landmark predictor loaded from ``path`` (cached per path)."""
    return import_dlib().shape_predictor(path)


@functools.lru_cache(maxsize=2)
def face_recognizer(path: str):
    """dlib's face-recognition ResNet loaded from ``path`` (cached per path)."""
    return import_dlib().face_recognition_model_v1(path)


def landmark_model(predictor_path: "str | os.PathLike[str] | None" = None):
    """The (cached) 68-point shape predictor, located by :func:`dlib_model_path`."""
    return shape_predictor(str(dlib_model_path(PREDICTOR_68, predictor_path)))
