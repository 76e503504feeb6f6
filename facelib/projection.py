"""Projection of aligned face photos into StyleGAN2's W+ space.

``project(G, targets)`` finds, for every target image, a W+ latent (one style row per
generator layer) and per-layer noise maps whose rendering matches the photo. It is the
StyleGAN2 projector (Karras et al. 2020, appendix; NVIDIA ``projector.py``, rosinality
``projector.py``) run in W+ and batched:

1. start from the average w broadcast to every W+ row (or a given latent); noise maps start
   as white noise;
2. each step renders ``w + ramped latent noise`` (the noise decays to 0 over the first
   ``noise_ramp`` of the run), and minimises per image
   ``lpips_weight * LPIPS + mse_weight * MSE + noise_reg_weight * noise autocorrelation
   (+ id_weight * (1 - cos identity))`` with Adam under a learning-rate schedule;
3. after each step the noise maps are renormalised to zero mean, unit variance;
4. for every image the step with the lowest image loss (the weighted LPIPS + MSE + identity
   terms; the noise regulariser constrains the noise maps and is left out of the choice) is
   kept: its rendered W+, noise and image.

Batching: the loss is a sum of per-image losses and every parameter tensor belongs to one
image (Adam is elementwise), so each image follows the same path it would alone. Per-image
randomness (initial noise maps, latent-noise ramp) comes from its own ``torch.Generator``
seeded with ``seed + index``, so ``project(G, x[i:i+1], seed=seed + i)`` reproduces image
``i`` of ``project(G, x, seed=seed)`` (up to float rounding of batched kernels), and
``result[i].config.seed`` is that per-image seed.

Saved format (:meth:`Projection.save` / :func:`load_projection`)::

    <name>.pt    torch.save dict of tensors only (load with weights_only=True):
                   "wplus"    (N, n_latent, style_dim) float32   the projected latents
                   "noise_k"  (N, 1, r_k, r_k) float32, k = 0 .. num_layers-1
                                                                 the optimised noise maps
                   "images"   (N, 3, H, W) float16 in [-1, 1]    G.synthesis(wplus, noise)
                   "init_wplus" (N, n_latent, style_dim) float32 only when a start latent was given
    <name>.json  {"format": "facelib.projection", "version": 1, "config": {ProjectConfig fields},
                  "metrics": [per image {"mse", "psnr", "lpips"?, "id_similarity"?, "best_step",
                  "best_loss", "interrupted", "steps", "seconds"}],
                  "quality": the quality card (facelib.quality.quality_card: per image and mean
                  PSNR / LPIPS / identity / steps / seconds, and the published reference figures),
                  "history": [per image {"lr", "loss",
                  "image_loss", "mse", "lpips", "noise", "id": per-step lists}], "seeds", "names", "target_sha256",
                  "weights_sha256", "lpips", "device", "facelib_version", "interrupted",
                  "steps_done", "resolution", "n_latent", "style_dim"}

Other modules need only ``facelib.load_projection(path).wplus`` (and ``.noises`` to render
the exact projection: ``G.synthesis(p.wplus, noise=p.noises)``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from . import __version__
from ._optim import (batch_indices, BestSteps, check_settings, known_settings, constant_lr, cosine_lr, default_gamma,
                     Evaluation, exp_lr, Frozen, generator_id, image_batch, lpips_option, lr_schedule,
                     optimise, rampupdown_lr, read_result, resolve_lpips_option, save_result, SCHEDULERS,
                     StepCallback, StepState)
from .align import load_image
from .errors import CheckpointError, InputError, OptimisationError, RangeError, ShapeError
from .grids import to_pil, to_tensor
from .identity import identity_crop
from .losses import identity_similarity, LPIPSLoss, mse_per_image, noise_regularize, normalize_noises_, psnr
from .memory import check_fits
from .quality import quality_card
from .weights import state_fingerprint

__all__ = [
    "ProjectConfig",
    "Projection",
    "StepState",
    "ProjectionCache",
    "project",
    "load_projection",
    "load_targets",
    "lr_schedule",
    "constant_lr",
    "exp_lr",
    "cosine_lr",
    "rampupdown_lr",
    "SCHEDULERS",
    "default_gamma",
    "settle_config",
    "sha256_tensor",
]

log = logging.getLogger(__name__)

_FORMAT = "facelib.projection"
_VERSION = 1

#: precision name -> autocast dtype (None = plain float32)
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


# ----------------------------------------------------------------------------------------
# Config and results
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ProjectConfig:
    """Settings of :func:`project` (everything that changes the result).

    Defaults, and where they come from. Schedule and learning rate were chosen from the
    figures of ``benchmarks/project.py`` (synthetic-truth task, 32 px random generator, MSE
    only, mean PSNR of 4 images at 100 / 300 / 1000 steps): constant 0.1 gives 18.95 / 20.60 /
    21.93 dB, rampupdown 0.1 18.21 / 20.15 / 21.45, cosine 0.1 17.50 / 19.71 / 21.18, exp 0.1
    (decay to 1 %) 15.85 / 18.41 / 20.32; rampupdown 0.3 is best at 1000 steps (22.03). On
    these random generators every decaying schedule spends steps at a small rate, which is why
    a constant rate wins the short runs. Rampupdown 0.1 stays within 0.5 dB of the best at
    every length, and it is the schedule both reference projectors (NVIDIA, rosinality) use
    on real FFHQ generators, where the final cool-down lets the noisy LPIPS objective settle
    (a constant rate keeps jittering around the optimum); their lr 0.1 was tuned for the
    scale of a trained mapping network's w, which random generators do not share.
    So the default is rampupdown at 0.1; pass ``scheduler="constant"`` for short runs.
    """

    steps: int = 1000                 # NVIDIA/rosinality projectors: 1000 steps
    lr: float = 0.1                   # both reference projectors' initial learning rate
    scheduler: str = "rampupdown"     # NVIDIA/rosinality projectors; see the figures above
    gamma: float | None = None        # "exp" only; None = decay to 10 % by the last step
    lr_rampup: float = 0.05           # "rampupdown": warm-up fraction (reference projectors)
    lr_rampdown: float = 0.25         # "rampupdown": cool-down fraction (reference projectors)
    lpips: str | None = "auto"        # "auto" | "vgg" | None | "module" (an lpips.LPIPS was passed)
    lpips_weight: float = 1.0         # reference projectors: LPIPS is the main image term
    lpips_size: int = 256             # images are area-downsampled to 256 px for LPIPS (both references)
    mse_weight: float = 0.1           # small pixel term for colour fidelity (rosinality --mse; Image2StyleGAN)
    noise_reg_weight: float = 1e5     # NVIDIA regularize_noise_weight / rosinality --noise_regularize
    optimize_noise: bool = True       # optimise per-image noise maps (references); False = G's stored noise
    initial_noise_factor: float = 0.05  # latent noise std at step 0, times the std of w (references)
    noise_ramp: float = 0.75          # fraction of the run over which the latent noise decays (references)
    init: str = "mean"                # "mean" = average w in every row; "given" = a start latent was passed;
                                      # "encoder" = a pSp/e4e encoder's W+ of each target (init=<encoder>)
    n_mean_latent: int = 10000        # samples of w for the mean / std (rosinality n_mean_latent)
    id_weight: float = 0.0            # identity term weight (needs id_net)
    beta1: float = 0.9                # Adam betas (both references use torch/TF defaults)
    beta2: float = 0.999
    seed: int = 0                     # image i uses seed + i (project_folder: seed + hash of its path)
    # speed options (GPU throughput); results stay equal to fp32 within the figures of
    # benchmarks/project.py (synthetic-truth task)
    precision: str = "fp32"           # "fp32" | "bf16" (autocast; Ampere+ GPUs, CPUs) | "fp16" (autocast + loss scaling; T4/P100)
    tf32: bool = True                 # TF32 matmuls/convolutions on Ampere and newer GPUs (no effect elsewhere)
    compile: bool = False             # torch.compile the generator for the fixed-shape step (CUDA graphs on GPUs); long first compile

    def __post_init__(self) -> None:
        check_settings(self, ("lpips_weight", "mse_weight", "noise_reg_weight", "initial_noise_factor", "id_weight",
                              "lr_rampup", "lr_rampdown"))
        if self.gamma is not None and not (0 < self.gamma <= 1):
            raise InputError(f"gamma: expected a value in (0, 1] or None, got {self.gamma!r}")
        if not (0 < self.noise_ramp <= 1):
            raise InputError(f"noise_ramp: expected a fraction in (0, 1], got {self.noise_ramp!r}")
        if self.init not in ("mean", "given", "encoder"):
            raise InputError(f"init: expected 'mean', a start latent tensor or an encoder, got {self.init!r}")
        if self.n_mean_latent < 1:
            raise InputError(f"n_mean_latent: expected >= 1, got {self.n_mean_latent}")
        if self.lpips_weight + self.mse_weight + self.id_weight <= 0:
            raise InputError("lpips_weight, mse_weight and id_weight are all 0: nothing to optimise")
        if self.precision not in PRECISIONS:
            raise InputError(f"precision: expected one of {list(PRECISIONS)}, got {self.precision!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ProjectConfig":
        return cls(**known_settings(cls, d, "projection"))

    def lr_at(self, step: int) -> float:
        """Learning rate of ``step`` under this config's schedule."""
        return lr_schedule(self.scheduler, step, self.steps, self.lr, self.gamma,
                           rampup=self.lr_rampup, rampdown=self.lr_rampdown)


@dataclass(frozen=True, repr=False)
class Projection:
    """Result of :func:`project` for N images.

    Attributes:
        wplus: (N, n_latent, style_dim) float32, CPU.
        noises: num_layers tensors (N, 1, r, r) float32, CPU; ``G.synthesis(wplus, noise=noises)``
            renders ``images`` exactly.
        images: (N, 3, H, W) float32 in [-1, 1] (clamped renderings of the kept step).
        history: per image a dict of per-step lists: "lr", "loss" (total objective),
            "image_loss" (its image terms, which choose the kept step), "mse", "lpips", "noise",
            "id" (terms that are off are omitted).
        metrics: per image {"mse", "psnr", "lpips" (when LPIPS was available), "id_similarity"
            (when an identity network was given), "best_step", "best_loss", "interrupted", "steps"
            (steps run), "seconds" (wall time of its batch, incl. the encoder, divided by the batch size)}.
        config: the :class:`ProjectConfig`; with ``seeds`` it reproduces the run.
        seeds: per-image seeds (config.seed + index in the original call).
        names: per-image names (file stems for paths), or None entries.
        target_sha256: per-image SHA-256 of the target tensor (float32, C-contiguous, CPU).
        weights_sha256: generator weights' SHA-256 (file) or state fingerprint.
        lpips: what supplied LPIPS ("vgg16:<file>", "module") or None when it was off.
        device, facelib_version: where and with what it ran.
        interrupted: stopped by KeyboardInterrupt; ``steps_done`` < ``config.steps`` then.
        init_wplus: (N, n_latent, style_dim) the given start latent, or None for the mean.
        tuning: the photos' pivotal tuning (a :class:`facelib.tuning.Tuning`, one tuned generator
            per photo) when attached with :func:`facelib.tuning.attach_tuning` or
            :func:`facelib.tuning.load_tuned_projection`; edits of a one-photo projection then
            render through it. Not part of the projection's files (the tuning has its own).
    """

    wplus: torch.Tensor
    noises: list[torch.Tensor]
    images: torch.Tensor
    history: list[dict[str, list[float]]]
    metrics: list[dict[str, Any]]
    config: ProjectConfig
    seeds: list[int]
    names: list[str | None]
    target_sha256: list[str]
    weights_sha256: str | None = None
    lpips: str | None = None
    device: str = "cpu"
    facelib_version: str = ""
    interrupted: bool = False
    steps_done: int = 0
    init_wplus: torch.Tensor | None = None
    tuning: Any = None

    # -- container behaviour --------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.wplus.shape[0])

    def __repr__(self) -> str:
        psnrs = ", ".join(f"{m['psnr']:.2f}" for m in self.metrics[:8])
        return (f"Projection(n={len(self)}, wplus={tuple(self.wplus.shape)}, steps_done={self.steps_done}/"
                f"{self.config.steps}, psnr=[{psnrs}{', ...' if len(self) > 8 else ''}], "
                f"interrupted={self.interrupted}{', tuned' if self.tuning is not None else ''})")

    def select(self, index: "int | slice | Sequence[int]") -> "Projection":
        """The projection of some images: an int, a slice or a list of indices.

        A single selected image gets ``config.seed`` set to its own seed, so
        ``project(G, target, config=p.select(i).config)`` reproduces it.
        """
        idx = batch_indices(index, len(self), "projection")
        t = torch.tensor(idx, dtype=torch.long)
        config = self.config
        if idx:
            config = dataclasses.replace(config, seed=self.seeds[idx[0]])
        return dataclasses.replace(
            self, wplus=self.wplus[t], noises=[nz[t] for nz in self.noises], images=self.images[t],
            history=[self.history[i] for i in idx], metrics=[self.metrics[i] for i in idx], config=config,
            seeds=[self.seeds[i] for i in idx], names=[self.names[i] for i in idx],
            target_sha256=[self.target_sha256[i] for i in idx],
            init_wplus=None if self.init_wplus is None else self.init_wplus[t],
            tuning=None if self.tuning is None else self.tuning.select(idx))

    __getitem__ = select

    def __iter__(self) -> Iterator["Projection"]:
        return (self.select(i) for i in range(len(self)))

    @staticmethod
    def cat(parts: Sequence["Projection"]) -> "Projection":
        """Concatenate projections made with the same generator and settings (seeds may differ).

        Raises:
            InputError: empty list, or different generators / settings / shapes.
        """
        parts = list(parts)
        if not parts:
            raise InputError("Projection.cat: nothing to concatenate")
        first = parts[0]
        base = dataclasses.replace(first.config, seed=0)
        for p in parts[1:]:
            if dataclasses.replace(p.config, seed=0) != base:
                raise InputError("Projection.cat: projections were made with different settings")
            if p.weights_sha256 != first.weights_sha256:
                raise InputError("Projection.cat: projections were made with different generators")
            if p.wplus.shape[1:] != first.wplus.shape[1:] or len(p.noises) != len(first.noises):
                raise InputError("Projection.cat: projections have different latent shapes")
        if any(p.tuning is not None for p in parts):
            raise InputError("Projection.cat: some projections carry a tuning; concatenate them first, then "
                             "attach the tunings (facelib.attach_tuning)")
        if any((p.init_wplus is None) != (first.init_wplus is None) for p in parts):
            raise InputError("Projection.cat: some projections started from a given latent, others did not")
        return dataclasses.replace(
            first,
            wplus=torch.cat([p.wplus for p in parts]),
            noises=[torch.cat([p.noises[k] for p in parts]) for k in range(len(first.noises))],
            images=torch.cat([p.images for p in parts]),
            history=[h for p in parts for h in p.history],
            metrics=[m for p in parts for m in p.metrics],
            seeds=[s for p in parts for s in p.seeds],
            names=[s for p in parts for s in p.names],
            target_sha256=[s for p in parts for s in p.target_sha256],
            interrupted=any(p.interrupted for p in parts),
            steps_done=min(p.steps_done for p in parts),
            init_wplus=None if first.init_wplus is None else torch.cat([p.init_wplus for p in parts]))

    # -- persistence ------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The JSON sidecar's content (everything except tensors)."""
        return {
            "format": _FORMAT, "version": _VERSION,
            "n": len(self), "resolution": int(self.images.shape[-1]),
            "n_latent": int(self.wplus.shape[1]), "style_dim": int(self.wplus.shape[2]),
            "config": self.config.to_dict(), "seeds": list(self.seeds), "names": list(self.names),
            "metrics": self.metrics, "history": self.history, "target_sha256": list(self.target_sha256),
            "weights_sha256": self.weights_sha256, "lpips": self.lpips, "device": self.device,
            "facelib_version": self.facelib_version, "interrupted": self.interrupted,
            "steps_done": self.steps_done, "quality": quality_card(self).to_dict(),
        }

    def save(self, path: "str | os.PathLike[str]", *, extra: Mapping[str, Any] | None = None) -> Path:
        """Write ``path`` (tensors, ``weights_only``-loadable) and ``path.with_suffix('.json')``.

        Both are written atomically, the JSON last, so a JSON file beside a .pt marks a
        complete result. ``extra``: more JSON entries (e.g. ``rank`` and ``world_size`` of a
        distributed run). Returns the JSON path.
        """
        tensors = {"wplus": self.wplus.float(), "images": self.images.half()}
        if self.init_wplus is not None:
            tensors["init_wplus"] = self.init_wplus.float()
        return save_result(path, tensors, self.noises, {**self.to_json(), **dict(extra or {})})

    def to_pil(self) -> list:
        """The renderings as PIL images."""

        return to_pil(self.images)


def load_projection(path: "str | os.PathLike[str]") -> Projection:
    """Read a projection written by :meth:`Projection.save` (see the module docstring for the format).

    The tensor file is loaded with ``weights_only=True``. Without its JSON sidecar the
    tensors still load (with a warning) and the settings are reported as defaults.

    Raises:
        CheckpointError: missing, unreadable or not a projection file.
    """

    r = read_result(path, fmt=_FORMAT, what="projection", latents=("wplus",), sidecar_required=False)
    data, meta = r.tensors, r.meta
    images = data.get("images")
    metrics = [{k: (float("nan") if v is None and k in ("mse", "psnr", "lpips", "best_loss") else v)
                for k, v in m.items()} for m in r.per_image("metrics", {})]
    return Projection(
        wplus=data["wplus"].float(), noises=r.noises(),
        images=images.float() if torch.is_tensor(images) else torch.zeros(r.n, 3, 1, 1),
        history=r.per_image("history", {}), metrics=metrics,
        config=ProjectConfig.from_dict(meta.get("config", {})), seeds=r.per_image("seeds", 0),
        names=r.per_image("names", None), target_sha256=r.per_image("target_sha256", ""),
        weights_sha256=meta.get("weights_sha256"), lpips=meta.get("lpips"), device=meta.get("device", "cpu"),
        facelib_version=meta.get("facelib_version", __version__), interrupted=bool(meta.get("interrupted", False)),
        steps_done=int(meta.get("steps_done", 0)),
        init_wplus=data["init_wplus"].float() if torch.is_tensor(data.get("init_wplus")) else None)


# ----------------------------------------------------------------------------------------
# Targets
# ----------------------------------------------------------------------------------------

def _is_image_like(x: Any) -> bool:
    from PIL import Image

    return isinstance(x, (str, os.PathLike, Image.Image))


def load_targets(targets: Any, resolution: int) -> tuple[torch.Tensor, list[str | None]]:
    """Targets as a float32 CPU batch at the generator's resolution, and their names.

    Args:
        targets: a tensor (N, 3, H, W) or (3, H, W) float in [-1, 1] (resized with antialiased
            bilinear when H, W differ from ``resolution``), or a PIL image / path (LANCZOS resize;
            EXIF orientation applied), or a list of any of these.
        resolution: output side.
    Returns:
        ((N, 3, resolution, resolution) float32 in [-1, 1], names: file stems or None).
    Raises:
        ShapeError / RangeError / InputError: wrong shape, values outside [-1, 1] or non-finite,
            unreadable file.
    """

    if torch.is_tensor(targets):
        x = image_batch(targets, "targets")
        if x.shape[-2:] != (resolution, resolution):
            x = torch.nn.functional.interpolate(x, size=(resolution, resolution), mode="bilinear",
                                                align_corners=False, antialias=True).clamp(-1, 1)
        return x.contiguous(), [None] * x.shape[0]
    items = [targets] if _is_image_like(targets) else list(targets)
    if not items:
        raise InputError("targets: empty list")

    tensors, names = [], []
    for item in items:
        if torch.is_tensor(item):
            t, item_names = load_targets(item, resolution)  # (3, H, W) or (n, 3, H, W): n images
        elif _is_image_like(item):
            t = to_tensor(load_image(item), resolution)
            item_names = [Path(item).stem if isinstance(item, (str, os.PathLike)) else None]
        else:
            raise InputError(f"targets: expected tensors, PIL images or paths, got {type(item).__name__}")
        tensors.append(t)
        names += item_names
    return torch.cat(tensors).contiguous(), names


def sha256_tensor(x: torch.Tensor) -> str:
    """Hex SHA-256 of a tensor's float32 values (any shape, any device): the content key of caches."""
    return hashlib.sha256(x.detach().cpu().float().contiguous().numpy().tobytes()).hexdigest()


# ----------------------------------------------------------------------------------------
# Cache
# ----------------------------------------------------------------------------------------

class ProjectionCache:
    """Finished single-image projections on disk, keyed by everything that determines them.

    Key: SHA-256 over the target's tensor bytes, the generator weights' SHA-256 (or state
    fingerprint) and latent_avg, the config (with the image's own seed), the start latent,
    what supplies LPIPS and the identity network's fingerprint. Entries are
    ``<dir>/<key[:2]>/<key>.pt`` + ``.json`` (the :meth:`Projection.save` format). Interrupted
    runs are never stored.
    """

    def __init__(self, directory: "str | os.PathLike[str]") -> None:
        self.directory = Path(directory)

    def path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.pt"

    @staticmethod
    def key(**parts: Any) -> str:
        blob = json.dumps(parts, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()

    def get(self, key: str) -> Projection | None:
        p = self.path(key)
        if not (p.is_file() and p.with_suffix(".json").is_file()):
            return None
        try:
            return load_projection(p)
        except CheckpointError as e:
            log.warning("ignoring unreadable cache entry %s (%s)", p, e.problem)
            return None

    def put(self, key: str, proj: Projection) -> None:
        if len(proj) != 1 or proj.interrupted:
            raise InputError("ProjectionCache.put: expects one finished (not interrupted) projection")
        proj.save(self.path(key))


# ----------------------------------------------------------------------------------------
# Optimisation
# ----------------------------------------------------------------------------------------

@torch.no_grad()
def _latent_stats(G: nn.Module, n: int, need_std: bool) -> tuple[torch.Tensor, float]:
    """(mean w (D,), sqrt(E ||w - mean||^2)) from ``n`` mapped samples (seed 0), or G.latent_avg."""
    mean = G.latent_avg.detach().float() if getattr(G, "latent_avg", None) is not None else None
    if mean is not None and not need_std:
        return mean.to(G.device), 0.0
    g = torch.Generator().manual_seed(0)
    ws = []
    for start in range(0, n, 4096):
        z = torch.randn(min(4096, n - start), G.style_dim, generator=g).to(G.device)
        ws.append(G.mapping(z).float())
    w = torch.cat(ws)
    if mean is None:
        mean = w.double().mean(0).float()
    std = float((w - mean.to(w)).square().sum() / w.shape[0]) ** 0.5
    return mean.to(G.device), std


def _project_batch(G: nn.Module, targets: torch.Tensor, seeds: Sequence[int], cfg: ProjectConfig, *,
                   lpips_loss: LPIPSLoss | None, id_net: nn.Module | None, target_emb: torch.Tensor | None,
                   init_wplus: torch.Tensor | None, on_step: StepCallback | None, progress: bool,
                   desc: str | None) -> dict[str, Any]:
    """Optimise one batch; returns the pieces of a Projection."""
    device = G.device
    n = targets.shape[0]
    targets = targets.to(device)
    need_std = cfg.initial_noise_factor > 0 and cfg.steps > 0
    w_mean, w_std = _latent_stats(G, cfg.n_mean_latent, need_std) if init_wplus is None or need_std else (None, 0.0)
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]

    # 1. parameters: W+ and (optionally) per-image noise maps
    if init_wplus is None:
        w0 = w_mean.detach().float()[None, None].repeat(n, G.n_latent, 1)  # [N, L, D]
    else:
        w0 = init_wplus.to(device).float().clone()
    w = w0.clone().requires_grad_(True)
    if cfg.optimize_noise:
        noises = []
        for buf in G.noise_buffers:
            r = buf.shape[-1]
            noises.append(torch.cat([torch.randn(1, 1, r, r, generator=g) for g in gens]).to(device))
        normalize_noises_(noises)
        for nz in noises:
            nz.requires_grad_(True)
        params = [w] + noises
    else:
        noises = [b.expand(n, -1, -1, -1) for b in G.noise_buffers]
        params = [w]
    opt = torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))

    target_feats = lpips_loss.features(targets) if lpips_loss is not None and cfg.lpips_weight > 0 else None
    use_id = id_net is not None and target_emb is not None
    synthesis = _synthesis_fn(G, cfg)
    amp_dtype = PRECISIONS[cfg.precision]
    scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None

    def evaluate(step: int) -> Evaluation:
        """Render w + ramped latent noise; per-image objective and its terms (incl. "image_loss")."""
        strength = w_std * cfg.initial_noise_factor * max(0.0, 1.0 - step / cfg.steps / cfg.noise_ramp) ** 2
        w_eval = w
        if strength > 0:
            eps = torch.stack([torch.randn(G.n_latent, G.style_dim, generator=g) for g in gens]).to(device)
            w_eval = w + strength * eps
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            img = synthesis(w_eval, noise=noises)  # [N, 3, H, W]
            lp = lpips_loss.distance(img, target_feats) if target_feats is not None else None
        img = img.float()  # the loss terms in float32
        terms: dict[str, torch.Tensor] = {"mse": mse_per_image(img, targets)}
        image_loss = cfg.mse_weight * terms["mse"]
        if lp is not None:
            terms["lpips"] = lp.float()
            image_loss = image_loss + cfg.lpips_weight * terms["lpips"]
        if use_id and cfg.id_weight > 0:
            terms["id"] = 1.0 - identity_similarity(id_net, img, target_emb)
            image_loss = image_loss + cfg.id_weight * terms["id"]
        terms["image_loss"] = image_loss
        loss = image_loss
        if cfg.optimize_noise and cfg.noise_reg_weight > 0:
            terms["noise"] = noise_regularize(noises)
            loss = loss + cfg.noise_reg_weight * terms["noise"]
        # the kept step is chosen by the image terms: the noise regulariser (weight 1e5)
        # constrains the noise maps and would otherwise decide it
        return Evaluation(loss=loss, terms=terms, keep=[w_eval, *noises], wplus=w_eval, images=img,
                          criterion=image_loss)

    # 2. Adam steps on the summed loss, the noise maps renormalised after each; keep each image's best step
    best = BestSteps([w0, *noises])
    with _tf32(device, cfg.tf32):
        run = optimise(opt, best, evaluate, total=cfg.steps, lr_at=cfg.lr_at, label="projection",
                       items="image(s)", hint="lower lr or check the generator/targets",
                       after_step=(lambda: normalize_noises_(noises)) if cfg.optimize_noise else None,
                       on_step=on_step, progress=progress, desc=desc, scaler=scaler)
    # 0 steps (or no finite step) keeps the start point
    return {"wplus": best.values[0], "noises": best.values[1:], "history": best.history, "best_step": best.step,
            "best_loss": best.loss.cpu().tolist(), "steps_done": run.steps_done, "interrupted": run.interrupted,
            "failure": run.failure, "any_step": best.any_step}


class _tf32:
    """Context: allow TF32 matmuls and cuDNN convolutions on a CUDA device when ``on`` (PyTorch
    leaves matmuls in full fp32 by default); restores the previous flags. Only Ampere and newer
    GPUs have TF32 units; elsewhere the flags change nothing."""

    def __init__(self, device: torch.device, on: bool) -> None:
        self.active = on and device.type == "cuda"

    def __enter__(self) -> None:
        if self.active:
            self.saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    def __exit__(self, *exc: Any) -> None:
        if self.active:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.saved


def _synthesis_fn(G: nn.Module, cfg: ProjectConfig) -> Callable[..., torch.Tensor]:
    """``G.synthesis``, or with ``cfg.compile`` its ``torch.compile``d version (kept on G, so a
    folder's batches compile once; on CUDA mode "reduce-overhead" records CUDA graphs)."""
    if not cfg.compile:
        return G.synthesis
    compiled = getattr(G, "_compiled_synthesis", None)
    if compiled is None:
        mode = "reduce-overhead" if G.device.type == "cuda" else None
        compiled = torch.compile(G.synthesis, mode=mode, dynamic=False)
        G._compiled_synthesis = compiled
    return compiled


@torch.no_grad()
def _finish(G: nn.Module, targets: torch.Tensor, raw: dict[str, Any], cfg: ProjectConfig, *,
            lpips_loss: LPIPSLoss | None, id_net: nn.Module | None, target_emb: torch.Tensor | None,
            seeds: list[int], names: list[str | None], shas: list[str], init_wplus: torch.Tensor | None,
            meta: dict[str, Any]) -> Projection:
    device = G.device
    wplus, noises = raw["wplus"], raw["noises"]
    images = G.synthesis(wplus, noise=noises).clamp(-1, 1)
    tgt = targets.to(device)
    mse = mse_per_image(images, tgt).cpu().tolist()
    ps = psnr(images, tgt).cpu().tolist()
    lp = lpips_loss(images, tgt).cpu().tolist() if lpips_loss is not None else None
    ids = identity_similarity(id_net, images, target_emb).cpu().tolist() if id_net is not None else None
    metrics = []
    for i in range(len(mse)):
        m: dict[str, Any] = {"mse": mse[i], "psnr": ps[i]}
        if lp is not None:
            m["lpips"] = lp[i]
        if ids is not None:
            m["id_similarity"] = ids[i]
        m.update(best_step=raw["best_step"][i], best_loss=raw["best_loss"][i], interrupted=raw["interrupted"])
        metrics.append(m)
    return Projection(
        wplus=wplus.detach().cpu().float(), noises=[nz.detach().cpu().float() for nz in noises],
        images=images.detach().cpu().float(), history=raw["history"], metrics=metrics, config=cfg,
        seeds=list(seeds), names=list(names), target_sha256=list(shas), interrupted=raw["interrupted"],
        steps_done=raw["steps_done"], init_wplus=None if init_wplus is None else init_wplus.detach().cpu().float(),
        **meta)


def settle_config(config: ProjectConfig | None, options: Mapping[str, Any], caller: str = "project"
                  ) -> tuple[ProjectConfig, nn.Module | None, torch.Tensor | None]:
    """(config, lpips module or None, start latent or None) from ``config`` or keyword options.

    Settings come either from ``config`` or from keyword options, not both
    (:class:`~facelib.errors.InputError` names the clash). Only the objects a config cannot hold
    go with a config: ``init=`` a start latent, :class:`Projection` or encoder (or None: none),
    and ``lpips=`` a module.
    """
    options = dict(options)
    if config is not None:
        both = sorted(k for k, v in options.items()
                      if not (k in ("init", "lpips") and isinstance(v, (torch.Tensor, nn.Module, Projection))
                              or k == "init" and v is None))
        if both:
            raise InputError(f"{caller}: pass either config= or keyword settings, not both (got config= and "
                             f"{', '.join(both)}); use dataclasses.replace(config, ...) to change a config")
    lpips_module = lpips_option(options, config.lpips if config is not None else "auto")
    init_opt = options.pop("init", None)
    if init_opt is None:
        init_opt = config.init if config is not None else "mean"
    init_wplus = None
    if isinstance(init_opt, Projection):
        init_opt = init_opt.wplus
    if torch.is_tensor(init_opt):
        init_wplus = init_opt
        options["init"] = "given"
    elif isinstance(init_opt, nn.Module) and callable(getattr(init_opt, "encode", None)):
        init_wplus = init_opt  # an encoder (facelib.encoders.StyleEncoder): run on the targets in project()
        options["init"] = "encoder"
    else:
        options["init"] = init_opt
    fields = {f.name for f in dataclasses.fields(ProjectConfig)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise InputError(f"{caller}: unknown option(s) {unknown}; settings are {sorted(fields)}")
    cfg = dataclasses.replace(config, **options) if config is not None else ProjectConfig(**options)
    if cfg.lpips == "module" and lpips_module is None:
        raise InputError("lpips='module' needs the lpips.LPIPS module itself: pass lpips=<module>")
    if cfg.init == "given" and init_wplus is None:
        raise InputError("init='given' needs the start latent: pass init=<tensor>")
    if cfg.init == "encoder" and init_wplus is None:
        raise InputError("init='encoder' needs the encoder itself: pass init=facelib.load_encoder(path)")
    return cfg, lpips_module, init_wplus


def project(G: nn.Module, targets: Any, *, config: ProjectConfig | None = None,
            on_step: StepCallback | None = None, progress: bool = True,
            cache_dir: "str | os.PathLike[str] | None" = None, id_net: nn.Module | None = None,
            target_embeddings: torch.Tensor | None = None, vgg_path: "str | os.PathLike[str] | None" = None,
            desc: str | None = None, seeds: Sequence[int] | None = None, **options: Any) -> Projection:
    """Project images into W+ (see the module docstring for the method).

    Args:
        G: a :class:`~facelib.stylegan2.StyleGAN2Generator` (its device is used; its parameters
            are frozen during the run and restored afterwards).
        targets: (N, 3, H, W) float tensor in [-1, 1], a PIL image, a path, or a list of images /
            paths; resized to ``G.resolution``.
        config: a :class:`ProjectConfig`; or, instead of it, keyword ``options`` that build one,
            e.g. ``steps=300, lr=0.1, scheduler="exp", gamma=None, mse_weight=1.0,
            noise_reg_weight=1e5, seed=0, id_weight=0.1``. Two options also take objects:
            ``lpips=`` an ``lpips.LPIPS`` (or :class:`~facelib.losses.LPIPSLoss`) module, and
            ``init=`` a start latent (N, n_latent, D), (1, n_latent, D), (N, D) or (D,) (or a
            :class:`Projection`, whose W+ is used), or a pSp/e4e encoder
            (:func:`facelib.load_encoder`): the run starts from its W+ of each target (resized to
            the encoder's 256 px), so a few hundred steps, or none, replace a thousand.
            These two objects may also accompany a ``config``; any other option with a ``config``
            is an :class:`InputError`.
        on_step: called as ``on_step(step, total, state)`` after every step (a :class:`StepState`).
        progress: show a tqdm progress bar.
        cache_dir: reuse / store finished single-image results there (:class:`ProjectionCache`).
        id_net: identity network, (N, 3, 112, 112) in [-1, 1] -> (N, 512) normalised
            embeddings; adds the identity term (``id_weight``) and the "id_similarity" metric.
        target_embeddings: (N or 1, 512) embeddings the identity term pulls towards; default:
            ``id_net`` of the targets' identity crops.
        vgg_path: VGG16 weight file or folder for LPIPS (otherwise searched, never downloaded).
        desc: progress-bar label.
        seeds: one seed per image instead of ``config.seed + index`` (e.g. derived from each
            image's name, so the result does not depend on the batch it ran in).
    Returns:
        A :class:`Projection`.
    Raises:
        InputError / ShapeError / RangeError: bad targets or settings.
        DependencyError: ``lpips="vgg"`` without local VGG16 weights.
        OptimisationError: a NaN/inf loss; ``.best`` holds the best :class:`Projection` so far
            (None when no step finished).

    A KeyboardInterrupt during the optimisation returns the best steps so far, with
    ``interrupted=True`` (also in every ``metrics`` entry).
    """

    # 1. Check inputs and settle the config
    cfg, lpips_module, init_wplus = settle_config(config, options)
    if cfg.id_weight > 0 and id_net is None:
        raise InputError("id_weight > 0 needs an identity network: pass id_net=...")
    for name in ("n_latent", "style_dim", "resolution", "synthesis", "mapping", "noise_buffers"):
        if not hasattr(G, name):
            raise InputError(f"G: expected a StyleGAN2Generator, got {type(G).__name__} (no {name!r})")

    x, names = load_targets(targets, G.resolution)  # [N, 3, H, W] CPU
    n = x.shape[0]
    encode_seconds = 0.0
    if isinstance(init_wplus, nn.Module):  # encoder initialisation: its W+ of every target
        started = time.perf_counter()
        init_wplus = init_wplus.encode(x)
        encode_seconds = time.perf_counter() - started
    if init_wplus is not None:
        iw = init_wplus.detach().float().cpu()
        if iw.ndim == 1:
            iw = iw[None]
        if iw.ndim == 2:
            iw = iw[:, None].expand(-1, G.n_latent, -1)
        if iw.ndim != 3 or iw.shape[1:] != (G.n_latent, G.style_dim) or iw.shape[0] not in (1, n):
            raise ShapeError(f"init: expected ({n} or 1, {G.n_latent}, {G.style_dim}), (N, {G.style_dim}) or "
                             f"({G.style_dim},), got {tuple(init_wplus.shape)}",
                             actual_shape=init_wplus.shape, expected_shape=(n, G.n_latent, G.style_dim))
        if not torch.isfinite(iw).all():
            raise RangeError("init: start latent contains NaN or inf")
        init_wplus = iw.expand(n, -1, -1).contiguous()
    if seeds is None:
        seeds = [cfg.seed + i for i in range(n)]
    else:
        seeds = [int(s) for s in seeds]
        if len(seeds) != n:
            raise InputError(f"seeds: expected one per image ({n}), got {len(seeds)}")
    shas = [sha256_tensor(x[i]) for i in range(n)]
    device = G.device

    with Frozen(G, id_net, lpips_module):
        # 2. Losses
        lpips_loss, lpips_label = resolve_lpips_option(lpips_module, cfg.lpips, vgg_path=vgg_path, device=device,
                                                       size=cfg.lpips_size)
        if (lpips_loss is None or cfg.lpips_weight == 0) and cfg.mse_weight == 0 and cfg.id_weight == 0:
            raise InputError("no image loss left: LPIPS is off (or lpips_weight is 0) and mse_weight is 0; "
                             "set mse_weight > 0 or make LPIPS available")
        target_emb = None
        if id_net is not None:
            if target_embeddings is not None:
                target_emb = target_embeddings.detach().to(device).float()
                if target_emb.ndim != 2 or target_emb.shape[0] not in (1, n):
                    raise ShapeError(f"target_embeddings: expected ({n} or 1, E), got {tuple(target_emb.shape)}",
                                     actual_shape=target_emb.shape, expected_shape=(n, None))
                target_emb = target_emb.expand(n, -1)
            else:
                with torch.no_grad():

                    target_emb = id_net(identity_crop(x.to(device))).float()
        wid = generator_id(G)
        meta = {"weights_sha256": wid, "lpips": lpips_label,
                "device": str(device), "facelib_version": __version__}

        # 3. Cache look-up
        cache = ProjectionCache(cache_dir) if cache_dir is not None else None
        keys: list[str | None] = [None] * n
        found: dict[int, Projection] = {}
        if cache is not None:

            avg = getattr(G, "latent_avg", None)
            avg_sha = sha256_tensor(avg) if avg is not None else None
            lp_id = state_fingerprint(lpips_loss.net.state_dict()) if lpips_loss is not None else None
            id_id = state_fingerprint(id_net.state_dict()) if id_net is not None else None
            for i in range(n):
                keys[i] = ProjectionCache.key(
                    format=_VERSION, target=shas[i], weights=wid, latent_avg=avg_sha,
                    config=dataclasses.replace(cfg, seed=seeds[i]).to_dict(), lpips=lp_id, id_net=id_id,
                    target_emb=sha256_tensor(target_emb[i]) if target_emb is not None else None,
                    init=sha256_tensor(init_wplus[i]) if init_wplus is not None else None,
                    device_type=device.type)
                hit = cache.get(keys[i])
                if hit is not None:
                    found[i] = dataclasses.replace(hit, names=[names[i]])
            if found:
                log.info("projection cache: reusing %d of %d image(s) from %s", len(found), n, cache.directory)

        # 4. Optimise the rest as one batch
        todo = [i for i in range(n) if i not in found]
        parts: dict[int, Projection] = dict(found)
        if todo:
            sel = torch.tensor(todo)
            sub_init = init_wplus[sel] if init_wplus is not None else None
            sub_emb = target_emb[sel.to(device)] if target_emb is not None else None
            sub_seeds = [seeds[i] for i in todo]

            check_fits(G, device, len(todo), lpips=lpips_loss is not None, lpips_size=cfg.lpips_size)
            started = time.perf_counter()
            raw = _project_batch(G, x[sel], sub_seeds, cfg, lpips_loss=lpips_loss, id_net=id_net,
                                 target_emb=sub_emb, init_wplus=sub_init, on_step=on_step, progress=progress,
                                 desc=desc)
            if raw["failure"] is not None and not raw["any_step"]:
                raise OptimisationError(f"projection failed: {raw['failure']}", best=None)
            result = _finish(G, x[sel], raw, cfg, lpips_loss=lpips_loss, id_net=id_net, target_emb=sub_emb,
                             seeds=sub_seeds, names=[names[i] for i in todo], shas=[shas[i] for i in todo],
                             init_wplus=sub_init, meta=meta)
            seconds = (time.perf_counter() - started) / len(todo) + encode_seconds / n
            for m in result.metrics:  # the batch's wall time, shared out per image
                m.update(steps=raw["steps_done"], seconds=seconds)
            if raw["failure"] is not None:
                raise OptimisationError(f"projection failed: {raw['failure']}; .best holds the best steps "
                                        f"before that", best=result)
            for j, i in enumerate(todo):
                one = result.select(j)
                parts[i] = one
                if cache is not None and not result.interrupted:
                    cache.put(keys[i], dataclasses.replace(one, names=[None]))
    out = Projection.cat([dataclasses.replace(parts[i], config=dataclasses.replace(parts[i].config, seed=cfg.seed))
                          for i in range(n)]) if n > 1 else parts[0]
    return out
