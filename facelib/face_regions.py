"""The face region of an FFHQ-aligned image: landmarks when dlib finds the face, else a fixed ellipse.

Both are geometry of the aligned face. The swap weights its image loss with them
(:mod:`facelib.swap`) and :func:`facelib.row_measure.row_effects` measures an edit inside and outside them.
"""
from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from . import align
from .errors import DependencyError, InputError, NoFaceError
from .grids import to_pil

__all__ = ["FFHQ_FACE_ELLIPSE", "ffhq_ellipse_mask", "face_region"]

#: Fallback face region of an FFHQ-aligned image: an ellipse (centre x, centre y, semi-axis x,
#: semi-axis y) as fractions of the side. Measured on the 68-landmark hulls of seven aligned
#: test photos (mean centroid (0.506, 0.645), mean area 0.255 of the image); the ellipse has the
#: same centre row and area.
FFHQ_FACE_ELLIPSE: tuple[float, float, float, float] = (0.5, 0.645, 0.275, 0.295)


def ffhq_ellipse_mask(size: int) -> torch.Tensor:
    """The fallback face region: the :data:`FFHQ_FACE_ELLIPSE` of an FFHQ-aligned image.

    Returns:
        (size, size) float32 in [0, 1] (anti-aliased edge, 4x supersampled).
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise InputError(f"size: expected a positive integer, got {size!r}")
    cx, cy, ax, ay = FFHQ_FACE_ELLIPSE
    ss = 4
    t = (torch.arange(size * ss, dtype=torch.float64) + 0.5) / (size * ss)
    y, x = torch.meshgrid(t, t, indexing="ij")
    inside = (((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0).double()
    return inside.reshape(size, ss, size, ss).mean((1, 3)).float()


def face_region(image: Any, size: int, *, fallback: bool = True) -> tuple[torch.Tensor, str]:
    """The inner-face region of an aligned face image, from dlib landmarks, else the FFHQ ellipse.

    Landmarks are found on ``image`` (upscaled to 256 px first when smaller, since dlib's
    detector misses small faces) and rasterised with :func:`facelib.align.face_mask`. When no
    face is found, or dlib is missing, the fixed :func:`ffhq_ellipse_mask` is used (FFHQ
    alignment puts every face in nearly the same place); renderings of an untrained generator
    always end up there.

    Args:
        image: PIL image, path, or (3, H, W) / (1, 3, H, W) tensor in [-1, 1].
        size: side of the returned mask.
        fallback: False raises instead of falling back.
    Returns:
        ((size, size) float32 in [0, 1], a description of where the region came from).
    Raises:
        NoFaceError / DependencyError: only with ``fallback=False``.
    """
    try:
        if torch.is_tensor(image):
            img = to_pil(image[0] if image.ndim == 4 else image)
        else:
            img = align.load_image(image)
        if min(img.size) < 256:
            img = img.resize((256, 256), Image.Resampling.LANCZOS)
        boxes = align.detect_faces(img)
        if not boxes:
            raise NoFaceError("face_region: dlib found no face on the image")
        lm = align.predict_landmarks(img, boxes[0])
        return align.face_mask(lm, size, source_size=img.width), "landmarks (dlib 68-point hull)"
    except (NoFaceError, DependencyError) as e:
        if not fallback:
            raise
        why = "no face found" if isinstance(e, NoFaceError) else "dlib unavailable"
        return ffhq_ellipse_mask(size), f"FFHQ ellipse ({why})"
