# `make demo`: set everything up and run the main job on the built-in default.
# `make test`: run the whole test suite (what CI runs); `make test-fast`: all but the tests marked slow (the edit loop).
# TORCH picks the torch build: the default pin gives the CUDA build from PyPI on a Linux GPU machine
# and the CPU build where a local CPU wheel is configured (CI). Override, e.g.:
#   make setup TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
EXTRAS ?= dev
BIN = $(VENV)/bin

.PHONY: setup demo test test-fast vtest clean gpu-carry

# The OpenCV sample street scene (PETS 2009), shipped by Debian/Ubuntu's opencv-doc package:
# downloaded as a .deb (no root needed) and only vtest.avi unpacked. `tagtrack demo` looks here.
VTEST = $(or $(TAGTRACK_CACHE),$(HOME)/.cache/tagtrack)/vtest.avi

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[$(EXTRAS)]'
	@# TrackEval (eval-track's HOTA / MOTA / IDF1) without its dependencies: see the bench extra in pyproject.toml.
	$(BIN)/pip install -q --no-deps 'trackeval>=1.3,<2'
	touch $@

demo: setup
	@# The real default model runs on vtest.avi; fetch it once (a failure is reported by the demo itself).
	@if [ -f model/weights/default.safetensors ]; then $(MAKE) --no-print-directory vtest || true; fi
	$(BIN)/tagtrack demo

vtest: $(VTEST)

$(VTEST):
	mkdir -p $(dir $@)
	cd $(dir $@) && apt-get download opencv-doc && \
	  dpkg-deb --fsys-tarfile opencv-doc_*.deb | tar -xO ./usr/share/doc/opencv-doc/examples/data/vtest.avi > $@.part && \
	  mv $@.part $@; rm -f $(dir $@)opencv-doc_*.deb

test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

clean:
	rm -rf $(VENV) out runs

# `make gpu-carry`: fill bench/gpu/carry/ (git-ignored) for the prepared GPU run: wheels the GPU machine lacks,
# vtest.avi and the packed training corpus; prints what travels against the 64 MiB limit (docs/engines.md).
gpu-carry: setup
	PYTHON=$(BIN)/python bench/gpu/prepare.sh
