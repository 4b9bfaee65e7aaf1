"""Single-vector latency and small-batch utilization per engine at PE = 32 (issue 15 §3),
beside the steady state, from the exact performance model (``secateur estimate``,
:mod:`secateur.models.perf`; ``tests/test_perf.py`` holds it to the RTL).

Fill and drain cost most at the batch sizes a real-time user runs. For each engine at its
default PE = 32 configuration and each layer of :data:`LAYERS` (the shapes the issue names,
and a 256 x 512 layer on every engine), the table gives

* ``latency``: the first result's latency of one vector on an idle engine
  (``first_result_latency``, the manifest's formula), and the manifest's least ``latency``;
* the cycles of one vector alone (its whole result), and the utilization (useful operations
  per lane and cycle) at batch 1, 2 and 8, and at :data:`STEADY` vectors (the steady state);
* ``fill+drain``: the cycles a batch of one spends beyond its steady-state share,
  ``cycles(1) - cycles(STEADY) / STEADY``.

Weights are drawn in each engine's own structure at the layer's density, inputs dense unless
the layer says otherwise, from seed 0. Run with ``make bench`` or
``.venv/bin/python benchmarks/bench_latency.py [engine ...]``; writes
``build/bench/latency.json``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from secateur.gen.estimate import draw_inputs, draw_weights, estimate_layer
from secateur.gen.registry import engine_names, make_engine
from secateur.gen.safeio import write_text

ROOT = Path(__file__).resolve().parent.parent

PE = 32
BATCHES = (1, 2, 8)
#: Vectors of the steady-state run.
STEADY = 64
#: (engine or None for every engine, M, N, weight density, input density, note).
LAYERS = [
    (None, 256, 512, 0.25, 1.0, "every engine"),
    ("permdiag", 256, 512, 0.125, 0.25, "p = 8, 75 % zero inputs"),
    ("permdiag", 64, 64, 0.125, 1.0, "p = 8, a small layer"),
    ("lfsr", 64, 300, 0.25, 1.0, "k = N/4"),
    ("lfsr", 64, 512, 0.25, 1.0, "k = N/4"),
]


def _engine(name: str):
    params = {"pe": PE}
    if name == "permdiag":
        params.update(min_p=2, max_p=8)
    return make_engine(name, **params)


def measure(name: str, rows: int, cols: int, density: float, input_density: float) -> dict:
    engine = _engine(name)
    rng = np.random.default_rng(0)
    weights, drawn = draw_weights(engine, (rows, cols), density, rng)
    x = draw_inputs(rng, STEADY, cols, input_density)
    runs = {batch: estimate_layer(engine, weights, x[:batch]) for batch in (*BATCHES, STEADY)}
    single, steady = runs[1], runs[STEADY]
    return {
        "engine": name, "shape": [rows, cols], "density": density,
        "achieved_density": drawn["achieved_density"], "input_density": input_density,
        "first_result_latency": single["first_result_latency"], "latency": engine.latency,
        "single_vector_cycles": single["cycles"],
        "utilization": {str(batch): runs[batch]["utilization"] for batch in runs},
        "steady_cycles_per_vector": steady["cycles"] / STEADY,
        "fill_drain_cycles": single["cycles"] - steady["cycles"] / STEADY,
        "tiles": single["tiling"]["tiles"],
    }


def main(argv: list[str]) -> int:
    wanted = argv or engine_names()
    start = time.perf_counter()
    rows = []
    for engine, m, n, density, input_density, note in LAYERS:
        for name in ([engine] if engine else engine_names()):
            if name in wanted:
                rows.append(dict(measure(name, m, n, density, input_density), note=note))
    print(f"Single-vector latency and small-batch utilization at PE = {PE} (performance "
          f"model, exact against the RTL; steady state = {STEADY} vectors)")
    header = (f"{'engine':9} {'layer':>8} {'dens':>5} {'in':>5} {'lat':>4} {'min':>4} "
              f"{'1 vec':>6} " + " ".join(f"{'u@' + str(b):>6}" for b in (*BATCHES, STEADY))
              + f" {'cyc/vec':>8} {'fill+drain':>10}  note")
    print(header)
    for row in rows:
        u = row["utilization"]
        print(f"{row['engine']:9} {row['shape'][0]:>4}x{row['shape'][1]:<4}"
              f"{row['achieved_density']:>5.2f} {row['input_density']:>5.2f} "
              f"{row['first_result_latency']:>4} {row['latency']:>4} "
              f"{row['single_vector_cycles']:>6} "
              + " ".join(f"{u[str(b)]:>6.3f}" for b in (*BATCHES, STEADY))
              + f" {row['steady_cycles_per_vector']:>8.1f} {row['fill_drain_cycles']:>10.1f}"
              f"  {row['note']}")
    out = ROOT / "build" / "bench" / "latency.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, json.dumps({"pe": PE, "steady": STEADY, "rows": rows}, indent=2) + "\n")
    print(f"{len(rows)} rows in {time.perf_counter() - start:.1f} s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
