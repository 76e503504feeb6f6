"""An independent judge of face identity and pose: dlib.

dlib's face-recognition ResNet (128-d descriptors, 0.6 same-person threshold), its 68-point
landmarks and a landmark-based pose proxy. It shares nothing with the ArcFace networks of
:mod:`facelib.identity`, so it can judge results that were optimised against them. dlib itself
is imported only when a function here runs (through :mod:`facelib.align`'s model cache).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .align import detect_faces, load_image, predict_landmarks
from .dlib_models import dlib_model_path, face_recognizer, import_dlib, shape_predictor
from .errors import check_shape, InputError, NoFaceError, RangeError, ShapeError
from .grids import to_pil

__all__ = [
    "DLIB_SAME_PERSON_THRESHOLD",
    "FFHQ_FACE_BOX",
    "DlibDescriptors",
    "DlibLandmarks",
    "dlib_descriptors",
    "dlib_distance",
    "dlib_landmarks",
    "pose_proxy",
]


#: dlib's documented decision threshold: descriptors closer than this are the same person
#: (dlib face_recognition model v1; 99.38% on LFW).
DLIB_SAME_PERSON_THRESHOLD = 0.6

#: dlib HOG face box on an FFHQ-aligned image, as fractions of the side (left, top, right,
#: bottom). Mean of the detector's boxes over 11 real photos aligned with the FFHQ recipe at
#: 64-1024 px (per-coordinate std 0.03). Used when the detector finds no face.
FFHQ_FACE_BOX = (0.20, 0.29, 0.79, 0.885)

_DLIB_MODELS = {
    "descriptor": "dlib_face_recognition_resnet_model_v1.dat",
    "landmarks5": "shape_predictor_5_face_landmarks.dat",
}


Box = tuple[int, int, int, int]  # (left, top, right, bottom), inclusive pixel corners, dlib convention


def _judge_models() -> tuple[Any, Any]:
    """dlib's 5-point predictor and face-recognition ResNet, through facelib.align's model cache."""

    return (shape_predictor(os.fspath(dlib_model_path(_DLIB_MODELS["landmarks5"]))),
            face_recognizer(os.fspath(dlib_model_path(_DLIB_MODELS["descriptor"]))))


def _check_fallback(fallback: str | None) -> None:
    if fallback not in ("ffhq", None):
        raise InputError(f"fallback: expected 'ffhq' or None, got {fallback!r}")


def _as_uint8_images(images: Any, name: str = "images") -> list[np.ndarray]:
    """Photos / uint8 arrays / [-1, 1] tensors -> list of (H, W, 3) uint8 RGB arrays."""
    from PIL import Image


    if isinstance(images, (str, os.PathLike, Image.Image)):
        return [np.ascontiguousarray(np.asarray(load_image(images), dtype=np.uint8))]
    if isinstance(images, torch.Tensor):
        x = images.detach().cpu()
        if x.ndim == 3:
            x = x[None]
        check_shape(name, x, (None, 3, None, None))
        if x.dtype == torch.uint8:
            return [np.ascontiguousarray(a.permute(1, 2, 0).numpy()) for a in x]
        x = x.float()
        lo, hi = (float(x.min()), float(x.max())) if x.numel() else (0.0, 0.0)
        if not (lo >= -1.5 and hi <= 1.5):
            raise RangeError(f"{name}: float tensors must be in [-1, 1], got values in [{lo:.3g}, {hi:.3g}]")
        return [np.array(im, dtype=np.uint8) for im in to_pil(x)]
    if isinstance(images, np.ndarray):
        if images.ndim == 4:
            return [np.ascontiguousarray(np.asarray(load_image(a), dtype=np.uint8)) for a in images]
        return [np.ascontiguousarray(np.asarray(load_image(images), dtype=np.uint8))]
    if isinstance(images, (list, tuple)):
        out: list[np.ndarray] = []
        for i, item in enumerate(images):
            out.extend(_as_uint8_images(item, f"{name}[{i}]"))
        return out
    raise InputError(f"{name}: expected image paths, PIL images, uint8 arrays or tensors in [-1, 1], "
                     f"got {type(images).__name__}")


def _find_face(img: np.ndarray, fallback: str | None, index: int) -> tuple[Box, bool]:
    """Largest HOG detection (upsample 1, as in alignment) or the FFHQ box. Returns (box, detected)."""

    boxes = detect_faces(img, detector="hog", upsample=1)  # largest first
    if boxes:
        return tuple(int(v) for v in boxes[0]), True
    if fallback is None:
        raise NoFaceError(f"images[{index}]: dlib's detector found no face ({img.shape[1]}x{img.shape[0]})")
    h, w = img.shape[:2]
    l, t, r, b = FFHQ_FACE_BOX
    return (round(l * w), round(t * h), round(r * w) - 1, round(b * h) - 1), False


@dataclass(frozen=True, eq=False)
class DlibDescriptors:
    """Output of :func:`dlib_descriptors`.

    Attributes:
        descriptors: (N, 128) float64 dlib face descriptors.
        boxes: per image, the face box used, (left, top, right, bottom) in pixels.
        detected: per image, True when dlib's HOG detector found the face, False when the
            fixed FFHQ box (:data:`FFHQ_FACE_BOX`) was used instead.
    """

    descriptors: np.ndarray
    boxes: tuple[Box, ...]
    detected: tuple[bool, ...]

    def __len__(self) -> int:
        return len(self.descriptors)


@dataclass(frozen=True, eq=False)
class DlibLandmarks:
    """Output of :func:`dlib_landmarks`.

    Attributes:
        points: (N, 68, 2) float64 (x, y) pixel positions, iBUG 300-W order.
        boxes: per image, the face box used, (left, top, right, bottom).
        detected: per image, True when detected, False when the FFHQ box was used.
    """

    points: np.ndarray
    boxes: tuple[Box, ...]
    detected: tuple[bool, ...]

    def __len__(self) -> int:
        return len(self.points)


def dlib_descriptors(images: Any, *, fallback: str | None = "ffhq", num_jitters: int = 0) -> DlibDescriptors:
    """dlib face-recognition descriptors: an identity measure independent of ArcFace.

    Per image: dlib's HOG detector (upsample 1) finds the largest face; when it finds none,
    the fixed box an FFHQ-aligned image has (``fallback="ffhq"``) is used, or NoFaceError is
    raised (``fallback=None``). dlib's 5-point predictor then places the face and its ResNet
    computes the 128-d descriptor. Not differentiable.

    Args:
        images: a PIL image (EXIF orientation applied), a (H, W, 3) or (N, H, W, 3) uint8
            RGB array, a (3, H, W) or (N, 3, H, W) float tensor in [-1, 1], or a list of these.
        fallback: "ffhq" or None (see above).
        num_jitters: dlib's resampling count (0: one pass; larger is slower and slightly steadier).
    Returns:
        :class:`DlibDescriptors` with (N, 128) descriptors, boxes and the detected flags.
    Raises:
        DependencyError: dlib or the face_recognition_models files are missing.
        NoFaceError: no face and ``fallback=None``.
        InputError: unsupported image type, shape or range.
    """

    _check_fallback(fallback)
    arrays = _as_uint8_images(images)
    dlib = import_dlib("the identity judge")
    predictor, model = _judge_models()
    desc, boxes, detected = [], [], []
    for i, img in enumerate(arrays):
        box, found = _find_face(img, fallback, i)
        shape = predictor(img, dlib.rectangle(*box))
        desc.append(np.asarray(model.compute_face_descriptor(img, shape, int(num_jitters)), dtype=np.float64))
        boxes.append(box)
        detected.append(found)
    out = np.stack(desc) if desc else np.zeros((0, 128))
    return DlibDescriptors(out, tuple(boxes), tuple(detected))


def dlib_landmarks(images: Any, *, fallback: str | None = "ffhq") -> DlibLandmarks:
    """dlib's 68-point landmarks on the largest face (HOG detector, upsample 1).

    Args:
        images: as for :func:`dlib_descriptors`.
        fallback: "ffhq" (use :data:`FFHQ_FACE_BOX` when no face is detected) or None (raise).
    Returns:
        :class:`DlibLandmarks` with (N, 68, 2) points.
    Raises:
        DependencyError, NoFaceError, InputError: as for :func:`dlib_descriptors`.
    """

    _check_fallback(fallback)
    arrays = _as_uint8_images(images)
    pts, boxes, detected = [], [], []
    for i, img in enumerate(arrays):
        box, found = _find_face(img, fallback, i)
        pts.append(predict_landmarks(img, box).astype(np.float64))
        boxes.append(box)
        detected.append(found)
    out = np.stack(pts) if pts else np.zeros((0, 68, 2))
    return DlibLandmarks(out, tuple(boxes), tuple(detected))


def _descriptor_array(x: Any, name: str) -> np.ndarray:
    arr = x.descriptors if isinstance(x, DlibDescriptors) else np.asarray(
        x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None]
    check_shape(name, arr, (None, 128))
    return arr


def dlib_distance(a: Any, b: Any) -> np.ndarray:
    """Euclidean distance between dlib descriptors; below :data:`DLIB_SAME_PERSON_THRESHOLD` = same person.

    Args:
        a, b: :class:`DlibDescriptors` or (N, 128) / (128,) arrays; N must match or be 1 (broadcast).
    Returns:
        (N,) float64 distances.
    """
    x, y = _descriptor_array(a, "a"), _descriptor_array(b, "b")
    if len(x) != len(y) and 1 not in (len(x), len(y)):
        raise ShapeError(f"dlib_distance: batch sizes {len(x)} and {len(y)} do not broadcast",
                         actual_shape=y.shape, expected_shape=(len(x), 128))
    return np.linalg.norm(x - y, axis=1)


# Nose tip below the eye line, in inter-ocular distances, on frontal faces (dlib 68-point
# landmarks on frontal photos of the test set: 0.52-0.56).
_NEUTRAL_NOSE_DROP = 0.55


def pose_proxy(landmarks68: "np.ndarray | torch.Tensor | DlibLandmarks") -> tuple[Any, Any]:
    """Head-pose proxies from 68-point landmark geometry (no 3-D model).

    With E the midpoint of the eye centres (points 36-41, 42-47), M the mouth-corner midpoint
    (48, 54), N the nose tip (30), d the inter-ocular distance, u the unit eye-to-eye axis and
    v its perpendicular pointing down the face:

    * yaw: horizontal offset of N from the line E-M (at N's height), divided by d. 0 for a
      frontal face; positive when the nose points to the image's right.
    * pitch: (N - E) . v / d minus its frontal value 0.55. Positive when the face tilts down
      (nose tip closer to the mouth), negative when it tilts up.

    Both are invariant to in-plane rotation, translation and scale; roughly |yaw| < 0.1 is
    near-frontal and |yaw| of 0.2-0.3 a clearly turned head.

    Args:
        landmarks68: (68, 2) or (N, 68, 2) (x, y) points, or :class:`DlibLandmarks`.
    Returns:
        (yaw, pitch): floats for one face, (N,) arrays for a batch.
    """
    pts = landmarks68.points if isinstance(landmarks68, DlibLandmarks) else landmarks68
    pts = np.asarray(pts.detach().cpu() if isinstance(pts, torch.Tensor) else pts, dtype=np.float64)
    single = pts.ndim == 2
    if single:
        pts = pts[None]
    check_shape("landmarks68", pts, (None, 68, 2))
    left, right = pts[:, 36:42].mean(1), pts[:, 42:48].mean(1)
    eyes = (left + right) / 2
    d = np.linalg.norm(right - left, axis=1)
    if np.any(d <= 0):
        raise InputError("landmarks68: the eye centres coincide")
    u = (right - left) / d[:, None]
    v = np.stack([-u[:, 1], u[:, 0]], axis=1)
    mouth = (pts[:, 48] + pts[:, 54]) / 2
    nose = pts[:, 30]
    en, em = nose - eyes, mouth - eyes
    down_n, down_m = (en * v).sum(1), (em * v).sum(1)
    t = down_n / np.where(np.abs(down_m) > 1e-9, down_m, 1e-9)
    yaw = ((en * u).sum(1) - t * (em * u).sum(1)) / d
    pitch = down_n / d - _NEUTRAL_NOSE_DROP
    if single:
        return float(yaw[0]), float(pitch[0])
    return yaw, pitch
