"""Face swap by identity-loss optimisation in W+, and an independent judge of the result.

``face_swap(G, id_net, source, target)`` puts the identity of ``source`` (photos, or a
:class:`~facelib.projection.Projection`) onto ``target`` (a W+ latent, or a Projection) while
keeping the target's pose, hair, background and lighting. Starting at the target's W+, it
optimises only the chosen W+ rows (by default rows 0-8, the layers up to the 64 px
convolutions) with Adam on, per image,

    id_weight     * (1 - cos(id_net(crop(G(w))), id_net(crop(source))))
  + lpips_weight  * LPIPS_m(G(w), target image)
  + mse_weight    * MSE_m(G(w), target image)
  + latent_weight * mean((w - w_target)^2 over the optimised rows)

where ``_m`` means the image terms are weighted per pixel by a map that is 1 outside the
inner face and ``inner_face_weight`` inside it. The inner face is the convex hull of dlib's
68 landmarks found on the target image, or, when dlib finds no face (e.g. untrained
generators), the fixed FFHQ ellipse (:data:`facelib.face_regions.FFHQ_FACE_ELLIPSE`; both via
:func:`facelib.face_regions.face_region`); which one was used is recorded per image. The target's
noise maps are kept (a Projection's own maps, else the generator's stored ones), the rows that
are not optimised are copied unchanged from the target, and for every image the step with the
lowest loss is kept.

Why rows 0-8 by default: in StyleGAN's W+ the coarse rows (4-8 px layers) carry pose and face
shape, the middle ones (16-32 px) the facial features, and the fine ones colour and lighting
(Karras et al. 2019, style mixing). The original report transferred *style* with rows 9-17;
its swap moved eyes, brows and lips while the target's head pose and skin colour stayed (it
names no rows or weights for the swap). Rows 0-8 are exactly the complement of the style rows.
On the random-weights smoke setup (``benchmarks/swap.py``: 64 px untrained generator, random
identity network, 4 pairs, 150 steps) rows 0-8 moved the identity cosine 0.69 of the way to
the source, as far as all rows (0.68) and more than rows 0-3 (0.64), 4-8 (0.65) or the fine
rows 8-9 alone (0.42), with the same change outside the face (pixel MSE 0.025); with random
networks this is a sanity check, not evidence about real faces. Pose is held by the image
term outside the face (and ``latent_weight``); :func:`judge_swap` measures it.

Speed (``benchmarks/swap.py``, one H200, batch 1, LPIPS + IResNet-50): 0.065 s per step at
1024 px (the default 200 steps in about 13 s), 0.042 s at 256 px.

:func:`judge_swap` scores a result with the optimised identity network *and* with dlib's
face-recognition ResNet (128-d descriptors, 0.6 same-person threshold), which shares nothing
with ArcFace, plus a landmark-based pose comparison with the target. A swap that only fools
the optimised network shows up as a dlib distance to the source above the threshold.

Saved format (:meth:`SwapResult.save` / :func:`load_swap`)::

    <name>.pt    torch.save dict of tensors only (load with weights_only=True):
                   "wplus", "target_wplus"  (N, n_latent, style_dim) float32
                   "noise_k"                (N, 1, r_k, r_k) float32, the noise maps used
                   "images", "target_images" (N, 3, H, W) float16 in [-1, 1]
                   "face_masks"             (N, 1, H, W) float16 in [0, 1], 1 inside the face
    <name>.json  {"format": "facelib.swap", "version": 1, "config": {SwapConfig fields},
                  "metrics": [per image], "history": [per image], "mask_kinds", "source_names",
                  "target_names", "weights_sha256", "lpips", "device", "facelib_version",
                  "interrupted", "steps_done", "n", "resolution", "n_latent", "style_dim"}
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import __version__
from ._optim import (batch_indices, BestSteps, check_settings, Evaluation, Frozen, generator_id, image_batch,
                     known_settings,
                     lpips_option, optimise, read_result, resolve_lpips_option, save_result, StepCallback,
                     StepState)
from .align import load_image
from .edits import LayerMask
from .errors import (check_shape, CheckpointError, DependencyError, InputError, OptimisationError, RangeError,
                     ShapeError)
from .face_regions import face_region, ffhq_ellipse_mask
from .grids import make_grid, save_image, stamp, to_pil
from .losses import identity_similarity
from .projection import load_targets, lr_schedule
from .stamps import RANDOM_ID_STAMP
from .swap_judge import batch_images, broadcast_batch, embed_faces, judge_swap, swap_metrics_text
from .tuning import as_generator
from .weights import state_fingerprint

__all__ = [
    "SwapConfig",
    "SwapResult",
    "StepState",
    "face_swap",
    "load_swap",
    "save_swaps",
    "resolve_rows",
    "default_rows",
    "face_weight_map",
    "DEFAULT_ROWS",
]

log = logging.getLogger(__name__)

_FORMAT = "facelib.swap"
_VERSION = 1

#: Default optimised W+ rows: 0-8 (layers up to the 64 px convolutions; see the module docstring).
DEFAULT_ROWS: tuple[int, ...] = tuple(range(9))

_MASK_KINDS = ("auto", "landmarks", "ellipse", "none")


# ----------------------------------------------------------------------------------------
# Rows
# ----------------------------------------------------------------------------------------

def default_rows(n_latent: int) -> tuple[int, ...]:
    """:data:`DEFAULT_ROWS` clipped to a generator with ``n_latent`` W+ rows."""
    return tuple(r for r in DEFAULT_ROWS if r < n_latent)


def resolve_rows(rows: Any, n_latent: int) -> tuple[int, ...]:
    """The W+ rows to optimise, as sorted unique indices.

    Args:
        rows: None (:func:`default_rows`); or any row-mask form that
            :meth:`facelib.edits.LayerMask.coerce` accepts: a :class:`~facelib.edits.LayerMask`,
            a string ("0-8", "0-3,5", "all", presets such as "coarse,middle"), a ``range`` or
            list of rows, or a 0/1 weight vector with one entry per row.
        n_latent: the generator's number of W+ rows.
    Returns:
        Tuple of row indices in ``[0, n_latent)``, sorted, non-empty.
    Raises:
        InputError: unreadable, empty, rows outside the generator, or a mask with weights other
            than 0 and 1 (the swap optimises whole rows).
    """

    if rows is None:
        return default_rows(n_latent)
    mask = LayerMask.coerce(rows, n_latent, name="rows")
    if not mask.is_binary:
        raise InputError(f"rows: the swap optimises whole rows; expected a 0/1 mask, got weights {mask}")
    if not mask.rows:
        raise InputError("rows: no W+ row selected; nothing to optimise")
    return tuple(mask.rows)


def _rows_label(rows: Sequence[int]) -> str:
    """(0, 1, 2, 5) -> '0-2,5'."""
    parts, start, prev = [], None, None
    for r in list(rows) + [None]:
        if start is None:
            start = prev = r
        elif r is not None and r == prev + 1:
            prev = r
        else:
            parts.append(f"{start}-{prev}" if prev != start else f"{start}")
            start = prev = r
    return ",".join(parts)


# ----------------------------------------------------------------------------------------
# Face region
# ----------------------------------------------------------------------------------------

def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, 1, H, W) with zero padding (the mask fades at the border)."""
    if sigma <= 0:
        return x
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    x = F.conv2d(x, k.view(1, 1, 1, -1), padding=(0, radius))
    return F.conv2d(x, k.view(1, 1, -1, 1), padding=(radius, 0))


def _face_masks(images: torch.Tensor, kind: str, feather_frac: float) -> tuple[torch.Tensor, list[str]]:
    """Inner-face masks (N, 1, H, W) in [0, 1] of target images, and what each one is.

    ``kind``: "auto" (68-landmark hull when dlib finds the face, else the FFHQ ellipse; see
    :func:`facelib.face_regions.face_region`), "landmarks" (the hull; NoFaceError / DependencyError
    otherwise), "ellipse" (:func:`facelib.face_regions.ffhq_ellipse_mask`), "none" (zeros).
    """

    n, _, h, _ = images.shape
    size = int(h)
    if kind == "none":
        return torch.zeros(n, 1, size, size), ["none"] * n
    masks, kinds = [], []
    for i in range(n):
        if kind == "ellipse":
            m, what = ffhq_ellipse_mask(size), "ellipse"
        else:
            m, desc = face_region(images[i].detach().float().cpu().clamp(-1, 1), size, fallback=kind == "auto")
            what = "landmarks" if desc.startswith("landmarks") else "ellipse"
            if what == "ellipse":
                log.info("face region of target %d: %s", i, desc)
        masks.append(m.float()[None])
        kinds.append(what)
    out = torch.stack(masks)  # [N, 1, H, W]
    return _gaussian_blur(out, feather_frac * size).clamp(0, 1), kinds


def face_weight_map(face_masks: torch.Tensor, inner_face_weight: float) -> torch.Tensor:
    """Per-pixel weight of the image terms: 1 outside the face, ``inner_face_weight`` inside.

    Args:
        face_masks: (N, 1, H, W) in [0, 1], 1 inside the face.
        inner_face_weight: weight inside the face, >= 0.
    Returns:
        (N, 1, H, W) float in [min(1, inner_face_weight), max(1, inner_face_weight)].
    """
    return 1.0 - (1.0 - float(inner_face_weight)) * face_masks


def _weighted_mse(images: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per-image mean of ``weights * (images - targets)^2`` over pixels (normalised by the weights): (N,)."""
    err = (images - targets).square().mean(1, keepdim=True)  # [N, 1, H, W]
    return (err * weights).flatten(1).sum(1) / weights.flatten(1).sum(1).clamp_min(1e-12)


def _weighted_lpips(lpips_loss: Any, images: torch.Tensor, target_feats: Sequence[torch.Tensor],
                    weights: torch.Tensor) -> torch.Tensor:
    """LPIPS whose per-layer spatial distance maps are averaged with ``weights`` (area-resized): (N,).

    With uniform weights this equals :meth:`LPIPSLoss.distance`.
    """
    feats = lpips_loss.features(images)
    total = None
    for k, (f0, f1) in enumerate(zip(feats, target_feats)):
        d = lpips_loss.net.lins[k]((f0 - f1).square())  # [N, 1, h, w]
        wk = F.adaptive_avg_pool2d(weights, d.shape[-2:]) if weights.shape[-2:] != d.shape[-2:] else weights
        term = (d * wk).flatten(1).sum(1) / wk.flatten(1).sum(1).clamp_min(1e-12)
        total = term if total is None else total + term
    return total


# ----------------------------------------------------------------------------------------
# Judge
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SwapConfig:
    """Settings of :func:`face_swap` (everything that changes the result).

    Defaults, and where they come from:
    """

    steps: int = 200                  # ~13 s at 1024 px on an H200 (benchmarks/swap.py); the report does not say
    lr: float = 0.03                  # Adam; W+ starts at the target, so no warm-up is needed
    scheduler: str = "cosine"         # decays to 0 so the last steps settle (facelib.projection.lr_schedule)
    rows: tuple[int, ...] | None = None  # None = rows 0-8 (see the module docstring); the result records them
    id_weight: float = 1.0            # identity term 1 - cos, in [0, 2]
    lpips: str | None = "auto"        # "auto" | "vgg" | None | "module" (an lpips.LPIPS was passed)
    lpips_weight: float = 1.0         # perceptual term to the target image (as in projection)
    lpips_size: int = 256             # LPIPS works on <= 256 px (the StyleGAN projectors' size)
    mse_weight: float = 1.0           # pixel term to the target image; holds colour and the background
    latent_weight: float = 0.0        # mean (w - w_target)^2 over the optimised rows; > 0 keeps W+ near the target
    mask: str = "auto"                # "auto" (landmark hull, else FFHQ ellipse) | "landmarks" | "ellipse" | "none"
    inner_face_weight: float = 0.1    # image terms' weight inside the face (1 outside): the identity term owns it
    mask_feather: float = 0.02        # soft mask edge: Gaussian sigma as a fraction of the side
    noise: str = "target"             # "target": the target Projection's noise maps, else G's stored maps;
                                      # "random": fresh maps from seed + image index
    beta1: float = 0.9                # Adam betas (torch defaults)
    beta2: float = 0.999
    seed: int = 0                     # the optimisation itself draws no random numbers (see ``noise``)

    def __post_init__(self) -> None:
        check_settings(self, ("id_weight", "lpips_weight", "mse_weight", "latent_weight", "inner_face_weight",
                              "mask_feather"))
        if self.mask not in _MASK_KINDS:
            raise InputError(f"mask: expected one of {_MASK_KINDS}, got {self.mask!r}")
        if self.noise not in ("target", "random"):
            raise InputError(f"noise: expected 'target' or 'random', got {self.noise!r}")
        if self.rows is not None:
            object.__setattr__(self, "rows", tuple(int(r) for r in self.rows))
        if self.id_weight + self.lpips_weight + self.mse_weight + self.latent_weight <= 0:
            raise InputError("id_weight, lpips_weight, mse_weight and latent_weight are all 0: nothing to optimise")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["rows"] = None if self.rows is None else list(self.rows)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SwapConfig":
        kw = known_settings(cls, d, "swap")
        if kw.get("rows") is not None:
            kw["rows"] = tuple(kw["rows"])
        return cls(**kw)

    def lr_at(self, step: int) -> float:

        return lr_schedule(self.scheduler, step, self.steps, self.lr)


#: Stamp on a saved swap result that is the target unchanged (no step improved on the start).
UNCHANGED_STAMP = "SWAP DID NOTHING - this is the target unchanged (best step 0)"


@dataclass(frozen=True, repr=False)
class SwapResult:
    """Result of :func:`face_swap` for N (source, target) pairs.

    Attributes:
        wplus: (N, n_latent, style_dim) float32 CPU, the swapped latents; rows outside
            ``config.rows`` equal ``target_wplus``'s exactly.
        target_wplus: (N, n_latent, style_dim) the targets' latents.
        noises: num_layers tensors (N, 1, r, r): ``G.synthesis(wplus, noise=noises)`` renders ``images``.
        images: (N, 3, H, W) float32 in [-1, 1], the results (clamped).
        target_images: (N, 3, H, W) in [-1, 1], the targets' renderings (what the image terms compare to).
        face_masks: (N, 1, H, W) in [0, 1], the inner-face region used (1 inside).
        mask_kinds: per image "landmarks" (dlib hull on the target), "ellipse" (FFHQ fallback) or "none".
        metrics: per image: "id_to_source", "id_to_target", "id_target_to_source", "id_moved"
            (optimised network), "mse_to_target", "mse_outside_face", "lpips_to_target" (when
            LPIPS ran), the dlib judge's figures when it ran (see :class:`SwapJudgement`),
            "best_step", "best_loss", "interrupted", "mask", "unchanged" (True: no step improved on
            the start, the result is the target as it was; see :attr:`unchanged`).
        history: per image per-step lists "lr", "loss", "id", "mse", "lpips", "latent".
        config: the :class:`SwapConfig` (``rows`` resolved).
        source_names / target_names: per image names or None.
        weights_sha256, lpips, device, facelib_version, interrupted, steps_done: provenance.
    """

    wplus: torch.Tensor
    target_wplus: torch.Tensor
    noises: list[torch.Tensor]
    images: torch.Tensor
    target_images: torch.Tensor
    face_masks: torch.Tensor
    mask_kinds: list[str]
    metrics: list[dict[str, Any]]
    history: list[dict[str, list[float]]]
    config: SwapConfig
    source_names: list[str | None]
    target_names: list[str | None]
    weights_sha256: str | None = None
    lpips: str | None = None
    device: str = "cpu"
    facelib_version: str = ""
    interrupted: bool = False
    steps_done: int = 0

    def __len__(self) -> int:
        return int(self.wplus.shape[0])

    def __repr__(self) -> str:
        ids = ", ".join(f"{m.get('id_to_source', float('nan')):.2f}" for m in self.metrics[:8])
        same = sum(self.unchanged)
        return (f"SwapResult(n={len(self)}, rows={_rows_label(self.config.rows or ())}, steps_done="
                f"{self.steps_done}/{self.config.steps}, id_to_source=[{ids}], interrupted={self.interrupted}"
                + (f", UNCHANGED (the swap did nothing)={same}" if same else "") + ")")

    def select(self, index: "int | slice | Sequence[int]") -> "SwapResult":
        """Some of the pairs: an int, a slice or a list of indices."""
        idx = batch_indices(index, len(self), "swap")
        t = torch.tensor(idx, dtype=torch.long)
        return dataclasses.replace(
            self, wplus=self.wplus[t], target_wplus=self.target_wplus[t], noises=[nz[t] for nz in self.noises],
            images=self.images[t], target_images=self.target_images[t], face_masks=self.face_masks[t],
            mask_kinds=[self.mask_kinds[i] for i in idx], metrics=[self.metrics[i] for i in idx],
            history=[self.history[i] for i in idx], source_names=[self.source_names[i] for i in idx],
            target_names=[self.target_names[i] for i in idx])

    __getitem__ = select

    def __iter__(self) -> Iterator["SwapResult"]:
        return (self.select(i) for i in range(len(self)))

    def to_pil(self) -> list:
        """The results as PIL images."""

        return to_pil(self.images)

    @property
    def unchanged(self) -> list[bool]:
        """Per pair: True when the swap did nothing, i.e. no step improved on the start (best
        step 0), so the result is the target's own latent (metric "unchanged"; results saved
        without it: ``best_step`` 0 or less)."""
        return [bool(m.get("unchanged", int(m.get("best_step", 1)) <= 0)) for m in self.metrics]

    def no_change_note(self, i: int = 0) -> str:
        """A sentence saying pair ``i``'s swap did nothing ("" when it changed the face)."""
        if not self.unchanged[i]:
            return ""
        m = self.metrics[i]
        moved = m.get("id_moved")
        return ("the swap did nothing: no step improved on the start (best step 0"
                + (f", identity moved {moved:.3f}" if isinstance(moved, (int, float)) else "")
                + "), so the result is the target unchanged; try more steps, a higher id_weight, "
                  "another lr or other rows")

    def caption(self, i: int = 0) -> str:
        """A short text of image ``i``'s identity and pose figures (:func:`swap_metrics_text`)."""
        return swap_metrics_text(self.metrics[i], unchanged=self.unchanged[i])

    def grid(self, source_images: Any, *, target_photos: Sequence[Any] | None = None, cell: int = 256,
             title: str | None = None):
        """The report's table: one row per pair, columns source / target / [target projection] / result.

        Args:
            source_images: (N or 1, 3, H, W) in [-1, 1] (or PIL images), the identity donors.
            target_photos: per pair the target's photo (PIL / path / tensor) or None; when any is
                given a "target projection" column shows the renderings beside the photos.
            cell: side of each cell in pixels.
            title: a line above the table.
        Returns:
            PIL image; under the target: dlib distance target-source and the pose change, under the
            result: identity cosine to the source before -> after (optimised network) and the
            dlib distance to the source ("no face" when dlib fell back to the fixed box).
        """

        n = len(self)
        srcs = list(source_images) if not isinstance(source_images, torch.Tensor) else list(
            broadcast_batch(n, batch_images(source_images, "source_images"))[0])
        if len(srcs) == 1 and n > 1:
            srcs = srcs * n
        photos = list(target_photos) if target_photos is not None else [None] * n
        with_photos = any(p is not None for p in photos)
        rows, captions = [], []
        for i in range(n):
            m = self.metrics[i]
            photo = photos[i]
            if photo is not None and not isinstance(photo, torch.Tensor):
                photo = load_image(photo)
            under_target = ""
            if "dlib_target_to_source" in m:
                under_target = f"dlib t-s {m['dlib_target_to_source']:.2f}"
            if "yaw_change" in m:
                under_target += f" dyaw {m['yaw_change']:+.2f}"
            under_result = f"id {m['id_target_to_source']:.2f}->{m['id_to_source']:.2f}"
            if self.unchanged[i]:
                under_result = "UNCHANGED: swap did nothing"
            if "dlib_to_source" in m:
                det = m.get("dlib_detected", {})
                under_result += f" dlib {m['dlib_to_source']:.2f}" + ("" if all(det.values()) else " no face")
            if with_photos:
                rows.append([srcs[i], photo if photo is not None else self.target_images[i], self.target_images[i],
                             self.images[i]])
                captions.append(["", "", under_target, under_result])
            else:
                rows.append([srcs[i], self.target_images[i], self.images[i]])
                captions.append(["", under_target, under_result])
        cols = (["source", "target", "target projection", "swap"] if with_photos else ["source", "target", "swap"])
        return make_grid(rows, cell=cell, col_labels=cols, captions=captions, title=title)

    # -- persistence ------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The JSON sidecar's content (everything except tensors)."""
        return {
            "format": _FORMAT, "version": _VERSION, "n": len(self), "resolution": int(self.images.shape[-1]),
            "n_latent": int(self.wplus.shape[1]), "style_dim": int(self.wplus.shape[2]),
            "config": self.config.to_dict(), "rows_label": _rows_label(self.config.rows or ()),
            "metrics": self.metrics, "history": self.history, "mask_kinds": list(self.mask_kinds),
            "source_names": list(self.source_names), "target_names": list(self.target_names),
            "weights_sha256": self.weights_sha256, "lpips": self.lpips, "device": self.device,
            "facelib_version": self.facelib_version, "interrupted": self.interrupted,
            "steps_done": self.steps_done,
        }

    def save(self, path: "str | os.PathLike[str]", *, extra: Mapping[str, Any] | None = None) -> Path:
        """Write ``path`` (tensors, ``weights_only``-loadable) and ``path.with_suffix('.json')``,
        both atomically, the JSON last (``extra``: more JSON entries, e.g. what made it). Returns
        the JSON path."""
        tensors = {"wplus": self.wplus.float(), "target_wplus": self.target_wplus.float(),
                   "images": self.images.half(), "target_images": self.target_images.half(),
                   "face_masks": self.face_masks.half()}
        return save_result(path, tensors, self.noises, {**self.to_json(), **dict(extra or {})})


def save_swaps(result: SwapResult, paths: Sequence["str | os.PathLike[str]"], *, stamps: Sequence[str | None] = (),
               random_id: bool = False, extra: Mapping[str, Any] | None = None, **save_kwargs: Any) -> list[Path]:
    """Write pair ``i`` of ``result`` as ``paths[i]`` (the image; JPEG, PNG, ... by suffix), then
    ``.pt`` and ``.json`` beside it (:meth:`SwapResult.save`; the JSON, last, marks a complete set).

    Every image carries the stamps that say what it is: ``stamps`` (e.g. the smoke-run label;
    None entries are skipped), :data:`facelib.data.RANDOM_ID_STAMP` when ``random_id`` (the
    identity network is the untrained one of :func:`facelib.data.identity_network`), and
    :data:`UNCHANGED_STAMP` when the pair's swap did nothing. The notebook and ``python -m
    facelib swap`` both save through here.

    Args:
        result: N pairs. paths: N image paths. save_kwargs: for :func:`facelib.grids.save_image`
            (e.g. ``quality=95``). extra: more entries for every JSON (e.g. the inputs' hashes).
    Returns:
        The image paths written.
    Raises:
        InputError: not one path per pair.
    """

    paths = [Path(p) for p in paths]
    if len(paths) != len(result):
        raise InputError(f"paths: expected one per pair ({len(result)}), got {len(paths)}")
    texts = [t for t in stamps if t] + ([RANDOM_ID_STAMP] if random_id else [])
    for path, one in zip(paths, result):
        image = to_pil(one.images[0])
        for text in texts + ([UNCHANGED_STAMP] if one.unchanged[0] else []):  # unchanged: the target as it was
            image = stamp(image, text)
        save_image(image, path, **save_kwargs)
        one.save(path.with_suffix(".pt"), extra=extra)
    return paths


def load_swap(path: "str | os.PathLike[str]") -> SwapResult:
    """Read a result written by :meth:`SwapResult.save` (tensors with ``weights_only=True``).

    Raises:
        CheckpointError: missing, unreadable or not a swap result (the JSON sidecar is required).
    """

    r = read_result(path, fmt=_FORMAT, what="swap result", latents=("wplus", "target_wplus"),
                    sidecar_required=True)
    data, meta = r.tensors, r.meta
    missing = [k for k in ("images", "target_images", "face_masks") if not torch.is_tensor(data.get(k))]
    if missing:
        raise CheckpointError(r.path, f"not a complete facelib swap result (no {missing} tensors)")
    return SwapResult(
        wplus=data["wplus"].float(), target_wplus=data["target_wplus"].float(), noises=r.noises(),
        images=data["images"].float(), target_images=data["target_images"].float(),
        face_masks=data["face_masks"].float(), mask_kinds=r.per_image("mask_kinds", "none"),
        metrics=r.per_image("metrics", {}), history=r.per_image("history", {}),
        config=SwapConfig.from_dict(meta.get("config", {})), source_names=r.per_image("source_names", None),
        target_names=r.per_image("target_names", None), weights_sha256=meta.get("weights_sha256"),
        lpips=meta.get("lpips"), device=meta.get("device", "cpu"),
        facelib_version=meta.get("facelib_version", __version__), interrupted=bool(meta.get("interrupted", False)),
        steps_done=int(meta.get("steps_done", 0)))


# ----------------------------------------------------------------------------------------
# Optimisation
# ----------------------------------------------------------------------------------------

def _is_projection(x: Any) -> bool:
    return hasattr(x, "wplus") and hasattr(x, "noises") and hasattr(x, "images")


def _source_images(source: Any, resolution: int) -> tuple[torch.Tensor, list[str | None]]:
    """Source identity images (N, 3, H, W) float32 in [-1, 1], and names.

    Tensors are used at their own size; photos / paths are read and resized to ``resolution``.
    """
    if _is_projection(source):
        return source.images.detach().float().cpu(), list(getattr(source, "names", [None] * len(source.images)))
    if isinstance(source, torch.Tensor):
        x = image_batch(source, "source")
        return x, [None] * x.shape[0]

    return load_targets(source, resolution)


def _target_latents(G: nn.Module, target: Any) -> tuple[torch.Tensor, list[torch.Tensor] | None, list]:
    """Target W+ (N, L, D) CPU float32, its noise maps (or None) and names.

    ``target`` is a W+ tensor or anything with a ``wplus`` tensor and optionally ``noises``
    and ``names`` (a Projection, :class:`facelib.latents.SavedLatents`).
    """
    if isinstance(target, torch.Tensor):
        w = target.detach().float().cpu()
        if w.ndim == 2:
            w = w[None]
        noises, names = None, [None] * w.shape[0]
    elif isinstance(getattr(target, "wplus", None), torch.Tensor):
        w = target.wplus.detach().float().cpu()
        nz = getattr(target, "noises", None)
        noises = [t.detach().float().cpu() for t in nz] if nz else None
        names = getattr(target, "names", None)
        names = list(names) if names is not None and len(names) == w.shape[0] else [None] * w.shape[0]
    else:
        raise InputError(f"target: expected a W+ tensor (N, {G.n_latent}, {G.style_dim}) or a Projection, "
                         f"got {type(target).__name__}")
    check_shape("target", w, (None, G.n_latent, G.style_dim))
    if not torch.isfinite(w).all():
        raise RangeError("target: W+ contains NaN or inf")
    if noises is not None:
        if len(noises) != G.num_layers:
            raise InputError(f"target: {len(noises)} noise maps, but the generator has {G.num_layers} layers")
        bad = [k for k, (nz, b) in enumerate(zip(noises, G.noise_buffers))
               if nz.ndim != 4 or nz.shape[1:] != b.shape[1:] or nz.shape[0] not in (1, w.shape[0])]
        if bad:
            raise ShapeError(f"target: noise maps {bad} do not fit the generator's layers",
                             actual_shape=noises[bad[0]].shape, expected_shape=tuple(G.noise_buffers[bad[0]].shape))
        noises = [nz.expand(w.shape[0], -1, -1, -1) for nz in noises]
    return w, noises, names


def face_swap(G: nn.Module, id_net: nn.Module, source: Any, target: Any, *, config: SwapConfig | None = None,
              on_step: StepCallback | None = None, progress: bool = True, judge: bool = True,
              vgg_path: "str | os.PathLike[str] | None" = None, desc: str | None = None,
              cache_dir: "str | os.PathLike[str] | None" = None, **options: Any) -> SwapResult:
    """Put the source's identity onto the target by optimising the target's W+ rows.

    See the module docstring for the loss, the face region and the default rows.

    Args:
        G: a :class:`~facelib.stylegan2.StyleGAN2Generator` (its device is used; parameters are
            frozen during the run and restored afterwards), or a one-photo
            :class:`~facelib.tuning.Tuning` of the target (its tuned generator is used; so is the
            tuning a one-photo target Projection carries, :func:`facelib.tuning.attach_tuning`).
        id_net: identity network, (N, 3, 112, 112) in [-1, 1] -> (N, E) L2-normalised
            (:func:`~facelib.identity.load_arcface` / :func:`~facelib.identity.build_arcface`).
        source: identity donors: (N or 1, 3, H, W) float in [-1, 1] FFHQ-aligned images (any
            size; used as given), a PIL image / path / list of them, or a Projection (its images).
        target: (N or 1, n_latent, style_dim) W+ latents, or a Projection (its W+ and noise maps).
            N sources and 1 target (or the reverse) broadcast.
        config: a :class:`SwapConfig`; or, instead of it, keyword ``options`` that build one, e.g.
            ``steps=200, rows="0-8", id_weight=1.0, latent_weight=0.01, mask="ellipse", seed=0``.
            ``rows`` also takes a range, a list, a row mask or a ``facelib.edits.LayerMask``;
            ``lpips`` also takes an ``lpips.LPIPS`` / :class:`~facelib.losses.LPIPSLoss` module (the
            one option that may accompany a ``config``; any other is an :class:`InputError`).
        on_step: called as ``on_step(step, total, state)`` after every step (a :class:`StepState`).
        progress: show a tqdm progress bar.
        judge: add the dlib part of :func:`judge_swap` to the metrics (the identity-network part
            is always there). Without dlib installed this logs a warning and is skipped.
        vgg_path: VGG16 weights for LPIPS (file or folder; otherwise searched, never downloaded).
        desc: progress-bar label.
        cache_dir: reuse / store finished results there (:func:`swap_cache_key`: keyed by the
            generator, the identity network's weights, the source images, the target latents and
            noise maps, the settings, LPIPS and the judge; interrupted runs are not stored). A
            hit returns the stored result (its images stored in float16) without optimising.
    Returns:
        A :class:`SwapResult`.
    Raises:
        InputError / ShapeError / RangeError: bad inputs or settings.
        DependencyError: ``lpips="vgg"`` without local VGG16 weights; ``mask="landmarks"`` without dlib.
        OptimisationError: a NaN/inf loss; ``.best`` holds the best :class:`SwapResult` so far
            (None when no step finished).

    A KeyboardInterrupt during the optimisation returns the best steps so far with
    ``interrupted=True``.
    """

    # 1. Check inputs and settle the config
    G = as_generator(G, target)  # a one-photo Tuning (or a target carrying one): optimise and render through it
    if config is not None:
        both = sorted(k for k, v in options.items() if not (k == "lpips" and isinstance(v, nn.Module)))
        if both:
            raise InputError(f"face_swap: pass either config= or keyword settings, not both (got config= and "
                             f"{', '.join(both)}); use dataclasses.replace(config, ...) to change a config")
    lpips_module = lpips_option(options, config.lpips if config is not None else "auto")
    for name in ("n_latent", "style_dim", "resolution", "synthesis", "noise_buffers", "num_layers"):
        if not hasattr(G, name):
            raise InputError(f"G: expected a StyleGAN2Generator, got {type(G).__name__} (no {name!r})")
    if id_net is None or not isinstance(id_net, nn.Module):
        raise InputError(f"id_net: expected an identity network (nn.Module), got {type(id_net).__name__}")
    rows_opt = options.pop("rows", config.rows if config is not None else None)
    options["rows"] = resolve_rows(rows_opt, G.n_latent)
    fields = {f.name for f in dataclasses.fields(SwapConfig)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise InputError(f"face_swap: unknown option(s) {unknown}; settings are {sorted(fields)}")
    cfg = dataclasses.replace(config, **options) if config is not None else SwapConfig(**options)
    rows = cfg.rows
    assert rows is not None

    w_target, target_noises, target_names = _target_latents(G, target)
    src_images, source_names = _source_images(source, G.resolution)
    n = max(w_target.shape[0], src_images.shape[0])
    w_target, src_images = broadcast_batch(n, w_target, src_images)
    w_target = w_target.contiguous()
    if target_noises is not None:
        target_noises = broadcast_batch(n, *target_noises)
    target_names = target_names * n if len(target_names) == 1 else target_names
    source_names = source_names * n if len(source_names) == 1 else source_names
    device = G.device

    with Frozen(G, id_net, lpips_module):
        # 2. Fixed parts: noise maps, target images, face region, source embeddings, losses
        if cfg.noise == "random":
            gens = [torch.Generator().manual_seed(cfg.seed + i) for i in range(n)]
            noises = [torch.cat([torch.randn(1, 1, b.shape[-2], b.shape[-1], generator=g) for g in gens])
                      for b in G.noise_buffers]
        elif target_noises is not None:
            noises = target_noises
        else:
            noises = [b.detach().float().cpu().expand(n, -1, -1, -1) for b in G.noise_buffers]
        noises = [nz.to(device).contiguous() for nz in noises]
        w_t = w_target.to(device)
        with torch.no_grad():
            # unclamped: the image terms are then exactly 0 at the start (G's raw output is compared)
            target_raw = G.synthesis(w_t, noise=noises).float()  # [N, 3, H, W]
            target_images = target_raw.clamp(-1, 1)
        given = getattr(target, "images", None)
        tuned = getattr(G, "base_weights_sha256", None) is not None  # a tuned copy renders the target differently
        if (isinstance(given, torch.Tensor) and cfg.noise == "target" and given.shape[-2:] == target_raw.shape[-2:]
                and not tuned):
            given = broadcast_batch(n, given.detach().float())[0]
            if float((given.to(device) - target_images).abs().max()) > 0.05:
                log.warning("target: the projection's stored images differ from G(wplus, noises); was it made "
                            "with another generator? Using G's rendering as the target image.")
        face_masks, mask_kinds = _face_masks(target_images, cfg.mask, cfg.mask_feather)
        face_masks = face_masks.to(device)
        pixel_w = face_weight_map(face_masks, cfg.inner_face_weight)  # [N, 1, H, W]
        src_emb = embed_faces(id_net, src_images).to(device)  # [N, E]
        lpips_loss, lpips_label = resolve_lpips_option(lpips_module, cfg.lpips, vgg_path=vgg_path, device=device,
                                                       size=cfg.lpips_size)
        use_lpips = lpips_loss is not None and cfg.lpips_weight > 0
        cache_path = None
        if cache_dir is not None:
            key = swap_cache_key(G, id_net, src_images, w_target, noises, cfg, lpips_loss=lpips_loss, judge=judge)
            cache_path = Path(cache_dir) / key[:2] / f"{key}.pt"
            if cache_path.is_file() and cache_path.with_suffix(".json").is_file():
                try:
                    hit = load_swap(cache_path)
                except CheckpointError as e:
                    log.warning("ignoring unreadable swap cache entry %s (%s)", cache_path, e.problem)
                else:
                    log.info("face swap: reusing the finished result %s", cache_path)
                    return dataclasses.replace(hit, source_names=list(source_names), target_names=list(target_names))
        with torch.no_grad():
            target_feats = lpips_loss.features(target_raw) if use_lpips else None
        row_idx = torch.tensor(rows, dtype=torch.long, device=device)

        # 3. Parameters: only the chosen rows
        w_rows = w_t.index_select(1, row_idx).clone().requires_grad_(True)  # [N, R, D]
        w_rows0 = w_rows.detach().clone()
        opt = torch.optim.Adam([w_rows], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))

        def assemble(wr: torch.Tensor) -> torch.Tensor:
            return w_t.index_copy(1, row_idx, wr)  # [N, L, D]; other rows are w_t's own values

        def evaluate(step: int) -> Evaluation:
            w_full = assemble(w_rows)
            img = G.synthesis(w_full, noise=noises)  # [N, 3, H, W]
            terms = {"id": 1.0 - identity_similarity(id_net, img, src_emb),
                     "mse": _weighted_mse(img, target_raw, pixel_w),
                     "latent": (w_rows - w_rows0).square().flatten(1).mean(1)}
            loss = cfg.id_weight * terms["id"] + cfg.mse_weight * terms["mse"] + cfg.latent_weight * terms["latent"]
            if use_lpips:
                terms["lpips"] = _weighted_lpips(lpips_loss, img, target_feats, pixel_w)
                loss = loss + cfg.lpips_weight * terms["lpips"]
            return Evaluation(loss=loss, terms=terms, keep=[w_rows], wplus=w_full, images=img)

        best = BestSteps([w_rows0])
        run = optimise(opt, best, evaluate, total=cfg.steps, lr_at=cfg.lr_at, label="face swap", items="pair(s)",
                       hint="lower lr or check the generator / identity network", on_step=on_step,
                       progress=progress, desc=desc)
        if run.failure is not None and not best.any_step:
            raise OptimisationError(f"face swap failed: {run.failure}", best=None)

        # 4. Finish: render the kept steps, judge them
        with torch.no_grad():
            w_best = assemble(best.values[0]).detach()
            images = G.synthesis(w_best, noise=noises).float().clamp(-1, 1)
            mse_full = (images - target_images).square().flatten(1).mean(1).cpu().tolist()
            outside = face_weight_map(face_masks, 0.0)
            mse_out = _weighted_mse(images, target_images, outside).cpu().tolist()
            lp = lpips_loss(images, target_images).cpu().tolist() if lpips_loss is not None else None
        verdict = judge_swap(images.cpu(), src_images, target_images.cpu(), id_net, dlib=False)
        dlib_verdict = None
        if judge:
            try:
                dlib_verdict = judge_swap(images.cpu(), src_images, target_images.cpu(), None, dlib=True)
            except DependencyError as e:
                log.warning("face swap: the dlib judge is skipped (%s)", e)
        metrics = []
        for i in range(n):
            m: dict[str, Any] = verdict.metrics(i)
            m.update(mse_to_target=mse_full[i], mse_outside_face=mse_out[i])
            if lp is not None:
                m["lpips_to_target"] = lp[i]
            if dlib_verdict is not None:
                m.update(dlib_verdict.metrics(i))
            m.update(best_step=best.step[i], best_loss=float(best.loss[i]), interrupted=run.interrupted,
                     mask=mask_kinds[i], unchanged=best.step[i] <= 0)
            metrics.append(m)
        result = SwapResult(
            wplus=w_best.cpu().float(), target_wplus=w_target.cpu().float().clone(),
            noises=[nz.detach().cpu().float() for nz in noises], images=images.cpu(),
            target_images=target_images.cpu(), face_masks=face_masks.detach().cpu().float(),
            mask_kinds=mask_kinds, metrics=metrics, history=best.history, config=cfg,
            source_names=list(source_names), target_names=list(target_names), weights_sha256=generator_id(G),
            lpips=lpips_label, device=str(device), facelib_version=__version__, interrupted=run.interrupted,
            steps_done=run.steps_done)
    if run.failure is not None:
        raise OptimisationError(f"face swap failed: {run.failure}; .best holds the best steps before that",
                                best=result)
    if cache_path is not None and not result.interrupted:
        result.save(cache_path)
    return result


def swap_cache_key(G: nn.Module, id_net: nn.Module, source_images: torch.Tensor, target_wplus: torch.Tensor,
                   noises: Sequence[torch.Tensor], config: SwapConfig, *, lpips_loss: nn.Module | None = None,
                   judge: bool = True) -> str:
    """SHA-256 (hex) over everything that determines a :func:`face_swap` result.

    Args:
        source_images: (N, 3, H, W) in [-1, 1], the identity donors as optimised against.
        target_wplus: (N, n_latent, D); noises: per layer (N, 1, r, r), the maps used.
        config: the settled :class:`SwapConfig` (``rows`` resolved).
        lpips_loss: the LPIPS network used (its weights are part of the key), or None.
    """
    import hashlib
    import json


    def sha(x: torch.Tensor) -> str:
        return hashlib.sha256(x.detach().cpu().float().contiguous().numpy().tobytes()).hexdigest()

    parts = {"format": _FORMAT, "version": _VERSION, "facelib": __version__, "generator": generator_id(G),
             "id_net": state_fingerprint(id_net.state_dict()), "sources": sha(source_images),
             "targets": sha(target_wplus), "noises": [sha(nz) for nz in noises], "config": config.to_dict(),
             "lpips": state_fingerprint(lpips_loss.state_dict()) if lpips_loss is not None else None,
             "judge": bool(judge), "device_type": G.device.type if hasattr(G, "device") else "cpu"}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


# ----------------------------------------------------------------------------------------
# Previews for the notebook
# ----------------------------------------------------------------------------------------

