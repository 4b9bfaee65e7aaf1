"""cocotb testbench of the ternary adder-tree engine (:mod:`secateur.hdl.engines.ternary`).

Configuration from pytest (:mod:`tests.test_tb_engines`): ``engine``, ``params``, ``seed`` and
``pause`` (the random back-pressure probability on ``act`` and ``res``).
"""

from __future__ import annotations

import math

import cocotb
import numpy as np

from .engine_bench import EngineBench
# cocotb runs the tests it finds among the module's names: these serve every engine.
from .engine_bench import load_port_protocol, requantizer_clamps, result_stalls  # noqa: F401


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
    weights.update(bench.result_keys(rows, 20, requant))
    return engine.layer(weights)


@cocotb.test()
async def random_layers_under_backpressure(dut):
    """Random shapes, 0-100% zero groups, raw and requantized outputs, random stalls."""
    bench = await EngineBench.start(dut)
    for case, zero_groups in enumerate([0.0, 1.0, 0.5, 0.9, 0.25, float(bench.rng.random())]):
        rows, cols = bench.random_shape()
        layer = random_layer(bench, rows, cols, zero_groups, requant=case % 2 == 1)
        await bench.check(layer, bench.random_inputs(int(bench.rng.integers(1, 5)), cols),
                          f"case {case} ({zero_groups:.0%} zero groups)")


@cocotb.test()
async def extremes_at_full_fan_in(dut):
    """All -128 against all +1 and all -1 at the largest N: the accumulator extremes."""
    bench = await EngineBench.start(dut)
    await bench.check_uniform_layers((1, -1))


@cocotb.test()
async def reset_in_mid_stream(dut):
    """A reset while vectors stream, then the same layer and inputs again, exactly."""
    bench = await EngineBench.start(dut)
    rows, cols = bench.random_shape()
    layer = random_layer(bench, rows, cols, 0.3, requant=True)
    await bench.reset_during(layer, bench.random_inputs(3, cols))


@cocotb.test()
async def cycles_follow_nonzero_groups(dut):
    """Without stalls a vector costs one cycle per non-zero group (at least one per row
    block), or its input beats if those are more: every beat at the performance model's
    edge (:meth:`EngineBench.check_time`)."""
    bench = await EngineBench.start(dut, stalls=False)
    rows, cols = bench.engine.max_rows, bench.engine.max_cols
    for zero_groups in (0.0, 0.5, 1.0):
        layer = random_layer(bench, rows, cols, zero_groups)
        await bench.check(layer, bench.random_inputs(4, cols), f"{zero_groups:.0%} zero groups")
