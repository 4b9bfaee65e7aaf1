"""Dense baseline and synthesis benchmark (issue 7), at PE=32, fan-in 64.

Run as ``python benchmarks/bench_synth.py`` (``make bench`` runs every benchmark). Prints

1. the dense int8 engine's cycles and utilization (useful MACs / (cycles x PE x fan_in)) on
   256x512 and 512x512 layers, batch 16, through the batch harness, bit-exactness against
   the golden model included: the reference point of every comparison (target >= 0.95 at
   256x512);
2. the ``make synth`` table of every engine (and ``lfsr-csr``): generic cells, iCE40 cell
   counts at the requested PE (LUT4, of which the PE array's, FF, carry, BRAM; multipliers
   in LUTs) and post-route Fmax on iCE40UP5K and LFE5U-85F (speed grade 8) at the timing
   configuration, a slice of the PE array, as the minimum and median over nextpnr seeds 1
   to 3 (see :mod:`secateur.gen.synth` for exactly what is measured), the target ratios
   (ternary/dense PE-array LUT4, lfsr/lfsr-csr LUT4 + BRAM), then where the time went: per
   engine and task, wall and CPU seconds (a family's: its synthesis and every seed's place
   and route; CPU is what a task costs when other work shares the machine), and the flow's
   wall time (results already in ``--out`` from the same sources, parameters and seeds are
   reused, and cost nothing).

Options: ``--pe P`` (default 32), ``--batch B``, ``--seeds N`` (nextpnr seeds, default 3),
``--no-synth`` (skip 2), ``--no-sim`` (skip 1), ``--out DIR`` (reports, default
``build/synth``), ``--json PATH``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from secateur.gen.registry import engine_names, make_engine
from secateur.gen.synth import summary_table, synthesize
from secateur.sim.runner import BatchSimulator


def dense_utilization(pe: int, batch: int) -> list[dict]:
    rng = np.random.default_rng(2026)
    engine = make_engine("dense", pe=pe)
    simulator = BatchSimulator(engine)
    start = time.perf_counter()
    simulator.build()
    print(f"dense engine, PE={pe}, fan-in {engine.fan_in}, batch {batch} (harness build "
          f"{time.perf_counter() - start:.1f} s, 0 if cached)")
    print(f"{'layer':>9} {'cycles':>7} {'ideal':>7} {'util':>6} {'exact':>5} {'sim cyc/s':>10}")
    rows = []
    for m, n in ((256, 512), (512, 512)):
        layer = engine.layer({"w": rng.integers(-128, 128, (m, n), dtype=np.int8)})
        x = rng.integers(-128, 128, (batch, n), dtype=np.int8)
        result = simulator.run(layer, x)
        report = result.report(engine, layer, "verilator")
        exact = bool(np.array_equal(result.y, layer.reference(x)))
        print(f"{m:>4}x{n:<4} {result.cycles:>7} {report['ideal_cycles']:>7} "
              f"{report['utilization']:>6.3f} {str(exact):>5} "
              f"{report['sim_cycles_per_second']:>10,}")
        rows.append({"layer": [m, n], "cycles": result.cycles,
                     "ideal_cycles": report["ideal_cycles"],
                     "utilization": report["utilization"], "exact": exact})
    return rows


def time_table(reports: dict) -> str:
    """Wall and CPU seconds of each task of the synthesis flow, per engine (a family's: its
    timing synthesis and the place and route of its seeds, those run in this run; "reused"
    when every result was kept from an earlier run)."""
    lines = [f"{'engine':<10} {'counts s':>9} {'cpu':>6} {'ice40 s':>8} {'cpu':>6} "
             f"{'ecp5 s':>7} {'cpu':>6}"]
    totals = [0.0, 0.0]
    for name, report in reports.items():
        cells = []
        for result in (report["stat"], report["timing"]["ice40"], report["timing"]["ecp5"]):
            if result.get("reused"):
                cells += ["reused", ""]
                continue
            wall, cpu = result.get("task_seconds", 0.0), result.get("task_cpu_seconds", 0.0)
            totals[0] += wall
            totals[1] += cpu
            cells += [f"{wall:.1f}", f"{cpu:.1f}"]
        lines.append(f"{name:<10} {cells[0]:>9} {cells[1]:>6} {cells[2]:>8} {cells[3]:>6} "
                     f"{cells[4]:>7} {cells[5]:>6}")
    lines.append(f"tasks in all: {totals[0]:.0f} s of wall-clock time in workers, "
                 f"{totals[1]:.0f} CPU seconds")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pe", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--no-synth", action="store_true")
    parser.add_argument("--no-sim", action="store_true")
    parser.add_argument("--out", default="build/synth")
    parser.add_argument("--json", help="also write the results as JSON")
    args = parser.parse_args(argv)
    results = {}
    if not args.no_sim:
        results["dense"] = dense_utilization(args.pe, args.batch)
    if not args.no_synth:
        start = time.perf_counter()
        reports = synthesize({name: {"pe": args.pe} for name in engine_names()}, Path(args.out),
                             seeds=args.seeds)
        seconds = time.perf_counter() - start
        print(summary_table(reports))
        print(time_table(reports))
        print(f"secateur synth --engine all --pe {args.pe} --seeds {args.seeds}: "
              f"{seconds:.0f} s")
        results["synth"] = {"seconds": seconds, "reports": reports}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
