"""The quality card of a projection run, beside published inversion figures.

Every projection records, per image, PSNR, LPIPS (when LPIPS was available), identity
similarity (when an identity network was given), the steps run and the wall time
(:func:`facelib.project`'s ``metrics``). :func:`quality_card` gathers them with their means,
and puts them beside the figures published for the same inversion methods with real FFHQ
weights, so a user with real weights sees at once whether a run is in the expected range.

The published figures (:data:`PUBLISHED_INVERSION`) are from the README of
caopulan/GANInverter: CelebA-HQ test set, 2,824 faces at 256 px, StyleGAN2 FFHQ generator.
They are not comparable with a smoke run (untrained generator), and facelib's own figures
differ in detail: PSNR is measured at the generator's resolution, LPIPS is VGG-LPIPS at
256 px, and identity uses whichever identity network was given.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

__all__ = ["PublishedFigures", "PUBLISHED_INVERSION", "PUBLISHED_SOURCE", "QualityCard", "quality_card"]

#: where :data:`PUBLISHED_INVERSION` comes from
PUBLISHED_SOURCE = ("caopulan/GANInverter README: CelebA-HQ test set, 2,824 faces at 256 px, "
                    "real StyleGAN2 FFHQ weights")

_FIELDS = ("psnr", "lpips", "id_similarity", "steps", "seconds")


@dataclass(frozen=True)
class PublishedFigures:
    """Published mean figures of one inversion method (see :data:`PUBLISHED_SOURCE`)."""

    method: str
    psnr: float
    lpips: float
    id_similarity: float


#: Published means for W+ optimisation and pivotal tuning (PTI, Roich et al. 2022).
PUBLISHED_INVERSION: tuple[PublishedFigures, ...] = (
    PublishedFigures("W+ optimisation, 1000 steps", 20.6, 0.109, 0.77),
    PublishedFigures("PTI (pivotal tuning)", 24.6, 0.082, 0.85),
)


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def _fmt(v: Any, spec: str) -> str:
    v = _number(v)
    return "-" if v is None else format(v, spec)


@dataclass(frozen=True)
class QualityCard:
    """Per-image and mean quality of a projection run.

    Attributes:
        per_image: per image {"name", "psnr", "lpips"?, "id_similarity"?, "steps"?, "seconds"?}
            (a figure is absent when it was not measured).
        mean: the mean of each figure over the images that have it.
        smoke: the run used the untrained smoke generator (its figures mean nothing).
    """

    per_image: tuple[dict[str, Any], ...]
    mean: dict[str, float]
    smoke: bool = False

    @property
    def n(self) -> int:
        return len(self.per_image)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the figures, the published ones and what they are."""
        return {
            "n": self.n, "per_image": [dict(m) for m in self.per_image], "mean": dict(self.mean),
            "smoke": self.smoke,
            "published": {"source": PUBLISHED_SOURCE,
                          "methods": [{"method": p.method, "psnr": p.psnr, "lpips": p.lpips,
                                       "id_similarity": p.id_similarity} for p in PUBLISHED_INVERSION]},
        }

    def table(self, *, per_image: bool = True) -> tuple[list[str], list[list[str]]]:
        """(header, rows) of strings: the images, this run's mean, then the published figures."""
        header = ["", "PSNR (dB)", "LPIPS", "identity", "steps", "seconds"]

        def row(label: str, m: Mapping[str, Any]) -> list[str]:
            return [label, _fmt(m.get("psnr"), ".2f"), _fmt(m.get("lpips"), ".3f"),
                    _fmt(m.get("id_similarity"), ".3f"), _fmt(m.get("steps"), ".0f"), _fmt(m.get("seconds"), ".1f")]

        rows = []
        if per_image:
            rows += [row(str(m.get("name") or f"image {i}"), m) for i, m in enumerate(self.per_image)]
        rows.append(row(f"this run, mean of {self.n}" + (" (SMOKE RUN)" if self.smoke else ""), self.mean))
        rows += [row(f"published: {p.method}", {"psnr": p.psnr, "lpips": p.lpips, "id_similarity": p.id_similarity})
                 for p in PUBLISHED_INVERSION]
        return header, rows

    def note(self) -> str:
        """What the published rows are, and why a smoke run cannot be compared with them."""
        text = (f"Published figures: {PUBLISHED_SOURCE}. They are the expected range for real weights; facelib "
                "measures PSNR at the generator's resolution, LPIPS with VGG at 256 px, and identity with the "
                "identity network it was given (a dash: not measured).")
        if self.smoke:
            text += " This is a smoke run with an untrained generator: its figures are not comparable."
        return text

    def to_markdown(self, *, per_image: bool = True) -> str:
        """The card as a Markdown table plus :meth:`note`."""
        header, rows = self.table(per_image=per_image)
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines) + "\n\n" + self.note()

    def __str__(self) -> str:
        header, rows = self.table()
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        return "\n".join([fmt(header), *map(fmt, rows)])


def quality_card(source: Any, *, names: Sequence[str | None] | None = None, smoke: bool | None = None) -> QualityCard:
    """The quality card of a projection (or of its per-image ``metrics`` list).

    Args:
        source: a :class:`~facelib.projection.Projection` (or anything with ``.metrics``), a saved
            projection's JSON dict, or a list of per-image metric dicts.
        names: per-image labels (default: the projection's names).
        smoke: whether the run is a smoke run (default: its generator fingerprint says so).
    Returns:
        A :class:`QualityCard`; ``str(card)`` is a text table, ``card.to_markdown()`` a Markdown one.
    """
    if isinstance(source, Mapping):
        metrics, meta_names, wid = source.get("metrics") or [], source.get("names"), source.get("weights_sha256")
    elif hasattr(source, "metrics"):
        metrics, meta_names, wid = source.metrics, getattr(source, "names", None), getattr(source, "weights_sha256",
                                                                                            None)
    else:
        metrics, meta_names, wid = list(source), None, None
    names = list(names if names is not None else meta_names or [None] * len(metrics))
    per_image = []
    for i, m in enumerate(metrics):
        row: dict[str, Any] = {"name": names[i] if i < len(names) else None}
        for k in _FIELDS:
            v = _number(m.get(k))
            if v is not None:
                row[k] = v
        per_image.append(row)
    mean = {}
    for k in _FIELDS:
        vals = [r[k] for r in per_image if k in r]
        if vals:
            mean[k] = sum(vals) / len(vals)
    if smoke is None:
        smoke = str(wid or "").startswith("smoke-")
    return QualityCard(tuple(per_image), mean, bool(smoke))
