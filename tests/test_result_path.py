"""The result path's credits and output buffer (:mod:`secateur.hdl.result_path`), in
Amaranth's simulator: values against the golden model under random back-pressure, the
latency and the full rate without it, and exactly :attr:`ResultPath.capacity` beats taken
while ``o`` stalls."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from secateur.hdl.result_path import BIAS_BIT, ENABLE_BIT, RELU_BIT, SHIFT_LSB, ResultPath
from secateur.models.requant import RequantParams, result_path

LANES, ACC_WIDTH, ROW_BLOCKS = 3, 12, 4


@pytest.mark.parametrize("kwargs, message", [
    (dict(lanes=0, acc_width=12, row_blocks=1),
     r"^ResultPath lanes and row_blocks must be >= 1, not 0 and 1$"),
    (dict(lanes=1, acc_width=7, row_blocks=1),
     r"^ResultPath acc_width must be in \[8, 63\], not 7$"),
    (dict(lanes=1, acc_width=12, row_blocks=1, lead=17),
     r"^ResultPath lead must be in \[0, 16\], not 17$"),
    (dict(lanes=1, acc_width=12, row_blocks=1, lead=True),
     r"^ResultPath lead must be an integer, not True$"),
])
def test_parameters_are_checked(kwargs, message):
    with pytest.raises((TypeError, ValueError), match=message):
        ResultPath(**kwargs)


def _run(dut, beats, *, offer, ready, cycles):
    """Configure ``dut`` (requantizer on with ReLU, biases on), then issue ``beats``
    (``(row_block, acc)``) whenever ``offer(cycle)`` and a credit allow, take results whenever
    ``ready(cycle)``; returns the results, the cycle each beat was issued and each result
    left."""
    rng = np.random.default_rng(7)
    mult = rng.integers(-2**15, 2**15, size=(ROW_BLOCKS, LANES))
    bias = rng.integers(-2**31, 2**31, size=(ROW_BLOCKS, LANES))
    shift = 9
    out, issued, left = [], [], []
    lead = dut.lead

    async def bench(ctx):
        control = (1 << ENABLE_BIT) | (1 << RELU_BIT) | (1 << BIAS_BIT) | (shift << SHIFT_LSB)
        ctx.set(dut.control_write.data, control)
        ctx.set(dut.control_write.en, 1)
        await ctx.tick()
        ctx.set(dut.control_write.en, 0)
        for write, values, bits in ((dut.mult_write, mult, 16), (dut.bias_write, bias, 32)):
            for block in range(ROW_BLOCKS):
                for lane in range(LANES):
                    ctx.set(write.row_block, block)
                    ctx.set(write.lane, lane)
                    ctx.set(write.data, int(values[block, lane]))
                    ctx.set(write.en, 1)
                    await ctx.tick()
            ctx.set(write.en, 0)
        pipeline = [None] * lead          # beats issued, on their way to `i`
        pending = list(beats)
        for cycle in range(cycles):
            want = bool(pending) and offer(cycle)
            if lead:
                credit = ctx.get(dut.room)
                issue = want and credit
                ctx.set(dut.reserve, issue)
                pipeline.append(pending.pop(0) if issue else None)
                arriving = pipeline.pop(0)
            else:
                arriving = pending[0] if want else None
                issue = want and ctx.get(dut.i.ready)
                if issue:
                    pending.pop(0)
            if issue:
                issued.append(cycle)
            ctx.set(dut.i.valid, arriving is not None)
            if arriving is not None:
                block, acc = arriving
                ctx.set(dut.i.payload.row_block, block)
                ctx.set(dut.i.payload.acc, [int(value) for value in acc])
            taking = ready(cycle)
            ctx.set(dut.o.ready, taking)
            if taking and ctx.get(dut.o.valid):
                out.append([ctx.get(dut.o.payload[lane]) for lane in range(LANES)])
                left.append(cycle)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    expected = [result_path(np.array(acc)[None, :], RequantParams(mult[block], shift, relu=True),
                            bias[block])[0].tolist() for block, acc in beats]
    return out, expected, issued, left


def _beats(count, seed):
    rng = random.Random(seed)
    limit = 1 << (ACC_WIDTH - 1)
    return [(rng.randrange(ROW_BLOCKS),
             [rng.choice([-limit, limit - 1, rng.randrange(-limit, limit)]) for _ in range(LANES)])
            for _ in range(count)]


@pytest.mark.parametrize("lead", [0, 3])
def test_full_rate_and_latency_without_back_pressure(lead):
    dut = ResultPath(lanes=LANES, acc_width=ACC_WIDTH, row_blocks=ROW_BLOCKS, lead=lead)
    beats = _beats(40, 1)
    out, expected, issued, left = _run(dut, beats, offer=lambda c: True, ready=lambda c: True,
                                       cycles=80)
    assert out == expected
    # One beat per cycle in, one per cycle out, each LATENCY cycles after it reached `i`.
    assert issued == list(range(issued[0], issued[0] + len(beats)))
    assert [b - a for a, b in zip(issued, left)] == [lead + ResultPath.LATENCY] * len(beats)


@pytest.mark.parametrize("lead", [0, 1, 3])
def test_a_stalled_output_takes_exactly_its_credits(lead):
    dut = ResultPath(lanes=LANES, acc_width=ACC_WIDTH, row_blocks=ROW_BLOCKS, lead=lead)
    assert dut.capacity == ResultPath.CAPACITY + lead
    beats = _beats(dut.capacity + 5, 2)
    stall = 60
    out, expected, issued, left = _run(dut, beats, offer=lambda c: True,
                                       ready=lambda c: c >= stall, cycles=stall + 60)
    assert len([cycle for cycle in issued if cycle < stall]) == dut.capacity
    assert out == expected


@pytest.mark.parametrize("lead", [0, 2, 5])
def test_random_back_pressure_loses_and_reorders_nothing(lead, seed):
    dut = ResultPath(lanes=LANES, acc_width=ACC_WIDTH, row_blocks=ROW_BLOCKS, lead=lead)
    rng = random.Random(seed)
    offers = [rng.random() < 0.8 for _ in range(600)]
    readies = [rng.random() < (0.2 if (c // 40) % 2 else 0.9) for c in range(600)]
    beats = _beats(150, seed)
    out, expected, _, _ = _run(dut, beats, offer=offers.__getitem__,
                               ready=readies.__getitem__, cycles=600)
    assert out == expected
