"""What every engine testbench does, written once: drive the engine protocol of
:mod:`secateur.hdl.engines.base` with back-pressure and score the results against the layer's
golden model.

An engine's testbench (``verif/tb_<engine>.py``) only says which layers to try: it builds
layers with random legal structure and hands them to :class:`EngineBench`.
"""

from __future__ import annotations

import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from ..gen.registry import make_engine
from ..hdl.engines.base import Layer
from .launch import tb_config
from .streams import StreamSink, StreamSource, reset

__all__ = ["EngineBench"]


class EngineBench:
    """The DUT of an engine testbench, with sources on ``load``/``act`` and a sink on ``res``.

    The configuration (``engine``, ``params``, ``seed``, ``pause``) comes from pytest through
    :func:`secateur.verif.launch.tb_config`.
    """

    def __init__(self, dut):
        self.config = tb_config()
        self.dut = dut
        self.engine = make_engine(self.config["engine"], **self.config["params"])
        self.seed = int(self.config["seed"])
        self.rng = np.random.default_rng(self.seed)
        pause = float(self.config.get("pause", 0.0))
        stream_rng = random.Random(self.seed)
        self.load = StreamSource(dut, "load", dut.clk)
        self.act = StreamSource(dut, "act", dut.clk, pause=pause, rng=stream_rng)
        self.res = StreamSink(dut, "res", dut.clk, pause=pause, rng=stream_rng)
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())

    def set_pause(self, pause: float) -> None:
        self.act.pause = self.res.pause = pause

    async def reset(self) -> None:
        self.load.idle()
        self.act.idle()
        await reset(self.dut, self.dut.clk)

    async def program(self, layer: Layer) -> None:
        load_map = self.engine.load_map
        await self.load.send([load_map.payload(addr, data) for addr, data in layer.load_beats()])

    async def run(self, layer: Layer, x: np.ndarray) -> tuple[np.ndarray, int]:
        """Program ``layer``, stream ``x`` and return ``(outputs, cycles)``; cycles count from
        the first input beat offered to the last result received."""
        await self.program(layer)
        beats = layer.input_beats(x)
        expected = x.shape[0] * layer.result_beats_per_vector
        start = cocotb.utils.get_sim_time("ns")
        sender = cocotb.start_soon(self.act.send(beats))
        received = await self.res.receive(expected, timeout_cycles=200 * (len(beats) + expected)
                                          + 20 * layer.counters(x)["ideal_cycles"] + 10_000)
        await sender
        cycles = int((cocotb.utils.get_sim_time("ns") - start) // 10)
        return layer.decode_results(received, x.shape[0]), cycles

    async def check(self, layer: Layer, x: np.ndarray, what: str) -> int:
        """Run and assert bit-exact equality with the golden model; return the cycles."""
        y, cycles = await self.run(layer, x)
        expected = layer.reference(x)
        if not np.array_equal(y, expected):
            b, m = np.argwhere(y != expected)[0]
            raise AssertionError(
                f"{what}: output [{b}, {m}] is {y[b, m]}, golden model says {expected[b, m]} "
                f"({int(np.count_nonzero(y != expected))} of {y.size} differ; seed {self.seed}, "
                f"layer {layer.rows}x{layer.cols})")
        return cycles

    async def reset_during(self, layer: Layer, x: np.ndarray) -> None:
        """Start ``x`` streaming, reset after a random number of cycles, then check that a
        reprogrammed engine computes ``x`` exactly."""
        await self.program(layer)
        sender = cocotb.start_soon(self.act.send(layer.input_beats(x)))
        receiver = cocotb.start_soon(self.res.receive(x.shape[0] * layer.result_beats_per_vector))
        await ClockCycles(self.dut.clk, int(self.rng.integers(1, 4 * layer.counters(x)["ideal_cycles"] + 8)))
        sender.cancel()
        receiver.cancel()
        self.res.ready.value = 0
        await self.reset()
        await RisingEdge(self.dut.clk)
        await self.check(layer, x, "after a reset in mid-stream")
