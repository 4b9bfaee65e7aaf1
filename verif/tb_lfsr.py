"""cocotb testbench of the LGPS engine (:mod:`secateur.hdl.engines.lfsr`), either index source.

Configuration from pytest (:mod:`tests.test_tb_engines`): ``engine``, ``params``, ``seed`` and
``pause`` (the random back-pressure probability on ``act`` and ``res``).
"""

from __future__ import annotations

import math

import cocotb
import numpy as np

from ..models.lfsr import mask_indices
from .engine_bench import EngineBench, extreme_inputs
# cocotb runs the tests it finds among the module's names: these serve every engine.
from .engine_bench import load_port_protocol, requantizer_clamps, result_stalls  # noqa: F401


def k_limit(bench: EngineBench, rows: int, cols: int) -> int:
    """The largest ``k`` the engine can store for an ``rows x cols`` layer."""
    engine = bench.engine
    return min(cols, engine.weight_depth // math.ceil(rows / engine.pe))


def random_weights(bench: EngineBench, rows: int, cols: int, k: int, *, kept_zeros: float = 0.2,
                   requant: bool = False) -> dict:
    """A random legal LGPS layer: random seeds, int8 values on each row's mask, some of them 0."""
    rng = bench.rng
    seeds = rng.integers(1, cols + 1, size=rows)
    columns = mask_indices(cols, k, seeds)
    values = rng.integers(-128, 128, size=(rows, k))
    values[rng.random((rows, k)) < kept_zeros] = 0
    w = np.zeros((rows, cols), dtype=np.int8)
    w[np.arange(rows)[:, None], columns] = values
    weights = {"w": w, "seeds": seeds, "k": np.int64(k)}
    weights.update(bench.result_keys(rows, 24, requant))
    return weights


def random_layer(bench: EngineBench, k_choice: str = "random", requant: bool = False):
    """A random odd-shaped layer; ``k_choice`` is ``"one"``, ``"full"`` (the most that fits)
    or ``"random"``."""
    rows, cols = bench.random_shape()
    limit = k_limit(bench, rows, cols)
    k = {"one": 1, "full": limit}.get(k_choice) or int(bench.rng.integers(1, limit + 1))
    return bench.engine.layer(random_weights(bench, rows, cols, k, requant=requant))


@cocotb.test()
async def random_layers_under_backpressure(dut):
    """Random shapes, k from 1 to N, raw and requantized outputs, random stalls, layer after
    layer."""
    bench = await EngineBench.start(dut)
    for case, k_choice in enumerate(["one", "full", "random", "random", "full", "random"]):
        layer = random_layer(bench, k_choice, requant=case % 2 == 1)
        x = bench.random_inputs(int(bench.rng.integers(1, 5)), layer.cols)
        await bench.check(layer, x, f"case {case} ({layer.rows}x{layer.cols}, k={layer.k})")


@cocotb.test()
async def extremes_at_full_k(dut):
    """All weights -128 at full k against all -128 and all +127 inputs: the accumulator
    extremes +16384 N and -16256 N, at the largest N whose full k fits."""
    bench = await EngineBench.start(dut)
    engine = bench.engine
    rows = min(engine.max_rows, 2 * engine.pe + 1)
    cols = engine.max_cols
    while k_limit(bench, rows, cols) < cols:
        cols -= 1
    seeds = bench.rng.integers(1, cols + 1, size=rows)
    layer = engine.layer({"w": np.full((rows, cols), -128, dtype=np.int8), "seeds": seeds,
                          "k": np.int64(cols)})
    await bench.check(layer, extreme_inputs(cols), f"all weights -128, N = k = {cols}")


@cocotb.test()
async def reset_in_mid_stream(dut):
    """A reset while vectors stream, then the same layer and inputs again, exactly."""
    bench = await EngineBench.start(dut)
    layer = random_layer(bench, requant=True)
    await bench.reset_during(layer, bench.random_inputs(3, layer.cols))


@cocotb.test()
async def cycles_are_ceil_m_over_pe_times_k(dut):
    """Without stalls a vector costs ceil(M/pe) * k cycles, or its input beats if those are
    more, and a short LFSR look-ahead its hunts: every beat at the performance model's edge
    (:meth:`EngineBench.check_time`)."""
    bench = await EngineBench.start(dut, stalls=False)
    engine = bench.engine
    rows, cols = engine.max_rows, engine.max_cols
    for k in sorted({1, max(1, k_limit(bench, rows, cols) // 3), k_limit(bench, rows, cols)}):
        layer = engine.layer(random_weights(bench, rows, cols, k))
        await bench.check(layer, bench.random_inputs(4, cols), f"k = {k}")
