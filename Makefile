# postwerk — the two commands are `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench docs clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Serve the demo organization on port offset 10000 (25 -> 10025, 587 -> 10587).
run: $(STAMP)
	$(BIN)/postwerk demo --data-dir ./postwerk-data

## The whole test suite (CI runs this through .ci/run).
test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

## Regenerate docs/configuration.md from the settings model.
docs: $(STAMP)
	$(BIN)/postwerk config reference > docs/configuration.md

## Benchmarks against Postfix + Dovecot (not run by CI).
bench: $(STAMP)
	bash bench/run.sh

clean:
	rm -rf $(VENV) postwerk-data .pytest_cache .mypy_cache .ruff_cache
