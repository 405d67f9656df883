# physlearn: `make run` trains the quickstart campaign, `make test` runs the whole test suite.
# Both create .venv and install physlearn (editable, with its test and lab extras) on first use.

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.physlearn-installed

.PHONY: run test lint typecheck check clean-runs help

help:
	@echo "make run    train configs/quickstart.yaml on the resistor-network simulator (writes runs/)"
	@echo "make test   run the test suite"
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

lint: $(STAMP)
	$(BIN)/ruff check physlearn drivers simulators tests benchmarks
	$(BIN)/ruff format --check physlearn drivers simulators tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy physlearn simulators drivers

check: lint typecheck

clean-runs:
	rm -rf runs
