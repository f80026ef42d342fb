# The two commands a newcomer needs are `make demo` and `make test` (see README.md).
# Everything is installed into .venv; nothing outside this folder is touched.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test validate fuzz bench clean

setup: $(STAMP)

# torch is pinned first: on this machine `torch==2.13.0` is a CPU build on disk; an open
# range would pull a multi-GB CUDA build. Then the project with its test extras.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(BIN)/globetrain demo

test: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .hypothesis
