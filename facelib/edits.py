"""Edits in W+: style mixing, expression deltas, per-row masks, and measuring what each row does.

A W+ latent holds one style row per generator layer (``n_latent`` rows, 18 at 1024 px). Row
``r`` drives the layers of resolution about ``4 * 2 ** (r // 2)`` px, so low rows set pose and
face shape, middle rows features, high rows colour and fine texture (Karras et al. 2019, the
StyleGAN style-mixing figure). Every edit here takes a *row mask* (:class:`LayerMask`, a row
list, a string such as ``"9-17"`` or a weight vector) saying which rows it touches:

* :func:`mix_styles`: rows of ``style`` replace (or, with ``strength < 1``, interpolate towards)
  those of ``content``;
* :func:`expression_delta` / :func:`apply_delta`: ``target + strength * mask * (emotion - neutral)``;
* :func:`row_effects`: apply an edit one row at a time and measure the image change inside and
  outside the face and in mean colour, so the mask is chosen from a measurement.

Row numbers in masks are exact; *named presets* (``"coarse"``, ``"fine"``, ``"style"``,
``"expression"``, emotion names) are written for an 18-row generator and carried over to other
sizes band by band (see :meth:`LayerMask.scaled`). Tables for the notebooks
(:func:`style_table`, :func:`expression_table`) and helpers that find their inputs live at the
end of the module.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, Union

import numpy as np
import torch

from ._io import atomic_path
from .errors import CheckpointError, DependencyError, InputError, NoFaceError, RangeError, ShapeError

__all__ = [
    "REFERENCE_N_LATENT",
    "PRESETS",
    "EXPRESSION_MASKS",
    "EMOTIONS",
    "FFHQ_FACE_ELLIPSE",
    "row_bands",
    "LayerMask",
    "MaskSpec",
    "mix_styles",
    "expression_delta",
    "apply_delta",
    "render",
    "ffhq_ellipse_mask",
    "face_region",
    "RowEffects",
    "row_effects",
    "StyleTable",
    "style_table",
    "ExpressionTable",
    "expression_table",
    "MixPreview",
    "DeltaPreview",
    "find_projections",
    "random_latents",
    "reference_dir",
    "reference_projections",
    "EditInputs",
    "style_inputs",
    "expression_inputs",
    "SavedLatents",
    "load_latents",
    "save_latents",
    "generator_for",
]

log = logging.getLogger(__name__)

#: Presets and report row numbers refer to the 1024 px FFHQ generator's 18 W+ rows.
REFERENCE_N_LATENT = 18

#: Named row masks, written for 18 rows (scaled to other generators by :meth:`LayerMask.scaled`).
PRESETS: dict[str, str] = {
    "all": "0-17",
    "none": "",
    "coarse": "0-3",        # 4-8 px layers: pose, face shape, hair style (StyleGAN, Karras et al. 2019, sec. 3.1)
    "middle": "4-7",        # 16-32 px layers: features, eyes open/closed, mouth
    "fine": "8-17",         # 64-1024 px layers: colour scheme, micro-structure
    "style": "9-17",        # the report's style transfer rows: range(9, 18)
    "expression": "1-17",   # the report: row 0 carries lighting and artefacts such as glasses
}

#: Per-emotion rows of the expression deltas (18-row terms). The report (section 4, "Emotions")
#: says each emotion used its own W+ rows, but names only the row it zeroed: row 0, which
#: carried the reference photos' lighting and artefacts such as glasses. So every emotion
#: starts from rows 1-17; edit an entry (or pass ``mask=``) after measuring with
#: :func:`row_effects`.
EXPRESSION_MASKS: dict[str, str] = {
    "happy": "1-17",
    "sad": "1-17",
    "fear": "1-17",
}

#: The report's reference emotions, in its table's column order.
EMOTIONS: tuple[str, ...] = ("neutral", "happy", "sad", "fear")

#: Fallback face region of an FFHQ-aligned image: an ellipse (centre x, centre y, semi-axis x,
#: semi-axis y) as fractions of the side. Measured on the 68-landmark hulls of seven aligned
#: test photos (mean centroid (0.506, 0.645), mean area 0.255 of the image); the ellipse has the
#: same centre row and area.
FFHQ_FACE_ELLIPSE: tuple[float, float, float, float] = (0.5, 0.645, 0.275, 0.295)

MaskSpec = Union["LayerMask", str, Sequence[int], Sequence[float], range, torch.Tensor, np.ndarray, None]

_BAND_NAMES = ("coarse", "middle", "fine")


# ----------------------------------------------------------------------------------------
# Row masks
# ----------------------------------------------------------------------------------------

def row_bands(n_latent: int) -> dict[str, range]:
    """The coarse / middle / fine row bands of a generator with ``n_latent`` W+ rows.

    From 64 px up (``n_latent >= 10``) the bands follow resolution: coarse = rows 0-3
    (4-8 px), middle = rows 4-7 (16-32 px), fine = rows 8 and up (64 px and up). Smaller
    generators have no 64 px layers, so their rows are split 4 : 4 : 10 like the 18-row
    generator's (each band at least one row when ``n_latent >= 3``).

    >>> row_bands(14)
    {'coarse': range(0, 4), 'middle': range(4, 8), 'fine': range(8, 14)}
    """
    n = _check_n_latent(n_latent)
    if n >= 10:
        return {"coarse": range(0, 4), "middle": range(4, 8), "fine": range(8, n)}
    if n < 3:
        return {"coarse": range(0, 1), "middle": range(1, 1), "fine": range(1, n)}
    a = min(max(round(n * 4 / 18), 1), n - 2)
    b = min(max(round(n * 8 / 18), a + 1), n - 1)
    return {"coarse": range(0, a), "middle": range(a, b), "fine": range(b, n)}


def _check_n_latent(n_latent: Any) -> int:
    if isinstance(n_latent, bool) or not isinstance(n_latent, (int, np.integer)) or n_latent < 1:
        raise InputError(f"n_latent: expected a positive integer, got {n_latent!r}")
    return int(n_latent)


def _format_rows(rows: Sequence[int]) -> str:
    """[1, 2, 3, 7] -> "1-3,7"."""
    rows = sorted(set(rows))
    parts, i = [], 0
    while i < len(rows):
        j = i
        while j + 1 < len(rows) and rows[j + 1] == rows[j] + 1:
            j += 1
        parts.append(str(rows[i]) if i == j else f"{rows[i]}-{rows[j]}")
        i = j + 1
    return ",".join(parts)


_TOKEN = re.compile(r"^(\d+)(?:\s*-\s*(\d+))?$")


def _parse_rows(text: str) -> tuple[list[int], list[str]]:
    """Row numbers and preset names in a mask string; raises InputError on bad syntax."""
    rows: list[int] = []
    names: list[str] = []
    for token in (t.strip() for t in text.replace(";", ",").split(",")):
        if not token:
            continue
        m = _TOKEN.match(token)
        if m:
            lo = int(m.group(1))
            hi = int(m.group(2)) if m.group(2) is not None else lo
            if hi < lo:
                raise InputError(f"mask {text!r}: range {token!r} runs backwards (write {hi}-{lo})")
            rows.extend(range(lo, hi + 1))
            continue
        key = token.lower()
        if key in PRESETS or key in EXPRESSION_MASKS:
            names.append(key)
            continue
        if key.startswith("-"):
            raise RangeError(f"mask {text!r}: negative row {token!r}; rows are numbered from 0")
        known = sorted(set(PRESETS) | set(EXPRESSION_MASKS))
        raise InputError(f"mask {text!r}: cannot read {token!r}; write rows like '9-17' or '0,2,4-6', "
                         f"or a preset name {known}")
    return rows, names


@dataclass(frozen=True)
class LayerMask:
    """One weight per W+ row, in [0, 1]: which rows an edit touches and how much.

    Build one with :meth:`preset` (named masks, scaled to the generator), :meth:`parse`
    (``"9-17"``, ``"0,2,4-6"``, preset names), :meth:`from_rows` or :meth:`coerce` (any of
    these, a row list or a weight vector). Every edit function accepts the same forms.

    Attributes:
        weights: ``n_latent`` floats in [0, 1].

    >>> LayerMask.parse("0,2,4-6", 8).rows
    (0, 2, 4, 5, 6)
    >>> str(LayerMask.preset("style", 14))
    '9-13'
    """

    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        w = tuple(float(v) for v in self.weights)
        if not w:
            raise InputError("LayerMask: needs at least one row weight")
        bad = [i for i, v in enumerate(w) if not (math.isfinite(v) and 0.0 <= v <= 1.0)]
        if bad:
            raise RangeError(f"LayerMask: row weights must lie in [0, 1]; rows {bad} hold "
                             f"{[w[i] for i in bad]} (use strength= to scale an edit)")
        object.__setattr__(self, "weights", w)

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_rows(cls, rows: Iterable[int], n_latent: int) -> "LayerMask":
        """Weight 1 on ``rows``, 0 elsewhere.

        Raises:
            RangeError: a row outside ``0 .. n_latent - 1``.
        """
        n = _check_n_latent(n_latent)
        rows = [int(r) for r in rows]
        bad = sorted({r for r in rows if not 0 <= r < n})
        if bad:
            raise RangeError(f"rows {_format_rows([r for r in bad if r >= 0]) or bad} do not exist: this generator "
                             f"has {n} W+ rows (0-{n - 1}); preset names such as 'style' or 'fine' adapt to its size")
        w = [0.0] * n
        for r in rows:
            w[r] = 1.0
        return cls(tuple(w))

    @classmethod
    def parse(cls, text: str, n_latent: int) -> "LayerMask":
        """Read ``"9-17"``, ``"0,2,4-6"``, ``""``/``"none"``, ``"all"`` or preset names (also mixed: ``"0,fine"``).

        Row numbers are exact; preset names are scaled to ``n_latent`` (see :meth:`scaled`).

        Raises:
            InputError: unreadable text. RangeError: rows beyond ``n_latent``.
        """
        if not isinstance(text, str):
            raise InputError(f"mask: expected a string such as '9-17', got {type(text).__name__}")
        n = _check_n_latent(n_latent)
        rows, names = _parse_rows(text)
        mask = cls.from_rows(rows, n)
        for name in names:
            mask = mask | cls.preset(name, n)
        return mask

    @classmethod
    def preset(cls, name: str, n_latent: int) -> "LayerMask":
        """A named mask (:data:`PRESETS` or an emotion of :data:`EXPRESSION_MASKS`) for ``n_latent`` rows.

        >>> [str(LayerMask.preset("fine", n)) for n in (18, 16, 14)]
        ['8-17', '8-15', '8-13']
        """
        key = str(name).strip().lower()
        spec = PRESETS.get(key, EXPRESSION_MASKS.get(key))
        if spec is None:
            raise InputError(f"mask preset {name!r}: unknown; known presets are "
                             f"{sorted(set(PRESETS) | set(EXPRESSION_MASKS))}")
        return cls.scaled(spec, n_latent)

    @classmethod
    def scaled(cls, spec: "LayerMask | str | Sequence[int]", n_latent: int, *,
               reference: int = REFERENCE_N_LATENT) -> "LayerMask":
        """Carry a mask written for a ``reference``-row generator over to ``n_latent`` rows.

        Each band of :func:`row_bands` maps onto the same band of the other generator by
        area resampling (a target row gets the mean weight of the reference rows it covers);
        a 0/1 mask stays 0/1, keeping rows covered more than half. With the same number of
        rows the mask is unchanged. E.g. ``"9-17"`` becomes ``"9-13"`` for 14 rows and
        ``"1-17"`` becomes ``"1-13"``.
        """
        n = _check_n_latent(n_latent)
        ref = _check_n_latent(reference)
        src = spec if isinstance(spec, LayerMask) else (
            cls.parse(spec, ref) if isinstance(spec, str) else cls.from_rows(spec, ref))
        if src.n_latent != ref:
            raise ShapeError(f"LayerMask.scaled: mask has {src.n_latent} rows, reference is {ref}",
                             actual_shape=(src.n_latent,), expected_shape=(ref,))
        if n == ref:
            return src
        binary = src.is_binary
        out = [0.0] * n
        sb, tb = row_bands(ref), row_bands(n)
        for name in _BAND_NAMES:
            s, t = sb[name], tb[name]
            if len(t) == 0 or len(s) == 0:
                continue
            sw = [src.weights[i] for i in s]
            for j, row in enumerate(t):  # target row j covers [j, j+1) * len(s) / len(t) of the source band
                a, b = j * len(s) / len(t), (j + 1) * len(s) / len(t)
                acc = 0.0
                for i in range(int(math.floor(a)), int(math.ceil(b))):
                    acc += sw[i] * (min(b, i + 1) - max(a, i))
                v = acc / (b - a)
                out[row] = (1.0 if v > 0.5 + 1e-9 else 0.0) if binary else min(max(v, 0.0), 1.0)
        return cls(tuple(out))

    @classmethod
    def coerce(cls, spec: MaskSpec, n_latent: int, *, name: str = "mask") -> "LayerMask":
        """Any accepted mask form -> a :class:`LayerMask` of ``n_latent`` rows.

        Args:
            spec: a LayerMask (its length must be ``n_latent``); a string (:meth:`parse`);
                a range or sequence of ints, or an integer tensor/array (rows); a sequence of
                floats or bools, or a float/bool tensor/array (one weight per row); None (all rows).
            n_latent: the generator's number of W+ rows.
            name: the argument's name, for error messages.
        Raises:
            ShapeError: a weight vector or LayerMask of the wrong length. RangeError / InputError.
        """
        n = _check_n_latent(n_latent)
        if spec is None:
            return cls((1.0,) * n)
        if isinstance(spec, LayerMask):
            if spec.n_latent != n:
                raise ShapeError(f"{name}: LayerMask has {spec.n_latent} rows, the latent has {n}",
                                 actual_shape=(spec.n_latent,), expected_shape=(n,))
            return spec
        if isinstance(spec, str):
            return cls.parse(spec, n)
        if isinstance(spec, range):
            return cls.from_rows(spec, n)
        if torch.is_tensor(spec) or isinstance(spec, np.ndarray):
            arr = spec.detach().cpu().numpy() if torch.is_tensor(spec) else spec
            if arr.ndim != 1:
                raise ShapeError(f"{name}: expected a 1-D row list or weight vector, got shape {arr.shape}",
                                 actual_shape=arr.shape, expected_shape=(n,))
            if arr.dtype == bool or np.issubdtype(arr.dtype, np.floating):
                return cls._from_weights(arr.astype(np.float64).tolist(), n, name)
            if np.issubdtype(arr.dtype, np.integer):
                return cls.from_rows(arr.tolist(), n)
            raise InputError(f"{name}: unsupported dtype {arr.dtype}")
        if isinstance(spec, Sequence):
            items = list(spec)
            if all(isinstance(v, (bool, np.bool_)) for v in items) and items:
                return cls._from_weights([float(v) for v in items], n, name)
            if all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in items):
                return cls.from_rows(items, n)
            if all(isinstance(v, (int, float, np.number)) for v in items):
                return cls._from_weights([float(v) for v in items], n, name)
        raise InputError(f"{name}: expected a LayerMask, a string like '9-17', a list of rows or a weight "
                         f"vector of length {n}, got {type(spec).__name__}")

    @classmethod
    def _from_weights(cls, weights: Sequence[float], n: int, name: str) -> "LayerMask":
        if len(weights) != n:
            raise ShapeError(f"{name}: a weight vector needs one value per W+ row ({n}), got {len(weights)}",
                             actual_shape=(len(weights),), expected_shape=(n,))
        return cls(tuple(weights))

    # -- views ------------------------------------------------------------------------------
    @property
    def n_latent(self) -> int:
        return len(self.weights)

    @property
    def rows(self) -> tuple[int, ...]:
        """Rows with a non-zero weight."""
        return tuple(i for i, v in enumerate(self.weights) if v != 0.0)

    @property
    def is_binary(self) -> bool:
        return all(v in (0.0, 1.0) for v in self.weights)

    def tensor(self, *, device: "torch.device | str | None" = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(n_latent,) weights."""
        return torch.tensor(self.weights, dtype=dtype, device=device)

    def __str__(self) -> str:
        if self.is_binary:
            return _format_rows(self.rows) or "none"
        return ",".join(f"{i}:{v:g}" for i, v in enumerate(self.weights) if v != 0.0)

    def __len__(self) -> int:
        return self.n_latent

    def _same(self, other: "LayerMask") -> None:
        if not isinstance(other, LayerMask):
            raise InputError(f"LayerMask: cannot combine with {type(other).__name__}")
        if other.n_latent != self.n_latent:
            raise ShapeError(f"LayerMask: {self.n_latent} rows vs {other.n_latent}",
                             actual_shape=(other.n_latent,), expected_shape=(self.n_latent,))

    def __or__(self, other: "LayerMask") -> "LayerMask":
        self._same(other)
        return LayerMask(tuple(max(a, b) for a, b in zip(self.weights, other.weights)))

    def __and__(self, other: "LayerMask") -> "LayerMask":
        self._same(other)
        return LayerMask(tuple(min(a, b) for a, b in zip(self.weights, other.weights)))

    def __invert__(self) -> "LayerMask":
        return LayerMask(tuple(1.0 - v for v in self.weights))

    def span(self) -> range:
        """The smallest contiguous block of rows holding every non-zero row (empty range if none)."""
        rows = self.rows
        return range(rows[0], rows[-1] + 1) if rows else range(0, 0)

    def without(self, rows: Iterable[int]) -> "LayerMask":
        """The same mask with ``rows`` set to 0."""
        drop = set(int(r) for r in rows)
        return LayerMask(tuple(0.0 if i in drop else v for i, v in enumerate(self.weights)))


# ----------------------------------------------------------------------------------------
# The edits
# ----------------------------------------------------------------------------------------

def _wplus_of(x: Any, name: str) -> torch.Tensor:
    """A tensor (n_latent, D) / (N, n_latent, D), or anything with a ``.wplus`` tensor (a Projection)."""
    w = getattr(x, "wplus", x)
    if not torch.is_tensor(w):
        raise InputError(f"{name}: expected a W+ tensor (n_latent, D) or (N, n_latent, D), or a Projection; "
                         f"got {type(x).__name__}")
    if w.ndim not in (2, 3):
        raise ShapeError(f"{name}: expected (n_latent, D) or (N, n_latent, D), got {tuple(w.shape)}",
                         actual_shape=w.shape, expected_shape=(None, None, None))
    if not w.is_floating_point():
        raise InputError(f"{name}: expected a float tensor, got {w.dtype}")
    return w


def _strength(value: Any, name: str = "strength") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not math.isfinite(value):
        raise RangeError(f"{name}: expected a finite number, got {value!r}")
    return float(value)


def _pair(a: torch.Tensor, b: torch.Tensor, na: str, nb: str) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Broadcast two W+ tensors over the batch dimension; returns (a3, b3, batched)."""
    if a.shape[-2:] != b.shape[-2:]:
        raise ShapeError(f"{nb}: rows and width {tuple(b.shape[-2:])} differ from {na}'s {tuple(a.shape[-2:])} "
                         "(latents of different generators?)", actual_shape=b.shape,
                         expected_shape=(None,) * (b.ndim - 2) + tuple(a.shape[-2:]))
    batched = a.ndim == 3 or b.ndim == 3
    a3, b3 = (a if a.ndim == 3 else a[None]), (b if b.ndim == 3 else b[None])
    if a3.shape[0] != b3.shape[0] and 1 not in (a3.shape[0], b3.shape[0]):
        raise ShapeError(f"{nb}: batch of {b3.shape[0]} does not match {na}'s {a3.shape[0]} "
                         "(give one of them a batch of 1 to broadcast)", actual_shape=b.shape,
                         expected_shape=(a3.shape[0],) + tuple(a.shape[-2:]))
    if b3.device != a3.device or b3.dtype != a3.dtype:
        b3 = b3.to(device=a3.device, dtype=a3.dtype)
    return a3, b3, batched


def mix_styles(content: Any, style: Any, *, rows: MaskSpec = "style", strength: float = 1.0) -> torch.Tensor:
    """Style mixing: the masked rows of ``content`` move to those of ``style``.

    ``out = content + strength * m * (style - content)`` per row, computed as a lerp so that
    rows with ``strength * m == 1`` are exactly ``style``'s and rows with 0 exactly ``content``'s.

    Args:
        content: (n_latent, D) or (N, n_latent, D) W+ (or a Projection).
        style: the same, with the same (n_latent, D); a batch of 1 (or an unbatched latent)
            broadcasts against the other's batch.
        rows: the rows taken from ``style``: any :class:`LayerMask` form. Default ``"style"``:
            rows 9-17 of an 18-row generator (the report's ``range(9, 18)``), carried over to
            other sizes by :meth:`LayerMask.scaled` (9-15 for 16 rows, 9-13 for 14 rows, the
            fine band for generators below 64 px). Explicit row numbers beyond ``n_latent``
            raise :class:`RangeError`.
        strength: 1 replaces the rows, values in (0, 1) interpolate, 0 returns ``content``.
    Returns:
        A new tensor, (N, n_latent, D) when either input is batched, else (n_latent, D).
    Raises:
        ShapeError: different (n_latent, D) or incompatible batches. RangeError: bad rows or strength.
    """
    c = _wplus_of(content, "content")
    s = _wplus_of(style, "style")
    c3, s3, batched = _pair(c, s, "content", "style")
    mask = LayerMask.coerce(rows, c3.shape[1], name="rows")
    k = _strength(strength)
    w = (mask.tensor(device=c3.device, dtype=c3.dtype) * k)[:, None]  # [L, 1]
    out = torch.lerp(c3, s3, w.expand(c3.shape[1], c3.shape[2]))  # [N, L, D]
    return out if batched else out[0]


def _stack_latents(x: Any, name: str) -> torch.Tensor:
    """(K, n_latent, D) from a tensor, a Projection, or a sequence of those."""
    if torch.is_tensor(x) or hasattr(x, "wplus"):
        w = _wplus_of(x, name)
        return w if w.ndim == 3 else w[None]
    if isinstance(x, Sequence) and not isinstance(x, str) and len(x) > 0:
        parts = [_stack_latents(v, f"{name}[{i}]") for i, v in enumerate(x)]
        first = parts[0]
        for i, p in enumerate(parts[1:], 1):
            if p.shape[1:] != first.shape[1:]:
                raise ShapeError(f"{name}[{i}]: shape {tuple(p.shape[1:])} differs from {name}[0]'s "
                                 f"{tuple(first.shape[1:])}", actual_shape=p.shape,
                                 expected_shape=(None,) + tuple(first.shape[1:]))
        return torch.cat([p.to(first) for p in parts])
    raise InputError(f"{name}: expected W+ latents (a tensor, a Projection or a non-empty list of them), "
                     f"got {type(x).__name__}")


def expression_delta(neutral: Any, emotion: Any) -> torch.Tensor:
    """The W+ direction from a neutral face to an emotion, averaged over reference pairs.

    ``delta = mean(emotion) - mean(neutral)``; with as many neutral as emotion references
    (photos of the same people) this is the mean of the per-pair differences, which cancels
    much of each person's identity.

    Args:
        neutral: (n_latent, D), (K, n_latent, D), a Projection or a list of those.
        emotion: the same for the emotion's references (any count >= 1).
    Returns:
        (n_latent, D) float tensor (a new tensor; the inputs are unchanged).
    Raises:
        ShapeError: the two sides have different (n_latent, D). RangeError: non-finite values.
    """
    n = _stack_latents(neutral, "neutral")
    e = _stack_latents(emotion, "emotion")
    if n.shape[1:] != e.shape[1:]:
        raise ShapeError(f"emotion: latents of shape {tuple(e.shape[1:])} do not match neutral's "
                         f"{tuple(n.shape[1:])}", actual_shape=e.shape, expected_shape=(None,) + tuple(n.shape[1:]))
    e = e.to(n)
    if n.shape[0] == e.shape[0]:
        delta = (e - n).mean(0)
    else:
        delta = e.mean(0) - n.mean(0)
    if not torch.isfinite(delta).all():
        raise RangeError("expression_delta: the references contain NaN or inf values")
    return delta


def apply_delta(target: Any, delta: torch.Tensor, *, mask: MaskSpec = "expression",
                strength: float = 1.0) -> torch.Tensor:
    """``target + strength * mask * delta`` on the masked rows; the other rows stay exactly as they were.

    Args:
        target: (n_latent, D) or (N, n_latent, D) W+ (or a Projection).
        delta: (n_latent, D) or (N, n_latent, D), e.g. from :func:`expression_delta`.
        mask: any :class:`LayerMask` form, or an emotion name (its :data:`EXPRESSION_MASKS`
            entry). Default ``"expression"``: every row but row 0 (which carries lighting and
            artefacts such as glasses in the report's references), scaled to the generator.
            ``mask="all"`` (or None) adds the whole delta.
        strength: scale of the delta; 0 returns the target unchanged, negative values subtract.
    Returns:
        A new tensor, batched like the inputs.
    Raises:
        ShapeError: mismatched shapes. RangeError: bad rows or strength.
    """
    t = _wplus_of(target, "target")
    d = _wplus_of(delta, "delta")
    t3, d3, batched = _pair(t, d, "target", "delta")
    m = LayerMask.coerce(mask, t3.shape[1], name="mask")
    k = _strength(strength)
    w = (m.tensor(device=t3.device, dtype=t3.dtype) * k)[None, :, None]  # [1, L, 1]
    out = t3 + w * d3
    return out if batched else out[0]


# ----------------------------------------------------------------------------------------
# Rendering and the face region
# ----------------------------------------------------------------------------------------

def _noise_for(noise: Any, index: slice) -> Any:
    """Select the batch entries ``index`` of a per-layer noise list (batch-1 maps broadcast)."""
    if noise is None or isinstance(noise, str):
        return noise
    return [None if nz is None else (nz if nz.shape[0] == 1 else nz[index]) for nz in noise]


@torch.no_grad()
def _generator_of(G: Any) -> torch.nn.Module:
    """``G``, or the tuned generator of a one-photo :class:`~facelib.tuning.Tuning`."""
    from .tuning import as_generator

    return as_generator(G)


def render(G: torch.nn.Module, wplus: torch.Tensor, *, noise: Any = None, batch_size: int = 8,
           progress: bool = False, desc: str = "render") -> torch.Tensor:
    """Render W+ latents in chunks.

    Args:
        G: a :class:`~facelib.stylegan2.StyleGAN2Generator`, or a one-photo
            :class:`~facelib.tuning.Tuning` (renders through its tuned generator).
        wplus: (N, n_latent, D) or (n_latent, D).
        noise: None (G's stored noise buffers), "random", "none", or a list of per-layer maps
            (N or 1, 1, r, r) such as ``Projection.noises``.
        batch_size: images per synthesis call.
    Returns:
        (N, 3, H, W) float32 on the CPU, clamped to [-1, 1].
    """
    from .progress import progress_bar as tqdm

    G = _generator_of(G)  # a one-photo Tuning renders through its tuned generator
    if batch_size < 1:
        raise InputError(f"batch_size: expected >= 1, got {batch_size}")
    w = _wplus_of(wplus, "wplus")
    w = w if w.ndim == 3 else w[None]
    if w.shape[1:] != (G.n_latent, G.style_dim):
        raise ShapeError(f"wplus: expected (N, {G.n_latent}, {G.style_dim}) for this generator, got "
                         f"{tuple(w.shape)}", actual_shape=w.shape, expected_shape=(None, G.n_latent, G.style_dim))
    device = next(G.parameters()).device
    if isinstance(noise, (list, tuple)):
        noise = [None if nz is None else nz.to(device) for nz in noise]
    out = []
    starts = range(0, w.shape[0], batch_size)
    for s in tqdm(starts, desc=desc, disable=not progress or len(starts) < 2, leave=False):
        sl = slice(s, s + batch_size)
        img = G.synthesis(w[sl].to(device=device, dtype=torch.float32), noise=_noise_for(noise, sl))
        out.append(img.float().clamp(-1, 1).cpu())
    return torch.cat(out)


def ffhq_ellipse_mask(size: int) -> torch.Tensor:
    """The fallback face region: the :data:`FFHQ_FACE_ELLIPSE` of an FFHQ-aligned image.

    Returns:
        (size, size) float32 in [0, 1] (anti-aliased edge, 4x supersampled).
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise InputError(f"size: expected a positive integer, got {size!r}")
    cx, cy, ax, ay = FFHQ_FACE_ELLIPSE
    ss = 4
    t = (torch.arange(size * ss, dtype=torch.float64) + 0.5) / (size * ss)
    y, x = torch.meshgrid(t, t, indexing="ij")
    inside = (((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0).double()
    return inside.reshape(size, ss, size, ss).mean((1, 3)).float()


def face_region(image: Any, size: int, *, fallback: bool = True) -> tuple[torch.Tensor, str]:
    """The inner-face region of an aligned face image, from dlib landmarks, else the FFHQ ellipse.

    Landmarks are found on ``image`` (upscaled to 256 px first when smaller, since dlib's
    detector misses small faces) and rasterised with :func:`facelib.align.face_mask`. When no
    face is found, or dlib is missing, the fixed :func:`ffhq_ellipse_mask` is used (FFHQ
    alignment puts every face in nearly the same place); renderings of an untrained generator
    always end up there.

    Args:
        image: PIL image, path, or (3, H, W) / (1, 3, H, W) tensor in [-1, 1].
        size: side of the returned mask.
        fallback: False raises instead of falling back.
    Returns:
        ((size, size) float32 in [0, 1], a description of where the region came from).
    Raises:
        NoFaceError / DependencyError: only with ``fallback=False``.
    """
    from PIL import Image

    from . import align
    from .grids import to_pil

    try:
        if torch.is_tensor(image):
            img = to_pil(image[0] if image.ndim == 4 else image)
        else:
            img = align.load_image(image)
        if min(img.size) < 256:
            img = img.resize((256, 256), Image.Resampling.LANCZOS)
        boxes = align.detect_faces(img)
        if not boxes:
            raise NoFaceError("face_region: dlib found no face on the image")
        lm = align.predict_landmarks(img, boxes[0])
        return align.face_mask(lm, size, source_size=img.width), "landmarks (dlib 68-point hull)"
    except (NoFaceError, DependencyError) as e:
        if not fallback:
            raise
        why = "no face found" if isinstance(e, NoFaceError) else "dlib unavailable"
        return ffhq_ellipse_mask(size), f"FFHQ ellipse ({why})"


def _resolve_region(region: Any, size: int, base: torch.Tensor, target_image: Any) -> tuple[torch.Tensor, str]:
    import torch.nn.functional as F

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
    if m.ndim != 2:
        raise ShapeError(f"mask_region: expected an (H, W) mask, got {tuple(m.shape)}",
                         actual_shape=m.shape, expected_shape=(size, size))
    if m.shape != (size, size):
        m = F.interpolate(m[None, None], size=(size, size), mode="bilinear", align_corners=False)[0, 0]
    return m.clamp(0, 1), "given mask"


# ----------------------------------------------------------------------------------------
# Row effects
# ----------------------------------------------------------------------------------------

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
        from matplotlib.figure import Figure

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
        from .grids import make_grid

        import torch.nn.functional as F

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
    import torch.nn.functional as F

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
    t = _wplus_of(target_wplus, "target_wplus").detach().float().cpu()
    if t.ndim == 3:
        if t.shape[0] != 1:
            raise ShapeError(f"target_wplus: expected one latent, got a batch of {t.shape[0]}",
                             actual_shape=t.shape, expected_shape=(1, G.n_latent, G.style_dim))
        t = t[0]
    if t.shape != (G.n_latent, G.style_dim):
        raise ShapeError(f"target_wplus: expected ({G.n_latent}, {G.style_dim}) for this generator, got "
                         f"{tuple(t.shape)}", actual_shape=t.shape, expected_shape=(G.n_latent, G.style_dim))
    if isinstance(noise, (list, tuple)):
        noise = [None if nz is None else nz[:1] for nz in noise]
    k = _strength(strength)
    n = G.n_latent
    if delta is not None:
        d = _wplus_of(delta, "delta").detach().float().cpu()
        kind = "delta"

        def edit(mask: LayerMask) -> torch.Tensor:
            return apply_delta(t, d, mask=mask, strength=k)
    else:
        s = _wplus_of(style_wplus, "style_wplus").detach().float().cpu()
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
        if v.ndim != 2:
            raise ShapeError("row_effects: the edit must give one latent (pass a single delta / style)",
                             actual_shape=v.shape, expected_shape=(n, G.style_dim))
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
    from .progress import progress_bar as tqdm

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
    import hashlib

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
    import hashlib

    from . import __version__
    from ._optim import generator_id

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


# ----------------------------------------------------------------------------------------
# Latent sets (W+ with optional noise maps and names)
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Latents:
    wplus: torch.Tensor                      # [N, L, D]
    noises: list[torch.Tensor] | None        # per layer [N, 1, r, r], or None (G's buffers)
    names: list[str]

    def one(self, i: int) -> "_Latents":
        return _Latents(self.wplus[i:i + 1], None if self.noises is None else [nz[i:i + 1] for nz in self.noises],
                        [self.names[i]])


def _gather(x: Any, what: str) -> _Latents:
    """Latents from a tensor, a Projection, a list of those or a {name: latent} mapping."""
    if isinstance(x, Mapping):
        items = list(x.items())
        if not items:
            raise InputError(f"{what}: empty")
        parts = [_gather(v, f"{what}[{k!r}]") for k, v in items]
        names = []
        for (k, _), p in zip(items, parts):
            names += [str(k)] if len(p.names) == 1 else [f"{k}_{j}" for j in range(len(p.names))]
        return _cat(parts, what, names)
    if torch.is_tensor(x) or hasattr(x, "wplus"):
        w = _wplus_of(x, what).detach().float().cpu()
        w = w if w.ndim == 3 else w[None]
        noises = getattr(x, "noises", None) or None
        if noises is not None:
            noises = [nz.detach().float().cpu() for nz in noises]
            if any(nz.shape[0] != w.shape[0] for nz in noises):
                noises = None
        names = [str(v) if v else f"{what}_{i}" for i, v in enumerate(getattr(x, "names", None) or [None] * w.shape[0])]
        return _Latents(w, noises, names)
    if isinstance(x, Sequence) and not isinstance(x, str):
        if not x:
            raise InputError(f"{what}: empty list")
        return _cat([_gather(v, f"{what}[{i}]") for i, v in enumerate(x)], what, None)
    raise InputError(f"{what}: expected W+ latents (tensor, Projection, list or mapping), got {type(x).__name__}")


def _cat(parts: list[_Latents], what: str, names: list[str] | None) -> _Latents:
    first = parts[0].wplus
    for p in parts[1:]:
        if p.wplus.shape[1:] != first.shape[1:]:
            raise ShapeError(f"{what}: latents of shapes {tuple(first.shape[1:])} and {tuple(p.wplus.shape[1:])} mixed",
                             actual_shape=p.wplus.shape, expected_shape=(None,) + tuple(first.shape[1:]))
    noises = None
    if all(p.noises is not None for p in parts) and len({len(p.noises) for p in parts}) == 1:
        noises = [torch.cat([p.noises[k] for p in parts]) for k in range(len(parts[0].noises))]
    return _Latents(torch.cat([p.wplus for p in parts]), noises,
                    names if names is not None else [n for p in parts for n in p.names])


def _latents_for(G: torch.nn.Module, x: Any, what: str) -> _Latents:
    """:func:`_gather`, checking that the latents fit ``G``."""
    lat = _gather(x, what)
    if lat.wplus.shape[1:] != (G.n_latent, G.style_dim):
        raise ShapeError(f"{what}: latents of shape {tuple(lat.wplus.shape[1:])} do not fit this generator "
                         f"({G.n_latent}, {G.style_dim}); were they projected with another one?",
                         actual_shape=lat.wplus.shape, expected_shape=(None, G.n_latent, G.style_dim))
    return lat


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._") or "image"


# ----------------------------------------------------------------------------------------
# Style table (notebook 03)
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True, repr=False)
class StyleTable:
    """Every content face with every style transferred (:func:`style_table`).

    Attributes:
        content_wplus: (C, n_latent, D); style_wplus: (S, n_latent, D).
        mixed_wplus: (C, S, n_latent, D), ``mix_styles(content[c], style[s], rows=mask, strength)``.
        content_images: (C, 3, H, W); style_images: (S, 3, H, W); mixed_images: (C, S, 3, H, W);
            all float32 in [-1, 1] (content and mixes use the content's noise maps when known).
        content_names, style_names: labels.
        mask: the rows taken from the styles. strength: their strength.
    """

    content_wplus: torch.Tensor
    style_wplus: torch.Tensor
    mixed_wplus: torch.Tensor
    content_images: torch.Tensor
    style_images: torch.Tensor
    mixed_images: torch.Tensor
    content_names: tuple[str, ...]
    style_names: tuple[str, ...]
    mask: LayerMask
    strength: float

    def __repr__(self) -> str:
        return (f"StyleTable(contents={list(self.content_names)}, styles={list(self.style_names)}, "
                f"rows={self.mask}, strength={self.strength:g})")

    def grid(self, *, style_photos: Mapping[str, Any] | Sequence[Any] | None = None, content_photos: Any = None,
             cell: int = 256, title: str | None = None):
        """The report's table: style photos (when given), their projections, then each content with every style.

        Args:
            style_photos: PIL images / paths, one per style (sequence, or mapping by style name).
            content_photos: the same for the contents (shown in the first column of the photo row).
        Returns:
            PIL image.
        """
        from .grids import make_grid

        sp = _photos(style_photos, self.style_names)
        cp = _photos(content_photos, self.content_names)
        rows, labels = [], []
        if any(p is not None for p in sp):
            rows.append([cp[0] if cp else None] + sp)
            labels.append("photo")
        rows.append([None] + list(self.style_images))
        labels.append("style (projection)")
        for c, name in enumerate(self.content_names):
            rows.append([self.content_images[c]] + list(self.mixed_images[c]))
            labels.append(name)
        return make_grid(rows, cell=cell, row_labels=labels, col_labels=["content"] + list(self.style_names),
                         title=title or f"style transfer: rows {self.mask} from the style, strength {self.strength:g}")

    def save_images(self, folder: "str | os.PathLike[str]", *, style_photos: Any = None, quality: int = 95,
                    label: str | None = None) -> list[Path]:
        """Write ``<style>.jpg`` (photo, when given), ``<style>_style.jpg`` (projection),
        ``transferred_<style>.jpg`` (onto the first content) and ``transferred_<style>_<content>.jpg``
        (other contents) into ``folder``. ``label``: a stamp for every image (smoke runs)."""
        folder = Path(folder)
        photos = _photos(style_photos, self.style_names, open_=False)
        items: list[tuple[Any, Path]] = []
        for s, name in enumerate(self.style_names):
            sname = _safe_name(name)
            if photos[s] is not None:
                items.append((photos[s], folder / f"{sname}.jpg"))
            items.append((self.style_images[s], folder / f"{sname}_style.jpg"))
            for c, cname in enumerate(self.content_names):
                suffix = "" if c == 0 else f"_{_safe_name(cname)}"
                items.append((self.mixed_images[c, s], folder / f"transferred_{sname}{suffix}.jpg"))
        return _save_jpegs(items, label=label, quality=quality)


def _open(img: Any, *, square: bool = False):
    """A PIL RGB image from a PIL image or a path; ``square``: centre-cropped to a square (for grid cells)."""
    from PIL import Image, ImageOps

    from .align import load_image

    im = load_image(img)
    if square and im.width != im.height:
        side = min(im.size)
        im = ImageOps.fit(im, (side, side), Image.Resampling.LANCZOS)
    return im


def _save_jpegs(items: Iterable[tuple[Any, Path]], *, label: str | None, quality: int) -> list[Path]:
    """Save each (image, path) as JPEG, stamped with ``label`` when given; returns the paths.

    Images: tensors (3, H, W) in [-1, 1], PIL images or paths.
    """
    from .grids import save_image, stamp, to_pil

    written = []
    for img, path in items:
        im = to_pil(img) if torch.is_tensor(img) else _open(img)
        save_image(stamp(im, label) if label else im, path, quality=quality)
        written.append(path)
    return written


def _photos(photos: Any, names: Sequence[str], *, open_: bool = True) -> list[Any]:
    """One photo (or None) per name, from a sequence or a {name: photo} mapping; opened and
    squared for grid cells unless ``open_`` is False."""
    if photos is None:
        items: list[Any] = [None] * len(names)
    elif isinstance(photos, Mapping):
        items = [photos.get(n) for n in names]
    else:
        photos = list(photos)
        items = [photos[i] if i < len(photos) else None for i in range(len(names))]
    return [None if p is None else (_open(p, square=True) if open_ else p) for p in items]


def style_table(G: torch.nn.Module, contents: Any, styles: Any, *, rows: MaskSpec = "style",
                strength: float = 1.0, batch_size: int = 8, progress: bool = True) -> StyleTable:
    """Transfer every style onto every content face and render everything.

    Args:
        G: the generator, or a one-photo :class:`~facelib.tuning.Tuning` of the content photo
            (everything renders through its tuned generator).
        contents, styles: W+ latents: tensors (N, n_latent, D), Projections (their noise maps
            and names are used), lists of those, or {name: latent} mappings.
        rows, strength: as for :func:`mix_styles`.
        batch_size: images per synthesis call.
    Returns:
        :class:`StyleTable`.
    """
    G = _generator_of(G)  # a one-photo Tuning renders through its tuned generator
    c = _latents_for(G, contents, "contents")
    s = _latents_for(G, styles, "styles")
    mask = LayerMask.coerce(rows, G.n_latent, name="rows")
    k = _strength(strength)
    n_c = c.wplus.shape[0]
    mixed = torch.stack([mix_styles(c.wplus[i], s.wplus, rows=mask, strength=k) for i in range(n_c)])  # [C, S, L, D]
    content_images = render(G, c.wplus, noise=c.noises, batch_size=batch_size)
    style_images = render(G, s.wplus, noise=s.noises, batch_size=batch_size)
    mixed_images = torch.stack([
        render(G, mixed[i], noise=None if c.noises is None else c.one(i).noises, batch_size=batch_size,
               progress=progress, desc=f"style transfer {i + 1}/{n_c}")
        for i in range(n_c)])
    return StyleTable(content_wplus=c.wplus, style_wplus=s.wplus, mixed_wplus=mixed, content_images=content_images,
                      style_images=style_images, mixed_images=mixed_images, content_names=tuple(c.names),
                      style_names=tuple(s.names), mask=mask, strength=k)


# ----------------------------------------------------------------------------------------
# Expression table (notebook 04)
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True, repr=False)
class ExpressionTable:
    """Expression deltas applied to target faces, with and without their row masks (:func:`expression_table`).

    Attributes:
        target_wplus: (T, n_latent, D).
        emotions: emotion names, in column order.
        deltas: (E, n_latent, D), one :func:`expression_delta` per emotion.
        masks: one :class:`LayerMask` per emotion.
        edited_wplus / unmasked_wplus: (T, E, n_latent, D) with the mask / with every row.
        target_images: (T, 3, H, W); neutral_image: (3, H, W) (first neutral reference);
        reference_images: (E, 3, H, W) (first reference of each emotion);
        edited_images / unmasked_images: (T, E, 3, H, W). All float32 in [-1, 1].
        target_names: labels. strength: the deltas' strength.
    """

    target_wplus: torch.Tensor
    emotions: tuple[str, ...]
    deltas: torch.Tensor
    masks: tuple[LayerMask, ...]
    edited_wplus: torch.Tensor
    unmasked_wplus: torch.Tensor
    target_images: torch.Tensor
    neutral_image: torch.Tensor
    reference_images: torch.Tensor
    edited_images: torch.Tensor
    unmasked_images: torch.Tensor
    target_names: tuple[str, ...]
    strength: float

    def __repr__(self) -> str:
        masks = {e: str(m) for e, m in zip(self.emotions, self.masks)}
        return f"ExpressionTable(targets={list(self.target_names)}, masks={masks}, strength={self.strength:g})"

    def grid(self, *, photos: Mapping[str, Any] | None = None, cell: int = 256, title: str | None = None,
             unmasked: bool = False):
        """The report's table: reference photos (when given), their projections, each target with each expression.

        Args:
            photos: {"neutral": image, "happy": image, ...} reference photos (PIL or paths).
            unmasked: add a row per target with the unmasked (every row) results.
        """
        from .grids import make_grid

        cols = ["neutral"] + list(self.emotions)
        rows, labels = [], []
        if photos:
            rows.append(_photos(photos, cols))
            labels.append("photo")
        rows.append([self.neutral_image] + list(self.reference_images))
        labels.append("projection")
        for t, name in enumerate(self.target_names):
            rows.append([self.target_images[t]] + list(self.edited_images[t]))
            labels.append(name)
            if unmasked:
                rows.append([self.target_images[t]] + list(self.unmasked_images[t]))
                labels.append(f"{name}, no mask")
        masks = ", ".join(f"{e}: {m}" for e, m in zip(self.emotions, self.masks))
        return make_grid(rows, cell=cell, row_labels=labels, col_labels=cols,
                         title=title or f"expressions, strength {self.strength:g}; rows {masks}")

    def comparison_grid(self, *, target: int = 0, cell: int = 256, title: str | None = None):
        """Per emotion: target, all rows (artefacts such as lighting or glasses), masked rows."""
        from .grids import make_grid

        rows = [[self.target_images[target], self.unmasked_images[target, e], self.edited_images[target, e]]
                for e in range(len(self.emotions))]
        caps = [["", "rows: all", f"rows: {m}"] for m in self.masks]
        return make_grid(rows, cell=cell, row_labels=list(self.emotions), captions=caps,
                         col_labels=["target", "no mask", "masked"],
                         title=title or f"{self.target_names[target]}: the delta on every row vs on the masked rows")

    def save_images(self, folder: "str | os.PathLike[str]", *, photos: Mapping[str, Any] | None = None,
                    quality: int = 95, label: str | None = None) -> list[Path]:
        """Write ``<emotion>_photo.jpg`` (when given), ``<emotion>.jpg`` (projections, neutral included),
        ``target.jpg``, ``transferred_<emotion>.jpg`` and ``transferred_<emotion>_unmasked.jpg``
        (later targets get a ``_<target>`` suffix) into ``folder``."""
        folder = Path(folder)
        items: list[tuple[Any, Path]] = [(photo, folder / f"{_safe_name(name)}_photo.jpg")
                                         for name, photo in (photos or {}).items() if photo is not None]
        items.append((self.neutral_image, folder / "neutral.jpg"))
        items += [(img, folder / f"{_safe_name(name)}.jpg") for img, name in zip(self.reference_images, self.emotions)]
        for t, tname in enumerate(self.target_names):
            suffix = "" if t == 0 else f"_{_safe_name(tname)}"
            items.append((self.target_images[t], folder / f"target{suffix}.jpg"))
            for e, name in enumerate(self.emotions):
                stem = f"transferred_{_safe_name(name)}{suffix}"
                items += [(self.edited_images[t, e], folder / f"{stem}.jpg"),
                          (self.unmasked_images[t, e], folder / f"{stem}_unmasked.jpg")]
        return _save_jpegs(items, label=label, quality=quality)


def expression_table(G: torch.nn.Module, target: Any, neutral: Any, emotions: Mapping[str, Any], *,
                     masks: "MaskSpec | Mapping[str, MaskSpec]" = None, strength: float = 1.0,
                     batch_size: int = 8, progress: bool = True) -> ExpressionTable:
    """Compute each emotion's delta against the neutral references and apply it to the targets.

    Args:
        G: the generator, or a one-photo :class:`~facelib.tuning.Tuning` of the target photo
            (everything renders through its tuned generator).
        target: the faces to edit (tensor, Projection, list or mapping; see :func:`style_table`).
        neutral: neutral references (K >= 1).
        emotions: {name: references} (each K_e >= 1), e.g. {"happy": ..., "sad": ..., "fear": ...}.
        masks: None (each emotion's :data:`EXPRESSION_MASKS` entry, else ``"expression"``), one
            mask for all, or {name: mask}.
        strength: the deltas' strength.
    Returns:
        :class:`ExpressionTable`.
    """
    if not isinstance(emotions, Mapping) or not emotions:
        raise InputError("emotions: expected a non-empty {name: reference latents} mapping")
    G = _generator_of(G)  # a one-photo Tuning renders through its tuned generator
    t = _latents_for(G, target, "target")
    nl = _latents_for(G, neutral, "neutral")
    names = tuple(str(k) for k in emotions)
    refs = {name: _latents_for(G, emotions[name], f"emotions[{name!r}]") for name in names}
    k = _strength(strength)
    mask_list = []
    for name in names:
        preset = name.lower() if name.lower() in EXPRESSION_MASKS else "expression"  # scaled to G by name
        if isinstance(masks, Mapping):
            spec = masks.get(name, preset)
        elif masks is None:
            spec = preset
        else:
            spec = masks
        mask_list.append(LayerMask.coerce(spec, G.n_latent, name=f"masks[{name!r}]"))
    deltas = torch.stack([expression_delta(nl.wplus, refs[n].wplus) for n in names])  # [E, L, D]
    edited = torch.stack([apply_delta(t.wplus, d, mask=m, strength=k) for d, m in zip(deltas, mask_list)], 1)
    unmasked = torch.stack([apply_delta(t.wplus, d, mask="all", strength=k) for d in deltas], 1)  # [T, E, L, D]
    target_images = render(G, t.wplus, noise=t.noises, batch_size=batch_size)
    neutral_image = render(G, nl.wplus[:1], noise=nl.one(0).noises)[0]
    reference_images = torch.cat([render(G, refs[n].wplus[:1], noise=refs[n].one(0).noises) for n in names])
    e_imgs, u_imgs = [], []
    for i in range(t.wplus.shape[0]):
        nz = None if t.noises is None else t.one(i).noises
        both = render(G, torch.cat([edited[i], unmasked[i]]), noise=nz, batch_size=batch_size, progress=progress,
                      desc=f"expressions {i + 1}/{t.wplus.shape[0]}")
        e_imgs.append(both[:len(names)])
        u_imgs.append(both[len(names):])
    return ExpressionTable(target_wplus=t.wplus, emotions=names, deltas=deltas, masks=tuple(mask_list),
                           edited_wplus=edited, unmasked_wplus=unmasked, target_images=target_images,
                           neutral_image=neutral_image, reference_images=reference_images,
                           edited_images=torch.stack(e_imgs), unmasked_images=torch.stack(u_imgs),
                           target_names=tuple(t.names), strength=k)


# ----------------------------------------------------------------------------------------
# Interactive previews (callables for ipywidgets.interact)
# ----------------------------------------------------------------------------------------

class Preview:
    """Shared by the previews: re-render when widgets change (no ipywidgets import needed here)."""

    label: str | None = None  # stamped on every table (smoke runs)

    def _labelled(self, grid: Any) -> Any:
        """``grid`` stamped with :attr:`label`, or unchanged without one."""
        if not self.label:
            return grid
        from .grids import stamp

        return stamp(grid, self.label)

    @staticmethod
    def _slider_rows(rows: Any) -> Any:
        """A (first, last) pair, as an ``IntRangeSlider`` gives it, -> ``range(first, last + 1)``; else ``rows``."""
        if isinstance(rows, tuple) and len(rows) == 2 and all(isinstance(v, int) for v in rows):
            return range(min(rows), max(rows) + 1)
        return rows

    def watch(self, show: Any, controls: Sequence[Any], **getters: Any) -> None:
        """Show ``self(**{name: getter()})`` now and again whenever a value in ``controls`` changes.

        The notebooks use :func:`facelib.widgets.preview_panel` instead, which adds a Run button
        for slow previews and a caption naming the settings of the image.

        Args:
            show: displays an image, e.g. the second item of ``facelib.widgets.image_grid_output()``.
            controls: widgets (containers are searched for their value widgets, e.g. a box of
                checkboxes).
            getters: keyword -> zero-argument callable reading the value, e.g. the getters of
                ``facelib.widgets.row_range_slider`` / ``strength_slider``.
        """
        def update(_change: Any = None) -> None:
            try:
                show(self(**{k: g() for k, g in getters.items()}))
            except Exception as e:  # noqa: BLE001 - any failure replaces the image (never a stale one)
                show(f"{type(e).__name__}: {e}")

        stack = list(controls)
        while stack:
            w = stack.pop()
            if hasattr(w, "children"):
                stack.extend(w.children)
            elif hasattr(w, "observe") and hasattr(w, "value"):
                w.observe(update, names="value")
        update()


class MixPreview(Preview):
    """``preview(rows="style", strength=1.0)`` -> PIL table: the styles, then the content with each style's rows.

    ``styles``: one latent or several (tensor batch, Projection, list or {name: latent});
    ``rows``: any mask form, or a (first, last) pair as an ``IntRangeSlider`` gives it.
    """

    def __init__(self, G: torch.nn.Module, content: Any, styles: Any, *, cell: int = 256,
                 label: str | None = None) -> None:
        G = _generator_of(G)  # a one-photo Tuning renders through its tuned generator
        self.G, self.cell, self.label = G, cell, label
        self.content = _latents_for(G, content, "content").one(0)
        self.styles = _latents_for(G, styles, "styles")
        self._content_image = render(G, self.content.wplus, noise=self.content.noises)[0]
        self._style_images = render(G, self.styles.wplus, noise=self.styles.noises)

    def __call__(self, rows: Any = "style", strength: float = 1.0):
        from .grids import make_grid

        mask = LayerMask.coerce(self._slider_rows(rows), self.G.n_latent, name="rows")
        k = _strength(strength)
        mixed = mix_styles(self.content.wplus[0], self.styles.wplus, rows=mask, strength=k)  # [S, L, D]
        images = render(self.G, mixed, noise=self.content.noises)
        grid = make_grid([[None] + list(self._style_images), [self._content_image] + list(images)],
                         cell=self.cell, row_labels=["style", "transferred"],
                         col_labels=[self.content.names[0]] + list(self.styles.names),
                         title=f"rows {mask} from the style, strength {k:g}")
        return self._labelled(grid)


class DeltaPreview(Preview):
    """``preview(mask="expression", strength=1.0)`` -> PIL table, one row per delta: target,
    the delta on every row (artefacts), the delta on the masked rows.

    ``delta``: one (n_latent, D) tensor or {name: tensor}; ``mask``: any mask form (e.g. the
    getter of ``facelib.widgets.row_checkboxes``).
    """

    def __init__(self, G: torch.nn.Module, target: Any, delta: "torch.Tensor | Mapping[str, torch.Tensor]", *,
                 cell: int = 256, label: str | None = None) -> None:
        G = _generator_of(G)  # a one-photo Tuning renders through its tuned generator
        self.G, self.cell, self.label = G, cell, label
        self.target = _latents_for(G, target, "target").one(0)
        items = delta.items() if isinstance(delta, Mapping) else [("delta", delta)]
        self.deltas = {str(k): _wplus_of(v, f"delta[{k!r}]").detach().float().cpu() for k, v in items}
        self._base = render(G, self.target.wplus, noise=self.target.noises)[0]
        self._unmasked: dict[float, torch.Tensor] = {}

    def __call__(self, mask: MaskSpec = "expression", strength: float = 1.0):
        from .grids import make_grid

        m = LayerMask.coerce(mask, self.G.n_latent, name="mask")
        k = _strength(strength)
        if k not in self._unmasked:  # the every-row results change only with the strength
            self._unmasked = {k: render(self.G, torch.cat([apply_delta(self.target.wplus, d, mask="all", strength=k)
                                                           for d in self.deltas.values()]),
                                        noise=self.target.noises)}
        edited = render(self.G, torch.cat([apply_delta(self.target.wplus, d, mask=m, strength=k)
                                           for d in self.deltas.values()]), noise=self.target.noises)
        rows = [[self._base, u, e] for u, e in zip(self._unmasked[k], edited)]
        grid = make_grid(rows, cell=self.cell, row_labels=list(self.deltas),
                         col_labels=["target", "all rows", f"rows {m}"], title=f"strength {k:g}")
        return self._labelled(grid)


# ----------------------------------------------------------------------------------------
# Inputs for the notebooks and the command line
# ----------------------------------------------------------------------------------------

def find_projections(folder: "str | os.PathLike[str]", *, G: torch.nn.Module | None = None) -> dict[str, Any]:
    """Saved projections under ``folder`` (``<name>.pt`` with its ``.json`` sidecar), by relative name.

    Unreadable files are skipped with a warning. With ``G``, projections whose shape does not
    fit it, or whose recorded generator differs from it, are skipped too (logged).

    Returns:
        {"<person>/<n>": Projection} in sorted order (empty when the folder does not exist).
    """
    from ._optim import generator_id
    from .project import load_projection

    root = Path(folder)
    if not root.is_dir():
        return {}
    found: dict[str, Any] = {}
    gid = generator_id(G) if G is not None else None
    for pt in sorted(root.rglob("*.pt")):
        rel = pt.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        meta = pt.with_suffix(".json")
        try:
            if json.loads(meta.read_text()).get("format") != "facelib.projection":
                continue
            proj = load_projection(pt)
        except (OSError, ValueError, CheckpointError) as e:
            log.warning("skipping %s: %s", pt, e)
            continue
        if G is not None:
            if tuple(proj.wplus.shape[1:]) != (G.n_latent, G.style_dim):
                log.warning("skipping %s: W+ %s does not fit the generator (%d, %d)", pt,
                            tuple(proj.wplus.shape[1:]), G.n_latent, G.style_dim)
                continue
            if proj.weights_sha256 and gid and proj.weights_sha256 != gid:
                log.warning("skipping %s: projected with another generator (%s...)", pt, proj.weights_sha256[:12])
                continue
        found[rel.with_suffix("").as_posix()] = proj
    return found


def reference_dir(preferred: "str | os.PathLike[str] | None", *, role: str, inventory: Any = None) -> Path | None:
    """Where the photos of a role are: ``preferred`` when it is a folder holding photos, else one
    that :func:`facelib.data.locate` found for ``role``, else None.

    Found folders: "styles": the photo folder itself; "expressions": the folder itself when it
    holds the photos flat (``Happy copy.jpg``), its parent when it is an ``<emotion>/`` folder;
    "aligned": the folder itself when its name says "aligned", else its parent (the folder
    holding ``<person>/<n>.jpg``).

    Args:
        inventory: a :class:`facelib.data.DataInventory` (default: a fresh :func:`~facelib.data.locate`).
    """
    from .align_batch import list_images
    from .data import is_emotion_name

    if role not in ("styles", "expressions", "aligned"):
        raise InputError(f"role: expected 'styles', 'expressions' or 'aligned', got {role!r}")
    if preferred and Path(preferred).is_dir() and list_images(Path(preferred)):
        return Path(preferred)
    if inventory is None:
        from .data import locate

        inventory = locate()
    for folder in getattr(inventory, "image_folders", ()):
        if folder.role != role:
            continue
        path = Path(folder.path)
        if role == "expressions":
            return path.parent if is_emotion_name(path.name) else path
        if role == "aligned":
            return path if "align" in path.name.lower() else path.parent
        return path
    return Path(preferred) if preferred and Path(preferred).is_dir() else None


def aligned_dir(preferred: "str | os.PathLike[str] | None" = "", *, out_dir: "str | os.PathLike[str]" = "out",
                inventory: Any = None) -> Path | None:
    """The aligned photos to use: ``preferred`` when given, else ``<out_dir>/aligned`` when it holds
    photos (notebook 01), else an attached aligned dataset (``<person>/<n>.jpg``, any case and
    image extension; :func:`reference_dir` with role "aligned"), else None."""
    from .align_batch import list_images

    if preferred:
        return Path(preferred)
    own = Path(out_dir) / "aligned"
    if own.is_dir() and list_images(own):
        return own
    return reference_dir(None, role="aligned", inventory=inventory)


def reference_photo_names(photos: "str | os.PathLike[str] | Sequence[str | os.PathLike[str]]") -> dict[str, Path]:
    """Photos by the name their results are kept under.

    Args:
        photos: a folder (searched recursively, any case of :data:`facelib.align.IMAGE_EXTENSIONS`;
            names are paths relative to it without the suffix: ``bad_trip1``, ``set2/green``), or
            a list of photo files (names are their stems; a repeated stem gets its folder's name
            in front: ``a/1`` and ``b/1`` -> ``1``, ``b_1``).
    Returns:
        {name: path}, in sorted path order; empty for a missing folder.
    """
    from .align_batch import list_images

    if isinstance(photos, (str, os.PathLike)):
        root = Path(photos)
        if not root.is_dir():
            return {}
        return {p.relative_to(root).with_suffix("").as_posix(): p for p in list_images(root, recursive=True)}
    named: dict[str, Path] = {}
    for p in sorted(Path(x) for x in photos):
        name = p.stem
        if name in named:
            name = f"{p.parent.name}_{p.stem}"
        k = 2
        while name in named:
            name, k = f"{p.stem}_{k}", k + 1
        named[name] = p
    return named


def expression_photos(folder: "str | os.PathLike[str]") -> dict[str, list[Path]]:
    """Expression photos under ``folder`` grouped by emotion label (:func:`facelib.data.emotion_label`).

    A photo's emotion is its deepest folder that names a known emotion (``Happy/1.jpg``), else its
    own name when that names one (``Happy copy.jpg``, ``sadness (2).PNG``), else its folder under
    ``folder`` (``Smug/1.jpg``), else its own name (``Smug copy.jpg``): so any emotion name works,
    flat or in folders, in any case.

    Returns:
        {emotion: [photo, ...]}: "neutral" first, then the report's emotions (happy, sad, fear)
        as present, then the others alphabetically; empty for a missing folder.
    """
    from .align_batch import list_images
    from .data import emotion_label, is_emotion_name

    root = Path(folder)
    if not root.is_dir():
        return {}
    groups: dict[str, list[Path]] = {}
    for p in list_images(root, recursive=True):
        dirs = p.relative_to(root).parts[:-1]
        known = [d for d in reversed(dirs) if is_emotion_name(d)]
        if known:
            label = emotion_label(known[0])
        elif is_emotion_name(p.stem):
            label = emotion_label(p.stem)
        else:
            label = emotion_label(dirs[-1]) if dirs else emotion_label(p.stem)
        if not label:
            log.warning("skipping %s: its name names no emotion", p)
            continue
        groups.setdefault(label, []).append(p)
    order = {e: i for i, e in enumerate(EMOTIONS)}
    return {k: groups[k] for k in sorted(groups, key=lambda e: (order.get(e, len(order)), e))}


@torch.no_grad()
def random_latents(G: torch.nn.Module, n: int, *, seed: int = 0, truncation: float = 0.7) -> torch.Tensor:
    """``n`` random W latents broadcast to every W+ row: (n, n_latent, D), CPU, deterministic in ``seed``."""
    g = torch.Generator().manual_seed(int(seed))
    z = torch.randn(n, G.style_dim, generator=g)
    device = next(G.parameters()).device
    w = G.mapping(z.to(device)).float()
    if truncation < 1:
        avg = G.latent_avg if G.latent_avg is not None else G.mean_latent(4096)
        avg = avg.to(w).reshape(1, -1)
        w = avg + truncation * (w - avg)
    return w[:, None].repeat(1, G.n_latent, 1).cpu()


def reference_projections(G: torch.nn.Module, photos: "str | os.PathLike[str] | Sequence[str | os.PathLike[str]]",
                          work_dir: "str | os.PathLike[str]", *, steps: int = 500, progress: bool = True,
                          **project_options: Any) -> dict[str, Any]:
    """Align and project reference photos, reusing earlier results.

    Photos are FFHQ-aligned into ``work_dir/aligned/<name>.png`` (a photo without a detectable
    face, such as a painting, is centre-cropped instead, with a warning; an aligned file already
    there is reused), projected into ``work_dir/latents`` (skipped when already there with the
    same settings) and returned by name (:func:`reference_photo_names`).

    Args:
        G: the generator.
        photos: a folder of photos (recursively; any case of .jpg/.jpeg/.png/...) or a list of files.
        work_dir: where aligned images and projections are kept.
        steps, project_options: projection settings (:func:`facelib.project`).
    Returns:
        {name: Projection}, sorted; empty when there are no photos.
    """
    return _references(G, photos, Path(work_dir), steps, progress, project_options)[0]


def _references(G: torch.nn.Module, photos: Any, work: Path, steps: int, progress: bool,
                options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Path]]:
    """:func:`reference_projections` of ``photos``, and the aligned photo of each projected one
    ({name: path}, in the photos' order)."""
    from PIL import Image, ImageOps
    from tqdm.auto import tqdm

    from .align import align_faces, load_image
    from .errors import FacelibError
    from .project import project_folder

    named = reference_photo_names(photos)
    if not named:
        return {}, {}
    aligned = work / "aligned"
    size = max(256, G.resolution)
    ready = {n: aligned / f"{n}.png" for n in named if (aligned / f"{n}.png").is_file()}  # aligned before
    todo = [(n, p) for n, p in named.items() if n not in ready]
    for name, path in tqdm(todo, desc="align", unit="img", disable=not progress or not todo):
        out = aligned / f"{name}.png"
        try:
            img = align_faces(path, output_size=size, max_faces=1)[0].image
        except DependencyError:
            raise  # a missing model affects every photo: stop with the clear message
        except (FacelibError, OSError, RuntimeError, ValueError) as why:  # no face (a painting), or dlib failed
            try:
                img = ImageOps.fit(load_image(path), (size, size), Image.Resampling.LANCZOS)
            except InputError as e:
                log.warning("skipping %s: %s", path, e)
                continue
            log.warning("%s: %s; using a centre crop instead", path.name, why)
        with atomic_path(out) as tmp:
            img.save(tmp, format="PNG")
        ready[name] = out
    if not ready:
        return {}, {}
    projected = project_folder(aligned, work / "latents", G, progress=progress, steps=steps, **options)
    if projected.failed or projected.kept:  # kept: finished projections of other settings are reused, not replaced
        log.warning("%s", projected.summary())
    found = find_projections(work / "latents", G=G)
    result = {n: found[n] for n in named if n in found and n in ready}
    return result, {n: ready[n] for n in result}


@dataclass(frozen=True)
class EditInputs:
    """Latents for a notebook: what to edit, the references, and where they came from.

    Attributes:
        targets: {name: Projection or (1, n_latent, D) tensor} faces to edit.
        references: {name: {item name: latent}}: styles (notebook 03) or
            ``{"neutral": ..., "happy": ..., ...}`` (notebook 04).
        photos: {reference name: its aligned photo} for the table's photo row (empty without photos).
        notes: human-readable lines on what was used (and what stood in for missing inputs).
        stand_ins: True when random latents replaced missing projections or photos.
        stand_in_for: what the random latents replaced: "targets", "styles", or the emotion
            labels without usable photos (empty when every input is real).
    """

    targets: dict[str, Any]
    references: dict[str, dict[str, Any]]
    photos: dict[str, Path] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    stand_ins: bool = False
    stand_in_for: tuple[str, ...] = ()

    def stand_in_note(self) -> str:
        """The grid-title note " | random latents stand in for: targets, sad" ("" when every input is real)."""
        return f" | random latents stand in for: {', '.join(self.stand_in_for)}" if self.stand_in_for else ""


def _pick_targets(G: torch.nn.Module, latents_dir: Any, target: str | None, n_targets: int,
                  seed: int, notes: list[str]) -> tuple[dict[str, Any], dict[str, Any], bool]:
    projections = find_projections(latents_dir, G=G) if latents_dir else {}
    if target is not None:
        if target not in projections:
            raise InputError(f"TARGET {target!r}: no such projection in {latents_dir} "
                             f"(found: {sorted(projections)[:10]})")
        names = [target]
    else:
        names = list(projections)[:n_targets]
    if names:
        notes.append(f"targets: projection(s) {names} from {latents_dir}")
        return {n: projections[n] for n in names}, {k: v for k, v in projections.items() if k not in names}, False
    notes.append(f"targets: no projections in {latents_dir} fit this generator; using {n_targets} random latent(s) "
                 f"(seed {seed}) instead (run notebook 02 first for real faces)")
    w = random_latents(G, n_targets, seed=seed)
    return {f"random_{i}": w[i:i + 1] for i in range(n_targets)}, {}, True


def style_inputs(G: torch.nn.Module, *, latents_dir: Any = "out/latents", styles_dir: Any = "data/styles",
                 work_dir: Any = "out/styles", target: str | None = None, n_targets: int = 1, n_styles: int = 4,
                 project_steps: int = 500, seed: int = 0, progress: bool = True, **project_options: Any) -> EditInputs:
    """Content faces and styles for notebook 03, falling back step by step.

    Contents: projections in ``latents_dir`` (``target`` picks one by name, else the first
    ``n_targets``); random latents when there are none. Styles: photos in ``styles_dir``
    (aligned and projected into ``work_dir``, reused on re-runs); otherwise other projections
    in ``latents_dir``; otherwise ``n_styles`` random latents.
    """
    notes: list[str] = []
    targets, others, stand = _pick_targets(G, latents_dir, target, n_targets, seed, notes)
    photos: dict[str, Path] = {}
    styles: dict[str, Any] = {}
    sdir = Path(styles_dir) if styles_dir else None
    if sdir is not None and sdir.is_dir():
        styles, photos = _references(G, sdir, Path(work_dir), project_steps, progress, project_options)
        notes.append(f"styles: {len(styles)} photo(s) from {sdir} ({', '.join(styles) or 'none usable'}), "
                     f"projected into {Path(work_dir) / 'latents'}")
    where = f"in {sdir}" if sdir is not None else "(no style photo folder found)"
    if not styles and others:
        styles = dict(list(others.items())[:n_styles])
        notes.append(f"styles: no photos {where}; using other projections {list(styles)}")
    random_styles = not styles
    if random_styles:
        w = random_latents(G, n_styles, seed=seed + 1000)
        styles = {f"random_style_{i}": w[i:i + 1] for i in range(n_styles)}
        notes.append(f"styles: no photos {where} and no other projections; {n_styles} random latents stand in")
    random_for = (("targets",) if stand else ()) + (("styles",) if random_styles else ())
    return EditInputs(targets=targets, references={"styles": styles}, photos=photos, notes=tuple(notes),
                      stand_ins=bool(random_for), stand_in_for=random_for)


def expression_inputs(G: torch.nn.Module, *, latents_dir: Any = "out/latents",
                      expressions_dir: Any = "data/expressions", work_dir: Any = "out/expressions",
                      emotions: Sequence[str] | None = None, target: str | None = None, n_targets: int = 1,
                      project_steps: int = 500, seed: int = 0, progress: bool = True,
                      **project_options: Any) -> EditInputs:
    """Targets and reference emotions for notebook 04.

    References are the photos of :func:`expression_photos` (``<emotion>/`` folders or flat files
    named after the emotion, such as ``Happy copy.jpg``; any case), aligned and projected into
    ``work_dir/<emotion>/``, reused on re-runs. ``references`` is keyed by emotion label, the
    neutral one first. Targets as in :func:`style_inputs`.

    Args:
        emotions: which emotions, the neutral one first (any case and form: "Happy",
            "happiness"); None or empty: every emotion found among the photos, "neutral" first
            (:data:`EMOTIONS` when there are no photos). An emotion without photos gets a random
            latent (its delta is then meaningless; noted, ``stand_ins`` True).
    """
    from .data import emotion_label

    root = Path(expressions_dir) if expressions_dir else None
    groups = expression_photos(root) if root is not None else {}
    if emotions:
        labels = [emotion_label(e) or str(e) for e in emotions]
    elif groups:
        labels = list(groups) if "neutral" in groups else ["neutral", *groups]
    else:
        labels = list(EMOTIONS)
    labels = list(dict.fromkeys(labels))
    if len(labels) < 2:
        raise InputError(f"emotions: expected the neutral one and at least one more, e.g. ('neutral', 'happy'); "
                         f"got {labels} (photos found for: {sorted(groups) or 'none'})")
    notes: list[str] = []
    targets, _, stand = _pick_targets(G, latents_dir, target, n_targets, seed, notes)
    refs: dict[str, dict[str, Any]] = {}
    photos: dict[str, Path] = {}
    missing, used = [], []
    for k, emo in enumerate(labels):
        found: dict[str, Any] = {}
        files = groups.get(emo, [])
        if files:
            found, aligned = _references(G, files, Path(work_dir) / _safe_name(emo), project_steps, progress,
                                         project_options)
            if aligned:
                photos[emo] = next(iter(aligned.values()))
                used.append(f"{emo} ({', '.join(p.name for p in files)})")
        if not found:
            missing.append(emo)
            w = random_latents(G, 1, seed=seed + 2000 + k)
            found = {f"random_{emo}": w}
        refs[emo] = found
    if used:
        notes.append(f"references: photos from {root}: " + "; ".join(used))
    if missing:
        where = f"in {root}" if root is not None else "(no expression photo folder found)"
        notes.append(f"references: no usable photos for {missing} {where} (photos found for: "
                     f"{sorted(groups) or 'none'}); random latents stand in, so those deltas are meaningless")
    random_for = (("targets",) if stand else ()) + tuple(missing)
    return EditInputs(targets=targets, references=refs, photos=photos, notes=tuple(notes), stand_ins=bool(random_for),
                      stand_in_for=random_for)


# ----------------------------------------------------------------------------------------
# Latent files (command line)
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SavedLatents:
    """W+ latents read by :func:`load_latents`.

    Attributes:
        wplus: (N, n_latent, D) float32.
        noises: per-layer noise maps (N, 1, r, r), or None (render with G's buffers).
        names: per-latent names.
        weights_sha256: the generator they belong to, when recorded.
        weights_path: the generator file, when recorded.
        path: the file read.
    """

    wplus: torch.Tensor
    noises: list[torch.Tensor] | None
    names: list[str]
    weights_sha256: str | None
    weights_path: str | None
    path: Path


def _edit_meta_path(path: Path) -> Path:
    return path.with_name(path.stem + ".edit.json")


def load_latents(path: "str | os.PathLike[str]") -> SavedLatents:
    """Read W+ latents from a saved :class:`~facelib.project.Projection`, a ``.pt`` holding
    ``{"wplus": tensor, ...}`` (e.g. written by :func:`save_latents`) or a bare tensor.

    Files are read with ``weights_only=True``. ``(n_latent, D)`` tensors become a batch of 1.

    Raises:
        CheckpointError: missing or unreadable file, or no W+ tensor in it.
    """
    from .weights import safe_torch_load

    path = Path(path)
    data = safe_torch_load(path)
    meta: dict[str, Any] = {}
    sidecar = path.with_suffix(".json")
    edit_meta = _edit_meta_path(path)
    for mp in (sidecar, edit_meta):
        if mp.is_file():
            try:
                loaded = json.loads(mp.read_text())
            except (OSError, ValueError) as e:
                raise CheckpointError(mp, f"unreadable metadata ({e})") from None
            if isinstance(loaded, dict):
                meta.update(loaded)
    if torch.is_tensor(data):
        wplus, tensors = data, {}
    elif isinstance(data, Mapping) and torch.is_tensor(data.get("wplus")):
        wplus, tensors = data["wplus"], data
    else:
        kind = type(data).__name__
        keys = f" with keys {sorted(map(str, data))[:8]}" if isinstance(data, Mapping) else ""
        raise CheckpointError(path, f"no W+ latents: expected a projection, {{'wplus': tensor}} or a tensor, "
                                    f"found a {kind}{keys}")
    if not wplus.is_floating_point() or wplus.ndim not in (2, 3):
        raise CheckpointError(path, f"W+ must be a float tensor (n_latent, D) or (N, n_latent, D), "
                                    f"found {wplus.dtype} {tuple(wplus.shape)}")
    wplus = (wplus if wplus.ndim == 3 else wplus[None]).detach().float().cpu()
    if wplus.shape[0] == 0:
        raise CheckpointError(path, f"holds an empty batch of latents {tuple(wplus.shape)}")
    if not torch.isfinite(wplus).all():
        raise CheckpointError(path, "W+ contains NaN or inf values")
    noises: list[torch.Tensor] | None = []
    while f"noise_{len(noises)}" in tensors:
        nz = tensors[f"noise_{len(noises)}"]
        if not torch.is_tensor(nz) or nz.ndim != 4 or nz.shape[1] != 1 or nz.shape[0] not in (1, wplus.shape[0]) \
                or nz.shape[2] != nz.shape[3]:
            raise CheckpointError(path, f"noise map 'noise_{len(noises)}' has shape "
                                        f"{tuple(getattr(nz, 'shape', ()))}, expected (1 or {wplus.shape[0]}, 1, r, r)")
        if not torch.isfinite(nz.float()).all():
            raise CheckpointError(path, f"noise map 'noise_{len(noises)}' contains NaN or inf values")
        noises.append(nz.detach().float().cpu())
    if not noises:
        noises = None
    names = meta.get("names") if isinstance(meta.get("names"), list) else None
    if names is None or len(names) != wplus.shape[0]:
        names = [path.stem] if wplus.shape[0] == 1 else [f"{path.stem}_{i}" for i in range(wplus.shape[0])]
    names = [str(n) if n else f"{path.stem}_{i}" for i, n in enumerate(names)]
    cfg = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    wpath = meta.get("weights_path") or meta.get("weights") or cfg.get("weights_path") or cfg.get("weights")
    return SavedLatents(wplus=wplus, noises=noises, names=names, weights_sha256=meta.get("weights_sha256"),
                        weights_path=str(wpath) if isinstance(wpath, (str, os.PathLike)) else None, path=path)


def save_latents(path: "str | os.PathLike[str]", wplus: torch.Tensor, *, noises: Sequence[torch.Tensor] | None = None,
                 **meta: Any) -> Path:
    """Write ``{"wplus": (N, n_latent, D), "noise_k": ...}`` to ``path`` (readable by :func:`load_latents`)
    and ``meta`` (JSON values: how the latents were made, ``weights_sha256``, ...) to ``<stem>.edit.json``.

    Both files are written atomically. Returns the tensor file's path.
    """
    path = Path(path)
    if path.suffix == ".json":
        raise InputError(f"{path}: give the tensor file's path (.pt); the metadata is written beside it")
    w = _wplus_of(wplus, "wplus").detach().float().cpu()
    w = (w if w.ndim == 3 else w[None]).contiguous()
    tensors: dict[str, torch.Tensor] = {"wplus": w}
    for k, nz in enumerate(noises or []):
        tensors[f"noise_{k}"] = nz.detach().float().cpu().contiguous()
    with atomic_path(path) as tmp:
        torch.save(tensors, tmp)
    with atomic_path(_edit_meta_path(path)) as tmp:
        tmp.write_text(json.dumps({"format": "facelib.edit", **meta}, indent=1, default=str))
    return path


def generator_for(latents: Sequence[SavedLatents], weights: "str | os.PathLike[str] | None" = None, *,
                  device: Any = None) -> tuple[torch.nn.Module, str]:
    """The generator that rendered ``latents``: ``weights`` if given, else the one they record.

    Looks, in order, at ``weights``; a generator path recorded with the latents; the small
    untrained smoke generator when the recorded SHA-256 is its fingerprint; and generator files
    under ``data/`` (:func:`facelib.data.locate`) whose SHA-256 matches the recorded one.

    Returns:
        (generator in eval mode, a description of where it came from).
    Raises:
        DependencyError: none found (the message says what was recorded and how to pass ``--weights``).
    """
    from .weights import file_sha256, load_generator

    if weights:
        return load_generator(weights, device=device), f"generator {weights}"
    for lat in latents:
        if lat.weights_path and Path(lat.weights_path).is_file():
            return (load_generator(lat.weights_path, device=device),
                    f"generator {lat.weights_path} (recorded in {lat.path.name})")
    shas = [lat.weights_sha256 for lat in latents if lat.weights_sha256]
    if shas and shas[0].startswith("smoke-"):
        from .session import smoke_generator

        for seed in range(4):
            G = smoke_generator(seed, device)
            if G.weights_sha256 == shas[0]:
                log.warning("the latents were made with the small untrained smoke generator (seed %d); "
                            "images are not faces", seed)
                return G, f"untrained smoke generator (seed {seed})"
    if shas:
        try:
            from .data import locate

            for found in locate().generators:
                if file_sha256(found.path) == shas[0]:
                    return load_generator(found.path, device=device), f"generator {found.path} (SHA-256 match)"
        except (OSError, DependencyError) as e:  # a broken data folder must not hide the real message
            log.warning("searching data/ for the generator failed: %s", e)
    recorded = f"they record generator SHA-256 {shas[0][:16]}..." if shas else "they record no generator"
    raise DependencyError(f"{', '.join(str(l.path) for l in latents)}: which generator? {recorded}, and no matching "
                          "file was found under data/; pass --weights G.pt")
