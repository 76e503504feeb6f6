"""The notebook series: each notebook follows the pattern and runs headlessly in smoke mode (papermill).

The series is executed once per test session (module fixture) with the small untrained
generator and a few optimisation steps, then each notebook's result is checked separately.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from PIL import Image

from .conftest import REPO

pytest.importorskip("papermill", reason="running the notebooks needs papermill")
pytest.importorskip("ipykernel", reason="running the notebooks needs ipykernel")

NOTEBOOKS = sorted((REPO / "notebooks").glob("0*.ipynb"))
GENERATIVE = ("02", "03", "04", "05", "06")
SMOKE_STEPS = 3


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def _src(cell: dict) -> str:
    return "".join(cell["source"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_follows_the_pattern(path: Path) -> None:
    cells = _cells(path)
    assert cells[0]["cell_type"] == "markdown" and _src(cells[0]).startswith("# ")
    assert "facelib" in _src(cells[0])  # the header names the facelib calls
    code = [c for c in cells if c["cell_type"] == "code"]
    boot = _src(code[0])
    assert "sys.path.insert" in boot and 'find_spec("facelib")' in boot
    assert "/kaggle/input" in boot  # also works when the repository is attached as a Kaggle dataset
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    for node in ast.parse(_src(params[0])).body:
        assert isinstance(node, ast.Assign), f"parameters cell: only assignments, got {ast.dump(node)[:60]}"
        ast.literal_eval(node.value)  # plain literals, so papermill can override them
    names = {t.id for n in ast.parse(_src(params[0])).body for t in n.targets}
    assert "OUT_DIR" in names
    if path.stem[:2] in GENERATIVE:
        assert {"SMOKE", "DEVICE", "SEED"} <= names
    for c in code:
        assert not c.get("outputs") and c.get("execution_count") is None, "outputs are stripped"
        tree = ast.parse("\n".join(line[:len(line) - len(line.lstrip())] + "pass"  # a magic line: keep the block
                                   if line.lstrip().startswith(("!", "%")) else line for line in _src(c).splitlines()))
        assert not [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))]


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """Run every notebook once, in order, in smoke mode; return (result, out dir, progress lines)."""
    from facelib.pipeline import run_series

    out = tmp_path_factory.mktemp("series") / "out"
    lines: list[str] = []
    # INTERACTIVE: the widget cells run too (building the controls must never block a headless run);
    # TUNE: 02 tunes every face and 03-05 render through the first face's tuning (grid and preview box)
    result = run_series(out, smoke=True, steps=SMOKE_STEPS, device="cpu", progress=False, echo=lines.append,
                        parameters={"INPUT_DIR": str(out / "no-photos-here"), "OUTPUT_SIZE": 256, "INTERACTIVE": True,
                                    "TUNE": True, "SMOKE_TUNE_STEPS": 3},
                        cell_timeout=600)
    return result, out, lines


def _red_band(path: Path) -> bool:
    """True when the image's top rows are the red smoke-run stamp."""
    im = Image.open(path).convert("RGB")
    row = [im.getpixel((x, 2)) for x in range(0, im.width, max(1, im.width // 50))]
    r, g, b = (sum(p[i] for p in row) / len(row) for i in range(3))
    return r > 150 and g < 70 and b < 70


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_headless_in_smoke_mode(series, path: Path) -> None:
    result, out, lines = series
    step = next(s for s in result.steps if s.name == path.stem)
    assert step.status.startswith("ok"), f"{path.name} failed: {step.error} (executed copy: {step.output})"
    if step.status != "ok":  # a smoke run may go on with stamped random stand-ins, and says so
        assert step.status.startswith("ok, with stand-in inputs: ")
    assert step.output == out / "notebooks" / path.name and step.output.is_file()
    assert step.parameters["OUT_DIR"] == str(out)
    if "SMOKE" in step.parameters:
        assert step.parameters["SMOKE"] is True
    assert any(line.startswith("[") and path.stem in line and " s" in line for line in lines)  # one line each
    grids = sorted((out / "grids").glob(path.stem[:2] + "_*"))
    assert grids, f"{path.name} wrote no grid to {out / 'grids'}"
    if path.stem[:2] in GENERATIVE:
        for g in grids:
            assert _red_band(g), f"{g.name}: no smoke-run stamp on a grid from the untrained generator"
        prov = json.loads((out / "provenance.json").read_text())
        assert prov.get(path.stem, {}).get("smoke") is True
    if path.stem[:2] in ("02", "03", "04", "05"):  # TUNE = True: the grid through the tuned generator
        assert (out / "grids" / f"{path.stem}_tuned.jpg").is_file(), f"{path.name} wrote no tuned grid"
    if path.stem[:2] == "06":  # the exported edits, through the tuning, pasted back into the photo
        assert "through its tuned generator" in step.output.read_text()
        assert list((out / "directions" / "edits").glob("*.photo.jpg")), "06 pasted no edit back into its photo"


@pytest.mark.slow
def test_series_report_has_every_grid(series) -> None:
    result, out, _ = series
    assert result.smoke and result.report_html == out / "report.html"
    page = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    run = json.loads((out / "run.json").read_text())
    assert run["smoke"] is True and [s["name"] for s in run["steps"]][:5] == [
        "01_alignment", "02_projection", "03_style_transfer", "04_expressions", "05_face_swap"]
    present = {p.stem for p in NOTEBOOKS}
    for s in result.steps:
        if s.name in present:
            for g in sorted((out / "grids").glob(s.name[:2] + "_*")):
                assert f'src="grids/{g.name}"' in page and f"(grids/{g.name})" in md
        else:
            assert s.status == "missing" and f"{s.name}.ipynb does not exist" in md
    assert "UNTRAINED GENERATOR - SMOKE RUN" in page
    assert md.count("in the photo") >= 4  # styles, expressions, swaps and directions pasted back
    assert (out / "aligned").is_dir() and any((out / "aligned").rglob("*.jpg"))


def _tiny_notebook(path: Path, body: str, params: str) -> None:
    nb = {"cells": [
        {"cell_type": "markdown", "metadata": {}, "source": ["# test notebook\n"]},
        {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "execution_count": None, "outputs": [],
         "source": [params]},
        {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": [body]}],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5}
    for k, cell in enumerate(nb["cells"]):
        cell["id"] = f"cell-{k}"
    path.write_text(json.dumps(nb))


def test_runner_reports_failures_and_missing_notebooks(tmp_path: Path) -> None:
    from facelib.pipeline import run_series

    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    _tiny_notebook(nbs / "01_alignment.ipynb",
                   "from pathlib import Path\nassert SMOKE is True and STEPS == 2\n"
                   "from PIL import Image\np = Path(OUT_DIR) / 'grids' / '01_alignment.jpg'\n"
                   "p.parent.mkdir(parents=True, exist_ok=True)\nImage.new('RGB', (8, 8)).save(p)\n",
                   'OUT_DIR = "out"  # with a "quoted" comment\nSMOKE = False\nSTEPS = 100\n')
    _tiny_notebook(nbs / "02_projection.ipynb", "raise ValueError('no latents: boom')\n", 'OUT_DIR = "out"\n')
    lines: list[str] = []
    res = run_series(tmp_path / "out", notebooks_dir=nbs, smoke=True, steps=2, progress=False, echo=lines.append)
    assert [(s.name, s.status) for s in res.steps] == [
        ("01_alignment", "ok"), ("02_projection", "failed"), ("03_style_transfer", "missing"),
        ("04_expressions", "missing"), ("05_face_swap", "missing"), ("06_directions", "missing")]
    assert not res.ok
    assert "ValueError: no latents: boom" in res.steps[1].error
    assert set(res.steps[0].parameters) == {"OUT_DIR", "SMOKE", "STEPS"}
    assert "WEIGHTS" in res.steps[0].ignored
    md = (tmp_path / "out" / "report.md").read_text()
    assert "FAILED: the notebook failed: ValueError: no latents: boom" in md
    assert md.count("MISSING") == 4
    assert sum("MISSING" in line for line in lines) == 4 and any("FAILED" in line for line in lines)


def test_resolve_kernel_uses_this_python(tmp_path: Path, monkeypatch) -> None:
    import sys

    from jupyter_client import kernelspec

    from facelib.pipeline import resolve_kernel

    monkeypatch.setenv("JUPYTER_PATH", "")
    spec = kernelspec.KernelSpec(argv=["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                                 display_name="x", language="python")
    monkeypatch.setattr(kernelspec.KernelSpecManager, "get_kernel_spec", lambda self, name: spec)
    assert resolve_kernel("python3", scratch=tmp_path) == "python3"  # jupyter_client maps "python" to us
    spec.argv = ["/opt/other-env/bin/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    assert resolve_kernel("python3", scratch=tmp_path) == "facelib-python"
    written = json.loads((tmp_path / "kernels" / "facelib-python" / "kernel.json").read_text())
    assert written["argv"][0] == sys.executable
    assert str(tmp_path.resolve()) in __import__("os").environ["JUPYTER_PATH"]


def test_live_line_shows_the_cell_and_its_progress_bar() -> None:
    import io
    import logging

    from facelib.pipeline import _LiveLine

    def feed(live: _LiveLine, *messages: str) -> None:
        for msg in messages:
            live.emit(logging.LogRecord("papermill", logging.INFO, __file__, 1, msg, None, None))

    stream = io.StringIO()
    live = _LiveLine("[2/5] 02_projection", 9, stream, every=0.0)
    feed(live, "Executing Cell 4---------------------------------------",
         "project:  10%|#         | 1/10 [00:01<00:09]\rproject:  40%|####      | 4/10 [00:02<00:03]",
         "a line the notebook printed", "Ending Cell 4------------------------------------------")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and all(line.startswith("[2/5] 02_projection: cell 4/9, ") for line in lines)
    assert lines[0].endswith(" s") and lines[1].endswith("| project:  40%|####      | 4/10 [00:02<00:03]")
    assert lines[2] == lines[1]  # printed output is not echoed, the bar stays

    stream = io.StringIO()
    feed(_LiveLine("[1/5] 01_alignment", 3, stream, echo_all=True, every=1e9), "Executing Cell 1", "hello")
    assert stream.getvalue().splitlines() == ["[1/5] 01_alignment: cell 1/3, 0 s", "hello"]


def test_runner_reports_a_cell_timeout_as_failed(tmp_path: Path) -> None:
    """A cell that runs past the limit fails its notebook (never "ok"), even when the code would
    catch a KeyboardInterrupt and return normally."""
    from facelib.pipeline import run_series

    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    _tiny_notebook(nbs / "01_alignment.ipynb",
                   "import time\ntry:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n    pass\n", 'OUT_DIR = "out"\n')
    t0 = __import__("time").perf_counter()
    res = run_series(tmp_path / "out", notebooks_dir=nbs, smoke=True, only=["01"], progress=False,
                     echo=None, report=False, cell_timeout=3)
    assert __import__("time").perf_counter() - t0 < 50
    step = res.steps[0]
    assert step.status == "failed" and not res.ok
    assert step.error.startswith("timed out: a cell ran longer than 3 s")
