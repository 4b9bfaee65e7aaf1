"""The lint gate: for several configurations of every engine, the shipped filelist lints clean
under ``verilator --lint-only -Wall``, and for the small ones Yosys ``check -assert`` finds no
structural problem. Engines add their own configurations to SMALL and LARGE."""

import subprocess

import pytest
from conftest import in_make_test

from secateur.gen import synth
from secateur.gen.registry import engine_class, engine_names, make_engine
from secateur.gen.rtl import write_rtl
from secateur.hdl import axi
from secateur.sim.toolchain import simulator_env, verilator_bin_dir

#: Small, odd configurations per engine: Verilator -Wall and Yosys check.
SMALL = {
    "ternary": [dict(pe=3, fan_in=5, max_rows=20, max_cols=23, tree_stages=0),
                dict(pe=1, fan_in=1, max_rows=9, max_cols=7)],
    "dense": [dict(pe=3, fan_in=5, max_rows=20, max_cols=23, tree_stages=0),
              dict(pe=1, fan_in=1, max_rows=9, max_cols=7)],
    # act_lanes 1: no lane select (once a [-1:0] wire, which only -Wall saw).
    "lfsr": [dict(pe=1, max_rows=5, max_cols=13, weight_depth=65, act_lanes=1),
             dict(pe=3, max_rows=7, max_cols=9, act_lanes=1, index="csr")],
}
#: Default-sized and large configurations: Verilator -Wall only, because Yosys spends minutes
#: reading the initial values Amaranth writes for every word of their memories.
LARGE = [(name, dict(pe=4)) for name in engine_names()] + [
    ("ternary", dict(pe=32, max_groups=40)),
    ("dense", dict(pe=8, fan_in=6, max_rows=9, max_cols=4097)),
]
CASES = [(name, params, True) for name, configs in SMALL.items() for params in configs] + \
    [(name, params, False) for name, params in LARGE]


#: make lint lints every engine at pe = 32, so these two wait for make regress: the ternary
#: engine with more groups, and the cim engine at pe = 4 (its lint takes the longest).
IN_REGRESS = {CASES.index(("ternary", dict(pe=32, max_groups=40), False)),
              CASES.index(("cim", dict(pe=4), False))}


@pytest.mark.parametrize("name, params, yosys",
                         in_make_test(CASES, set(range(len(CASES))) - IN_REGRESS, unpack=True),
                         ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(CASES)])
def test_lint_gate(tmp_path, name, params, yosys):
    engine = make_engine(name, **params)
    bundle = write_rtl(engine, tmp_path)
    result = subprocess.run([str(verilator_bin_dir() / "verilator"), "--lint-only", "-Wall", "-F",
                             str(bundle.filelist)], capture_output=True, text=True,
                            env=simulator_env())
    assert result.returncode == 0 and "%Warning" not in result.stderr, result.stderr[-3000:]
    if yosys:
        synth.check(bundle.verilog, engine.top)


#: make test lints the dense and cim wrappers (cim's engine holds macro models); make regress
#: every engine's.
AXI_IN_MAKE_TEST = {engine_names().index("dense"), engine_names().index("cim")}


@pytest.mark.parametrize("name", in_make_test(engine_names(), AXI_IN_MAKE_TEST),
                         ids=engine_names())
def test_axi_wrapper_lint_gate(tmp_path, name):
    """The wrapper's filelist (engine and wrapper) lints clean, so does the wrapper against
    the engine's port stub (what make lint checks, instead of linting the engine twice), and
    Yosys check -assert passes on the two together; at the AXI tests' small configurations."""
    from test_axi import SIM_CONFIGS
    engine = make_engine(name, **SIM_CONFIGS[name])
    bundle = write_rtl(engine, tmp_path)
    for args in (["-F", str(bundle.axi_filelist)],
                 [str(bundle.waivers), f"+define+{axi.LINT_STUB_DEFINE}", str(bundle.axi_verilog)]):
        result = subprocess.run([str(verilator_bin_dir() / "verilator"), "--lint-only", "-Wall",
                                 *args], capture_output=True, text=True, env=simulator_env())
        assert result.returncode == 0 and "%Warning" not in result.stderr, result.stderr[-3000:]
    both = tmp_path / "wrapped.v"
    both.write_text(bundle.verilog.read_text() + bundle.axi_verilog.read_text())
    synth.check(both, f"{engine.top}_axi")


def test_every_engine_declares_a_testbench_and_golden_model():
    import importlib
    for name in engine_names():
        assert engine_class(name).name == name
        importlib.import_module(f"secateur.verif.tb_{name}")
        importlib.import_module(f"secateur.models.{name}")
