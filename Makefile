# The two commands a newcomer needs are `make demo` and `make test` (see README.md).
# Everything is installed into .venv; nothing outside this folder is touched.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test validate fuzz soak bench clean

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

# Issue 6's proof on this machine (root needed for the network namespaces): the shaped
# network with mid-run changes, faults (kills, a dead bootstrap, a full disk, SIGSTOP) and
# hostile peers. Reports land in benchmarks/results/validation/. Tens of minutes.
validate: setup
	$(BIN)/python -m globetrain.validation.shaped
	$(BIN)/python -m globetrain.validation.faults
	$(BIN)/python -m globetrain.validation.hostile

# One million inputs into the wire decoder and every message parser (~5 minutes on 2 cores).
fuzz: setup
	$(BIN)/python -m globetrain.validation.fuzz --inputs 1000000

# 16 devices for 10 minutes: memory and open files of every process must stay flat.
soak: setup
	$(BIN)/python -m globetrain.validation.soak --devices 16 --minutes 10

bench: setup
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .hypothesis
