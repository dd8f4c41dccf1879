# Two entry points that work on a fresh machine (Python 3.11, pip, make): `make demo` and `make test`.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin

.PHONY: demo dev test lint unit bench chaos clean

$(BIN)/orchestrator: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/orchestrator            ## the 2023 Okta support-breach scenario on the embedded default
	$(BIN)/orchestrator dev --demo

dev: $(BIN)/orchestrator             ## run the orchestrator on the embedded default until Ctrl-C
	$(BIN)/orchestrator dev

lint: $(BIN)/orchestrator
	$(BIN)/ruff check orchestrator tests bench
	$(BIN)/mypy

test: lint                           ## the whole suite: lint, types, unit and integration tests
	$(BIN)/pytest -n 2 --dist loadfile

bench: $(BIN)/orchestrator
	$(BIN)/python bench/throughput.py

chaos: $(BIN)/orchestrator           ## the chaos suite at the issue's sizes (~12 min); exits 1 if an invariant fails
	$(BIN)/python bench/chaos.py all

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
