"""cocotb testbench of the dense int8 engine (:mod:`secateur.hdl.engines.dense`).

Configuration from pytest (:mod:`tests.test_tb_engines`): ``engine``, ``params``, ``seed`` and
``pause`` (the random back-pressure probability on ``act`` and ``res``).
"""

from __future__ import annotations

import cocotb
import numpy as np

from .engine_bench import EngineBench
# cocotb runs the tests it finds among the module's names: these serve every engine.
from .engine_bench import load_port_protocol, requantizer_clamps, result_stalls  # noqa: F401


def random_layer(bench: EngineBench, rows: int, cols: int, requant: bool = False):
    """A random int8 layer over the whole int8 range, -128 included."""
    weights = {"w": bench.rng.integers(-128, 128, size=(rows, cols), dtype=np.int8)}
    weights.update(bench.result_keys(rows, 30, requant))
    return bench.engine.layer(weights)


@cocotb.test()
async def random_layers_under_backpressure(dut):
    """Random shapes (odd ones included), raw and requantized outputs, random stalls, and
    layers of different shapes one after the other on the same engine."""
    bench = await EngineBench.start(dut)
    engine = bench.engine
    shapes = [bench.random_shape() for _ in range(4)] + \
        [(1, 1), (engine.max_rows, engine.max_cols)]
    for case, (rows, cols) in enumerate(shapes):
        layer = random_layer(bench, rows, cols, requant=case % 2 == 1)
        await bench.check(layer, bench.random_inputs(int(bench.rng.integers(1, 5)), cols),
                          f"case {case} ({rows}x{cols})")


@cocotb.test()
async def extremes_at_full_fan_in(dut):
    """-128 x -128 and -128 x 127 at the largest N: both accumulator extremes."""
    bench = await EngineBench.start(dut)
    await bench.check_uniform_layers((-128, 127))


@cocotb.test()
async def reset_in_mid_stream(dut):
    """A reset while vectors stream, then the same layer and inputs again, exactly."""
    bench = await EngineBench.start(dut)
    rows, cols = bench.random_shape()
    layer = random_layer(bench, rows, cols, requant=True)
    await bench.reset_during(layer, bench.random_inputs(3, cols))


@cocotb.test()
async def cycles_are_one_per_tile(dut):
    """Without stalls a vector costs exactly one cycle per tile, vectors back to back: every
    beat at the performance model's edge (:meth:`EngineBench.check_time`)."""
    bench = await EngineBench.start(dut, stalls=False)
    engine = bench.engine
    for rows, cols in ((engine.max_rows, engine.max_cols), bench.random_shape()):
        layer = random_layer(bench, rows, cols)
        await bench.check(layer, bench.random_inputs(4, cols), f"{rows}x{cols}")
