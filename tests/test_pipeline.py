"""The main job's runner (``facelib.run_series``) with papermill replaced by a fake that only
copies the notebook (or raises), so the runner's own behaviour is tested in milliseconds: the
status lines, which parameters each notebook gets, failed and missing notebooks, ``--only``,
and what ``run.json`` records. The real notebooks run headlessly in ``test_notebooks.py``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import facelib

papermill = pytest.importorskip("papermill")

SERIES = ["01_alignment", "02_projection", "03_style_transfer", "04_expressions", "05_face_swap", "06_directions"]
GENERATIVE_PARAMS = 'OUT_DIR = "out"\nSMOKE = False\nWEIGHTS = ""\nSTEPS = 100\nDEVICE = "auto"\nSEED = 0\n'


def _notebook(path: Path, params: str) -> Path:
    cells = [{"cell_type": "markdown", "metadata": {}, "source": ["# a test notebook\n"]},
             {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "execution_count": None, "outputs": [],
              "source": [params]},
             {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": ["x = 1\n"]}]
    for k, cell in enumerate(cells):
        cell["id"] = f"cell-{k}"
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return path


@pytest.fixture
def notebooks(tmp_path: Path) -> Path:
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _notebook(folder / "01_alignment.ipynb", 'OUT_DIR = "out"\nOUTPUT_SIZE = 1024\n')
    for name in SERIES[1:]:
        _notebook(folder / f"{name}.ipynb", GENERATIVE_PARAMS)
    return folder


class FakePapermill:
    """Records each call; ``fail`` maps a notebook stem to the exception it raises."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.fail: dict[str, BaseException] = {}

    def __call__(self, src, dst, parameters=None, **kwargs):
        stem = Path(src).stem
        self.calls.append((stem, dict(parameters or {})))
        Path(dst).write_text(Path(src).read_text())  # papermill writes the executed copy even when a cell fails
        if stem in self.fail:
            raise self.fail[stem]

    @property
    def ran(self) -> list[str]:
        return [name for name, _ in self.calls]


@pytest.fixture
def fake(monkeypatch, tmp_path: Path) -> FakePapermill:
    f = FakePapermill()
    monkeypatch.setattr(papermill, "execute_notebook", f)
    monkeypatch.chdir(tmp_path)  # no data/faces here: INPUT_DIR is not set by the runner
    monkeypatch.setenv("FACELIB_DATA", str(tmp_path / "no-data"))
    return f


def _run(out: Path, notebooks: Path, **kw) -> tuple[object, list[str]]:
    lines: list[str] = []
    kw.setdefault("smoke", True)
    res = facelib.run_series(out, notebooks_dir=notebooks, progress=False, kernel_name="python3", report=False,
                             echo=lines.append, **kw)
    return res, lines


def test_smoke_run_status_lines_and_parameters(tmp_path: Path, notebooks: Path, fake: FakePapermill) -> None:
    out = tmp_path / "out"
    res, lines = _run(out, notebooks, seed=7, device="cpu")
    assert fake.ran == SERIES
    assert res.ok and res.smoke and res.weights is None and res.out == out
    assert [(s.name, s.status, s.error) for s in res.steps] == [(n, "ok", None) for n in SERIES]
    assert [s.output for s in res.steps] == [out / "notebooks" / f"{n}.ipynb" for n in SERIES]
    # each notebook gets only the parameters it declares; a smoke run sets SMOKE and 25 steps
    assert fake.calls[0][1] == {"OUT_DIR": str(out)}
    assert fake.calls[1][1] == {"OUT_DIR": str(out), "SMOKE": True, "WEIGHTS": "", "STEPS": 25, "DEVICE": "cpu",
                                "SEED": 7}
    assert res.steps[0].ignored == ("SMOKE", "WEIGHTS", "DEVICE", "SEED", "INTERACTIVE", "STEPS")
    assert res.steps[1].ignored == ("INTERACTIVE",)
    # the lines: the smoke banner (3 lines), one per notebook, then the summary
    assert lines[0] == ("SMOKE RUN (smoke run requested): the generative notebooks use a small UNTRAINED "
                        "generator and a few steps, and every image they make is stamped as such.")
    assert lines[1].startswith("  looked in ") and lines[2].startswith("  To get real results")
    for k, name in enumerate(SERIES, 1):
        assert re.fullmatch(rf"\[{k}/6\] {name}: ok in \d+\.\d s -> {re.escape(str(out / 'notebooks'))}/{name}\.ipynb",
                            lines[2 + k]), lines[2 + k]
    assert re.fullmatch(r"SMOKE RUN \(untrained generator\): 6/6 notebooks ok in \d+\.\d s", lines[9].splitlines()[0])
    assert [row.split()[:2] for row in lines[9].splitlines()[1:]] == [[n, "ok"] for n in SERIES]
    assert len(lines) == 10


def test_failed_notebook_is_reported_and_later_ones_still_run(tmp_path: Path, notebooks: Path,
                                                              fake: FakePapermill) -> None:
    fake.fail["02_projection"] = papermill.PapermillExecutionError(
        cell_index=2, exec_count=3, source="x = 1", ename="ValueError", evalue="no latents: boom\nmore", traceback=[])
    fake.fail["04_expressions"] = RuntimeError("Kernel died before replying")
    res, lines = _run(tmp_path / "out", notebooks)
    assert fake.ran == SERIES
    assert [s.status for s in res.steps] == ["ok", "failed", "ok", "failed", "ok", "ok"] and not res.ok
    assert res.steps[1].error == "ValueError: no latents: boom (cell [3])"
    assert res.steps[3].error == "RuntimeError: Kernel died before replying"
    assert res.steps[1].output == tmp_path / "out" / "notebooks" / "02_projection.ipynb"  # the copy to look at
    assert re.fullmatch(r"\[2/6\] 02_projection: FAILED in \d+\.\d s - ValueError: no latents: boom \(cell \[3\]\)",
                        lines[4])
    assert lines[5].startswith("[3/6] 03_style_transfer: ok in ")
    assert lines[-1].splitlines()[0].startswith("SMOKE RUN (untrained generator): 4/6 notebooks ok in ")


def test_missing_notebook_is_reported_not_a_failure(tmp_path: Path, notebooks: Path, fake: FakePapermill) -> None:
    (notebooks / "03_style_transfer.ipynb").unlink()
    res, lines = _run(tmp_path / "out", notebooks)
    assert fake.ran == ["01_alignment", "02_projection", "04_expressions", "05_face_swap", "06_directions"]
    step = res.steps[2]
    assert (step.name, step.status, step.output) == ("03_style_transfer", "missing", None)
    assert step.error == f"{notebooks / '03_style_transfer.ipynb'} does not exist"
    assert res.ok  # nothing failed
    assert lines[5] == (f"[3/6] 03_style_transfer: MISSING ({notebooks / '03_style_transfer.ipynb'} does not exist; "
                        "the report marks this step as having no output)")


def test_run_json_records_the_run(tmp_path: Path, notebooks: Path, fake: FakePapermill) -> None:
    out = tmp_path / "out"
    fake.fail["05_face_swap"] = RuntimeError("out of memory")
    _run(out, notebooks, steps=4, seed=2, device="cpu", parameters={"SEED": 5, "EXTRA": "x"})
    run = json.loads((out / "run.json").read_text())
    assert (run["format"], run["version"], run["facelib_version"]) == ("facelib.run", 1, facelib.__version__)
    assert (run["smoke"], run["weights"], run["device"], run["seed"], run["kernel"], run["only"]) == (
        True, None, "cpu", 2, "python3", None)
    assert [(s["name"], s["status"]) for s in run["steps"]] == [
        ("01_alignment", "ok"), ("02_projection", "ok"), ("03_style_transfer", "ok"), ("04_expressions", "ok"),
        ("05_face_swap", "failed"), ("06_directions", "ok")]
    swap = run["steps"][4]
    assert swap["error"] == "RuntimeError: out of memory"
    assert swap["notebook"] == str(notebooks / "05_face_swap.ipynb")
    assert swap["output"] == str(out / "notebooks" / "05_face_swap.ipynb")
    # explicit parameters override the runner's; undeclared ones are not passed
    assert swap["parameters"] == {"OUT_DIR": str(out), "SMOKE": True, "WEIGHTS": "", "STEPS": 4, "DEVICE": "cpu",
                                  "SEED": 5}
    assert swap["ignored_parameters"] == ["INTERACTIVE", "EXTRA"]
    assert isinstance(run["seconds"], float) and all(isinstance(s["seconds"], float) for s in run["steps"])
    assert str(tmp_path / "no-data") in run["searched"]
    assert list(out.rglob("*.part*")) == []  # written atomically: no temporary files left


def test_only_runs_the_chosen_steps_and_keeps_the_others_records(tmp_path: Path, notebooks: Path,
                                                                 fake: FakePapermill) -> None:
    out = tmp_path / "out"
    fake.fail["03_style_transfer"] = RuntimeError("first try")
    _run(out, notebooks)
    fake.calls.clear()
    fake.fail.clear()
    res, lines = _run(out, notebooks, only=["03", "05_face_swap"])
    assert fake.ran == ["03_style_transfer", "05_face_swap"]
    assert [s.name for s in res.steps] == ["03_style_transfer", "05_face_swap"] and res.ok
    assert lines[3].startswith("[1/2] 03_style_transfer: ok in ")
    run = json.loads((out / "run.json").read_text())
    assert run["only"] == ["03", "05_face_swap"]
    assert [(s["name"], s["status"]) for s in run["steps"]] == [(n, "ok") for n in SERIES]  # 03 is now ok
    with pytest.raises(facelib.InputError, match="no step matches"):
        _run(out, notebooks, only=["zz"])


def test_extra_notebooks_run_after_the_series(tmp_path: Path, notebooks: Path, fake: FakePapermill) -> None:
    _notebook(notebooks / "07_pivotal_tuning.ipynb", 'OUT_DIR = "out"\n')
    res, _ = _run(tmp_path / "out", notebooks)
    assert fake.ran == SERIES + ["07_pivotal_tuning"]
    assert (res.steps[-1].name, res.steps[-1].title, res.steps[-1].status) == ("07_pivotal_tuning", "Pivotal tuning",
                                                                              "ok")


def test_real_run_with_a_generator_file(tmp_path: Path, notebooks: Path, fake: FakePapermill, small_generator) -> None:
    weights = tmp_path / "G.pt"
    facelib.save_generator(small_generator, weights)
    res, lines = _run(tmp_path / "out", notebooks, smoke=None, weights=weights)
    assert not res.smoke and res.weights == weights
    assert lines[0] == f"real run with generator {weights}"
    assert fake.calls[1][1]["SMOKE"] is False and fake.calls[1][1]["WEIGHTS"] == str(weights)
    assert "STEPS" not in fake.calls[1][1]  # a real run keeps the notebooks' own number of steps
    assert lines[-1].startswith(f"real run ({weights}): 6/6 notebooks ok in ")


def test_real_run_without_a_generator_is_a_clear_error(tmp_path: Path, notebooks: Path,
                                                       fake: FakePapermill) -> None:
    with pytest.raises(facelib.CheckpointError, match="generator file not found"):
        _run(tmp_path / "out", notebooks, smoke=False, weights=tmp_path / "absent.pt")
    if facelib.locate().generators:
        pytest.skip("a generator is installed where the runner searches (the repository's data/)")
    with pytest.raises(facelib.DependencyError, match="generator"):
        _run(tmp_path / "out", notebooks, smoke=False)
    assert fake.ran == []


def test_report_is_built_at_the_end(tmp_path: Path, notebooks: Path, fake: FakePapermill) -> None:
    out = tmp_path / "out"
    lines: list[str] = []
    res = facelib.run_series(out, notebooks_dir=notebooks, smoke=True, progress=False, kernel_name="python3",
                             echo=lines.append)
    assert (res.report_md, res.report_html) == (out / "report.md", out / "report.html")
    assert res.report_html.is_file() and res.report_md.is_file()
    assert lines[-1].splitlines()[-1] == f"report: {out / 'report.html'}"
    assert "UNTRAINED GENERATOR - SMOKE RUN" in res.report_md.read_text()
