# Two commands do everything on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING := false
# Playwright (the dashboard's browser tests) drives Debian's Chromium; it never downloads its own.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

.PHONY: install run test lint lock clean-outputs images container-test chromium

install: $(VENV)/.installed .dvc/plots-offline.html chromium

# `make test` opens `privfed dashboard` in headless Chromium (tests/integration/
# test_dashboard_browser.py). Installing it needs root: as root, apt installs it when it is
# missing; anyone else gets a message and keeps a working install (those tests then skip, except
# under CI, where they fail).
CHROMIUM := /usr/bin/chromium
chromium:
	@if [ -x $(CHROMIUM) ]; then \
		:; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing chromium (apt) for the dashboard's browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else \
		echo "note: $(CHROMIUM) is missing and installing it needs root:" \
			"sudo apt-get install chromium (the dashboard's browser tests skip without it)"; \
	fi

# torch first, pinned to the CPU build on local disk, so nothing else can pull a newer one.
# Every package is constrained to the exact version in requirements.lock: a new machine
# resolves what was tested.
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock torch==2.13.0
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $@

# `dvc plots show` without the internet: DVC's page with Vega inlined (.dvc/config names it).
.dvc/plots-offline.html: $(VENV)/.installed
	$(BIN)/python -m privfed.offline $@

# Re-resolve pyproject.toml's ranges in a fresh environment and write the exact versions.
LOCK_VENV := .venv-lock
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install --quiet torch==2.13.0
	$(LOCK_VENV)/bin/python -m pip install --quiet -e '.[dev]'
	{ head -n 2 requirements.lock; $(LOCK_VENV)/bin/python -m pip freeze --exclude-editable \
		| grep -v '^privfed'; } > requirements.lock.new
	mv requirements.lock.new requirements.lock
	rm -rf $(LOCK_VENV)

run: install
	$(BIN)/dvc repro

# Two pytest-xdist workers; tests/conftest.py orders the slow modules first and keeps each
# non-integration module on one worker. `make test PYTEST_WORKERS=0` runs in this process.
PYTEST_WORKERS ?= 2
test: install
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadgroup --no-loadscope-reorder \
		--durations=25 tests

# The project image (components/Dockerfile), tagged by git commit (`git describe --dirty`), on a
# running Docker daemon; GPU=1 builds the CUDA image too (components/Dockerfile.gpu; not built here).
# Without a registry the base image comes from the Debian mirror apt uses (needs root and
# debootstrap). See components/build-images.sh for BASE_IMAGE, TORCH_FIND_LINKS, BUILD_CA_FILES.
images:
	components/build-images.sh

# Container tests (tests/containers, never part of `make test`): every stage in the image by its
# Kubeflow component's command line, compared with `dvc repro`, and a federation of containers.
# They run the image `make images` built from this commit (PRIVFED_IMAGE overrides).
container-test: install
	$(BIN)/python -m pytest -q -n 0 --durations=10 tests/containers

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean-outputs:
	rm -rf data/raw data/partitions models metrics plots reports mlflow.db mlartifacts
