"""cocotb testbench of the LFSR primitive (:class:`secateur.hdl.lfsr.LFSR`): its state sequence
equals the golden model's (:mod:`secateur.models.lfsr`) at every width the DUT allows.

For every width ``w`` in ``[2, max_width]`` it checks

* ``n = 2**w - 1`` (nothing rejected): the raw state sequence, over the whole period and
  around the wrap for ``w <= 10``, else its first 400 states;
* ``n = 2**(w-1)``, the most rejections, and a random ``n`` of that width: the columns of
  :func:`~secateur.models.lfsr.mask_indices`, and, when the look-ahead is at least ``w + 1``,
  one accepted state every cycle;

with random pauses of ``advance`` and restarts from new seeds in between. Configuration from
pytest: ``max_width``, ``lookahead``, ``seed``.
"""

from __future__ import annotations

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from ..models.lfsr import MIN_WIDTH, lfsr_states, mask_indices
from .launch import tb_config
from .streams import reset


class SequenceBench:
    def __init__(self, dut):
        config = tb_config()
        self.dut = dut
        self.max_width = int(config["max_width"])
        self.lookahead = int(config["lookahead"])
        self.seed = int(config["seed"])
        self.rng = random.Random(self.seed)
        dut.start.value = 0
        dut.advance.value = 0
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())

    async def collect(self, n: int, seed: int, count: int, pause: float) -> tuple[list[int], int]:
        """Start from ``seed`` and take ``count`` accepted states, with ``advance`` low on a
        random ``pause`` fraction of cycles; return the states and the cycles without a valid
        state while ``advance`` was high."""
        dut = self.dut
        dut.n.value = n
        dut.seed.value = seed
        dut.start.value = 1
        states, hunting = [], 0
        while len(states) < count:
            advance = int(self.rng.random() >= pause)
            dut.advance.value = advance
            await ReadOnly()
            if int(dut.valid.value):
                if advance:
                    states.append(int(dut.state.value))
                    if int(dut.index.value) != states[-1] - 1:
                        raise AssertionError(f"index {int(dut.index.value)} is not state "
                                             f"{states[-1]} - 1")
            elif advance:
                hunting += 1
            await RisingEdge(dut.clk)
            if advance and states:
                dut.start.value = 0
        dut.advance.value = 0
        return states, hunting

    def stall_free(self, width: int) -> bool:
        return self.lookahead >= width + 1


@cocotb.test()
async def raw_sequence_every_width(dut):
    """With nothing rejected the DUT walks the model's state sequence."""
    bench = SequenceBench(dut)
    await reset(dut, dut.clk)
    for width in range(MIN_WIDTH, bench.max_width + 1):
        n = (1 << width) - 1
        count = n + 3 if width <= 10 else 400
        seed = bench.rng.randint(1, n)
        states, hunting = await bench.collect(n, seed, count, pause=0.2)
        expected = lfsr_states(seed, width, count)
        if states != expected:
            first = next(i for i, (a, b) in enumerate(zip(states, expected)) if a != b)
            raise AssertionError(f"width {width}, seed {seed}: state {first} is {states[first]}, "
                                 f"model says {expected[first]} (seed {bench.seed})")
        assert hunting == 0, f"width {width}: {hunting} cycles without a state"


@cocotb.test()
async def accepted_sequence_every_width(dut):
    """With rejections the DUT visits the model's mask, one column per cycle when the
    look-ahead covers the longest run of rejected states."""
    bench = SequenceBench(dut)
    await reset(dut, dut.clk)
    for width in range(MIN_WIDTH, bench.max_width + 1):
        for n in (1 << (width - 1), bench.rng.randint(1 << (width - 1), (1 << width) - 1)):
            k = min(n, 300)
            seed = bench.rng.randint(1, n)
            states, hunting = await bench.collect(n, seed, k, pause=0.1)
            columns = [state - 1 for state in states]
            expected = mask_indices(n, k, seed)[0].tolist()
            if columns != expected:
                first = next(i for i, (a, b) in enumerate(zip(columns, expected)) if a != b)
                raise AssertionError(f"n {n} (width {width}), seed {seed}: column {first} is "
                                     f"{columns[first]}, model says {expected[first]} "
                                     f"(seed {bench.seed})")
            if bench.stall_free(width):
                assert hunting == 0, \
                    f"n {n}: {hunting} cycles without an accepted state (seed {bench.seed})"
