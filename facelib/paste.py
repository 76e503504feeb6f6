"""Back into the photo: paste an edited aligned face into the photo it was cut from.

Every edit (style mixing, expression transfer, face swap, with or without a tuned generator)
produces an aligned square face. :func:`paste_into_photo` puts it back:

1. the alignment's geometry (:class:`~facelib.align.AlignedFace`, or the ``<stem>.align.json``
   sidecar :func:`~facelib.align_batch.align_folder` writes beside every crop) gives the inverse
   transform from the aligned square to the photo;
2. a feathered face mask (the convex hull of the 68 landmarks, Gaussian-softened) chooses
   what is replaced, so hair, background and the rest of the photo are untouched;
3. colour matching at the seam: the edited face is shifted by the mean colour difference
   between the original crop and the edit over the band where the mask is soft, so the
   lighting of the edit meets the photo's without a visible edge.

Pixels where the warped mask is 0 keep the photo's exact bytes; pasting the unedited crop
back changes the inside only by the resampling of the two warps.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ._io import atomic_path
from .align import AlignedFace, IMAGE_EXTENSIONS, load_image
from .align_batch import alignment_path, load_alignment
from .errors import InputError
from .grids import stamp, to_pil

__all__ = ["paste_into_photo", "seam_color_offset", "paste_file", "paste_series", "photo_path", "aligned_crop"]

#: default soft-edge width of the face mask, as a fraction of the aligned side (Gaussian sigma)
DEFAULT_FEATHER = 0.02


def _as_rgb(edited: Any) -> Image.Image:
    if torch.is_tensor(edited):
        t = edited.detach()
        if t.ndim == 4:
            if t.shape[0] != 1:
                raise InputError(f"edited: expected one image, got a batch of {t.shape[0]}")
            t = t[0]
        return to_pil(t.float().clamp(-1, 1).cpu())
    if isinstance(edited, (str, os.PathLike)):
        return load_image(edited)
    if isinstance(edited, Image.Image):
        return edited.convert("RGB")
    raise InputError(f"edited: expected a PIL image, a path or a (3, S, S) tensor in [-1, 1], "
                     f"got {type(edited).__name__}")


def seam_color_offset(edited: np.ndarray, original: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean colour difference ``original - edited`` over the seam band of ``mask``.

    Args:
        edited, original: (S, S, 3) float arrays (0..255) in the aligned frame.
        mask: (S, S) in [0, 1]; the band is weighted by ``4 m (1 - m)`` (1 where m = 0.5, 0 where
            the mask is hard).
    Returns:
        (3,) per-channel offset (zeros when the mask has no soft band).
    """
    band = 4.0 * mask * (1.0 - mask)
    total = float(band.sum())
    if total < 1e-6:
        return np.zeros(3)
    return ((original - edited) * band[..., None]).sum(axis=(0, 1)) / total


def paste_into_photo(edited: Any, face: "AlignedFace | str | os.PathLike[str]", photo: Any = None, *,
                     feather: float = DEFAULT_FEATHER, color_match: bool = True) -> Image.Image:
    """Paste an edited aligned face back into its photo (see the module docstring).

    Args:
        edited: the edited face at any square size: a PIL image, a path, or a (3, S, S) /
            (1, 3, S, S) float tensor in [-1, 1] (e.g. a generator output).
        face: the alignment: an :class:`~facelib.align.AlignedFace`, or an aligned image / its
            ``.align.json`` sidecar.
        photo: the source photo; default: the one the alignment recorded.
        feather: Gaussian sigma of the face mask's soft edge, as a fraction of the side.
        color_match: shift the edit's colours to the photo's at the seam.
    Returns:
        A new RGB image the size of the photo.
    Raises:
        InputError: no photo given or recorded, a photo of another size, or a non-square edit.
    """
    if not isinstance(face, AlignedFace):
        face = load_alignment(face)
    if photo is None:
        if not face.source or not Path(face.source).is_file():
            raise InputError(f"photo: not given, and the alignment's photo {face.source!r} was not found; "
                             "pass the original photo")
        photo = face.source
    img = _as_rgb(edited)
    side = img.size[0]
    if img.size[0] != img.size[1]:
        raise InputError(f"edited: expected a square image, got {img.size}")
    if feather < 0:
        raise InputError(f"feather: expected >= 0, got {feather}")
    mask = face.mask(side, feather=feather * side).numpy()  # [S, S] in [0, 1]
    if color_match:
        original = np.asarray(face.image.convert("RGB").resize((side, side), Image.Resampling.BILINEAR)
                              if face.image.size != (side, side) else face.image.convert("RGB"), dtype=np.float64)
        arr = np.asarray(img, dtype=np.float64)
        offset = seam_color_offset(arr, original, mask)
        if np.abs(offset).max() >= 0.5:
            img = Image.fromarray(np.clip(np.rint(arr + offset), 0, 255).astype(np.uint8), "RGB")
    return face.paste_back(img, photo, mask=mask)


def paste_file(edited: Any, aligned: "AlignedFace | str | os.PathLike[str]", out: "str | os.PathLike[str]", *,
               photo: Any = None, feather: float = DEFAULT_FEATHER, color_match: bool = True,
               stamp_text: str | None = None) -> Path:
    """:func:`paste_into_photo` written to ``out`` atomically (``stamp_text`` labels the image, e.g.
    a smoke run). Returns ``out``."""
    result = paste_into_photo(edited, aligned, photo, feather=feather, color_match=color_match)
    if stamp_text:
        result = stamp(result, stamp_text)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        result.save(tmp, format=(out.suffix.lstrip(".").upper().replace("JPG", "JPEG") or "PNG"))
    return out


def photo_path(result: "str | os.PathLike[str]") -> Path:
    """Where an edited result's pasted-back photo goes: ``<dir>/<stem>.photo<ext>`` beside it."""
    p = Path(result)
    return p.with_name(f"{p.stem}.photo{p.suffix}")


def aligned_crop(aligned_dir: "str | os.PathLike[str]", name: str) -> Path | None:
    """The aligned crop ``<aligned_dir>/<name>.<ext>`` (``name`` like "person/0", as projections are
    named) that has a geometry sidecar, or None."""
    base = Path(aligned_dir) / name
    return next((base.with_suffix(e) for e in IMAGE_EXTENSIONS
                 if base.with_suffix(e).is_file() and alignment_path(base.with_suffix(e)).is_file()), None)


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._") or "image"


def paste_series(images: Any, names: "list[str] | tuple[str, ...]", aligned: "str | os.PathLike[str]",
                 folder: "str | os.PathLike[str]", *, prefix: str = "", suffix: str = "",
                 stamp_text: str | None = None, feather: float = DEFAULT_FEATHER,
                 color_match: bool = True) -> list[Path]:
    """Paste several edits of one face into its photo: image k goes to
    ``<folder>/<prefix><names[k]><suffix>.photo.jpg`` (names made file-safe as the edit tables do,
    so ``prefix="transferred_"`` puts each beside the table's ``transferred_<name>.jpg``).

    Args:
        images: (K, 3, S, S) float in [-1, 1] (e.g. ``table.mixed_images[0]``) or K PIL images.
        names: K names.
        aligned: the face's aligned crop (with its ``.align.json``) or the sidecar.
    Returns:
        The written paths.
    """
    face = load_alignment(aligned)
    if len(images) != len(names):
        raise InputError(f"paste_series: {len(images)} image(s) for {len(names)} name(s)")
    return [paste_file(img, face, Path(folder) / f"{prefix}{_file_name(n)}{suffix}.photo.jpg",
                       stamp_text=stamp_text, feather=feather, color_match=color_match)
            for img, n in zip(images, names)]
