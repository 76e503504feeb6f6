# Two entry points for a fresh Linux machine (Python 3.11+):
#   make demo   - create/reuse .venv, install, run the main job (results in out/)
#   make test   - create/reuse .venv, install, run the test suite
#   make test-browser - the notebooks in JupyterLab in headless Chromium (Debian chromium + chromium-driver)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test setup clean-venv test-browser browser-deps

setup: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m ipykernel install --sys-prefix --name facelib --display-name "Python 3 (facelib)" >/dev/null
	$(PY) -c "import facelib.widgets as w; w.enable_saved_widget_state()"  # JupyterLab saves widget state
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m facelib demo

test: $(STAMP)
	$(PY) -m pytest -q

# the inner loop: the suite without the tests marked slow (`make test` still runs everything)
.PHONY: test-fast
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

clean-venv:
	rm -rf $(VENV)

# The real-browser test needs Debian's chromium and chromium-driver; nothing is downloaded at run time.
browser-deps:
	@if [ -x "$${FACELIB_CHROMIUM:-/usr/bin/chromium}" ] && [ -x "$${FACELIB_CHROMEDRIVER:-/usr/bin/chromedriver}" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's chromium and chromium-driver with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else \
	  echo "make test-browser needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver):"; \
	  echo "  sudo apt-get install chromium chromium-driver   (or set FACELIB_CHROMIUM and FACELIB_CHROMEDRIVER)"; \
	  exit 1; \
	fi

test-browser: $(STAMP) browser-deps
	$(PY) -c "import facelib.widgets as w; w.enable_saved_widget_state()"
	FACELIB_BROWSER_TEST=1 $(PY) -m pytest -q -p no:cacheprovider tests/test_browser.py
