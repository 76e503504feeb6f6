"""Edits in W+: per-row masks, style mixing, expression deltas, rendering.

A W+ latent holds one style row per generator layer (``n_latent`` rows, 18 at 1024 px). Row
``r`` drives the layers of resolution about ``4 * 2 ** (r // 2)`` px, so low rows set pose and
face shape, middle rows features, high rows colour and fine texture (Karras et al. 2019, the
StyleGAN style-mixing figure). Every edit here takes a *row mask* (:class:`LayerMask`, a row
list, a string such as ``"9-17"`` or a weight vector) saying which rows it touches:

* :func:`mix_styles`: rows of ``style`` replace (or, with ``strength < 1``, interpolate towards)
  those of ``content``;
* :func:`expression_delta` / :func:`apply_delta`: ``target + strength * mask * (emotion - neutral)``;
* :func:`render`: W+ latents to images, in chunks.

Row numbers in masks are exact; *named presets* (``"coarse"``, ``"fine"``, ``"style"``,
``"expression"``, emotion names) are written for an 18-row generator and carried over to other
sizes band by band (see :meth:`LayerMask.scaled`). Measuring what each row does is
:func:`facelib.row_measure.row_effects`; the notebook tables are in :mod:`facelib.tables`, their
inputs in :mod:`facelib.edit_inputs`, latent files in :mod:`facelib.latents`.
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence, Union

import numpy as np
import torch

from .errors import InputError, RangeError, ShapeError
from .progress import progress_bar as tqdm
from .tuning import as_generator

__all__ = [
    "REFERENCE_N_LATENT",
    "PRESETS",
    "EXPRESSION_MASKS",
    "EMOTIONS",
    "row_bands",
    "LayerMask",
    "MaskSpec",
    "as_wplus",
    "check_strength",
    "mix_styles",
    "expression_delta",
    "apply_delta",
    "render",
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
#: :func:`facelib.row_effects`.
EXPRESSION_MASKS: dict[str, str] = {
    "happy": "1-17",
    "sad": "1-17",
    "fear": "1-17",
}

#: The report's reference emotions, in its table's column order.
EMOTIONS: tuple[str, ...] = ("neutral", "happy", "sad", "fear")

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

def as_wplus(x: Any, name: str) -> torch.Tensor:
    """The W+ tensor of ``x``: a tensor (n_latent, D) / (N, n_latent, D), or anything with a
    ``.wplus`` tensor (a Projection), checked to be a 2-D or 3-D float tensor (returned as is).

    Raises:
        InputError: not a tensor, or not floating point; ShapeError: not 2-D or 3-D.
    """
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


def check_strength(value: Any, name: str = "strength") -> float:
    """``value`` as a float; RangeError unless it is a finite number (bools refused)."""
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
    c = as_wplus(content, "content")
    s = as_wplus(style, "style")
    c3, s3, batched = _pair(c, s, "content", "style")
    mask = LayerMask.coerce(rows, c3.shape[1], name="rows")
    k = check_strength(strength)
    w = (mask.tensor(device=c3.device, dtype=c3.dtype) * k)[:, None]  # [L, 1]
    out = torch.lerp(c3, s3, w.expand(c3.shape[1], c3.shape[2]))  # [N, L, D]
    return out if batched else out[0]


def _stack_latents(x: Any, name: str) -> torch.Tensor:
    """(K, n_latent, D) from a tensor, a Projection, or a sequence of those."""
    if torch.is_tensor(x) or hasattr(x, "wplus"):
        w = as_wplus(x, name)
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
    t = as_wplus(target, "target")
    d = as_wplus(delta, "delta")
    t3, d3, batched = _pair(t, d, "target", "delta")
    m = LayerMask.coerce(mask, t3.shape[1], name="mask")
    k = check_strength(strength)
    w = (m.tensor(device=t3.device, dtype=t3.dtype) * k)[None, :, None]  # [1, L, 1]
    out = t3 + w * d3
    return out if batched else out[0]


# ----------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------

def _noise_for(noise: Any, index: slice) -> Any:
    """Select the batch entries ``index`` of a per-layer noise list (batch-1 maps broadcast)."""
    if noise is None or isinstance(noise, str):
        return noise
    return [None if nz is None else (nz if nz.shape[0] == 1 else nz[index]) for nz in noise]


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

    G = as_generator(G, wplus)  # a one-photo Tuning (or a Projection carrying one) renders through its tuned generator
    if batch_size < 1:
        raise InputError(f"batch_size: expected >= 1, got {batch_size}")
    w = as_wplus(wplus, "wplus")
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

