"""cocotb testbench of the dense int8 engine (:mod:`secateur.hdl.engines.dense`).

Configuration from pytest (:mod:`tests.test_tb_engines`): ``engine``, ``params``, ``seed`` and
``pause`` (the random back-pressure probability on ``act`` and ``res``).
"""

from __future__ import annotations

import cocotb
import numpy as np

from .engine_bench import EngineBench


def random_layer(bench: EngineBench, rows: int, cols: int, requant: bool = False):
    """A random int8 layer over the whole int8 range, -128 included."""
    rng = bench.rng
    weights = {"w": rng.integers(-128, 128, size=(rows, cols), dtype=np.int8)}
    if requant:
        weights.update(mult=rng.integers(-2**15, 2**15, size=rows),
                       shift=np.int64(rng.integers(0, 30)), relu=np.bool_(rng.random() < 0.5))
    return bench.engine.layer(weights)


def random_shape(bench: EngineBench) -> tuple[int, int]:
    engine, rng = bench.engine, bench.rng
    return int(rng.integers(1, engine.max_rows + 1)), int(rng.integers(1, engine.max_cols + 1))


def random_inputs(bench: EngineBench, batch: int, cols: int) -> np.ndarray:
    return bench.rng.integers(-128, 128, size=(batch, cols), dtype=np.int8)


@cocotb.test()
async def random_layers_under_backpressure(dut):
    """Random shapes (odd ones included), raw and requantized outputs, random stalls, and
    layers of different shapes one after the other on the same engine."""
    bench = EngineBench(dut)
    await bench.reset()
    engine = bench.engine
    shapes = [random_shape(bench) for _ in range(4)] + \
        [(1, 1), (engine.max_rows, engine.max_cols)]
    for case, (rows, cols) in enumerate(shapes):
        layer = random_layer(bench, rows, cols, requant=case % 2 == 1)
        await bench.check(layer, random_inputs(bench, int(bench.rng.integers(1, 5)), cols),
                          f"case {case} ({rows}x{cols})")


@cocotb.test()
async def extremes_at_full_fan_in(dut):
    """-128 x -128 and -128 x 127 at the largest N: both accumulator extremes."""
    bench = EngineBench(dut)
    await bench.reset()
    engine = bench.engine
    rows, cols = min(engine.max_rows, 2 * engine.pe + 1), engine.max_cols
    x = np.full((2, cols), -128, dtype=np.int8)
    x[1] = 127
    for weight in (-128, 127):
        layer = engine.layer({"w": np.full((rows, cols), weight, dtype=np.int8)})
        await bench.check(layer, x, f"all weights {weight}")


@cocotb.test()
async def reset_in_mid_stream(dut):
    """A reset while vectors stream, then the same layer and inputs again, exactly."""
    bench = EngineBench(dut)
    await bench.reset()
    rows, cols = random_shape(bench)
    layer = random_layer(bench, rows, cols, requant=True)
    await bench.reset_during(layer, random_inputs(bench, 3, cols))


@cocotb.test()
async def cycles_are_one_per_tile(dut):
    """Without stalls a vector costs exactly one cycle per tile, vectors back to back: the
    batch takes its tiles plus the first vector's input beats and one pipeline fill."""
    bench = EngineBench(dut)
    bench.set_pause(0.0)
    await bench.reset()
    engine = bench.engine
    batch = 4
    for rows, cols in ((engine.max_rows, engine.max_cols), random_shape(bench)):
        layer = random_layer(bench, rows, cols)
        x = random_inputs(bench, batch, cols)
        cycles = await bench.check(layer, x, f"{rows}x{cols}")
        ideal = layer.counters(x)["ideal_cycles"]
        per_vector = max(ideal // batch, layer.input_beats_per_vector)
        bound = batch * per_vector + layer.input_beats_per_vector + engine.latency + 2
        assert ideal <= cycles <= bound, \
            f"{rows}x{cols}: {cycles} cycles, expected [{ideal}, {bound}] (seed {bench.seed})"
