# Quick start: `make run` (set up + dvc repro on the embedded sample), `make test` (set up + test suite).
#
# The interpreter .venv is created with: `make PYTHON=/path/to/python` when given, else the first of
# PYTHON_CANDIDATES on PATH that runs and whose version is inside pyproject.toml's requires-python (oldest first:
# requirements.lock is resolved on 3.11, and CI runs it; `python3` last). `make which-python` prints the choice.
PYTHON_CANDIDATES := python3.11 python3.12 python3.13 python3.14 python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
# The PATH the interpreter is looked up on: the caller's, without .venv/bin (prepended below for the recipes).
LOOKUP_PATH := $(PATH)
export PATH := $(BIN):$(PATH)
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test lint setup clean plots lock lock-check which-python pretrain gpu-wheels rehearse

# ---------------------------------------------------------------------------------------------- everyday targets

run: setup
	dvc repro

# Two pytest workers (pytest-xdist), one file per worker at a time (module fixtures built once): the suite is mostly
# one process at a time, so on a 2-core machine this uses the second core (AVX2-only CPU: 21 min 20 s -> see README).
TEST_WORKERS ?= 2
test: setup
	python -m pytest -n $(TEST_WORKERS) --dist loadfile

# The full profile rehearsed end to end on this machine: a copy of the repository, loopback fakes of the Hub and
# Mapillary, `dvc repro` with profile: rehearsal (profiles/rehearsal.yaml), each stage's time (tests/rehearse.py).
rehearse: setup
	python tests/rehearse.py

plots: setup
	nst plots --out reports/dvc_plots

lint: setup
	ruff check . && ruff format --check .

# Pretrain the feed-forward methods on the sample's train split (profiles/pretrain.yaml; resumes when interrupted) and
# export them as models/pretrained/<method>.pt + card, which the sample profile warm-starts from. Commit the results.
# The methods: params.yaml's method_stages.train (what dvc.yaml's train stage iterates over).
pretrain: setup
	for m in $$(python -c 'import yaml; print(*yaml.safe_load(open("params.yaml"))["method_stages"]["train"])'); do \
	  nst train --method $$m --profile pretrain --out models/pretrain/$$m && \
	  nst pretrained --method $$m --run models/pretrain/$$m --out models/pretrained/$$m.pt || exit 1; \
	done

clean:
	rm -rf $(VENV) data/raw data/prepared data/cache

# ---------------------------------------------------------------------------------------------- set-up and tools

# The chosen interpreter's path (stdout) and "using <path> (Python X.Y.Z)" (stderr), or what was looked for and a failure.
FIND_PYTHON = PATH='$(LOOKUP_PATH)' /bin/sh .ci/find-python $(or $(PYTHON),$(PYTHON_CANDIDATES))

setup: $(VENV)/.installed

# Install the pinned environment (requirements.lock), then the project itself without resolving anything again.
# Re-install when the lock or the project definition changes.
$(VENV)/.installed: pyproject.toml requirements.lock
	@test -x $(BIN)/python || { py=$$($(FIND_PYTHON)) && echo "$$py -m venv $(VENV)" && "$$py" -m venv $(VENV); }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m pip check
	touch $@

which-python:
	@$(FIND_PYTHON)

# Re-resolve pyproject.toml's ranges in a fresh venv and pin the result (commit requirements.lock afterwards), on the
# interpreter `make which-python` picks: resolve on the oldest supported Python (3.11), so that no pin needed only there
# is missed, then `make lock-check` for the others. `freeze --all` pins setuptools too (torch needs it; Python >= 3.12
# venvs come without it), not pip itself.
lock:
	@rm -rf .lockenv && py=$$($(FIND_PYTHON)) && echo "$$py -m venv .lockenv" && "$$py" -m venv .lockenv
	.lockenv/bin/python -m pip install --quiet --upgrade pip
	.lockenv/bin/python -m pip install --quiet '.[dev]'
	{ echo "# Pinned environment for nst-bench (Linux x86_64; resolved on Python $$(.lockenv/bin/python -c 'import platform; print(platform.python_version())'), installs on every Python pyproject.toml's requires-python admits: \`make lock-check\`)."; \
	  echo "# Every package \`pip install -e '.[dev]'\` resolves to; make setup, environment.yml and CI install exactly these (then the project itself). Regenerate: \`make lock\`."; \
	  echo "# Generated $$(date -u +%Y-%m-%d) from pyproject.toml in a fresh venv."; \
	  .lockenv/bin/python -m pip freeze --all --exclude-editable | grep -v -e '^nst-bench' -e '^pip=='; } > requirements.lock.tmp
	mv requirements.lock.tmp requirements.lock && rm -rf .lockenv

# Does every pin of requirements.lock install on each Python that requires-python admits (Linux x86-64, glibc 2.17 to
# 2.36)? One pip dry run per version, no dependencies resolved (the lock is the closure), wheels only but for the
# pure-Python pins published only as source (LOCK_SDISTS). Reads the package index; downloads no wheel. Runs .venv's pip
# (or the interpreter `make which-python` picks).
LOCK_PYTHONS := 3.11 3.12 3.13 3.14
LOCK_SDISTS := antlr4-python3-runtime
LOCK_PLATFORMS := $(foreach n,36 35 34 33 32 31 30 29 28 27 26 25 24 23 22 21 20 19 18 17,--platform manylinux_2_$(n)_x86_64) \
	--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64 --platform linux_x86_64
lock-check:
	@py=$(BIN)/python; test -x $$py || py=$$($(FIND_PYTHON)) || exit 1; \
	tmp=$$(mktemp -d) && failed="" && for v in $(LOCK_PYTHONS); do \
	  if "$$py" -m pip install --quiet --dry-run --ignore-installed --no-deps --only-binary=:all: \
	       --no-binary $(LOCK_SDISTS) --python-version $$v --implementation cp $(LOCK_PLATFORMS) \
	       --target $$tmp/target -r requirements.lock --report $$tmp/$$v.json >$$tmp/$$v.log 2>&1; \
	  then echo "Python $$v: every pin installs ($$(grep -c '"download_info"' $$tmp/$$v.json) packages)"; \
	  else echo "Python $$v: FAILS"; grep -v '^WARNING' $$tmp/$$v.log | tail -4; failed="$$failed $$v"; fi; \
	done; rm -rf $$tmp; [ -z "$$failed" ] || { echo "the lock does not install on Python$$failed" >&2; exit 1; }

# The wheels bench/gpu_check.py needs on the GPU machine beyond its image's own packages (bench/gpu_wheels.txt: Python
# 3.12, manylinux x86-64, no dependencies resolved: the list is the closure) into .gpu-wheels/ (git-ignored); the check's
# docstring says how to install them there without an index. Prints the carry's size and fails when the wheels pass
# GPU_WHEELS_MAX_MIB (issue 25's budget) or, with the working tree that every call sends beside them (tracked and
# untracked-not-ignored files), DEVICE_CALL_MAX_MIB (the device tool's limit per call: /work/.library/device/README.md).
GPU_WHEEL_PLATFORMS := $(foreach n,2_17 2_24 2_27 2_28 2_31 2_34 2_35,--platform manylinux_$(n)_x86_64) \
	--platform manylinux2014_x86_64 --platform manylinux1_x86_64
GPU_WHEELS_MAX_MIB := 48
DEVICE_CALL_MAX_MIB := 64
gpu-wheels: setup
	rm -rf .gpu-wheels.tmp
	$(BIN)/python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  $(GPU_WHEEL_PLATFORMS) -d .gpu-wheels.tmp -r bench/gpu_wheels.txt
	rm -rf .gpu-wheels && mv .gpu-wheels.tmp .gpu-wheels
	@n=$$(ls .gpu-wheels/*.whl | wc -l); wheels=$$(cat .gpu-wheels/*.whl | wc -c); \
	tree=$$(git ls-files -z --cached --others --exclude-standard 2>/dev/null | du -cb --files0-from=- 2>/dev/null \
	  | tail -1 | cut -f1); \
	awk -v n=$$n -v w=$$wheels -v t=$${tree:-0} -v wmax=$(GPU_WHEELS_MAX_MIB) -v cmax=$(DEVICE_CALL_MAX_MIB) 'BEGIN { \
	  m = 1048576; \
	  printf "gpu-wheels: the carry is %d wheels, %.1f MiB (at most %d MiB); with the working tree each call sends (%.1f MiB): %.1f of %d MiB\n", \
	    n, w / m, wmax, t / m, (w + t) / m, cmax; \
	  if (w > wmax * m) { printf "gpu-wheels: the wheels pass %d MiB: carry fewer (bench/gpu_wheels.txt)\n", wmax > "/dev/stderr"; exit 1 } \
	  if (w + t > cmax * m) { printf "gpu-wheels: wheels + working tree pass the %d MiB a call may send\n", cmax > "/dev/stderr"; exit 1 } }'

