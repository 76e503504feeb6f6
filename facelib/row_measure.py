"""Measuring what each W+ row does: apply an edit one row at a time and look at the image.

:func:`row_effects` renders an expression delta or a style with one row at a time and measures
the image change inside and outside the face (:func:`facelib.face_regions.face_region`) and in
mean colour, so an edit's row mask is chosen from a measurement (:meth:`RowEffects.suggest_mask`).
Measurements are cached on disk under :func:`row_effects_cache_key`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import __version__
from ._io import atomic_path
from ._optim import generator_id
from .edits import apply_delta, as_wplus, check_strength, LayerMask, MaskSpec, mix_styles, render
from .errors import check_shape, InputError, RangeError
from .face_regions import face_region, ffhq_ellipse_mask
from .grids import make_grid
from .progress import progress_bar as tqdm

__all__ = ["RowEffects", "row_effects", "row_effects_cache_key"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, repr=False)
class RowEffects:
    """How much an edit changes the image when applied to one W+ row at a time.

    Changes are mean absolute pixel differences from the unedited rendering in [0, 1] image
    units (1 = black to white), averaged over RGB and over the face region (``inside``,
    weighted by the region mask) or the rest of the image (``outside``); ``colour`` is the
    Euclidean norm of the change of the whole image's mean RGB (same units).

    Attributes:
        kind: "delta" or "style".
        inside, outside, colour: one value per row (0 exactly when the row's edit is a no-op).
        full: (inside, outside, colour) of the edit on all rows at once.
        strength: the edit's strength.
        region_source: where the face region came from (landmarks or the FFHQ ellipse).
        region: (H, W) float32 in [0, 1], the face region used.
        base: (3, t, t) thumbnail of the unedited rendering, in [-1, 1].
        thumbnails: (n_latent, 3, t, t) thumbnails of each single-row edit.
        full_thumbnail: (3, t, t) thumbnail of the all-rows edit.
        skipped: rows whose edit left the latent unchanged (not rendered).
    """

    kind: str
    inside: tuple[float, ...]
    outside: tuple[float, ...]
    colour: tuple[float, ...]
    full: tuple[float, float, float]
    strength: float
    region_source: str
    region: torch.Tensor
    base: torch.Tensor
    thumbnails: torch.Tensor
    full_thumbnail: torch.Tensor
    skipped: tuple[int, ...] = ()

    @property
    def n_latent(self) -> int:
        return len(self.inside)

    def __repr__(self) -> str:
        top = sorted(range(self.n_latent), key=lambda r: -self.inside[r])[:3]
        return (f"RowEffects(kind={self.kind!r}, n_latent={self.n_latent}, strongest rows inside the face={top}, "
                f"region={self.region_source!r})")

    def locality(self) -> tuple[float, ...]:
        """Per row: inside / outside (inf when only the face changes, nan when nothing does)."""
        out = []
        for i, o in zip(self.inside, self.outside):
            out.append(float("nan") if i == 0 and o == 0 else (float("inf") if o == 0 else i / o))
        return tuple(out)

    def suggest_mask(self, threshold: float = 0.25, *, min_locality: float = 1.0,
                     max_colour: float | None = None) -> LayerMask:
        """The rows worth editing, by measurement.

        A row is kept when its change inside the face is at least ``threshold`` times the
        strongest row's, at least ``min_locality`` times its change outside the face (0
        disables this test), and, if given, its colour shift is at most ``max_colour``.
        """
        if not 0 <= threshold <= 1:
            raise RangeError(f"threshold: expected a fraction in [0, 1], got {threshold!r}")
        peak = max(self.inside) if self.inside else 0.0
        keep = []
        for r in range(self.n_latent):
            i, o, c = self.inside[r], self.outside[r], self.colour[r]
            if peak <= 0 or i <= 0 or i < threshold * peak:
                continue
            if min_locality > 0 and i < min_locality * o:
                continue
            if max_colour is not None and c > max_colour:
                continue
            keep.append(r)
        return LayerMask.from_rows(keep, self.n_latent)

    def summary(self) -> str:
        """A text table: one line per row."""
        lines = [f"{self.kind} edit, strength {self.strength:g}; face region: {self.region_source}",
                 "row   inside  outside   colour  in/out"]
        for r, (i, o, c, q) in enumerate(zip(self.inside, self.outside, self.colour, self.locality())):
            lines.append(f"{r:>3}  {i:7.4f}  {o:7.4f}  {c:7.4f}  {q:6.2f}" + ("  (no-op)" if r in self.skipped else ""))
        lines.append(f"all  {self.full[0]:7.4f}  {self.full[1]:7.4f}  {self.full[2]:7.4f}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready numbers (no tensors)."""
        return {"kind": self.kind, "strength": self.strength, "region_source": self.region_source,
                "inside": list(self.inside), "outside": list(self.outside), "colour": list(self.colour),
                "full": list(self.full), "skipped": list(self.skipped)}

    def plot(self, *, title: str | None = None, mask: MaskSpec = None, figsize: tuple[float, float] = (9, 5)):
        """Bars per row: change inside / outside the face, and mean-colour shift.

        Args:
            title: figure title (default: kind, strength and region source).
            mask: optional rows to mark (e.g. :meth:`suggest_mask`) with a shaded background.
        Returns:
            A ``matplotlib.figure.Figure`` (not registered with pyplot; display or ``savefig`` it).
        """
        from matplotlib.figure import Figure  # plotting only: matplotlib stays optional for the library

        rows = np.arange(self.n_latent)
        fig = Figure(figsize=figsize, layout="constrained")
        ax1, ax2 = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
        if mask is not None:
            m = LayerMask.coerce(mask, self.n_latent)
            for r in m.rows:
                for ax in (ax1, ax2):
                    ax.axvspan(r - 0.5, r + 0.5, color="#fff2cc", zorder=0)
        ax1.bar(rows - 0.2, self.inside, width=0.4, label="inside the face", color="#d62728")
        ax1.bar(rows + 0.2, self.outside, width=0.4, label="outside the face", color="#1f77b4")
        ax1.set_ylabel("mean |change|")
        ax1.legend(loc="upper right")
        ax2.bar(rows, self.colour, width=0.6, color="#7f7f7f")
        ax2.set_ylabel("mean-colour shift")
        ax2.set_xlabel("W+ row edited alone")
        ax2.set_xticks(rows)
        fig.suptitle(title or f"per-row effect of the {self.kind} edit (strength {self.strength:g}); "
                              f"face region: {self.region_source}", fontsize=9)
        return fig

    def grid(self, *, cell: int = 96, title: str | None = None):
        """PIL table: the unedited rendering, the face region, the all-rows edit, then each single-row edit."""
        t = self.base.shape[-1]
        region = F.interpolate(self.region[None, None].float(), size=(t, t), mode="bilinear",
                               align_corners=False)[0]
        shaded = (self.base + 1) * (0.3 + 0.7 * region) - 1  # darken outside the face region
        cells = [self.base, shaded, self.full_thumbnail] + list(self.thumbnails)
        labels = ["target", "face region", "all rows"] + [f"row {r}" for r in range(self.n_latent)]
        caps = ["", "", f"{self.full[0]:.3f}/{self.full[1]:.3f}"] + [
            f"{i:.3f}/{o:.3f}" for i, o in zip(self.inside, self.outside)]
        per = 10
        rows = [cells[k:k + per] for k in range(0, len(cells), per)]
        caps_rows = [[f"{labels[k + j]} {caps[k + j]}".strip() for j in range(len(r))]
                     for k, r in zip(range(0, len(cells), per), rows)]
        return make_grid(rows, cell=cell, captions=caps_rows,
                         title=title or "single-row edits (caption: change inside / outside the face)")


def _measure(images: torch.Tensor, base: torch.Tensor, region: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per image: change inside / outside the region and mean-colour shift, in [0, 1] units."""
    diff = (images - base).abs().mean(1) / 2  # [n, H, W]
    m = region[None]
    inside = (diff * m).sum((1, 2)) / m.sum()
    outside = (diff * (1 - m)).sum((1, 2)) / (1 - m).sum()
    colour = (images.mean((2, 3)) - base.mean((2, 3))).norm(dim=1) / 2
    return inside, outside, colour


def _thumb(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size:
        return images.clone()
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=images.shape[-1] > size).clamp(-1, 1)


def row_effects(G: torch.nn.Module, target_wplus: Any, *, delta: torch.Tensor | None = None,
                style_wplus: Any = None, strength: float = 1.0, mask_region: Any = None,
                target_image: Any = None, noise: Any = None, batch_size: int = 6, thumb_size: int = 96,
                progress: bool = True, cache_dir: "str | os.PathLike[str] | None" = None) -> RowEffects:
    """Apply an edit to one W+ row at a time and measure the change inside and outside the face.

    Exactly one of ``delta`` (an expression-style edit, :func:`apply_delta`) or ``style_wplus``
    (style mixing, :func:`mix_styles`) is given. The ``n_latent`` single-row variants go
    through ``G`` in chunks of ``batch_size``; a variant whose latent equals the target (the
    delta is zero on that row, or the style row equals the target's) is not rendered and
    counts as exactly 0.

    Args:
        G: the generator.
        target_wplus: (n_latent, D) or (1, n_latent, D), or a one-image Projection (its noise
            maps are then used unless ``noise`` is given).
        delta: (n_latent, D) W+ direction.
        style_wplus: (n_latent, D) or (1, n_latent, D) style latent (or Projection).
        strength: the edit's strength.
        mask_region: the face region: None / "auto" (dlib landmarks on ``target_image`` if
            given, else on the target's rendering; FFHQ ellipse when no face is found),
            "ellipse", an :class:`~facelib.align.AlignedFace`, or an (H, W) mask in [0, 1].
        target_image: the aligned photo the target was projected from (for "auto").
        noise: noise for :func:`render` (default: the Projection's maps, else G's buffers).
        batch_size: variants per synthesis call.
        thumb_size: side of the stored thumbnails.
        cache_dir: reuse / store the measurement there, keyed by the generator, the target, the
            edit, the strength, the region and photo given, the noise maps and ``thumb_size``
            (:func:`row_effects_cache_key`); a hit is returned without rendering anything.
    Returns:
        :class:`RowEffects`; :attr:`RowEffects.region_source` says which region was used.
    Raises:
        InputError: neither or both of ``delta`` / ``style_wplus``; an empty or full region.
        ShapeError: latents that do not fit ``G``.
    """
    if (delta is None) == (style_wplus is None):
        raise InputError("row_effects: give exactly one of delta= (an expression delta) or style_wplus= (a style)")
    if noise is None and getattr(target_wplus, "noises", None):
        noise = target_wplus.noises
    t = as_wplus(target_wplus, "target_wplus").detach().float().cpu()
    if t.ndim == 3:
        check_shape("target_wplus (one latent)", t, (1, G.n_latent, G.style_dim))
        t = t[0]
    check_shape("target_wplus", t, (G.n_latent, G.style_dim))
    if isinstance(noise, (list, tuple)):
        noise = [None if nz is None else nz[:1] for nz in noise]
    k = check_strength(strength)
    n = G.n_latent
    if delta is not None:
        d = as_wplus(delta, "delta").detach().float().cpu()
        kind = "delta"

        def edit(mask: LayerMask) -> torch.Tensor:
            return apply_delta(t, d, mask=mask, strength=k)
    else:
        s = as_wplus(style_wplus, "style_wplus").detach().float().cpu()
        if s.ndim == 3:
            s = s[0] if s.shape[0] == 1 else s
        kind = "style"

        def edit(mask: LayerMask) -> torch.Tensor:
            return mix_styles(t, s, rows=mask, strength=k)

    cache_path = None
    if cache_dir is not None:
        key = row_effects_cache_key(G, t, d if delta is not None else s, kind=kind, strength=k,
                                    mask_region=mask_region, target_image=target_image, noise=noise,
                                    thumb_size=thumb_size)
        cache_path = Path(cache_dir) / key[:2] / f"{key}.pt"
        hit = _load_row_effects(cache_path)
        if hit is not None:
            log.info("row effects: reusing the measurement %s", cache_path)
            return hit
    variants = [edit(LayerMask.from_rows([r], n)) for r in range(n)]
    for v in variants:
        check_shape("row_effects: the edited latent (pass a single delta / style)", v, (n, G.style_dim))
    full = edit(LayerMask.coerce(None, n))
    todo = [r for r in range(n) if not torch.equal(variants[r], t)]
    skipped = tuple(r for r in range(n) if r not in todo)

    base = render(G, t[None], noise=noise)
    region, source = _resolve_region(mask_region, G.resolution, base, target_image)
    if float(region.sum()) <= 0 or float((1 - region).sum()) <= 0:
        raise InputError("mask_region: the face region must cover part of the image, not none or all of it")

    inside = [0.0] * n
    outside = [0.0] * n
    colour = [0.0] * n
    base_thumb = _thumb(base, thumb_size)[0]
    thumbs = base_thumb[None].repeat(n, 1, 1, 1)
    batch = torch.stack([variants[r] for r in todo] + [full])  # [len(todo) + 1, L, D]

    chunks = list(range(0, batch.shape[0], max(1, batch_size)))
    full_vals = (0.0, 0.0, 0.0)
    full_thumb = base_thumb
    for s0 in tqdm(chunks, desc=f"row effects ({kind})", disable=not progress, leave=False):
        imgs = render(G, batch[s0:s0 + batch_size], noise=noise, batch_size=batch_size)
        ins, outs, cols = _measure(imgs, base, region)
        th = _thumb(imgs, thumb_size)
        for j in range(imgs.shape[0]):
            idx = s0 + j
            if idx == len(todo):
                full_vals = (float(ins[j]), float(outs[j]), float(cols[j]))
                full_thumb = th[j]
                continue
            r = todo[idx]
            inside[r], outside[r], colour[r] = float(ins[j]), float(outs[j]), float(cols[j])
            thumbs[r] = th[j]
    result = RowEffects(kind=kind, inside=tuple(inside), outside=tuple(outside), colour=tuple(colour),
                        full=full_vals, strength=k, region_source=source, region=region, base=base_thumb,
                        thumbnails=thumbs, full_thumbnail=full_thumb, skipped=skipped)
    if cache_path is not None:
        with atomic_path(cache_path) as tmp:
            torch.save({"format": "facelib.row_effects", **result.to_dict(), "region": region.float(),
                        "base": base_thumb.float(), "thumbnails": thumbs.float(), "full_thumbnail": full_thumb.float()},
                       tmp)
    return result


def _digest(x: Any) -> Any:
    """A JSON-ready stand-in of a cache-key part: tensors, arrays and images by their bytes' SHA-256."""
    if x is None or isinstance(x, (str, int, float, bool)):
        return x
    if isinstance(x, os.PathLike):
        p = Path(x)
        return {"file": str(p), "sha256": hashlib.sha256(p.read_bytes()).hexdigest()} if p.is_file() else str(p)
    if isinstance(x, (list, tuple)):
        return [_digest(v) for v in x]
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().float().contiguous().numpy()
    if isinstance(x, np.ndarray):
        return {"shape": list(x.shape), "sha256": hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()}
    if hasattr(x, "tobytes") and hasattr(x, "size"):  # a PIL image
        return {"size": list(x.size), "mode": getattr(x, "mode", ""), "sha256": hashlib.sha256(x.tobytes()).hexdigest()}
    fields = getattr(x, "__dataclass_fields__", None)
    if fields:
        return {name: _digest(getattr(x, name)) for name in fields}
    return repr(x)


def row_effects_cache_key(G: torch.nn.Module, target: torch.Tensor, edit: torch.Tensor, *, kind: str,
                          strength: float, mask_region: Any = None, target_image: Any = None, noise: Any = None,
                          thumb_size: int = 96) -> str:
    """SHA-256 (hex) over everything that determines a :func:`row_effects` measurement.

    Args:
        target: (n_latent, D) the target latent; edit: the delta (n_latent, D) or the style latent.
        kind: "delta" or "style"; the rest as for :func:`row_effects`.
    """
    parts = {"format": "facelib.row_effects", "facelib": __version__, "generator": generator_id(G),
             "target": _digest(target), "edit": _digest(edit), "kind": kind, "strength": float(strength),
             "mask_region": _digest(mask_region), "target_image": _digest(target_image), "noise": _digest(noise),
             "thumb_size": int(thumb_size)}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _load_row_effects(path: Path) -> RowEffects | None:
    """A measurement stored by :func:`row_effects` (None when absent or unreadable, logged)."""
    if not path.is_file():
        return None
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(d, dict) or d.get("format") != "facelib.row_effects":
            raise ValueError("not a row-effects cache entry")
        return RowEffects(kind=str(d["kind"]), inside=tuple(map(float, d["inside"])),
                          outside=tuple(map(float, d["outside"])), colour=tuple(map(float, d["colour"])),
                          full=tuple(map(float, d["full"])), strength=float(d["strength"]),
                          region_source=str(d["region_source"]), region=d["region"], base=d["base"],
                          thumbnails=d["thumbnails"], full_thumbnail=d["full_thumbnail"],
                          skipped=tuple(int(r) for r in d["skipped"]))
    except Exception as e:  # noqa: BLE001 - any unreadable entry is recomputed
        log.warning("ignoring unreadable row-effects cache entry %s (%s)", path, e)
        return None


def _resolve_region(region: Any, size: int, base: torch.Tensor, target_image: Any) -> tuple[torch.Tensor, str]:
    if region is None or (isinstance(region, str) and region == "auto"):
        if target_image is not None:
            mask, src = face_region(target_image, size)
            return mask, src + ", target image"
        mask, src = face_region(base[0], size)
        return mask, src + ", rendering of the target"
    if isinstance(region, str):
        if region == "ellipse":
            return ffhq_ellipse_mask(size), "FFHQ ellipse (requested)"
        raise InputError(f"mask_region: expected None, 'auto', 'ellipse', an AlignedFace or an (H, W) mask, "
                         f"got {region!r}")
    if hasattr(region, "mask") and hasattr(region, "landmarks_aligned"):
        return region.mask(size).float(), "landmarks (aligned face)"
    m = torch.as_tensor(np.asarray(region) if not torch.is_tensor(region) else region).detach().float().cpu()
    check_shape("mask_region (an (H, W) mask)", m, (None, None))
    if m.shape != (size, size):
        m = F.interpolate(m[None, None], size=(size, size), mode="bilinear", align_corners=False)[0, 0]
    return m.clamp(0, 1), "given mask"

