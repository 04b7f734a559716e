# ESI: one place for every set-up and run command. `make help` lists them.
# Every target that runs code first makes sure .venv exists and holds the project (make setup).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# CPU build by default. On a GPU node: make setup TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.esi-installed
# Offline by default: nothing may download models at run time.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export MPLBACKEND := Agg
PARAMS ?= params/demo.yaml
PYTEST_ARGS ?=
# Test worker processes (pytest-xdist), one per core of the 2-core machine the suite is timed on; 0: one process.
# --dist loadscope runs each test module in one worker (its fixtures are built once); tests/conftest.py orders the
# modules with slow tests first.
TEST_WORKERS ?= 2

.PHONY: help setup demo test bench lab clean-outputs

help:
	@echo "make setup   create .venv (torch $(TORCH_SPEC)) and install esi with test extras"
	@echo "make demo    set up if needed, then run the embedded-default demo into outputs/demo/"
	@echo "make test    set up if needed, then run the test suite (what CI runs)"
	@echo "make bench   set up if needed, then run every bench/ script"
	@echo "make lab     set up if needed, then start JupyterLab with the project's kernel"

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install $(TORCH_SPEC)
	$(PY) -m pip install -e ".[test]"
	$(PY) -m ipykernel install --sys-prefix --name esi --display-name "ESI (.venv)" >/dev/null
	@touch $(STAMP)

# Executes notebooks 01-04 with papermill on $(PARAMS) into outputs/demo/ and renders them (outputs/demo/index.html).
demo: setup
	$(PY) -m esi.report --config $(PARAMS)

test: setup
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder $(PYTEST_ARGS)

bench: setup
	@set -e; for script in bench/bench_*.py; do \
		echo "== $$script"; $(PY) $$script; \
	done

# The notebooks' kernel "python3" runs `python` from PATH, so .venv/bin goes first; inline figures need the default
# matplotlib backend, not the Agg exported above for batch runs.
# The notebooks are the source: nbstripout's git filter commits them without outputs, whatever the saved file holds.
lab: setup
	@$(PY) -c "import jupyterlab" 2>/dev/null || $(PY) -m pip install -e ".[lab]"
	@$(VENV)/bin/nbstripout --is-installed 2>/dev/null || $(VENV)/bin/nbstripout --install
	env -u MPLBACKEND PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/jupyter lab --notebook-dir=notebooks

clean-outputs:
	rm -rf outputs/*/
