# lamina: `make demo` opens the app on a demo store; `make test` runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench bench-readme lint screenshots clean

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	LAMINA_HOME=$${LAMINA_HOME:-$(CURDIR)/.demo/store} $(BIN)/lamina demo --workspace $(CURDIR)/.demo/workspace

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# BENCH_SCALE=0.1 runs every size at a tenth (a quick check); BENCH_ARGS passes the rest.
bench: $(STAMP)
	$(BIN)/python -m bench $(if $(BENCH_SCALE),--scale $(BENCH_SCALE)) $(BENCH_ARGS)

# Rewrites README.md's benchmark table from the last run's bench/results/results.json.
bench-readme: $(STAMP)
	$(BIN)/python -m bench.readme

# Code style (ruff), the import contracts (import-linter) and types (mypy strict). mypy and
# import-linter read sources from the filesystem, so they get a `lamina/` view of core/ and
# tui/: the installed package maps those folders through an import hook they do not use.
LINTED := core tui tests bench screenshots examples
lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	rm -rf .lint && mkdir -p .lint/lamina && ln -s ../../core .lint/lamina/core && ln -s ../../tui .lint/lamina/tui
	cd .lint && PYTHONPATH=. ../$(BIN)/lint-imports --config ../pyproject.toml
	MYPYPATH=.lint $(BIN)/python -m mypy -p lamina.core -p lamina.tui

screenshots: $(STAMP)
	$(BIN)/python screenshots/generate.py

clean:
	rm -rf $(VENV) .demo .pytest_cache
