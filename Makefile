# Two entry points for a fresh Linux machine (Python 3.11+):
#   make demo   - create/reuse .venv, install, run the main job (results in out/)
#   make test   - create/reuse .venv, install, run the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test setup clean-venv

setup: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m ipykernel install --sys-prefix --name facelib --display-name "Python 3 (facelib)" >/dev/null
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
