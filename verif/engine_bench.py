"""What every engine testbench does, written once: drive the engine protocol of
:mod:`secateur.hdl.engines.base` with back-pressure and score the results against the layer's
golden model.

An engine's testbench (``verif/tb_<engine>.py``) only says which layers to try: it builds
layers with random legal structure and hands them to :class:`EngineBench`, which also draws
what does not depend on the structure (shapes, inputs, requantizers) and holds every run to
the engine's performance model (:mod:`secateur.models.perf`): without back-pressure, every
vector's first and last ``act`` beats and every ``res`` beat at the model's edges (so the
batch's cycles), and the first result's latency at the manifest's ``first_result_latency``
(evaluated from the format as an integrator's host does); with it, no ``res`` beat before
the model's edge.

It also exercises the load port's protocol the same way for every engine
(:meth:`EngineBench.check_load_protocol`): a layer offered while the previous layer's vectors
are in flight, a layer written twice without vectors in between, and a reset in mid-load. So
it does long ``res`` stalls begun at every pipeline stage
(:meth:`EngineBench.check_result_stalls`), and every requantizer clamp in every result lane
(:meth:`EngineBench.check_requantizer_clamps`).
The cocotb tests that do so, :func:`load_port_protocol`, :func:`result_stalls` and
:func:`requantizer_clamps`, are imported by every engine testbench.
"""

from __future__ import annotations

import bisect
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from ..gen.formats import describe as describe_format
from ..gen.formats import latency_variables
from ..gen.registry import make_engine
from ..hdl.engines.base import Layer
from ..models import perf
from . import functional_coverage as fcov
from .bundle_host import BundleHost
from .launch import tb_config
from .random_params import draw_layer
from .streams import StreamSink, StreamSource, reset

__all__ = ["EngineBench", "check_against_golden", "extreme_inputs", "load_port_protocol",
           "requantizer_clamps", "result_stalls"]


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


def check_against_golden(layer: Layer, x: np.ndarray, y: np.ndarray, what: str,
                         seed: int) -> None:
    """Assert that the outputs ``y`` of ``x`` equal ``layer.reference(x)``.

    Raises
    ------
    AssertionError
        Naming the first output that differs, how many do, the seed and the layer's shape.
    """
    expected = layer.reference(x)
    if not np.array_equal(y, expected):
        b, m = np.argwhere(y != expected)[0]
        raise AssertionError(
            f"{what}: output [{b}, {m}] is {y[b, m]}, golden model says {expected[b, m]} "
            f"({int(np.count_nonzero(y != expected))} of {y.size} differ; seed {seed}, "
            f"layer {layer.rows}x{layer.cols})")


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
        self.gap = 0
        self._manifest_host = None
        # Functional coverage (verif/functional_coverage.py): the batch being streamed, as
        # (index of its first act beat, act beats per vector, index of its first res beat,
        # res beats per vector), and whether a batch ran since the last reset.
        self._batch = None
        self._since_reset = False
        self.coverage = fcov.ResMonitor(self.engine, self._vector_last_act_ns,
                                        self._vectors_out)
        cocotb.start_soon(self.coverage.run(dut))

    @classmethod
    async def start(cls, dut, *, stalls: bool = True) -> "EngineBench":
        """The bench of ``dut``, reset; ``stalls=False`` turns back-pressure off (for cycle
        counts)."""
        bench = cls(dut)
        if not stalls:
            bench.set_pause(0.0)
        await bench.reset()
        return bench

    @property
    def manifest_host(self) -> BundleHost:
        """The engine's manifest format, evaluated as an integrator's host does."""
        if self._manifest_host is None:
            engine = self.engine
            self._manifest_host = BundleHost({
                "format": describe_format(engine), "load_map": engine.load_map.describe(),
                "params": engine.params, "derived": engine.derived()})
        return self._manifest_host

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

    async def reset(self, phase: str = "idle") -> None:
        """Reset the engine, counting it in the functional coverage bin of ``phase``."""
        fcov.sample_reset(self.engine, phase)
        self._batch, self._since_reset = None, False
        self.load.idle()
        self.act.idle()
        await reset(self.dut, self.dut.clk)

    def _vector_last_act_ns(self) -> list[int]:
        if self._batch is None:
            return []
        first_act, inputs, _, _ = self._batch
        return self.act.accepted_ns[first_act + inputs - 1::inputs]

    def _vectors_out(self) -> int:
        if self._batch is None:
            return 0
        _, _, first_res, results = self._batch
        return (len(self.res.received_ns) - first_res) // results

    def _begin_batch(self, layer: Layer, x: np.ndarray) -> None:
        fcov.sample_batch(self.engine, layer, x)
        self._batch = (len(self.act.accepted_ns), layer.input_beats_per_vector,
                       len(self.res.received_ns), layer.result_beats_per_vector)

    def _end_batch(self) -> None:
        self.coverage.flush()
        self._batch, self._since_reset = None, True

    def load_payloads(self, layer: Layer) -> list[int]:
        """The layer's load beats in a random order: any order is legal (the bundle's
        format), so a write that lands a cycle late shows when its beat comes last and the
        first act beat follows at once."""
        load_map = self.engine.load_map
        beats = [load_map.payload(addr, data) for addr, data in layer.load_beats()]
        return [beats[index] for index in self.rng.permutation(len(beats))]

    async def program(self, layer: Layer) -> None:
        fcov.sample_program(self.engine, self._since_reset)
        await self.load.send(self.load_payloads(layer))

    def draw_layer(self) -> Layer:
        """A random legal layer of the engine (:func:`~secateur.verif.random_params.
        draw_layer`: any shape up to the engine's limits, its structure at a random density),
        requantized or raw, with or without a bias, as :meth:`result_keys` draws them."""
        weights = draw_layer(self.engine, self.rng)
        rows = self.engine.layer(weights).rows
        weights.update(self.result_keys(rows, 20, requant=bool(self.rng.random() < 0.5)))
        return self.engine.layer(weights)

    def _timeout(self, layer: Layer, x: np.ndarray) -> int:
        return (200 * (x.shape[0] * (layer.input_beats_per_vector
                                     + layer.result_beats_per_vector))
                + 20 * layer.counters(x)["ideal_cycles"] + 10_000)

    def _check_values(self, layer: Layer, x: np.ndarray, y: np.ndarray, what: str) -> None:
        check_against_golden(layer, x, y, what, self.seed)

    async def check_load_protocol(self) -> None:
        """The load port's protocol, on random layers of random shapes and structures:

        1. the next layer's first load beat is offered as soon as the previous layer's last
           input beat is accepted, while its vectors are in flight: no load beat may be
           accepted before the previous layer's last result beat has left (``load.ready``
           holds it off), and both layers' results are exact;
        2. a layer written over another without vectors in between computes exactly (and on
           the performance model's time);
        3. a reset in mid-load, after a random number of the layer's load beats, then the
           whole layer again: exact, and on time.

        Raises
        ------
        AssertionError
            Naming the step, the first wrong output or beat time, and the seed.
        """
        first, second = self.draw_layer(), self.draw_layer()
        x1 = self.random_inputs(int(self.rng.integers(1, 5)), first.cols)
        x2 = self.random_inputs(int(self.rng.integers(1, 5)), second.cols)
        await self.program(first)
        expected = x1.shape[0] * first.result_beats_per_vector
        self._begin_batch(first, x1)
        receiver = cocotb.start_soon(self.res.receive(expected,
                                                      timeout_cycles=self._timeout(first, x1)))
        await self.act.send(first.input_beats(x1))
        loaded_before = len(self.load.accepted_ns)
        loader = cocotb.start_soon(self.program(second))
        received = await receiver
        self._end_batch()
        self._check_values(first, x1, first.decode_results(received, x1.shape[0]),
                           "the layer whose vectors were in flight while the next one was offered")
        await loader
        load_first, res_last = self.load.accepted_ns[loaded_before], self.res.received_ns[-1]
        if load_first < res_last:
            raise AssertionError(
                f"load.ready took the next layer's first load beat at {load_first} ns, before "
                f"the previous layer's last result beat left at {res_last} ns (seed {self.seed})")
        sender = cocotb.start_soon(self.act.send(second.input_beats(x2)))
        received = await self.res.receive(x2.shape[0] * second.result_beats_per_vector,
                                          timeout_cycles=self._timeout(second, x2))
        await sender
        self._check_values(second, x2, second.decode_results(received, x2.shape[0]),
                           "the layer loaded while the previous one's vectors were in flight")

        await self.program(first)
        await self.check(second, x2, "a layer written over another without vectors in between, "
                         "its vectors after a random gap", gap=int(self.rng.integers(0, 12)))

        payloads = self.load_payloads(first)
        loader = cocotb.start_soon(self.load.send(payloads))
        await ClockCycles(self.dut.clk, int(self.rng.integers(1, len(payloads) + 1)))
        loader.cancel()
        await self.reset("loading")
        await RisingEdge(self.dut.clk)
        await self.check(first, x1, "after a reset in mid-load")

    async def run(self, layer: Layer, x: np.ndarray, gap: int = 0) -> tuple[np.ndarray, int]:
        """Program ``layer``, wait ``gap`` cycles, stream ``x`` and return ``(outputs,
        cycles)``; cycles count, as the batch harness's do, from the edge that accepts the
        first input beat to the one that takes the last result, both included.

        The edges of the batch's beats are kept in :attr:`measured` (a
        :class:`~secateur.models.perf.timeline.Timeline` from the first input beat), and
        those of its results counted from the edge that took the last load beat (after which
        the first input beat is offered) in :attr:`since_loaded`.
        """
        await self.program(layer)
        beats = layer.input_beats(x)
        expected = x.shape[0] * layer.result_beats_per_vector
        loaded = round(cocotb.utils.get_sim_time("ns"))
        self.gap = gap
        if gap:
            await ClockCycles(self.dut.clk, gap)
        self._begin_batch(layer, x)
        sender = cocotb.start_soon(self.act.send(beats))
        received = await self.res.receive(expected, timeout_cycles=self._timeout(layer, x))
        await sender
        self._end_batch()
        act = np.array(self.act.accepted_ns[-len(beats):], dtype=np.int64)
        res = (np.array(self.res.received_ns[-expected:], dtype=np.int64) - act[0]) // 10
        act = (act - act[0]) // 10
        inputs, results = layer.input_beats_per_vector, layer.result_beats_per_vector
        self.measured = perf.Timeline.from_lists(act[::inputs], act[inputs - 1::inputs],
                                                 res.reshape(-1, results))
        self.since_loaded = (np.array(self.res.received_ns[-expected:], dtype=np.int64)
                             - loaded) // 10
        return layer.decode_results(received, x.shape[0]), self.measured.cycles

    async def check(self, layer: Layer, x: np.ndarray, what: str, gap: int = 0) -> int:
        """Run (``gap``: as :meth:`run`), assert bit-exact equality with the golden model and
        the time the performance model gives (:meth:`check_time`); return the cycles."""
        y, cycles = await self.run(layer, x, gap)
        self._check_values(layer, x, y, what)
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
        model = perf.timeline(layer, x, gap=self.gap)
        where = (f"seed {self.seed}, layer {layer.rows}x{layer.cols}, batch {x.shape[0]}, "
                 f"first act beat {self.gap} cycles after the load")
        if self.act.pause or self.res.pause:
            early = np.flatnonzero(self.since_loaded < model.res.reshape(-1) + 1 + self.gap)
            if early.size:
                vector, beat = divmod(int(early[0]), model.res.shape[1])
                raise AssertionError(
                    f"{what}: under back-pressure, vector {vector}'s res beat {beat} left "
                    f"{int(self.since_loaded[early[0]])} cycles after the last load beat, "
                    f"before the performance model's "
                    f"{int(model.res[vector, beat]) + 1 + self.gap} "
                    f"without it ({where})")
            return
        measured = self.measured
        # The manifest's promise, as an integrator evaluates it (every run starts idle).
        variables = latency_variables(layer, x, self.gap)
        promised = self.manifest_host.formula("first_result_latency", *variables.values())
        if measured.first_result_latency != promised:
            raise AssertionError(
                f"{what}: the first result came {measured.first_result_latency} cycles after "
                f"the first vector's last act beat, the manifest's first_result_latency"
                f"{tuple(variables.values())} promises {promised} ({where})")
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

    async def check_result_stalls(self, length: int = 300, offsets: int = 10) -> None:
        """A random layer and batch, run once per offset with ``res`` held back for ``length``
        cycles from that many cycles after the first ``act`` beat is offered: the offsets
        sweep the batch's window in the performance model (every edge of a short window, else
        the edges around the first three and the last result beats, and a sample), so that a
        long stall begins at every pipeline stage, and just as a beat reaches the result
        path's buffers. Streams pause only for the scheduled stall. Each run must be
        bit-exact, in order, take at most the model's cycles plus ``length``, and no
        ``res.valid`` may rise before the model's edge of the beat it presents.

        Raises
        ------
        AssertionError
            Naming the offset, the first wrong output or early beat, and the seed.
        """
        layer = self.draw_layer()
        x = self.random_inputs(int(self.rng.integers(2, 5)), layer.cols)
        model = perf.timeline(layer, x)
        window = int(model.res[-1, -1]) + 2
        # Besides a sample, stalls that begin just around result beats (the first three and
        # the last), where a beat meets a ready that has just fallen: the only moment a
        # result path whose beats come cycles apart (cim) stores a result in its output buffer.
        around = {int(edge) + step for edge in (*model.res.reshape(-1)[:3], model.res[-1, -1])
                  for step in (-2, -1, 0, 1)}
        edges = set(range(window)) if window <= offsets else {
            0, *(edge for edge in around if 0 <= edge < window),
            *(int(edge) for edge in self.rng.integers(0, window, size=offsets - 4))}
        pauses = self.act.pause, self.res.pause
        self.set_pause(0.0)
        for offset in sorted(edges):
            what = f"res held back {length} cycles from cycle {offset} of the batch"
            await self.program(layer)
            start, presented = len(self.res.received_ns), []

            async def stall():
                await ClockCycles(self.dut.clk, offset)
                self.res.hold = True
                await ClockCycles(self.dut.clk, length)
                self.res.hold = False

            async def watch_valid():
                while True:
                    await RisingEdge(self.dut.clk)
                    if int(self.res.valid.value):
                        # The beat presented is the first not taken before this edge, however
                        # the sink and this watcher are ordered at the edge.
                        now = round(cocotb.utils.get_sim_time("ns"))
                        presented.append((bisect.bisect_left(self.res.received_ns, now) - start,
                                          now))

            stalling, watching = cocotb.start_soon(stall()), cocotb.start_soon(watch_valid())
            beats = layer.input_beats(x)
            self._begin_batch(layer, x)
            sender = cocotb.start_soon(self.act.send(beats))
            received = await self.res.receive(
                x.shape[0] * layer.result_beats_per_vector,
                timeout_cycles=self._timeout(layer, x) + length)
            await sender
            await stalling
            self._end_batch()
            watching.cancel()
            self._check_values(layer, x, layer.decode_results(received, x.shape[0]), what)
            first_act = self.act.accepted_ns[-len(beats)]
            cycles = (self.res.received_ns[-1] - first_act) // 10 + 1
            if cycles > model.cycles + length:
                raise AssertionError(f"{what}: {cycles} cycles, more than the model's "
                                     f"{model.cycles} plus the stall (seed {self.seed})")
            due = model.res.reshape(-1)
            for beat, at in presented:
                if beat < due.size and (at - first_act) // 10 < due[beat]:
                    raise AssertionError(
                        f"{what}: res.valid presented beat {beat} at edge "
                        f"{(at - first_act) // 10}, before the model's {int(due[beat])} "
                        f"(seed {self.seed})")
        self.act.pause, self.res.pause = pauses

    async def check_requantizer_clamps(self) -> None:
        """Every clamp of the requantizer in every result lane: of several random draws, the
        layer that fills the most result lanes, on dense random inputs, requantized with the
        largest multiplier and a bias that outweighs any accumulator, so that every row
        saturates to +127, to -128, and with ReLU to 0, whatever its weights (zero rows
        included) and inputs.

        Raises
        ------
        AssertionError
            Naming the case, the first wrong output and the seed.
        """
        # The draw that fills the most result lanes (permdiag's lanes need many block rows,
        # a small p), then the largest.
        draws = [draw_layer(self.engine, self.rng) for _ in range(64)]
        weights = max(draws, key=lambda w: (len(self.manifest_host.result_lanes_used(w)),
                                            np.asarray(w["w"]).size))
        chosen = self.engine.layer(weights)
        rows, cols = chosen.rows, chosen.cols
        # Inputs not thinned to zeros: nearly every column of the largest layer is live work
        # (permdiag's column picker, cim's bit-planes), besides every lane's clamps.
        x = self.random_inputs(int(self.rng.integers(1, 4)), cols)
        # A bias of +-2^30 outweighs every accumulator of a test configuration (|acc| <=
        # 2^14 * N), so acc + bias has the bias's sign and, times 2^15 - 1, leaves int8; the
        # golden model below confirms that each case clamps every output.
        mult = np.full(rows, 2**15 - 1)
        for sign, relu, expected in ((1, False, 127), (-1, False, -128), (-1, True, 0),
                                     (1, True, 127)):
            layer = self.engine.layer({**weights, "mult": mult, "shift": np.int64(0),
                                       "relu": np.bool_(relu),
                                       "bias": np.full(rows, sign * 2**30)})
            what = f"requantizer clamp to {expected} (bias {sign * 2**30:+d}, relu {relu})"
            await self.check(layer, x, what)
            y = layer.reference(x)
            if not np.all(y == expected):
                raise AssertionError(f"{what}: the golden model itself gives "
                                     f"{sorted(set(y.reshape(-1).tolist()))[:6]}, not all "
                                     f"{expected}: the case does not test what it says")

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
        """Start ``x`` streaming and reset, in turn: while input beats are still being taken
        (streaming), once they are all in but results are still out (draining), and after a
        random number of cycles; after each, check that a reprogrammed engine computes ``x``
        exactly (a phase the batch does not have, streaming a one-beat batch, is skipped)."""
        beats, results = layer.input_beats(x), x.shape[0] * layer.result_beats_per_vector
        for target in ("streaming", "draining", None):
            await self.program(layer)
            sent, received = len(self.act.accepted_ns), len(self.res.received_ns)
            sender = cocotb.start_soon(self.act.send(beats))
            receiver = cocotb.start_soon(self.res.receive(results))

            def state():
                taken = len(self.act.accepted_ns) - sent
                return {"streaming": 0 < taken < len(beats),
                        "draining": taken == len(beats)
                        and len(self.res.received_ns) - received < results}
            if target is None:
                cycles = int(self.rng.integers(1, 4 * layer.counters(x)["ideal_cycles"] + 8))
                await ClockCycles(self.dut.clk, cycles)
            else:
                for _ in range(self._timeout(layer, x)):
                    if state()[target] or receiver.done():
                        break
                    await RisingEdge(self.dut.clk)
            sender.cancel()
            receiver.cancel()
            self.res.ready.value = 0
            await self.reset(fcov.reset_phase(False, *state().values()))
            await RisingEdge(self.dut.clk)
            await self.check(layer, x, f"after a reset in mid-stream ({target or 'at random'})")


# A cocotb test that every engine testbench imports by name: cocotb registers the tests it
# finds among a testbench module's attributes, so this one test serves every engine.
@cocotb.test()
async def load_port_protocol(dut):
    """Layer after layer: the next one offered while vectors are in flight, one written over
    another, a reset in mid-load (:meth:`EngineBench.check_load_protocol`)."""
    bench = await EngineBench.start(dut)
    for _ in range(2):
        await bench.check_load_protocol()


@cocotb.test()
async def requantizer_clamps(dut):
    """Every clamp of the requantizer in every result lane
    (:meth:`EngineBench.check_requantizer_clamps`)."""
    bench = await EngineBench.start(dut)
    await bench.check_requantizer_clamps()


@cocotb.test()
async def result_stalls(dut):
    """Long stalls of ``res`` at every pipeline stage (:meth:`EngineBench.check_result_stalls`),
    on two random layers."""
    bench = await EngineBench.start(dut)
    for _ in range(2):
        await bench.check_result_stalls()
