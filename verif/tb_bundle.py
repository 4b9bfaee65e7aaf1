"""cocotb testbench that drives an exported engine as an integrator would: from the bundle.

Configuration from pytest (:mod:`tests.test_integration_bundle`): ``bundle`` (the export
directory, whose ``manifest.json`` is all this testbench reads of the engine), ``cases`` (per
layer: ``weights`` an ``.npz`` of the user's arrays, ``inputs`` and ``expected`` ``.npy`` files,
and ``shuffle``, whether to load the beats in a random order), ``seed`` and ``pause`` (the
probability of a pause on each stream, ``load`` included).

The load beats, the ``act`` payloads and the reading of ``res`` come from
:class:`~secateur.verif.bundle_host.BundleHost`, which evaluates the manifest's formulas; the
expected outputs were computed by pytest with numpy. The layers run one after the other
without a reset, so each finds the previous one's words in the memories.
"""

from __future__ import annotations

import random

import cocotb
import numpy as np
from cocotb.clock import Clock

from .bundle_host import BundleHost
from .launch import tb_config
from .streams import StreamSink, StreamSource, reset


@cocotb.test()
async def layers_from_the_bundle(dut):
    """Every case: load the layer from the bundle's formats, stream its inputs, compare."""
    config = tb_config()
    seed, pause = int(config["seed"]), float(config["pause"])
    host = BundleHost.from_bundle(config["bundle"])
    rng = random.Random(seed)
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    load = StreamSource(dut, "load", dut.clk, pause=pause, rng=rng)
    act = StreamSource(dut, "act", dut.clk, pause=pause, rng=rng)
    res = StreamSink(dut, "res", dut.clk, pause=pause, rng=rng)
    await reset(dut, dut.clk)
    for index, case in enumerate(config["cases"]):
        with np.load(case["weights"]) as archive:
            weights = dict(archive)
        x, expected = np.load(case["inputs"]), np.load(case["expected"])
        beats = host.load_beats(weights)
        if case["shuffle"]:
            rng.shuffle(beats)
        # Every load beat before the first act beat: the layer is complete when it computes.
        await load.send([host.payload(addr, data) for addr, data in beats])
        payloads = host.act_payloads(weights, x)
        sender = cocotb.start_soon(act.send(payloads))
        count = host.result_beats(weights, len(x))
        received = await res.receive(count, timeout_cycles=1000 * (len(payloads) + count) + 10_000)
        await sender
        y = host.results(weights, received, len(x))
        if not np.array_equal(y, expected):
            b, m = np.argwhere(y != expected)[0]
            raise AssertionError(
                f"case {index} ({'shuffled' if case['shuffle'] else 'in order'}, "
                f"{expected.shape[1]}x{x.shape[1]}): output [{b}, {m}] is {y[b, m]}, numpy says "
                f"{expected[b, m]} ({int(np.count_nonzero(y != expected))} of {y.size} differ; "
                f"seed {seed})")
