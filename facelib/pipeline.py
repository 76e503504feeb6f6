"""The main job: run the notebooks headlessly, in order, then build the report.

:func:`run_series` executes ``notebooks/0*.ipynb`` with papermill into ``out/notebooks/``,
passing each notebook the parameters it declares (``OUT_DIR``, ``SMOKE``, ``WEIGHTS``,
``STEPS``, ``DEVICE``, ``SEED``, ``INTERACTIVE``, ``INPUT_DIR``), prints one line per notebook
with its time, records everything in ``out/run.json`` and finally builds ``out/report.md``
and ``out/report.html`` (:func:`facelib.report.build_report`).

With a StyleGAN2 generator found by :func:`facelib.data.locate` it is a real run. Without one
it is a smoke run: ``SMOKE=True`` and a few optimisation steps, so the generative notebooks
use a small untrained generator and everything they make is stamped as such.
"""
from __future__ import annotations

import ast
import contextlib
import datetime as _dt
import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from . import __version__
from ._io import atomic_path
from .data import locate
from .errors import CheckpointError, DependencyError, InputError
from .paths import repo_root
from .report import build_report, stand_in_hint
from .stamps import REAL_WEIGHTS_HELP

__all__ = ["STEPS", "Step", "StepResult", "SeriesResult", "run_series", "notebook_paths", "resolve_kernel",
           "SMOKE_STEPS"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Step:
    """One notebook of the series: file stem and title."""

    name: str
    title: str


#: The series, in order (a notebook not listed here still runs, after these, by file name).
STEPS: tuple[Step, ...] = (
    Step("01_alignment", "Alignment"),
    Step("02_projection", "Projection into W+"),
    Step("03_style_transfer", "Style transfer"),
    Step("04_expressions", "Expressions"),
    Step("05_face_swap", "Face swap"),
    Step("06_directions", "Edit directions"),
)

#: Optimisation steps of a smoke run.
SMOKE_STEPS = 25


@dataclass(frozen=True)
class StepResult:
    """What happened to one notebook.

    Attributes:
        name, title: the step.
        notebook: the source notebook (may not exist).
        output: the executed copy (``out/notebooks/<name>.ipynb``), or None.
        status: "ok", "failed", "missing" (no notebook file) or "skipped".
        seconds: wall time.
        error: for "failed": the exception name and message, and the failing cell.
        parameters: what was passed.
        ignored: runner parameters the notebook does not declare (not passed).
    """

    name: str
    title: str
    notebook: Path
    output: Path | None
    status: str
    seconds: float = 0.0
    error: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    ignored: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "notebook": str(self.notebook),
                "output": str(self.output) if self.output else None, "status": self.status,
                "seconds": round(self.seconds, 2), "error": self.error, "parameters": dict(self.parameters),
                "ignored_parameters": list(self.ignored)}


@dataclass(frozen=True)
class SeriesResult:
    """What :func:`run_series` did: the steps, smoke or real, and the report files."""

    steps: tuple[StepResult, ...]
    smoke: bool
    weights: Path | None
    out: Path
    seconds: float
    report_md: Path | None = None
    report_html: Path | None = None

    @property
    def ok(self) -> bool:
        """True when no notebook failed (missing notebooks are reported, not failures)."""
        return all(s.status.startswith("ok") or s.status in ("missing", "skipped") for s in self.steps)

    def summary(self) -> str:
        lines = []
        for s in self.steps:
            tail = f" - {s.error}" if s.error else ""
            lines.append(f"  {s.name:<20} {s.status:<8} {s.seconds:7.1f} s{tail}")
        kind = "SMOKE RUN (untrained generator)" if self.smoke else f"real run ({self.weights})"
        head = (f"{kind}: {sum(s.status.startswith('ok') for s in self.steps)}/{len(self.steps)} notebooks ok "
                f"in {self.seconds:.1f} s")
        tail = [f"report: {self.report_html}"] if self.report_html else []
        return "\n".join([head, *lines, *tail])


def notebook_paths(notebooks_dir: "str | os.PathLike[str]") -> list[Path]:
    """``notebooks_dir/0*.ipynb`` in series order."""
    return sorted(Path(notebooks_dir).glob("0*.ipynb"))


def _plan(notebooks_dir: Path, only: Sequence[str] | None) -> list[tuple[Step, Path]]:
    existing = {p.stem: p for p in notebook_paths(notebooks_dir)}
    steps = list(STEPS) + [Step(stem, stem.split("_", 1)[-1].replace("_", " ").capitalize())
                           for stem in sorted(existing) if stem not in {s.name for s in STEPS}]
    plan = [(s, existing.get(s.name, notebooks_dir / f"{s.name}.ipynb")) for s in steps]
    if only:
        wanted = [o.strip() for o in only if o.strip()]
        plan = [(s, p) for s, p in plan if any(s.name == w or s.name.startswith(w) for w in wanted)]
        if not plan:
            raise InputError(f"only: no step matches {list(only)}; steps are {[s.name for s in steps]}")
    return plan


def resolve_kernel(name: str = "python3", *, scratch: "str | os.PathLike[str] | None" = None) -> str:
    """A kernel name that runs this Python interpreter (so the notebooks see this environment).

    ``name`` is used when its kernelspec launches ``sys.executable`` (or plain "python", which
    jupyter_client maps to ``sys.executable``). Otherwise a kernelspec for this interpreter is
    written under ``scratch`` (default ``out/.jupyter``), that folder is added to
    ``JUPYTER_PATH`` for this process, and its name ("facelib-python") is returned. Nothing
    outside ``scratch`` is changed.
    """
    try:
        from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    except ImportError as e:
        raise DependencyError("running the notebooks needs papermill and ipykernel: "
                              "pip install papermill ipykernel") from e
    try:
        spec = KernelSpecManager().get_kernel_spec(name)
        argv0 = spec.argv[0] if spec.argv else ""
    except NoSuchKernel:
        argv0 = ""
    plain = {"python", f"python{sys.version_info[0]}", f"python{sys.version_info[0]}.{sys.version_info[1]}"}
    if argv0 in plain or (argv0 and Path(argv0).absolute().parent == Path(sys.executable).absolute().parent):
        return name
    own = "facelib-python"
    base = Path(scratch) if scratch is not None else Path("out") / ".jupyter"
    kdir = base / "kernels" / own
    kdir.mkdir(parents=True, exist_ok=True)
    spec_json = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                 "display_name": "Python (facelib)", "language": "python"}
    with atomic_path(kdir / "kernel.json") as tmp:
        tmp.write_text(json.dumps(spec_json, indent=1))
    paths = [str(base.resolve())] + [p for p in os.environ.get("JUPYTER_PATH", "").split(os.pathsep) if p]
    os.environ["JUPYTER_PATH"] = os.pathsep.join(dict.fromkeys(paths))
    log.info("kernel %r %s; using %s for %s", name, "runs another Python" if argv0 else "is not installed",
             own, sys.executable)
    return own


def _declared(path: Path) -> dict[str, Any]:
    """Names assigned in the notebook's ``parameters`` cell (parsed with ``ast``; nothing is run).

    papermill's own inspection skips lines whose comments hold quotes, so it is only the
    fallback for a cell Python cannot parse.
    """
    try:
        nb = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        log.warning("%s: unreadable notebook (%s)", path, e)
        return {}
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code" or "parameters" not in cell.get("metadata", {}).get("tags", []):
            continue
        src = "".join(cell.get("source", []))
        try:
            tree = ast.parse(src)
        except SyntaxError:
            break
        names: dict[str, Any] = {}
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
                if isinstance(node, ast.AnnAssign) else []
            for t in targets:
                if isinstance(t, ast.Name):
                    names[t.id] = ast.get_source_segment(src, node.value) if getattr(node, "value", None) else None
        return names
    try:
        import papermill  # optional heavy dependency, only to run notebooks

        return dict(papermill.inspect_notebook(str(path)))
    except Exception as e:  # no parameters cell at all
        log.warning("%s: cannot read its parameters (%s)", path, e)
        return {}


def _error_text(e: BaseException) -> str:
    ename = getattr(e, "ename", None)
    if ename:
        evalue = str(getattr(e, "evalue", "")).strip().splitlines()
        cell = getattr(e, "exec_count", None)
        where = f" (cell [{cell}])" if cell is not None else ""
        return f"{ename}: {evalue[0] if evalue else ''}{where}"[:500]
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}"[:500]


_STARTUP = """\
# Written by facelib.pipeline for headless notebook runs: draw tqdm progress bars as text
# (tqdm.auto would draw widgets that nobody sees), so the runner can show them live.
import tqdm.auto as _auto
import tqdm.std as _std

_auto.tqdm, _auto.trange = _std.tqdm, _std.trange
"""


@contextlib.contextmanager
def _headless_kernel_env(scratch: Path) -> Iterator[None]:
    """Environment for the notebook kernels: a private IPython profile whose startup file makes
    tqdm draw text bars, and ``FACELIB_HEADLESS=1`` (widgets are not built). Restored on exit."""
    startup = scratch / "profile_default" / "startup" / "00-facelib-text-progress.py"
    startup.parent.mkdir(parents=True, exist_ok=True)
    if not startup.is_file() or startup.read_text() != _STARTUP:
        with atomic_path(startup) as tmp:
            tmp.write_text(_STARTUP)
    config = scratch / "profile_default" / "ipython_kernel_config.py"
    # The kernels' own log (start-up warnings, the interrupt nbclient sends at shutdown) would interleave
    # with the status lines; errors in cells still reach the runner through the kernel protocol.
    text = "c.IPKernelApp.log_level = 'CRITICAL'\n"
    if not config.is_file() or config.read_text() != text:
        with atomic_path(config) as tmp:
            tmp.write_text(text)
    saved = {k: os.environ.get(k) for k in ("IPYTHONDIR", "FACELIB_HEADLESS", "TQDM_NCOLS", "TQDM_NROWS",
                                            "PYTHONPATH")}
    os.environ["IPYTHONDIR"] = str(scratch)
    # the kernels import this facelib even when it is not installed and their cwd is elsewhere
    # (a read-only Kaggle dataset is run from /kaggle/working)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        dict.fromkeys([str(repo_root()), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]))
    os.environ["FACELIB_HEADLESS"] = "1"
    # the kernels' stderr is not a terminal: fix the bar size (tqdm reads TQDM_* defaults from the environment)
    os.environ.setdefault("TQDM_NCOLS", "70")
    os.environ.setdefault("TQDM_NROWS", "40")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _LiveLine(logging.Handler):
    """Turns papermill's cell log into one live status line per notebook.

    Shows the cell being executed and the latest tqdm bar printed inside it. On a terminal the
    line is redrawn in place; otherwise a line is printed at most every ``every`` seconds.
    With ``echo_all`` every notebook output line is printed as well.
    """

    def __init__(self, prefix: str, n_cells: int, stream: Any, *, echo_all: bool = False, every: float = 30.0) -> None:
        super().__init__(logging.INFO)
        self.prefix, self.n_cells, self.stream = prefix, n_cells, stream
        self.echo_all, self.every = echo_all, every
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.cell, self.inner, self.t0, self.last = 0, "", time.perf_counter(), float("-inf")
        self.width = shutil.get_terminal_size((100, 20)).columns - 1

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
        except Exception:  # a malformed record must not stop the run
            return
        if msg.startswith("Executing Cell"):
            digits = "".join(ch for ch in msg.split("Cell", 1)[1] if ch.isdigit())
            self.cell, self.inner = int(digits or 0), ""
        elif msg.startswith("Ending Cell"):
            return
        else:
            bars = [seg.strip() for seg in msg.replace("\n", "\r").split("\r") if "%|" in seg]
            if bars:
                self.inner = bars[-1]
            elif self.echo_all:
                self.clear()
                self.stream.write(msg.rstrip() + "\n")
        self.draw()

    def status(self) -> str:
        return (f"{self.prefix}: cell {self.cell}/{self.n_cells}, {time.perf_counter() - self.t0:.0f} s"
                + (f" | {self.inner}" if self.inner else ""))

    def draw(self) -> None:
        now = time.perf_counter()
        if self.tty:
            self.stream.write("\r" + self.status()[:self.width].ljust(self.width))
            self.stream.flush()
        elif now - self.last >= self.every:
            self.last = now
            self.stream.write(self.status() + "\n")
            self.stream.flush()

    def clear(self) -> None:
        if self.tty:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()


def _count_cells(path: Path) -> int:
    try:
        return len(json.loads(path.read_text()).get("cells", [])) + 1  # + papermill's injected cell
    except (OSError, ValueError):
        return 0


def run_series(out_dir: "str | os.PathLike[str]" = "out", *, notebooks_dir: "str | os.PathLike[str] | None" = None,
               smoke: bool | None = None, steps: int | None = None, weights: "str | os.PathLike[str] | None" = None,
               device: str = "auto", seed: int = 0, only: Sequence[str] | None = None,
               parameters: Mapping[str, Any] | None = None, kernel_name: str | None = None,
               progress: bool = True, log_output: bool = False, report: bool = True,
               echo: Callable[[str], None] | None = print, cell_timeout: float | None = None) -> SeriesResult:
    """Execute the notebooks in order and build the report.

    Args:
        out_dir: results folder (absolute paths are passed to the notebooks).
        notebooks_dir: where the notebooks are (default: the repository's ``notebooks/``).
        smoke: True forces the smoke run, False a real run (which needs a generator); None
            decides by whether :func:`facelib.data.locate` finds a generator.
        steps: optimisation steps passed as ``STEPS`` (default: :data:`SMOKE_STEPS` in a smoke
            run, the notebooks' own defaults otherwise).
        weights: generator file for a real run (default: the first one found).
        device, seed: passed as ``DEVICE`` and ``SEED``.
        only: run only these steps ("02", "03_style_transfer", ...); reports still cover all.
        parameters: extra / overriding notebook parameters (e.g. ``{"INPUT_DIR": "photos"}``).
        kernel_name: Jupyter kernel (default: :func:`resolve_kernel`).
        progress: a live status line per notebook (the cell being run and the progress bar
            printed inside it), from papermill's output log.
        log_output: also print every line the notebooks print.
        report: build ``out/report.md`` / ``out/report.html`` at the end.
        echo: where the one-line-per-notebook progress goes (None: silent).
        cell_timeout: seconds one cell may run (None: no limit). A cell that runs longer
            stops its notebook, which is reported as failed ("timed out"), never as ok.
    Returns:
        A :class:`SeriesResult` (also written to ``out/run.json``).
    Raises:
        DependencyError: ``smoke=False`` but no generator was found (names where it looked),
            or papermill is not installed.
    """
    try:
        import papermill  # optional heavy dependency, only to run notebooks
    except ImportError as e:
        raise DependencyError("running the notebooks needs papermill: pip install papermill ipykernel") from e
    say = echo or (lambda s: None)
    root = repo_root()
    nb_dir = Path(notebooks_dir) if notebooks_dir is not None else root / "notebooks"
    out = Path(out_dir).absolute()
    (out / "notebooks").mkdir(parents=True, exist_ok=True)

    # 1. Real or smoke
    inventory = locate()
    gen_path: Path | None = Path(weights).expanduser() if weights else None
    if gen_path is not None and not gen_path.is_file():
        raise CheckpointError(gen_path, "generator file not found (--weights)")
    if gen_path is None and not smoke:
        found = inventory.first("generator")
        gen_path = found.path if found else None
    requested = smoke is True
    if smoke is None:
        smoke = gen_path is None
    if not smoke and gen_path is None:
        inventory.require("generator")  # raises with where it looked
    if smoke:
        why = "smoke run requested" if requested else "no StyleGAN2 generator found"
        gen_path = None
        say(f"SMOKE RUN ({why}): the generative notebooks use a small UNTRAINED generator and a few steps, "
            "and every image they make is stamped as such.")
        say("  " + inventory.where_looked())
        say("  " + REAL_WEIGHTS_HELP)
    else:
        say(f"real run with generator {gen_path}")

    # 2. Parameters shared by every notebook
    common: dict[str, Any] = {"OUT_DIR": str(out), "SMOKE": bool(smoke), "WEIGHTS": str(gen_path or ""),
                              "DEVICE": device, "SEED": int(seed), "INTERACTIVE": False}
    if steps is not None or smoke:
        common["STEPS"] = int(steps if steps is not None else SMOKE_STEPS)
    if smoke:  # notebooks that keep separate smoke settings take them under this name
        common["SMOKE_STEPS"] = common["STEPS"]
    if (Path.cwd() / "data" / "faces").is_dir():
        common["INPUT_DIR"] = str(Path.cwd() / "data" / "faces")
    common.update(dict(parameters or {}))
    kernel = kernel_name or resolve_kernel("python3", scratch=out / ".jupyter")
    cwd = root if os.access(root, os.W_OK) else Path.cwd()  # a repository attached read-only runs from here

    # 3. Run
    plan = _plan(nb_dir, only)
    results: list[StepResult] = []
    started = time.perf_counter()
    total = len(plan)
    pm_log = logging.getLogger("papermill")
    with _headless_kernel_env(out / ".ipython"):
        for k, (step, path) in enumerate(plan, 1):
            prefix = f"[{k}/{total}] {step.name}"
            if not path.is_file():
                shown = path.relative_to(root) if path.is_relative_to(root) else path
                results.append(StepResult(step.name, step.title, path, None, "missing",
                                          error=f"{shown} does not exist"))
                say(f"{prefix}: MISSING ({shown} does not exist; the report marks this step as having no output)")
                continue
            declared = _declared(path)
            passed = {k2: v for k2, v in common.items() if k2 in declared}
            ignored = tuple(k2 for k2 in common if k2 not in declared and k2 not in ("INPUT_DIR", "SMOKE_STEPS"))
            if smoke and "SMOKE" in ignored and step.name != "01_alignment":
                say(f"{prefix}: WARNING: the notebook has no SMOKE parameter, so it cannot be told to use "
                    "the untrained generator")
            target = out / "notebooks" / path.name
            live = _LiveLine(prefix, _count_cells(path), sys.stderr, echo_all=log_output) if progress else None
            saved_handlers, saved_propagate, saved_level = pm_log.handlers[:], pm_log.propagate, pm_log.level
            if live is not None:
                pm_log.handlers, pm_log.propagate = [live], False
                pm_log.setLevel(logging.INFO)
            elif not log_output:
                pm_log.setLevel(logging.WARNING)
            t0 = time.perf_counter()
            try:
                papermill.execute_notebook(str(path), str(target), parameters=passed, kernel_name=kernel,
                                           progress_bar=False, log_output=bool(progress or log_output),
                                           cwd=str(cwd), request_save_on_cell_execute=True,
                                           execution_timeout=int(math.ceil(cell_timeout)) if cell_timeout else None)
                status, error = "ok", None
                hint = stand_in_hint(out, step.name)
                if hint:
                    status = f"ok, with stand-in inputs: {hint}"
            except Exception as e:  # PapermillExecutionError, kernel death, timeouts: report and go on
                status, error = "failed", _error_text(e)
                if isinstance(e, TimeoutError) or "timed out" in str(e).lower():
                    error = f"timed out: a cell ran longer than {cell_timeout:g} s ({error})"[:500] \
                        if cell_timeout else f"timed out ({error})"[:500]
            finally:
                if live is not None:
                    live.clear()
                pm_log.handlers, pm_log.propagate = saved_handlers, saved_propagate
                pm_log.setLevel(saved_level)
            dt = time.perf_counter() - t0
            results.append(StepResult(step.name, step.title, path, target if target.exists() else None, status,
                                      dt, error, passed, ignored))
            say(f"{prefix}: {status if status.startswith('ok') else status.upper()} in {dt:.1f} s"
                + (f" - {error}" if error else f" -> {target}"))
    seconds = time.perf_counter() - started

    # 4. Record and report
    record = {
        "format": "facelib.run", "version": 1, "facelib_version": __version__,
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(seconds, 2), "smoke": bool(smoke), "weights": str(gen_path) if gen_path else None,
        "device": device, "seed": int(seed), "kernel": kernel, "steps": [r.to_dict() for r in results],
        "searched": [str(r.path) for r in inventory.searched],
        "only": list(only) if only else None,
    }
    previous = _read_run(out)
    if only and previous:  # keep the other steps' records from the previous run
        names = {r.name for r in results}
        record["steps"] = [s for s in previous.get("steps", []) if s.get("name") not in names] + record["steps"]
        order = {s.name: i for i, s in enumerate(STEPS)}
        record["steps"].sort(key=lambda s: order.get(s.get("name"), 99))
    with atomic_path(out / "run.json") as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    md = html = None
    if report:
        rep = build_report(out)
        md, html = rep.markdown, rep.html
    result = SeriesResult(tuple(results), bool(smoke), gen_path, out, seconds, md, html)
    say(result.summary())
    return result


def _read_run(out: Path) -> dict | None:
    p = out / "run.json"
    try:
        return json.loads(p.read_text()) if p.is_file() else None
    except (OSError, ValueError):
        return None
