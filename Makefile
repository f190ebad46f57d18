# The two front-door commands are `make devnet` and `make test`; both install
# what they need first. Torch is pinned to the CPU build that lies on the CI
# machines' disk and installed before the project so pip never pulls a CUDA build.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
NODES ?= 4
STEPS ?=
DEVNET_ARGS ?=

.PHONY: install devnet test test-fast lint typecheck bench bench-network soak clean explorer-test

$(BIN)/tdml-node: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check torch==$(TORCH_VERSION)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

install: $(BIN)/tdml-node

devnet: install
	$(BIN)/tdml-node devnet --nodes $(NODES) $(if $(STEPS),--steps $(STEPS)) $(DEVNET_ARGS)

test: install
	$(BIN)/ruff check consensus p2p tdml_node tests benchmarks
	$(BIN)/mypy
	$(BIN)/pytest -n 2 --dist loadgroup -q

# The explorer page in a real headless Chromium. `install` never touches the
# system's packages, so `make test` skips these tests where Chromium is absent;
# this target installs Debian's chromium and chromium-driver (as root), requires
# the browser, and refreshes the screenshot in docs/explorer.png.
explorer-test: install
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver; \
	  else \
	    echo "explorer-test needs Debian's chromium and chromium-driver: sudo apt-get install -y chromium chromium-driver" >&2; exit 1; \
	  fi; \
	fi
	TDML_EXPLORER_REQUIRED=1 TDML_EXPLORER_SCREENSHOT=docs/explorer.png $(BIN)/pytest -n 0 -q tests/tdml_node/test_explorer.py

test-fast: install
	$(BIN)/pytest -n 2 -q -m "not slow"

lint: install
	$(BIN)/ruff check consensus p2p tdml_node tests benchmarks

typecheck: install
	$(BIN)/mypy

bench: install
	$(BIN)/python -m benchmarks.run_all

soak: install
	$(BIN)/python -m benchmarks.soak

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache
