# Two commands on a fresh machine:  `make reproduce` (the whole book, PROFILE=cpu by default) and
# `make test`. Each sets itself up (a virtual environment in .venv) first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= cpu

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

.PHONY: setup data test test-gpu gpu-wheels reproduce book clean

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	set -o pipefail; $(PY) -m pip install -q -r requirements.txt 2>&1 | { grep -v "is ignored" || true; }
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

setup: $(VENV)/.installed  ## create .venv and install the pinned requirements

data: setup  ## fetch (or verify) every data file into LADDER_DATA / ~/.cache/ladder
	$(PY) -m ladder.fetch

test: setup data  ## run the test suite
	$(PY) -m pytest -q tests

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
