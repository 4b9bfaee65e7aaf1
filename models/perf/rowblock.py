"""Cycle models of the row-block engines, dense and ternary (:mod:`secateur.hdl.engines.dense`,
:mod:`secateur.hdl.engines.ternary`).

Both sequencers issue one tile (dense) or one non-zero group (ternary; an all-zero row block
costs one cycle) per cycle, row block after row block, from the full bank of the two-bank
input buffer (:mod:`.buffer`), and release the bank with the vector's last issue. The
``C`` issue cycles of a vector, the sum over its row blocks, are the layer's
``ideal_cycles`` per vector (:meth:`~secateur.hdl.engines.base.Layer.counters`). They
differ in how the sequencer starts:

* dense issues as soon as its bank is full and the previous vector is issued: the edge
  after both;
* ternary first raises a ``busy`` register, the edge after it sees the bank full, and
  issues from the edge after that; but when the bank was already full at the previous
  vector's last issue, ``busy`` stays high and the vector follows without a gap.

A row block's result leaves ``engine.latency`` cycles after its last issue, less the
cycles from a vector's last ``act`` beat to its first issue on an idle engine (1 for
dense, 2 for ternary), which the latency includes.
"""

from __future__ import annotations

import numpy as np

from .buffer import two_bank_timeline
from .timeline import Timeline

__all__ = ["dense_timeline", "ternary_timeline"]

#: Cycles from a vector's last act beat to its first issue, engine idle.
DENSE_START = 1
TERNARY_START = 2


def _timeline(layer, x: np.ndarray, counters: dict, row_blocks: np.ndarray, start,
              start_delay: int) -> Timeline:
    """The row-block engine timeline: ``row_blocks`` the issue cycles of each row block,
    ``start(full, released)`` the first issue of a vector, ``start_delay`` that of an idle
    engine after the full edge."""
    drain = layer.engine.latency - start_delay
    # Each row block's result leaves after its last issue; the vector's last releases the
    # bank (the sum is the layer's ideal_cycles per vector).
    done = np.cumsum(row_blocks) - 1

    def reader(vector, full, released):
        first = start(full, released)
        return first + int(done[-1]), first + done + drain

    return two_bank_timeline(layer.input_beats_per_vector, x.shape[0], reader)


def _dense_start(full: int, released: int) -> int:
    """Dense issues from the edge after its bank is full and the previous vector issued."""
    return max(full, released) + DENSE_START


def _ternary_start(full: int, released: int) -> int:
    """Ternary's ``busy`` register: see the module documentation."""
    if full < released:        # busy stays high: the bank was full at the last issue
        return released + 1
    return max(full, released) + TERNARY_START


def dense_timeline(layer, x: np.ndarray, counters: dict) -> Timeline:
    """The dense engine: ``col_blocks`` tiles per row block, every tile issued.

    Parameters
    ----------
    layer : DenseLayer
    x : numpy.ndarray
        int8 inputs ``(B, cols)``, checked.
    counters : dict
        ``layer.counters(x)``.

    Returns
    -------
    Timeline
    """
    return _timeline(layer, x, counters, np.full(layer.row_blocks, layer.col_blocks),
                     _dense_start, DENSE_START)


def ternary_timeline(layer, x: np.ndarray, counters: dict) -> Timeline:
    """The ternary engine: a row block takes ``max(1, its non-zero groups)`` cycles.

    Parameters
    ----------
    layer : TernaryLayer
    x : numpy.ndarray
        int8 inputs ``(B, cols)``, checked.
    counters : dict
        ``layer.counters(x)``.

    Returns
    -------
    Timeline
    """
    issued = np.maximum(1, np.count_nonzero(layer.nonzero_groups, axis=1))
    return _timeline(layer, x, counters, issued, _ternary_start, TERNARY_START)
