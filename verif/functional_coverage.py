"""Functional coverage of the engine testbenches: named bins, counted, summed over the
regression and printed in its summary (``tests/conftest.py``).

Structural coverage (:mod:`secateur.verif.coverage`) says which lines of RTL ran; these bins
say which situations the stimulus created, so a hole such as "no stall was ever timed to the
third pipeline stage" shows as a zero in the summary instead of passing silently.

Bins (:func:`declared`): per engine,

* ``stall at stage k`` for every ``k`` in ``0 .. latency``: ``res.ready`` low while the
  oldest vector in flight passed its last ``act`` beat ``k`` cycles before (``latency``:
  at least that);
* ``res back-pressure while a result waits``: ``res.valid`` high, ``res.ready`` low;
* ``reset while <phase>`` for every phase (idle, loading, streaming, draining);
* ``back-to-back layers``: a layer programmed after another's batch, without a reset;
* ``all-zero tile``: a block of ``pe`` rows of the weights all zero; ``zero activations``:
  a vector with zeros; ``full fan-in at extreme values``: the largest ``N`` with a vector
  all ``-128`` or all ``+127``;
* the engine's own skip paths (:data:`SKIP_PATHS`): ternary's zero groups, lfsr's rejected
  LFSR states, permdiag's zero activations, cim's dead bit-planes and bit-columns.

Counting happens inside the simulator's Python (a cocotb process); :func:`hit` writes the
process's counts to ``$SECATEUR_FCOV_DIR/<pid>.json`` when the variable is set, and
:func:`load` sums every file there. Without the variable counting still works (for a unit
test) but nothing is written.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np

__all__ = ["ENV", "PHASES", "SKIP_PATHS", "declared", "declare", "hit", "counts", "flush", "load",
           "summary", "sample_batch", "reset_phase", "sample_reset", "sample_program",
           "ResMonitor"]

ENV = "SECATEUR_FCOV_DIR"
PHASES = ("idle", "loading", "streaming", "draining")
GENERIC = ("res back-pressure while a result waits", "back-to-back layers", "all-zero tile",
           "zero activations", "full fan-in at extreme values")


def _ternary_zero_groups(engine, layer, x) -> bool:
    w = np.asarray(layer.w)
    rows, cols = w.shape
    for r in range(0, rows, engine.pe):
        for c in range(0, cols, engine.fan_in):
            if not w[r:r + engine.pe, c:c + engine.fan_in].any():
                return True
    return False


def _lfsr_rejected(engine, layer, x) -> bool:
    # States run over 1 .. 2**w - 1 and those above the layer's N are stepped over.
    return engine.index != "csr" and layer.cols < 2 ** engine.lfsr_width - 1


def _zero_inputs(engine, layer, x) -> bool:
    return bool((np.asarray(x) == 0).any())


def _cim_skipped(engine, layer, x) -> bool:
    return layer.counters(x).get("adc_conversions_skipped", 0) > 0


def _cim_dead_planes(engine, layer, x) -> bool:
    # A bit-plane of a vector whose bits are all zero (two's complement, 8 planes).
    bits = np.asarray(x).astype(np.uint8)
    return any(not (bits & (1 << plane)).any(axis=1).all() for plane in range(8))


#: engine -> (bin, predicate(engine, layer, x)) of each skip path it has.
SKIP_PATHS = {
    "ternary": [("skip: zero groups", _ternary_zero_groups)],
    "lfsr": [("skip: rejected LFSR states", _lfsr_rejected)],
    "permdiag": [("skip: zero activations", _zero_inputs)],
    "cim": [("skip: dead bit-planes", _cim_dead_planes),
            ("skip: ADC conversions of zero bit-columns", _cim_skipped)],
    "dense": [],
}

_COUNTS: Counter = Counter()


def declared(engine) -> list[str]:
    """Every bin of ``engine`` (an :class:`~secateur.hdl.engines.base.Engine`), named
    ``"<engine>: <bin>"``."""
    names = [f"stall at stage {k}" for k in range(engine.latency + 1)]
    names += list(GENERIC) + [f"reset while {phase}" for phase in PHASES]
    names += [name for name, _ in SKIP_PATHS.get(engine.name, [])]
    return [f"{engine.name}: {name}" for name in names]


def hit(engine, name: str, n: int = 1) -> None:
    """Count ``n`` hits of bin ``name`` of ``engine`` and save the process's counts.

    Raises
    ------
    KeyError
        If ``name`` is not one of :func:`declared` (a typo would count nothing).
    """
    full = f"{engine.name}: {name}"
    if full not in declared(engine):
        raise KeyError(f"no functional coverage bin {full!r}")
    _COUNTS[full] += n
    flush()


def counts() -> Counter:
    """This process's counts."""
    return Counter(_COUNTS)


def flush() -> Path | None:
    """Write this process's counts (and declared bins, as zeros) to ``$SECATEUR_FCOV_DIR``."""
    directory = os.environ.get(ENV)
    if not directory:
        return None
    path = Path(directory) / f"{os.getpid()}.json"
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(dict(_COUNTS), sort_keys=True))
    temporary.replace(path)  # atomic: the summary may read while a simulation runs
    return path


def declare(engine) -> None:
    """Make every bin of ``engine`` appear in the summary, hit or not."""
    for name in declared(engine):
        _COUNTS.setdefault(name, 0)
    flush()


def load(directory) -> Counter:
    """The counts of every process that wrote to ``directory``, summed."""
    total: Counter = Counter()
    for path in sorted(Path(directory).glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for name, count in data.items():
            total[name] += count
    return total


def summary(total: Counter) -> list[str]:
    """Lines of the regression summary: per engine, each bin's count; unhit bins marked."""
    lines, engines = [], sorted({name.split(":")[0] for name in total})
    for engine in engines:
        bins = {name: count for name, count in total.items() if name.startswith(engine + ":")}
        unhit = [name for name, count in bins.items() if not count]
        lines.append(f"{engine}: {len(bins) - len(unhit)} of {len(bins)} bins hit")
        for name in sorted(bins):
            lines.append(f"  {'MISSED' if not bins[name] else bins[name]:>8}  "
                         f"{name[len(engine) + 2:]}")
    return lines


def _largest_n(engine) -> int:
    """The most columns a layer of ``engine`` has: ``max_cols``, or cim's every macro on one
    output tile (``macros * macro_rows``)."""
    if engine.name == "cim":
        return engine.geometry.macros * engine.geometry.macro_rows
    return engine.max_cols


def sample_batch(engine, layer, x) -> None:
    """The stimulus bins of one batch of ``layer`` on ``x`` (call before running it)."""
    x = np.asarray(x)
    w = getattr(layer, "w", None)
    if w is not None:
        w = np.asarray(w)
        if any(not w[r:r + engine.pe].any() for r in range(0, w.shape[0], engine.pe)):
            hit(engine, "all-zero tile")
    if (x == 0).any():
        hit(engine, "zero activations")
    if layer.cols == _largest_n(engine) and \
            ((x == -128).all(axis=1) | (x == 127).all(axis=1)).any():
        hit(engine, "full fan-in at extreme values")
    for name, predicate in SKIP_PATHS.get(engine.name, []):
        if predicate(engine, layer, x):
            hit(engine, name)


def reset_phase(load_pending: bool, act_pending: bool, res_pending: bool) -> str:
    """The phase a reset interrupts: loading, streaming (inputs not all taken), draining
    (results not all out) or idle."""
    return ("loading" if load_pending else "streaming" if act_pending
            else "draining" if res_pending else "idle")


def sample_reset(engine, phase: str) -> None:
    """A reset applied in ``phase`` (:data:`PHASES`)."""
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {', '.join(PHASES)}, not {phase!r}")
    hit(engine, f"reset while {phase}")


def sample_program(engine, batch_since_reset: bool) -> None:
    """A layer programmed; ``batch_since_reset``: a batch ran since the last reset (so this
    layer follows another's without one)."""
    if batch_since_reset:
        hit(engine, "back-to-back layers")


class ResMonitor:
    """Samples ``res`` at every rising edge for the stall bins.

    Parameters
    ----------
    engine : Engine
    act_last_ns : callable
        Returns the times (ns) of the last ``act`` beat of every vector sent so far.
    results_out : callable
        Returns how many vectors have all their results out.
    period_ns : int
        The clock period.
    """

    def __init__(self, engine, act_last_ns, results_out, period_ns: int = 10):
        self.engine, self.period = engine, period_ns
        self.act_last_ns, self.results_out = act_last_ns, results_out
        self.stall_hits: Counter = Counter()
        self.waits = 0
        declare(engine)

    def sample(self, now_ns: int, valid: bool, ready: bool) -> None:
        """One edge: ``res.valid`` and ``res.ready`` as the DUT saw them."""
        if ready:
            return
        if valid:
            self.waits += 1
        sent, done = self.act_last_ns(), self.results_out()
        if done < len(sent):
            age = max(0, (now_ns - sent[done]) // self.period)
            self.stall_hits[min(age, self.engine.latency)] += 1

    def flush(self) -> None:
        """Add the monitored counts to the bins (call at the end of each batch)."""
        for stage, n in self.stall_hits.items():
            hit(self.engine, f"stall at stage {stage}", n)
        if self.waits:
            hit(self.engine, "res back-pressure while a result waits", self.waits)
        self.stall_hits.clear()
        self.waits = 0

    async def run(self, dut) -> None:
        """A cocotb coroutine: sample ``dut.res`` at every rising edge of ``dut.clk``."""
        import cocotb
        from cocotb.triggers import RisingEdge
        while True:  # at the edge, as the sink samples the handshake
            await RisingEdge(dut.clk)
            self.sample(round(cocotb.utils.get_sim_time("ns")), bool(dut.res__valid.value),
                        bool(dut.res__ready.value))
