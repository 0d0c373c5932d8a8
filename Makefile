# gapprobe: two commands on a fresh machine — `make demo` and `make test`.
# Whatever the build needs beyond cargo is bootstrapped into .tools/ (git-ignored):
#   * CMake >= 3.26 from PyPI (hdf5-metno's bundled static HDF5 2.x needs it; Debian 12 ships 3.25)
#   * a Python venv with h5py + numpy for the cache interoperability check in `make test`
# `make test` also runs CUDA kernels on the host (tools/kernel_emulation, g++ only): the add+norm
# kernel and the attention kernels, with no GPU.
SHELL := /bin/bash
TOOLS := $(CURDIR)/.tools
CMAKE_VENV := $(TOOLS)/cmake-venv
PY_VENV := $(TOOLS)/py-venv
CMAKE_STAMP := $(CMAKE_VENV)/.ok
PY_STAMP := $(PY_VENV)/.ok
export PATH := $(CMAKE_VENV)/bin:$(PATH)
CARGO ?= cargo
DEMO_OUT ?= reports/demo

.PHONY: demo test build bench fmt clean-tools

demo: $(CMAKE_STAMP)
	$(CARGO) run --release --locked -- demo --out $(DEMO_OUT)

build: $(CMAKE_STAMP)
	$(CARGO) build --release --locked

test: $(CMAKE_STAMP) $(PY_STAMP)
	$(CARGO) test --release --locked --workspace
	GAPPROBE_BIN=$(CURDIR)/target/release/gapprobe $(PY_VENV)/bin/python tools/check_cache_h5py.py
	bash tools/kernel_emulation/run.sh

bench: $(CMAKE_STAMP)
	$(CARGO) run --release --locked -- bench

$(CMAKE_STAMP):
	@command -v cmake >/dev/null && cmake -P tools/cmake_version_ok.cmake 2>/dev/null && mkdir -p $(CMAKE_VENV)/bin && touch $@ && exit 0; \
	echo "bootstrapping CMake >= 3.26 from PyPI into $(CMAKE_VENV)"; \
	python3 -m venv $(CMAKE_VENV) && $(CMAKE_VENV)/bin/pip install -q --disable-pip-version-check 'cmake>=3.26,<5' && touch $@

$(PY_STAMP):
	python3 -m venv $(PY_VENV) && $(PY_VENV)/bin/pip install -q --disable-pip-version-check -r tools/requirements-check.txt && touch $@

clean-tools:
	rm -rf $(TOOLS)
