"""Report tables: every content face with every style, every face with every expression.

:func:`style_table` (notebook 03) and :func:`expression_table` (notebook 04) render the whole
table at once and return it as a result (:class:`StyleTable`, :class:`ExpressionTable`) that
draws its grid and writes one JPEG per image for the report.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
from PIL import Image, ImageOps

from ._io import safe_name
from .align import load_image
from .edits import (EXPRESSION_MASKS, LayerMask, MaskSpec, apply_delta, check_strength, expression_delta, mix_styles,
                    render)
from .errors import InputError
from .grids import make_grid, save_image, stamp, to_pil
from .latents import latents_for
from .tuning import as_generator

__all__ = ["StyleTable", "style_table", "ExpressionTable", "expression_table"]


@dataclass(frozen=True, repr=False)
class StyleTable:
    """Every content face with every style transferred (:func:`style_table`).

    Attributes:
        content_wplus: (C, n_latent, D); style_wplus: (S, n_latent, D).
        mixed_wplus: (C, S, n_latent, D), ``mix_styles(content[c], style[s], rows=mask, strength)``.
        content_images: (C, 3, H, W); style_images: (S, 3, H, W); mixed_images: (C, S, 3, H, W);
            all float32 in [-1, 1] (content and mixes use the content's noise maps when known).
        content_names, style_names: labels.
        mask: the rows taken from the styles. strength: their strength.
    """

    content_wplus: torch.Tensor
    style_wplus: torch.Tensor
    mixed_wplus: torch.Tensor
    content_images: torch.Tensor
    style_images: torch.Tensor
    mixed_images: torch.Tensor
    content_names: tuple[str, ...]
    style_names: tuple[str, ...]
    mask: LayerMask
    strength: float

    def __repr__(self) -> str:
        return (f"StyleTable(contents={list(self.content_names)}, styles={list(self.style_names)}, "
                f"rows={self.mask}, strength={self.strength:g})")

    def grid(self, *, style_photos: Mapping[str, Any] | Sequence[Any] | None = None, content_photos: Any = None,
             cell: int = 256, title: str | None = None, reference_label: str = "projection"):
        """The report's table: style photos (when given), their projections, then each content with every style.

        Args:
            style_photos: PIL images / paths, one per style (sequence, or mapping by style name).
            content_photos: the same for the contents (shown in the first column of the photo row).
            reference_label: what the style latents are, in the row label
                (:attr:`facelib.edit_inputs.EditInputs.reference_label`: "projection", or a stand-in).
        Returns:
            PIL image.
        """
        sp = _photos(style_photos, self.style_names)
        cp = _photos(content_photos, self.content_names)
        rows, labels = [], []
        if any(p is not None for p in sp):
            rows.append([cp[0] if cp else None] + sp)
            labels.append("photo")
        rows.append([None] + list(self.style_images))
        labels.append(f"style ({reference_label})")
        for c, name in enumerate(self.content_names):
            rows.append([self.content_images[c]] + list(self.mixed_images[c]))
            labels.append(name)
        return make_grid(rows, cell=cell, row_labels=labels, col_labels=["content"] + list(self.style_names),
                         title=title or f"style transfer: rows {self.mask} from the style, strength {self.strength:g}")

    def save_images(self, folder: "str | os.PathLike[str]", *, style_photos: Any = None, quality: int = 95,
                    label: str | None = None) -> list[Path]:
        """Write ``<style>.jpg`` (photo, when given), ``<style>_style.jpg`` (projection),
        ``transferred_<style>.jpg`` (onto the first content) and ``transferred_<style>_<content>.jpg``
        (other contents) into ``folder``. ``label``: a stamp for every image (smoke runs)."""
        folder = Path(folder)
        photos = _photos(style_photos, self.style_names, open_=False)
        items: list[tuple[Any, Path]] = []
        for s, name in enumerate(self.style_names):
            sname = safe_name(name)
            if photos[s] is not None:
                items.append((photos[s], folder / f"{sname}.jpg"))
            items.append((self.style_images[s], folder / f"{sname}_style.jpg"))
            for c, cname in enumerate(self.content_names):
                suffix = "" if c == 0 else f"_{safe_name(cname)}"
                items.append((self.mixed_images[c, s], folder / f"transferred_{sname}{suffix}.jpg"))
        return _save_jpegs(items, label=label, quality=quality)


def _open(img: Any, *, square: bool = False):
    """A PIL RGB image from a PIL image or a path; ``square``: centre-cropped to a square (for grid cells)."""
    im = load_image(img)
    if square and im.width != im.height:
        side = min(im.size)
        im = ImageOps.fit(im, (side, side), Image.Resampling.LANCZOS)
    return im


def _save_jpegs(items: Iterable[tuple[Any, Path]], *, label: str | None, quality: int) -> list[Path]:
    """Save each (image, path) as JPEG, stamped with ``label`` when given; returns the paths.

    Images: tensors (3, H, W) in [-1, 1], PIL images or paths.
    """
    written = []
    for img, path in items:
        im = to_pil(img) if torch.is_tensor(img) else _open(img)
        save_image(stamp(im, label) if label else im, path, quality=quality)
        written.append(path)
    return written


def _photos(photos: Any, names: Sequence[str], *, open_: bool = True) -> list[Any]:
    """One photo (or None) per name, from a sequence or a {name: photo} mapping; opened and
    squared for grid cells unless ``open_`` is False."""
    if photos is None:
        items: list[Any] = [None] * len(names)
    elif isinstance(photos, Mapping):
        items = [photos.get(n) for n in names]
    else:
        photos = list(photos)
        items = [photos[i] if i < len(photos) else None for i in range(len(names))]
    return [None if p is None else (_open(p, square=True) if open_ else p) for p in items]


def style_table(G: torch.nn.Module, contents: Any, styles: Any, *, rows: MaskSpec = "style",
                strength: float = 1.0, batch_size: int = 8, progress: bool = True) -> StyleTable:
    """Transfer every style onto every content face and render everything.

    Args:
        G: the generator, or a one-photo :class:`~facelib.tuning.Tuning` of the content photo
            (everything renders through its tuned generator; so does a one-photo content
            Projection carrying its tuning, :func:`facelib.tuning.attach_tuning`).
        contents, styles: W+ latents: tensors (N, n_latent, D), Projections (their noise maps
            and names are used), lists of those, or {name: latent} mappings.
        rows, strength: as for :func:`mix_styles`.
        batch_size: images per synthesis call.
    Returns:
        :class:`StyleTable`.
    """
    G = as_generator(G, contents)  # a one-photo Tuning (or a content projection carrying one) renders tuned
    c = latents_for(G, contents, "contents")
    s = latents_for(G, styles, "styles")
    mask = LayerMask.coerce(rows, G.n_latent, name="rows")
    k = check_strength(strength)
    n_c = c.wplus.shape[0]
    mixed = torch.stack([mix_styles(c.wplus[i], s.wplus, rows=mask, strength=k) for i in range(n_c)])  # [C, S, L, D]
    content_images = render(G, c.wplus, noise=c.noises, batch_size=batch_size)
    style_images = render(G, s.wplus, noise=s.noises, batch_size=batch_size)
    mixed_images = torch.stack([
        render(G, mixed[i], noise=None if c.noises is None else c.one(i).noises, batch_size=batch_size,
               progress=progress, desc=f"style transfer {i + 1}/{n_c}")
        for i in range(n_c)])
    return StyleTable(content_wplus=c.wplus, style_wplus=s.wplus, mixed_wplus=mixed, content_images=content_images,
                      style_images=style_images, mixed_images=mixed_images, content_names=tuple(c.names),
                      style_names=tuple(s.names), mask=mask, strength=k)


# ----------------------------------------------------------------------------------------
# Expression table (notebook 04)
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True, repr=False)
class ExpressionTable:
    """Expression deltas applied to target faces, with and without their row masks (:func:`expression_table`).

    Attributes:
        target_wplus: (T, n_latent, D).
        emotions: emotion names, in column order.
        deltas: (E, n_latent, D), one :func:`expression_delta` per emotion.
        masks: one :class:`LayerMask` per emotion.
        edited_wplus / unmasked_wplus: (T, E, n_latent, D) with the mask / with every row.
        target_images: (T, 3, H, W); neutral_image: (3, H, W) (first neutral reference);
        reference_images: (E, 3, H, W) (first reference of each emotion);
        edited_images / unmasked_images: (T, E, 3, H, W). All float32 in [-1, 1].
        target_names: labels. strength: the deltas' strength.
    """

    target_wplus: torch.Tensor
    emotions: tuple[str, ...]
    deltas: torch.Tensor
    masks: tuple[LayerMask, ...]
    edited_wplus: torch.Tensor
    unmasked_wplus: torch.Tensor
    target_images: torch.Tensor
    neutral_image: torch.Tensor
    reference_images: torch.Tensor
    edited_images: torch.Tensor
    unmasked_images: torch.Tensor
    target_names: tuple[str, ...]
    strength: float

    def __repr__(self) -> str:
        masks = {e: str(m) for e, m in zip(self.emotions, self.masks)}
        return f"ExpressionTable(targets={list(self.target_names)}, masks={masks}, strength={self.strength:g})"

    def grid(self, *, photos: Mapping[str, Any] | None = None, cell: int = 256, title: str | None = None,
             unmasked: bool = False, reference_label: str = "projection"):
        """The report's table: reference photos (when given), their projections, each target with each expression.

        Args:
            photos: {"neutral": image, "happy": image, ...} reference photos (PIL or paths).
            reference_label: what the reference latents are, in the row label
                (:attr:`facelib.edit_inputs.EditInputs.reference_label`: "projection", or a stand-in).
            unmasked: add a row per target with the unmasked (every row) results.
        """
        cols = ["neutral"] + list(self.emotions)
        rows, labels = [], []
        if photos:
            rows.append(_photos(photos, cols))
            labels.append("photo")
        rows.append([self.neutral_image] + list(self.reference_images))
        labels.append(reference_label)
        for t, name in enumerate(self.target_names):
            rows.append([self.target_images[t]] + list(self.edited_images[t]))
            labels.append(name)
            if unmasked:
                rows.append([self.target_images[t]] + list(self.unmasked_images[t]))
                labels.append(f"{name}, no mask")
        masks = ", ".join(f"{e}: {m}" for e, m in zip(self.emotions, self.masks))
        return make_grid(rows, cell=cell, row_labels=labels, col_labels=cols,
                         title=title or f"expressions, strength {self.strength:g}; rows {masks}")

    def comparison_grid(self, *, target: int = 0, cell: int = 256, title: str | None = None):
        """Per emotion: target, all rows (artefacts such as lighting or glasses), masked rows."""
        rows = [[self.target_images[target], self.unmasked_images[target, e], self.edited_images[target, e]]
                for e in range(len(self.emotions))]
        caps = [["", "rows: all", f"rows: {m}"] for m in self.masks]
        return make_grid(rows, cell=cell, row_labels=list(self.emotions), captions=caps,
                         col_labels=["target", "no mask", "masked"],
                         title=title or f"{self.target_names[target]}: the delta on every row vs on the masked rows")

    def save_images(self, folder: "str | os.PathLike[str]", *, photos: Mapping[str, Any] | None = None,
                    quality: int = 95, label: str | None = None) -> list[Path]:
        """Write ``<emotion>_photo.jpg`` (when given), ``<emotion>.jpg`` (projections, neutral included),
        ``target.jpg``, ``transferred_<emotion>.jpg`` and ``transferred_<emotion>_unmasked.jpg``
        (later targets get a ``_<target>`` suffix) into ``folder``."""
        folder = Path(folder)
        items: list[tuple[Any, Path]] = [(photo, folder / f"{safe_name(name)}_photo.jpg")
                                         for name, photo in (photos or {}).items() if photo is not None]
        items.append((self.neutral_image, folder / "neutral.jpg"))
        items += [(img, folder / f"{safe_name(name)}.jpg") for img, name in zip(self.reference_images, self.emotions)]
        for t, tname in enumerate(self.target_names):
            suffix = "" if t == 0 else f"_{safe_name(tname)}"
            items.append((self.target_images[t], folder / f"target{suffix}.jpg"))
            for e, name in enumerate(self.emotions):
                stem = f"transferred_{safe_name(name)}{suffix}"
                items += [(self.edited_images[t, e], folder / f"{stem}.jpg"),
                          (self.unmasked_images[t, e], folder / f"{stem}_unmasked.jpg")]
        return _save_jpegs(items, label=label, quality=quality)


def expression_table(G: torch.nn.Module, target: Any, neutral: Any, emotions: Mapping[str, Any], *,
                     masks: "MaskSpec | Mapping[str, MaskSpec]" = None, strength: float = 1.0,
                     batch_size: int = 8, progress: bool = True) -> ExpressionTable:
    """Compute each emotion's delta against the neutral references and apply it to the targets.

    Args:
        G: the generator, or a one-photo :class:`~facelib.tuning.Tuning` of the target photo
            (everything renders through its tuned generator).
        target: the faces to edit (tensor, Projection, list or mapping; see :func:`style_table`).
        neutral: neutral references (K >= 1).
        emotions: {name: references} (each K_e >= 1), e.g. {"happy": ..., "sad": ..., "fear": ...}.
        masks: None (each emotion's :data:`EXPRESSION_MASKS` entry, else ``"expression"``), one
            mask for all, or {name: mask}.
        strength: the deltas' strength.
    Returns:
        :class:`ExpressionTable`.
    """
    if not isinstance(emotions, Mapping) or not emotions:
        raise InputError("emotions: expected a non-empty {name: reference latents} mapping")
    G = as_generator(G, target)  # a one-photo Tuning (or a target projection carrying one) renders tuned
    t = latents_for(G, target, "target")
    nl = latents_for(G, neutral, "neutral")
    names = tuple(str(k) for k in emotions)
    refs = {name: latents_for(G, emotions[name], f"emotions[{name!r}]") for name in names}
    k = check_strength(strength)
    mask_list = []
    for name in names:
        preset = name.lower() if name.lower() in EXPRESSION_MASKS else "expression"  # scaled to G by name
        if isinstance(masks, Mapping):
            spec = masks.get(name, preset)
        elif masks is None:
            spec = preset
        else:
            spec = masks
        mask_list.append(LayerMask.coerce(spec, G.n_latent, name=f"masks[{name!r}]"))
    deltas = torch.stack([expression_delta(nl.wplus, refs[n].wplus) for n in names])  # [E, L, D]
    edited = torch.stack([apply_delta(t.wplus, d, mask=m, strength=k) for d, m in zip(deltas, mask_list)], 1)
    unmasked = torch.stack([apply_delta(t.wplus, d, mask="all", strength=k) for d in deltas], 1)  # [T, E, L, D]
    target_images = render(G, t.wplus, noise=t.noises, batch_size=batch_size)
    neutral_image = render(G, nl.wplus[:1], noise=nl.one(0).noises)[0]
    reference_images = torch.cat([render(G, refs[n].wplus[:1], noise=refs[n].one(0).noises) for n in names])
    e_imgs, u_imgs = [], []
    for i in range(t.wplus.shape[0]):
        nz = None if t.noises is None else t.one(i).noises
        both = render(G, torch.cat([edited[i], unmasked[i]]), noise=nz, batch_size=batch_size, progress=progress,
                      desc=f"expressions {i + 1}/{t.wplus.shape[0]}")
        e_imgs.append(both[:len(names)])
        u_imgs.append(both[len(names):])
    return ExpressionTable(target_wplus=t.wplus, emotions=names, deltas=deltas, masks=tuple(mask_list),
                           edited_wplus=edited, unmasked_wplus=unmasked, target_images=target_images,
                           neutral_image=neutral_image, reference_images=reference_images,
                           edited_images=torch.stack(e_imgs), unmasked_images=torch.stack(u_imgs),
                           target_names=tuple(t.names), strength=k)


