"""Plots of an optimisation's course: the loss history of projections (and swaps, tunings).

:func:`loss_history_figure` draws, per image, the total objective with its best step marked, the
image terms (MSE solid, LPIPS dashed) and the learning-rate schedule, from the ``history`` /
``metrics`` that :class:`~facelib.projection.Projection` (and the other facelib results) keep.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

__all__ = ["loss_history_figure"]


def loss_history_figure(histories: Sequence[Mapping[str, Sequence[float]]], *,
                        names: Sequence[str] | None = None, best_steps: Sequence[int | None] | None = None,
                        scheduler: str | None = None, size: tuple[float, float] = (14, 3.5)) -> Any:
    """Three panels: total objective per image (log scale; ``o`` at the best step), image terms
    (MSE solid, LPIPS dashed; log scale) and the first run's learning rate per step.

    Args:
        histories: per image a dict of per-step lists: "loss" (required to be drawn; images
            without it are skipped), "mse", "lpips", "lr" (each optional), e.g.
            ``[p.history[0] for p in projections]``.
        names: per image the legend label (default: "0", "1", ...).
        best_steps: per image the kept step (e.g. ``p.metrics[0]["best_step"]``), or None.
        scheduler: the schedule's name for the third panel's title.
        size: figure size in inches.
    Returns:
        A ``matplotlib.figure.Figure`` (not registered with pyplot; display or ``savefig`` it).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    ax_loss, ax_img, ax_lr = fig.subplots(1, 3)
    names = list(names) if names is not None else [str(i) for i in range(len(histories))]
    best = list(best_steps) if best_steps is not None else [None] * len(histories)
    for h, name, b in zip(histories, names, best):
        if not h.get("loss"):
            continue
        line, = ax_loss.plot(h["loss"], label=name)
        if b is not None and 0 <= b < len(h["loss"]):
            ax_loss.plot([b], [h["loss"][b]], "o", color=line.get_color())
        if h.get("mse"):
            ax_img.plot(h["mse"], color=line.get_color())
        if h.get("lpips"):
            ax_img.plot(h["lpips"], "--", color=line.get_color())
    lr = next((h["lr"] for h in histories if h.get("lr")), None)
    if lr:
        ax_lr.plot(lr)
    ax_loss.set(xlabel="step", ylabel="loss", yscale="log", title="total objective per image")
    ax_img.set(xlabel="step", yscale="log", title="MSE (solid), LPIPS (dashed)")
    ax_lr.set(xlabel="step", ylabel="learning rate", title=f"schedule: {scheduler}" if scheduler else "schedule")
    if any(h.get("loss") for h in histories):
        ax_loss.legend(fontsize=7)
    fig.tight_layout()
    return fig
