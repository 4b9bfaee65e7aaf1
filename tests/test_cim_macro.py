"""The behavioural CIM macro's building blocks (:mod:`secateur.hdl.cim_macro`)."""

import random

import pytest
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from secateur.hdl.cim_macro import Popcount


@pytest.mark.parametrize("width", [1, 2, 3, 7, 8, 9, 31, 64, 100, 128, 129])
def test_popcount_counts_every_one(width):
    m = Module()
    bits = Signal(width)
    total = Popcount(m)(bits, "total")
    assert len(total) == width.bit_length()
    rng = random.Random(width)
    values = ([0, (1 << width) - 1] + list(range(min(1 << width, 256)))
              + [rng.getrandbits(width) for _ in range(200)])
    seen = []

    async def testbench(ctx):
        for value in values:
            ctx.set(bits, value)
            seen.append((value, ctx.get(total)))

    sim = Simulator(m)
    sim.add_testbench(testbench)
    sim.run()
    assert [count for _, count in seen] == [bin(value).count("1") for value in values]
