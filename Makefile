# Quick start: `make run` (set up + dvc repro on the embedded sample), `make test` (set up + test suite).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test lint setup clean plots

setup: $(VENV)/.installed

# Re-install when the project definition changes.
$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11) on PATH; set PYTHON=..." >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

run: setup
	dvc repro

test: setup
	python -m pytest

plots: setup
	nst plots --out reports/dvc_plots

lint: setup
	ruff check . && ruff format --check .

clean:
	rm -rf $(VENV) data/raw data/prepared data/cache
