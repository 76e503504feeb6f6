"""ipywidgets factories for the notebooks (the only module that imports ipywidgets).

Each factory returns ``(widget, getter)``: display the widget, call the getter to read the
current value in the form the facelib function wants (a config dataclass, a W+ row mask, a
``range`` of rows, ...). ipywidgets is imported inside the functions, so ``import facelib``
never needs it; widgets can be built and read without a running kernel (that is how they
are tested).

Example (in a notebook cell)::

    box, get_config = facelib.widgets.config_widgets(ProjectConfig(steps=STEPS), exclude=["seed"])
    display(box)
    ...
    result = facelib.project(G, targets, config=get_config())

Controls never fire on every step of a drag or on every keystroke (sliders and text boxes
update on release / Enter). Work that takes a while is tied to its controls with
:func:`preview_panel`: it recomputes on release when one computation is quick, and otherwise
waits for its Run button; the caption under the image always says which settings made it.
Progress bars of long work come from :func:`progress_bar`: a widget while it runs in a live
notebook, its final text line once it is done, so a saved notebook never holds a progress
widget whose model is gone.
"""
from __future__ import annotations

import dataclasses
import html
import io
import json
import os
import sys
import time
import types
import typing
from typing import Any, Callable, Mapping, Sequence

from ._io import atomic_path
from .errors import DependencyError, InputError
from .progress import progress_bar

__all__ = [
    "config_widgets",
    "row_checkboxes",
    "row_range_slider",
    "strength_slider",
    "image_grid_output",
    "progress_callback",
    "choice_dropdown",
    "tuning_toggle",
    "live_session",
    "preview_panel",
    "describe_settings",
    "progress_bar",
    "enable_saved_widget_state",
]


def _ipywidgets():
    try:
        import ipywidgets
    except ImportError as e:
        raise DependencyError("the interactive controls need ipywidgets: pip install ipywidgets") from e
    return ipywidgets


def live_session() -> bool:
    """True inside a Jupyter session a person is using (not a papermill / nbclient run).

    Jupyter Server sets ``JPY_SESSION_NAME`` for the kernels it starts; Kaggle and Colab
    set ``KAGGLE_KERNEL_RUN_TYPE=Interactive`` / ``COLAB_RELEASE_TAG``. Headless runs set none
    of these (``KAGGLE_KERNEL_RUN_TYPE`` is "Batch" for a committed Kaggle run).
    """
    if os.environ.get("PAPERMILL_EXECUTION") or os.environ.get("FACELIB_HEADLESS"):
        return False
    return bool(os.environ.get("JPY_SESSION_NAME")
                or os.environ.get("KAGGLE_KERNEL_RUN_TYPE") == "Interactive"
                or os.environ.get("COLAB_RELEASE_TAG"))


def _style() -> dict[str, str]:
    return {"description_width": "initial"}


def _field_type(tp: Any) -> tuple[Any, bool]:
    """(base type, optional) of a dataclass field annotation (strings resolved loosely)."""
    if isinstance(tp, str):
        text = tp.replace(" ", "")
        optional = "None" in text.split("|") or text.startswith("Optional[")
        parts = [p for p in text.replace("Optional[", "").rstrip("]").split("|") if p != "None"]
        base = {"bool": bool, "int": int, "float": float, "str": str}.get(parts[0]) if len(parts) == 1 else None
        return base, optional
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        return (args[0] if len(args) == 1 else None), optional
    return tp, False


def config_widgets(config: Any, *, exclude: Sequence[str] = (), choices: Mapping[str, Sequence[Any]] | None = None,
                   ranges: Mapping[str, tuple[float, float]] | None = None,
                   descriptions: Mapping[str, str] | None = None) -> tuple[Any, Callable[[], Any]]:
    """Controls for every field of a config, and a getter that rebuilds the config.

    Args:
        config: a dataclass instance (e.g. ``ProjectConfig(steps=300)``), a dataclass type
            (its defaults are used), or a plain dict of literals.
        exclude: field names to leave out (they keep their value).
        choices: field -> allowed values; shown as a dropdown.
        ranges: numeric field -> (min, max); shown as a slider instead of a text box.
        descriptions: field -> label (default: the field name).
    Returns:
        ``(widget, getter)``: a VBox of controls; ``getter()`` returns a new config of the same
        type (a dataclass is rebuilt with ``dataclasses.replace``, so its own validation runs
        and a bad value raises its error) or a new dict.
        Field types: bool -> Checkbox, int -> IntText / IntSlider, float -> FloatText /
        FloatSlider, str -> Text / Dropdown; ``X | None`` fields show an empty text box for
        None. Fields of other types are left out and keep their value.
    Raises:
        InputError: ``config`` is neither a dataclass nor a dict.
    """
    W = _ipywidgets()
    choices = dict(choices or {})
    ranges = dict(ranges or {})
    descriptions = dict(descriptions or {})
    if isinstance(config, type) and dataclasses.is_dataclass(config):
        config = config()
    if dataclasses.is_dataclass(config):
        try:
            hints = typing.get_type_hints(type(config))
        except Exception:  # unresolvable annotations: fall back to the raw strings / values
            hints = {}
        fields = [(f.name, hints.get(f.name, f.type), getattr(config, f.name)) for f in dataclasses.fields(config)]
    elif isinstance(config, Mapping):
        fields = [(k, type(v) if v is not None else None, v) for k, v in config.items()]
    else:
        raise InputError(f"config: expected a dataclass or a dict, got {type(config).__name__}")

    controls: dict[str, tuple[Any, Callable[[Any], Any]]] = {}
    for name, tp, value in fields:
        if name in exclude:
            continue
        label = descriptions.get(name, name)
        base, optional = _field_type(tp)
        if base is None and value is not None:
            base = type(value)
        if name in choices:
            opts = list(choices[name])
            w = W.Dropdown(options=[(str(o), o) for o in opts], value=value if value in opts else opts[0],
                           description=label, style=_style())
            controls[name] = (w, lambda v: v)
        elif base is bool and isinstance(value, bool):
            controls[name] = (W.Checkbox(value=value, description=label, indent=False), bool)
        elif base is int and isinstance(value, int) and not isinstance(value, bool):
            if name in ranges:
                lo, hi = (int(x) for x in ranges[name])
                w = W.IntSlider(value=value, min=lo, max=hi, description=label, continuous_update=False,
                                style=_style())
            else:
                w = W.IntText(value=value, description=label, continuous_update=False, style=_style())
            controls[name] = (w, int)
        elif base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            if name in ranges:
                lo, hi = (float(x) for x in ranges[name])
                w = W.FloatSlider(value=float(value), min=lo, max=hi, step=(hi - lo) / 100, description=label,
                                  continuous_update=False, readout_format=".3g", style=_style())
            else:
                w = W.FloatText(value=float(value), description=label, continuous_update=False, style=_style())
            controls[name] = (w, float)
        elif base in (int, float, str) and optional and value is None:
            w = W.Text(value="", placeholder="None", description=label, continuous_update=False, style=_style())
            controls[name] = (w, lambda v, b=base: None if str(v).strip() in ("", "None") else b(v))
        elif base is str and isinstance(value, str):
            conv = (lambda v: None if str(v).strip() in ("", "None") else str(v)) if optional else str
            w = W.Text(value=value, placeholder="None" if optional else "", description=label,
                       continuous_update=False, style=_style())
            controls[name] = (w, conv)
        # other types (tuples, tensors, modules) are not editable here and keep their value
    box = W.VBox([w for w, _ in controls.values()])
    original = config

    def getter() -> Any:
        values = {}
        for name, (w, conv) in controls.items():
            try:
                values[name] = conv(w.value)
            except (TypeError, ValueError) as e:
                raise InputError(f"{name}: cannot use {w.value!r} ({e})") from None
        if dataclasses.is_dataclass(original):
            return dataclasses.replace(original, **values)
        return {**dict(original), **values}

    getter.fields = tuple(controls)  # type: ignore[attr-defined]  # the edited fields, for describe_settings
    return box, getter


def _check_rows(n_latent: int) -> int:
    if isinstance(n_latent, bool) or not isinstance(n_latent, int) or n_latent < 1:
        raise InputError(f"n_latent: expected a positive int (W+ rows, e.g. 18 at 1024 px), got {n_latent!r}")
    return n_latent


def row_checkboxes(n_latent: int, mask: "Sequence[float] | Sequence[bool] | None" = None, *,
                   description: str = "W+ rows") -> tuple[Any, Callable[[], list[float]]]:
    """One checkbox per W+ row (row 0 = coarsest layer), e.g. to switch rows of a delta on or off.

    Args:
        n_latent: number of W+ rows (``G.n_latent``; 18 at 1024 px).
        mask: (n_latent,) initial values in [0, 1] (row on where > 0.5); default all on.
        description: label above the boxes.
    Returns:
        ``(widget, getter)``; ``getter()`` gives the mask as a list of n_latent floats (0.0 / 1.0),
        ready for ``torch.tensor(getter())``.
    Raises:
        InputError: bad ``n_latent`` or a mask of the wrong length.
    """
    W = _ipywidgets()
    n = _check_rows(n_latent)
    values = [1.0] * n if mask is None else [float(v) for v in mask]
    if len(values) != n:
        raise InputError(f"mask: expected {n} values (one per W+ row), got {len(values)}")
    boxes = [W.Checkbox(value=v > 0.5, description=str(i), indent=False,
                        layout=W.Layout(width="auto")) for i, v in enumerate(values)]
    widget = W.VBox([W.Label(description), W.HBox(boxes, layout=W.Layout(flex_flow="row wrap"))])

    def getter() -> list[float]:
        return [1.0 if b.value else 0.0 for b in boxes]

    return widget, getter


def row_range_slider(n_latent: int, value: "range | tuple[int, int] | None" = None, *,
                     description: str = "W+ rows") -> tuple[Any, Callable[[], range]]:
    """A two-handle slider selecting a contiguous block of W+ rows (e.g. ``range(9, 18)`` for colour/style).

    Args:
        n_latent: number of W+ rows.
        value: initial rows as a ``range`` or a half-open ``(start, stop)`` pair; default all rows.
        description: label.
    Returns:
        ``(widget, getter)``; ``getter()`` gives a ``range(start, stop)`` (stop exclusive). The
        slider itself shows the inclusive first and last row.
    Raises:
        InputError: bad ``n_latent`` or rows outside ``[0, n_latent)`` / an empty range.
    """
    W = _ipywidgets()
    n = _check_rows(n_latent)
    if value is None:
        start, stop = 0, n
    elif isinstance(value, range):
        start, stop = value.start, value.stop
    else:
        start, stop = (int(v) for v in value)
    if not (0 <= start < stop <= n):
        raise InputError(f"value: expected rows with 0 <= start < stop <= {n}, got ({start}, {stop})")
    slider = W.IntRangeSlider(value=(start, stop - 1), min=0, max=n - 1, step=1, description=description,
                              continuous_update=False, style=_style())

    def getter() -> range:
        lo, hi = slider.value
        return range(int(lo), int(hi) + 1)

    return slider, getter


def strength_slider(value: float = 1.0, *, min: float = 0.0, max: float = 2.0, step: float = 0.05,
                    description: str = "strength") -> tuple[Any, Callable[[], float]]:
    """A slider for an edit strength (the factor a W+ delta is multiplied by).

    Returns:
        ``(widget, getter)``; ``getter()`` gives the float value.
    Raises:
        InputError: ``value`` outside ``[min, max]`` or ``min >= max``.
    """
    W = _ipywidgets()
    if not (min < max) or not (min <= value <= max):
        raise InputError(f"strength_slider: expected min < max and min <= value <= max, got {min}, {value}, {max}")
    slider = W.FloatSlider(value=float(value), min=float(min), max=float(max), step=float(step),
                           description=description, continuous_update=False, readout_format=".2f",
                           style=_style())
    return slider, lambda: float(slider.value)


def tuning_toggle(available: bool, value: bool = False, *, description: str = "tuned generator",
                  missing: str = "no pivotal tuning for this face: run 02_projection with TUNE = True"
                  ) -> tuple[Any, Callable[[], bool]]:
    """A checkbox switching a preview between the plain and the pivotal-tuned generator
    (the ``tuned`` keyword of :mod:`facelib.previews`).

    Args:
        available: whether the preview has a tuning; without one the box is unticked and
            disabled, and its tooltip says ``missing``.
        value: ticked at first (only when ``available``).
    Returns:
        ``(widget, getter)``; ``getter()`` gives True only when the box is ticked and enabled.
    """
    W = _ipywidgets()
    box = W.Checkbox(value=bool(value and available), description=description, disabled=not available,
                     indent=False, tooltip="" if available else missing, layout=W.Layout(width="auto"))
    return box, lambda: bool(box.value and not box.disabled)


def choice_dropdown(options: Sequence[Any] | Mapping[str, Any], value: Any = None, *,
                    description: str = "") -> tuple[Any, Callable[[], Any]]:
    """A dropdown over ``options`` (a list, or a mapping label -> value); the getter gives the value.

    Raises:
        InputError: no options, or ``value`` is not one of them.
    """
    W = _ipywidgets()
    pairs = list(options.items()) if isinstance(options, Mapping) else [(str(o), o) for o in options]
    if not pairs:
        raise InputError(f"{description or 'choice_dropdown'}: no options to choose from")
    values = [v for _, v in pairs]
    if value is not None and value not in values:
        raise InputError(f"{description or 'value'}: {value!r} is not one of the options")
    dd = W.Dropdown(options=pairs, value=values[0] if value is None else value, description=description,
                    style=_style())
    return dd, lambda: dd.value


def image_grid_output(*, width: int | None = None) -> tuple[Any, Callable[[Any], None]]:
    """An area that shows one image (a grid) at a time, replacing the previous one.

    It is an ``ipywidgets.Image`` (plus a text line for anything that is not an image), not
    an ``Output`` widget: capturing output into a widget needs a front end to route it, and
    headless runners that imitate one (nbclient, papermill) can then wait forever.

    Args:
        width: display width in pixels (default: the image's own).
    Returns:
        ``(widget, show)``; ``show(image)`` displays a PIL image in the area, or the text of
        anything else (e.g. an error message) in place of the image.
    """
    W = _ipywidgets()
    image = W.Image(format="png", layout=W.Layout(display="none"))
    text = W.HTML(value="")
    box = W.VBox([image, text])

    def show(item: Any) -> None:
        if hasattr(item, "save") and hasattr(item, "size"):
            _set_image(image, item, width)
            text.value = ""
        else:
            image.layout.display = "none"
            text.value = f"<pre>{html.escape(str(item))}</pre>"

    return box, show


def progress_callback(total: int, *, description: str = "") -> tuple[Any, Callable[[int, int, Any], None]]:
    """A progress bar and an ``on_step(step, total, state)`` callback that advances it.

    Pass the callback as ``on_step=`` to :func:`facelib.project` (or any facelib optimisation).

    Returns:
        ``(widget, on_step)``.
    """
    W = _ipywidgets()
    bar = W.IntProgress(value=0, min=0, max=max(1, int(total)), description=description, style=_style())

    def on_step(step: int, total_steps: int, state: Any = None) -> None:
        bar.max = max(1, int(total_steps))
        bar.value = min(int(step), bar.max)

    return bar, on_step


__all__.append("direction_sliders")


def direction_sliders(names: Sequence[str], n_latent: int, *, rows: "Sequence[float] | None" = None,
                      limit: float = 3.0, step: float = 0.25,
                      description: str = "rows") -> tuple[Any, Callable[[], dict[str, Any]]]:
    """One strength slider per edit direction (in sigma units) plus one checkbox per W+ row.

    Args:
        names: direction names (``[d.name for d in directions]``), one slider each, starting at 0.
        n_latent: number of W+ rows for the row mask.
        rows: (n_latent,) initial row mask in [0, 1]; default all rows on.
        limit: sliders run from -limit to +limit.
        step: slider step.
        description: label of the row boxes.
    Returns:
        ``(widget, getter)``; ``getter()`` gives ``{"strengths": [float per direction],
        "mask": [0.0 / 1.0 per row]}``, the keywords of ``facelib.previews.DirectionPreview``.
    Raises:
        InputError: no names, ``limit <= 0`` or a bad row mask.
    """
    W = _ipywidgets()
    names = [str(n) for n in names]
    if not names:
        raise InputError("direction_sliders: no directions to make sliders for")
    if not limit > 0:
        raise InputError(f"direction_sliders: limit must be > 0, got {limit}")
    sliders = [W.FloatSlider(value=0.0, min=-float(limit), max=float(limit), step=float(step), description=n,
                             continuous_update=False, readout_format="+.2f", style=_style()) for n in names]
    rows_box, get_rows = row_checkboxes(n_latent, rows, description=description)
    widget = W.VBox([*sliders, rows_box])

    def getter() -> dict[str, Any]:
        return {"strengths": [float(s.value) for s in sliders], "mask": get_rows()}

    return widget, getter
# ----------------------------------------------------------------------------------------
# Controls tied to work: preview panels and progress bars
# ----------------------------------------------------------------------------------------

def _rows_text(on: Sequence[int]) -> str:
    """[1, 2, 3, 7] -> "1-3, 7"; [] -> "none"."""
    runs: list[list[int]] = []
    for i in sorted(on):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in runs) or "none"


def _value_text(value: Any, fields: Sequence[str] | None = None) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, range) and value.step == 1:
        return _rows_text(list(value))
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                          and v in (0, 1) for v in value):
        return _rows_text([i for i, v in enumerate(value) if v])  # a row mask such as row_checkboxes gives
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = list(fields) if fields else [f.name for f in dataclasses.fields(value)]
        return ", ".join(f"{n} {_value_text(getattr(value, n))}" for n in names)
    if isinstance(value, Mapping):
        names = list(fields) if fields else list(value)
        return ", ".join(f"{n} {_value_text(value[n])}" for n in names if n in value)
    return str(value)


def describe_settings(values: Mapping[str, Any], getters: Mapping[str, Callable[[], Any]] | None = None) -> str:
    """A one-line text of the settings a preview was computed with, e.g. "rows 9-17 · strength 0.5".

    Args:
        values: name -> value as the getters give it (a ``range`` or a 0/1 row mask is shown as
            rows "1-3, 7"; a config as its fields).
        getters: the getters that gave the values; a getter from :func:`config_widgets` limits a
            config to the fields it edits.
    """
    getters = getters or {}
    parts = []
    for name, value in values.items():
        fields = getattr(getters.get(name), "fields", None)
        text = _value_text(value, fields)
        parts.append(text if dataclasses.is_dataclass(value) or isinstance(value, Mapping) else f"{name} {text}")
    return " · ".join(parts)


def _value_widgets(controls: Sequence[Any]) -> list[Any]:
    """The widgets holding values inside ``controls`` (containers are searched)."""
    found, stack = [], list(controls)[::-1]
    while stack:
        w = stack.pop()
        if hasattr(w, "children") and not hasattr(w, "value"):
            stack.extend(list(w.children)[::-1])
        elif hasattr(w, "observe") and hasattr(w, "value"):
            found.append(w)
    return found


def _png(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _set_image(widget: Any, image: Any, width: int | None) -> None:
    """Show a PIL image in an ``ipywidgets.Image`` at its own size (at most ``width`` pixels wide)."""
    widget.value = _png(image)
    widget.layout.width = f"{min(width, image.size[0]) if width else image.size[0]}px"
    widget.layout.max_width = "100%"
    widget.layout.display = ""


def preview_panel(compute: Callable[..., Any], controls: Mapping[str, tuple[Any, Callable[[], Any]]], *,
                  auto: bool | None = None, quick_seconds: float = 1.0, width: int | None = None,
                  describe: Callable[[Mapping[str, Any]], str] | None = None,
                  run_label: str = "Run") -> tuple[Any, Callable[[], bool]]:
    """Controls, a Run button, an image and its caption, tied together.

    ``compute(**{name: getter()})`` makes the image (a PIL image, e.g. a ``MixPreview`` /
    ``DeltaPreview`` / ``SwapPreview`` call). The controls never recompute on every step of a
    drag or key press: with "update on every change" ticked the image is recomputed when a
    control is released (sliders and text boxes of this module only report then); without it
    a change only marks the image as out of date and the Run button recomputes it once, for
    all the changes together. The caption under the image is written together with the image
    and names the settings that made it (and how long it took); after a change that is not
    computed yet it says so, and a failed computation removes the image and shows the error,
    so an image is never captioned with settings it was not made with.

    Args:
        compute: keyword arguments named as ``controls`` -> a PIL image.
        controls: name -> ``(widget, getter)`` as the factories of this module return them;
            shown in this order above the button.
        auto: True: recompute on every (released) change; False: only with the Run button,
            and nothing is computed before it is pressed, so building the panel never runs the
            work; None (default): compute once now and recompute on change only when that took
            at most ``quick_seconds``. The user can switch it with the checkbox.
        quick_seconds: the threshold for ``auto=None``.
        width: display width of the image in pixels (default: its own).
        describe: values -> caption text (default :func:`describe_settings`).
        run_label: the button's text.
    Returns:
        ``(panel, run)``: the VBox to display, and ``run()`` which computes now (as the button
        does) and returns True when an image was made.
    """
    W = _ipywidgets()
    if not controls:
        raise InputError("preview_panel: no controls given")
    getters = {name: g for name, (_, g) in controls.items()}
    say = describe or (lambda values: describe_settings(values, getters))
    button = W.Button(description=run_label, tooltip="compute the image for the current settings")
    follow = W.Checkbox(value=bool(auto), description="update on every change", indent=False,
                        layout=W.Layout(width="auto"))
    image = W.Image(format="png", layout=W.Layout(display="none"))
    caption = W.HTML(value="")
    state: dict[str, Any] = {"shown": None, "busy": False}

    def values() -> dict[str, Any]:
        return {name: g() for name, g in getters.items()}

    def set_caption(text: str, kind: str = "") -> None:
        color = {"stale": "#a15c00", "error": "#b00020", "busy": "#555"}.get(kind, "#222")
        caption.value = f'<span class="facelib-preview-caption" style="color:{color}">{html.escape(text)}</span>'
        caption.add_class("facelib-preview-caption")
        button.button_style = "warning" if kind == "stale" else ""

    def run(_button: Any = None) -> bool:
        if state["busy"]:
            return False
        state["busy"] = True
        button.disabled = True
        try:
            try:
                current = values()
            except Exception as e:  # a bad value in a text box: nothing to compute
                image.layout.display, state["shown"] = "none", None
                set_caption(f"cannot compute: {e}", "error")
                return False
            text = say(current)
            set_caption(f"computing: {text} ...", "busy")
            t0 = time.perf_counter()
            try:
                result = compute(**current)
                if not (hasattr(result, "save") and hasattr(result, "size")):
                    raise InputError(f"expected an image, got {str(result)[:200]}")
                _set_image(image, result, width)
            except Exception as e:  # noqa: BLE001 - shown in place of the image, never a stale image
                image.layout.display, state["shown"] = "none", None
                set_caption(f"failed for {text}: {type(e).__name__}: {e}", "error")
                return False
            state["shown"], state["seconds"] = text, time.perf_counter() - t0
            set_caption(f"{text} ({state['seconds']:.1f} s)")
            return True
        finally:
            state["busy"] = False
            button.disabled = False

    def changed(_change: Any = None) -> None:
        if follow.value:
            run()
            return
        try:
            now = say(values())
        except Exception as e:  # noqa: BLE001
            now = f"(cannot read the settings: {e})"
        if state["shown"] is None:
            set_caption(f"press {run_label} to compute: {now}", "stale")
        elif now != state["shown"]:
            set_caption(f"shown: {state['shown']}; changed to {now}: press {run_label} to update", "stale")
        else:
            set_caption(f"{state['shown']} ({state['seconds']:.1f} s)")

    if auto is False:
        changed()
    else:  # the first image now; with auto=None its time decides whether changes recompute at once
        t0 = time.perf_counter()
        ok = run()
        follow.value = bool(auto) or (ok and time.perf_counter() - t0 <= quick_seconds)
    for w in _value_widgets([w for w, _ in controls.values()]):
        w.observe(changed, names="value")
    button.on_click(run)
    follow.observe(lambda change: run() if change["new"] else changed(), names="value")
    panel = W.VBox([*(w for w, _ in controls.values()), W.HBox([button, follow]), image, caption])
    panel.add_class("facelib-preview")
    return panel, run


#: JupyterLab's setting (from the ipywidgets extension) that stores widget state in saved notebooks.
SAVE_STATE_SETTING = {"@jupyter-widgets/jupyterlab-manager:plugin": {"saveState": True}}


def enable_saved_widget_state(prefix: "str | os.PathLike[str] | None" = None) -> "os.PathLike[str]":
    """Make the JupyterLab of an environment save widget state with every notebook it saves.

    Without it a notebook saved with live controls shows "Error displaying widget: model not
    found" in their place once it is reopened without the kernel that made them. Writes (merges)
    ``<prefix>/share/jupyter/lab/settings/overrides.json``, which JupyterLab reads as the
    defaults of that environment (``make`` runs it for ``.venv``). In another JupyterLab the same
    is the menu item *Settings > Save Widget State Automatically*.

    Args:
        prefix: the environment (default: this interpreter's ``sys.prefix``).
    Returns:
        The path of ``overrides.json``.
    """
    from pathlib import Path

    lab = Path(prefix if prefix is not None else sys.prefix) / "share" / "jupyter" / "lab"
    path = lab / "settings" / "overrides.json"
    try:
        current = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError as e:
        raise InputError(f"{path}: not valid JSON ({e}); fix or remove it") from None
    if not isinstance(current, dict):
        raise InputError(f"{path}: expected a JSON object")
    for plugin, values in SAVE_STATE_SETTING.items():
        current[plugin] = {**current.get(plugin, {}), **values}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(current, indent=2) + "\n")
    return path
