"""The engine regression: each engine's cocotb testbench on random legal configurations,
under Verilator (and Icarus for a subset, when installed).

Every case records its seed (see ``conftest.seed``); replay one with
``SECATEUR_TB_SEED=<seed> pytest tests/test_tb_engines.py -k <case>``.
"""

import pytest
from conftest import in_make_test

from secateur.gen.registry import make_engine
from secateur.gen.rtl import verilog_text
from secateur.sim.toolchain import icarus_available
from secateur.verif.launch import run_testbench

# (engine, parameters, back-pressure): odd and non-power-of-two PE counts and fan-ins,
# and layers small enough to simulate in seconds.
CONFIGS = [
    ("ternary", dict(pe=1, fan_in=4, max_rows=5, max_cols=13), 0.3),
    ("ternary", dict(pe=3, fan_in=5, max_rows=20, max_cols=23), 0.3),
    ("ternary", dict(pe=8, fan_in=16, max_rows=40, max_cols=100, tree_stages=4), 0.5),
    ("ternary", dict(pe=8, fan_in=7, max_rows=17, max_cols=50, tree_stages=0), 0.2),
    # PE=32 at a narrow fan-in: cocotb builds every signal public (slow to compile at fan-in 64);
    # the full PE=32 x 64 design runs through the native harness in tests/test_ternary.py.
    ("ternary", dict(pe=32, fan_in=4, max_rows=70, max_cols=30), 0.3),
    ("lfsr", dict(pe=1, max_rows=5, max_cols=13, weight_depth=65, act_lanes=1), 0.3),
    ("lfsr", dict(pe=3, index="csr", max_rows=11, max_cols=45, weight_depth=180, act_lanes=4), 0.3),
    ("lfsr", dict(pe=8, max_rows=19, max_cols=100, weight_depth=300, act_lanes=16), 0.5),
    ("lfsr", dict(pe=4, max_rows=9, max_cols=64, weight_depth=192, act_lanes=2, lookahead=3), 0.2),
    # adc_shift 1 in the first (make test's) configuration: a shift of 0 hides its direction.
    ("cim", dict(pe=2, macro_rows=12, macro_cols=24, adcs=1, rows=2, adc_bits=2, adc_shift=1,
                 act_lanes=3), 0.3),
    ("cim", dict(pe=3, macro_rows=16, macro_cols=16, adcs=4, rows=4, adc_bits=2, adc_shift=1,
                 adc_latency=2, act_lanes=4, row_mask="lfsr"), 0.3),
    ("dense", dict(pe=1, fan_in=1, max_rows=4, max_cols=9), 0.3),
    ("dense", dict(pe=3, fan_in=5, max_rows=11, max_cols=23, tree_stages=0), 0.3),
    ("dense", dict(pe=8, fan_in=16, max_rows=17, max_cols=40, tree_stages=4), 0.5),
    # permdiag: one slot; three odd slots of one PE; two slots of two PEs at p up to 32.
    ("permdiag", dict(pe=1, mults=2, max_rows=8, max_cols=12, min_p=2, max_p=4), 0.3),
    ("permdiag", dict(pe=3, mults=2, slots=3, max_rows=24, max_cols=36, min_p=2, max_p=12,
                      drain_pack=2), 0.3),
    ("permdiag", dict(pe=4, mults=3, slots=2, max_rows=32, max_cols=64, min_p=2, max_p=32,
                      act_per_slot=2, drain_pack=4, tree_stages=1), 0.5),
    # Results at full rate (a vector in one act beat, one row block, one tile) under heavy
    # back-pressure: the only way the result path's register slices fill their skid buffers
    # (make coverage found them never filled in the configurations above).
    ("dense", dict(pe=2, fan_in=8, max_rows=2, max_cols=8), 0.6),
    ("ternary", dict(pe=4, fan_in=8, max_rows=4, max_cols=8), 0.6),
    ("lfsr", dict(pe=2, max_rows=2, max_cols=8, weight_depth=8, act_lanes=8), 0.6),
]


def _id(config):
    engine, params, pause = config
    return engine + "-" + "-".join(f"{key}{value}" for key, value in params.items())


#: ``make test`` runs each engine's first (smallest) configuration; ``make regress`` all.
FIRST_OF_EACH = {next(index for index, config in enumerate(CONFIGS) if config[0] == name)
                 for name in dict.fromkeys(config[0] for config in CONFIGS)}


@pytest.mark.sim
@pytest.mark.parametrize("config", in_make_test(CONFIGS, FIRST_OF_EACH),
                         ids=[_id(config) for config in CONFIGS])
def test_engine_testbench(config, seed):
    engine_name, params, pause = config
    engine = make_engine(engine_name, **params)
    run_testbench(verilog=verilog_text(engine), toplevel=engine.top,
                  test_module=f"secateur.verif.tb_{engine_name}",
                  config={"engine": engine_name, "params": engine.params, "seed": seed,
                          "pause": pause},
                  seed=seed)


#: The second simulator runs every engine's testbench on that engine's first (smallest)
#: configuration: cocotb drives Icarus at about a third of Verilator's speed.
ICARUS_CONFIGS = [next(config for config in CONFIGS if config[0] == name)
                  for name in dict.fromkeys(config[0] for config in CONFIGS)]


@pytest.mark.sim
@pytest.mark.icarus
@pytest.mark.skipif(not icarus_available(), reason="Icarus Verilog is not installed "
                    "(apt-get install iverilog)")
@pytest.mark.parametrize("config", in_make_test(ICARUS_CONFIGS, {0}),
                         ids=[_id(config) for config in ICARUS_CONFIGS])
def test_engine_testbench_icarus(config, seed):
    engine_name, params, pause = config
    engine = make_engine(engine_name, **params)
    run_testbench(verilog=verilog_text(engine), toplevel=engine.top,
                  test_module=f"secateur.verif.tb_{engine_name}",
                  config={"engine": engine_name, "params": engine.params, "seed": seed,
                          "pause": pause},
                  seed=seed, simulator="icarus")
