"""Build times and simulation speed per engine (issue 15 §2 and §4), with ratios to ternary.

For each engine at ``--pe`` (default 32), measured one after another in one run, so that the
ratios compare the same machine under the same load:

* ``rtl cold`` / ``rtl warm``: ``secateur rtl --engine E`` into a new directory, then again
  into the same one (up-to-date files are left untouched), each a new process;
* ``lint``: ``verilator --lint-only -Wall -F <top>.f``, the lint gate of ``make lint``;
* ``harness cold`` / ``harness warm``: the native harness of ``secateur run``
  (:class:`~secateur.sim.runner.BatchSimulator`) built into an empty cache directory with the
  runtime object cache off (a new user's first run), then found in that cache;
* ``cycles/s``: the harness running :data:`LAYER` (``M x N`` at weight density ``D``, drawn in
  the engine's own structure by :func:`~secateur.gen.estimate.draw_weights`) on dense int8
  vectors, twice: :data:`SHORT_BATCH` vectors, then a batch of about :data:`LONG_CYCLES`
  cycles; the extra cycles over the extra wall time (start-up cancels), both runs bit-exact
  against the golden model.

The targets (issue 15): every engine's cold harness build and lint at most 2x ternary's, the
CIM harness at least 0.3x ternary's cycles/s, ``make rtl`` (all engines) under 30 s cold and
5 s warm. The load average is printed beside the figures: absolute times on a shared machine
mean little without it, and the ratios are what the targets are about.

Run with ``.venv/bin/python benchmarks/bench_build.py [--pe P] [engine ...]``; writes
``build/bench/build.json``. A cold PE=32 run of every engine takes tens of minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from secateur.gen.estimate import draw_weights
from secateur.gen.registry import engine_names, make_engine
from secateur.gen.safeio import write_text
from secateur.sim.toolchain import verilator_bin_dir

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
#: (M, N, weight density) of the simulated layer: fits every engine's default at PE >= 16.
LAYER = (64, 512, 0.25)
#: Vectors of the first run; the second runs about LONG_CYCLES cycles (at most MAX_BATCH).
SHORT_BATCH = 16
LONG_CYCLES = 200_000
MAX_BATCH = 65_536
REFERENCE = "ternary"


def _seconds(command: list[str], **kwargs) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                   **kwargs)
    return time.perf_counter() - start


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def measure(name: str, pe: int, work: Path) -> dict:
    """Every figure of one engine; ``work`` is an empty scratch directory."""
    figures: dict = {"engine": name, "pe": pe, "load_before": _load()}
    rtl = [str(BIN / "secateur"), "rtl", "--engine", name, "--pe", str(pe),
           "--out", str(work / "rtl")]
    figures["rtl_cold_s"] = _seconds(rtl)
    figures["rtl_warm_s"] = _seconds(rtl)
    engine = make_engine(name, pe=pe)
    filelist = work / "rtl" / name / f"{engine.top}.f"
    figures["lint_s"] = _seconds([str(verilator_bin_dir() / "verilator"), "--lint-only",
                                  "-Wall", "-F", filelist.name], cwd=filelist.parent)

    from secateur.sim.runner import BatchSimulator
    saved = {key: os.environ.get(key) for key in ("SECATEUR_CACHE_DIR", "SECATEUR_OBJCACHE_DIR")}
    os.environ["SECATEUR_CACHE_DIR"] = str(work / "cache")
    os.environ.pop("SECATEUR_OBJCACHE_DIR", None)
    try:
        simulator = BatchSimulator(engine)
        start = time.perf_counter()
        simulator.build()
        figures["harness_cold_s"] = time.perf_counter() - start
        start = time.perf_counter()
        BatchSimulator(engine).build()
        figures["harness_warm_s"] = time.perf_counter() - start

        rows, cols, density = LAYER
        rng = np.random.default_rng(0)
        weights, _ = draw_weights(engine, (rows, cols), density, rng)
        layer = engine.layer(weights)
        # Two runs, and the difference of their cycles over the difference of their times:
        # the process start and the load of the weights cancel.
        runs = []
        for batch in (SHORT_BATCH, None):
            if batch is None:
                per_vector = runs[0].cycles / SHORT_BATCH
                batch = int(min(MAX_BATCH, max(4 * SHORT_BATCH, LONG_CYCLES / per_vector)))
            x = rng.integers(-128, 128, (batch, cols), dtype=np.int8)
            result = simulator.run(layer, x)
            if not np.array_equal(result.y, layer.reference(x)):
                raise SystemExit(f"{name}: the harness differs from the golden model")
            runs.append(result)
        short, long = runs
        figures.update(batch=batch, cycles=long.cycles, run_s=long.wall_seconds,
                       cycles_per_s=(long.cycles - short.cycles)
                       / (long.wall_seconds - short.wall_seconds))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    figures["load_after"] = _load()
    return figures


def ratios(results: list[dict]) -> None:
    """Add each engine's ratio to the reference engine's figure, in place."""
    reference = next((row for row in results if row["engine"] == REFERENCE), None)
    if reference is None:
        return
    for row in results:
        for key in ("rtl_cold_s", "lint_s", "harness_cold_s", "cycles_per_s"):
            row[f"{key}_vs_{REFERENCE}"] = row[key] / reference[key]


def table(results: list[dict]) -> str:
    columns = [("engine", "engine", "{}"), ("rtl_cold_s", "rtl cold", "{:.1f}"),
               ("rtl_warm_s", "warm", "{:.1f}"), ("lint_s", "lint", "{:.1f}"),
               ("lint_s_vs_ternary", "x", "{:.2f}"), ("harness_cold_s", "harness", "{:.0f}"),
               ("harness_cold_s_vs_ternary", "x", "{:.2f}"),
               ("harness_warm_s", "warm", "{:.2f}"), ("cycles_per_s", "cycles/s", "{:.0f}"),
               ("cycles_per_s_vs_ternary", "x", "{:.2f}"), ("load_after", "load", "{}")]
    lines = ["  ".join(f"{title:>9}" for _, title, _ in columns)]
    for row in results:
        lines.append("  ".join(f"{form.format(row[key]):>9}" if key in row else f"{'':>9}"
                               for key, _, form in columns))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("engines", nargs="*", help=f"engines (default all; {REFERENCE} is "
                        "always measured first, as the reference)")
    parser.add_argument("--pe", type=int, default=32)
    parser.add_argument("--json", type=Path, default=ROOT / "build" / "bench" / "build.json")
    args = parser.parse_args(argv)
    if args.pe < 16:
        parser.error(f"--pe must be at least 16 (the {LAYER[0]}x{LAYER[1]} layer needs 16 CIM "
                     f"macros), not {args.pe}")
    names = args.engines or engine_names()
    names = [REFERENCE] + [name for name in names if name != REFERENCE]
    results = []
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"bench-build-{name}.") as work:
            results.append(measure(name, args.pe, Path(work)))
        print(f"{name}: {json.dumps({k: v for k, v in results[-1].items() if k != 'engine'})}",
              flush=True)
    ratios(results)
    print(f"\nbuilds and simulation at PE={args.pe} (seconds; x: ratio to {REFERENCE} in this "
          f"run; layer {LAYER[0]}x{LAYER[1]} at density {LAYER[2]})")
    print(table(results))
    write_text(args.json, json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
