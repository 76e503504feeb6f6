"""facelib.widgets: build the controls without a kernel and read them back through the getters."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest

from facelib import widgets as Wd
from facelib.errors import InputError

from .conftest import REPO

pytest.importorskip("ipywidgets", reason="the notebook controls need ipywidgets")


@dataclasses.dataclass(frozen=True)
class _Cfg:
    steps: int = 100
    lr: float = 0.1
    scheduler: str = "exp"
    gamma: float | None = None
    lpips: str | None = "auto"
    noise: bool = True
    rows: tuple = (1, 2)

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise InputError(f"steps: expected >= 0, got {self.steps}")


def _controls(box):
    return {w.description: w for w in box.children}


def test_config_widgets_roundtrip_dataclass() -> None:
    box, get = Wd.config_widgets(_Cfg(steps=7), exclude=["lr"], choices={"scheduler": ["exp", "cosine"]},
                                 ranges={"steps": (0, 50)})
    c = _controls(box)
    assert set(c) == {"steps", "scheduler", "gamma", "lpips", "noise"}  # tuples are not editable
    assert type(c["steps"]).__name__ == "IntSlider" and c["steps"].value == 7
    assert type(c["scheduler"]).__name__ == "Dropdown" and type(c["noise"]).__name__ == "Checkbox"
    assert get() == _Cfg(steps=7)
    c["steps"].value = 42
    c["scheduler"].value = "cosine"
    c["gamma"].value = "0.5"
    c["lpips"].value = ""
    c["noise"].value = False
    assert get() == _Cfg(steps=42, scheduler="cosine", gamma=0.5, lpips=None, noise=False)


def test_config_widgets_validation_and_bad_text() -> None:
    box, get = Wd.config_widgets(_Cfg, descriptions={"steps": "optimisation steps"})
    c = _controls(box)
    c["optimisation steps"].value = -3
    with pytest.raises(InputError, match="steps"):
        get()  # the dataclass's own check runs
    c["optimisation steps"].value = 3
    c["gamma"].value = "fast"
    with pytest.raises(InputError, match="gamma"):
        get()
    with pytest.raises(InputError, match="dataclass or a dict"):
        Wd.config_widgets([1, 2])


def test_config_widgets_with_project_config() -> None:
    from facelib.project import ProjectConfig

    box, get = Wd.config_widgets(ProjectConfig(steps=5), ranges={"lr": (0.001, 0.5)})
    c = _controls(box)
    c["steps"].value = 9
    c["lr"].value = 0.2
    assert get() == ProjectConfig(steps=9, lr=0.2)


def test_config_widgets_dict() -> None:
    box, get = Wd.config_widgets({"STEPS": 10, "NAME": "x", "FLAG": False})
    c = _controls(box)
    c["STEPS"].value = 11
    c["FLAG"].value = True
    assert get() == {"STEPS": 11, "NAME": "x", "FLAG": True}


def test_row_checkboxes() -> None:
    w, get = Wd.row_checkboxes(18)
    assert get() == [1.0] * 18
    mask = [0.0] + [1.0] * 17
    w, get = Wd.row_checkboxes(18, mask)
    boxes = w.children[1].children
    assert len(boxes) == 18 and [b.description for b in boxes[:3]] == ["0", "1", "2"]
    assert get() == mask
    boxes[5].value = False
    assert get()[5] == 0.0 and sum(get()) == 16
    with pytest.raises(InputError, match="18 values"):
        Wd.row_checkboxes(18, [1.0] * 17)
    with pytest.raises(InputError, match="n_latent"):
        Wd.row_checkboxes(0)


def test_row_range_slider_is_half_open() -> None:
    w, get = Wd.row_range_slider(18, range(9, 18))
    assert w.value == (9, 17) and (w.min, w.max) == (0, 17)
    assert get() == range(9, 18)
    w.value = (0, 0)
    assert get() == range(0, 1)
    assert Wd.row_range_slider(10)[1]() == range(0, 10)
    assert Wd.row_range_slider(10, (2, 5))[1]() == range(2, 5)
    with pytest.raises(InputError, match="start < stop"):
        Wd.row_range_slider(10, (5, 11))


def test_strength_dropdown_progress_output() -> None:
    w, get = Wd.strength_slider(0.5)
    w.value = 1.25
    assert get() == 1.25
    with pytest.raises(InputError):
        Wd.strength_slider(3.0)
    dd, pick = Wd.choice_dropdown({"a": 1, "b": 2}, value=2, description="image")
    assert pick() == 2
    dd.value = 1
    assert pick() == 1
    with pytest.raises(InputError, match="no options"):
        Wd.choice_dropdown([])
    bar, on_step = Wd.progress_callback(10)
    on_step(3, 20, None)
    assert (bar.value, bar.max) == (3, 20)
    out, show = Wd.image_grid_output(width=64)
    from PIL import Image

    import IPython.display

    shown = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(IPython.display, "display", lambda obj, *a, **k: shown.append(obj))
        show(Image.new("RGB", (128, 64), (9, 8, 7)))  # no kernel needed
        show(Image.new("RGB", (32, 16)))
        show("text")
    assert type(out).__name__ == "Output"
    # wider than 64 px: scaled to 64 px keeping the aspect; narrower: as is; other objects pass through
    assert [im.size for im in shown[:2]] == [(64, 32), (32, 16)] and shown[2] == "text"
    assert shown[0].getpixel((10, 10)) == (9, 8, 7)


def test_live_session(monkeypatch) -> None:
    for var in ("JPY_SESSION_NAME", "KAGGLE_KERNEL_RUN_TYPE", "COLAB_RELEASE_TAG", "PAPERMILL_EXECUTION",
                "FACELIB_HEADLESS"):
        monkeypatch.delenv(var, raising=False)
    assert not Wd.live_session()
    monkeypatch.setenv("JPY_SESSION_NAME", "nb.ipynb")
    assert Wd.live_session()
    monkeypatch.setenv("FACELIB_HEADLESS", "1")
    assert not Wd.live_session()
    monkeypatch.delenv("FACELIB_HEADLESS")
    monkeypatch.delenv("JPY_SESSION_NAME")
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    assert not Wd.live_session()
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    assert Wd.live_session()


def test_ipywidgets_only_imported_on_use() -> None:
    code = ("import sys, facelib, facelib.widgets, facelib.data, facelib.report, facelib.pipeline\n"
            "print('ipywidgets' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
    offenders = [p.name for p in (REPO / "facelib").glob("*.py") if p.name != "widgets.py"
                 and "import ipywidgets" in p.read_text()]
    assert offenders == []
