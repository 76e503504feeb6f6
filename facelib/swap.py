"""Face swap by identity-loss optimisation in W+, and an independent judge of the result.

``face_swap(G, id_net, source, target)`` puts the identity of ``source`` (photos, or a
:class:`~facelib.project.Projection`) onto ``target`` (a W+ latent, or a Projection) while
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
generators), the fixed FFHQ ellipse (:data:`facelib.edits.FFHQ_FACE_ELLIPSE`; both via
:func:`facelib.edits.face_region`); which one was used is recorded per image. The target's
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
import glob
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._optim import (BestSteps, Evaluation, Frozen, StepCallback, StepState, batch_indices, check_settings,
                     generator_id, image_batch, lpips_option, optimise, read_result, resolve_lpips_option,
                     save_result)
from .edits import Preview
from .errors import CheckpointError, DependencyError, InputError, OptimisationError, RangeError, ShapeError

__all__ = [
    "SwapConfig",
    "SwapResult",
    "SwapJudgement",
    "StepState",
    "face_swap",
    "judge_swap",
    "load_swap",
    "resolve_rows",
    "default_rows",
    "face_weight_map",
    "DEFAULT_ROWS",
    "SwapInputs",
    "swap_inputs",
    "SwapPreview",
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
    from .edits import LayerMask

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
    :func:`facelib.edits.face_region`), "landmarks" (the hull; NoFaceError / DependencyError
    otherwise), "ellipse" (:func:`facelib.edits.ffhq_ellipse_mask`), "none" (zeros).
    """
    from .edits import face_region, ffhq_ellipse_mask

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

@dataclass(frozen=True, eq=False)
class SwapJudgement:
    """Output of :func:`judge_swap`; every field has one entry per result image.

    Attributes:
        id_to_source / id_to_target: cosine similarity (optimised identity network) of the
            result to the source / target; None without a network.
        id_target_to_source: the same between target and source (where the result started).
        id_moved: (id_to_source - id_target_to_source) / (1 - id_target_to_source): the share
            of the way from the target's identity to the source's (0 = not moved, 1 = reached).
        dlib_to_source / dlib_to_target / dlib_target_to_source: dlib descriptor distances
            (below :data:`~facelib.identity.DLIB_SAME_PERSON_THRESHOLD` = same person); None
            when the dlib part was off.
        dlib_same_as_source / dlib_same_as_target: the distances under the threshold.
        detected: per image {"result", "source", "target"}: whether dlib's detector found the
            face (False: the fixed FFHQ box was used and the dlib figures mean little).
        yaw / pitch, target_yaw / target_pitch: landmark pose proxies
            (:func:`~facelib.identity.pose_proxy`) of result and target.
        yaw_change / pitch_change: result minus target.
        threshold: the dlib threshold used.
    """

    id_to_source: np.ndarray | None
    id_to_target: np.ndarray | None
    id_target_to_source: np.ndarray | None
    id_moved: np.ndarray | None
    dlib_to_source: np.ndarray | None = None
    dlib_to_target: np.ndarray | None = None
    dlib_target_to_source: np.ndarray | None = None
    dlib_same_as_source: np.ndarray | None = None
    dlib_same_as_target: np.ndarray | None = None
    detected: tuple[dict[str, bool], ...] | None = None
    yaw: np.ndarray | None = None
    pitch: np.ndarray | None = None
    target_yaw: np.ndarray | None = None
    target_pitch: np.ndarray | None = None
    yaw_change: np.ndarray | None = None
    pitch_change: np.ndarray | None = None
    threshold: float = 0.6

    def __len__(self) -> int:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray):
                return len(v)
            if isinstance(v, tuple):
                return len(v)
        return 0

    def metrics(self, i: int) -> dict[str, Any]:
        """Image ``i``'s figures as a JSON-ready dict (fields that are None are left out)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None or f.name == "threshold":
                continue
            if f.name == "detected":
                out["dlib_detected"] = dict(v[i])
            elif isinstance(v, np.ndarray):
                out[f.name] = bool(v[i]) if v.dtype == bool else float(v[i])
        if self.dlib_to_source is not None:
            out["dlib_threshold"] = float(self.threshold)
        return out

    def summary(self, i: int = 0) -> str:
        """One line for image ``i``: identity to source/target (network, dlib) and pose change."""
        parts = []
        if self.id_to_source is not None:
            parts.append(f"id cos src {self.id_to_source[i]:.2f} (from {self.id_target_to_source[i]:.2f}, "
                         f"moved {self.id_moved[i]:.0%}) tgt {self.id_to_target[i]:.2f}")
        if self.dlib_to_source is not None:
            det = self.detected[i] if self.detected else {}
            note = "" if all(det.values()) else " [no face found: fallback box]"
            parts.append(f"dlib d src {self.dlib_to_source[i]:.2f}{'=' if self.dlib_same_as_source[i] else '>'} "
                         f"tgt {self.dlib_to_target[i]:.2f}{note}")
        if self.yaw_change is not None:
            parts.append(f"pose d yaw {self.yaw_change[i]:+.2f} pitch {self.pitch_change[i]:+.2f}")
        return " | ".join(parts)


def _batch_images(x: Any, name: str) -> torch.Tensor:
    if hasattr(x, "images") and hasattr(x, "wplus"):  # a Projection or SwapResult
        x = x.images
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name}: expected a (N, 3, H, W) tensor in [-1, 1] or a Projection, got {type(x).__name__}")
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] != 3:
        raise ShapeError(f"{name}: expected (N, 3, H, W) images, got {tuple(x.shape)}",
                         actual_shape=x.shape, expected_shape=(None, 3, None, None))
    return x.detach().float()


def _broadcast(n: int, *tensors: torch.Tensor) -> list[torch.Tensor]:
    out = []
    for t in tensors:
        if t.shape[0] == n:
            out.append(t)
        elif t.shape[0] == 1:
            out.append(t.expand(n, *t.shape[1:]))
        else:
            raise ShapeError(f"batch sizes do not match: {t.shape[0]} vs {n} (each side must be N or 1)",
                             actual_shape=t.shape, expected_shape=(n, *t.shape[1:]))
    return out


@torch.no_grad()
def _embed(id_net: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(N, E) normalised CPU embeddings of (N, 3, H, W) images, with the network in eval mode."""
    from .identity import identity_crop

    dev = next(id_net.parameters()).device
    with Frozen(id_net):
        return F.normalize(id_net(identity_crop(images.to(dev).float())).float(), dim=1).cpu()


def judge_swap(result_images: Any, source_images: Any, target_images: Any, id_net: nn.Module | None, *,
               dlib: bool = True, size: int = 256) -> SwapJudgement:
    """Judge swap results: identity with the optimised network and with dlib, and pose vs the target.

    Args:
        result_images: (N, 3, H, W) float in [-1, 1], FFHQ-aligned (or a SwapResult / Projection).
        source_images: (N or 1, 3, H', W') in [-1, 1], the identity donors (any size).
        target_images: (N or 1, 3, H'', W'') in [-1, 1], what the results started from.
        id_net: the identity network the swap optimised ((N, 3, 112, 112) -> (N, E) normalised),
            or None to skip that part.
        dlib: also run dlib's face-recognition ResNet and the 68-point landmarks (pose).
        size: dlib works on copies resized to this side (256: an FFHQ face is then about
            150 px, the size of dlib's face chip; smaller generator outputs are upsampled).
    Returns:
        :class:`SwapJudgement`. Images where dlib's detector finds no face use the fixed FFHQ
        box and are marked in ``detected``.
    Raises:
        ShapeError / InputError: bad images; DependencyError: ``dlib=True`` without dlib.
    """
    res = _batch_images(result_images, "result_images").cpu()
    src = _batch_images(source_images, "source_images").cpu()
    tgt = _batch_images(target_images, "target_images").cpu()
    n = res.shape[0]
    _broadcast(n, src, tgt)  # batch sizes must be N or 1
    fields: dict[str, Any] = {"id_to_source": None, "id_to_target": None, "id_target_to_source": None,
                              "id_moved": None}
    if id_net is not None:
        e_res, e_src, e_tgt = _embed(id_net, res), _embed(id_net, src), _embed(id_net, tgt)
        e_src, e_tgt = _broadcast(n, e_src, e_tgt)
        to_src = (e_res * e_src).sum(1).numpy().astype(np.float64)
        to_tgt = (e_res * e_tgt).sum(1).numpy().astype(np.float64)
        base = (e_tgt * e_src).sum(1).numpy().astype(np.float64)
        moved = (to_src - base) / np.maximum(1.0 - base, 1e-9)
        fields.update(id_to_source=to_src, id_to_target=to_tgt, id_target_to_source=base, id_moved=moved)
    if not dlib:
        return SwapJudgement(**fields)

    from .identity import (DLIB_SAME_PERSON_THRESHOLD, dlib_descriptors, dlib_distance, dlib_landmarks,
                           pose_proxy)

    def resized(x: torch.Tensor) -> torch.Tensor:
        x = x.clamp(-1, 1)
        if x.shape[-2:] == (size, size):
            return x
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)

    r, s, t = resized(res), resized(src), resized(tgt)
    d_res, d_src, d_tgt = dlib_descriptors(r), dlib_descriptors(s), dlib_descriptors(t)
    if len(d_src) == 1 and n > 1:
        d_src = dataclasses.replace(d_src, descriptors=np.repeat(d_src.descriptors, n, 0),
                                    detected=d_src.detected * n, boxes=d_src.boxes * n)
    if len(d_tgt) == 1 and n > 1:
        d_tgt = dataclasses.replace(d_tgt, descriptors=np.repeat(d_tgt.descriptors, n, 0),
                                    detected=d_tgt.detected * n, boxes=d_tgt.boxes * n)
    to_src = dlib_distance(d_res, d_src)
    to_tgt = dlib_distance(d_res, d_tgt)
    base = dlib_distance(d_tgt, d_src)
    thr = float(DLIB_SAME_PERSON_THRESHOLD)
    lm_res = dlib_landmarks(r)
    lm_tgt = dlib_landmarks(t) if t.shape[0] == n else dlib_landmarks(t[:1].expand(n, -1, -1, -1))
    yaw, pitch = pose_proxy(lm_res)
    tyaw, tpitch = pose_proxy(lm_tgt)
    detected = tuple({"result": bool(d_res.detected[i]), "source": bool(d_src.detected[i]),
                      "target": bool(d_tgt.detected[i])} for i in range(n))
    fields.update(dlib_to_source=to_src, dlib_to_target=to_tgt, dlib_target_to_source=base,
                  dlib_same_as_source=to_src < thr, dlib_same_as_target=to_tgt < thr, detected=detected,
                  yaw=np.asarray(yaw, np.float64), pitch=np.asarray(pitch, np.float64),
                  target_yaw=np.asarray(tyaw, np.float64), target_pitch=np.asarray(tpitch, np.float64),
                  yaw_change=np.asarray(yaw, np.float64) - np.asarray(tyaw, np.float64),
                  pitch_change=np.asarray(pitch, np.float64) - np.asarray(tpitch, np.float64), threshold=thr)
    return SwapJudgement(**fields)


# ----------------------------------------------------------------------------------------
# Config and result
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SwapConfig:
    """Settings of :func:`face_swap` (everything that changes the result).

    Defaults, and where they come from:
    """

    steps: int = 200                  # ~13 s at 1024 px on an H200 (benchmarks/swap.py); the report does not say
    lr: float = 0.03                  # Adam; W+ starts at the target, so no warm-up is needed
    scheduler: str = "cosine"         # decays to 0 so the last steps settle (facelib.project.lr_schedule)
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
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            log.warning("ignoring unknown swap settings %s", unknown)
        kw = {k: v for k, v in d.items() if k in names}
        if kw.get("rows") is not None:
            kw["rows"] = tuple(kw["rows"])
        return cls(**kw)

    def lr_at(self, step: int) -> float:
        from .project import lr_schedule

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
        from .grids import to_pil

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
        """A short text of image ``i``'s identity and pose figures (for grids)."""
        m = self.metrics[i]
        parts = ["UNCHANGED: the swap did nothing (best step 0)"] if self.unchanged[i] else []
        if "id_to_source" in m:
            parts.append(f"id src {m['id_to_source']:.2f} (was {m['id_target_to_source']:.2f}) "
                         f"tgt {m['id_to_target']:.2f}")
        if "dlib_to_source" in m:
            det = m.get("dlib_detected", {})
            parts.append(f"dlib src {m['dlib_to_source']:.2f} tgt {m['dlib_to_target']:.2f}"
                         + ("" if all(det.values()) else " (no face)"))
        if "yaw_change" in m:
            parts.append(f"dyaw {m['yaw_change']:+.2f}")
        return " | ".join(parts)

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
        from .align import load_image
        from .grids import make_grid

        n = len(self)
        srcs = list(source_images) if not isinstance(source_images, torch.Tensor) else list(
            _broadcast(n, _batch_images(source_images, "source_images"))[0])
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

    def save(self, path: "str | os.PathLike[str]") -> Path:
        """Write ``path`` (tensors, ``weights_only``-loadable) and ``path.with_suffix('.json')``,
        both atomically, the JSON last. Returns the JSON path."""
        tensors = {"wplus": self.wplus.float(), "target_wplus": self.target_wplus.float(),
                   "images": self.images.half(), "target_images": self.target_images.half(),
                   "face_masks": self.face_masks.half()}
        return save_result(path, tensors, self.noises, self.to_json())


def load_swap(path: "str | os.PathLike[str]") -> SwapResult:
    """Read a result written by :meth:`SwapResult.save` (tensors with ``weights_only=True``).

    Raises:
        CheckpointError: missing, unreadable or not a swap result (the JSON sidecar is required).
    """
    from . import __version__

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
    from .project import load_targets

    return load_targets(source, resolution)


def _target_latents(G: nn.Module, target: Any) -> tuple[torch.Tensor, list[torch.Tensor] | None, list]:
    """Target W+ (N, L, D) CPU float32, its noise maps (or None) and names.

    ``target`` is a W+ tensor or anything with a ``wplus`` tensor and optionally ``noises``
    and ``names`` (a Projection, :class:`facelib.edits.SavedLatents`).
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
    if w.ndim != 3 or w.shape[1:] != (G.n_latent, G.style_dim):
        raise ShapeError(f"target: expected W+ of shape (N, {G.n_latent}, {G.style_dim}), got {tuple(w.shape)}",
                         actual_shape=w.shape, expected_shape=(None, G.n_latent, G.style_dim))
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
            :class:`~facelib.tuning.Tuning` of the target (its tuned generator is used).
        id_net: identity network, (N, 3, 112, 112) in [-1, 1] -> (N, E) L2-normalised
            (:func:`~facelib.identity.load_arcface` / :func:`~facelib.identity.build_arcface`).
        source: identity donors: (N or 1, 3, H, W) float in [-1, 1] FFHQ-aligned images (any
            size; used as given), a PIL image / path / list of them, or a Projection (its images).
        target: (N or 1, n_latent, style_dim) W+ latents, or a Projection (its W+ and noise maps).
            N sources and 1 target (or the reverse) broadcast.
        config: a :class:`SwapConfig`; keyword ``options`` build one or override its fields, e.g.
            ``steps=200, rows="0-8", id_weight=1.0, latent_weight=0.01, mask="ellipse", seed=0``.
            ``rows`` also takes a range, a list, a row mask or a ``facelib.edits.LayerMask``;
            ``lpips`` also takes an ``lpips.LPIPS`` / :class:`~facelib.losses.LPIPSLoss` module.
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
    from . import __version__
    from .losses import identity_similarity
    from .tuning import as_generator

    # 1. Check inputs and settle the config
    G = as_generator(G)  # a one-photo Tuning: optimise and render through its tuned generator
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
    w_target, src_images = _broadcast(n, w_target, src_images)
    w_target = w_target.contiguous()
    if target_noises is not None:
        target_noises = _broadcast(n, *target_noises)
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
        if isinstance(given, torch.Tensor) and cfg.noise == "target" and given.shape[-2:] == target_raw.shape[-2:]:
            given = _broadcast(n, given.detach().float())[0]
            if float((given.to(device) - target_images).abs().max()) > 0.05:
                log.warning("target: the projection's stored images differ from G(wplus, noises); was it made "
                            "with another generator? Using G's rendering as the target image.")
        face_masks, mask_kinds = _face_masks(target_images, cfg.mask, cfg.mask_feather)
        face_masks = face_masks.to(device)
        pixel_w = face_weight_map(face_masks, cfg.inner_face_weight)  # [N, 1, H, W]
        src_emb = _embed(id_net, src_images).to(device)  # [N, E]
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

    from . import __version__
    from .weights import state_fingerprint

    def sha(x: torch.Tensor) -> str:
        return hashlib.sha256(x.detach().cpu().float().contiguous().numpy().tobytes()).hexdigest()

    parts = {"format": _FORMAT, "version": _VERSION, "facelib": __version__, "generator": generator_id(G),
             "id_net": state_fingerprint(id_net.state_dict()), "sources": sha(source_images),
             "targets": sha(target_wplus), "noises": [sha(nz) for nz in noises], "config": config.to_dict(),
             "lpips": state_fingerprint(lpips_loss.state_dict()) if lpips_loss is not None else None,
             "judge": bool(judge), "device_type": G.device.type if hasattr(G, "device") else "cpu"}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


# ----------------------------------------------------------------------------------------
# Inputs and previews for the notebook
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SwapInputs:
    """Pairs for notebook 05 and where they came from (see :func:`swap_inputs`).

    Attributes:
        sources: (P, 3, H, W) float32 in [-1, 1], the identity donors (aligned photos when found,
            else the source projections' renderings, else renderings of random latents).
        targets: the targets' latents: ``wplus`` (P, n_latent, D), ``noises`` (or None), ``names``
            (a :class:`facelib.edits.SavedLatents`); pass it to :func:`face_swap` as ``target``.
        source_names / target_names: per pair.
        target_photos: per pair the target's aligned photo path, or None.
        notes: what was used (and what stood in for missing inputs).
        stand_ins: True when random latents replaced missing projections.
    """

    sources: torch.Tensor
    targets: Any
    source_names: list[str]
    target_names: list[str]
    target_photos: list[Path | None]
    notes: tuple[str, ...] = ()
    stand_ins: bool = False

    def __len__(self) -> int:
        return int(self.sources.shape[0])

    def file_names(self) -> list[str]:
        """``<source>_on_<target>`` per pair (the report's naming; "/" becomes "_")."""
        return [f"{s.replace('/', '_')}_on_{t.replace('/', '_')}" for s, t in zip(self.source_names, self.target_names)]


def _aligned_photo(aligned_dir: Path | None, name: str) -> Path | None:
    if aligned_dir is None:
        return None
    from .align import IMAGE_EXTENSIONS

    base = aligned_dir / name
    if not base.parent.is_dir():
        return None
    for ext in IMAGE_EXTENSIONS:  # any case of any image extension: 2.jpg, 2.JPEG, 2.png
        hit = sorted(p for p in base.parent.glob(f"{glob.escape(base.name)}.*")
                     if p.suffix.lower() == ext and p.is_file())
        if hit:
            return hit[0]
    return None


def swap_inputs(G: nn.Module, *, latents_dir: Any = "out/latents", aligned_dir: Any = "out/aligned",
                pairs: Sequence[Sequence[str]] | None = None, max_pairs: int = 4, seed: int = 0) -> SwapInputs:
    """(source, target) pairs for notebook 05, falling back to random latents.

    With two or more projections in ``latents_dir`` (:func:`facelib.edits.find_projections`;
    those of another generator are skipped): ``pairs`` names them (``[("AJoly/2", "LDCaprio/0")]``),
    else the first projection is the source and the next ones (other people first, by the
    folder name) are targets, up to ``max_pairs``, as in the report's table (one source on
    several targets). A source is its aligned photo (``aligned_dir/<name>.jpg``, resized to the
    generator) when there is one, else its projection's rendering. With fewer than two
    projections nothing is projected: targets are random W+ (truncation 0.7, ``seed``) and
    sources renderings of other random W+ (``seed + 1``).

    Raises:
        InputError: a named pair refers to a projection that does not exist.
    """
    from .edits import SavedLatents, find_projections, random_latents
    from .project import load_targets

    notes: list[str] = []
    ldir = Path(latents_dir) if latents_dir else None
    adir = Path(aligned_dir) if aligned_dir else None
    projections = find_projections(ldir, G=G) if ldir is not None else {}
    if len(projections) >= 2:
        names = list(projections)
        if pairs:
            chosen = [(str(a), str(b)) for a, b in pairs]
            missing = sorted({n for p in chosen for n in p if n not in projections})
            if missing:
                raise InputError(f"pairs: no projection named {missing} in {ldir} (found: {names[:10]})")
        else:
            src = names[0]
            person = src.split("/")[0]
            others = [n for n in names[1:] if n.split("/")[0] != person] + [n for n in names[1:]
                                                                           if n.split("/")[0] == person]
            chosen = [(src, t) for t in others[:max(1, int(max_pairs))]]
        sources, photos, n_photo = [], [], 0
        for s, t in chosen:
            photo = _aligned_photo(adir, s)
            n_photo += photo is not None
            sources.append(load_targets(photo, G.resolution)[0] if photo is not None else projections[s].images[:1])
            photos.append(_aligned_photo(adir, t))
        notes.append(f"pairs: {chosen} from {ldir}; sources: {n_photo} aligned photo(s) from {adir}, "
                     f"{len(chosen) - n_photo} projection rendering(s)")
        tp = [projections[t] for _, t in chosen]
        noises = None
        if all(p.noises for p in tp):
            noises = [torch.cat([p.noises[k] for p in tp]) for k in range(len(tp[0].noises))]
        targets = SavedLatents(wplus=torch.cat([p.wplus for p in tp]), noises=noises, names=[t for _, t in chosen],
                               weights_sha256=tp[0].weights_sha256, weights_path=None, path=ldir)
        return SwapInputs(sources=torch.cat(sources).float(), targets=targets, source_names=[s for s, _ in chosen],
                          target_names=[t for _, t in chosen], target_photos=photos, notes=tuple(notes))
    n = max(1, min(int(max_pairs), 2))
    notes.append(f"fewer than 2 projections in {ldir} fit this generator ({len(projections)} found): nothing is "
                 f"projected; {n} random target latent(s) (seed {seed}) and random source renderings "
                 f"(seed {seed + 1}) stand in (run notebooks 01-02 first for real faces)")
    w_t = random_latents(G, n, seed=seed)
    with torch.no_grad():
        dev = next(G.parameters()).device
        sources = G.synthesis(random_latents(G, n, seed=seed + 1).to(dev)).float().clamp(-1, 1).cpu()
    targets = SavedLatents(wplus=w_t, noises=None, names=[f"random_{i}" for i in range(n)], weights_sha256=None,
                           weights_path=None, path=Path("."))
    return SwapInputs(sources=sources, targets=targets, source_names=[f"random_src_{i}" for i in range(n)],
                      target_names=list(targets.names), target_photos=[None] * n, notes=tuple(notes), stand_ins=True)


class SwapPreview(Preview):
    """``preview(config=None, rows=None)`` -> PIL table (source / target / swap) of one pair.

    Runs :func:`face_swap` (no progress bar) and caches results per settings, so moving a
    slider back is free. ``rows``: any row form, or a (first, last) pair as an
    ``IntRangeSlider`` gives it; ``config``: a :class:`SwapConfig` (e.g. the getter of
    ``facelib.widgets.config_widgets``). Use :meth:`watch` to tie it to widgets.
    """

    def __init__(self, G: nn.Module, id_net: nn.Module, source: torch.Tensor, target: Any, *, cell: int = 192,
                 label: str | None = None, judge: bool = False, **options: Any) -> None:
        from .tuning import as_generator

        G = as_generator(G)  # a one-photo Tuning renders through its tuned generator
        self.G, self.id_net, self.cell, self.label, self.judge = G, id_net, cell, label, judge
        from .edits import SavedLatents

        self.source = _batch_images(source, "source")[:1]
        w, noises, names = _target_latents(G, target)  # the first pair only
        self.target = SavedLatents(wplus=w[:1], noises=None if noises is None else [nz[:1] for nz in noises],
                                   names=names[:1], weights_sha256=None, weights_path=None, path=Path("."))
        self.options = options
        self._cache: dict[Any, Any] = {}

    def __call__(self, config: SwapConfig | None = None, rows: Any = None):
        from .grids import stamp

        if isinstance(rows, tuple) and len(rows) == 2 and all(isinstance(v, int) for v in rows):
            rows = range(min(rows), max(rows) + 1)
        r = resolve_rows(rows, self.G.n_latent) if rows is not None else None
        key = (config, r)
        if key not in self._cache:
            result = face_swap(self.G, self.id_net, self.source, self.target, config=config, rows=r,
                               progress=False, judge=self.judge, **self.options)
            cfg = result.config
            self._cache[key] = result.select(0).grid(
                self.source, cell=self.cell,
                title=f"rows {_rows_label(cfg.rows or ())}, id_weight {cfg.id_weight:g}, {cfg.steps} steps")
        grid = self._cache[key]
        return stamp(grid, self.label) if self.label else grid
