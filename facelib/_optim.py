"""Bookkeeping shared by the batched latent optimisations (projection, face swap).

Each of N images is optimised independently inside one batch: its loss is finite-checked,
its history recorded, and its best step (by a per-image criterion) kept.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

__all__ = ["Frozen", "BestSteps", "StepState", "StepCallback"]


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
        id_similarity: per-image cosine to the identity target (face swap), else None.
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
