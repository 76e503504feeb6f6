"""Interactive previews: callables that re-render a table when widgets change.

Each preview is built once from the inputs (rendering what does not change) and called with
the widget values: :class:`MixPreview` (style mixing), :class:`DeltaPreview` (expression
deltas), :class:`DirectionPreview` (semantic directions) and :class:`SwapPreview` (the face
swap). :meth:`Preview.watch` ties one to widgets without importing ipywidgets here; the widgets
themselves are built in :mod:`facelib.widgets`.
"""
from __future__ import annotations

import dataclasses

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from .directions import Direction, Directions, apply_direction, generator_of
from .edits import LayerMask, MaskSpec, apply_delta, as_wplus, check_strength, mix_styles, render
from .errors import InputError, check_shape
from .grids import make_grid, stamp
from .latents import SavedLatents, latents_for
from .swap import SwapConfig, face_swap, resolve_rows
from .tuning import tuned_generator

__all__ = ["Preview", "MixPreview", "DeltaPreview", "DirectionPreview", "SwapPreview"]


class Preview:
    """Base of the previews: ``preview(**settings)`` -> PIL image, re-drawn by :meth:`watch` when widgets change.

    Subclasses set :attr:`label` and implement ``__call__``. No ipywidgets import is needed here:
    :meth:`watch` only uses the ``observe`` / ``value`` / ``children`` attributes of the widgets.
    """

    label: str | None = None  # stamped on every table (smoke runs)
    G: nn.Module
    tuned_G: nn.Module | None = None

    def _set_generators(self, G: Any, latent: Any, tuning: Any) -> None:
        """:attr:`G`: the plain generator (a :class:`~facelib.tuning.Tuning`'s tuned copy when one is
        given as ``G``); :attr:`tuned_G`: the tuned generator of ``tuning`` or of the tuning
        ``latent`` carries, else None."""
        self.G = G.generator if hasattr(G, "generators") else G
        self.tuned_G = tuned_generator(G, latent, tuning=tuning)
        if self.tuned_G is self.G:
            self.tuned_G = None

    @property
    def has_tuning(self) -> bool:
        """True when the preview can render through a tuned generator (``tuned=True``)."""
        return self.tuned_G is not None

    def generator(self, tuned: bool | None = None) -> nn.Module:
        """The generator for one call: ``tuned`` True = the tuned one, False = the plain one,
        None = the tuned one when there is one.

        Raises:
            InputError: ``tuned=True`` without a tuning.
        """
        if tuned and self.tuned_G is None:
            raise InputError("tuned: this preview has no pivotal tuning (pass tuning=..., or a projection "
                             "carrying one)")
        return self.tuned_G if (tuned or tuned is None) and self.tuned_G is not None else self.G

    @staticmethod
    def _tuned_note(G: nn.Module, tuned_G: nn.Module | None) -> str:
        return ", tuned generator" if tuned_G is not None and G is tuned_G else ""

    def _labelled(self, grid: Any) -> Any:
        """``grid`` stamped with :attr:`label`, or unchanged without one."""
        if not self.label:
            return grid
        return stamp(grid, self.label)

    @staticmethod
    def _slider_rows(rows: Any) -> Any:
        """A (first, last) pair, as an ``IntRangeSlider`` gives it, -> ``range(first, last + 1)``; else ``rows``."""
        if isinstance(rows, tuple) and len(rows) == 2 and all(isinstance(v, int) for v in rows):
            return range(min(rows), max(rows) + 1)
        return rows

    def watch(self, show: Any, controls: Sequence[Any], settings: Callable[[], Mapping[str, Any]] | None = None,
              **getters: Any) -> None:
        """Show ``self(**settings(), **{name: getter()})`` now and again whenever a value in ``controls`` changes.

        The notebooks use :func:`facelib.widgets.preview_panel` instead, which adds a Run button
        for slow previews and a caption naming the settings of the image.

        Args:
            show: displays an image, e.g. the second item of ``facelib.widgets.image_grid_output()``.
            controls: widgets (containers are searched for their value widgets, e.g. a box of
                checkboxes).
            settings: optional zero-argument callable giving several keywords at once, e.g. the
                getter of ``facelib.widgets.direction_sliders`` (``{"strengths": [...], "mask": ...}``).
            getters: keyword -> zero-argument callable reading the value, e.g. the getters of
                ``facelib.widgets.row_range_slider`` / ``strength_slider``.
        """
        def update(_change: Any = None) -> None:
            try:
                values = dict(settings()) if settings is not None else {}
                values.update({k: g() for k, g in getters.items()})
                show(self(**values))
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
                 label: str | None = None, tuning: Any = None) -> None:
        self._set_generators(G, content, tuning)
        self.cell, self.label = cell, label
        self.content = latents_for(self.G, content, "content").one(0)
        self.styles = latents_for(self.G, styles, "styles")
        self._fixed: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, rows: Any = "style", strength: float = 1.0, tuned: bool | None = None):
        G = self.generator(tuned)
        mask = LayerMask.coerce(self._slider_rows(rows), G.n_latent, name="rows")
        k = check_strength(strength)
        if id(G) not in self._fixed:  # the content and the styles as they are, per generator
            self._fixed[id(G)] = (render(G, self.content.wplus, noise=self.content.noises)[0],
                                  render(G, self.styles.wplus, noise=self.styles.noises))
        content_image, style_images = self._fixed[id(G)]
        mixed = mix_styles(self.content.wplus[0], self.styles.wplus, rows=mask, strength=k)  # [S, L, D]
        images = render(G, mixed, noise=self.content.noises)
        grid = make_grid([[None] + list(style_images), [content_image] + list(images)],
                         cell=self.cell, row_labels=["style", "transferred"],
                         col_labels=[self.content.names[0]] + list(self.styles.names),
                         title=f"rows {mask} from the style, strength {k:g}{self._tuned_note(G, self.tuned_G)}")
        return self._labelled(grid)


class DeltaPreview(Preview):
    """``preview(mask="expression", strength=1.0)`` -> PIL table, one row per delta: target,
    the delta on every row (artefacts), the delta on the masked rows.

    ``delta``: one (n_latent, D) tensor or {name: tensor}; ``mask``: any mask form (e.g. the
    getter of ``facelib.widgets.row_checkboxes``).
    """

    def __init__(self, G: torch.nn.Module, target: Any, delta: "torch.Tensor | Mapping[str, torch.Tensor]", *,
                 cell: int = 256, label: str | None = None, tuning: Any = None) -> None:
        self._set_generators(G, target, tuning)
        self.cell, self.label = cell, label
        self.target = latents_for(self.G, target, "target").one(0)
        items = delta.items() if isinstance(delta, Mapping) else [("delta", delta)]
        self.deltas = {str(k): as_wplus(v, f"delta[{k!r}]").detach().float().cpu() for k, v in items}
        self._base: dict[int, torch.Tensor] = {}
        self._unmasked: dict[tuple[int, float], torch.Tensor] = {}

    def __call__(self, mask: MaskSpec = "expression", strength: float = 1.0, tuned: bool | None = None):
        G = self.generator(tuned)
        m = LayerMask.coerce(mask, G.n_latent, name="mask")
        k = check_strength(strength)
        if id(G) not in self._base:
            self._base[id(G)] = render(G, self.target.wplus, noise=self.target.noises)[0]
        if (id(G), k) not in self._unmasked:  # the every-row results change only with the strength
            self._unmasked = {(id(G), k): render(G, torch.cat([apply_delta(self.target.wplus, d, mask="all",
                                                                           strength=k) for d in self.deltas.values()]),
                                                 noise=self.target.noises)}
        edited = render(G, torch.cat([apply_delta(self.target.wplus, d, mask=m, strength=k)
                                      for d in self.deltas.values()]), noise=self.target.noises)
        rows = [[self._base[id(G)], u, e] for u, e in zip(self._unmasked[(id(G), k)], edited)]
        grid = make_grid(rows, cell=self.cell, row_labels=list(self.deltas),
                         col_labels=["target", "all rows", f"rows {m}"],
                         title=f"strength {k:g}{self._tuned_note(G, self.tuned_G)}")
        return self._labelled(grid)


class DirectionPreview(Preview):
    """``preview(strengths, mask)`` -> PIL image: the target and the target with every direction applied.

    ``strengths``: one value per direction, in units of its sigma; ``mask``: rows (any
    :class:`LayerMask` form; None = each direction's own rows). :meth:`watch` takes the getter of
    ``facelib.widgets.direction_sliders`` as ``settings``.

    Attributes:
        base: (3, H, W) rendering of the unedited target, in [-1, 1].
    """

    def __init__(self, G: Any, target: Any, directions: "Directions | Sequence[Direction]", *, cell: int = 256,
                 label: str | None = None, tuning: Any = None) -> None:
        self._set_generators(G, target, tuning)
        self.G = generator_of(self.G)
        self.directions = list(directions)
        self.cell, self.label = cell, label
        w = getattr(target, "wplus", target)
        self.wplus = (w if w.ndim == 3 else w[None])[:1].detach().float().cpu()
        noises = getattr(target, "noises", None)
        self.noises = [None if nz is None else nz[:1] for nz in noises] if noises is not None else None
        self._bases: dict[int, torch.Tensor] = {}
        self.base = self._base(self.generator())

    def _base(self, G: nn.Module) -> torch.Tensor:
        if id(G) not in self._bases:
            self._bases[id(G)] = render(G, self.wplus, noise=self.noises)[0]
        return self._bases[id(G)]

    def edited(self, strengths: Sequence[float], mask: MaskSpec = None) -> torch.Tensor:
        """The edited W+ (1, n_latent, D)."""
        strengths = list(strengths)
        if len(strengths) != len(self.directions):
            raise InputError(f"strengths: {len(strengths)} values for {len(self.directions)} directions")
        w = self.wplus
        for d, s in zip(self.directions, strengths):
            if s:
                w = apply_direction(w, d, float(s) * (d.sigma or 1.0), mask=mask)
        return w

    def __call__(self, strengths: Sequence[float], mask: MaskSpec = None, tuned: bool | None = None):
        G = self.generator(tuned)
        image = render(G, self.edited(strengths, mask), noise=self.noises)[0]
        said = ", ".join(f"{d.name} {float(s):+.1f}" for d, s in zip(self.directions, strengths) if s) or "no edit"
        rows = "own rows" if mask is None else f"rows {LayerMask.coerce(mask, G.n_latent)}"
        grid = make_grid([[self._base(G), image]], cell=self.cell, col_labels=["target", "edited"],
                         title=f"{said} (sigma units), {rows}{self._tuned_note(G, self.tuned_G)}")
        return self._labelled(grid)


class SwapPreview(Preview):
    """``preview(config=None, rows=None)`` -> PIL table (source / target / swap) of one pair.

    Runs :func:`facelib.swap.face_swap` (no progress bar) and caches results per settings, so
    moving a slider back is free. ``rows``: any row form, or a (first, last) pair as an
    ``IntRangeSlider`` gives it; ``config``: a :class:`~facelib.swap.SwapConfig` (e.g. the getter
    of ``facelib.widgets.config_widgets``). Use :meth:`watch` to tie it to widgets.

    Args (constructor):
        source: (N, 3, H, W) / (3, H, W) images in [-1, 1], or a Projection (its images); the
            first one is used.
        target: W+ (N, n_latent, D) / (n_latent, D), or a Projection / SavedLatents; the first
            one is used.
    """

    def __init__(self, G: nn.Module, id_net: nn.Module, source: Any, target: Any, *, cell: int = 192,
                 label: str | None = None, judge: bool = False, tuning: Any = None, **options: Any) -> None:
        self._set_generators(G, target, tuning)
        G = self.G
        self.id_net, self.cell, self.label, self.judge = id_net, cell, label, judge
        images = source.images if hasattr(source, "images") and hasattr(source, "wplus") else source
        if not torch.is_tensor(images):
            raise InputError(f"source: expected a (N, 3, H, W) tensor in [-1, 1] or a Projection, "
                             f"got {type(source).__name__}")
        images = images[None] if images.ndim == 3 else images
        check_shape("source", images, (None, 3, None, None))
        self.source = images.detach().float()[:1]
        w = as_wplus(target, "target").detach().float().cpu()
        w = w if w.ndim == 3 else w[None]
        check_shape("target", w, (None, G.n_latent, G.style_dim))
        noises = None if torch.is_tensor(target) else getattr(target, "noises", None)
        names = None if torch.is_tensor(target) else getattr(target, "names", None)
        names = list(names) if names is not None and len(names) == w.shape[0] else [None] * w.shape[0]
        first_noises = [nz.detach().float().cpu()[:1] for nz in noises] if noises else None
        self.target = SavedLatents(wplus=w[:1], noises=first_noises, names=names[:1], weights_sha256=None,
                                   weights_path=None, path=Path("."))
        self.options = options
        self._cache: dict[Any, Any] = {}

    def __call__(self, config: SwapConfig | None = None, rows: Any = None, tuned: bool | None = None):
        G = self.generator(tuned)
        rows = self._slider_rows(rows)
        r = resolve_rows(rows, G.n_latent) if rows is not None else None
        key = (config, r, id(G))
        if key not in self._cache:
            settings = {"rows": r} if r is not None else {}
            if config is not None:  # a config or keyword settings, not both
                config, settings = dataclasses.replace(config, **settings), {}
            result = face_swap(G, self.id_net, self.source, self.target, config=config,
                               progress=False, judge=self.judge, **settings, **self.options)
            cfg = result.config
            self._cache[key] = result.select(0).grid(
                self.source, cell=self.cell,
                title=f"rows {LayerMask.from_rows(cfg.rows, G.n_latent)}, id_weight {cfg.id_weight:g}, "
                      f"{cfg.steps} steps{self._tuned_note(G, self.tuned_G)}")
        return self._labelled(self._cache[key])
