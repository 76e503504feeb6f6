"""Progress bars for long work: a tqdm text bar, or a notebook widget that leaves text behind.

A low-level module (imports nothing of facelib): alignment, optimisation and edits use
:func:`progress_bar`; :mod:`facelib.widgets` re-exports it. IPython and ipywidgets are
imported only when a notebook bar is actually made.
"""
from __future__ import annotations

import os
from typing import Any

from tqdm.std import tqdm as std_tqdm

__all__ = ["progress_bar", "in_kernel"]

_BAR_CLASS: Any = None


def _notebook_bar_class() -> Any:
    """tqdm's notebook bar, changed so that closing it replaces the widget by its last text line."""
    global _BAR_CLASS
    if _BAR_CLASS is not None:
        return _BAR_CLASS
    from IPython.display import display  # ipywidgets/IPython only when a notebook bar is made
    from tqdm.notebook import tqdm_notebook

    class TextWhenDoneBar(tqdm_notebook):  # type: ignore[misc, valid-type]
        """A widget while running; its final text line (or nothing, with ``leave=False``) once closed."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._handle = None
            kwargs["display"] = False
            super().__init__(*args, **kwargs)
            if not self.disable and self.delay <= 0:
                self._show()

        def _show(self) -> None:
            self._handle = display(self.container, display_id=True)
            self.displayed = True

        def display(self, *args: Any, check_delay: bool = True, **kwargs: Any) -> None:
            super().display(*args, check_delay=False, **kwargs)
            if check_delay and self.delay > 0 and not self.displayed:
                self._show()

        def close(self) -> None:
            if self.disable or getattr(self, "_as_text", False):
                return
            super().close()
            self._as_text = True
            if self._handle is not None:
                d = dict(self.format_dict)
                d["ncols"] = 80
                unfinished = bool(self.total) and self.n < self.total
                text = std_tqdm.format_meter(**d) if self.leave or unfinished else ""
                self._handle.update({"text/plain": text}, raw=True)
            self.container.close()  # not shown any more: release the widget model

    _BAR_CLASS = TextWhenDoneBar
    return _BAR_CLASS


def in_kernel() -> bool:
    """True inside a live IPython kernel (a notebook), False in a terminal or a script."""
    try:
        from IPython import get_ipython  # optional: only notebooks have it
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and getattr(ip, "kernel", None) is not None


def progress_bar(iterable: Any = None, **kwargs: Any) -> Any:
    """A tqdm progress bar for long work (the arguments of ``tqdm.tqdm``).

    In a notebook kernel a person uses, a progress widget while the work runs, replaced by
    its final text line when the bar closes (nothing with ``leave=False``), so a saved
    notebook holds text and never a widget whose model is gone ("Error displaying widget:
    model not found" after reopening). In a terminal, in headless runs
    (``FACELIB_HEADLESS``, as ``python -m facelib demo`` sets) and without ipywidgets:
    tqdm's text bar.
    """
    cls = std_tqdm
    if in_kernel() and not os.environ.get("FACELIB_HEADLESS"):
        try:
            cls = _notebook_bar_class()
        except ImportError:  # no ipywidgets: text
            cls = std_tqdm
    return cls(iterable, **kwargs)
