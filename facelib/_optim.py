"""Pieces shared by the batched latent optimisations (projection, face swap).

Each of N images is optimised independently inside one batch: its loss is finite-checked,
its history recorded, and its best step (by a per-image criterion) kept (:class:`BestSteps`,
driven by :func:`optimise`). Their results are saved the same way: a tensor file loadable
with ``weights_only=True`` plus a JSON sidecar (:func:`save_result`, :func:`read_result`).
"""
from __future__ import annotations

import json
import logging
import math
import operator
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping, MutableMapping, Sequence

import torch
from torch import nn

from ._io import atomic_path, jsonable
from .errors import CheckpointError, InputError, RangeError, ShapeError
from .losses import resolve_lpips
from .progress import progress_bar as tqdm
from .weights import safe_torch_load, state_fingerprint

__all__ = ["Frozen", "BestSteps", "StepState", "StepCallback", "Evaluation", "Outcome", "optimise",
           "check_settings", "known_settings", "lpips_option", "resolve_lpips_option", "generator_id", "image_batch",
           "batch_indices", "save_result", "read_result", "SavedResult", "SCHEDULERS", "lr_schedule",
           "constant_lr", "default_gamma", "exp_lr", "cosine_lr", "rampupdown_lr"]

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------
# Learning-rate schedules
# ----------------------------------------------------------------------------------------
# Each maps (step, total) to the learning rate used for that step, step = 0 .. total-1.

def constant_lr(step: int, total: int, base_lr: float) -> float:
    """``base_lr`` at every step."""
    return float(base_lr)


def default_gamma(total: int, final_ratio: float = 0.1) -> float:
    """Decay factor that takes the exponential schedule to ``final_ratio * base_lr`` at the last step."""
    return float(final_ratio ** (1.0 / max(total - 1, 1)))


def exp_lr(step: int, total: int, base_lr: float, gamma: float | None = None) -> float:
    """Exponential decay ``base_lr * gamma ** step`` (torch's ExponentialLR, stepped every step).

    ``gamma=None`` picks :func:`default_gamma` (10 % of ``base_lr`` at the last step), so the
    curve has the same shape for any number of steps. (Decaying to 1 % cost 1.1 dB against
    10 % at 300 steps on the synthetic-truth task of ``benchmarks/project.py``.)
    """
    if gamma is None:
        gamma = default_gamma(total)
    return float(base_lr * gamma ** step)


def cosine_lr(step: int, total: int, base_lr: float) -> float:
    """Cosine annealing from ``base_lr`` at step 0 towards 0: ``base_lr * (1 + cos(pi t)) / 2``, t = step/total."""
    t = step / max(total, 1)
    return float(base_lr * 0.5 * (1.0 + math.cos(math.pi * t)))


def rampupdown_lr(step: int, total: int, base_lr: float, rampup: float = 0.05, rampdown: float = 0.25) -> float:
    """The StyleGAN projectors' schedule: linear warm-up over the first ``rampup`` of the run,
    flat, then a half-cosine down to 0 over the last ``rampdown`` (t = step/total; step 0 has lr 0).
    """
    t = step / max(total, 1)
    down = min(1.0, (1.0 - t) / rampdown) if rampdown > 0 else 1.0
    ramp = 0.5 - 0.5 * math.cos(down * math.pi)
    if rampup > 0:
        ramp *= min(1.0, t / rampup)
    return float(base_lr * ramp)


#: scheduler name -> function
SCHEDULERS: dict[str, Callable[..., float]] = {
    "constant": constant_lr,
    "exp": exp_lr,
    "cosine": cosine_lr,
    "rampupdown": rampupdown_lr,
}


def lr_schedule(name: str, step: int, total: int, base_lr: float, gamma: float | None = None, *,
                rampup: float = 0.05, rampdown: float = 0.25) -> float:
    """Learning rate of ``step`` (0-based) out of ``total`` under the named schedule.

    Args:
        name: "constant", "exp" (uses ``gamma``), "cosine" or "rampupdown" (uses ``rampup``,
            ``rampdown`` as fractions of the run).
    Raises:
        InputError: an unknown name.
    """
    if name == "exp":
        return exp_lr(step, total, base_lr, gamma)
    if name == "rampupdown":
        return rampupdown_lr(step, total, base_lr, rampup, rampdown)
    if name in SCHEDULERS:
        return SCHEDULERS[name](step, total, base_lr)
    raise InputError(f"scheduler: expected one of {sorted(SCHEDULERS)}, got {name!r}")


@dataclass(frozen=True)
class StepState:
    """What ``on_step(step, total, state)`` receives after each optimiser step.

    Attributes:
        step: steps done so far (1 .. total); total: planned steps.
        lr: learning rate used for this step.
        losses: per-image total objective of the rendering evaluated in this step.
        best_losses: per-image lowest value so far of the criterion that chooses the kept step.
        wplus: (N, n_latent, D) the evaluated latents, detached.
        images: (N, 3, H, W) their renderings, detached, unclamped.
        id_similarity: per-image identity cosine (1 - the "id" term) when the objective has an
            identity term, else None.
    """

    step: int
    total: int
    lr: float
    losses: list[float]
    best_losses: list[float]
    wplus: torch.Tensor
    images: torch.Tensor
    id_similarity: list[float] | None = None


StepCallback = Callable[[int, int, StepState], Any]


class Frozen:
    """Context: put modules in eval mode with frozen parameters; restore both afterwards."""

    def __init__(self, *modules: nn.Module | None) -> None:
        self.modules = [m for m in modules if m is not None]

    def __enter__(self) -> None:
        # every submodule's own mode is saved: train(flag) on the root would overwrite children
        # that were deliberately in eval mode (e.g. BatchNorm in an identity network)
        self.saved = [([(s, s.training) for s in m.modules()], [(p, p.requires_grad) for p in m.parameters()])
                      for m in self.modules]
        for m in self.modules:
            m.eval().requires_grad_(False)

    def __exit__(self, *exc: Any) -> None:
        for modes, flags in self.saved:
            for s, training in modes:
                s.training = training
            for p, f in flags:
                p.requires_grad_(f)


class BestSteps:
    """Per-image best step, best values and loss history of a batched optimisation.

    Args:
        start: tensors (N, ...) whose values at the best step are kept (e.g. W+ and noise
            maps); the start values are kept until a step improves on them.
    """

    def __init__(self, start: Sequence[torch.Tensor]) -> None:
        n = start[0].shape[0]
        self.values = [t.detach().clone() for t in start]
        self.loss = torch.full((n,), float("inf"), device=start[0].device)
        self.step = [-1] * n
        self.history: list[dict[str, list[float]]] = [{"lr": [], "loss": []} for _ in range(n)]

    @property
    def any_step(self) -> bool:
        """True once some image had a finite step."""
        return any(s >= 0 for s in self.step)

    @staticmethod
    def nonfinite(per_image: torch.Tensor, step: int, lr: float, what: str, hint: str) -> str | None:
        """A message naming the step and items whose loss is NaN/inf, or None when all are finite."""
        finite = torch.isfinite(per_image)
        if bool(finite.all()):
            return None
        bad = [i for i in range(per_image.shape[0]) if not bool(finite[i])]
        return f"loss became {float(per_image[bad[0]])} at step {step} for {what} {bad} (lr={lr:.3g}); {hint}"

    def update(self, step: int, criterion: torch.Tensor, current: Sequence[torch.Tensor]) -> None:
        """Keep ``current`` for every image whose ``criterion`` (N,) beats its best so far."""
        improved = criterion.detach() < self.loss
        if not bool(improved.any()):
            return
        self.values = [torch.where(improved.view(-1, *[1] * (c.ndim - 1)), c.detach(), b)
                       for c, b in zip(current, self.values)]
        self.loss = torch.where(improved, criterion.detach(), self.loss)
        for i in torch.nonzero(improved).flatten().tolist():
            self.step[i] = step

    def record(self, lr: float, per_image: torch.Tensor, terms: Mapping[str, torch.Tensor]) -> list[float]:
        """Append one step's lr, total loss and loss terms to each image's history; returns the losses."""
        values = {k: v.detach().cpu().tolist() for k, v in terms.items()}
        losses = per_image.detach().cpu().tolist()
        for i, h in enumerate(self.history):
            h["lr"].append(lr)
            h["loss"].append(losses[i])
            for k, v in values.items():
                h.setdefault(k, []).append(v[i])
        return losses


# ----------------------------------------------------------------------------------------
# The optimisation loop
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Evaluation:
    """One step's evaluation, as the ``evaluate(step)`` function of :func:`optimise` returns it.

    Attributes:
        loss: (N,) per-image total objective, with grad (the optimiser minimises its sum).
        terms: its named terms, (N,) each, recorded in the history ("id" = 1 - identity cosine).
        keep: tensors (N, ...) that ``best`` keeps at an image's best step (as given to :class:`BestSteps`).
        wplus: (N, n_latent, D) the evaluated latents; images: (N, 3, H, W) their renderings.
        criterion: (N,) what chooses the kept step; None = ``loss``.
    """

    loss: torch.Tensor
    terms: Mapping[str, torch.Tensor]
    keep: Sequence[torch.Tensor]
    wplus: torch.Tensor
    images: torch.Tensor
    criterion: torch.Tensor | None = None


@dataclass(frozen=True)
class Outcome:
    """How :func:`optimise` ended: steps finished, stopped by KeyboardInterrupt, and the
    message of the non-finite loss that stopped it (None when none did)."""

    steps_done: int
    interrupted: bool
    failure: str | None


def optimise(opt: torch.optim.Optimizer, best: BestSteps, evaluate: Callable[[int], Evaluation], *, total: int,
             lr_at: Callable[[int], float], label: str, items: str, hint: str,
             after_step: Callable[[], Any] | None = None, on_step: StepCallback | None = None,
             progress: bool = True, desc: str | None = None,
             stop_when: Callable[[], bool] | None = None, scaler: Any = None) -> Outcome:
    """Run ``total`` optimiser steps of a batched optimisation, keeping each image's best step in ``best``.

    Each step sets the learning rate ``lr_at(step)`` on every parameter group, calls
    ``evaluate(step)``, stops at a non-finite loss (``failure`` names the step and ``items``,
    with ``hint``), keeps the images whose criterion improved, records the history, steps the
    optimiser on the summed loss, calls ``after_step()``, then updates the progress bar and
    calls ``on_step(step, total, StepState)``. A KeyboardInterrupt (also from ``on_step``) ends
    the run early with ``interrupted=True``; ``best`` then holds the best steps so far.

    Args:
        label: what runs ("projection"), for the progress bar (unless ``desc``) and the log.
        items: what the batch holds, for messages ("image(s)").
        stop_when: checked before each step; True ends the run there (every item has converged).
        scaler: a ``torch.amp.GradScaler`` for float16 autocast (loss scaling), or None.
    """
    steps_done, interrupted, failure = 0, False, None
    bar = tqdm(total=total, desc=desc or label, disable=not progress, leave=False)
    try:
        for step in range(total):
            if stop_when is not None and stop_when():
                break
            lr = lr_at(step)
            for group in opt.param_groups:
                group["lr"] = lr
            ev = evaluate(step)
            per_image = ev.loss.detach()
            failure = best.nonfinite(per_image, step, lr, items, hint)
            if failure is not None:
                break
            best.update(step, per_image if ev.criterion is None else ev.criterion, ev.keep)
            losses = best.record(lr, per_image, ev.terms)
            opt.zero_grad(set_to_none=True)
            if scaler is None:
                ev.loss.sum().backward()
                opt.step()
            else:  # float16: scale the loss so small gradients do not underflow; skip steps with inf grads
                scaler.scale(ev.loss.sum()).backward()
                scaler.step(opt)
                scaler.update()
            if after_step is not None:
                after_step()
            steps_done = step + 1
            ids = [1.0 - h["id"][-1] for h in best.history] if "id" in ev.terms else None
            if progress:  # every step, drawn with the update below (tqdm limits redraws by time, not steps)
                extra = {} if ids is None else {"id": f"{sum(ids) / len(ids):.3f}"}
                shown_lr = lr_at(steps_done) if steps_done < total else lr  # the rate the next step uses
                bar.set_postfix(loss=f"{sum(losses) / len(losses):.4g}", lr=f"{shown_lr:.3g}", refresh=False, **extra)
            bar.update(1)
            if on_step is not None:
                on_step(steps_done, total, StepState(
                    step=steps_done, total=total, lr=lr, losses=losses, best_losses=best.loss.cpu().tolist(),
                    wplus=ev.wplus.detach(), images=ev.images.detach(), id_similarity=ids))
    except KeyboardInterrupt:
        interrupted = True
        log.warning("%s interrupted after %d of %d steps; returning the best steps so far", label, steps_done, total)
    finally:
        bar.close()
    return Outcome(steps_done=steps_done, interrupted=interrupted, failure=failure)


# ----------------------------------------------------------------------------------------
# Inputs and settings
# ----------------------------------------------------------------------------------------

_LPIPS_SPECS = ("auto", "vgg", None, "module")


def known_settings(cls: type, saved: Mapping[str, Any], what: str) -> dict[str, Any]:
    """The entries of a saved config ``saved`` that are fields of the dataclass ``cls`` (for its
    ``from_dict``); others (written by another facelib version) are dropped with a warning
    naming them and ``what`` ("projection", "swap", "tuning")."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(saved) - names)
    if unknown:
        log.warning("ignoring unknown %s settings %s", what, unknown)
    return {k: v for k, v in saved.items() if k in names}


def check_settings(cfg: Any, nonnegative: Sequence[str]) -> None:
    """Validate the settings both configs share (``steps``, ``lr``, ``scheduler``, ``lpips``,
    ``lpips_size``, ``beta1``, ``beta2``) and the named fields that must be finite numbers >= 0.

    Raises:
        InputError: naming the first bad setting.
    """
    if isinstance(cfg.steps, bool) or not isinstance(cfg.steps, int) or cfg.steps < 0:
        raise InputError(f"steps: expected an integer >= 0, got {cfg.steps!r}")
    if isinstance(cfg.lr, bool) or not (isinstance(cfg.lr, (int, float)) and cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise InputError(f"lr: expected a positive finite number, got {cfg.lr!r}")
    if cfg.scheduler not in SCHEDULERS:
        raise InputError(f"scheduler: expected one of {sorted(SCHEDULERS)}, got {cfg.scheduler!r}")
    if cfg.lpips not in _LPIPS_SPECS:
        raise InputError(f"lpips: expected 'auto', 'vgg', None or an lpips.LPIPS module, got {cfg.lpips!r}")
    for name in nonnegative:
        v = getattr(cfg, name)
        if isinstance(v, bool) or not (isinstance(v, (int, float)) and v >= 0 and math.isfinite(v)):
            raise InputError(f"{name}: expected a finite number >= 0, got {v!r}")
    if cfg.lpips_size < 16:
        raise InputError(f"lpips_size: expected >= 16, got {cfg.lpips_size}")
    if not (0 <= cfg.beta1 < 1 and 0 <= cfg.beta2 < 1):
        raise InputError(f"beta1/beta2: expected values in [0, 1), got {cfg.beta1}, {cfg.beta2}")


def lpips_option(options: MutableMapping[str, Any], default: Any) -> nn.Module | None:
    """Put the ``lpips`` keyword option (else ``default``, the config's value) into its config
    form in ``options``: a module becomes "module" and is returned, the string "none" becomes None.

    Raises:
        InputError: neither a string, None nor a module.
    """
    value = options.pop("lpips", default)
    if isinstance(value, nn.Module):
        options["lpips"] = "module"
        return value
    if value is not None and not isinstance(value, str):
        raise InputError(f"lpips: expected 'auto', 'vgg', None or an lpips.LPIPS module, got {type(value).__name__}")
    options["lpips"] = None if isinstance(value, str) and value.lower() == "none" else value
    return None


def resolve_lpips_option(module: nn.Module | None, spec: str | None, *, vgg_path: Any, device: torch.device,
                         size: int) -> tuple[Any, str | None]:
    """(LPIPS loss or None, what supplied it: "module", "vgg16:<file>" or None) for a run.

    ``module`` (an LPIPS module passed in) wins over the config's ``spec``; see
    :func:`facelib.losses.resolve_lpips`.
    """
    loss = resolve_lpips(module if module is not None else spec, vgg_path=vgg_path, device=device, size=size)
    if loss is None:
        return None, None
    return loss, "module" if module is not None else f"vgg16:{loss.source}"


def generator_id(G: nn.Module) -> str:
    """The generator's weights SHA-256 (set by :func:`facelib.weights.load_generator`), else its state fingerprint."""
    sha = getattr(G, "weights_sha256", None)
    if sha:
        return str(sha)
    return state_fingerprint(G.state_dict())


def image_batch(x: torch.Tensor, name: str) -> torch.Tensor:
    """Check an image tensor argument: (N, 3, H, W) or (3, H, W) float, finite, in [-1, 1].

    Returns:
        (N, 3, H, W) float32 CPU in [-1, 1] (clamped: values up to 1e-3 outside are rounding).
    Raises:
        ShapeError / InputError / RangeError: naming ``name``.
    """
    t = x.detach()
    if t.ndim == 3:
        t = t[None]
    if t.ndim != 4 or t.shape[1] != 3 or t.shape[0] < 1:
        raise ShapeError(f"{name}: expected (N, 3, H, W) images, got {tuple(x.shape)}",
                         actual_shape=x.shape, expected_shape=(None, 3, None, None))
    if not t.is_floating_point():
        raise InputError(f"{name}: expected a float tensor in [-1, 1], got {t.dtype} "
                         "(convert uint8 images with x / 127.5 - 1)")
    t = t.float().cpu()
    if not torch.isfinite(t).all():
        raise RangeError(f"{name}: contains NaN or inf values")
    lo, hi = float(t.min()), float(t.max())
    if lo < -1.001 or hi > 1.001:
        raise RangeError(f"{name}: values must lie in [-1, 1], found [{lo:.3g}, {hi:.3g}] "
                         "(images in [0, 1]: pass x * 2 - 1)")
    return t.clamp(-1, 1)


# ----------------------------------------------------------------------------------------
# Results: selection and files
# ----------------------------------------------------------------------------------------

def batch_indices(index: "int | slice | Sequence[int]", n: int, what: str) -> list[int]:
    """Indices in ``[0, n)`` from an int (also a numpy integer or 0-d tensor), a slice or a
    sequence of ints; negative ints count from the end.

    Raises:
        IndexError: an index outside ``[-n, n)``, named with ``what``.
    """
    if isinstance(index, slice):
        return list(range(n))[index]
    try:
        idx = [operator.index(index)]
    except TypeError:
        idx = [operator.index(i) for i in index]
    bad = [i for i in idx if not -n <= i < n]
    if bad:
        raise IndexError(f"{what} index {bad[0]} out of range for {n}")
    return [i % n for i in idx]


def save_result(path: "str | os.PathLike[str]", tensors: Mapping[str, torch.Tensor],
                noises: Sequence[torch.Tensor], meta: Mapping[str, Any]) -> Path:
    """Write ``tensors`` and the noise maps (as ``noise_k``) to ``path`` (a ``weights_only``-loadable
    torch file) and ``meta`` to ``path.with_suffix('.json')``.

    Both are written atomically, the JSON last, so a JSON file beside a .pt marks a complete
    result. Returns the JSON path.

    Raises:
        InputError: ``path`` is the .json path.
    """
    path = Path(path)
    if path.suffix == ".json":
        raise InputError(f"{path}: give the tensor file's path (e.g. .pt); the .json is written beside it")
    data = {k: t.detach().cpu().contiguous() for k, t in tensors.items()}
    data.update({f"noise_{k}": nz.detach().cpu().float().contiguous() for k, nz in enumerate(noises)})
    with atomic_path(path) as tmp:
        torch.save(data, tmp)
    meta_path = path.with_suffix(".json")
    with atomic_path(meta_path) as tmp:
        tmp.write_text(json.dumps(jsonable(meta), indent=1))
    return meta_path


@dataclass(frozen=True)
class SavedResult:
    """What :func:`read_result` read: the tensor file's path and tensors, the sidecar (empty when
    absent) and the batch size N."""

    path: Path
    tensors: Mapping[str, Any]
    meta: Mapping[str, Any]
    n: int

    def noises(self) -> list[torch.Tensor]:
        """The ``noise_0``, ``noise_1``, ... maps, float32."""
        out: list[torch.Tensor] = []
        while torch.is_tensor(self.tensors.get(f"noise_{len(out)}")):
            out.append(self.tensors[f"noise_{len(out)}"].float())
        return out

    def per_image(self, key: str, default: Any) -> list:
        """The sidecar's per-image list ``key``, or ``default`` N times when it is missing or the wrong length."""
        v = self.meta.get(key)
        return list(v) if isinstance(v, list) and len(v) == self.n else [default] * self.n


def read_result(path: "str | os.PathLike[str]", *, fmt: str, what: str, latents: Sequence[str],
                sidecar_required: bool) -> SavedResult:
    """Read a file pair written by :func:`save_result` (tensors with ``weights_only=True``).

    Args:
        path: the tensor file (its .json path is accepted too).
        fmt: the sidecar's expected "format"; what: the kind of result, for messages.
        latents: names of the (N, n_latent, D) tensors the file must hold; the first gives N.
        sidecar_required: without it a missing sidecar is only a warning.
    Raises:
        CheckpointError: missing, unreadable or not such a result.
    """
    path = Path(path)
    if path.suffix == ".json":
        path = path.with_suffix(".pt")
    data = safe_torch_load(path)
    if not isinstance(data, dict) or not all(torch.is_tensor(data.get(k)) for k in latents):
        raise CheckpointError(path, f"not a facelib {what} (no {' / '.join(map(repr, latents))} tensor)")
    bad = [k for k in latents if data[k].ndim != 3]
    if bad:
        raise CheckpointError(path, f"{bad[0]!r} has shape {tuple(data[bad[0]].shape)}, "
                                    f"expected (N, n_latent, style_dim)")
    n = int(data[latents[0]].shape[0])
    if n == 0:
        raise CheckpointError(path, f"holds an empty batch ({latents[0]!r} has shape {tuple(data[latents[0]].shape)})")
    for k, t in data.items():
        if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t.float()).all()):
            raise CheckpointError(path, f"tensor {k!r} contains NaN or inf values")
    meta_path = path.with_suffix(".json")
    meta: dict[str, Any] = {}
    if sidecar_required or meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as e:
            raise CheckpointError(meta_path, f"missing or unreadable {what} metadata ({e})") from None
        if not isinstance(meta, dict) or meta.get("format") != fmt:
            found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
            raise CheckpointError(meta_path, f"not a facelib {what} sidecar (format={found!r})")
        if meta.get("n", n) != n:
            raise CheckpointError(meta_path, f"describes {meta.get('n')} items but {path.name} holds {n}")
    else:
        log.warning("%s: no %s beside it; loading tensors without settings or metrics", path, meta_path.name)
    return SavedResult(path=path, tensors=data, meta=meta, n=n)
