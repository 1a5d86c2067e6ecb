# Two commands on a fresh machine: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint typecheck unit bench docs screenshots clean

$(VENV)/.run-deps: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.test-deps: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.run-deps

# GOV.UK Frontend (served as static files by the pages) and axe-core (for the browser tests),
# from the npm registry, pinned by web/package-lock.json.
web/node_modules/.installed: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund --loglevel=error
	touch $@

## Start the service on http://127.0.0.1:8080 with everything under ./var
run: $(VENV)/.run-deps web/node_modules/.installed
	@echo "To fill it with demonstration data, run in another terminal: $(BIN)/archive demo"
	@echo "(it prints a token for each role; sign in at http://127.0.0.1:8080/signin)"
	$(BIN)/archive serve

## Lint, type-check and run the whole suite
test: lint typecheck unit

lint: $(VENV)/.test-deps
	$(BIN)/ruff check .

typecheck: $(VENV)/.test-deps
	$(BIN)/mypy

unit: $(VENV)/.test-deps web/node_modules/.installed
	$(BIN)/pytest

## Print the storage and ingest benchmarks (docs/benchmarks.md)
bench: $(VENV)/.test-deps
	$(BIN)/python -m bench.storage
	$(BIN)/python -m bench.ingest

## Regenerate docs/configuration.md from the settings model
docs: $(VENV)/.run-deps
	$(BIN)/python -m archive.settings > docs/configuration.md

## Photograph each staff page at 1280x800 into docs/screenshots/ (runs the browser tests)
screenshots: $(VENV)/.test-deps web/node_modules/.installed
	ARCHIVE_SCREENSHOTS=$(CURDIR)/docs/screenshots $(BIN)/pytest -q tests/pages

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
