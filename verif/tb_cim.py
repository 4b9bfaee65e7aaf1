"""cocotb testbench of the compute-in-memory engine (:mod:`secateur.hdl.engines.cim`).

Configuration from pytest (:mod:`tests.test_tb_engines`): ``engine``, ``params``, ``seed`` and
``pause`` (the random back-pressure probability on ``act`` and ``res``). Every result is
checked bit for bit against :func:`secateur.models.cim.reference`, lossless or saturating as
the engine's ADC is configured.
"""

from __future__ import annotations

import cocotb
import numpy as np

from ..models import cim as cim_model
from .engine_bench import EngineBench
# cocotb runs the tests it finds among the module's names: these serve every engine.
from .engine_bench import load_port_protocol, requantizer_clamps, result_stalls  # noqa: F401

#: Bit patterns of weights and inputs: name -> sampler(rng, shape) of int8 arrays.
PATTERNS = {
    "dense": lambda rng, shape: rng.integers(-128, 128, size=shape, dtype=np.int8),
    # Few ones per value: +-(2**p) and small positives, what a BitS-regularized layer holds.
    "bit-sparse": lambda rng, shape: (rng.choice([-1, 1], size=shape)
                                      * (1 << rng.integers(0, 7, size=shape))
                                      * (rng.random(shape) < 0.6)).astype(np.int8),
    "small": lambda rng, shape: rng.integers(0, 8, size=shape, dtype=np.int8),
    "zero": lambda rng, shape: np.zeros(shape, dtype=np.int8),
}


def random_shape(bench: EngineBench) -> tuple[int, int]:
    """An (M, N) that fits: ``RT * CT <= pe`` tiles, partial edge tiles included."""
    engine, rng = bench.engine, bench.rng
    row_tiles = int(rng.integers(1, engine.pe + 1))
    col_tiles = int(rng.integers(1, engine.pe // row_tiles + 1))
    cols = int(rng.integers((row_tiles - 1) * engine.macro_rows + 1,
                            row_tiles * engine.macro_rows + 1))
    rows = int(rng.integers((col_tiles - 1) * engine.slots + 1, col_tiles * engine.slots + 1))
    return rows, cols


def layer_weights(bench: EngineBench, w: np.ndarray, requant: bool = False) -> dict:
    """``w`` as a weights dict: masked to a random twofold mask under ``row_mask=lfsr``,
    with a random requantizer if asked."""
    engine, rng = bench.engine, bench.rng
    weights = {"w": w}
    if engine.row_mask == "lfsr":
        tiles = cim_model.tile_grid(w.shape, engine.geometry)
        seeds = rng.integers(1, engine.macro_rows + 1, size=tiles)
        k = rng.integers(1, engine.macro_rows + 1, size=tiles)
        weights.update(w=w * cim_model.twofold_mask(w.shape, engine.geometry, seeds, k),
                       seeds=seeds, k=k)
    weights.update(bench.result_keys(w.shape[0], 24, requant))
    return weights


@cocotb.test()
async def random_layers_under_backpressure(dut):
    """Random shapes and tilings, dense and sparse bit patterns of weights and inputs, raw
    and requantized outputs, random stalls."""
    bench = await EngineBench.start(dut)
    names = list(PATTERNS)
    for case in range(8):
        rows, cols = random_shape(bench)
        w_pattern = names[case % len(names)]
        x_pattern = names[int(bench.rng.integers(0, len(names)))]
        w = PATTERNS[w_pattern](bench.rng, (rows, cols))
        layer = bench.engine.layer(layer_weights(bench, w, requant=case % 3 == 2))
        x = PATTERNS[x_pattern](bench.rng, (int(bench.rng.integers(1, 4)), cols))
        await bench.check(layer, x, f"case {case} (weights {w_pattern}, inputs {x_pattern})")


@cocotb.test()
async def extremes(dut):
    """All -128 and all +127 weights against all -128 and +127 inputs at the largest
    single-column-tile layer: every plane and column live, every ADC saturating if it can."""
    bench = await EngineBench.start(dut)
    engine = bench.engine
    rows, cols = engine.slots, engine.pe * engine.macro_rows
    x = np.full((3, cols), -128, dtype=np.int8)
    x[1] = 127
    x[2, ::2] = -1
    for value in (-128, 127, -1):
        w = np.full((rows, cols), value, dtype=np.int8)
        await bench.check(engine.layer(layer_weights(bench, w)), x, f"all weights {value}")


@cocotb.test()
async def reset_in_mid_stream(dut):
    """A reset while vectors stream, then the same layer and inputs again, exactly."""
    bench = await EngineBench.start(dut)
    rows, cols = random_shape(bench)
    w = PATTERNS["dense"](bench.rng, (rows, cols))
    layer = bench.engine.layer(layer_weights(bench, w, requant=True))
    await bench.reset_during(layer, PATTERNS["dense"](bench.rng, (3, cols)))


@cocotb.test()
async def cycles_follow_live_steps(dut):
    """Without stalls a vector costs ``col_mux`` cycles per live step plus a fixed overhead
    (its input beats, the ADC latency, the drain and the output pipeline): dead bit-planes
    cost nothing, and every beat is at the performance model's edge
    (:meth:`EngineBench.check_time`)."""
    bench = await EngineBench.start(dut, stalls=False)
    engine = bench.engine
    rows, cols = engine.slots, engine.pe * engine.macro_rows
    w = PATTERNS["dense"](bench.rng, (rows, cols))
    layer = engine.layer(layer_weights(bench, w))
    measured = {}
    for name in ("dense", "small", "zero"):
        x = PATTERNS[name](bench.rng, (3, cols))
        cycles = await bench.check(layer, x, f"{name} inputs")
        measured[name] = cycles - layer.counters(x)["compute_cycles"]
    # Beyond the live steps, the overhead does not depend on the data (an all-zero vector
    # saves the ADC latency too, having nothing in flight).
    assert abs(measured["dense"] - measured["small"]) <= 1, \
        f"overhead beyond compute cycles varies with the data: {measured} (seed {bench.seed})"
