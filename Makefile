# lamina: `make demo` opens the app on a demo store; `make test` runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench lint screenshots clean

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	LAMINA_HOME=$${LAMINA_HOME:-$(CURDIR)/.demo/store} $(BIN)/lamina demo --workspace $(CURDIR)/.demo/workspace

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

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
