"""cocotb testbench of the permuted-diagonal engine (:mod:`secateur.hdl.engines.permdiag`).

Configuration from pytest (:mod:`tests.test_tb_engines`): ``engine``, ``params``, ``seed`` and
``pause`` (the random back-pressure probability on ``act`` and ``res``).
"""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge

from ..models import permdiag as permdiag_model
from .engine_bench import EngineBench, extreme_inputs
# cocotb runs the tests it finds among the module's names: these serve every engine.
from .engine_bench import load_port_protocol, requantizer_clamps, result_stalls  # noqa: F401


def random_layer(bench: EngineBench, rows: int, cols: int, p: int, zero_blocks: float,
                 requant: bool = False, value=None):
    """A random permuted-diagonal layer: random offsets, a fraction of all-zero blocks, some
    zero values inside the others, and random result-path keys; every value equal to
    ``value`` if given, then without a bias or requantizer (the accumulator extremes)."""
    rng = bench.rng
    offsets = rng.integers(0, p, size=(rows // p, cols // p))
    if value is None:
        diag = rng.integers(-128, 128, size=(rows // p, cols // p, p), dtype=np.int8)
        diag[rng.random(diag.shape) < 0.1] = 0
        diag[rng.random(diag.shape[:2]) < zero_blocks] = 0
    else:
        diag = np.full((rows // p, cols // p, p), value, dtype=np.int8)
    weights = {"w": permdiag_model.expand(diag, offsets), "p": np.int64(p)}
    if value is None:
        weights.update(bench.result_keys(rows, 24, requant))
    return bench.engine.layer(weights)


def random_shape(bench: EngineBench) -> tuple[int, int, int]:
    """``(rows, cols, p)``: a legal block size and a random multiple of it for each side."""
    engine, rng = bench.engine, bench.rng
    p = int(rng.integers(engine.min_p, min(engine.max_p, engine.max_rows, engine.max_cols) + 1))
    return (p * int(rng.integers(1, engine.max_rows // p + 1)),
            p * int(rng.integers(1, engine.max_cols // p + 1)), p)


@cocotb.test()
async def random_layers_under_backpressure(dut):
    """Random shapes and block sizes, 0-100% zero activations and up to all-zero blocks,
    raw and requantized outputs, random stalls on both streams."""
    bench = await EngineBench.start(dut)
    for case, zeros in enumerate([0.0, 1.0, 0.5, 0.9, 0.25, 0.75, float(bench.rng.random())]):
        rows, cols, p = random_shape(bench)
        layer = random_layer(bench, rows, cols, p, zero_blocks=float(bench.rng.random()) / 2,
                             requant=case % 2 == 1)
        x = bench.random_inputs(int(bench.rng.integers(1, 6)), cols, zeros)
        await bench.check(layer, x, f"case {case} ({rows}x{cols}, p={p}, {zeros:.0%} zeros)")


@cocotb.test()
async def extremes_at_the_largest_row(dut):
    """Every weight -128 at the smallest p and the largest N, so rows hold the most
    non-zeros: all -128 inputs give the largest sum, all 127 the most negative one."""
    bench = await EngineBench.start(dut)
    engine = bench.engine
    p = engine.min_p
    rows, cols = min(engine.max_rows // p, 2 * engine.slot_lanes + 1) * p, engine.max_cols // p * p
    x = extreme_inputs(cols)
    layer = random_layer(bench, rows, cols, p, zero_blocks=0.0, value=-128)
    expected = layer.reference(x)
    assert expected[0].max() == 128 * 128 * (cols // p), "the extreme was not reached"
    await bench.check(layer, x, f"all weights -128 ({rows}x{cols}, p={p})")


@cocotb.test()
async def reset_in_mid_stream(dut):
    """A reset while vectors stream, then the same layer and inputs again, exactly."""
    bench = await EngineBench.start(dut)
    rows, cols, p = random_shape(bench)
    layer = random_layer(bench, rows, cols, p, 0.2, requant=True)
    await bench.reset_during(layer, bench.random_inputs(3, cols, 0.3))


@cocotb.test()
async def cycles_follow_the_schedule(dut):
    """Without stalls the PEs take exactly the sequencer's pick rounds (``passes`` cycles
    each, 1 for an all-zero vector), so zero activations cost nothing; a vector also waits
    for its input beats and for a drained accumulator bank: every beat at the performance
    model's edge (:meth:`EngineBench.check_time`)."""
    bench = await EngineBench.start(dut, stalls=False)
    engine = bench.engine
    p = engine.min_p
    rows, cols = engine.max_rows // p * p, engine.max_cols // p * p
    layer = random_layer(bench, rows, cols, p, 0.0)
    measured = {}
    for zeros in (0.0, 0.75, 1.0):
        x = bench.random_inputs(4, cols, zeros)
        measured[zeros] = await bench.check(layer, x, f"{zeros:.0%} zeros")
    assert measured[1.0] < measured[0.0], f"all-zero inputs were not faster: {measured}"


@cocotb.test()
async def latency_of_an_all_zero_vector(dut):
    """The documented latency: last act beat to first res beat, engine idle, no stalls."""
    bench = await EngineBench.start(dut, stalls=False)
    rows, cols, p = random_shape(bench)
    layer = random_layer(bench, rows, cols, p, 0.0)
    await bench.program(layer)
    await bench.act.send(layer.input_beats(np.zeros((1, cols), dtype=np.int8)))
    last_beat = cocotb.utils.get_sim_time("ns")  # the edge that took the last act beat
    bench.res.ready.value = 1
    for _ in range(10 * bench.engine.latency):
        await RisingEdge(bench.dut.clk)
        if int(bench.res.valid.value):
            break
    else:
        raise AssertionError(f"no result within {10 * bench.engine.latency} cycles "
                             f"(seed {bench.seed})")
    latency = int((cocotb.utils.get_sim_time("ns") - last_beat) // 10)
    assert latency == bench.engine.latency, \
        f"latency {latency}, the engine documents {bench.engine.latency} (seed {bench.seed})"
