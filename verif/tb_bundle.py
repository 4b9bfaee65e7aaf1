"""cocotb testbench that drives an exported engine as an integrator would: from the bundle.

Configuration from pytest (:mod:`tests.test_integration_bundle`): ``bundle`` (the export
directory, whose ``manifest.json`` is all this testbench reads of the engine), ``bus``
(``native``: the engine's own ``load``/``act``/``res`` streams; ``axi``: its AXI4 wrapper
``<top>_axi``, driven with cocotbext-axi), ``cases`` (per layer: ``weights`` an ``.npz`` of the
user's arrays, ``inputs`` and ``expected`` ``.npy`` files, and ``shuffle``, whether to load the
beats in a random order), ``seed`` and ``pause`` (the probability of a pause on each stream,
``load`` and the AXI4-Lite channels included).

The load beats, the ``act`` payloads and the reading of ``res`` come from
:class:`~secateur.verif.bundle_host.BundleHost`, which evaluates the manifest's formulas; the
AXI4 wrapper's register offsets, fields, constant values and ``s_axis_load`` packing come from
the manifest's ``axi`` section. The expected outputs were computed by pytest with numpy. The
layers run one after the other without a reset, so each finds the previous one's words in the
memories.
"""

from __future__ import annotations

import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles
from cocotbext.axi import AxiResp, AxiStreamFrame

from .axi_drivers import start_axi_drivers
from .bundle_host import BundleHost
from .launch import tb_config
from .streams import StreamSink, StreamSource, reset


class NativePorts:
    """The engine's own ``load``, ``act`` and ``res`` streams."""

    def __init__(self, dut, host: BundleHost, pause: float, rng: random.Random):
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        self.dut, self.host = dut, host
        self.load = StreamSource(dut, "load", dut.clk, pause=pause, rng=rng)
        self.act = StreamSource(dut, "act", dut.clk, pause=pause, rng=rng)
        self.res = StreamSink(dut, "res", dut.clk, pause=pause, rng=rng)

    async def start(self) -> None:
        await reset(self.dut, self.dut.clk)

    async def load_layer(self, beats, act_beats: int, res_beats: int) -> None:
        await self.load.send([self.host.payload(addr, data) for addr, data in beats])

    async def run(self, payloads: list[int], act_beats: int, res_beats: int) -> list[int]:
        sender = cocotb.start_soon(self.act.send(payloads))
        count = res_beats * (len(payloads) // act_beats)
        received = await self.res.receive(count, timeout_cycles=1000 * (len(payloads) + count)
                                          + 10_000)
        await sender
        return received


class AXIPorts:
    """The AXI4 wrapper, its register map read from the manifest's ``axi`` section."""

    def __init__(self, dut, host: BundleHost, pause: float, rng: random.Random):
        self.dut, self.axi = dut, host.manifest["axi"]
        self.offset = {reg["name"]: reg["offset"] for reg in self.axi["registers"]}
        self.mask = {f"{reg['name']}.{field['name']}": field["mask"]
                     for reg in self.axi["registers"] for field in reg["fields"]}
        drivers = start_axi_drivers(dut, pause, rng)
        self.ctrl, self.load, self.act, self.res = (drivers.ctrl, drivers.load, drivers.act,
                                                    drivers.res)
        self.vectors = 0

    async def read(self, name: str) -> int:
        response = await self.ctrl.read(self.offset[name], 4)
        assert response.resp == AxiResp.OKAY, f"read of {name} answered {response.resp}"
        return int.from_bytes(response.data, "little")

    async def write(self, name: str, value: int) -> None:
        response = await self.ctrl.write(self.offset[name], int(value).to_bytes(4, "little"))
        assert response.resp == AxiResp.OKAY, f"write of {name} answered {response.resp}"

    async def start(self) -> None:
        self.dut.aresetn.value = 0
        await ClockCycles(self.dut.aclk, 4)
        self.dut.aresetn.value = 1
        await ClockCycles(self.dut.aclk, 2)
        for name, value in (("ID", self.axi["id"]), ("KEY", self.axi["key"]),
                            ("GEOMETRY", self.axi["geometry"])):
            got = await self.read(name)
            assert got == value, f"{name} reads {got:#x}, the manifest says {value:#x}"

    async def load_layer(self, beats, act_beats: int, res_beats: int) -> None:
        await self.write("ACT_BEATS", act_beats)
        await self.write("RES_BEATS", res_beats)
        packing = self.axi["load_tdata"]
        await self.load.send(AxiStreamFrame([int(data) << packing["data_lsb"]
                                             | int(addr) << packing["addr_lsb"]
                                             for addr, data in beats]))
        await self.load.wait()
        status = await self.read("STATUS")
        assert status & self.mask["STATUS.layer_loaded"], f"STATUS {status:#x} after the load"

    async def run(self, payloads: list[int], act_beats: int, res_beats: int) -> list[int]:
        vectors = len(payloads) // act_beats
        for start in range(0, len(payloads), act_beats):
            await self.act.send(AxiStreamFrame(payloads[start:start + act_beats]))
        received = []
        for vector in range(vectors):
            frame = await self.res.recv(compact=False)
            assert len(frame.tdata) == res_beats, \
                f"result frame {vector} has {len(frame.tdata)} beats to tlast, not {res_beats}"
            received += [int(beat) for beat in frame.tdata]
        await self.act.wait()
        self.vectors += vectors
        status, done = await self.read("STATUS"), await self.read("VECTORS_DONE")
        assert not status & self.mask["STATUS.tlast_error"], f"STATUS {status:#x}: tlast_error"
        assert done == self.vectors, f"VECTORS_DONE is {done}, {self.vectors} vectors ran"
        return received


PORTS = {"native": NativePorts, "axi": AXIPorts}


# 5 ms is 500 000 cycles, far beyond what the cases of tests/test_integration_bundle.py take.
@cocotb.test(timeout_time=5, timeout_unit="ms")
async def layers_from_the_bundle(dut):
    """Every case: load the layer from the bundle's formats, stream its inputs, compare."""
    config = tb_config()
    seed, pause = int(config["seed"]), float(config["pause"])
    host = BundleHost.from_bundle(config["bundle"])
    rng = random.Random(seed)
    ports = PORTS[config["bus"]](dut, host, pause, rng)
    await ports.start()
    for index, case in enumerate(config["cases"]):
        with np.load(case["weights"]) as archive:
            weights = dict(archive)
        x, expected = np.load(case["inputs"]), np.load(case["expected"])
        beats = host.load_beats(weights)
        if case["shuffle"]:
            rng.shuffle(beats)
        payloads = host.act_payloads(weights, x)
        act_beats = len(payloads) // len(x)
        res_beats = host.result_beats(weights, 1)
        # Every load beat before the first act beat: the layer is complete when it computes.
        await ports.load_layer(beats, act_beats, res_beats)
        received = await ports.run(payloads, act_beats, res_beats)
        y = host.results(weights, received, len(x))
        if not np.array_equal(y, expected):
            b, m = np.argwhere(y != expected)[0]
            raise AssertionError(
                f"{config['bus']} case {index} ({'shuffled' if case['shuffle'] else 'in order'}"
                f", {expected.shape[1]}x{x.shape[1]}): output [{b}, {m}] is {y[b, m]}, numpy "
                f"says {expected[b, m]} ({int(np.count_nonzero(y != expected))} of {y.size} "
                f"differ; seed {seed})")
