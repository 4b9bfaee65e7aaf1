"""What every engine testbench does, written once: drive the engine protocol of
:mod:`secateur.hdl.engines.base` with back-pressure and score the results against the layer's
golden model.

An engine's testbench (``verif/tb_<engine>.py``) only says which layers to try: it builds
layers with random legal structure and hands them to :class:`EngineBench`, which also draws
what does not depend on the structure (shapes, inputs, requantizers) and holds every run to
the engine's performance model (:mod:`secateur.models.perf`): without back-pressure, every
vector's first and last ``act`` beats and every ``res`` beat at the model's edges (so the
batch's cycles and the first result's latency, which the model derives from the engine's
documented ``latency``); with it, no ``res`` beat before the model's edge.
"""

from __future__ import annotations

import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from ..gen.registry import make_engine
from ..hdl.engines.base import Layer
from ..models import perf
from .launch import tb_config
from .streams import StreamSink, StreamSource, reset

__all__ = ["EngineBench", "extreme_inputs"]


def extreme_inputs(cols: int) -> np.ndarray:
    """The two int8 vectors that drive a dot product to its extremes: all -128, all +127.

    Parameters
    ----------
    cols : int
        ``N``, the features per vector.

    Returns
    -------
    numpy.ndarray
        int8, shape ``(2, cols)``.
    """
    x = np.full((2, cols), -128, dtype=np.int8)
    x[1] = 127
    return x


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

    @classmethod
    async def start(cls, dut, *, stalls: bool = True) -> "EngineBench":
        """The bench of ``dut``, reset; ``stalls=False`` turns back-pressure off (for cycle
        counts)."""
        bench = cls(dut)
        if not stalls:
            bench.set_pause(0.0)
        await bench.reset()
        return bench

    def set_pause(self, pause: float) -> None:
        self.act.pause = self.res.pause = pause

    def random_shape(self) -> tuple[int, int]:
        """A random ``(rows, cols)`` in ``[1, max_rows] x [1, max_cols]`` of the engine."""
        return (int(self.rng.integers(1, self.engine.max_rows + 1)),
                int(self.rng.integers(1, self.engine.max_cols + 1)))

    def random_inputs(self, batch: int, cols: int, zeros: float | None = None) -> np.ndarray:
        """Random int8 inputs ``(batch, cols)`` over the whole range; with ``zeros``, about
        that fraction of them set to zero."""
        x = self.rng.integers(-128, 128, size=(batch, cols), dtype=np.int8)
        if zeros is not None:
            x[self.rng.random(x.shape) < zeros] = 0
        return x

    def result_keys(self, rows: int, max_shift: int, requant: bool) -> dict:
        """Random result-path keys of a weights dict (:mod:`secateur.models.requant`): with
        ``requant``, a per-channel ``mult`` for ``rows`` outputs, ``shift`` in
        ``[0, max_shift)`` and ``relu`` on or off; and, half the time, a ``bias`` per row,
        random or at the int32 extremes. Layers drawn one after another thus follow layers
        with and without a bias, whose memory the engine keeps."""
        rng, keys = self.rng, {}
        if requant:
            keys.update(mult=rng.integers(-2**15, 2**15, size=rows),
                        shift=np.int64(rng.integers(0, max_shift)),
                        relu=np.bool_(rng.random() < 0.5))
        if rng.random() < 0.5:
            extremes = rng.choice(np.array([-2**31, 2**31 - 1]), size=rows)
            random = rng.integers(-2**31, 2**31, size=rows)
            keys["bias"] = np.where(rng.random(rows) < 0.5, extremes, random)
        return keys

    async def reset(self) -> None:
        self.load.idle()
        self.act.idle()
        await reset(self.dut, self.dut.clk)

    async def program(self, layer: Layer) -> None:
        load_map = self.engine.load_map
        await self.load.send([load_map.payload(addr, data) for addr, data in layer.load_beats()])

    async def run(self, layer: Layer, x: np.ndarray) -> tuple[np.ndarray, int]:
        """Program ``layer``, stream ``x`` and return ``(outputs, cycles)``; cycles count, as
        the batch harness's do, from the edge that accepts the first input beat to the one
        that takes the last result, both included.

        The edges of the batch's beats are kept in :attr:`measured` (a
        :class:`~secateur.models.perf.timeline.Timeline` from the first input beat), and
        those of its results counted from the edge that took the last load beat (after which
        the first input beat is offered) in :attr:`since_loaded`.
        """
        await self.program(layer)
        beats = layer.input_beats(x)
        expected = x.shape[0] * layer.result_beats_per_vector
        loaded = round(cocotb.utils.get_sim_time("ns"))
        sender = cocotb.start_soon(self.act.send(beats))
        received = await self.res.receive(expected, timeout_cycles=200 * (len(beats) + expected)
                                          + 20 * layer.counters(x)["ideal_cycles"] + 10_000)
        await sender
        act = np.array(self.act.accepted_ns[-len(beats):], dtype=np.int64)
        res = (np.array(self.res.received_ns[-expected:], dtype=np.int64) - act[0]) // 10
        act = (act - act[0]) // 10
        inputs, results = layer.input_beats_per_vector, layer.result_beats_per_vector
        self.measured = perf.Timeline.from_lists(act[::inputs], act[inputs - 1::inputs],
                                                 res.reshape(-1, results))
        self.since_loaded = (np.array(self.res.received_ns[-expected:], dtype=np.int64)
                             - loaded) // 10
        return layer.decode_results(received, x.shape[0]), self.measured.cycles

    async def check(self, layer: Layer, x: np.ndarray, what: str) -> int:
        """Run, assert bit-exact equality with the golden model and the time the performance
        model gives (:meth:`check_time`); return the cycles."""
        y, cycles = await self.run(layer, x)
        expected = layer.reference(x)
        if not np.array_equal(y, expected):
            b, m = np.argwhere(y != expected)[0]
            raise AssertionError(
                f"{what}: output [{b}, {m}] is {y[b, m]}, golden model says {expected[b, m]} "
                f"({int(np.count_nonzero(y != expected))} of {y.size} differ; seed {self.seed}, "
                f"layer {layer.rows}x{layer.cols})")
        self.check_time(layer, x, what)
        return cycles

    def check_time(self, layer: Layer, x: np.ndarray, what: str) -> None:
        """Hold the last :meth:`run` to the performance model
        (:func:`secateur.models.perf.timeline`). Without back-pressure (the model's
        premise) every vector's first and last ``act`` beats and every ``res`` beat must pass
        at the model's edges; with it, a batch may take longer, never less: no ``res`` beat
        may leave before its edge in the model (both counted from the last load beat, after
        which the first input is offered).

        Raises
        ------
        AssertionError
            Naming the first vector and beat off the model, and the seed.
        """
        model = perf.timeline(layer, x)
        where = f"seed {self.seed}, layer {layer.rows}x{layer.cols}, batch {x.shape[0]}"
        if self.act.pause or self.res.pause:
            early = np.flatnonzero(self.since_loaded < model.res.reshape(-1) + 1)
            if early.size:
                vector, beat = divmod(int(early[0]), model.res.shape[1])
                raise AssertionError(
                    f"{what}: under back-pressure, vector {vector}'s res beat {beat} left "
                    f"{int(self.since_loaded[early[0]])} cycles after the last load beat, "
                    f"before the performance model's {int(model.res[vector, beat]) + 1} "
                    f"without it ({where})")
            return
        measured = self.measured
        # Per vector: its first and last act beat, and its res beats one by one.
        for name, got, want in (
                ("act beat 0", measured.act_first[:, None], model.act_first[:, None]),
                ("last act beat", measured.act_last[:, None], model.act_last[:, None]),
                ("res beat", measured.res, model.res)):
            off = np.argwhere(got != want)
            if off.size:
                vector, beat = (int(index) for index in off[0])
                label = f"res beat {beat}" if name == "res beat" else name
                raise AssertionError(
                    f"{what}: vector {vector}'s {label} at edge {int(got[vector, beat])}, the "
                    f"performance model says {int(want[vector, beat])} ({measured.cycles} "
                    f"cycles against {model.cycles}; first result "
                    f"{measured.first_result_latency} cycles after the first vector's inputs, "
                    f"model {model.first_result_latency}; {where})")

    async def check_uniform_layers(self, values) -> None:
        """For each of ``values``, a layer whose weights all equal it against
        :func:`extreme_inputs`, at the largest N and more than two row blocks of PEs where
        the engine has room: the accumulator extremes of engines whose weights dict is
        ``w`` alone."""
        engine = self.engine
        rows, cols = min(engine.max_rows, 2 * engine.pe + 1), engine.max_cols
        x = extreme_inputs(cols)
        for value in values:
            layer = engine.layer({"w": np.full((rows, cols), value, dtype=np.int8)})
            await self.check(layer, x, f"all weights {value:+d}")

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
