# Quick start: `make run` (set up + dvc repro on the embedded sample), `make test` (set up + test suite).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test lint setup clean plots lock pretrain gpu-wheels

setup: $(VENV)/.installed

# Install the pinned environment (requirements.lock), then the project itself without resolving anything again.
# Re-install when the lock or the project definition changes.
$(VENV)/.installed: pyproject.toml requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11) on PATH; set PYTHON=..." >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m pip check
	touch $@

# Re-resolve pyproject.toml's ranges in a fresh venv and pin the result (commit requirements.lock afterwards).
lock:
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/python -m pip install --quiet --upgrade pip
	.lockenv/bin/python -m pip install --quiet '.[dev]'
	{ echo "# Pinned environment for nst-bench (Linux x86_64, Python 3.11): every package \`pip install -e '.[dev]'\` resolves to."; \
	  echo "# make setup and CI install exactly these (then the project itself with --no-deps). Regenerate: \`make lock\`."; \
	  echo "# Generated $$(date -u +%Y-%m-%d) from pyproject.toml in a fresh venv."; \
	  .lockenv/bin/python -m pip freeze --exclude-editable | grep -v '^nst-bench'; } > requirements.lock.tmp
	mv requirements.lock.tmp requirements.lock && rm -rf .lockenv

run: setup
	dvc repro

test: setup
	python -m pytest

# Pretrain the feed-forward methods on the sample's train split (profiles/pretrain.yaml; resumes when interrupted) and
# export them as models/pretrained/<method>.pt + card, which the sample profile warm-starts from. Commit the results.
pretrain: setup
	for m in adain contrastive; do \
	  nst train --method $$m --profile pretrain --out models/pretrain/$$m && \
	  nst pretrained --method $$m --run models/pretrain/$$m --out models/pretrained/$$m.pt || exit 1; \
	done

# The wheels bench/gpu_check.py needs on the GPU machine beyond its own packages (bench/gpu_wheels.txt: Python 3.12,
# manylinux x86-64, no dependencies resolved: the list is the closure) into .gpu-wheels/ (git-ignored); the check's
# docstring says how to install them there without an index.
GPU_WHEEL_PLATFORMS := $(foreach n,2_17 2_24 2_27 2_28 2_31 2_34 2_35,--platform manylinux_$(n)_x86_64) \
	--platform manylinux2014_x86_64 --platform manylinux1_x86_64
gpu-wheels: setup
	rm -rf .gpu-wheels.tmp
	$(BIN)/python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  $(GPU_WHEEL_PLATFORMS) -d .gpu-wheels.tmp -r bench/gpu_wheels.txt
	rm -rf .gpu-wheels && mv .gpu-wheels.tmp .gpu-wheels
	@du -sh .gpu-wheels

plots: setup
	nst plots --out reports/dvc_plots

lint: setup
	ruff check . && ruff format --check .

clean:
	rm -rf $(VENV) data/raw data/prepared data/cache
