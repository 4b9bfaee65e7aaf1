"""cocotb testbench of the ternary adder-tree engine (:mod:`secateur.hdl.engines.ternary`).

Configuration from pytest (:mod:`tests.test_tb_engines`): ``engine``, ``params``, ``seed`` and
``pause`` (the random back-pressure probability on ``act`` and ``res``).
"""

from __future__ import annotations

import math

import cocotb
import numpy as np

from .engine_bench import EngineBench


def random_layer(bench: EngineBench, rows: int, cols: int, zero_groups: float,
                 requant: bool = False):
    """A random ternary layer with the given fraction of all-zero PE-wise groups."""
    engine, rng = bench.engine, bench.rng
    w = rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=(rows, cols), p=[0.35, 0.3, 0.35])
    row_blocks, col_blocks = math.ceil(rows / engine.pe), math.ceil(cols / engine.fan_in)
    pruned = rng.random((row_blocks, col_blocks)) < zero_groups
    for r, c in zip(*np.nonzero(pruned)):
        w[r * engine.pe:(r + 1) * engine.pe, c * engine.fan_in:(c + 1) * engine.fan_in] = 0
    weights = {"w": w}
    if requant:
        weights.update(mult=rng.integers(-2**15, 2**15, size=rows), shift=np.int64(rng.integers(0, 20)),
                       relu=np.bool_(rng.random() < 0.5))
    return engine.layer(weights)


def random_shape(bench: EngineBench) -> tuple[int, int]:
    engine, rng = bench.engine, bench.rng
    return int(rng.integers(1, engine.max_rows + 1)), int(rng.integers(1, engine.max_cols + 1))


def random_inputs(bench: EngineBench, batch: int, cols: int) -> np.ndarray:
    return bench.rng.integers(-128, 128, size=(batch, cols), dtype=np.int8)


@cocotb.test()
async def random_layers_under_backpressure(dut):
    """Random shapes, 0-100% zero groups, raw and requantized outputs, random stalls."""
    bench = EngineBench(dut)
    await bench.reset()
    for case, zero_groups in enumerate([0.0, 1.0, 0.5, 0.9, 0.25, float(bench.rng.random())]):
        rows, cols = random_shape(bench)
        layer = random_layer(bench, rows, cols, zero_groups, requant=case % 2 == 1)
        await bench.check(layer, random_inputs(bench, int(bench.rng.integers(1, 5)), cols),
                          f"case {case} ({zero_groups:.0%} zero groups)")


@cocotb.test()
async def extremes_at_full_fan_in(dut):
    """All -128 against all +1 and all -1 at the largest N: the accumulator extremes."""
    bench = EngineBench(dut)
    await bench.reset()
    engine = bench.engine
    rows, cols = min(engine.max_rows, 2 * engine.pe + 1), engine.max_cols
    x = np.full((2, cols), -128, dtype=np.int8)
    x[1] = 127
    for weight in (1, -1):
        layer = engine.layer({"w": np.full((rows, cols), weight, dtype=np.int8)})
        await bench.check(layer, x, f"all weights {weight:+d}")


@cocotb.test()
async def reset_in_mid_stream(dut):
    """A reset while vectors stream, then the same layer and inputs again, exactly."""
    bench = EngineBench(dut)
    await bench.reset()
    rows, cols = random_shape(bench)
    layer = random_layer(bench, rows, cols, 0.3, requant=True)
    await bench.reset_during(layer, random_inputs(bench, 3, cols))


@cocotb.test()
async def cycles_follow_nonzero_groups(dut):
    """Without stalls a vector costs one cycle per non-zero group (at least one per row
    block), or its input beats if those are more, plus one pipeline fill per batch."""
    bench = EngineBench(dut)
    bench.set_pause(0.0)
    await bench.reset()
    engine = bench.engine
    rows, cols = engine.max_rows, engine.max_cols
    batch = 4
    for zero_groups in (0.0, 0.5, 1.0):
        layer = random_layer(bench, rows, cols, zero_groups)
        x = random_inputs(bench, batch, cols)
        cycles = await bench.check(layer, x, f"{zero_groups:.0%} zero groups")
        per_vector = layer.counters(x)["ideal_cycles"] // batch
        bound = batch * max(per_vector, layer.input_beats_per_vector) \
            + layer.input_beats_per_vector + engine.latency + 2
        assert batch * per_vector <= cycles <= bound, \
            f"{zero_groups:.0%} zero groups: {cycles} cycles, expected " \
            f"[{batch * per_vector}, {bound}] (seed {bench.seed})"
