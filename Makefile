# Two commands do all set-up on a fresh machine:
#   make run    create .venv if needed, install the pinned dependencies, run the pipeline
#   make test   the same set-up, then lint and the whole test suite
# A second call does not reinstall: .venv/.installed records the lock file it installed.

PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
# Stage commands in dvc.yaml say `python`: make it the virtual environment's.
export PATH := $(BIN):$(PATH)
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: install run test test-unit test-keras test-torch test-e2e lint bench lock tutorial quick clean

install: $(STAMP)

$(STAMP): requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	@cp requirements.lock $(STAMP)

run: install
	$(BIN)/dvc repro

# TensorFlow and PyTorch tests run in separate pytest processes: importing TensorFlow and then
# torchvision in one process segfaults. The framework-free suite (incl. end to end) runs last.
test: install lint test-keras test-torch test-unit

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

test-keras: install
	$(BIN)/python -m pytest tests/keras

test-torch: install
	$(BIN)/python -m pytest tests/torch

test-unit: install
	$(BIN)/python -m pytest tests --ignore=tests/keras --ignore=tests/torch

bench: install
	$(BIN)/python bench/pipeline_bench.py
	$(BIN)/python bench/train_bench.py

# The classic two-framework tutorial's recipe as a DVC experiment (see README).
tutorial: install
	$(BIN)/dvc exp run -n tutorial $(shell cat presets/tutorial.args)

# A grid of DVC experiments on a Dask cluster (README: "Sweeps on a Dask cluster"), e.g.
#   make sweep GRID=my-grid.yaml SWEEP_ARGS="--scheduler tcp://scheduler:8786"
GRID ?= sweep/grid.example.yaml
.PHONY: sweep
sweep: install
	$(BIN)/python -m sweep $(GRID) $(SWEEP_ARGS)

# The whole pipeline in about a minute: a few thousand images, one epoch (presets/README.md).
quick: install
	$(BIN)/dvc exp run -n quick $(shell cat presets/quick.args)

# requirements.lock pins every package for every platform at once (Linux x86_64 with or without a
# GPU, macOS arm64, ...): uv resolves requirements.txt universally, keeps the pins already in the
# lock unless requirements.txt moved them, and writes environment markers on packages only some
# platforms need (CUDA wheels and triton: Linux). `make lock UPGRADE=--upgrade` takes the newest
# allowed versions. tests/test_requirements_lock.py resolves the lock for Linux and macOS.
lock: install
	$(BIN)/uv pip compile requirements.txt --universal --python-version 3.11 --no-annotate \
		--custom-compile-command "make lock" --output-file requirements.lock $(UPGRADE)

clean:
	rm -rf $(VENV)
