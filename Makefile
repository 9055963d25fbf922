# Two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8765

.PHONY: run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## run: set up .venv, run the example job in the foreground, then serve the dashboard
## with example jobs and the example pipeline (Ctrl-C stops the server)
run: $(STAMP)
	$(BIN)/nbjobs run examples/hello.ipynb -p greeting "hello from make run" -p n 100 --format html
	@echo
	@echo "Recorded jobs (\$$NBJOBS_HOME, default ~/.nbjobs):"
	$(BIN)/nbjobs ls --limit 5
	@echo
	$(BIN)/nbjobs demo --port $(PORT)

## test: set up .venv with dev extras, lint, run the whole test suite
test: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

bench: $(STAMP)
	$(BIN)/python bench/bench_run.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
