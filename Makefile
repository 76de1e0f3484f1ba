# streamlstm: `make demo` runs the showcase, `make test` runs the test suite. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch, pinned so that pip never pulls a multi-GB CUDA build.
TORCH := torch==2.13.0

.PHONY: demo test lint bench install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[test,keras,demo,notebook,browser]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/python -m streamlstm demo

test: install
	$(BIN)/python -m pytest tests -q

lint: install
	$(BIN)/ruff check streamlstm tests benchmarks

bench: install
	$(BIN)/python benchmarks/bench_layers.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
