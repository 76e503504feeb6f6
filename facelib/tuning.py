"""Pivotal tuning: fit a copy of the generator's synthesis weights to one projected photo.

A W+ projection leaves a gap between the photo and its rendering: a real face is rarely
exactly inside the generator's range. Pivotal tuning (PTI, Roich et al. 2022) closes most of
it by keeping the projection's latent (the *pivot*) fixed and fine-tuning the generator
itself so that ``G'(pivot)`` matches the photo. Edits then move the latent as before and
render through ``G'``, so the edited face keeps the person's detail.

``tune_generator(G, projection, targets)``:

1. every photo gets its own deep copy of ``G``; only the synthesis weights (everything but
   the mapping network ``style.*``) are trainable, ``G`` itself is never modified;
2. each step renders ``G'_i(pivot_i)`` with the projection's noise maps and minimises
   ``l2_weight * MSE + lpips_weight * LPIPS`` (PTI's ``pt_l2_lambda = pt_lpips_lambda = 1``)
   with Adam at lr 3e-4 for at most 350 steps (PTI's ``max_pti_steps``,
   ``pti_learning_rate``); a photo whose LPIPS falls below 0.06 stops there (PTI's
   ``LPIPS_value_threshold``); with LPIPS unavailable only the L2 term is used and nothing
   stops early;
3. optionally (``locality_weight > 0``) PTI's locality regulariser: a random ``w`` (mapped
   from z with truncation 0.5) sets a direction from the pivot, the latent ``alpha = 30``
   along it is rendered by ``G`` and ``G'``, and their MSE (+ LPIPS) is added with
   ``locality_weight`` (PTI's ``regulizer_l2_lambda = regulizer_lpips_lambda = 0.1``; its
   official configuration ships with the regulariser switched off, so the default is 0);
4. per photo the step with the lowest image loss is kept (its weights), as projection does.

Batching: the loss is a sum of per-photo losses and every trainable tensor belongs to one
photo's copy (Adam is elementwise), so each photo follows the path it would alone; memory
grows with one generator copy (plus Adam state and a kept best copy) per photo.

Saved format (:meth:`Tuning.save` / :func:`load_tuning`), e.g. ``ann.tune.pt`` + ``ann.tune.json``::

    <name>.pt     tensors only (load with weights_only=True):
                    "wplus"   (N, n_latent, D) float32   the pivots
                    "noise_k" (N, 1, r, r) float32      the pivots' noise maps
                    "images"  (N, 3, H, W) float16       the tuned renderings
                    "delta.<i>.<param>"                  tuned minus base weights of photo i, only
                                                         tensors that changed; float16 where the
                                                         rounding error is below 1e-3 of the
                                                         tensor's largest change, else float32
    <name>.json   {"format": "facelib.tuning", "version": 1, "config", "metrics", "history",
                   "weights_sha256" (the base generator), "deltas" (per photo per tensor:
                   dtype, fp16_max_error), ...}

The file holds only the weight difference, so it restores against the base generator only:
:func:`load_tuning` refuses a generator whose weights hash differs from the recorded one.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import torch
from torch import nn

from . import __version__
from ._optim import (BestSteps, Evaluation, Frozen, StepCallback, batch_indices, generator_id, lpips_option,
                     known_settings, optimise, read_result, resolve_lpips_option, save_result)
from .align_batch import list_images
from .errors import BatchInterrupted, CheckpointError, InputError, MemoryLimitError, OptimisationError
from .folder_result import FolderResult
from .grids import save_image
from .losses import mse_per_image, psnr
from .memory import check_fits, plan_batch, split_after_out_of_memory
from .paths import IMAGE_EXTENSIONS
from .projection import Projection, load_projection, load_targets
from .projection_folder import projection_paths

__all__ = ["TuneConfig", "Tuning", "tune_generator", "load_tuning", "as_generator", "tuning_path", "tune_folder",
           "find_tuning", "attach_tuning", "load_tuned_projection", "tuned_generator", "TuneFolderResult"]

log = logging.getLogger(__name__)

_FORMAT = "facelib.tuning"
_VERSION = 1
_FP16_REL_TOL = 1e-3  # a delta is stored as float16 when its rounding error is below this share of its largest value


@dataclass(frozen=True)
class TuneConfig:
    """Settings of :func:`tune_generator`; defaults from PTI's official configuration."""

    steps: int = 350                  # PTI max_pti_steps
    lr: float = 3e-4                  # PTI pti_learning_rate (Adam, constant)
    l2_weight: float = 1.0            # PTI pt_l2_lambda
    lpips_weight: float = 1.0         # PTI pt_lpips_lambda
    lpips: str | None = "auto"        # "auto" | "vgg" | None | "module" (an LPIPS module was passed)
    lpips_size: int = 256             # images area-downsampled to 256 px for LPIPS (as in projection)
    lpips_threshold: float = 0.06     # PTI LPIPS_value_threshold: a photo stops once LPIPS is below it
    locality_weight: float = 0.0      # PTI regulizer_l2/lpips_lambda is 0.1 when on; official config: off
    locality_alpha: float = 30.0      # PTI regulizer_alpha: distance from the pivot, in w units
    locality_truncation: float = 0.5  # PTI samples the regulariser's w with truncation_psi 0.5
    beta1: float = 0.9                # Adam betas (torch defaults, as PTI)
    beta2: float = 0.999
    seed: int = 0                     # photo i uses seed + i (locality samples)

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise InputError(f"steps: expected an integer >= 0, got {self.steps!r}")
        for name in ("lr", "l2_weight", "lpips_weight", "lpips_threshold", "locality_weight", "locality_alpha",
                     "locality_truncation"):
            v = getattr(self, name)
            if isinstance(v, bool) or not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise InputError(f"{name}: expected a finite number >= 0, got {v!r}")
        if self.lr <= 0:
            raise InputError(f"lr: expected a positive number, got {self.lr!r}")
        if self.lpips not in ("auto", "vgg", None, "module"):
            raise InputError(f"lpips: expected 'auto', 'vgg', None or an lpips.LPIPS module, got {self.lpips!r}")
        if self.lpips_size < 16:
            raise InputError(f"lpips_size: expected >= 16, got {self.lpips_size}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise InputError(f"beta1/beta2: expected values in [0, 1), got {self.beta1}, {self.beta2}")
        if self.l2_weight + self.lpips_weight <= 0:
            raise InputError("l2_weight and lpips_weight are both 0: nothing to fit")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TuneConfig":
        return cls(**known_settings(cls, d, "tuning"))


def _trainable(name: str) -> bool:
    """Synthesis weights: every parameter outside the mapping network."""
    return not name.startswith("style.")


@dataclass(frozen=True, repr=False)
class Tuning:
    """Result of :func:`tune_generator` for N photos (one tuned generator copy each).

    Attributes:
        generators: N tuned copies of the base generator (eval mode, frozen).
        deltas: per photo {parameter name: tuned - base} float32 CPU, only changed tensors.
        wplus: (N, n_latent, D) the pivots; noises: their per-layer maps (N, 1, r, r).
        images: (N, 3, H, W) float32 in [-1, 1], ``generators[i](wplus[i])``.
        metrics: per photo {"psnr_before", "psnr", "mse_before", "mse", "lpips_before", "lpips"
            (with LPIPS), "best_step", "steps_done", "early_stopped", "interrupted"}.
        history: per photo per-step lists "lr", "loss", "image_loss", "mse", "lpips", "locality".
        config: the :class:`TuneConfig`; names, target_sha256, seeds: per photo.
        weights_sha256: the base generator's weights hash (what :func:`load_tuning` checks).
    """

    generators: list[nn.Module]
    deltas: list[dict[str, torch.Tensor]]
    wplus: torch.Tensor
    noises: list[torch.Tensor]
    images: torch.Tensor
    metrics: list[dict[str, Any]]
    history: list[dict[str, list[float]]]
    config: TuneConfig
    names: list[str | None]
    target_sha256: list[str]
    seeds: list[int]
    weights_sha256: str | None = None
    lpips: str | None = None
    device: str = "cpu"
    facelib_version: str = ""
    interrupted: bool = False
    steps_done: int = 0

    def __len__(self) -> int:
        return int(self.wplus.shape[0])

    def __repr__(self) -> str:
        gains = ", ".join(f"{m['psnr_before']:.2f}->{m['psnr']:.2f}" for m in self.metrics[:6])
        return f"Tuning(n={len(self)}, psnr=[{gains}{', ...' if len(self) > 6 else ''}], steps_done={self.steps_done})"

    @property
    def generator(self) -> nn.Module:
        """The tuned generator of a one-photo tuning (``tuning[i].generator`` for a batch).

        Raises:
            InputError: the tuning holds several photos.
        """
        if len(self) != 1:
            raise InputError(f"this tuning holds {len(self)} photos, each with its own generator: "
                             "pick one with tuning[i].generator")
        return self.generators[0]

    def select(self, index: "int | slice | Sequence[int]") -> "Tuning":
        """The tuning of some photos: an int, a slice or a list of indices."""
        idx = batch_indices(index, len(self), "tuning")
        t = torch.tensor(idx, dtype=torch.long)
        return dataclasses.replace(
            self, generators=[self.generators[i] for i in idx], deltas=[self.deltas[i] for i in idx],
            wplus=self.wplus[t], noises=[nz[t] for nz in self.noises], images=self.images[t],
            metrics=[self.metrics[i] for i in idx], history=[self.history[i] for i in idx],
            names=[self.names[i] for i in idx], target_sha256=[self.target_sha256[i] for i in idx],
            seeds=[self.seeds[i] for i in idx])

    __getitem__ = select

    def render(self, wplus: torch.Tensor, *, index: int = 0, noise: Any = "pivot") -> torch.Tensor:
        """Render latents through photo ``index``'s tuned generator.

        Args:
            wplus: (M, n_latent, D) or (n_latent, D), e.g. an edit of ``self.wplus[index]``.
            noise: "pivot" (the pivot's noise maps, the default), or anything
                :meth:`~facelib.stylegan2.StyleGAN2Generator.synthesis` takes.
        Returns:
            (M, 3, H, W) float32 CPU in [-1, 1].
        """
        G = self.generators[index]
        w = wplus if wplus.ndim == 3 else wplus[None]
        if isinstance(noise, str) and noise == "pivot":
            noise = [nz[index:index + 1].to(G.device) for nz in self.noises]
        with torch.no_grad():
            return G.synthesis(w.to(G.device).float(), noise=noise).float().clamp(-1, 1).cpu()

    # -- persistence ----------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "format": _FORMAT, "version": _VERSION, "n": len(self), "resolution": int(self.images.shape[-1]),
            "n_latent": int(self.wplus.shape[1]), "style_dim": int(self.wplus.shape[2]),
            "config": self.config.to_dict(), "metrics": self.metrics, "history": self.history,
            "names": list(self.names), "target_sha256": list(self.target_sha256), "seeds": list(self.seeds),
            "weights_sha256": self.weights_sha256, "lpips": self.lpips, "device": self.device,
            "facelib_version": self.facelib_version, "interrupted": self.interrupted,
            "steps_done": self.steps_done,
        }

    def save(self, path: "str | os.PathLike[str]", *, extra: Mapping[str, Any] | None = None) -> Path:
        """Write the weight differences, pivots and renderings to ``path`` and the settings and
        metrics to ``path.with_suffix('.json')`` (both atomically, the JSON last).

        Each changed tensor is stored as float16 when its rounding error stays below 1e-3 of
        its largest change (the error is recorded per tensor in the sidecar), else float32.
        ``extra`` adds JSON values to the sidecar. Returns the JSON path.
        """
        tensors: dict[str, torch.Tensor] = {"wplus": self.wplus.float(), "images": self.images.half()}
        stored: list[dict[str, Any]] = []
        for i, delta in enumerate(self.deltas):
            info: dict[str, Any] = {}
            for name, d in delta.items():
                d = d.detach().float().cpu()
                half = d.half()
                err = float((half.float() - d).abs().max()) if d.numel() else 0.0
                top = float(d.abs().max()) if d.numel() else 0.0
                if bool(torch.isfinite(half).all()) and err <= _FP16_REL_TOL * top:
                    tensors[f"delta.{i}.{name}"] = half
                    info[name] = {"dtype": "float16", "fp16_max_error": err, "max_abs": top}
                else:
                    tensors[f"delta.{i}.{name}"] = d
                    info[name] = {"dtype": "float32", "fp16_max_error": err, "max_abs": top}
            stored.append(info)
        meta = self.to_json()
        meta["deltas"] = stored
        meta.update(extra or {})
        return save_result(path, tensors, self.noises, meta)


def tuning_path(latent_path: "str | os.PathLike[str]") -> Path:
    """Where a projection's tuning is saved beside it: ``<dir>/<stem>.tune.pt``."""
    p = Path(latent_path)
    return p.with_name(p.stem + ".tune.pt")


def attach_tuning(projection: Projection, tuning: "Tuning | None") -> Projection:
    """``projection`` carrying ``tuning`` (one tuned generator per photo) as ``projection.tuning``.

    Edits given such a projection (:func:`facelib.tables.style_table`, :func:`facelib.tables.expression_table`,
    :func:`facelib.face_swap`, the previews) render through its tuned generator; ``tuning=None``
    detaches it.

    Raises:
        InputError: a different number of photos, or pivots that are not the projection's latents.
    """
    if tuning is None:
        return dataclasses.replace(projection, tuning=None)
    if not isinstance(tuning, Tuning):
        raise InputError(f"tuning: expected a facelib Tuning, got {type(tuning).__name__}")
    if len(tuning) != len(projection):
        raise InputError(f"tuning: {len(tuning)} photo(s) for a projection of {len(projection)}")
    if tuning.wplus.shape != projection.wplus.shape or not torch.allclose(tuning.wplus, projection.wplus, atol=1e-5):
        raise InputError("tuning: its pivots are not this projection's latents (tuned from another projection)")
    return dataclasses.replace(projection, tuning=tuning)


def load_tuned_projection(path: "str | os.PathLike[str]", G: nn.Module, *,
                          tuning: "str | os.PathLike[str] | None" = None) -> Projection:
    """A saved projection with the tuning saved beside it (:func:`tuning_path`, or ``tuning``)
    attached (:func:`attach_tuning`), restored against ``G``; without one, the projection alone.

    Raises:
        CheckpointError: an unreadable projection or tuning, or a tuning of another base generator.
    """
    projection = load_projection(path)
    where = Path(tuning) if tuning else tuning_path(path)
    if not where.is_file():
        if tuning:
            raise CheckpointError(where, "no such tuning file")
        return projection
    return attach_tuning(projection, load_tuning(where, G))


def tuned_generator(G: Any, *latents: Any, tuning: "Tuning | None" = None) -> nn.Module | None:
    """The tuned generator to render with, or None when there is no tuning: ``tuning``, else ``G``
    when it is a :class:`Tuning`, else the tuning carried by the first of ``latents`` that has one
    (:func:`attach_tuning`). Only one photo's tuning can render (``projection[i]`` picks one).

    Raises:
        InputError: a tuning of several photos, or one made on another base generator than ``G``.
    """
    if tuning is None:
        tuning = G if isinstance(G, Tuning) else next(
            (t for t in (getattr(x, "tuning", None) for x in latents) if isinstance(t, Tuning)), None)
    if tuning is None:
        return None
    if len(tuning) != 1:
        raise InputError(f"this tuning holds {len(tuning)} photos, each with its own generator: edit one photo "
                         "at a time (tuning[i], or projection[i] carrying photo i's tuning)")
    if not isinstance(G, Tuning) and tuning.weights_sha256 and generator_id(G) != tuning.weights_sha256:
        raise InputError(f"the tuning was made on another generator ({str(tuning.weights_sha256)[:12]}...) than "
                         f"this one ({generator_id(G)[:12]}...)")
    return tuning.generators[0]


def as_generator(G: Any, *latents: Any) -> nn.Module:
    """The generator to render with: a one-photo :class:`Tuning`'s tuned copy; else the tuned
    generator a projection among ``latents`` carries (:func:`tuned_generator`); else ``G`` itself."""
    return tuned_generator(G, *latents) or G


def _apply_deltas(G: nn.Module, delta: Mapping[str, torch.Tensor], base_id: str, tag: str) -> nn.Module:
    """A frozen copy of ``G`` with ``delta`` added to its parameters."""
    tuned = copy.deepcopy(G).eval().requires_grad_(False)
    params = dict(tuned.named_parameters())
    with torch.no_grad():
        for name, d in delta.items():
            params[name].add_(d.to(params[name]))
    # keep the base's hash prefix (e.g. the smoke-run marker) and say it is a tuned copy
    tuned.weights_sha256 = f"{base_id}+tuned-{tag}"
    tuned.base_weights_sha256 = base_id
    return tuned


def _sha256_tensor(x: torch.Tensor) -> str:
    """SHA-256 of a tensor's float32 C-contiguous bytes (how projections record their target images)."""
    return hashlib.sha256(x.detach().cpu().float().contiguous().numpy().tobytes()).hexdigest()


def _delta_tag(delta: Mapping[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(delta):
        h.update(k.encode())
        h.update(delta[k].detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def load_tuning(path: "str | os.PathLike[str]", G: nn.Module) -> Tuning:
    """Restore a :class:`Tuning` saved by :meth:`Tuning.save` against its base generator ``G``.

    Raises:
        CheckpointError: missing or unreadable file, not a tuning, a parameter the generator
            lacks, or ``G`` is not the generator the tuning was made from (weights hash).
    """
    r = read_result(path, fmt=_FORMAT, what="tuning", latents=("wplus",), sidecar_required=True)
    base = generator_id(G)
    recorded = r.meta.get("weights_sha256")
    if recorded != base:
        raise CheckpointError(r.path, f"made for the generator with weights hash {str(recorded)[:16]}..., but the "
                                      f"given generator's is {base[:16]}...; load the generator it was tuned from")
    params = dict(G.named_parameters())
    deltas: list[dict[str, torch.Tensor]] = [{} for _ in range(r.n)]
    for key, t in r.tensors.items():
        if not key.startswith("delta."):
            continue
        _, i, name = key.split(".", 2)
        if name not in params or tuple(params[name].shape) != tuple(t.shape) or not 0 <= int(i) < r.n:
            raise CheckpointError(r.path, f"{key!r} {tuple(t.shape)} does not fit the generator")
        deltas[int(i)][name] = t.float()
    gens = [_apply_deltas(G, d, base, _delta_tag(d)) for d in deltas]
    images = r.tensors.get("images")
    meta = r.meta
    return Tuning(
        generators=gens, deltas=deltas, wplus=r.tensors["wplus"].float(), noises=r.noises(),
        images=images.float() if torch.is_tensor(images) else torch.zeros(r.n, 3, 1, 1),
        metrics=r.per_image("metrics", {}), history=r.per_image("history", {}),
        config=TuneConfig.from_dict(meta.get("config", {})), names=r.per_image("names", None),
        target_sha256=r.per_image("target_sha256", ""), seeds=r.per_image("seeds", 0), weights_sha256=recorded,
        lpips=meta.get("lpips"), device=meta.get("device", "cpu"),
        facelib_version=meta.get("facelib_version", __version__), interrupted=bool(meta.get("interrupted", False)),
        steps_done=int(meta.get("steps_done", 0)))


def _settle(config: TuneConfig | None, options: dict[str, Any]) -> tuple[TuneConfig, nn.Module | None]:
    lpips_module = lpips_option(options, config.lpips if config is not None else "auto")
    fields = {f.name for f in dataclasses.fields(TuneConfig)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise InputError(f"tune_generator: unknown option(s) {unknown}; settings are {sorted(fields)}")
    cfg = dataclasses.replace(config, **options) if config is not None else TuneConfig(**options)
    if cfg.lpips == "module" and lpips_module is None:
        raise InputError("lpips='module' needs the lpips.LPIPS module itself: pass lpips=<module>")
    return cfg, lpips_module


def tune_generator(G: nn.Module, projection: Projection, targets: Any, *, config: TuneConfig | None = None,
                   on_step: StepCallback | None = None, progress: bool = True,
                   vgg_path: "str | os.PathLike[str] | None" = None, desc: str | None = None,
                   seeds: Sequence[int] | None = None, **options: Any) -> Tuning:
    """Pivotal tuning of one generator copy per projected photo (see the module docstring).

    Args:
        G: the generator the projection was made with; it is never modified (each photo gets
            a deep copy; its device is used).
        projection: a :class:`~facelib.projection.Projection` of N photos: its W+ are the pivots
            and its noise maps are kept.
        targets: the N photos it was projected from, in any form :func:`~facelib.projection.project`
            takes ((N, 3, H, W) float in [-1, 1], PIL images, paths, a list); checked against
            the projection's recorded image hashes when the resolution matches.
        config / options: a :class:`TuneConfig` and/or its fields as keywords, e.g.
            ``steps=350, lr=3e-4, lpips=None, locality_weight=0.1, seed=0``; ``lpips`` also takes
            an ``lpips.LPIPS`` / :class:`~facelib.losses.LPIPSLoss` module.
        on_step: ``on_step(step, total, state)`` after every step (``state.images`` are the renderings).
        progress: show a tqdm progress bar; Ctrl-C returns the best steps so far (``interrupted``).
        vgg_path: VGG16 weights for LPIPS (file or folder; never downloaded).
        seeds: one seed per photo (default ``config.seed + i``); give each photo its own fixed
            seed to make its result independent of the batch it runs in.
    Returns:
        A :class:`Tuning`.
    Raises:
        InputError: bad settings, targets that do not match the projection, or a projection made
            with another generator.
        MemoryLimitError: the N copies and their optimiser state do not fit in the device's free
            memory (:func:`facelib.memory.tuning_bytes`; said before anything large is allocated).
        OptimisationError: a NaN/inf loss before any finite step.
    """
    cfg, lpips_module = _settle(config, dict(options))
    if not isinstance(projection, Projection):
        raise InputError(f"projection: expected a facelib Projection, got {type(projection).__name__}")
    base_id = generator_id(G)
    if projection.weights_sha256 and projection.weights_sha256 != base_id:
        raise InputError(f"projection: made with generator {projection.weights_sha256[:16]}..., not this one "
                         f"({base_id[:16]}...); tune the generator it was projected with")
    x, names = load_targets(targets, G.resolution)  # [N, 3, H, W] CPU
    n = len(projection)
    if x.shape[0] != n:
        raise InputError(f"targets: {x.shape[0]} image(s) for a projection of {n}")
    for i in range(n):
        want = projection.target_sha256[i] if i < len(projection.target_sha256) else ""
        if want and _sha256_tensor(x[i]) != want:
            log.warning("targets[%d] is not bit-identical to the image projection %d was made from "
                        "(different file or resize); tuning towards the given image", i, i)
    names = [projection.names[i] or names[i] for i in range(n)]
    device = G.device
    if seeds is None:
        seeds = [cfg.seed + i for i in range(n)]
    elif len(seeds) != n:
        raise InputError(f"seeds: {len(seeds)} for {n} photo(s)")
    seeds = [int(v) for v in seeds]
    check_fits(G, device, n, lpips=cfg.lpips is not None or lpips_module is not None, lpips_size=cfg.lpips_size,
               what="pivotal tuning", kind="tuning")

    with Frozen(G, lpips_module):
        lpips_loss, lpips_label = resolve_lpips_option(lpips_module, cfg.lpips, vgg_path=vgg_path, device=device,
                                                       size=cfg.lpips_size)
        if (lpips_loss is None or cfg.lpips_weight == 0) and cfg.l2_weight == 0:
            raise InputError("no image loss left: LPIPS is off and l2_weight is 0")
        raw = _tune_batch(G, x.to(device), projection, cfg, seeds, lpips_loss=lpips_loss, on_step=on_step,
                          progress=progress, desc=desc)
    if raw["failure"] is not None and not raw["any_step"]:
        raise OptimisationError(f"tuning failed: {raw['failure']}", best=None)

    # finish: rebuild each photo's best weights, measure before / after
    gens, deltas = [], []
    for i in range(n):
        delta = {k: v.detach().cpu() for k, v in raw["deltas"][i].items() if bool(v.any())}
        deltas.append(delta)
        gens.append(_apply_deltas(G, delta, base_id, _delta_tag(delta)))
    wplus = projection.wplus.float()
    noises = [nz.float() for nz in projection.noises]
    with torch.no_grad():
        tgt = x.to(device)
        nz_dev = [nz.to(device) for nz in noises]
        before = G.synthesis(wplus.to(device), noise=nz_dev or None).clamp(-1, 1)
        after = torch.cat([g.synthesis(wplus[i:i + 1].to(device), noise=[nz[i:i + 1] for nz in nz_dev] or None)
                           for i, g in enumerate(gens)]).clamp(-1, 1)
        m_b, m_a = mse_per_image(before, tgt).cpu().tolist(), mse_per_image(after, tgt).cpu().tolist()
        p_b, p_a = psnr(before, tgt).cpu().tolist(), psnr(after, tgt).cpu().tolist()
        l_b = lpips_loss(before, tgt).cpu().tolist() if lpips_loss is not None else None
        l_a = lpips_loss(after, tgt).cpu().tolist() if lpips_loss is not None else None
    metrics = []
    for i in range(n):
        m: dict[str, Any] = {"psnr_before": p_b[i], "psnr": p_a[i], "mse_before": m_b[i], "mse": m_a[i]}
        if l_b is not None:
            m.update(lpips_before=l_b[i], lpips=l_a[i])
        m.update(best_step=raw["best_step"][i], steps_done=raw["steps_per_image"][i],
                 early_stopped=raw["stopped"][i], interrupted=raw["interrupted"])
        metrics.append(m)
    result = Tuning(
        generators=gens, deltas=deltas, wplus=wplus, noises=noises, images=after.detach().cpu().float(),
        metrics=metrics, history=raw["history"], config=cfg, names=names,
        target_sha256=[_sha256_tensor(x[i]) for i in range(n)], seeds=seeds, weights_sha256=base_id,
        lpips=lpips_label, device=str(device), facelib_version=__version__, interrupted=raw["interrupted"],
        steps_done=raw["steps_done"])
    if raw["failure"] is not None:
        raise OptimisationError(f"tuning failed: {raw['failure']}; .best holds the best steps before that",
                                best=result)
    return result


def _tune_batch(G: nn.Module, targets: torch.Tensor, projection: Projection, cfg: TuneConfig, seeds: list[int], *,
                lpips_loss: Any, on_step: StepCallback | None, progress: bool, desc: str | None) -> dict[str, Any]:
    """Optimise one generator copy per photo; returns the best weight deltas and the run's record."""
    device = G.device
    n = targets.shape[0]
    pivots = projection.wplus.to(device).float()  # [N, L, D]
    noises = [nz.to(device).float() for nz in projection.noises]
    base = {k: p.detach() for k, p in G.named_parameters() if _trainable(k)}
    names = list(base)

    # 1. one trainable copy per photo (only the synthesis weights)
    copies = []
    for _ in range(n):
        c = copy.deepcopy(G).eval()
        for k, p in c.named_parameters():
            p.requires_grad_(_trainable(k))
        copies.append(c)
    params = [[dict(c.named_parameters())[k] for k in names] for c in copies]
    opt = torch.optim.Adam([p for ps in params for p in ps], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))

    # 2. locality regulariser latents: pivot + alpha * unit direction towards a truncated random w (fixed per photo)
    loc_w = None
    if cfg.locality_weight > 0:
        with torch.no_grad():
            avg = G.latent_avg if getattr(G, "latent_avg", None) is not None else G.mean_latent(4096)
            z = torch.stack([torch.randn(G.style_dim, generator=torch.Generator().manual_seed(s)) for s in seeds])
            w = G.mapping(z.to(device))
            w = avg.to(w) + cfg.locality_truncation * (w - avg.to(w))  # [N, D]
            direction = w[:, None] - pivots  # [N, L, D]
            direction = direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None]
            loc_w = pivots + cfg.locality_alpha * direction
            loc_ref = G.synthesis(loc_w)  # the base generator's rendering, stored noise
            loc_ref_feats = lpips_loss.features(loc_ref) if lpips_loss is not None else None

    use_lpips = lpips_loss is not None and cfg.lpips_weight > 0
    target_feats = lpips_loss.features(targets) if use_lpips else None
    stopped = [False] * n
    stop_step = [cfg.steps] * n

    def render_one(i: int, w: torch.Tensor, noise: Any) -> torch.Tensor:
        if stopped[i]:
            with torch.no_grad():
                return copies[i].synthesis(w, noise=noise)
        return copies[i].synthesis(w, noise=noise)

    def evaluate(step: int) -> Evaluation:
        img = torch.cat([render_one(i, pivots[i:i + 1], [nz[i:i + 1] for nz in noises] or None)
                         for i in range(n)])  # [N, 3, H, W]
        terms: dict[str, torch.Tensor] = {"mse": mse_per_image(img, targets)}
        image_loss = cfg.l2_weight * terms["mse"]
        if use_lpips:
            terms["lpips"] = lpips_loss.distance(img, target_feats)
            image_loss = image_loss + cfg.lpips_weight * terms["lpips"]
        terms["image_loss"] = image_loss
        loss = image_loss
        if loc_w is not None:
            loc = torch.cat([render_one(i, loc_w[i:i + 1], None) for i in range(n)])
            reg = mse_per_image(loc, loc_ref)
            if loc_ref_feats is not None:
                reg = reg + lpips_loss.distance(loc, loc_ref_feats)
            terms["locality"] = reg
            loss = loss + cfg.locality_weight * reg
        flat = torch.stack([torch.cat([p.detach().flatten() for p in ps]) for ps in params])  # [N, P]
        return Evaluation(loss=loss, terms=terms, keep=[flat], wplus=pivots, images=img, criterion=image_loss)

    def after_step() -> None:
        # PTI's early stop: a photo whose LPIPS is below the threshold keeps its weights from now on
        if not use_lpips or cfg.lpips_threshold <= 0:
            return
        for i in range(n):
            if not stopped[i] and best.history[i]["lpips"][-1] < cfg.lpips_threshold:
                stopped[i] = True
                stop_step[i] = len(best.history[i]["lpips"])
                for p in params[i]:
                    p.requires_grad_(False)

    start = torch.stack([torch.cat([p.detach().flatten() for p in ps]) for ps in params])
    best = BestSteps([start])
    run = optimise(opt, best, evaluate, total=cfg.steps, lr_at=lambda step: cfg.lr, label="tuning",
                   items="photo(s)", hint="lower lr or check the projection/targets", after_step=after_step,
                   on_step=on_step, progress=progress, desc=desc, stop_when=lambda: all(stopped))
    # per photo: its best flat weights minus the base, back into named tensors
    deltas = []
    base_flat = torch.cat([base[k].flatten() for k in names])
    for i in range(n):
        diff = (best.values[0][i] - base_flat).cpu()
        out, pos = {}, 0
        for k in names:
            size = base[k].numel()
            out[k] = diff[pos:pos + size].view_as(base[k]).clone()
            pos += size
        deltas.append(out)
    return {"deltas": deltas, "history": best.history, "best_step": best.step, "steps_done": run.steps_done,
            "steps_per_image": [min(s, run.steps_done) for s in stop_step], "stopped": stopped,
            "interrupted": run.interrupted, "failure": run.failure, "any_step": best.any_step}


# ----------------------------------------------------------------------------------------
# Folders
# ----------------------------------------------------------------------------------------

@dataclass
class TuneFolderResult(FolderResult):
    """Outcome of :func:`tune_folder`: the lists of :class:`facelib.folder_result.FolderResult`,
    items being photos and results their tuning files."""

    DONE: ClassVar[str] = "tuned"
    ITEMS: ClassVar[str] = "tuning(s)"


def _tuning_state(path: Path, cfg: TuneConfig, base: str, proj_sha: str | None) -> tuple[str, str | None]:
    """("same", None): a finished tuning with these settings, generator and pivot; ("other", why):
    a finished one made otherwise (kept unless overwrite); ("redo", why): none, or unfinished
    (no readable .tune.json, which is written last, or an interrupted run)."""
    try:
        meta = json.loads(path.with_suffix(".json").read_text())
        saved = TuneConfig.from_dict(meta.get("config", {}))
    except (OSError, ValueError, InputError) as e:
        return "redo", f"no finished tuning ({type(e).__name__})"
    if not path.is_file() or meta.get("format") != _FORMAT or meta.get("interrupted"):
        return "redo", "unfinished"
    if saved != cfg:
        diff = [f.name for f in dataclasses.fields(TuneConfig) if getattr(saved, f.name) != getattr(cfg, f.name)]
        return "other", "made with other settings: " + ", ".join(
            f"{k} {getattr(saved, k)!r} (now {getattr(cfg, k)!r})" for k in diff[:3])
    if meta.get("weights_sha256") != base:
        return "other", f"made with another generator ({str(meta.get('weights_sha256'))[:12]})"
    if meta.get("pivot_sha256") not in (None, proj_sha):
        return "other", "made for another projection of this photo"
    return "same", None


def tune_folder(aligned: "str | os.PathLike[str]", latents: "str | os.PathLike[str]", G: nn.Module, *,
                config: TuneConfig | None = None, overwrite: bool = False, progress: bool = True,
                max_images: int | None = None, vgg_path: "str | os.PathLike[str] | None" = None,
                batch_size: int | None = None, **options: Any) -> TuneFolderResult:
    """Tune the generator for every projected photo: ``latents/<sub>/<stem>.pt`` (a projection of
    ``aligned/<sub>/<stem>.<ext>``) gets ``<stem>.tune.png`` (the tuned rendering), then
    ``<stem>.tune.pt`` and ``<stem>.tune.json`` beside it (the JSON, last, marks it finished).

    Photos without a projection are reported as failed; a tuning made with the same settings,
    generator and pivot is skipped (its rendering remade if it is missing). A finished tuning
    made with other settings, another generator or for another projection is kept
    byte-identical and listed in ``kept`` unless ``overwrite``.

    Memory: several photos are tuned together (one generator copy each) when the device's free
    memory holds them: without ``batch_size`` up to 4, chosen by
    :func:`facelib.memory.plan_batch` from :func:`facelib.memory.tuning_bytes` (the choice is
    in ``notes``); a batch that still runs out of memory is split in halves. Every photo uses
    ``config.seed`` whatever its batch and follows its own optimisation path, so its tuning
    depends on the batching only through float rounding.
    Ctrl-C raises :class:`facelib.errors.BatchInterrupted` whose ``result`` lists what was
    finished, skipped and not reached.

    Raises:
        InputError: ``aligned`` is neither a folder nor an image; ``batch_size`` < 1.
        MemoryLimitError: one photo does not fit in the device's free memory.
    """
    if batch_size is not None and (isinstance(batch_size, bool) or batch_size < 1):
        raise InputError(f"batch_size: expected >= 1, got {batch_size}")
    cfg, lpips_module = _settle(config, dict(options))
    src = Path(aligned)
    if src.is_dir():
        images = list_images(src, exclude=latents)
    elif src.is_file() and src.suffix.lower() in IMAGE_EXTENSIONS:
        images = [src]
    else:
        raise InputError(f"{src}: not a folder of images or an image file")
    if max_images is not None:
        images = images[:max_images]  # the same first images project_folder(max_images=...) projects
    base = generator_id(G)
    result = TuneFolderResult()
    todo: list[tuple[Path, Projection, str, Path]] = []  # (photo, projection, pivot hash, tuning file)
    for image in images:
        pt, _, _ = projection_paths(src, latents, image)
        out = tuning_path(pt)
        if not pt.is_file():
            result.failed[str(image)] = f"no projection ({pt} is missing)"
            continue
        try:
            proj = load_projection(pt)
            proj_sha = hashlib.sha256(proj.wplus.numpy().tobytes()).hexdigest()
            state, why = _tuning_state(out, cfg, base, proj_sha)
            if state == "same" and out.with_suffix(".png").is_file():
                result.skipped.append(out)
                continue
            if state == "same":  # finished, but its rendering is missing: remake it from the file
                save_image(load_tuning(out, G).images[0], out.with_suffix(".png"))
                result.written.append(out)
                continue
        except (InputError, CheckpointError) as e:
            result.failed[str(image)] = str(e)
            log.warning("tuning %s failed: %s", image, e)
            continue
        if state == "other" and not overwrite:
            result.kept[str(image)] = why
            continue
        todo.append((image, proj, proj_sha, out))
    size = 1
    if todo:
        plan = plan_batch(G, G.device, requested=batch_size, n_images=len(todo), kind="tuning", what="pivotal tuning",
                          lpips=cfg.lpips is not None or lpips_module is not None, lpips_size=cfg.lpips_size)
        size = plan.batch
        if plan.note:
            result.notes.append(plan.note)
            log.info("%s", plan.note)
    queue = [todo[i:i + size] for i in range(0, len(todo), size)]
    done = 0
    try:
        while queue:
            batch = queue.pop(0)
            extra = {} if lpips_module is None else {"lpips": lpips_module}
            try:
                t = tune_generator(G, Projection.cat([proj for _, proj, _, _ in batch]), [im for im, *_ in batch],
                                   config=cfg, progress=progress, vgg_path=vgg_path, seeds=[cfg.seed] * len(batch),
                                   desc=f"tune {done + 1}-{done + len(batch)}/{len(todo)}", **extra)
            except (InputError, CheckpointError, OptimisationError) as e:
                if len(batch) > 1 and not isinstance(e, OptimisationError):  # find the photo at fault
                    queue[:0] = [[item] for item in batch]
                    continue
                for image, *_ in batch:
                    result.failed[str(image)] = str(e)
                log.warning("tuning %s failed: %s", [str(im) for im, *_ in batch], e)
                done += len(batch)
                continue
            except (RuntimeError, MemoryError, MemoryLimitError) as e:
                split = split_after_out_of_memory(e, batch, G.device, "photos")
                if split is None:
                    raise
                halves, message = split
                if not halves:
                    result.failed[str(batch[0][0])] = message
                    done += 1
                    continue
                result.notes.append(message)
                log.warning("%s", message)
                queue[:0] = halves
                continue
            if t.interrupted:
                raise KeyboardInterrupt
            for j, (_, _, proj_sha, out) in enumerate(batch):
                one = t.select(j)
                save_image(one.images[0], out.with_suffix(".png"))  # the tuned rendering, for the report
                one.save(out, extra={"pivot_sha256": proj_sha})  # its JSON, written last, marks it finished
                result.written.append(out)
            done += len(batch)
    except KeyboardInterrupt:
        result.interrupted = True
        finished = {str(p) for p in result.written}
        result.not_reached = [image for image, _, _, out in todo
                              if str(out) not in finished and str(image) not in result.failed]
        raise BatchInterrupted(result) from None
    return result


def find_tuning(G: nn.Module, latents_dir: "str | os.PathLike[str]", name: str) -> Tuning | None:
    """The tuning saved beside projection ``<latents_dir>/<name>.pt`` (``<name>.tune.pt``), restored
    against ``G``; None (logged) when there is none or it belongs to another generator."""
    path = tuning_path(Path(latents_dir) / f"{name}.pt")
    if not path.is_file():
        log.info("no pivotal tuning for %s (%s); run notebook 02 / `facelib project --tune`", name, path)
        return None
    try:
        return load_tuning(path, G)
    except CheckpointError as e:
        log.warning("ignoring %s: %s", path, e.problem)
        return None
