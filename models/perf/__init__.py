"""The exact performance model of every engine: cycles, first-result latency, load beats,
utilization, storage and energy of a layer and a batch, without simulating.

One module per sequencer, each derived from its engine's microarchitecture (the module
documents where every constant comes from): :mod:`.rowblock` (dense, ternary), :mod:`.lfsr`,
:mod:`.permdiag` and :mod:`.cim`; the two-bank input buffer that dense, ternary and lfsr
share is :mod:`.buffer`, the load port's counts :mod:`.load`. Each gives a
:class:`~.timeline.Timeline`: when every vector's first and last ``act`` and ``res`` beats
pass, with ``res`` never stalled and ``act`` beats offered back to back from the cycle after
the last load beat (what :file:`sim/harness/stream_harness.v` and
:class:`~secateur.verif.engine_bench.EngineBench` without stalls do). ``Timeline.cycles``
equals :class:`~secateur.sim.runner.BatchSimulator`'s ``cycles`` exactly
(``tests/test_perf.py`` checks it on random engines, layers and batches). Where the count
depends on the data (ternary zero groups, lfsr look-ahead stalls, permdiag's zero inputs,
cim's dead bit-planes) the model reads the layer's weights and the inputs.

Energy and work are the engine's own accounting (:meth:`Layer.counters
<secateur.hdl.engines.base.Layer.counters>` and :mod:`secateur.models.energy`), not a copy.

This is a package rather than a module of ``models/`` because the simulator cache is keyed
by the digest of ``models/*.py`` (:func:`secateur.gen.rtl.source_digest`), which constants
of the RTL come from; the performance model defines none, so editing it leaves every build
valid.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .cim import cim_timeline
from .lfsr import lfsr_timeline
from .load import load_beats, load_cycles
from .permdiag import permdiag_timeline
from .rowblock import dense_timeline, ternary_timeline
from .timeline import Timeline

__all__ = ["TIMELINES", "Timeline", "Estimate", "timeline", "cycles", "estimate",
           "load_beats", "load_cycles", "storage_bits"]

#: Engine name -> ``timeline(layer, x, counters)``.
TIMELINES = {"dense": dense_timeline, "ternary": ternary_timeline, "lfsr": lfsr_timeline,
             "permdiag": permdiag_timeline, "cim": cim_timeline}


def timeline(layer, x: np.ndarray, counters: dict | None = None, *, gap: int = 0) -> Timeline:
    """When each vector of ``x`` enters and leaves the engine.

    Parameters
    ----------
    layer : Layer
        A layer of an engine of :data:`TIMELINES`.
    x : numpy.ndarray
        int8 inputs ``(B, cols)``.
    counters : dict, optional
        ``layer.counters(x)``, if the caller has it already.
    gap : int, optional
        Cycles between the edge that accepted the layer's last load beat and the first
        ``act`` beat's first offer (0: at once, as the harness offers it). Only lfsr's index
        stage still settles after a load; the other engines' timelines do not depend on it.

    Returns
    -------
    Timeline

    Raises
    ------
    TypeError, ValueError
        If ``x`` is not a legal batch of the layer (:meth:`Layer.check_inputs
        <secateur.hdl.engines.base.Layer.check_inputs>`), the engine has no model, or
        ``gap`` is negative.
    """
    name = layer.engine.name
    if name not in TIMELINES:
        raise ValueError(f"no performance model for the {name} engine")
    if isinstance(gap, bool) or not isinstance(gap, (int, np.integer)) or gap < 0:
        raise ValueError(f"gap must be an integer >= 0, not {gap!r}")
    x = layer.check_inputs(x)
    counters = layer.counters(x) if counters is None else counters
    if name == "lfsr":
        return lfsr_timeline(layer, x, counters, gap=int(gap))
    return TIMELINES[name](layer, x, counters)


def cycles(layer, x: np.ndarray) -> int:
    """``BatchSimulator(layer.engine).run(layer, x).cycles``, without simulating.

    Parameters
    ----------
    layer : Layer
    x : numpy.ndarray
        int8 inputs ``(B, cols)``.

    Returns
    -------
    int

    Raises
    ------
    TypeError, ValueError
        As :func:`timeline`.
    """
    return timeline(layer, x).cycles


#: Engine facts (:meth:`Engine.derived <secateur.hdl.engines.base.Engine.derived>`) that are
#: on-chip storage, in bits, and what each is.
_ENGINE_STORAGE = ("weight_bits", "index_bits", "seed_bits", "bitmap_bits", "offset_bits",
                   "accumulator_bits")
#: Layer counters (:meth:`Layer.counters <secateur.hdl.engines.base.Layer.counters>`) that
#: are the bits a layer's information takes at its own widths.
_LAYER_STORAGE = ("weight_bits", "index_bits", "seed_bits", "bitmap_bits", "offset_bits")


def storage_bits(layer, counters: dict) -> dict:
    """On-chip storage of ``layer``'s engine and of the layer itself, in bits.

    Parameters
    ----------
    layer : Layer
    counters : dict
        ``layer.counters(x)`` for any batch (storage does not depend on it).

    Returns
    -------
    dict
        ``engine``: the memories the generator instantiates (from ``engine.derived()``;
        the CIM macros' ``cells``, one bit each, as ``cell_bits``); ``layer``: what this
        layer's weights, indices, seeds, bitmaps and offsets take at their own widths
        (from the counters; for CIM the cells of its macro tiles).
    """
    derived = layer.engine.derived()
    engine = {key: int(derived[key]) for key in _ENGINE_STORAGE if key in derived}
    own = {key: int(counters[key]) for key in _LAYER_STORAGE if key in counters}
    if "cells" in derived:
        geometry = layer.engine.geometry
        engine["cell_bits"] = int(derived["cells"])
        own["cell_bits"] = layer.row_tiles * layer.col_tiles * geometry.macro_rows \
            * geometry.macro_cols
    return {"engine": engine, "layer": own}


@dataclass(frozen=True)
class Estimate:
    """What :func:`estimate` predicts for one layer and batch."""
    timeline: Timeline
    load_beats: int
    load_cycles: int
    counters: dict = field(repr=False)
    storage: dict

    @property
    def cycles(self) -> int:
        return self.timeline.cycles

    @property
    def first_result_latency(self) -> int:
        return self.timeline.first_result_latency

    @property
    def utilization(self) -> float:
        """Useful operations per lane and cycle, as a run's report computes it."""
        return self.counters["useful_ops"] / (self.cycles * self.counters["lanes"])


def estimate(layer, x: np.ndarray) -> Estimate:
    """Cycles, latency, load beats and cycles, work, energy and storage of ``layer`` on the
    batch ``x``.

    Parameters
    ----------
    layer : Layer
        A layer of an engine of :data:`TIMELINES`.
    x : numpy.ndarray
        int8 inputs ``(B, cols)``.

    Returns
    -------
    Estimate

    Raises
    ------
    TypeError, ValueError
        As :func:`timeline`.
    """
    x = layer.check_inputs(x)
    counters = layer.counters(x)
    return Estimate(timeline=timeline(layer, x, counters), load_beats=load_beats(layer),
                    load_cycles=load_cycles(layer), counters=counters,
                    storage=storage_bits(layer, counters))
