"""Benchmark of the ternary adder-tree engine (issue 2): prints cycles, utilization, simulator
speed and RTL generation time. Figures, not assertions: the tests assert behaviour.

Run with ``make bench`` or ``.venv/bin/python benchmarks/bench_ternary.py``.
"""

import subprocess
import sys
import tempfile
import time

import numpy as np

from secateur.gen.registry import make_engine
from secateur.gen.rtl import verilog_text
from secateur.gen.sweep import run_point, ternary_group_sparse
from secateur.sim.runner import BatchSimulator
from secateur.verif.launch import run_testbench

PE, FAN_IN, BATCH = 32, 64, 16


def main():
    rng = np.random.default_rng(2026)
    engine = make_engine("ternary", pe=PE, fan_in=FAN_IN)
    simulator = BatchSimulator(engine)
    start = time.perf_counter()
    simulator.build()
    build = time.perf_counter() - start
    print(f"ternary engine, PE={PE}, fan-in {FAN_IN}, batch {BATCH} (harness build {build:.1f} s, "
          f"0 if cached)")
    print(f"{'layer':>9} {'zero grp':>8} {'groups':>7} {'cycles':>7} {'ideal':>7} "
          f"{'util':>6} {'cyc/dense':>9} {'exact':>5} {'sim cyc/s':>10}")
    for rows, cols in ((256, 512), (512, 512)):
        dense_cycles = None
        for zero_groups in (0.0, 0.5, 0.9):
            w = ternary_group_sparse(rng, rows, cols, zero_groups, PE, FAN_IN)
            x = rng.integers(-128, 128, (BATCH, cols), dtype=np.int8)
            report = run_point(simulator, engine, {"w": w}, x)
            dense_cycles = dense_cycles or report["cycles"]
            exact = report["exact"]
            print(f"{rows:>4}x{cols:<4} {zero_groups:>8.0%} {report['nonzero_groups']:>3}/{report['groups']:<3} "
                  f"{report['cycles']:>7} {report['ideal_cycles']:>7} {report['utilization']:>6.3f} "
                  f"{report['cycles'] / dense_cycles:>9.3f} {str(exact):>5} "
                  f"{report['sim_cycles_per_second']:>10,}")

    small = make_engine("ternary", pe=8, fan_in=16, max_rows=64, max_cols=128)
    cases = run_testbench(verilog=verilog_text(small), toplevel=small.top,
                          test_module="secateur.verif.tb_ternary",
                          config={"engine": "ternary", "params": small.params, "seed": 1, "pause": 0.0},
                          seed=1)
    sim_ns = sum(case["sim_time_ns"] for case in cases)
    wall = sum(case["wall_seconds"] for case in cases)
    print(f"cocotb + Verilator testbench (PE=8, fan-in 16, drive + check every cycle): "
          f"{sim_ns / 10 / wall:,.0f} cycles/s over {sim_ns / 10:,.0f} cycles")

    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "secateur.gen.cli", "rtl", "--engine", "all",
                        "--pe", "32", "--out", out], check=True, capture_output=True)
        print(f"make rtl PE=32 (secateur rtl --engine all --pe 32): "
              f"{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
