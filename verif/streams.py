"""cocotb drivers for Amaranth valid/ready streams (``<name>__payload/__valid/__ready``).

:class:`StreamSource` drives a stream into the DUT and :class:`StreamSink` takes one out, each
with an optional random pause probability: the source drops ``valid`` and the sink drops
``ready`` on a random fraction of cycles, which is how every testbench applies back-pressure.
Both sample the handshake right after the rising edge, as cocotbext-axi does, so a beat counts
as transferred when ``valid`` and ``ready`` were both high at that edge.

Payloads are plain integers; :func:`secateur.hdl.engines.base.pack_lanes` and
:func:`~secateur.hdl.engines.base.unpack_lanes` convert lanes. :func:`start_streams` is how a
testbench of a one-stream-in, one-stream-out primitive begins.
"""

from __future__ import annotations

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge
from cocotb.utils import get_sim_time

__all__ = ["StreamSource", "StreamSink", "pauses", "reset", "start_streams"]


class _Stream:
    def __init__(self, dut, name: str, clock, pause: float = 0.0, rng: random.Random | None = None):
        if not 0.0 <= pause < 1.0:
            raise ValueError(f"pause must be in [0, 1), not {pause}")
        self.payload = getattr(dut, f"{name}__payload")
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.clock = clock
        self.pause = pause
        self.rng = rng or random.Random(0)
        #: While set, the stream pauses every cycle (a stall scheduled by a testbench).
        self.hold = False

    def _paused(self) -> bool:
        return self.hold or (self.pause > 0 and self.rng.random() < self.pause)


class StreamSource(_Stream):
    """Drives ``payloads`` into a DUT input stream, holding each beat until it is accepted.

    ``accepted_ns`` lists the simulation time (whole ns, rounded: the simulator's float may
    fall a hair short) of the edge that accepted each beat sent.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.valid.value = 0
        self.sent = 0
        self.accepted_ns: list[int] = []

    async def send(self, payloads) -> None:
        payloads = list(payloads)
        index = 0
        while index < len(payloads):
            if self._paused():
                self.valid.value = 0
                await RisingEdge(self.clock)
                continue
            self.payload.value = int(payloads[index])
            self.valid.value = 1
            await RisingEdge(self.clock)
            if int(self.ready.value):
                index += 1
                self.sent += 1
                self.accepted_ns.append(round(get_sim_time("ns")))
        self.valid.value = 0

    def idle(self) -> None:
        self.valid.value = 0


class StreamSink(_Stream):
    """Collects beats from a DUT output stream into :attr:`beats`, and the simulation time
    (whole ns, rounded) of the edge that took each into :attr:`received_ns`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ready.value = 0
        self.beats: list[int] = []
        self.received_ns: list[int] = []

    async def receive(self, count: int, timeout_cycles: int = 1_000_000) -> list[int]:
        """Accept ``count`` more beats, or fail after ``timeout_cycles`` cycles."""
        target = len(self.beats) + count
        for _ in range(timeout_cycles):
            if len(self.beats) >= target:
                break
            ready = 0 if self._paused() else 1
            self.ready.value = ready
            await RisingEdge(self.clock)
            if ready and int(self.valid.value):
                self.beats.append(int(self.payload.value))
                self.received_ns.append(round(get_sim_time("ns")))
        else:
            raise TimeoutError(f"received {len(self.beats)} of {target} beats in "
                               f"{timeout_cycles} cycles")
        self.ready.value = 0
        return self.beats[target - count:target]


def pauses(rng: random.Random, probability: float):
    """An endless pause generator for cocotbext-axi's ``set_pause_generator``: each cycle a
    pause with ``probability``, drawn from ``rng``."""
    while True:
        yield rng.random() < probability


async def reset(dut, clock, cycles: int = 2) -> None:
    """Hold the synchronous reset ``rst`` high for ``cycles`` rising edges."""
    dut.rst.value = 1
    for _ in range(cycles):
        await RisingEdge(clock)
    dut.rst.value = 0


async def start_streams(dut, pause: float, rng: random.Random, source: str = "i",
                        sink: str = "o") -> tuple[StreamSource, StreamSink]:
    """Start a 10 ns clock on ``dut.clk``, attach a source to stream ``source`` and a sink
    to stream ``sink``, both stalling with probability ``pause`` drawn from ``rng``, and
    reset the DUT.

    Returns
    -------
    tuple
        ``(StreamSource, StreamSink)``.
    """
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    stream_source = StreamSource(dut, source, dut.clk, pause=pause, rng=rng)
    stream_sink = StreamSink(dut, sink, dut.clk, pause=pause, rng=rng)
    await reset(dut, dut.clk)
    return stream_source, stream_sink
