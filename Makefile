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

.PHONY: install devnet test test-fast lint typecheck bench bench-network soak clean

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
