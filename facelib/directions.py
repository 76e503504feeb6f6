"""Semantic edit directions in W: found from the weights, learned from labels, or by PCA.

A direction is a unit vector ``n`` in W (``style_dim``); editing adds ``strength * n`` to the
W+ rows of a row mask (:func:`apply_direction`). Three ways to find directions, all offline
and for any generator:

* :func:`sefa_directions` (SeFa, Shen & Zhou 2021, "Closed-Form Factorization of Latent
  Semantics in GANs"): the style affine layers of the modulated convolutions map w to
  per-channel styles, ``s = A w + b``. Directions that change the styles most are the top
  eigenvectors of ``A^T A``. As in the paper's official code, each output channel's weight
  vector (a row of ``A``) is normalised to unit length first, and the rows of every layer fed
  by the chosen W+ rows are stacked into one ``A``. ToRGB layers are left out. No sampling.
* :func:`fit_direction` (InterFaceGAN, Shen et al. 2020): the normal of a linear boundary in W
  between labelled latents, with the held-out accuracy; :func:`conditional_direction` projects
  other directions out ("more smile, same yaw"). :func:`facelib.attributes.label_latents` makes
  the labels by sampling, rendering and measuring.
* :func:`pca_directions` (GANSpace, Harkonen et al. 2020): principal axes of mapped w samples.

Results are :class:`Directions` (several, e.g. the top k) or :class:`Direction` (one); both
save to a small ``.pt`` (tensors only, loaded with ``weights_only=True``) plus a JSON sidecar
(method, rows, generator hash, accuracy), e.g. ``out/directions/<name>.pt``.

W+ row -> layer (this package's rosinality layout): row 0 feeds ``conv1``; row ``r >= 1`` feeds
``convs[r - 1]``; ToRGB layers read rows 1, 3, 5, ... as well but are excluded, so the last row
(read by the last ToRGB only) feeds no modulated convolution.
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from . import __version__
from ._io import atomic_path, jsonable
from ._optim import generator_id
from .edits import LayerMask, MaskSpec, render
from .errors import CheckpointError, InputError, ShapeError

__all__ = [
    "Direction",
    "Directions",
    "generator_of",
    "sefa_layers",
    "sefa_directions",
    "pca_directions",
    "fit_direction",
    "conditional_direction",
    "apply_direction",
    "direction_strip",
    "load_directions",
]

log = logging.getLogger(__name__)

_FORMAT = "facelib-directions-1"


def generator_of(model: Any) -> torch.nn.Module:
    """The generator to use: ``model.generator`` when ``model`` carries one (a tuning result), else ``model``."""
    G = getattr(model, "generator", model)
    if not isinstance(G, torch.nn.Module) or not hasattr(G, "n_latent"):
        raise InputError(f"generator: expected a StyleGAN2Generator (or an object with .generator), "
                         f"got {type(model).__name__}")
    return G


# ----------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Direction:
    """One unit direction in W.

    Attributes:
        vector: (style_dim,) float32, unit length.
        method: "sefa", "pca", "fit" or "conditional".
        name: a short label ("sefa_0", "smile", ...).
        rows: the W+ rows it was found for and is applied to by default (None = all rows).
        sigma: standard deviation of ``w . vector`` over mapped samples (the strip's unit), or None.
        value: eigenvalue / explained variance for sefa and pca, None otherwise.
        accuracy: held-out accuracy of the boundary (fit / conditional), None otherwise.
        weights_sha256: hash of the generator it belongs to (None if unknown).
        meta: anything else worth recording (JSON-safe).
    """

    vector: torch.Tensor
    method: str
    name: str = "direction"
    rows: tuple[int, ...] | None = None
    sigma: float | None = None
    value: float | None = None
    accuracy: float | None = None
    weights_sha256: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def save(self, path: "str | os.PathLike[str]") -> Path:
        """Write ``path`` (.pt) and ``path`` with suffix .json; see :func:`load_directions`."""
        return _save(path, self.vector[None], [self.name], self.method, self.rows,
                     [self.sigma], [self.value], [self.accuracy], self.weights_sha256, dict(self.meta))


@dataclass(frozen=True, eq=False)
class Directions:
    """k directions from one method, best first.

    Attributes:
        vectors: (k, style_dim) float32, each row unit length.
        values: (k,) float64 eigenvalues (sefa, pca) or NaN.
        sigmas: (k,) float64 standard deviations of ``w . vector`` over mapped samples, or NaN.
        rows: W+ rows they were computed for (None = all).
        method, names, weights_sha256, meta: as in :class:`Direction`.
        accuracies: (k,) float64 held-out accuracies, NaN where not a fit.
    """

    vectors: torch.Tensor
    values: np.ndarray
    sigmas: np.ndarray
    rows: tuple[int, ...] | None
    method: str
    names: tuple[str, ...]
    weights_sha256: str | None = None
    accuracies: np.ndarray | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def __getitem__(self, i: int) -> Direction:
        k = len(self)
        if not -k <= int(i) < k:
            raise InputError(f"directions: index {i} out of range (there are {k})")
        i = int(i) % k

        def opt(a: np.ndarray | None) -> float | None:
            return None if a is None or not math.isfinite(float(a[i])) else float(a[i])

        return Direction(self.vectors[i], self.method, self.names[i], self.rows, opt(self.sigmas),
                         opt(self.values), opt(self.accuracies), self.weights_sha256, dict(self.meta))

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def save(self, path: "str | os.PathLike[str]") -> Path:
        """Write ``path`` (.pt) and ``path`` with suffix .json; see :func:`load_directions`."""
        acc = self.accuracies if self.accuracies is not None else np.full(len(self), np.nan)
        return _save(path, self.vectors, list(self.names), self.method, self.rows, list(self.sigmas),
                     list(self.values), list(acc), self.weights_sha256, dict(self.meta))


def _opt_floats(values: Sequence[Any]) -> list[float | None]:
    return [None if v is None or not math.isfinite(float(v)) else float(v) for v in values]


def _save(path: Any, vectors: torch.Tensor, names: list[str], method: str, rows: tuple[int, ...] | None,
          sigmas: Sequence[Any], values: Sequence[Any], accuracies: Sequence[Any],
          weights_sha256: str | None, meta: dict) -> Path:
    path = Path(path)
    if path.suffix != ".pt":
        raise InputError(f"{path}: directions are saved as .pt (with a .json sidecar)")
    v = vectors.detach().float().cpu()
    with atomic_path(path) as tmp:
        torch.save({"format": _FORMAT, "vectors": v}, tmp)
    sidecar = {"format": _FORMAT, "method": method, "names": names, "rows": list(rows) if rows is not None else None,
               "k": int(v.shape[0]), "style_dim": int(v.shape[1]), "sigmas": _opt_floats(sigmas),
               "values": _opt_floats(values), "accuracy": _opt_floats(accuracies),
               "weights_sha256": weights_sha256, "facelib_version": __version__, "meta": jsonable(meta)}
    with atomic_path(path.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(sidecar, indent=1))
    return path


def load_directions(path: "str | os.PathLike[str]") -> Directions:
    """Read directions written by :meth:`Directions.save` / :meth:`Direction.save`.

    The ``.pt`` is loaded with ``torch.load(weights_only=True)`` (tensors only, no code).

    Raises:
        CheckpointError: missing or unreadable file or sidecar, or they disagree.
    """
    p = Path(path)
    meta_path = p.with_suffix(".json")
    if not p.is_file():
        raise CheckpointError(p, "directions file not found")
    if not meta_path.is_file():
        raise CheckpointError(meta_path, f"the sidecar of {p.name} is missing (method, rows, generator hash)")
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
        info = json.loads(meta_path.read_text())
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported the same way
        raise CheckpointError(p, f"cannot read directions ({type(e).__name__}: {e})") from None
    v = data.get("vectors") if isinstance(data, dict) else None
    if not isinstance(v, torch.Tensor) or v.ndim != 2 or not isinstance(info, dict) or info.get("format") != _FORMAT:
        raise CheckpointError(p, f"not a facelib directions file (expected {{'vectors': (k, style_dim)}} "
                              f"and a {_FORMAT} sidecar)")
    k = v.shape[0]
    names = tuple(info.get("names") or [f"{info.get('method', 'dir')}_{i}" for i in range(k)])
    if len(names) != k:
        raise CheckpointError(meta_path, f"lists {len(names)} names for {k} vectors")

    def arr(key: str) -> np.ndarray:
        vals = info.get(key) or [None] * k
        return np.array([np.nan if x is None else float(x) for x in vals], dtype=np.float64)

    rows = info.get("rows")
    return Directions(v.float(), arr("values"), arr("sigmas"), tuple(int(r) for r in rows) if rows is not None else None,
                      str(info.get("method", "unknown")), names, info.get("weights_sha256"), arr("accuracy"),
                      dict(info.get("meta") or {}))


# ----------------------------------------------------------------------------------------
# SeFa and PCA
# ----------------------------------------------------------------------------------------

def sefa_layers(G: Any, rows: MaskSpec = "all") -> dict[int, list[str]]:
    """Which modulated convolutions (state-dict prefixes) each chosen W+ row feeds, ToRGB excluded.

    Row 0 -> ``conv1.conv``; row r >= 1 -> ``convs.{r-1}.conv`` while such a conv exists. The
    last row feeds only the last ToRGB, so it maps to an empty list.

    >>> from facelib.stylegan2 import StyleGAN2Generator
    >>> sefa_layers(StyleGAN2Generator(16, style_dim=8, n_mlp=1, channel_max=8), "all")
    {0: ['conv1.conv'], 1: ['convs.0.conv'], 2: ['convs.1.conv'], 3: ['convs.2.conv'], 4: ['convs.3.conv'], 5: []}
    """
    G = generator_of(G)
    mask = LayerMask.coerce(rows, G.n_latent, name="rows")
    n_convs = len(G.convs)
    out: dict[int, list[str]] = {}
    for r in mask.rows:
        out[r] = ["conv1.conv"] if r == 0 else ([f"convs.{r - 1}.conv"] if r - 1 < n_convs else [])
    return out


def _sign_fixed(vectors: torch.Tensor) -> torch.Tensor:
    """Eigenvectors have no sign: make each row's largest-magnitude component positive (deterministic)."""
    idx = vectors.abs().argmax(dim=1)
    signs = torch.sign(vectors.gather(1, idx[:, None]))
    return vectors * torch.where(signs == 0, torch.ones_like(signs), signs)


@torch.no_grad()
def latent_sigmas(G: Any, vectors: torch.Tensor, *, n: int = 2048, seed: int = 0) -> np.ndarray:
    """Standard deviation of ``w . v`` over ``n`` mapped samples (z ~ N(0, I) with ``seed``).

    Args:
        vectors: (k, style_dim).
    Returns:
        (k,) float64; the unit of the -3 sigma ... +3 sigma strips.
    """
    G = generator_of(G)
    g = torch.Generator().manual_seed(int(seed))
    z = torch.randn(int(n), G.style_dim, generator=g).to(G.device)
    w = G.mapping(z).double().cpu()
    proj = w @ vectors.double().cpu().T                 # [n, k]
    return proj.std(dim=0).numpy()


@torch.no_grad()
def sefa_directions(G: Any, rows: MaskSpec = "all", k: int = 10, *, sigma_samples: int = 2048,
                    seed: int = 0) -> Directions:
    """SeFa: the top-k eigenvectors of ``A^T A``, A = the row-normalised style weights of the chosen rows' convs.

    Args:
        G: generator (or an object with ``.generator``, e.g. a tuning result).
        rows: W+ rows (anything :meth:`LayerMask.coerce` reads: "all", "coarse", "middle",
            "fine", "0-3", a row list ...). Weights are ignored; a row counts when non-zero.
        k: number of directions (at most ``style_dim``).
        sigma_samples: mapped samples for :attr:`Directions.sigmas` (0 = skip, sigmas NaN).
        seed: seed of those samples.
    Returns:
        :class:`Directions` with vectors (k, style_dim) unit, values (k,) eigenvalues in
        descending order, rows = the chosen rows.
    Raises:
        InputError: ``k`` out of range, or the rows feed no modulated convolution.
    """
    G = generator_of(G)
    layers = sefa_layers(G, rows)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= G.style_dim:
        raise InputError(f"k: expected an integer in 1..{G.style_dim}, got {k!r}")
    modules = dict(G.named_modules())
    prefixes = [p for r in sorted(layers) for p in layers[r]]
    if not prefixes:
        raise InputError(f"rows {sorted(layers)}: feed no modulated convolution (the last row drives only "
                         f"ToRGB); choose other rows")
    A = torch.cat([modules[p].modulation.weight.detach().double().cpu() for p in prefixes], dim=0)  # [C, D]
    A = A / A.norm(dim=1, keepdim=True).clamp_min(1e-12)
    vals, vecs = torch.linalg.eigh(A.T @ A)             # ascending
    order = torch.argsort(vals, descending=True)[: int(k)]
    vectors = _sign_fixed(vecs[:, order].T).float()     # [k, D]
    values = vals[order].numpy()
    sigmas = latent_sigmas(G, vectors, n=sigma_samples, seed=seed) if sigma_samples else np.full(int(k), np.nan)
    names = tuple(f"sefa_{i}" for i in range(int(k)))
    return Directions(vectors, values, sigmas, tuple(sorted(layers)), "sefa", names,
                      generator_id(G), None, {"layers": prefixes})


@torch.no_grad()
def pca_directions(G: Any, k: int = 10, *, n: int = 10000, seed: int = 0, batch: int = 2048) -> Directions:
    """GANSpace: principal axes of ``n`` mapped samples w = mapping(z), z ~ N(0, I) with ``seed``.

    Returns:
        :class:`Directions`: vectors (k, style_dim) unit, values = variance along each (descending),
        sigmas = its square root, rows None (all rows).
    Raises:
        InputError: ``k`` or ``n`` out of range.
    """
    G = generator_of(G)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= G.style_dim:
        raise InputError(f"k: expected an integer in 1..{G.style_dim}, got {k!r}")
    if int(n) < 2:
        raise InputError(f"n: PCA needs at least 2 samples, got {n}")
    g = torch.Generator().manual_seed(int(seed))
    ws = []
    for start in range(0, int(n), int(batch)):
        z = torch.randn(min(int(batch), int(n) - start), G.style_dim, generator=g).to(G.device)
        ws.append(G.mapping(z).double().cpu())
    w = torch.cat(ws)
    mean = w.mean(0)
    cov = (w - mean).T @ (w - mean) / (w.shape[0] - 1)  # [D, D]
    vals, vecs = torch.linalg.eigh(cov)
    order = torch.argsort(vals, descending=True)[: int(k)]
    vectors = _sign_fixed(vecs[:, order].T).float()
    values = vals[order].clamp_min(0).numpy()
    names = tuple(f"pca_{i}" for i in range(int(k)))
    return Directions(vectors, values, np.sqrt(values), None, "pca", names,
                      generator_id(G), None, {"samples": int(n), "seed": int(seed)})


# ----------------------------------------------------------------------------------------
# Learned from labels (InterFaceGAN)
# ----------------------------------------------------------------------------------------

def _as_w(w: Any, name: str = "w") -> torch.Tensor:
    """(N, D) w, or (N, L, D) W+ averaged over rows (projections of real photos), as float64 CPU."""
    w = getattr(w, "wplus", w)
    if not isinstance(w, torch.Tensor):
        w = torch.as_tensor(np.asarray(w))
    if w.ndim == 3:
        w = w.mean(dim=1)
    if w.ndim != 2:
        raise ShapeError(f"{name}: expected (N, style_dim) or (N, n_latent, style_dim), got {tuple(w.shape)}",
                         actual_shape=w.shape, expected_shape=(None, None))
    return w.detach().double().cpu()


def _logistic(x: torch.Tensor, y: torch.Tensor, l2: float, steps: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-regularised logistic regression by full-batch L-BFGS; returns (weights (D,), bias ()).

    A linear SVM (what InterFaceGAN used, via scikit-learn) and an L2 logistic regression give
    nearly the same boundary normal; the logistic loss is smooth and convex, so a few lines of
    deterministic L-BFGS solve it without adding scikit-learn as a dependency.
    """
    wt = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([wt, b], lr=1.0, max_iter=steps, tolerance_grad=1e-10, tolerance_change=1e-12,
                            line_search_fn="strong_wolfe")
    sign = 2 * y - 1                                      # {0,1} -> {-1,+1}

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.softplus(-sign * (x @ wt + b)).mean() + 0.5 * l2 * (wt @ wt)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return wt.detach(), b.detach()


def fit_direction(w: Any, labels: Any, *, name: str = "direction", holdout: float = 0.2, fraction: float = 0.3,
                  l2: float = 1e-3, seed: int = 0, weights_sha256: str | None = None) -> Direction:
    """InterFaceGAN: the unit normal of a linear boundary in W separating positive from negative latents.

    Args:
        w: (N, style_dim) latents, or (N, n_latent, style_dim) W+ (rows averaged to one w).
        labels: (N,) 0/1 or bool labels, or continuous scores (then the top ``fraction`` are
            positives and the bottom ``fraction`` negatives, the middle is left out, as
            InterFaceGAN does). NaN entries (no face measured) are dropped and counted.
        holdout: share of the kept samples held out for the reported accuracy (seeded split).
        fraction: see ``labels``; in (0, 0.5].
        l2: ridge strength of the logistic regression (on centred w).
        seed: seed of the split.
    Returns:
        :class:`Direction` pointing from negative to positive, with ``accuracy`` on the held-out
        samples and ``sigma`` = std of ``w . vector`` over all given latents; ``meta`` records
        the counts (train, held out, dropped NaN) and the score threshold.
    Raises:
        ShapeError: w and labels disagree in length. InputError: too few samples of a class.
    """
    x = _as_w(w)
    y = torch.as_tensor(np.asarray(labels, dtype=np.float64)).reshape(-1)
    if y.shape[0] != x.shape[0]:
        raise ShapeError(f"labels: {y.shape[0]} values for {x.shape[0]} latents",
                         actual_shape=tuple(y.shape), expected_shape=(x.shape[0],))
    if not 0 < holdout < 1 or not 0 < fraction <= 0.5:
        raise InputError(f"holdout must be in (0, 1) and fraction in (0, 0.5], got {holdout}, {fraction}")
    keep = torch.isfinite(y)
    dropped = int((~keep).sum())
    x_all, x, y = x, x[keep], y[keep]
    binary = bool(((y == 0) | (y == 1)).all())
    threshold: tuple[float, float] | None = None
    if not binary:
        lo, hi = torch.quantile(y, fraction), torch.quantile(y, 1 - fraction)
        sel = (y <= lo) | (y >= hi)
        if lo >= hi:
            raise InputError(f"labels: scores too uniform to split (quantiles {float(lo):.4g} and {float(hi):.4g})")
        x, y = x[sel], (y[sel] >= hi).double()
        threshold = (float(lo), float(hi))
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    if min(n_pos, n_neg) < 4:
        raise InputError(f"labels: need at least 4 positive and 4 negative samples, got {n_pos} and {n_neg}"
                         + (f" ({dropped} dropped as NaN)" if dropped else ""))
    g = torch.Generator().manual_seed(int(seed))
    test = torch.zeros(len(y), dtype=torch.bool)
    for cls in (0.0, 1.0):                              # stratified split
        idx = torch.nonzero(y == cls)[:, 0]
        idx = idx[torch.randperm(len(idx), generator=g)]
        test[idx[: max(1, int(round(holdout * len(idx))))]] = True
    mean = x[~test].mean(0)
    coef, bias = _logistic(x[~test] - mean, y[~test], l2)
    norm = coef.norm()
    if not torch.isfinite(norm) or norm == 0:
        raise InputError("labels: the fit found no boundary (all coefficients zero)")
    pred = ((x[test] - mean) @ coef + bias) > 0
    accuracy = float((pred.double() == y[test]).double().mean())
    vector = (coef / norm).float()
    sigma = float((x_all @ vector.double()).std())
    meta = {"train": int((~test).sum()), "held_out": int(test.sum()), "dropped_nan": dropped,
            "positives": n_pos, "negatives": n_neg, "threshold": threshold, "l2": l2, "seed": int(seed)}
    return Direction(vector, "fit", name, None, sigma, None, accuracy, weights_sha256, meta)


def conditional_direction(primary: "Direction | torch.Tensor", *conditions: "Direction | torch.Tensor",
                          name: str | None = None, w: Any = None) -> Direction:
    """InterFaceGAN's conditional edit: ``primary`` with the span of ``conditions`` projected out.

    Moving along the result changes the primary attribute while leaving the condition
    attributes' linear scores (``w . condition``) unchanged.

    Args:
        primary, conditions: :class:`Direction` or (style_dim,) tensors.
        name: the result's name (default ``"<primary>|<conditions>"``).
        w: optional (N, style_dim) latents (or W+, rows averaged) for the result's ``sigma``.

    Returns:
        :class:`Direction` (method "conditional", unit vector, the primary's accuracy and rows).
    Raises:
        InputError: no conditions, or the primary lies (almost) in their span.
    """
    def vec(d: Any) -> torch.Tensor:
        v = d.vector if isinstance(d, Direction) else torch.as_tensor(d)
        return v.detach().double().cpu().reshape(-1)

    if not conditions:
        raise InputError("conditional_direction: give at least one condition direction")
    p = vec(primary)
    C = torch.stack([vec(c) for c in conditions], dim=1)  # [D, m]
    if C.shape[0] != p.shape[0]:
        raise ShapeError(f"conditional_direction: conditions have {C.shape[0]} dims, primary {p.shape[0]}",
                         actual_shape=(C.shape[0],), expected_shape=(p.shape[0],))
    q, _ = torch.linalg.qr(C)
    out = p - q @ (q.T @ p)
    if out.norm() < 1e-6 * p.norm():
        raise InputError("conditional_direction: the primary direction lies in the span of the conditions")
    base = primary if isinstance(primary, Direction) else None
    cond_names = [c.name if isinstance(c, Direction) else "vector" for c in conditions]
    unit = out / out.norm()
    sigma = float((_as_w(w) @ unit).std()) if w is not None else None
    return Direction(unit.float(), "conditional",
                     name or f"{base.name if base else 'direction'}|{','.join(cond_names)}",
                     base.rows if base else None, sigma, None, base.accuracy if base else None,
                     base.weights_sha256 if base else None, {"conditions": cond_names})


# ----------------------------------------------------------------------------------------
# Applying
# ----------------------------------------------------------------------------------------

def apply_direction(wplus: Any, direction: "Direction | torch.Tensor", strength: float = 1.0, *,
                    mask: MaskSpec = None) -> torch.Tensor:
    """``wplus + strength * mask[row] * direction`` on every W+ row.

    Args:
        wplus: (n_latent, D) or (N, n_latent, D) W+, or a projection (anything with ``.wplus``).
        direction: a :class:`Direction` or a (D,) tensor (used as given, not re-normalised).
        strength: distance to move, in W units (multiply a direction's ``sigma`` for sigma units).
        mask: rows to edit (:class:`facelib.edits.LayerMask` forms); None = the direction's own
            ``rows`` when it has them, else every row.
    Returns:
        A new tensor shaped like ``wplus``: rows with mask weight 0 are unchanged (bit for bit),
        masked rows move by exactly ``strength * weight * direction``.
    Raises:
        ShapeError: the direction's width differs from the latent's. InputError: non-finite strength.
    """
    w = getattr(wplus, "wplus", wplus)
    if not isinstance(w, torch.Tensor) or w.ndim not in (2, 3):
        raise ShapeError(f"wplus: expected a (n_latent, D) or (N, n_latent, D) tensor, got "
                         f"{tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__}",
                         actual_shape=getattr(w, "shape", None), expected_shape=(None, None, None))
    v = direction.vector if isinstance(direction, Direction) else torch.as_tensor(direction)
    v = v.reshape(-1)
    if v.shape[0] != w.shape[-1]:
        raise ShapeError(f"direction: has {v.shape[0]} dims, the latent rows have {w.shape[-1]}",
                         actual_shape=tuple(v.shape), expected_shape=(w.shape[-1],))
    s = float(strength)
    if not math.isfinite(s):
        raise InputError(f"strength: expected a finite number, got {strength!r}")
    if mask is None and isinstance(direction, Direction) and direction.rows is not None:
        mask = list(direction.rows)
    m = LayerMask.coerce(mask, w.shape[-2], name="mask")
    weights = m.tensor(dtype=w.dtype, device=w.device)  # [L]
    step = (s * weights)[:, None] * v.to(device=w.device, dtype=w.dtype)[None]  # [L, D]
    out = w + step
    keep = weights == 0
    if keep.any():                                      # untouched rows bit-identical
        out[..., keep, :] = w[..., keep, :]
    return out


@torch.no_grad()
def direction_strip(G: Any, wplus: Any, direction: "Direction | torch.Tensor", *,
                    sigmas: Sequence[float] = (-3, -2, -1, 0, 1, 2, 3), mask: MaskSpec = None,
                    noise: Any = None, batch_size: int = 8) -> torch.Tensor:
    """Render one latent moved along ``direction`` by each of ``sigmas`` (in units of the direction's sigma).

    Args:
        G: generator, or an object with ``.generator`` (a tuning result renders through its own).
        wplus: (n_latent, D) or (1, n_latent, D) W+, or a projection.
        direction: :class:`Direction` (its ``sigma`` is the unit; 1 when unknown) or a (D,) tensor.
        sigmas: strengths in sigma units.
        mask: as in :func:`apply_direction`.
        noise: passed to the renderer (a projection's own noise maps keep its details).
    Returns:
        (len(sigmas), 3, H, W) float in [-1, 1] (clamped), on the CPU.
    """
    G = generator_of(G)
    w = getattr(wplus, "wplus", wplus)
    if noise is None:
        noise = getattr(wplus, "noises", None)
    w = w if w.ndim == 2 else w[0]
    if isinstance(noise, (list, tuple)):                # the first latent's own maps
        noise = [None if nz is None else nz[:1] for nz in noise]
    unit = (direction.sigma if isinstance(direction, Direction) and direction.sigma else 1.0)
    edited = torch.stack([apply_direction(w, direction, s * unit, mask=mask) for s in sigmas])
    return render(G, edited.to(G.device), noise=noise, batch_size=batch_size).clamp(-1, 1).cpu()
