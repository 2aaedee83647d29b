# Two commands a newcomer needs: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Extras to install: `make setup EXTRAS=dev,cuda` adds JAX's CUDA wheels (README: Running on a GPU).
EXTRAS ?= dev
STAMP := $(VENV)/.installed-$(EXTRAS)

.PHONY: setup demo test test-fast test-all lint bench browser clean

setup: $(STAMP)

# Re-installs only when the package metadata or the pins change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "uv==0.13.8"
	$(BIN)/uv pip install --quiet --python $(BIN)/python -c constraints.txt -e ".[$(EXTRAS)]"
	touch $(STAMP)

demo: setup
	$(BIN)/valorl demo

# The suite, less the full agent x critic head matrix (marker full_matrix) and a few expensive
# single checks (marker expensive); lists the slowest
# tests. Compiled programs are cached in .jax-cache/, so a second run is faster.
test: setup
	$(BIN)/ruff check valorl tests benchmarks && $(BIN)/lint-imports
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15

# The inner loop: no end-to-end runs (marker slow), and stop at the first failure.
test-fast: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -x -m "not slow and not full_matrix and not expensive"

# Everything, the full agent x critic head and agent x ensemble matrices and the expensive
# checks included.
test-all: setup
	$(BIN)/ruff check valorl tests benchmarks && $(BIN)/lint-imports
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15 -m ""

lint: setup
	$(BIN)/ruff check valorl tests benchmarks && $(BIN)/lint-imports
	$(BIN)/ruff format --check valorl tests benchmarks

# The throughput table on the device JAX picks (a GPU with EXTRAS=dev,cuda), named in the table.
bench: setup
	$(BIN)/python benchmarks/gpu_throughput.py --agents iql --seeds 1,5

# Headless Chromium and its driver for the report's browser test (Debian/Ubuntu, apt-get).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || { \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends chromium chromium-driver; }

clean:
	rm -rf $(VENV) valorl-demo .pytest_cache .jax-cache
