# InferLine — one command per task; each creates .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help demo test check bench clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,models,ray]'
	touch $(STAMP)

demo: $(STAMP)  ## plan a real pipeline for this machine, serve it, calibrate, load-step it with the Tuner, PNG
	$(BIN)/python scripts/demo.py

test: $(STAMP)  ## run the whole test suite
	$(BIN)/python -m pytest -q

check: $(STAMP)  ## ruff (lint + format) and mypy
	$(BIN)/ruff check src tests scripts examples benchmarks
	$(BIN)/ruff format --check src tests scripts examples benchmarks
	$(BIN)/mypy

bench: $(STAMP)  ## bench estimator, planner and engine: the SPEC §4 figures
	$(BIN)/inferline bench estimator
	$(BIN)/inferline bench planner
	$(BIN)/inferline bench engine

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
