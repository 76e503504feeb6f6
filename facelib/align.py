"""FFHQ face alignment: dlib landmarks -> oriented quad -> crop, pad, warp.

The procedure is the one NVIDIA used to build FFHQ (``recreate_aligned_images`` in the
ffhq-dataset repository), so aligned photos sit where a StyleGAN2 trained on FFHQ expects faces:

1. Detect faces with dlib's HOG frontal detector (upsampled once), optionally falling back
   to the mmod CNN detector, and predict 68 landmarks on each box.
2. From the eye centres and the mouth corners build an oriented square ("quad"): its x axis
   follows the eye line corrected by the eye-to-mouth direction, its half side is
   ``max(2 * |eye_to_eye|, 1.8 * |eye_to_mouth|)``, its centre ``eye_mid + 0.1 * eye_to_mouth``.
3. Shrink very large faces, crop around the quad with a border, reflect-pad where the quad
   leaves the photo (blurred and blended towards the median colour), sample the quad into a
   ``transform_size`` square with bilinear filtering and resize it to ``output_size`` (LANCZOS).

Where the eyes land. With ``S`` the output size and ``s`` the quad half side in source pixels,
the eye centres land at ``x = S * (1/2 -+ |eye_to_eye| / (4 s))`` and
``y = S * (1/2 - 0.05 |eye_to_mouth| / s)``. For the usual face (``s = 2 |eye_to_eye|``) that is
``(0.375 S, ~0.475 S)`` and ``(0.625 S, ~0.475 S)``: 384 and 640 px across and ~486 px down at
1024 px; these are "the FFHQ eye positions". The eye line is level up to the face's own
asymmetry (the quad's x axis also uses the eye-to-mouth direction).

Coordinates. Points are (x, y) in pixel-index units of the upright source photo (pixel ``i``
covers ``[i, i + 1)``, its centre is ``i + 0.5`` in continuous units); the quad is sampled with
that ``+0.5`` convention, and :class:`AlignedFace` maps points both ways with it.

Example (needs dlib and the 68-point predictor):
    >>> import facelib                                   # doctest: +SKIP
    >>> img = facelib.align_face("photo.jpg", output_size=1024)   # doctest: +SKIP
    >>> faces = facelib.align_faces("group.jpg", output_size=256)  # doctest: +SKIP
    >>> faces[0].landmarks_aligned.shape                  # doctest: +SKIP
    (68, 2)
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from .dlib_models import (CNN_DETECTOR, PREDICTOR_68, cnn_detector, dlib_model_path, hog_detector, import_dlib,
                          landmark_model)
from .errors import InputError, NoFaceError, ShapeError, check_shape
from .paths import IMAGE_EXTENSIONS

__all__ = [
    "AlignedFace",
    "IMAGE_EXTENSIONS",
    "PREDICTOR_68",
    "CNN_DETECTOR",
    "align_face",
    "align_faces",
    "align_preview",
    "annotate",
    "detect_faces",
    "dlib_model_path",
    "draw_landmarks",
    "face_mask",
    "ffhq_quad",
    "ffhq_warp",
    "load_image",
    "predict_landmarks",
]

log = logging.getLogger(__name__)

ImageInput = Union[str, "os.PathLike[str]", Image.Image, np.ndarray]

#: File suffixes that :func:`align_folder` and :func:`list_images` pick up (case-insensitive).

#: Photos whose long side exceeds this are searched for faces on a reduced copy.
DETECT_MAX_SIDE = 4000

#: The quad is sampled at this multiple of the output size, then LANCZOS-reduced (FFHQ: 4096 / 1024).
SUPERSAMPLE = 4

#: ``warp=`` choices: "reference" = FFHQ's 4x supersampled warp (bit-exact with the FFHQ script);
#: "fast" = the same warp supersampled only as far as the photo has pixels (1x when the face is
#: upsampled, the usual case at 1024 px).
WARPS = ("fast", "reference")

DETECTORS = ("hog", "cnn", "auto")

# 68-point layout (iBUG 300-W): 36-41 left eye, 42-47 right eye (as seen in the photo),
# 48 and 54 the outer mouth corners.
_EYE_L = slice(36, 42)
_EYE_R = slice(42, 48)
_MOUTH_L, _MOUTH_R = 48, 54


# ----------------------------------------------------------------------------------------
# Image input
# ----------------------------------------------------------------------------------------

def _name_of(image: Any) -> str | None:
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    if isinstance(image, Image.Image):
        return getattr(image, "filename", None) or None
    return None


def _high_depth_to_rgb(img: Image.Image, name: str) -> Image.Image:
    """Modes I;16*, I and F -> 8-bit RGB (16-bit ranges are scaled, not clipped)."""
    arr = np.asarray(img).astype(np.float64)
    if arr.ndim != 2:
        raise InputError(f"{name}: unsupported image mode {img.mode} with shape {arr.shape}")
    if img.mode.startswith("I;16"):
        arr = arr / 257.0
    elif img.mode == "F" and arr.size and np.nanmax(arr) <= 1.0:
        arr = arr * 255.0
    elif arr.size and np.nanmax(arr) > 255:
        arr = arr / 257.0  # an "I" image holding 16-bit samples (e.g. 16-bit PNG)
    arr = np.clip(np.rint(np.nan_to_num(arr)), 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([arr] * 3, axis=-1), "RGB")


def _to_rgb(img: Image.Image, name: str) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I") or mode == "F":
        return _high_depth_to_rgb(img, name)
    try:
        if mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")
        # Alpha is dropped, not composited (as FFHQ's own conversion does).
        return img.convert("RGB")
    except (ValueError, OSError) as e:
        raise InputError(f"{name}: cannot convert image mode {mode} to RGB ({e})") from e


def _array_to_image(arr: np.ndarray) -> Image.Image:
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype == np.uint16:
        arr = np.rint(arr / 257.0).astype(np.uint8)
    if arr.dtype != np.uint8:
        raise InputError(f"image array: expected dtype uint8 (or uint16), got {arr.dtype}")
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4) or min(arr.shape[:2]) < 1:
        raise ShapeError(f"image array: expected (H, W, 3) uint8, got shape {arr.shape}",
                         actual_shape=arr.shape, expected_shape=(None, None, 3))
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return Image.fromarray(np.ascontiguousarray(arr[:, :, :3]), "RGB")


def load_image(image: ImageInput) -> Image.Image:
    """Read a photo as an upright 8-bit RGB PIL image.

    Args:
        image: a path (JPEG, PNG, WebP, BMP, TIFF), a PIL image, or an ``(H, W, 3)`` uint8
            array (``(H, W)``, ``(H, W, 4)`` and uint16 arrays are accepted too).
    Returns:
        A new RGB image. EXIF orientation is applied (also to PIL images as opened from a file);
        grayscale, palette, CMYK, alpha (dropped) and 16-bit modes are converted.
    Raises:
        InputError: the file is missing, unreadable or corrupt, or the mode/array is unsupported.
    """
    if isinstance(image, np.ndarray):
        return _array_to_image(image)
    name = _name_of(image) or "<image>"
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise InputError(f"{path}: no such image file")
        try:
            with Image.open(path) as opened:
                opened.load()
                img = opened
        except Image.DecompressionBombError as e:
            raise InputError(f"{path}: image too large to open safely ({e})") from e
        except (OSError, SyntaxError, ValueError, Image.UnidentifiedImageError) as e:
            raise InputError(f"{path}: cannot read image ({e})") from e
    elif isinstance(image, Image.Image):
        img = image
        try:
            img.load()
        except (OSError, SyntaxError, ValueError) as e:
            raise InputError(f"{name}: cannot read image ({e})") from e
    else:
        raise InputError(f"image: expected a path, PIL image or (H, W, 3) uint8 array, "
                         f"got {type(image).__name__}")
    try:
        upright = ImageOps.exif_transpose(img)
    except Exception as e:  # malformed EXIF blocks raise a variety of errors
        log.warning("%s: ignoring unreadable EXIF orientation (%s)", name, e)
        upright = img
    rgb = _to_rgb(upright, name)
    if rgb is image:
        rgb = rgb.copy()
    if min(rgb.size) < 1:
        raise InputError(f"{name}: empty image")
    return rgb


# ----------------------------------------------------------------------------------------
# Detection and landmarks
# ----------------------------------------------------------------------------------------

Box = tuple[int, int, int, int]


def _box_area(box: Box) -> int:
    # dlib's rectangle.area() convention: inclusive corners.
    return (box[2] - box[0] + 1) * (box[3] - box[1] + 1)


def _detect(arr: np.ndarray, kind: str, upsample: int, cnn_path: "str | os.PathLike[str] | None") -> list[Box]:
    if kind == "hog":
        rects = hog_detector()(arr, upsample)
    else:
        path = str(dlib_model_path(CNN_DETECTOR, cnn_path))
        rects = [d.rect for d in cnn_detector(path)(arr, upsample)]
    return [(int(r.left()), int(r.top()), int(r.right()), int(r.bottom())) for r in rects]


def detect_faces(image: ImageInput, *, detector: str = "hog", upsample: int = 1,
                 max_side: int = DETECT_MAX_SIDE,
                 cnn_path: "str | os.PathLike[str] | None" = None) -> list[Box]:
    """Face boxes, largest first (by dlib area; ties keep detector order).

    Args:
        image: anything :func:`load_image` accepts.
        detector: ``"hog"`` (dlib frontal detector), ``"cnn"`` (mmod), or ``"auto"`` (HOG,
            then CNN only when HOG finds nothing).
        upsample: detector upsampling steps; FFHQ parity needs 1.
        max_side: photos with a longer side are searched on a copy reduced by the smallest
            integer factor that brings the long side to at most ``max_side / 2``; boxes are
            mapped back to full resolution.
        cnn_path: explicit ``mmod_human_face_detector.dat`` (file or folder).
    Returns:
        ``(left, top, right, bottom)`` boxes in source pixels, inclusive, not clamped to the image.
    """
    return _detect_boxes(load_image(image), detector, upsample, max_side, cnn_path)


def _detect_boxes(rgb: Image.Image, detector: str, upsample: int, max_side: int, cnn_path) -> list[Box]:
    if detector not in DETECTORS:
        raise InputError(f"detector: expected one of {DETECTORS}, got {detector!r}")
    if isinstance(upsample, bool) or not isinstance(upsample, int) or upsample < 0:
        raise InputError(f"upsample: expected an int >= 0, got {upsample!r}")
    factor = 1
    if max(rgb.size) > max_side:
        factor = math.ceil(max(rgb.size) / max(1, max_side // 2))
        small = rgb.reduce(factor)
    else:
        small = rgb
    arr = np.ascontiguousarray(np.asarray(small, dtype=np.uint8))
    boxes = _detect(arr, "cnn" if detector == "cnn" else "hog", upsample, cnn_path)
    if not boxes and detector == "auto":
        boxes = _detect(arr, "cnn", upsample, cnn_path)
    if factor > 1:  # reduced pixel i covers source pixels [i*f, (i+1)*f)
        boxes = [(x0 * factor, y0 * factor, (x1 + 1) * factor - 1, (y1 + 1) * factor - 1)
                 for x0, y0, x1, y1 in boxes]
    order = sorted(range(len(boxes)), key=lambda i: -_box_area(boxes[i]))
    return [boxes[i] for i in order]


def predict_landmarks(image: ImageInput, box: Sequence[int], *,
                      predictor_path: "str | os.PathLike[str] | None" = None) -> np.ndarray:
    """68 landmarks of the face in ``box`` (dlib's ``shape_predictor_68_face_landmarks``).

    Args:
        image: the photo (full resolution), anything :func:`load_image` accepts.
        box: ``(left, top, right, bottom)`` as returned by :func:`detect_faces`.
        predictor_path: explicit predictor file or folder (see :func:`dlib_model_path`).
    Returns:
        ``(68, 2)`` int64 array of (x, y) source pixel indices.
    """
    arr = np.ascontiguousarray(np.asarray(load_image(image), dtype=np.uint8))
    return _landmarks(landmark_model(predictor_path), arr, box)


def _landmarks(predictor, arr: np.ndarray, box: Sequence[int]) -> np.ndarray:
    left, top, right, bottom = (int(v) for v in box)
    shape = predictor(arr, import_dlib().rectangle(left, top, right, bottom))
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.int64)


# ----------------------------------------------------------------------------------------
# The FFHQ geometry and warp
# ----------------------------------------------------------------------------------------

def ffhq_quad(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """The FFHQ crop square for 68 landmarks.

    Args:
        landmarks: ``(68, 2)`` (x, y) source pixel indices.
    Returns:
        ``(quad, qsize)``: quad ``(4, 2)`` float64 corners in the order top-left, bottom-left,
        bottom-right, top-right of the aligned image, in source pixel indices; qsize its side.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    check_shape("landmarks", lm, (68, 2))
    eye_l = lm[_EYE_L].mean(axis=0)
    eye_r = lm[_EYE_R].mean(axis=0)
    eye_mid = (eye_l + eye_r) * 0.5
    eye_to_eye = eye_r - eye_l
    mouth_mid = (lm[_MOUTH_L] + lm[_MOUTH_R]) * 0.5
    eye_to_mouth = mouth_mid - eye_mid
    # x axis: the eye line, averaged with the eye-to-mouth direction turned by -90 degrees.
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])
    x = x / np.hypot(x[0], x[1])
    x = x * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.array([-x[1], x[0]])
    centre = eye_mid + eye_to_mouth * 0.1
    quad = np.stack([centre - x - y, centre - x + y, centre + x + y, centre + x - y])
    return quad, float(np.hypot(x[0], x[1]) * 2.0)


def _bounds(quad: np.ndarray) -> tuple[int, int, int, int]:
    return (int(np.floor(quad[:, 0].min())), int(np.floor(quad[:, 1].min())),
            int(np.ceil(quad[:, 0].max())), int(np.ceil(quad[:, 1].max())))


def _blur_pad(img: Image.Image, pad: np.ndarray, qsize: float) -> Image.Image:
    """Reflect-pad, blur the padded band and fade it to the median colour."""
    from scipy.ndimage import gaussian_filter

    left, top, right, bottom = (int(v) for v in pad)
    a = np.pad(np.asarray(img, dtype=np.float32), ((top, bottom), (left, right), (0, 0)), mode="reflect")
    h, w = a.shape[:2]
    xs = np.arange(w, dtype=np.float64)[None, :, None]
    ys = np.arange(h, dtype=np.float64)[:, None, None]
    # 0 at the original border, rising to 1 at the outer edge of the padding (negative inside).
    ramp = np.maximum(1.0 - np.minimum(xs / left, (w - 1 - xs) / right),
                      1.0 - np.minimum(ys / top, (h - 1 - ys) / bottom))
    sigma = qsize * 0.02
    blurred = gaussian_filter(a, [sigma, sigma, 0])
    a += (blurred - a) * np.clip(ramp * 3.0 + 1.0, 0.0, 1.0)
    a += (np.median(a, axis=(0, 1)) - a) * np.clip(ramp, 0.0, 1.0)
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "RGB")


def ffhq_warp(image: Image.Image, quad: np.ndarray, qsize: float, *, output_size: int = 1024,
              transform_size: int | None = None, enable_padding: bool = True,
              warp: str = "reference") -> Image.Image:
    """Sample the FFHQ quad out of an RGB photo (shrink, crop, pad, transform, resize).

    Args:
        image: upright RGB PIL image.
        quad, qsize: from :func:`ffhq_quad` (source pixel indices).
        output_size: side of the result.
        transform_size: side of the supersampled bilinear warp of the reference path; default
            ``4 * output_size`` (FFHQ: 4096 for 1024); raised to ``output_size`` when smaller.
            Giving it selects the reference path.
        enable_padding: reflect-pad with blur where the quad leaves the photo (FFHQ: True).
        warp: "reference" (FFHQ's procedure, bit-exact) or "fast" (same shrink, crop and
            padding; the warp supersampled only as far as the photo has pixels, see
            :data:`WARPS`: about 20x faster at 1024 px, >= 54 dB PSNR from the reference on the
            test photos).
    Returns:
        RGB PIL image, ``output_size`` x ``output_size``.
    """
    if image.mode != "RGB":
        raise InputError(f"image: expected an RGB PIL image, got mode {image.mode}")
    if warp not in WARPS:
        raise InputError(f"warp: expected one of {WARPS}, got {warp!r}")
    img = image
    quad = np.array(quad, dtype=np.float64)
    fast = warp == "fast" and transform_size is None
    if transform_size is None:
        transform_size = SUPERSAMPLE * output_size
    transform_size = max(int(transform_size), int(output_size))

    # Shrink: faces much larger than the output are first reduced by an integer factor.
    shrink = int(np.floor(qsize / output_size * 0.5))
    if shrink > 1:
        size = (int(np.rint(img.size[0] / shrink)), int(np.rint(img.size[1] / shrink)))
        img = img.resize(size, Image.Resampling.LANCZOS)
        quad /= shrink
        qsize /= shrink

    # Crop to the quad plus a border.
    border = max(int(np.rint(qsize * 0.1)), 3)
    x0, y0, x1, y1 = _bounds(quad)
    crop = (max(x0 - border, 0), max(y0 - border, 0),
            min(x1 + border, img.size[0]), min(y1 + border, img.size[1]))
    if crop[2] - crop[0] < img.size[0] or crop[3] - crop[1] < img.size[1]:
        img = img.crop(crop)
        quad -= crop[0:2]

    # Pad where the quad (plus border) reaches outside the photo.
    x0, y0, x1, y1 = _bounds(quad)
    pad = (max(-x0 + border, 0), max(-y0 + border, 0),
           max(x1 - img.size[0] + border, 0), max(y1 - img.size[1] + border, 0))
    if enable_padding and max(pad) > border - 4:
        pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
        img = _blur_pad(img, pad, qsize)
        quad += pad[:2]

    if fast:
        return _fast_quad_warp(img, quad, output_size)

    # Bilinear quad warp; (quad + 0.5) turns pixel indices into PIL's continuous coordinates.
    out = img.transform((transform_size, transform_size), Image.Transform.QUAD,
                        tuple((quad + 0.5).flatten()), Image.Resampling.BILINEAR)
    if output_size < transform_size:
        out = out.resize((output_size, output_size), Image.Resampling.LANCZOS)
    return out


def _fast_quad_warp(img: Image.Image, quad: np.ndarray, output_size: int) -> Image.Image:
    """The reference warp, supersampled only as far as the photo has pixels.

    The reference samples the quad at 4x the output size, then LANCZOS-reduces. When the
    quad's side ``d`` (source pixels, after the shrink) is smaller than that, the extra samples
    only interpolate between the same pixels. Here the factor is ``ceil(d / output_size)``
    clamped to [1, 4]: one bilinear transform at the output size when the face is upsampled
    (the usual case at 1024 px), otherwise the reference's bilinear-then-LANCZOS at that factor.
    """
    side = float(max(np.hypot(*(quad[1] - quad[0])), np.hypot(*(quad[3] - quad[0]))))
    ss = min(SUPERSAMPLE, max(1, math.ceil(side / output_size - 1e-6)))
    out = img.transform((ss * output_size, ss * output_size), Image.Transform.QUAD,
                        tuple((quad + 0.5).flatten()), Image.Resampling.BILINEAR)
    return out.resize((output_size, output_size), Image.Resampling.LANCZOS) if ss > 1 else out


# ----------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class AlignedFace:
    """One aligned face and the geometry that maps it back into its photo.

    Attributes:
        image: aligned RGB PIL image, ``output_size`` x ``output_size``.
        landmarks: ``(68, 2)`` float64 landmarks in source pixels (upright photo).
        landmarks_aligned: ``(68, 2)`` float64 landmarks in aligned-image pixels.
        box: detector box ``(left, top, right, bottom)`` in source pixels (may extend past the photo).
        quad: ``(4, 2)`` float64 corners of the crop in source pixels, in the order top-left,
            bottom-left, bottom-right, top-right of the aligned image.
        source_size: ``(width, height)`` of the upright photo.
        output_size: side of ``image``.
        source: file name of the photo, or None.
        detector: the detector option that found the box (``"hog"``, ``"cnn"`` or ``"auto"``).
    """

    image: Image.Image
    landmarks: np.ndarray
    landmarks_aligned: np.ndarray
    box: Box
    quad: np.ndarray
    source_size: tuple[int, int]
    output_size: int
    source: str | None = None
    detector: str = "hog"

    def to_aligned(self, points: np.ndarray, size: int | None = None) -> np.ndarray:
        """Map ``(N, 2)`` source pixel points into an aligned image of side ``size`` (default: output_size)."""
        return _to_aligned(self.quad, points, self.output_size if size is None else size)

    def to_source(self, points: np.ndarray, size: int | None = None) -> np.ndarray:
        """Map ``(N, 2)`` points of an aligned image of side ``size`` back to source pixels."""
        size = self.output_size if size is None else size
        uv = (np.asarray(points, dtype=np.float64).reshape(-1, 2) + 0.5) / size
        return uv @ _frame(self.quad).T + self.quad[0]

    @property
    def matrix(self) -> np.ndarray:
        """``(2, 3)`` affine map from source pixels to aligned pixels: ``a = M[:, :2] @ p + M[:, 2]``."""
        lin = np.linalg.inv(_frame(self.quad)) * self.output_size
        return np.concatenate([lin, (-lin @ self.quad[0] - 0.5)[:, None]], axis=1)

    @property
    def eye_centers(self) -> np.ndarray:
        """``(2, 2)`` left and right eye centres in aligned pixels."""
        lm = self.landmarks_aligned
        return np.stack([lm[_EYE_L].mean(axis=0), lm[_EYE_R].mean(axis=0)])

    def mask(self, size: int | None = None, *, feather: float = 0.0):
        """Inner-face mask of the aligned image; see :func:`face_mask`. ``(size, size)`` float32."""
        size = self.output_size if size is None else size
        return face_mask(self.landmarks_aligned, size, source_size=self.output_size, feather=feather)

    def paste_back(self, edited: "Image.Image | Any", photo: ImageInput, *, mask: Any = None,
                   feather: float = 0.02) -> Image.Image:
        """Warp an edited aligned image back into the photo it came from.

        Args:
            edited: the aligned face after editing, at any size: a square PIL image or a
                ``(3, S, S)`` float tensor in [-1, 1] (e.g. a generator output).
            photo: the source photo (anything :func:`load_image` accepts; the upright frame is used).
            mask: optional ``(h, w)`` weights in [0, 1] in the aligned frame (numpy, torch or PIL
                "L"), e.g. ``face.mask(feather=8)``; default: the whole square.
            feather: when ``mask`` is None, width of the soft edge as a fraction of the square.
        Returns:
            A new RGB image the size of the upright photo.
        """
        src = load_image(photo)
        if src.size != tuple(self.source_size):
            raise InputError(f"photo: expected size {tuple(self.source_size)}, got {src.size}")
        if hasattr(edited, "detach"):
            from .grids import to_pil  # torch only here: photo alignment (and its workers) runs without it
            edited = to_pil(edited)
        edited = edited.convert("RGB")
        side = edited.size[0]
        if edited.size[0] != edited.size[1]:
            raise InputError(f"edited: expected a square image, got {edited.size}")
        if mask is None:
            alpha = _square_alpha(side, feather)
        else:
            m = mask if isinstance(mask, Image.Image) else Image.fromarray(
                (np.clip(np.asarray(_as_numpy(mask), dtype=np.float32), 0, 1) * 255).round().astype(np.uint8), "L")
            alpha = m.convert("L").resize((side, side), Image.Resampling.BILINEAR)
        # Affine map, in continuous coordinates, from photo to aligned image of side `side`.
        inv = np.linalg.inv(_frame(self.quad)) * side
        origin = self.quad[0] + 0.5
        x0, y0, x1, y1 = _bounds(self.quad)
        x0, y0 = max(x0 - 1, 0), max(y0 - 1, 0)
        x1, y1 = min(x1 + 2, src.size[0]), min(y1 + 2, src.size[1])
        if x1 <= x0 or y1 <= y0:
            return src
        offset = inv @ (np.array([x0, y0], dtype=np.float64) - origin)
        coeffs = (inv[0, 0], inv[0, 1], offset[0], inv[1, 0], inv[1, 1], offset[1])
        region = (x1 - x0, y1 - y0)
        face = edited.transform(region, Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR)
        weight = alpha.transform(region, Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR, fillcolor=0)
        out = src.copy()
        out.paste(Image.composite(face, src.crop((x0, y0, x1, y1)), weight), (x0, y0))
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready geometry (no pixels): landmarks, box, quad, sizes, source, detector."""
        return {
            "source": self.source,
            "source_size": list(self.source_size),
            "output_size": self.output_size,
            "detector": self.detector,
            "box": list(self.box),
            "quad": self.quad.tolist(),
            "landmarks": self.landmarks.tolist(),
            "landmarks_aligned": self.landmarks_aligned.tolist(),
        }


def _frame(quad: np.ndarray) -> np.ndarray:
    """Columns: the quad's x and y edges (source pixels spanned by the aligned side)."""
    return np.stack([quad[3] - quad[0], quad[1] - quad[0]], axis=1)


def _to_aligned(quad: np.ndarray, points: np.ndarray, size: int) -> np.ndarray:
    # The warp sends aligned continuous (u, v) in [0, size]^2 to quad[0] + 0.5 + frame @ (u, v) / size.
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    uv = np.linalg.solve(_frame(quad), (pts - quad[0]).T).T
    return uv * size - 0.5


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _square_alpha(side: int, feather: float) -> Image.Image:
    ramp = max(feather * side, 1e-6)
    idx = np.arange(side, dtype=np.float64) + 0.5
    edge = np.minimum(idx, side - idx) / ramp
    w = np.clip(np.minimum(edge[:, None], edge[None, :]), 0, 1)
    return Image.fromarray(np.rint(w * 255).astype(np.uint8), "L")


def check_size(name: str, value: int) -> int:
    """``value`` as an int when it is a positive integer (not a bool); else an InputError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name}: expected a positive int, got {value!r}")
    return int(value)


def align_faces(image: ImageInput, *, output_size: int = 1024, transform_size: int | None = None,
                detector: str = "hog", upsample: int = 1, max_faces: int | None = None,
                enable_padding: bool = True,
                predictor_path: "str | os.PathLike[str] | None" = None,
                cnn_path: "str | os.PathLike[str] | None" = None,
                max_side: int = DETECT_MAX_SIDE, warp: str = "fast") -> list[AlignedFace]:
    """Align every face in a photo the FFHQ way, largest first.

    Args:
        image: a path, PIL image or ``(H, W, 3)`` uint8 array (see :func:`load_image`).
        output_size: side of each aligned image (FFHQ: 1024).
        transform_size: supersampled warp size; default ``4 * output_size`` (FFHQ: 4096 at 1024).
        detector: ``"hog"``, ``"cnn"`` or ``"auto"`` (see :func:`detect_faces`).
        upsample: detector upsampling (FFHQ parity: 1).
        max_faces: keep only this many of the largest faces.
        enable_padding: blur-padding where the crop leaves the photo.
        predictor_path, cnn_path: explicit dlib model files (see :func:`dlib_model_path`).
        max_side: long side above which detection runs on a reduced copy (landmarks always
            use the full-resolution photo).
        warp: "fast" (default: >= 49 dB PSNR from the reference on the test photos at 64-1024
            px, about 20x faster at 1024 px) or "reference" (FFHQ's 4x supersampled warp,
            bit-exact); see :func:`ffhq_warp`. A given ``transform_size`` means "reference".
    Returns:
        One :class:`AlignedFace` per face, sorted by detector box area (largest first).
    Raises:
        NoFaceError: no face was found. InputError: unreadable image or bad argument.
        DependencyError: dlib or a model file is missing.
    """
    output_size = check_size("output_size", output_size)
    if transform_size is not None:
        transform_size = check_size("transform_size", transform_size)
    if max_faces is not None:
        max_faces = check_size("max_faces", max_faces)
    if warp not in WARPS:
        raise InputError(f"warp: expected one of {WARPS}, got {warp!r}")
    name = _name_of(image)
    rgb = load_image(image)
    boxes = _detect_boxes(rgb, detector, upsample, max_side, cnn_path)
    if not boxes:
        hint = " (try detector='auto' or 'cnn')" if detector == "hog" else ""
        raise NoFaceError(f"{name or '<image>'}: no face found by the {detector} detector{hint}")
    if max_faces is not None:
        boxes = boxes[:max_faces]
    predictor = landmark_model(predictor_path)  # located once, not per face
    arr = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))
    faces = []
    for box in boxes:
        lm = _landmarks(predictor, arr, box)
        quad, qsize = ffhq_quad(lm)
        aligned = ffhq_warp(rgb, quad, qsize, output_size=output_size,
                            transform_size=transform_size, enable_padding=enable_padding, warp=warp)
        faces.append(AlignedFace(
            image=aligned, landmarks=lm.astype(np.float64),
            landmarks_aligned=_to_aligned(quad, lm, output_size), box=tuple(box), quad=quad,
            source_size=rgb.size, output_size=output_size, source=name, detector=detector))
    return faces


def align_face(image: ImageInput, *, output_size: int = 1024, transform_size: int | None = None,
               detector: str = "hog", upsample: int = 1, enable_padding: bool = True,
               predictor_path: "str | os.PathLike[str] | None" = None,
               cnn_path: "str | os.PathLike[str] | None" = None,
               max_side: int = DETECT_MAX_SIDE, warp: str = "fast") -> Image.Image:
    """FFHQ-align the largest face (by detector box area) of a photo.

    Same arguments as :func:`align_faces`.

    Returns:
        RGB PIL image, ``output_size`` x ``output_size``.
    Raises:
        NoFaceError: no face was found (the message names the file when there is one).
    """
    return align_faces(image, output_size=output_size, transform_size=transform_size,
                       detector=detector, upsample=upsample, max_faces=1,
                       enable_padding=enable_padding, predictor_path=predictor_path,
                       cnn_path=cnn_path, max_side=max_side, warp=warp)[0].image


# ----------------------------------------------------------------------------------------
# Masks and drawing
# ----------------------------------------------------------------------------------------

def _convex_hull(points: np.ndarray) -> np.ndarray:
    """Andrew's monotone chain; returns hull vertices counter-clockwise."""
    pts = sorted(set(map(tuple, np.asarray(points, dtype=np.float64).tolist())))
    if len(pts) <= 2:
        return np.array(pts)

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list = []
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return np.array(lower[:-1] + upper[:-1])


def face_mask(landmarks_aligned: np.ndarray, size: int, *, source_size: int | None = None,
              feather: float = 0.0):
    """Inner-face region: the convex hull of the 68 landmarks, rasterised.

    Args:
        landmarks_aligned: ``(68, 2)`` (or any ``(N, 2)``) points in aligned pixels.
        size: side of the mask.
        source_size: side of the image the points refer to (default: ``size``); points are
            rescaled to ``size`` with the pixel-centre convention.
        feather: Gaussian sigma in mask pixels for a soft edge (0: hard, anti-aliased edge).
    Returns:
        ``(size, size)`` float32 torch tensor in [0, 1]; 1 inside the face.
    """
    import torch  # only for the mask tensor: photo alignment (and its workers) runs without torch

    size = check_size("size", size)
    pts = np.asarray(_as_numpy(landmarks_aligned), dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 3:
        raise ShapeError(f"landmarks_aligned: expected shape (N>=3, 2), got {pts.shape}",
                         actual_shape=pts.shape, expected_shape=(None, 2))
    src = size if source_size is None else source_size
    pts = (pts + 0.5) * (size / src) - 0.5
    ss = 4  # supersampling for an anti-aliased edge
    hull = (_convex_hull(pts) + 0.5) * ss - 0.5
    canvas = Image.new("L", (size * ss, size * ss), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in hull.tolist()], fill=255)
    m = np.asarray(canvas.resize((size, size), Image.Resampling.BOX), dtype=np.float32) / 255.0
    if feather > 0:
        from scipy.ndimage import gaussian_filter
        m = gaussian_filter(m, float(feather), mode="constant")
    return torch.from_numpy(np.ascontiguousarray(np.clip(m, 0.0, 1.0)))


_COLORS = [(0, 255, 0), (255, 64, 64), (64, 160, 255), (255, 200, 0), (255, 0, 255), (0, 255, 255)]


def draw_landmarks(image: ImageInput, landmarks: np.ndarray, *, box: Sequence[int] | None = None,
                   color: tuple[int, int, int] = (0, 255, 0), radius: float | None = None) -> Image.Image:
    """Return an RGB copy of ``image`` with landmark dots (and optionally the box) drawn.

    Args:
        image: anything :func:`load_image` accepts (points refer to its upright frame).
        landmarks: ``(N, 2)`` (x, y) pixel points, e.g. ``AlignedFace.landmarks``.
        box: optional ``(left, top, right, bottom)``.
        color: RGB colour of the dots and box.
        radius: dot radius in pixels (default: scales with the face size).
    """
    out = load_image(image)
    pts = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    draw = ImageDraw.Draw(out)
    if radius is None:
        extent = float(np.ptp(pts, axis=0).max()) if len(pts) else 0.0
        radius = max(1.0, extent / 120.0, max(out.size) / 400.0)
    for x, y in pts:
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=color)
    if box is not None:
        width = max(1, int(round(radius / 1.5)))
        draw.rectangle([int(v) for v in box], outline=color, width=width)
    return out


def _letterbox(img: Image.Image, size: int) -> Image.Image:
    scale = size / max(img.size)
    w, h = max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale))
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    canvas.paste(img.resize((w, h), Image.Resampling.LANCZOS), ((size - w) // 2, (size - h) // 2))
    return canvas


def annotate(image: ImageInput, faces: Sequence[AlignedFace], *, size: int | None = None) -> Image.Image:
    """The photo with each face's box and landmarks (one colour per face, largest first).

    Args:
        image: the photo the faces came from.
        faces: from :func:`align_faces`.
        size: if given, the result is letterboxed onto a white ``size`` x ``size`` square.
    """
    out = load_image(image)
    for k, face in enumerate(faces):
        out = draw_landmarks(out, face.landmarks, box=face.box, color=_COLORS[k % len(_COLORS)])
    return _letterbox(out, size) if size else out


def align_preview(image: ImageInput, *, output_size: int = 256, detector: str = "hog") -> Image.Image:
    """Side by side: the photo with the largest face's landmarks, and that face aligned.

    Meant for interactive widgets. Returns an RGB image ``2 * output_size`` x ``output_size``
    (the photo letterboxed into the left square).
    """
    faces = align_faces(image, output_size=output_size, detector=detector, max_faces=1)
    canvas = Image.new("RGB", (2 * output_size, output_size), (255, 255, 255))
    canvas.paste(annotate(image, faces, size=output_size), (0, 0))
    canvas.paste(faces[0].image, (output_size, 0))
    return canvas
