# `make demo`: set everything up and run the main job on the built-in default.
# `make test`: run the test suite.
# TORCH picks the torch build: the default pin gives the CUDA build from PyPI on a Linux GPU machine
# and the CPU build where a local CPU wheel is configured (CI). Override, e.g.:
#   make setup TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
EXTRAS ?= dev
BIN = $(VENV)/bin

.PHONY: setup demo test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[$(EXTRAS)]'
	touch $@

demo: setup
	$(BIN)/tagtrack demo

test: setup
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) out runs
