"""cocotb testbench of :class:`secateur.hdl.requant.Requantizer` against
:func:`secateur.models.requant.requantize`.

Configuration: ``lanes``, ``acc_width``, ``seed``, ``pause``. Sweeps random accumulators and
multipliers, the extremes of both, every shift, relu on and off, and bypass.
"""

import random

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge

from ..hdl.engines.base import pack_lanes, unpack_lanes
from ..models.requant import MULT_BITS, SHIFT_MAX, RequantParams, requantize
from .launch import tb_config
from .streams import start_streams


@cocotb.test()
async def matches_the_golden_model(dut):
    config = tb_config()
    lanes, acc_width = config["lanes"], config["acc_width"]
    rng = random.Random(config["seed"])
    source, sink = await start_streams(dut, config["pause"], rng)
    acc_low, acc_high = -(1 << (acc_width - 1)), (1 << (acc_width - 1)) - 1
    mult_low, mult_high = -(1 << (MULT_BITS - 1)), (1 << (MULT_BITS - 1)) - 1
    shifts = list(range(SHIFT_MAX + 1))
    rng.shuffle(shifts)
    settings = [(enable, relu, shift) for shift in shifts[:12] + [0, SHIFT_MAX]
                for enable, relu in ((1, 0), (1, 1))] + [(0, 0, 5)]
    for enable, relu, shift in settings:
        dut.enable.value, dut.relu.value, dut.shift.value = enable, relu, shift
        accs = [[rng.choice([acc_low, acc_high, 0, -1, rng.randint(acc_low, acc_high)])
                 for _ in range(lanes)] for _ in range(16)]
        mults = [[rng.choice([mult_low, mult_high, 1, rng.randint(mult_low, mult_high)])
                  for _ in range(lanes)] for _ in range(16)]
        beats = [pack_lanes(acc, acc_width) | (pack_lanes(mult, MULT_BITS) << (lanes * acc_width))
                 for acc, mult in zip(accs, mults)]
        sender = cocotb.start_soon(source.send(beats))
        received = await sink.receive(len(beats))
        await sender
        for acc, mult, payload in zip(accs, mults, received):
            got = unpack_lanes(payload, acc_width, lanes)
            if enable:
                expected = [int(requantize(np.array([a]), RequantParams(m, shift, bool(relu)))[0])
                            for a, m in zip(acc, mult)]
            else:
                expected = acc
            assert got == expected, (f"shift {shift} relu {relu} enable {enable}: acc {acc} "
                                     f"mult {mult} -> {got}, expected {expected}")
        await RisingEdge(dut.clk)
