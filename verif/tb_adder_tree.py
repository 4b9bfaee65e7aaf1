"""cocotb testbench of :class:`secateur.hdl.adder_tree.AdderTree`.

Configuration: ``fan_in``, ``input_width``, ``stages``, ``tag_width``, ``seed``, ``pause``.
Checks exact sums (random operands and both extremes), the tag, the latency, and that
back-pressure neither drops nor duplicates beats. Trees with ``stages=0`` have no clock and are
checked in :mod:`tests.test_primitives` with Amaranth's simulator instead.
"""

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge

from ..hdl.engines.base import pack_lanes
from .launch import tb_config
from .streams import reset, start_streams


def _beats(config, rng):
    fan_in, width = config["fan_in"], config["input_width"]
    low, high = -(1 << (width - 1)), (1 << (width - 1)) - 1
    vectors = [[low] * fan_in, [high] * fan_in]
    vectors += [[rng.randint(low, high) for _ in range(fan_in)] for _ in range(200)]
    tags = [rng.getrandbits(config["tag_width"]) if config["tag_width"] else 0 for _ in vectors]
    return vectors, tags


def _payload(config, operands, tag):
    packed = pack_lanes(operands, config["input_width"])
    return packed | (tag << (config["fan_in"] * config["input_width"]))


def _unpack(config, output_width, payload):
    total = payload & ((1 << output_width) - 1)
    if total >> (output_width - 1):
        total -= 1 << output_width
    return total, payload >> output_width


@cocotb.test()
async def sums_under_backpressure(dut):
    config = tb_config()
    rng = random.Random(config["seed"])
    source, sink = await start_streams(dut, config["pause"], rng)
    vectors, tags = _beats(config, rng)
    sender = cocotb.start_soon(source.send([_payload(config, v, t) for v, t in zip(vectors, tags)]))
    received = await sink.receive(len(vectors))
    await sender
    for index, (vector, tag, payload) in enumerate(zip(vectors, tags, received)):
        total, got_tag = _unpack(config, config["output_width"], payload)
        assert total == sum(vector), f"beat {index}: sum {total}, expected {sum(vector)}"
        assert got_tag == tag, f"beat {index}: tag {got_tag}, expected {tag}"


@cocotb.test()
async def latency_is_stages(dut):
    config = tb_config()
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.o__ready.value = 1
    await reset(dut, dut.clk)
    dut.i__payload.value = _payload(config, [1] * config["fan_in"], 0)
    dut.i__valid.value = 1
    await RisingEdge(dut.clk)
    dut.i__valid.value = 0
    for cycle in range(config["stages"] + 1):
        if int(dut.o__valid.value):
            break
        await RisingEdge(dut.clk)
    assert cycle == config["stages"], f"output after {cycle} cycles, expected {config['stages']}"
    total, _ = _unpack(config, config["output_width"], int(dut.o__payload.value))
    assert total == config["fan_in"]
