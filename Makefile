# Two commands on a fresh machine:  `make reproduce` (the whole book, PROFILE=cpu by default) and
# `make test`. Each sets itself up (a virtual environment in .venv) first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= cpu
# pip byte-compiles what it installs (~2 of a fresh install's ~4 min here). Kept: with PYTHONDONTWRITEBYTECODE
# set (as on this project's machines) nothing would compile later, and every process (each torchrun rank, each
# notebook kernel) would compile torch and transformers again: ~5 s of CPU per process.
PIP := $(PY) -m pip install -q
# pytest workers (pytest-xdist). --dist loadfile keeps each test file on one worker, so a module's fixtures
# (the smoke book of tests/test_book.py, the models of tests/test_tp.py) are built once.
TEST_WORKERS ?= 2

# Data (FineWeb/C4 text, eval sets, tokenizers, stories260K): $LADDER_DATA if set, else ../shared/data when
# it exists, else the user cache ~/.cache/ladder, which `make data` fills from the sources (ladder/data_manifest.csv).
ifneq ($(wildcard ../shared/data),)
export LADDER_DATA ?= $(abspath ../shared/data)
endif

# cpu/smoke profiles run offline from LADDER_DATA; the gpu profile reaches the Hugging Face hub.
ifeq ($(PROFILE),gpu)
OFFLINE ?= 0
else
OFFLINE ?= 1
endif
ifeq ($(OFFLINE),1)
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
endif

.PHONY: setup torch data test test-fast test-gpu gpu-wheels reproduce book clean mutate

# torch first: on a machine without an NVIDIA GPU (no nvidia-smi) the CPU build of requirements.txt's torch
# from TORCH_CPU_INDEX (PyPI's default Linux wheel is the multi-GB CUDA build); where that index cannot be
# reached, plain pip, said so. With a GPU (or a torch already in the venv) pip's choice / the one present is kept.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
torch:  ## install torch first: the CPU build when there is no NVIDIA GPU
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@req=$$(grep -E '^torch==' requirements.txt); \
	if $(PY) -c "import torch" 2>/dev/null; then \
	  echo "[setup] torch $$($(PY) -c 'import torch; print(torch.__version__)' 2>/dev/null) already installed: kept"; \
	elif command -v nvidia-smi >/dev/null 2>&1; then \
	  echo "[setup] NVIDIA GPU found: $$req from pip's index (a CUDA build)"; \
	  $(PIP) "$$req"; \
	else \
	  echo "[setup] no NVIDIA GPU (no nvidia-smi): the CPU build of $$req from $(TORCH_CPU_INDEX)"; \
	  $(PIP) "$$req" --index-url $(TORCH_CPU_INDEX) --timeout 20 --retries 1 2>&1 \
	    | { grep -v -E "is ignored|Retrying \(Retry" || true; }; \
	  if ! $(PY) -c "import torch" 2>/dev/null; then \
	    echo "[setup] $(TORCH_CPU_INDEX) could not be reached: installing $$req with plain pip instead (on Linux"; \
	    echo "[setup] that is the CUDA build, several GB; set TORCH_CPU_INDEX to a reachable mirror to avoid it)"; \
	    $(PIP) "$$req"; \
	  fi; \
	fi

$(VENV)/.installed: requirements.txt pyproject.toml
	$(MAKE) --no-print-directory torch
	set -o pipefail; $(PIP) -r requirements.txt 2>&1 | { grep -v "is ignored" || true; }
	$(PIP) --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

setup: $(VENV)/.installed  ## create .venv and install the pinned requirements

data: setup  ## fetch (or verify) every data file into LADDER_DATA / ~/.cache/ladder
	$(PY) -m ladder.fetch

test: setup data  ## run the test suite (what CI runs), on TEST_WORKERS pytest workers
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests

test-fast: setup data  ## the edit loop: every test not marked slow (the smoke book, the wheel, torchrun, compile)
	$(PY) -m pytest -q -x -n $(TEST_WORKERS) --dist loadfile -m "not slow" tests

# Mutation testing of the verdict rules, ladder/claims.py and ladder/stats.py ([tool.mutmut] in pyproject.toml):
# mutmut changes one thing at a time (a < for a <=, a number, a condition) in a copy under mutants/ and reruns
# the rules' tests; the changes no test notices ("survived") are listed at the end. Not part of `make test`.
# MUTANTS narrows the run by name, e.g. MUTANTS='ladder.claims.x_rule_*'; a rerun only redoes what changed.
MUTANTS ?=
mutate: setup  ## mutation-test the verdict rules against their tests (mutmut) and list what survived
	$(PIP) -r requirements-mutation.txt
	$(VENV)/bin/mutmut run $(MUTANTS)
	$(VENV)/bin/mutmut results

# Notebooks whose executed copy is up to date (same notebook, parameters and profile) are skipped (a note
# names ladder/ files changed since they ran);
# FORCE=1 re-executes them all (the committed book's cpu-profile copies included). Only PROFILE=cpu writes
# book/; other profiles write _output/<PROFILE>/book (and data/results/<PROFILE>/).
reproduce: setup data  ## run every notebook with PROFILE's parameters, then build the book
	$(PY) -m ladder.pipeline --profile $(PROFILE) $(if $(filter 1,$(FORCE)),--force,)

book: setup  ## rebuild the book from the stored executed notebooks
	$(PY) -m ladder.pipeline --profile $(PROFILE) --book-only

clean:
	rm -rf book/_build

# Wheels for chapter 2's gpu1 run on a GPU machine that has torch but no network, papermill, ipykernel or
# myst-nb (Python 3.12 there; PYVER=3.x for another): run here, carry .whl/ (~40 MB), see scripts/gpu_check.sh.
PYVER ?= 3.12
gpu-wheels: setup  ## download Python $(PYVER) wheels of papermill, ipykernel, myst-nb and pytest-timeout (+ deps) into .whl/
	$(PY) -m pip download -q --python-version $(PYVER) --only-binary=:all: -d .whl \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	  $(shell grep -E '^(papermill|ipykernel|myst-nb|pytest-timeout)==' requirements.txt)
	du -sh .whl

# The GPU checks (tests/gpu; every test skips without CUDA). On a GPU node whose torch is preinstalled:
# `make test-gpu PY=python` (no venv needed; PYTHONPATH points at this checkout).
test-gpu:
	PYTHONPATH=$(CURDIR) $(PY) -m pytest -q tests/gpu
