# secateur flow targets. The top-level Makefile includes this file.
#
#   make rtl PE=32      Verilog, filelists and manifests of every engine in build/rtl/
#   make export PE=32   integration bundles (Verilog, FuseSoC core, C header, SDC) in build/export/
#   make test           the lint gate, then the whole test suite (SIM=icarus for the Icarus subset)
#   make regress [N=50] make test's checks on every parameter set, N drawn sets per engine
#   make lint           verilator --lint-only -Wall on the shipped filelists of build/rtl/
#   make bench          benchmarks: cycles, utilization, simulator speed, generation time
#   make net ENGINE=ternary [PE=8] [NET_ARGS='--set arch=cnn']
#                       train, compress and run the digits network through the RTL
#   make compile MODEL=model.onnx ENGINE=dense CALIB=calib.npy [TEST=x.npy LABELS=y.npy]
#                       [COMPILE_ARGS='--pe 8 --set density=0.5']
#                       compile a float ONNX/.pt2 model onto an engine, into build/compile/<engine>/
#   make synth PE=32    Yosys cell counts and nextpnr Fmax of every engine in build/synth/
#   make report PE=32   build/report/index.html: every engine against the dense baseline (reads
#                       build/synth, build/net and build/explore when present)
#   make explore [EXPLORE_ARGS='--cycles model']
#                       weight precision x structured sparsity on the digits MLP, build/explore/
#   make coverage [COVERAGE_TESTS=...]
#                       the engines' regression built with Verilator coverage: line, branch and
#                       toggle coverage per engine, build/coverage/report.txt + annotated sources
#   make mutate [MUTATE_ARGS='--limit 40 --seed 1 --engine dense']
#                       mutation score of the regression (a benchmark, not in CI)
#
# Every target bootstraps .venv/ from requirements.lock first if it is missing or stale.

PE ?= 32
SIM ?= verilator
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.secateur-installed
RTL_DIR := build/rtl
SYNTH_DIR := build/synth
PYTEST_WORKERS ?= 2

.PHONY: rtl test lint bench synth venv clean

# The wall time of each phase of this make run (venv, rtl, lint, tests), printed at the end of
# make test and make regress, so that a CI log shows where its minutes went. A phase appends
# "name seconds-since-epoch" to PHASE_LOG when it ends; one that was up to date appends nothing.
PHASE_LOG := build/phases.log
_phase_start := $(shell mkdir -p build && echo "start $$(date +%s)" > $(PHASE_LOG))
phase_done = echo "$(1) $$(date +%s)" >> $(PHASE_LOG)
phase_report = echo "phase times (wall, a phase not listed was up to date):"; \
  awk 'NR == 1 {t = $$2; next} {printf "  %-8s %5d s\n", $$1, $$2 - t; t = $$2} \
       END {printf "  %-8s %5d s\n", "total", t - start}' start=$$(head -1 $(PHASE_LOG) | cut -d' ' -f2) $(PHASE_LOG)
# A pytest run that reports the phase times whether it passes or fails, and keeps its status.
timed_pytest = echo '$(BIN)/python -m pytest $(1)'; status=0; $(BIN)/python -m pytest $(1) || status=$$?; \
  $(call phase_done,tests); $(phase_report); exit $$status

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/python -m secateur.sim.toolchain
	@touch $@
	@$(call phase_done,venv)

rtl: $(STAMP)
	$(BIN)/secateur rtl --engine all --pe $(PE) --out $(RTL_DIR)
	@$(call phase_done,rtl)

EXPORT_DIR := build/export
.PHONY: export
export: $(STAMP)
	$(BIN)/secateur export --engine all --pe $(PE) --out $(EXPORT_DIR)

# One Verilator per filelist, two at a time; a filelist whose Verilog has not changed since it
# last linted clean (`secateur rtl` keeps up-to-date files untouched) is not linted again.
# An AXI wrapper (<top>_axi.f) is linted against the engine's port stub in <top>_axi.v
# (+define+SECATEUR_AXI_LINT_STUB), not with the engine, which its own filelist lints: the
# wrapper adds a fraction of a second, not a second lint of the engine (69 s for cim at PE=32).
lint: rtl
	@ls $(RTL_DIR)/*/*.f | xargs -P $(PYTEST_WORKERS) -I{} sh -c '\
	  filelist={}; stamp=$${filelist%.f}.lint-clean; \
	  if [ "$$stamp" -nt "$${filelist%.f}.v" ]; then echo "$$filelist: lint clean (unchanged)"; exit 0; fi; \
	  case $$filelist in \
	    *_axi.f) set -- $$(dirname $$filelist)/secateur.vlt +define+SECATEUR_AXI_LINT_STUB $${filelist%.f}.v;; \
	    *) set -- -F $$filelist;; \
	  esac; \
	  echo "verilator --lint-only -Wall $$*"; \
	  $(BIN)/verilator --lint-only -Wall "$$@" || exit 255; touch $$stamp'
	@$(call phase_done,lint)

# make test is the CI gate (under 15 minutes on 2 cores): every check, with the extended
# parameter sets (tests marked regress) left to make regress, which runs all of them.
test: lint
ifeq ($(SIM),icarus)
	@$(call timed_pytest,-m icarus -n $(PYTEST_WORKERS) --durations=15)
else
	@$(call timed_pytest,-m "not regress" -n $(PYTEST_WORKERS) --dist loadgroup --durations=15)
endif

.PHONY: regress
# N: drawn engine parameter sets per engine (tests/test_random_params.py), 4 by default.
regress: export SECATEUR_DRAWS = $(or $(N),4)
regress: lint
	@$(call timed_pytest,-n $(PYTEST_WORKERS) --dist loadgroup --durations=15)

synth: $(STAMP)
	$(BIN)/secateur synth --engine all --pe $(PE) --out $(SYNTH_DIR)

bench: $(STAMP)
	@set -e; for script in $(filter-out benchmarks/bench_mutate.py,$(wildcard benchmarks/bench_*.py)); do \
	  $(BIN)/python $$script; done

ENGINE ?= ternary
NET_DIR := build/net
net: $(STAMP)
	$(BIN)/secateur net --engine $(ENGINE) $(if $(filter command line,$(origin PE)),--pe $(PE)) \
	  --cache $(NET_DIR) --export $(NET_DIR)/$(ENGINE)-export --report $(NET_DIR)/$(ENGINE)-report.json \
	  $(NET_ARGS)

COMPILE_DIR := build/compile
.PHONY: compile
compile: $(STAMP)
	@test -n "$(MODEL)" -a -n "$(CALIB)" || { echo "make compile needs MODEL=... and CALIB=..."; exit 2; }
	$(BIN)/secateur compile $(MODEL) --engine $(ENGINE) --calib $(CALIB) \
	  --out $(COMPILE_DIR)/$(ENGINE) --report $(COMPILE_DIR)/$(ENGINE)-report.json \
	  $(if $(TEST),--test $(TEST) --labels $(LABELS)) $(COMPILE_ARGS)

REPORT_DIR := build/report
EXPLORE_DIR := build/explore
.PHONY: report explore
report: $(STAMP)
	$(BIN)/secateur report --pe $(PE) --out $(REPORT_DIR) --synth $(SYNTH_DIR) --net $(NET_DIR) \
	  --explore $(EXPLORE_DIR)

explore: $(STAMP)
	$(BIN)/secateur explore --out $(EXPLORE_DIR) $(EXPLORE_ARGS)

clean:
	rm -rf build

# Coverage: every engine's cocotb regression (all its parameter sets) on coverage builds; the
# data of each run lands in build/coverage/data (sim/toolchain.save_coverage), merged per
# engine by verif/coverage.py. Coverage builds key their own cache entries.
COVERAGE_DIR := build/coverage
COVERAGE_TESTS ?= tests/test_tb_engines.py::test_engine_testbench
.PHONY: coverage mutate
coverage: $(STAMP)
	rm -rf $(COVERAGE_DIR)/data
	@status=0; SECATEUR_COVERAGE=$(abspath $(COVERAGE_DIR)/data) $(BIN)/python -m pytest \
	  $(COVERAGE_TESTS) -m sim -n $(PYTEST_WORKERS) -q || status=$$?; \
	  $(BIN)/python -m secateur.verif.coverage $(COVERAGE_DIR)/data --out $(COVERAGE_DIR) \
	  && exit $$status

mutate: $(STAMP)
	$(BIN)/python benchmarks/bench_mutate.py $(MUTATE_ARGS)
