"""cocotb testbench of an engine behind its AXI4 wrapper (:mod:`secateur.hdl.axi`), driven with
cocotbext-axi's ``AxiLiteMaster``, ``AxiStreamSource`` and ``AxiStreamSink``, every channel
pausing at random.

Configuration from pytest (:mod:`tests.test_axi`): ``engine``, ``params``, ``seed``, ``key``
(the KEY register the wrapper was built with), ``pause`` (the probability of a pause on every
stream and AXI4-Lite channel, each cycle) and ``vectors`` (per batch).

One test, in order, on one build: the constant registers and STATUS after reset; the SLVERR
answers of the CPU windows in stream mode; a random layer loaded through ``s_axis_load`` and a
batch through ``s_axis_act`` / ``m_axis_res`` (one frame per vector: ``tlast`` positions
checked against the layer's beats per vector); a batch whose frames disagree with
``ACT_BEATS`` (STATUS.tlast_error, the data still exact); a soft reset; another random layer
loaded through ``LOAD_ADDR``/``LOAD_DATA`` and a batch through ``ACT_DATA``/``RES_DATA`` in
cpu mode. Results are decoded with the layer's own decoding and compared bit-exactly with
``layer.reference``; after each batch the counters must equal what a monitor of the engine's
own ports counted, edge by edge (``VECTORS_DONE`` = vectors, ``CYCLES_RES_STALL`` > 0, since
the result side is held back first).
"""

from __future__ import annotations

import random

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiResp, AxiStreamFrame

from ..gen.registry import make_engine
from ..hdl.axi import ENGINE_CODES, ID_VALUE, LOAD_TDATA_ADDR_LSB, register
from ..hdl.engines.base import pack_lanes
from .axi_drivers import start_axi_drivers
from .engine_bench import check_against_golden
from .launch import tb_config
from .random_params import draw_layer
from .streams import pauses

#: Byte offsets, from the register map's one description.
OFFSET = {name: register(name).offset for name in (
    "ID", "KEY", "GEOMETRY", "STATUS", "CONTROL", "ACT_BEATS", "RES_BEATS", "CYCLES_BUSY",
    "CYCLES_RES_STALL", "VECTORS_DONE", "LOAD_ADDR", "LOAD_DATA", "ACT_DATA", "RES_DATA")}
STATUS = {field.name: field.mask for field in register("STATUS").fields}
CONTROL = {field.name: field.mask for field in register("CONTROL").fields}


class EdgeMonitor:
    """Counts, edge by edge at the engine instance's own ports, what the counters count:
    cycles with a vector in flight (its first act beat taken, its last res beat not yet),
    cycles with ``res`` stalled, and vectors done."""

    def __init__(self, dut, act_beats: int, res_beats: int):
        self.engine = dut.engine
        self.clock = dut.aclk
        self.act_beats, self.res_beats = act_beats, res_beats
        self.busy = self.stall = self.done = 0
        self._in_flight = self._act_count = self._res_count = 0
        self._task = cocotb.start_soon(self._run())

    async def _run(self):
        engine = self.engine
        while True:
            await RisingEdge(self.clock)
            act = int(engine.act__valid.value) and int(engine.act__ready.value)
            res_valid, res_ready = int(engine.res__valid.value), int(engine.res__ready.value)
            self.busy += self._in_flight != 0
            self.stall += res_valid and not res_ready
            if act:
                self._in_flight += self._act_count == 0
                self._act_count = (self._act_count + 1) % self.act_beats
            if res_valid and res_ready:
                self._res_count = (self._res_count + 1) % self.res_beats
                if self._res_count == 0:
                    self._in_flight -= 1
                    self.done += 1

    def stop(self) -> dict:
        self._task.cancel()
        return {"CYCLES_BUSY": self.busy, "CYCLES_RES_STALL": self.stall,
                "VECTORS_DONE": self.done}


class AXIBench:
    """The wrapper under test with its AXI4 drivers."""

    def __init__(self, dut):
        self.config = tb_config()
        self.dut = dut
        self.engine = make_engine(self.config["engine"], **self.config["params"])
        self.seed = int(self.config["seed"])
        self.rng = np.random.default_rng(self.seed)
        self.pause = float(self.config["pause"])
        stream_rng = random.Random(self.seed)
        drivers = start_axi_drivers(dut, self.pause, stream_rng)
        self.ctrl, self.act, self.load, self.res = (drivers.ctrl, drivers.act, drivers.load,
                                                    drivers.res)
        self._stream_rng = stream_rng
        self.act_words = -(-8 * self.engine.act_lanes // 32)
        self.res_words = -(-self.engine.res_lanes * self.engine.res_width // 32)

    async def reset(self):
        self.dut.aresetn.value = 0
        await ClockCycles(self.dut.aclk, 4)
        self.dut.aresetn.value = 1
        await ClockCycles(self.dut.aclk, 2)

    async def read(self, name: str, index: int = 0) -> int:
        response = await self.ctrl.read(OFFSET[name] + 4 * index, 4)
        assert response.resp == AxiResp.OKAY, f"read of {name}[{index}] answered {response.resp}"
        return int.from_bytes(response.data, "little")

    async def write(self, name: str, value: int, index: int = 0) -> None:
        response = await self.ctrl.write(OFFSET[name] + 4 * index, value.to_bytes(4, "little"))
        assert response.resp == AxiResp.OKAY, f"write of {name}[{index}] answered {response.resp}"

    async def status(self) -> dict:
        value = await self.read("STATUS")
        return {name: bool(value & mask) for name, mask in STATUS.items()}

    def random_layer(self):
        return self.engine.layer(draw_layer(self.engine, self.rng))

    def inputs(self, layer):
        batch = int(self.config["vectors"])
        return self.rng.integers(-128, 128, size=(batch, layer.cols), dtype=np.int8)

    async def frame(self, layer):
        """Set ACT_BEATS and RES_BEATS for ``layer`` (and read them back)."""
        await self.write("ACT_BEATS", layer.input_beats_per_vector)
        await self.write("RES_BEATS", layer.result_beats_per_vector)
        assert (await self.read("ACT_BEATS"), await self.read("RES_BEATS")) == \
            (layer.input_beats_per_vector, layer.result_beats_per_vector)

    async def hold_results_until_waiting(self, cpu: bool) -> None:
        """Take no result until one has waited a few cycles: the stall counter then cannot be
        zero by chance."""
        valid = self.dut.engine.res__valid
        while not int(valid.value):
            await RisingEdge(self.dut.aclk)
        await ClockCycles(self.dut.aclk, 3)
        if cpu:
            status = await self.status()
            assert status["busy"] and status["res_valid"], f"STATUS with a result waiting: {status}"

    async def check_counters(self, monitor: EdgeMonitor, vectors: int, what: str) -> None:
        expected = monitor.stop()
        got = {name: await self.read(name) for name in expected}
        assert got == expected, f"{what}: counters {got}, the edge monitor counted {expected}"
        assert got["VECTORS_DONE"] == vectors and got["CYCLES_RES_STALL"] > 0 and \
            got["CYCLES_BUSY"] > 0, f"{what}: counters {got} for {vectors} vectors"

    def check_results(self, layer, x, beats: list[int], what: str) -> None:
        check_against_golden(layer, x, layer.decode_results(beats, x.shape[0]), what, self.seed)

    async def run_streams(self, layer, x, frames: list[list[int]], what: str) -> None:
        """``frames`` of act payloads through s_axis_act; every result vector through
        m_axis_res must be one frame of RES_BEATS beats."""
        self.res.clear_pause_generator()
        self.res.pause = True
        for frame in frames:
            await self.act.send(AxiStreamFrame(frame))
        await self.hold_results_until_waiting(cpu=False)
        self.res.set_pause_generator(pauses(self._stream_rng, self.pause))
        beats = []
        for vector in range(x.shape[0]):
            frame = await self.res.recv(compact=False)
            assert len(frame.tdata) == layer.result_beats_per_vector, \
                (f"{what}: result frame {vector} has {len(frame.tdata)} beats (tlast), the "
                 f"layer {layer.result_beats_per_vector}")
            beats += [int(beat) for beat in frame.tdata]
        await self.act.wait()
        self.check_results(layer, x, beats, what)

    async def run_cpu(self, layer, x, what: str) -> None:
        """``x`` through ACT_DATA and RES_DATA, written and read concurrently."""
        payloads = layer.input_beats(x)

        async def writer():
            for payload in payloads:
                for index in range(self.act_words):
                    await self.write("ACT_DATA", (payload >> (32 * index)) & 0xFFFFFFFF, index)

        sender = cocotb.start_soon(writer())
        await self.hold_results_until_waiting(cpu=True)
        beats = []
        for _ in range(x.shape[0] * layer.result_beats_per_vector):
            words = [await self.read("RES_DATA", index) for index in range(self.res_words)]
            beats.append(pack_lanes(words, 32))
        await sender
        self.check_results(layer, x, beats, what)

    async def expect(self, name: str, value: int, what: str) -> None:
        got = await self.read(name)
        assert got == value, f"{what}: {name} is {got:#x}, expected {value:#x}"


# 5 ms is 500 000 cycles: the largest configuration of tests/test_axi.py needs under 10 000.
@cocotb.test(timeout_time=5, timeout_unit="ms")
async def streams_and_registers(dut):
    """Everything of the module documentation, on one build."""
    bench = AXIBench(dut)
    engine = bench.engine
    await bench.reset()

    # Constant registers, STATUS after reset, unmapped and read-only words, write strobes.
    geometry = engine.act_lanes | engine.res_lanes << 8 | engine.res_width << 16 | \
        ENGINE_CODES[engine.name] << 24
    for name, value in (("ID", ID_VALUE), ("KEY", bench.config["key"]),
                        ("GEOMETRY", geometry)):
        await bench.expect(name, value, "after reset")
    status = await bench.status()
    assert not (status["busy"] or status["layer_loaded"] or status["tlast_error"] or
                status["res_valid"]), f"STATUS after reset: {status}"
    await bench.write("ID", 0)
    await bench.expect("ID", ID_VALUE, "after a write to a read-only register")
    unmapped = await bench.ctrl.read(0x030, 4)
    assert unmapped.resp == AxiResp.OKAY and unmapped.data == bytes(4), unmapped
    await bench.write("LOAD_ADDR", 0x11223344)
    await bench.ctrl.write(OFFSET["LOAD_ADDR"] + 1, b"\xaa")
    await bench.expect("LOAD_ADDR", 0x1122AA44, "after a one-byte write (WSTRB 0b0010)")
    await bench.expect("CONTROL", 0, "after reset")

    # In stream mode the CPU windows answer SLVERR and do nothing.
    answer = await bench.ctrl.write(OFFSET["LOAD_DATA"], bytes(4))
    assert answer.resp == AxiResp.SLVERR, f"LOAD_DATA in stream mode answered {answer.resp}"
    answer = await bench.ctrl.read(OFFSET["RES_DATA"], 4)
    assert answer.resp == AxiResp.SLVERR, f"RES_DATA in stream mode answered {answer.resp}"
    assert not (await bench.status())["layer_loaded"], "a refused LOAD_DATA loaded a beat"

    # A layer through s_axis_load, vectors through the streams, one frame per vector.
    layer = bench.random_layer()
    await bench.frame(layer)
    await bench.load.send(AxiStreamFrame([int(data) | int(addr) << LOAD_TDATA_ADDR_LSB
                                          for addr, data in layer.load_beats()]))
    await bench.load.wait()
    assert (await bench.status())["layer_loaded"], "STATUS.layer_loaded after s_axis_load"
    await bench.write("CONTROL", CONTROL["clear"])
    x = bench.inputs(layer)
    per_vector = layer.input_beats_per_vector
    payloads = layer.input_beats(x)
    frames = [payloads[i:i + per_vector] for i in range(0, len(payloads), per_vector)]
    monitor = EdgeMonitor(dut, per_vector, layer.result_beats_per_vector)
    await bench.run_streams(layer, x, frames, "streams")
    await bench.check_counters(monitor, x.shape[0], "streams")
    assert not (await bench.status())["tlast_error"], "tlast_error after well-framed vectors"

    # The same vectors as one frame: tlast missing where a vector ends -> tlast_error.
    await bench.run_streams(layer, x, [payloads], "one frame for all vectors")
    status = await bench.status()
    assert status["tlast_error"] == (x.shape[0] > 1), f"STATUS after one frame: {status}"
    await bench.write("CONTROL", CONTROL["clear"])
    assert not (await bench.status())["tlast_error"], "tlast_error after CONTROL.clear"
    await bench.expect("VECTORS_DONE", 0, "after CONTROL.clear")

    # cpu mode: the streams are held off; a soft reset forgets the layer.
    await bench.write("CONTROL", CONTROL["cpu_mode"] | CONTROL["soft_reset"])
    await bench.expect("CONTROL", CONTROL["cpu_mode"], "in cpu mode (pulses read 0)")
    await RisingEdge(dut.aclk)
    assert int(dut.s_axis_act_tready.value) == 0 and int(dut.s_axis_load_tready.value) == 0 \
        and int(dut.m_axis_res_tvalid.value) == 0, "AXI4-Stream handshakes in cpu mode"
    assert not (await bench.status())["layer_loaded"], "layer_loaded after a soft reset"

    # Another layer through LOAD_ADDR/LOAD_DATA, vectors through ACT_DATA/RES_DATA.
    layer = bench.random_layer()
    await bench.frame(layer)
    for addr, data in layer.load_beats():
        await bench.write("LOAD_ADDR", int(addr))
        await bench.write("LOAD_DATA", int(data))
    assert (await bench.status())["layer_loaded"], "STATUS.layer_loaded after LOAD_DATA"
    await bench.write("CONTROL", CONTROL["cpu_mode"] | CONTROL["clear"])
    x = bench.inputs(layer)
    monitor = EdgeMonitor(dut, layer.input_beats_per_vector, layer.result_beats_per_vector)
    await bench.run_cpu(layer, x, "cpu mode")
    await bench.check_counters(monitor, x.shape[0], "cpu mode")
    status = await bench.status()
    assert not (status["busy"] or status["res_valid"] or status["tlast_error"]) and \
        status["layer_loaded"], f"STATUS after the cpu-mode batch: {status}"
