"""Cycle model of the permuted-diagonal engine (:mod:`secateur.hdl.engines.permdiag`).

A vector moves through four stages, each waiting for the one before it and for a resource
the vector before it holds:

* *fill*: its ``beats`` ``act`` beats, one per cycle, into the incoming bitmaps; they hold
  one vector, so the next vector's first beat waits for this one's start (the edge after it);
* *start*: at the edge after the fill, when the previous vector is issued and an accumulator
  bank is free (the vector two back was drained, :data:`BANK_FREE` edges after its last
  drain read); the start edge also makes the vector's first pick;
* *issue*: the sequencer's ``rounds`` picks (:meth:`~secateur.hdl.engines.permdiag.
  PermDiagLayer.pick_rounds`), ``passes`` cycles each, or one cycle for an all-zero vector
  (the vector's ``ideal_cycles``); the next vector may start at the edge this one retires;
* *drain*: ``drain_words`` reads, one per cycle, from :data:`RETIRE_TO_DRAIN` edges after
  the retire (the last accumulator write is five pipeline stages behind the last pass), and
  after the previous vector's drain.

Each drain read reaches ``res`` a fixed number of cycles later; ``engine.latency`` is that
number plus the cycles from an all-zero vector's last ``act`` beat to its first drain read
(:data:`ZERO_VECTOR_TO_DRAIN`).
"""

from __future__ import annotations

import numpy as np

from .timeline import NEVER, Timeline

__all__ = ["RETIRE_TO_DRAIN", "BANK_FREE", "ZERO_VECTOR_TO_DRAIN", "permdiag_timeline"]

#: Retire edge to the first drain read: four edges of the retire shift register (the last
#: accumulator write lands there) and the drain's pending register.
RETIRE_TO_DRAIN = 5
#: Last drain read to the first edge a start may use the bank: the read's D1 register
#: clears the bank's busy bit, which the start sees an edge later.
BANK_FREE = 2
#: An all-zero vector on an idle engine: last act beat, start (1), retire (1), drain read.
ZERO_VECTOR_TO_DRAIN = 1 + 1 + RETIRE_TO_DRAIN


def permdiag_timeline(layer, x: np.ndarray, counters: dict) -> Timeline:
    """The timeline of the batch ``x`` (see the module documentation).

    Parameters
    ----------
    layer : PermDiagLayer
    x : numpy.ndarray
        int8 inputs ``(B, cols)``, checked.
    counters : dict
        ``layer.counters(x)``.

    Returns
    -------
    Timeline
    """
    geometry = layer.geometry
    rounds = layer.pick_rounds(x)
    issue = np.where(rounds > 0, rounds * geometry.passes, 1)
    to_res = layer.engine.latency - ZERO_VECTOR_TO_DRAIN
    words = np.arange(geometry.drain_words)
    act_first, act_last, res = [], [], []
    started = retired = NEVER
    drained = [NEVER, NEVER]       # last drain read of the two vectors before
    for vector, cycles in enumerate(issue.tolist()):
        first = 0 if vector == 0 else max(act_last[-1], started) + 1
        full = first + geometry.beats - 1
        started = max(full + 1, retired, drained[0] + BANK_FREE)
        retired = started + cycles
        drain = max(retired + RETIRE_TO_DRAIN, drained[1] + 1)
        drained = [drained[1], drain + geometry.drain_words - 1]
        act_first.append(first)
        act_last.append(full)
        res.append(drain + words + to_res)
    return Timeline.from_lists(act_first, act_last, res)
