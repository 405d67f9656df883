# physlearn: `make run` trains the quickstart campaign, `make test` runs the whole test suite
# (`make test-fast`: the tests not marked slow, in under a minute).
# Both create .venv and install physlearn (editable, with its test and lab extras) on first use.

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.physlearn-installed

.PHONY: run test test-fast lint typecheck check clean-runs help

help:
	@echo "make run    train configs/quickstart.yaml on the resistor-network simulator (writes runs/)"
	@echo "make test   run the whole test suite (what CI runs)"
	@echo "make test-fast  the inner loop: every test not marked slow, on two processes (< 1 min)"
	@echo "make check  ruff + mypy"

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/physlearn run configs/quickstart.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" -n 2

lint: $(STAMP)
	$(BIN)/ruff check physlearn drivers simulators tests benchmarks
	$(BIN)/ruff format --check physlearn drivers simulators tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy physlearn simulators drivers

check: lint typecheck

clean-runs:
	rm -rf runs
