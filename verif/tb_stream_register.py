"""cocotb testbench of :class:`secateur.hdl.stream.StreamRegister`: every beat arrives once, in
order, under random stalls on both sides, and at full rate when neither side stalls."""

import random

import cocotb

from .launch import tb_config
from .streams import start_streams


@cocotb.test()
async def order_and_throughput(dut):
    config = tb_config()
    rng = random.Random(config["seed"])
    source, sink = await start_streams(dut, config["pause"], rng)
    beats = [rng.getrandbits(config["width"]) for _ in range(300)]
    sender = cocotb.start_soon(source.send(beats))
    assert await sink.receive(len(beats)) == beats
    await sender

    source.pause = sink.pause = 0.0
    start = cocotb.utils.get_sim_time("ns")
    sender = cocotb.start_soon(source.send(beats))
    assert await sink.receive(len(beats)) == beats
    cycles = (cocotb.utils.get_sim_time("ns") - start) / 10
    assert cycles <= len(beats) + 3, f"{len(beats)} beats took {cycles} cycles"
