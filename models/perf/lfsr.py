"""Cycle model of the LGPS engine (:mod:`secateur.hdl.engines.lfsr`), both index sources.

The engine reads the two-bank input buffer (:mod:`.buffer`). Its sequencer is two stages:

* the *index stage* computes a beat's columns (each PE's LFSR sequencer, or the index memory
  with ``index=csr``) and *generates* it into the one-beat index register when the register
  is empty or being issued from;
* the *issue stage* issues the registered beat when the vector's bank is full, one beat per
  cycle, ``C = ceil(M / pe) * k`` beats a vector, and releases the bank with the last one.

So a vector's first beat waits in the index register (generated as the previous vector's
last beat issued), and issues at the edge after the later of that and its bank's full edge;
every later beat issues one cycle after the one before it, plus the cycles its sequencers
*hunt* (below), less what of that hunt passed while the first beat waited for its bank.

Index readiness after a load
    A load holds the index stage (the loading edges and one settling edge), then the seeds
    take two priming edges (lfsr; none for csr): the first beat is generated
    :data:`INDEX_READY` edges after the first ``act`` beat, when that beat follows the last
    load beat at once (as the harness and the testbenches offer it).

Hunting (``lookahead < lfsr_width + 1``, lfsr only)
    A sequencer moves up to ``lookahead`` LFSR states per cycle to the next accepted state
    (``<= N``). ``d`` states ahead (on the full LFSR cycle) it arrives after ``ceil(d /
    lookahead)`` cycles, so after a beat the next one is generated ``(d - 1) // lookahead``
    cycles late; all PEs move together, so the row block waits for its slowest PE (the padded
    rows of the last row block, seed 1, included). A row's first column is its seed, loaded
    with the row's start: no hunt between rows.
"""

from __future__ import annotations

import functools

import numpy as np

from ...models import lfsr as lfsr_model
from .buffer import two_bank_timeline
from .timeline import NEVER, Timeline

__all__ = ["INDEX_READY", "hunt_cycles", "lfsr_timeline"]

#: Edges from the first act beat (offered the cycle after the last load beat) to the first
#: generate: the load's settling edge, then two seed-priming edges with ``index=lfsr``.
INDEX_READY = {"lfsr": 3, "csr": 1}

#: Cycles from an issue to its row block's result leaving, less ``engine.latency``: the
#: latency counts from the last act beat, one cycle before the issue of an idle engine.
ISSUE_AFTER_FULL = 1


@functools.lru_cache(maxsize=8)
def _accepted_gaps(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per accepted state of the ``n``-column LFSR, in cycle order: the LFSR states from it
    to the next accepted one (``d``), and each state's rank in that order (index = state)."""
    width = lfsr_model.lfsr_width(n)
    period = (1 << width) - 1
    cycle = np.array(lfsr_model.lfsr_states(1, width, period), dtype=np.int64)
    positions = np.flatnonzero(cycle <= n)
    gaps = np.diff(np.append(positions, positions[0] + period))
    rank = np.zeros(period + 1, dtype=np.int64)
    rank[cycle[positions]] = np.arange(positions.size)
    return gaps, rank


def hunt_cycles(layer) -> np.ndarray:
    """Cycles the index stage stalls after each beat of a vector (zero unless the engine
    hunts, ``not engine.stall_free``).

    Parameters
    ----------
    layer : LFSRLayer

    Returns
    -------
    numpy.ndarray
        int64 ``(ceil(M / pe), k)``: entry ``[r, j]`` after kept weight ``j`` of row block
        ``r`` (0 after a row's last, whose next is a seed).
    """
    engine = layer.engine
    hunts = np.zeros((layer.row_blocks, layer.k), dtype=np.int64)
    if engine.stall_free or layer.k < 2:
        return hunts
    gaps, rank = _accepted_gaps(layer.cols)
    seeds = np.ones(layer.row_blocks * engine.pe, dtype=np.int64)   # padded rows: seed 1
    seeds[:layer.rows] = layer.seeds
    steps = rank[seeds][:, None] + np.arange(layer.k - 1)[None, :]
    stalls = (gaps[steps % gaps.size] - 1) // engine.lookahead           # (rows, k - 1)
    hunts[:, :-1] = stalls.reshape(layer.row_blocks, engine.pe, layer.k - 1).max(axis=1)
    return hunts


def lfsr_timeline(layer, x: np.ndarray, counters: dict, gap: int = 0) -> Timeline:
    """The timeline of the batch ``x`` (see the module documentation).

    Parameters
    ----------
    layer : LFSRLayer
    x : numpy.ndarray
        int8 inputs ``(B, cols)``, checked.
    counters : dict
        ``layer.counters(x)``.
    gap : int, optional
        Cycles from the last load beat's edge to the first act beat's first offer, beyond
        the harness's at once: the index stage's readiness moves that much earlier.

    Returns
    -------
    Timeline
    """
    engine = layer.engine
    batch = x.shape[0]
    beats = counters["ideal_cycles"] // batch
    hunts = hunt_cycles(layer).reshape(-1)
    first_hunt = int(hunts[0])
    # Edges from a vector's first issue to each beat's, when no hunt overlaps a wait.
    issued = np.arange(beats) + np.concatenate([[0], np.cumsum(hunts)[:-1]])
    # Each row block's result leaves after its last beat.
    row_block_last = np.arange(layer.k - 1, beats, layer.k)
    drain = engine.latency - ISSUE_AFTER_FULL
    ready = INDEX_READY[engine.index] - gap

    def reader(vector, full, released):
        # The first beat entered the index register when the previous vector's last issued.
        generated = ready if released == NEVER else released
        first = max(generated, full, released) + 1
        # The hunt after the first beat overlaps its wait in the index register, so every
        # later beat issues that much sooner.
        late = max(0, first_hunt + 1 - (first - generated)) - first_hunt
        last = first + int(issued[-1]) + (late if beats > 1 else 0)
        results = first + issued[row_block_last] + late * (row_block_last >= 1)
        return last, results + drain

    return two_bank_timeline(layer.input_beats_per_vector, batch, reader)
