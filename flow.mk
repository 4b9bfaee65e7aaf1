# secateur flow targets. The top-level Makefile includes this file.
#
#   make rtl PE=32      Verilog, filelists and manifests of every engine in build/rtl/
#   make test           the lint gate, then the whole test suite (SIM=icarus for the Icarus subset)
#   make lint           verilator --lint-only -Wall on the shipped filelists of build/rtl/
#   make bench          benchmarks: cycles, utilization, simulator speed, generation time
#
# Every target bootstraps .venv/ from requirements.lock first if it is missing or stale.

PE ?= 32
SIM ?= verilator
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.secateur-installed
RTL_DIR := build/rtl
PYTEST_WORKERS ?= 2

.PHONY: rtl test lint bench venv clean

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/python -m secateur.sim.toolchain
	@touch $@

rtl: $(STAMP)
	$(BIN)/secateur rtl --engine all --pe $(PE) --out $(RTL_DIR)

lint: rtl
	@set -e; for filelist in $(RTL_DIR)/*/*.f; do \
	  echo "verilator --lint-only -Wall -F $$filelist"; \
	  $(BIN)/verilator --lint-only -Wall -F $$filelist; \
	done

test: lint
ifeq ($(SIM),icarus)
	$(BIN)/python -m pytest -m "icarus" -n $(PYTEST_WORKERS)
else
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS)
endif

bench: $(STAMP)
	@set -e; for script in benchmarks/bench_*.py; do $(BIN)/python $$script; done

clean:
	rm -rf build
