"""facelib.widgets: build the controls without a kernel and read them back through the getters."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest

from facelib import progress as P
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
    from facelib.projection import ProjectConfig

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

    show(Image.new("RGB", (128, 64)))  # no kernel: must not raise
    image, text = out.children
    assert bytes(image.value).startswith(b"\x89PNG") and image.layout.width == "64px" and text.value == ""
    show("InputError: rows: bad")  # text replaces the image
    assert image.layout.display == "none" and "rows: bad" in text.value


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


def _image(n: int):
    from PIL import Image

    return Image.new("RGB", (8 + n, 8))


def _panel_parts(panel):
    *controls, buttons, image, caption = panel.children
    button, follow = buttons.children
    return controls, button, follow, image, caption


def test_every_control_reports_on_release_only() -> None:
    """Sliders and text boxes never fire on every step of a drag or on every keystroke."""
    box, _ = Wd.config_widgets(_Cfg, ranges={"lr": (0.0, 1.0)})
    made = [*box.children, Wd.row_range_slider(18)[0], Wd.strength_slider()[0]]
    made += Wd.config_widgets({"N": 3, "X": 0.5, "S": "a"})[0].children
    with_setting = [w for w in made if hasattr(w, "continuous_update")]
    assert len(with_setting) >= 8
    assert all(w.continuous_update is False for w in with_setting), \
        [type(w).__name__ for w in with_setting if w.continuous_update]


def test_preview_panel_quick_work_follows_released_changes() -> None:
    calls = []

    def compute(rows, strength):
        calls.append((rows, strength))
        return _image(len(calls))

    rows_w, get_rows = Wd.row_range_slider(18, range(9, 18))
    k_w, get_k = Wd.strength_slider(0.5)
    panel, run = Wd.preview_panel(compute, {"rows": (rows_w, get_rows), "strength": (k_w, get_k)})
    controls, button, follow, image, caption = _panel_parts(panel)
    assert controls == [rows_w, k_w] and "facelib-preview" in panel._dom_classes
    assert calls == [(range(9, 18), 0.5)] and follow.value is True  # quick: it follows the controls
    assert bytes(image.value).startswith(b"\x89PNG") and "rows 9-17 · strength 0.5" in caption.value
    k_w.value = 0.75
    assert calls[-1] == (range(9, 18), 0.75) and "strength 0.75" in caption.value
    rows_w.value = (2, 4)
    assert calls[-1] == (range(2, 5), 0.75) and "rows 2-4 · strength 0.75" in caption.value
    assert len(calls) == 3


def test_preview_panel_slow_work_waits_for_run_and_caption_tells_the_truth() -> None:
    calls = []

    def compute(config, rows):
        calls.append((config, rows))
        return _image(len(calls))

    cfg_box, get_cfg = Wd.config_widgets(_Cfg(steps=10), exclude=["lr", "scheduler", "gamma", "lpips", "noise"],
                                         ranges={"steps": (0, 50)})
    rows_w, get_rows = Wd.row_range_slider(18, range(0, 9))
    panel, run = Wd.preview_panel(compute, {"config": (cfg_box, get_cfg), "rows": (rows_w, get_rows)}, auto=False)
    _, button, follow, image, caption = _panel_parts(panel)
    assert calls == [] and follow.value is False  # building it runs nothing
    assert image.layout.display == "none" and "press Run to compute: steps 10 · rows 0-8" in caption.value
    steps = cfg_box.children[0]
    for v in (11, 12, 13, 14):  # four key presses on the slider: no computation
        steps.value = v
    assert calls == [] and "steps 14" in caption.value
    button.click()
    assert len(calls) == 1 and calls[0] == (_Cfg(steps=14), range(0, 9))
    assert image.layout.display == "" and "steps 14 · rows 0-8 (" in caption.value and "press" not in caption.value
    shown = image.value
    rows_w.value = (3, 8)  # the image stays, the caption says it is out of date
    assert len(calls) == 1 and image.value == shown
    assert "shown: steps 14 · rows 0-8; changed to steps 14 · rows 3-8: press Run" in caption.value
    rows_w.value = (0, 8)  # back to what the image shows
    assert "press" not in caption.value and "steps 14 · rows 0-8" in caption.value
    rows_w.value = (3, 8)
    assert run() is True and len(calls) == 2 and image.value != shown and "rows 3-8 (" in caption.value
    follow.value = True  # ticking "update on every change" computes now and then follows
    assert len(calls) == 3
    steps.value = 20
    assert len(calls) == 4 and calls[-1][0].steps == 20


def test_preview_panel_failure_never_leaves_a_stale_image() -> None:
    state = {"fail": False}

    def compute(strength):
        if state["fail"]:
            raise RuntimeError("out of memory")
        return _image(1)

    k_w, get_k = Wd.strength_slider(0.5)
    panel, _ = Wd.preview_panel(compute, {"strength": (k_w, get_k)}, auto=True)
    _, _, _, image, caption = _panel_parts(panel)
    assert image.layout.display == ""
    state["fail"] = True
    k_w.value = 1.0
    assert image.layout.display == "none"
    assert "failed for strength 1: RuntimeError: out of memory" in caption.value
    state["fail"] = False
    k_w.value = 0.25
    assert image.layout.display == "" and "strength 0.25" in caption.value
    # the slow path: the first computation decides that changes wait for Run
    import time as _time

    panel, _ = Wd.preview_panel(lambda strength: (_time.sleep(0.05), _image(2))[1], {"strength": Wd.strength_slider()},
                                quick_seconds=0.01)
    assert _panel_parts(panel)[2].value is False
    with pytest.raises(InputError, match="no controls"):
        Wd.preview_panel(lambda: None, {})


def test_describe_settings() -> None:
    _, get_cfg = Wd.config_widgets(_Cfg(), exclude=["lr", "gamma", "lpips", "noise", "scheduler"])
    text = Wd.describe_settings({"config": _Cfg(steps=7), "rows": range(9, 18), "mask": [0.0, 1.0, 1.0, 0.0, 1.0],
                                 "strength": 0.5, "on": True}, {"config": get_cfg})
    assert text == "steps 7 · rows 9-17 · mask 1-2, 4 · strength 0.5 · on on"
    assert Wd.describe_settings({"mask": [0.0, 0.0]}) == "mask none"


def test_widgets_never_capture_output() -> None:
    """No facelib control routes output through an ipywidgets Output widget: headless runners
    (nbclient, papermill) imitate its front end and can wait forever for it."""
    import ipywidgets

    entered = []
    original = ipywidgets.Output.__enter__
    ipywidgets.Output.__enter__ = lambda self: entered.append(self) or original(self)
    try:
        box, show = Wd.image_grid_output()
        show(_image(1))
        show("text")
        k_w, get_k = Wd.strength_slider(0.5)
        Wd.preview_panel(lambda strength: _image(3), {"strength": (k_w, get_k)})
        k_w.value = 0.7
    finally:
        ipywidgets.Output.__enter__ = original
    assert entered == []
    source = (REPO / "facelib" / "widgets.py").read_text()
    assert "W.Output(" not in source and ".Output(" not in source


def test_progress_bar_text_outside_a_notebook(capsys) -> None:
    from tqdm.std import tqdm as std_tqdm

    with Wd.progress_bar(range(3), desc="work") as bar:
        assert type(bar) is std_tqdm
        for _ in bar:
            pass
    assert "work: 100%" in capsys.readouterr().err


class _Handle:
    def __init__(self) -> None:
        self.updates = []

    def update(self, obj, raw=False):
        self.updates.append((obj, raw))


def test_progress_bar_in_a_notebook_becomes_text_when_done(monkeypatch) -> None:
    """In a live kernel the bar is a widget while it runs and its final text line once closed,
    so a saved notebook holds no progress widget (whose model would be gone on reopening)."""
    pytest.importorskip("tqdm.notebook")
    import IPython.display

    handles, shown = [], []

    def fake_display(obj, display_id=False, **_):
        shown.append(obj)
        handles.append(_Handle())
        return handles[-1]

    monkeypatch.setattr(P, "in_kernel", lambda: True)
    monkeypatch.delenv("FACELIB_HEADLESS", raising=False)
    monkeypatch.setattr(IPython.display, "display", fake_display)
    monkeypatch.setattr(P, "_BAR_CLASS", None)
    bar = Wd.progress_bar(total=4, desc="project")
    assert type(shown[0]).__name__ == "TqdmHBox" and handles[0].updates == []
    container = bar.container
    bar.update(4)
    bar.close()
    (obj, raw), = handles[0].updates
    assert raw and set(obj) == {"text/plain"} and "project: 100%" in obj["text/plain"] and "4/4" in obj["text/plain"]
    assert container.comm is None  # the widget model is released
    bar.close()  # twice is harmless
    assert len(handles[0].updates) == 1
    for _ in Wd.progress_bar(range(2), desc="inner", leave=False):
        pass
    assert handles[1].updates == [({"text/plain": ""}, True)]  # leave=False: nothing stays
    bar = Wd.progress_bar(total=5, desc="stopped")
    bar.update(2)
    bar.close()
    assert "2/5" in handles[2].updates[0][0]["text/plain"]  # an unfinished bar keeps its line
    monkeypatch.setenv("FACELIB_HEADLESS", "1")  # papermill runs of `facelib demo`: text
    from tqdm.std import tqdm as std_tqdm

    assert type(Wd.progress_bar(total=1, disable=True)) is std_tqdm


def test_enable_saved_widget_state(tmp_path) -> None:
    import json

    path = Wd.enable_saved_widget_state(tmp_path)
    assert path == tmp_path / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    assert json.loads(path.read_text()) == {"@jupyter-widgets/jupyterlab-manager:plugin": {"saveState": True}}
    path.write_text(json.dumps({"@jupyterlab/apputils-extension:themes": {"theme": "JupyterLab Dark"},
                                "@jupyter-widgets/jupyterlab-manager:plugin": {"saveState": False, "x": 1}}))
    Wd.enable_saved_widget_state(tmp_path)
    data = json.loads(path.read_text())
    assert data["@jupyterlab/apputils-extension:themes"] == {"theme": "JupyterLab Dark"}  # kept
    assert data["@jupyter-widgets/jupyterlab-manager:plugin"] == {"saveState": True, "x": 1}
    path.write_text("{broken")
    with pytest.raises(InputError, match="not valid JSON"):
        Wd.enable_saved_widget_state(tmp_path)
