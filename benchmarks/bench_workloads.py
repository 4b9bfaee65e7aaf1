"""The workloads of the papers (issue 14 §3) on every engine at PE = 32, from the exact
performance model (``secateur estimate``, :mod:`secateur.models.perf`), with an RTL spot
check of AlexNet's FC7 (4096 x 4096) through the tiler.

Workloads
    * EIE's benchmark layers at EIE's published weight and activation densities (Han et al.,
      "EIE: Efficient Inference Engine on Compressed Deep Neural Network", ISCA 2016,
      Table III): Alex-6 9216 x 4096 (9 % weights, 35.1 % activations), Alex-7 4096 x 4096
      (9 %, 35.3 %), Alex-8 4096 x 1000 (25 %, 37.5 %), VGG-6 25088 x 4096 (4 %, 18.3 %).
      VGG-7/8 and NeuralTalk's We/Wd/LSTM are in the same table, but we could not source
      their densities from a stored copy of it, so they are left out rather than guessed.
    * Every convolution (im2col: ``M = C_out``, ``N = C_in k^2``, one vector per output
      pixel) and FC layer of VGG-16 and ResNet-18 at 224 x 224 (He et al. 2016: 7 x 7 stride-2
      stem, max pool, four stages of two BasicBlocks at 64-512 channels, 1 x 1 stride-2
      shortcuts), at weight density :data:`CONV_DENSITY` and activation density
      :data:`CONV_ACT_DENSITY` (a documented choice, not a paper's figure).

The permdiag instance takes every block size the workload needs (EIE's VGG-6 at 4 % is
``p = 25``), which sizes its offset fields.

Each engine imposes its own structure at the weight density (``secateur estimate``'s draw):
lfsr masks of ``k = d N``, permdiag ``p = round(1 / d)`` (the layer padded to whole blocks
where ``p`` does not divide it), ternary zero groups, cim without a row mask (its bit-level
sparsity comes from the int8 weights), dense unchanged.

Convolutions have up to 50,176 vectors per image; the model steps through every vector of
every tile, so a convolution is estimated on :data:`SAMPLED_VECTORS` vectors and its counts
scaled by ``vectors / SAMPLED_VECTORS`` (marked ``~`` in the table). FC layers run one image
exactly.

Per engine and layer: cycles, utilization, storage bits (weights and indices), energy and
useful MACs per cycle per PE. The papers' figures are normalized per PE per cycle, so that
clock and process drop out: EIE, 102 GOPS on compressed AlexNet FC with 64 PEs at 800 MHz,
is ``102e9 / 2 / (64 * 800e6) = 1.0`` MAC per PE per cycle (one MAC is two operations);
PermDNN (Deng et al., MICRO 2018) reports 3.3-4.8x EIE's throughput with 32 PEs, but its
clock is not in the sources we have, so only that ratio is quoted.

Run with ``make bench`` or ``.venv/bin/python benchmarks/bench_workloads.py [--no-rtl]
[engine ...]``; writes ``build/bench/workloads.json``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from secateur import make_engine
from secateur.gen.estimate import draw_inputs, draw_weights, estimate_layer
from secateur.gen.registry import engine_names
from secateur.gen.safeio import write_text
from secateur.gen.tiling import tile_layer

PE = 32
SAMPLED_VECTORS = 4
CONV_DENSITY = 0.125
CONV_ACT_DENSITY = 0.5
SEED = 0
OUT = Path("build/bench/workloads.json")

#: (name, M, N, weight density, activation density): EIE, ISCA 2016, Table III.
EIE_LAYERS = [("Alex-6", 4096, 9216, 0.09, 0.351), ("Alex-7", 4096, 4096, 0.09, 0.353),
              ("Alex-8", 1000, 4096, 0.25, 0.375), ("VGG-6", 4096, 25088, 0.04, 0.183)]
EIE_MACS_PER_PE_CYCLE = 102e9 / 2 / (64 * 800e6)
PERMDNN_VS_EIE = (3.3, 4.8)


def _conv(name, cin, cout, k, out_size):
    return (name, cout, cin * k * k, out_size * out_size)


def vgg16_layers() -> list[tuple[str, int, int, int]]:
    """``(name, M, N, vectors)`` of VGG-16 at 224 x 224 (3 x 3 convolutions, padding 1)."""
    plan = [(3, 64, 224), (64, 64, 224), (64, 128, 112), (128, 128, 112), (128, 256, 56),
            (256, 256, 56), (256, 256, 56), (256, 512, 28), (512, 512, 28), (512, 512, 28),
            (512, 512, 14), (512, 512, 14), (512, 512, 14)]
    layers = [_conv(f"conv{index + 1}", cin, cout, 3, size)
              for index, (cin, cout, size) in enumerate(plan)]
    return layers + [("fc6", 4096, 25088, 1), ("fc7", 4096, 4096, 1), ("fc8", 1000, 4096, 1)]


def resnet18_layers() -> list[tuple[str, int, int, int]]:
    """``(name, M, N, vectors)`` of ResNet-18 at 224 x 224."""
    layers = [_conv("stem", 3, 64, 7, 112)]
    cin, size = 64, 56
    for stage, cout in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            stride = 2 if stage > 1 and block == 0 else 1
            out = size // stride
            layers.append(_conv(f"l{stage}.{block}.conv1", cin, cout, 3, out))
            layers.append(_conv(f"l{stage}.{block}.conv2", cout, cout, 3, out))
            if stride == 2:
                layers.append(_conv(f"l{stage}.{block}.down", cin, cout, 1, out))
            cin, size = cout, out
    return layers + [("fc", 1000, 512, 1)]


def engine_at(name: str, layers) -> "Engine":
    """The PE = 32 instance of ``name`` for a workload of ``(name, M, N, vectors, density,
    act_density)`` layers: the defaults, except lfsr, whose masks span whole rows (its
    ``max_cols`` holds the widest layer, and its weight memory the largest ``k`` for every
    row of a 256-row tile)."""
    if name == "lfsr":
        rows = 256
        k = max(max(1, round(density * n)) for _, _, n, _, density, _ in layers)
        return make_engine(name, pe=PE, max_rows=rows, max_cols=max(n for _, _, n, *_ in layers),
                           weight_depth=math.ceil(rows / PE) * k)
    if name == "permdiag":
        blocks = [round(1 / density) for *_, density, _ in layers]
        return make_engine(name, pe=PE, min_p=min(4, *blocks), max_p=max(16, *blocks))
    return make_engine(name, pe=PE)


def _structure(engine, rows: int, cols: int, density: float) -> tuple[tuple[int, int], float]:
    """The shape and weight density drawn on ``engine``: permdiag takes ``p = round(1 / d)``,
    so its density is ``1 / p`` and its layer is padded to whole ``p x p`` blocks."""
    if engine.name != "permdiag":
        return (rows, cols), density
    p = round(1 / density)
    return (-(-rows // p) * p, -(-cols // p) * p), 1 / p


def _layer_figures(engine, rows, cols, vectors, density, act_density, rng) -> dict:
    shape, density = _structure(engine, rows, cols, density)
    weights, drawn = draw_weights(engine, shape, density, rng)
    sampled = min(vectors, SAMPLED_VECTORS)
    x = draw_inputs(rng, sampled, shape[1], act_density)
    report = estimate_layer(engine, weights, x)
    scale = vectors / sampled
    storage = report["storage_bits"]["layer"]
    return {"rows": rows, "cols": cols, "vectors": vectors, "sampled": sampled < vectors,
            "density": drawn["achieved_density"], "act_density": act_density,
            "cycles": report["cycles"] * scale, "utilization": report["utilization"],
            "useful_ops": report["useful_ops"] * scale,
            "macs_per_cycle_per_pe": report["useful_ops"] / (report["cycles"] * engine.pe),
            "storage_bits": int(sum(value for value in storage.values()
                                    if isinstance(value, (int, float)))),
            "energy_pj": None if report["energy_pj"] is None else report["energy_pj"] * scale,
            "tiles": report["tiling"]["tiles"], "load_beats": report["load_beats"],
            "model_seconds": report["model_seconds"]}


def _workloads():
    eie = [(name, m, n, 1, d, a) for name, m, n, d, a in EIE_LAYERS]
    vgg = [(name, m, n, v, CONV_DENSITY, CONV_ACT_DENSITY) for name, m, n, v in vgg16_layers()]
    resnet = [(name, m, n, v, CONV_DENSITY, CONV_ACT_DENSITY)
              for name, m, n, v in resnet18_layers()]
    return {"eie": eie, "vgg16": vgg, "resnet18": resnet}


def model_tables(engines) -> dict:
    results = {}
    for workload, layers in _workloads().items():
        for name in engines:
            start = time.perf_counter()
            rng = np.random.default_rng(SEED)
            engine = engine_at(name, layers)
            per_layer = {}
            for layer, m, n, vectors, density, act in layers:
                per_layer[layer] = _layer_figures(engine, m, n, vectors, density, act, rng)
            total_cycles = sum(item["cycles"] for item in per_layer.values())
            total_ops = sum(item["useful_ops"] for item in per_layer.values())
            energies = [item["energy_pj"] for item in per_layer.values()]
            results.setdefault(workload, {})[name] = {
                "layers": per_layer, "cycles": total_cycles,
                "macs_per_cycle_per_pe": total_ops / (total_cycles * PE),
                "energy_pj": None if None in energies else sum(energies),
                "storage_bits": sum(item["storage_bits"] for item in per_layer.values()),
                "seconds": round(time.perf_counter() - start, 2)}
    return results


def _print_tables(results: dict) -> None:
    for workload, per_engine in results.items():
        print(f"\n{workload}: cycles (~ sampled and scaled), utilization, useful MACs per "
              f"cycle per PE, storage Mbit, energy uJ")
        engines = list(per_engine)
        layers = list(next(iter(per_engine.values()))["layers"])
        print(f"{'layer':14s} {'M x N':>13s}" + "".join(f" {name:>24s}" for name in engines))
        for layer in layers:
            first = per_engine[engines[0]]["layers"][layer]
            cells = []
            for name in engines:
                item = per_engine[name]["layers"][layer]
                mark = "~" if item["sampled"] else " "
                cells.append(f" {mark}{item['cycles']:11.3g} {item['utilization']:4.2f} "
                             f"{item['macs_per_cycle_per_pe']:5.2f}")
            print(f"{layer:14s} {first['rows']:>6d}x{first['cols']:<6d}" + "".join(cells))
        row = []
        for name in engines:
            total = per_engine[name]
            energy = "n/a" if total["energy_pj"] is None else f"{total['energy_pj'] / 1e6:.1f}"
            row.append(f" {total['cycles']:12.4g} {total['storage_bits'] / 1e6:5.1f} {energy:>5s}")
        print(f"{'total':27s}" + "".join(row))
        print("model seconds: " + ", ".join(f"{name} {per_engine[name]['seconds']:.1f}"
                                            for name in engines))
    print(f"\nEIE: {EIE_MACS_PER_PE_CYCLE:.2f} MAC per PE per cycle (102 GOPS, 64 PEs, 800 MHz); "
          f"PermDNN: {PERMDNN_VS_EIE[0]}-{PERMDNN_VS_EIE[1]}x EIE's throughput with 32 PEs "
          f"(clock not sourced, so not normalized)")


def rtl_spot_check(engines, pe: int = 8, vectors: int = 2) -> dict:
    """Alex-7 (4096 x 4096 at EIE's densities) through the RTL, tiled, on each engine at
    ``pe``: outputs against the golden model and cycles against the model."""
    from secateur.sim.runner import BatchSimulator
    name_, rows, cols, density, act = EIE_LAYERS[1]
    checks = {}
    for name in engines:
        if name == "cim":
            checks[name] = {"skipped": "the CIM cells of a 4096 x 4096 layer are 16.8 M load "
                            "beats, and the behavioral macro model simulates at a few thousand "
                            "cycles per second on 2 cores: hours, not minutes"}
            continue
        rng = np.random.default_rng(SEED)
        engine = (make_engine("lfsr", pe=pe, max_rows=256, max_cols=cols,
                              weight_depth=math.ceil(256 / pe) * round(density * cols))
                  if name == "lfsr" else make_engine(name, pe=pe))
        shape, drawn_density = _structure(engine, rows, cols, density)
        weights, _ = draw_weights(engine, shape, drawn_density, rng)
        x = draw_inputs(rng, vectors, shape[1], act)
        start = time.perf_counter()
        simulator = BatchSimulator(engine)
        simulator.build()
        built = time.perf_counter()
        tiled = tile_layer(engine, weights)
        run = tiled.run(simulator, x)
        model = estimate_layer(engine, weights, x)
        checks[name] = {"pe": pe, "shape": list(shape), "tiles": len(tiled.tiles),
                        "mismatches": int(np.count_nonzero(run.y != tiled.reference(x))),
                        "rtl_cycles": run.cycles, "model_cycles": model["cycles"],
                        "rtl_load_cycles": run.load_cycles,
                        "model_load_cycles": model["load_cycles"],
                        "build_seconds": round(built - start, 1),
                        "run_seconds": round(time.perf_counter() - built, 1)}
        check = checks[name]
        print(f"{name:9s} Alex-7 on RTL pe={pe}: {check['tiles']} tiles, {check['mismatches']} "
              f"mismatches, cycles {check['rtl_cycles']} (model {check['model_cycles']}), load "
              f"cycles {check['rtl_load_cycles']} (model {check['model_load_cycles']}); build "
              f"{check['build_seconds']} s, run {check['run_seconds']} s", flush=True)
    return checks


def main(argv: list[str]) -> int:
    rtl = "--no-rtl" not in argv
    engines = [name for name in argv if not name.startswith("--")] or engine_names()
    start = time.perf_counter()
    results = {"model": model_tables(engines)}
    _print_tables(results["model"])
    if rtl:
        print()
        results["rtl_spot_check"] = rtl_spot_check(engines)
    results["seconds"] = round(time.perf_counter() - start, 1)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    write_text(OUT, json.dumps(results, indent=1) + "\n")
    print(f"\nwrote {OUT} ({results['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
