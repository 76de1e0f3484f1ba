# streamlstm: `make demo` runs the showcase, `make test` runs the test suite. Both create .venv first;
# `demo` installs only what the showcase needs, `test` adds the test, Keras, notebook, browser and Ray extras.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch, pinned so that pip never pulls a multi-GB CUDA build.
TORCH := torch==2.13.0

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)

$(VENV)/.installed-demo: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[demo]'
	touch $@

$(VENV)/.installed-test: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[test,keras,demo,notebook,browser,ray]'
	touch $@

demo: $(VENV)/.installed-demo
	$(BIN)/python -m streamlstm demo

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest tests -q

lint: $(VENV)/.installed-test
	$(BIN)/ruff check streamlstm tests benchmarks notebooks

bench: $(VENV)/.installed-demo
	$(BIN)/python benchmarks/bench_layers.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
