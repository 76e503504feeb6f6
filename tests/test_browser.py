"""The notebooks as a person uses them: JupyterLab in headless Chromium, driven through Selenium.

After a smoke ``make demo`` (``python -m facelib demo --smoke``) in a scratch copy of the
repository, notebooks 03, 04 and 05 are opened in JupyterLab from ``notebooks/`` and run with
*Run > Run All Cells*; then a slider is dragged and a row box ticked (05: then *Run*), the
preview image must change and its caption must name the new settings; the notebook is saved,
reopened (same kernel, then after the kernels were shut down) and no cell may show "Error
displaying widget". The executed copies the demo wrote (``out/notebooks/``) must open cleanly too.

Needs Debian's ``chromium`` and ``chromium-driver`` (``make test-browser`` installs them with
apt-get when it can) and never downloads a browser or driver: Selenium gets the driver's path,
so Selenium Manager is not used. Run with ``make test-browser`` (``FACELIB_BROWSER_TEST=1``);
skipped otherwise. Screenshots go to a temporary folder that is printed (and named in a failure).
``FACELIB_BROWSER_WORKDIR=<the folder printed by a previous run>`` reuses that run's smoke demo.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import REPO

if not os.environ.get("FACELIB_BROWSER_TEST"):
    pytest.skip("the real-browser test runs with `make test-browser`", allow_module_level=True)

webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium")
pytest.importorskip("jupyterlab", reason="the browser test needs jupyterlab")
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = os.environ.get("FACELIB_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("FACELIB_CHROMEDRIVER", "/usr/bin/chromedriver")
NOTEBOOKS = ("03_style_transfer", "04_expressions", "05_face_swap")
WIDGET_ERROR = "Error displaying widget"
NB = ".jp-NotebookPanel:not(.lm-mod-hidden)"  # the notebook on show

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str, method: str = "GET") -> object:
    req = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(req, timeout=10) as r:
        body = r.read()
    return json.loads(body) if body else None


class Lab:
    """A JupyterLab server on a scratch copy of the repository, and a headless Chromium on it."""

    def __init__(self, root: Path, shots: Path, port: int, server: subprocess.Popen, driver) -> None:
        self.root, self.shots, self.port, self.server, self.driver = root, shots, port, server, driver
        self.base = f"http://127.0.0.1:{port}"
        self.n_shot = 0

    # -- helpers -----------------------------------------------------------------------
    def shot(self, name: str) -> Path:
        self.n_shot += 1
        path = self.shots / f"{self.n_shot:02d}_{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def fail(self, message: str) -> None:
        path = self.shot("FAILED")
        pytest.fail(f"{message} (screenshot: {path}; all screenshots in {self.shots})")

    def wait(self, what: str, condition, timeout: float = 60):
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.25,
                                 ignored_exceptions=(StaleElementReferenceException,)).until(lambda d: condition())
        except TimeoutException:
            self.fail(f"timed out after {timeout:.0f} s waiting for: {what}")

    def click_menu(self, menu: str, label: str) -> None:
        """Click menu ``menu`` of the menu bar, then its item ``label`` (as a person does)."""
        d = self.driver
        item = next(e for e in d.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-itemLabel") if e.text == menu)
        item.click()

        def entry():
            return [e for e in d.find_elements(By.CSS_SELECTOR, ".lm-Menu-item .lm-Menu-itemLabel")
                    if e.text.strip() == label and e.is_displayed()]

        self.wait(f"menu item {menu} > {label}", entry, 20)
        entry()[0].click()

    def open(self, rel: str) -> None:
        """Open ``rel`` alone (``?reset``: no tabs restored from before) and wait for its kernel."""
        self.driver.get(f"{self.base}/lab/tree/{rel}?reset")
        self.wait(f"{rel} to open", lambda: self.driver.find_elements(By.CSS_SELECTOR, f"{NB} .jp-Cell"), 90)
        self.wait("the kernel to start", lambda: self.kernel_idle(), 90)

    def shutdown_kernels(self) -> None:
        for s in _get_json(f"{self.base}/api/sessions"):
            _get_json(f"{self.base}/api/sessions/{s['id']}", method="DELETE")

    def kernel_idle(self) -> bool:
        sessions = _get_json(f"{self.base}/api/sessions")
        return bool(sessions) and all(s["kernel"]["execution_state"] == "idle" for s in sessions)

    def prompts(self) -> list[str]:
        cells = self.driver.find_elements(By.CSS_SELECTOR, f"{NB} .jp-CodeCell .jp-InputPrompt")
        return [e.text.strip() for e in cells]

    def page_text(self) -> str:
        return self.driver.find_element(By.CSS_SELECTOR, "body").text

    def run_all(self, name: str) -> None:
        self.click_menu("Run", "Run All Cells")

        def done() -> bool:
            p = self.prompts()
            return bool(p) and all(t[1:-2].strip().isdigit() for t in p) and self.kernel_idle()

        self.wait(f"{name}: every cell to finish", done, 240)
        errors = [e.text[:300] for e in self.driver.find_elements(By.CSS_SELECTOR, f"{NB} .jp-OutputArea-output")
                  if "Traceback" in e.text]
        if errors:
            self.fail(f"{name}: a cell failed: {errors[0]}")

    def save(self, name: str) -> None:
        self.click_menu("File", "Save Notebook")
        self.wait(f"{name} to be saved", lambda: not self.driver.find_elements(
            By.CSS_SELECTOR, ".jp-mod-current.jp-mod-dirty, .lm-TabBar-tab.lm-mod-current.jp-mod-dirty"), 30)

    def panel(self):
        panels = self.driver.find_elements(By.CSS_SELECTOR, f"{NB} .facelib-preview")
        if len(panels) != 1:
            self.fail(f"expected one preview panel, found {len(panels)}")
        return panels[0]

    def _preview(self) -> dict:
        """The preview panel's shown image (src or None) and caption, read in one go (the widgets
        replace their DOM nodes when they change)."""
        return self.driver.execute_script("""
            const panels = document.querySelectorAll(arguments[0] + ' .facelib-preview');
            if (panels.length !== 1) return {count: panels.length, src: null, caption: ''};
            const img = [...panels[0].querySelectorAll('img')].find(i => i.offsetParent !== null);
            const caps = [...panels[0].querySelectorAll('span.facelib-preview-caption')].map(e => e.textContent);
            return {count: 1, src: img ? img.src : null, caption: caps.join(' ')};
        """, NB)

    def image_src(self) -> str | None:
        state = self._preview()
        if state["count"] != 1:
            self.fail(f"expected one preview panel, found {state['count']}")
        return state["src"]

    def caption(self) -> str:
        return self._preview()["caption"]

    def slider_handle(self, label: str, which: int = 0):
        for s in self.panel().find_elements(By.CSS_SELECTOR, ".widget-slider"):
            if any(lab.text.strip() == label for lab in s.find_elements(By.CSS_SELECTOR, ".widget-label")):
                handles = s.find_elements(By.CSS_SELECTOR, ".noUi-handle")
                self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", handles[which])
                return handles[which]
        self.fail(f"no slider labelled {label!r} in the preview panel")

    def drag(self, handle, dx: int) -> None:
        ActionChains(self.driver).click_and_hold(handle).pause(0.2).move_by_offset(dx // 2, 0).pause(0.2) \
            .move_by_offset(dx - dx // 2, 0).pause(0.2).release().perform()

    def run_button(self):
        return next(b for b in self.panel().find_elements(By.CSS_SELECTOR, "button") if b.text.strip() == "Run")

    def expect_new_image(self, name: str, before: str | None, setting: str) -> str:
        """After a change: the image is recomputed at once, or the caption says it is out of date
        and Run recomputes it. Either way the new image's caption names ``setting``."""
        def settled() -> bool:
            cap = self.caption()
            return ("press Run" in cap) or (self.image_src() not in (None, before) and "computing" not in cap)

        self.wait(f"{name}: the preview to react", settled, 120)
        if "press Run" in self.caption():
            if self.image_src() != before:
                self.fail(f"{name}: the image changed although the caption says it is out of date")
            self.run_button().click()
            self.wait(f"{name}: the image after Run", lambda: self.image_src() not in (None, before)
                      and "computing" not in self.caption() and "press Run" not in self.caption(), 180)
        cap = self.caption()
        if setting not in cap or "failed" in cap:
            self.fail(f"{name}: the caption {cap!r} does not describe the new image ({setting!r})")
        return self.image_src()

    def widget_errors(self) -> list[str]:
        return [e.text for e in self.driver.find_elements(By.XPATH, f"//*[contains(text(), '{WIDGET_ERROR}')]")]

    def reopen_clean(self, rel: str, label: str) -> None:
        self.open(rel)
        self.wait(f"{rel} ({label}): widgets to render", lambda: not [
            e for e in self.driver.find_elements(By.XPATH, "//*[contains(text(), 'Loading widget')]")
        ] and self.driver.find_elements(By.CSS_SELECTOR, f"{NB} .facelib-preview img, {NB} .jp-OutputArea-output"), 60)
        time.sleep(2)  # a widget that is not found says so only after the widget manager restored
        errors = self.widget_errors()
        target = self.driver.find_elements(By.CSS_SELECTOR, f"{NB} .facelib-preview") or [
            e for e in self.driver.find_elements(By.XPATH, f"//*[contains(text(), '{WIDGET_ERROR}')]")]
        if target:
            self.driver.execute_script("arguments[0].scrollIntoView({block: 'end'});", target[0])
            time.sleep(1)
        self.shot(f"{Path(rel).stem}_reopened_{label}")
        if errors:
            self.fail(f"{rel} reopened ({label}): {len(errors)} output(s) show {errors[0]!r}")


def _say(config, text: str) -> None:
    """A line on the terminal even when pytest captures output (where the screenshots are, timings)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None:
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            reporter.write_line(text)


@pytest.fixture(scope="module")
def lab(pytestconfig):
    for exe, pkg in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
            pytest.fail(f"{exe} not found: install Debian's {pkg} (`make test-browser` does it with apt-get as root)")
    t0 = time.perf_counter()
    reuse = os.environ.get("FACELIB_BROWSER_WORKDIR")  # a previous run's folder: its smoke demo is reused
    work = Path(reuse) if reuse else Path(tempfile.mkdtemp(prefix="facelib-browser-"))
    shots = Path(tempfile.mkdtemp(prefix="screenshots-", dir=work))
    root = work / "repo"  # what a user has: a clone with notebooks/ (facelib linked to this checkout)
    fresh = not (root / "out" / "run.json").is_file()
    if fresh:
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        (root / "facelib").symlink_to(REPO / "facelib", target_is_directory=True)
    shutil.rmtree(root / "notebooks", ignore_errors=True)
    shutil.copytree(REPO / "notebooks", root / "notebooks")
    for d in ("lab-settings", "workspaces", "chromium-profile", "runtime"):
        shutil.rmtree(work / d, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACELIB_", "JUPYTER", "JPY_"))}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(root), IPYTHONDIR=str(work / "ipython"),
               JUPYTER_CONFIG_DIR=str(work / "jupyter-config"), JUPYTER_RUNTIME_DIR=str(work / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(work / "lab-settings"), JUPYTERLAB_WORKSPACES_DIR=str(work / "workspaces"),
               SE_OFFLINE="true")
    # no news or update toasts over the notebook
    notif = work / "lab-settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notif.parent.mkdir(parents=True)
    notif.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    # every cell rendered (not only those scrolled into view), so no widget error can hide off screen
    tracker = work / "lab-settings" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text(json.dumps({"windowingMode": "none"}))

    # 1. the smoke demo, as `make demo` runs it without weights (fewer steps)
    if fresh:
        demo = subprocess.run([sys.executable, "-m", "facelib", "demo", "--smoke", "--steps", "3", "--no-progress",
                               "-p", "OUTPUT_SIZE=256"], cwd=root, env=env, capture_output=True, text=True,
                              timeout=900)
        assert demo.returncode == 0, f"smoke demo failed:\n{demo.stdout[-3000:]}\n{demo.stderr[-3000:]}"
    t_demo = time.perf_counter() - t0

    # 2. JupyterLab on a free localhost port, no token (127.0.0.1 only), scratch settings
    port = _free_port()
    log = open(work / "jupyterlab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         "--ServerApp.port_retries=0", "--IdentityProvider.token=", "--ServerApp.password=",
         "--ServerApp.disable_check_xsrf=True",  # the test shuts kernels down through the REST API
         f"--ServerApp.root_dir={root}", "--LabApp.news_url=", "--ServerApp.open_browser=False",
         *(["--allow-root"] if os.geteuid() == 0 else [])],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    driver = None
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                _get_json(f"http://127.0.0.1:{port}/api/status")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not start; see {work / 'jupyterlab.log'}") from None
                time.sleep(0.5)

        # 3. headless Chromium through the Debian driver (never Selenium Manager)
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common import selenium_manager

        def no_manager(*_a, **_k):
            raise AssertionError("Selenium Manager was asked for a browser or driver")

        selenium_manager.SeleniumManager.binary_paths = no_manager
        opts = Options()
        opts.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1400,1100", f"--user-data-dir={work / 'chromium-profile'}",
                    "--no-first-run", "--disable-extensions"):
            opts.add_argument(arg)
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
        driver.set_page_load_timeout(90)
        _say(pytestconfig, f"\nbrowser test: smoke demo {t_demo:.0f} s; screenshots in {shots}")
        yield Lab(root, shots, port, server, driver)
        _say(pytestconfig, f"browser test: {time.perf_counter() - t0:.0f} s in all; screenshots in {shots}; "
                           f"rerun without the demo: FACELIB_BROWSER_WORKDIR={work}")
    finally:
        if driver is not None:
            driver.quit()
        try:
            os.killpg(server.pid, signal.SIGTERM)  # the server and the kernels it started
            server.wait(20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
        log.close()


def _saved_widget_outputs(path: Path) -> tuple[set[str], set[str]]:
    """(model ids the outputs show, model ids whose state is saved) of a notebook file."""
    nb = json.loads(path.read_text())
    shown = {o["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
             for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
             if "application/vnd.jupyter.widget-view+json" in o.get("data", {})}
    saved = set(nb.get("metadata", {}).get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
                .get("state", {}))
    return shown - {""}, saved


def test_notebooks_in_jupyterlab(lab: Lab, pytestconfig) -> None:
    t0 = time.perf_counter()
    timings = {}
    for name in NOTEBOOKS:
        t1 = time.perf_counter()
        rel = f"notebooks/{name}.ipynb"
        lab.open(rel)
        lab.run_all(name)
        lab.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", lab.panel())
        lab.shot(f"{name}_ran")
        if name == "03_style_transfer":
            before = lab.image_src()
            assert before, "03: the preview shows no image after Run All"
            lab.drag(lab.slider_handle("strength"), -70)
            lab.expect_new_image(name, before, "strength 0.")
        elif name == "04_expressions":
            before = lab.image_src()
            assert before, "04: the preview shows no image after Run All"
            boxes = lab.panel().find_elements(By.CSS_SELECTOR, "input[type=checkbox]")
            row0 = boxes[0]
            assert not row0.is_selected(), "04: row 0 is expected off in the expression mask"
            row0.click()
            after_box = lab.expect_new_image(name, before, "mask 0-")
            lab.drag(lab.slider_handle("strength"), -60)
            lab.expect_new_image(name, after_box, "strength ")
        else:  # 05: nothing is computed until Run; a change marks the shown image as out of date
            assert lab.image_src() is None and "press Run" in lab.caption(), lab.caption()
            lab.drag(lab.slider_handle("steps"), -25)
            lab.wait("05: the caption to follow the slider", lambda: "steps 25" not in lab.caption(), 30)
            time.sleep(1)
            assert lab.image_src() is None and "press Run" in lab.caption(), "05: a swap ran before Run was pressed"
            first = lab.expect_new_image(name, None, "steps ")  # presses Run
            lab.drag(lab.slider_handle("W+ rows", 1), 40)
            lab.wait("05: the caption to say the image is out of date", lambda: "changed to" in lab.caption(), 30)
            assert lab.image_src() == first, "05: the image changed without Run"
            lab.expect_new_image(name, first, "rows ")
        lab.shot(f"{name}_after_interaction")
        lab.save(name)
        shown, saved = _saved_widget_outputs(lab.root / rel)
        assert shown and shown <= saved, (
            f"{name}: the saved notebook shows widgets whose state is not saved: {sorted(shown - saved)[:3]} "
            "(JupyterLab's saveState setting; `make test-browser` sets it with enable_saved_widget_state)")
        lab.reopen_clean(rel, "same-kernel")
        lab.shutdown_kernels()  # one kernel at a time (memory)
        timings[name] = time.perf_counter() - t1

    # the next day: no kernel has the widgets any more; the saved state must show them
    for name in NOTEBOOKS:
        lab.reopen_clean(f"notebooks/{name}.ipynb", "new-kernel")
        if lab.image_src() is None:
            lab.fail(f"{name}: the preview image is gone after reopening with a new kernel")
        lab.shutdown_kernels()
    # the demo's executed copies open cleanly as well
    for name in NOTEBOOKS:
        lab.reopen_clean(f"out/notebooks/{name}.ipynb", "demo-output")
        lab.shutdown_kernels()
    _say(pytestconfig, "browser test: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
         + f"; all notebooks {time.perf_counter() - t0:.0f} s")
