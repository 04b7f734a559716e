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
# Extra JupyterLab server flags, e.g. on a remote node reached by an SSH tunnel:
#   make lab LAB_ARGS="--no-browser --port 8888 --ip 127.0.0.1"
LAB_ARGS ?=
# The project's Jupyter kernel (this .venv's python), named in every notebook's metadata; esi.report runs it too.
KERNEL := esi
KERNEL_DISPLAY_NAME := ESI (.venv)
# What nbstripout's git filter strips besides outputs and counts: what every save rewrites without an edit
# (language_info holds the kernel's Python version), so a save with no edit leaves `git diff` empty.
NOTEBOOK_STRIP_KEYS := metadata.language_info
# Test worker processes (pytest-xdist), one per core of the 2-core machine the suite is timed on; 0: one process.
# --dist loadscope runs each test module in one worker (its fixtures are built once); tests/conftest.py orders the
# modules with slow tests first.
TEST_WORKERS ?= 2

.PHONY: help setup demo test bench lab notebook-filter clean-outputs

help:
	@echo "make setup   create .venv (torch $(TORCH_SPEC)) and install esi with test extras"
	@echo "make demo    set up if needed, then run the embedded-default demo into outputs/demo/"
	@echo "make test    set up if needed, then run the test suite (what CI runs)"
	@echo "make bench   set up if needed, then run every bench/ script"
	@echo "make lab     set up if needed, then start JupyterLab with the project's kernel (LAB_ARGS: server flags)"

setup: $(STAMP) notebook-filter

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install $(TORCH_SPEC)
	$(PY) -m pip install -e ".[test]"
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "$(KERNEL_DISPLAY_NAME)" >/dev/null
	@touch $(STAMP)

# Executes notebooks 01-04 with papermill on $(PARAMS) into outputs/demo/ and renders them (outputs/demo/index.html).
demo: setup
	$(PY) -m esi.report --config $(PARAMS)

# One BLAS/OpenMP thread per worker: two workers already fill the two cores, and idle BLAS threads spinning for a
# busy core slow small matrix products many times over.
test: setup
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 $(PY) -m pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder $(PYTEST_ARGS)

bench: setup
	@set -e; for script in bench/bench_*.py; do \
		echo "== $$script"; $(PY) $$script; \
	done

# The notebooks are the source: nbstripout's git filter (named for *.ipynb in the committed .gitattributes) commits
# them without outputs and without NOTEBOOK_STRIP_KEYS, whatever the saved file holds. Outside a git checkout
# (an unpacked archive) there is nothing to install. `make setup` runs it after the venv exists.
notebook-filter:
	@if git rev-parse --git-dir >/dev/null 2>&1; then \
		$(VENV)/bin/nbstripout --install --attributes .gitattributes && \
		git config filter.nbstripout.extrakeys "$(NOTEBOOK_STRIP_KEYS)"; \
	fi

# Serves the repository root (params/, the figures and index.html under outputs/ open from the file browser) and
# opens on notebooks/. The pickers offer the project's kernel only, and new notebooks start it (ipykernel's own
# "python3" would run whatever `python` is first on PATH). As root (a container) Jupyter refuses to start without
# --allow-root, so it is added then, and only then.
# Inline figures need matplotlib's default backend, not the Agg exported above for batch runs.
lab: setup
	@$(PY) -c "import jupyterlab" 2>/dev/null || $(PY) -m pip install -e ".[lab]"
	env -u MPLBACKEND $(VENV)/bin/jupyter lab --ServerApp.root_dir="$(CURDIR)" --LabApp.default_url=/lab/tree/notebooks \
		--KernelSpecManager.allowed_kernelspecs=$(KERNEL) --MultiKernelManager.default_kernel_name=$(KERNEL) \
		$(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

clean-outputs:
	rm -rf outputs/*/
