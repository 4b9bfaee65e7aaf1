"""Cycle model of the compute-in-memory engine (:mod:`secateur.hdl.engines.cim`).

The engine takes one vector at a time through its phases, so a vector's cycles add up:

* *fill*: ``input_beats_per_vector`` ``act`` beats, one per cycle;
* *live* and *start*: one edge each (the slices register their live bits; the step search
  loads them);
* *compute*: ``n`` live steps (input bit-plane and row group with a set input bit on a kept
  row of some macro), ``col_mux`` cycles each. With ``n >= 1`` the search's two registers
  run ahead of the first issue, and the last conversion must pass the slices' issue stage,
  the ADC latency and the code and term registers before the drain: :func:`compute_edges`;
  with ``n = 0`` nothing is issued and the drain follows the start at once;
* *drain*: one result beat per column tile, one per cycle; the next vector's first beat is
  accepted at the edge after the last.

``engine.latency`` is the cycles from an ``n = 0`` vector's last act beat to its first
result beat; each beat reaches ``res`` a fixed number of cycles after its drain edge.
"""

from __future__ import annotations

import numpy as np

from .timeline import Timeline

__all__ = ["live_steps", "compute_edges", "cim_timeline"]

#: Last act beat -> live -> start -> compute -> flush: the edges before the first drain edge
#: of a vector with no live step, which ``engine.latency`` counts too.
IDLE_TO_DRAIN = 4


def live_steps(layer, x: np.ndarray) -> np.ndarray:
    """The live steps of each vector: int64 ``(B,)``, the steps ``(i, gl)`` (input bit-plane
    ``i``, local row group ``gl``) in which some macro holding a tile has a kept row of group
    ``gl`` whose input bit ``i`` is set (the sum is :func:`secateur.models.cim.schedule`'s
    ``live_steps``).

    Parameters
    ----------
    layer : CIMLayer
    x : numpy.ndarray
        int8 inputs ``(B, cols)``.

    Returns
    -------
    numpy.ndarray
    """
    engine = layer.engine
    geometry = engine.geometry
    batch = x.shape[0]
    inputs = np.zeros((batch, layer.row_tiles * geometry.macro_rows), dtype=np.uint8)
    inputs[:, :layer.cols] = x.view(np.uint8)
    # A row counts if any tile of its row tile keeps it (every tile keeps it without a mask).
    kept = np.ones(inputs.shape[1], dtype=bool) if layer.keep is None \
        else layer.keep.any(axis=1).reshape(-1)
    inputs = np.where(kept, inputs, 0).reshape(batch, layer.row_tiles, geometry.groups,
                                               geometry.rows)
    planes = np.bitwise_or.reduce(inputs, axis=(1, 3))                   # (B, G): OR of bits
    return np.unpackbits(planes[..., None], axis=-1).sum(axis=(1, 2)).astype(np.int64)


def compute_edges(engine, steps: np.ndarray) -> np.ndarray:
    """Edges from a vector's last act beat to its first drain edge.

    Parameters
    ----------
    engine : CIMEngine
    steps : numpy.ndarray
        Live steps of each vector (:func:`live_steps`).

    Returns
    -------
    numpy.ndarray
        int64, one per vector.
    """
    # n >= 1: live, start, two search registers, the issue stage per step (col_mux
    # cycles), the advance that ends it, the flush check, and 1 + adc_latency + 2 cycles of
    # conversions in flight.
    busy = 1 + 1 + 2 + steps * engine.col_mux + 1 + 1 + (1 + engine.adc_latency + 2)
    return np.where(steps > 0, busy, IDLE_TO_DRAIN + 1)


def cim_timeline(layer, x: np.ndarray, counters: dict) -> Timeline:
    """The timeline of the batch ``x`` (see the module documentation).

    Parameters
    ----------
    layer : CIMLayer
    x : numpy.ndarray
        int8 inputs ``(B, cols)``, checked.
    counters : dict
        ``layer.counters(x)``.

    Returns
    -------
    Timeline
    """
    engine = layer.engine
    beats, drain = layer.input_beats_per_vector, layer.result_beats_per_vector
    to_res = engine.latency - (IDLE_TO_DRAIN + 1)
    compute = compute_edges(engine, live_steps(layer, x))
    # Each vector: fill, compute, drain; the next fills from the edge after the last drain.
    act_first = np.concatenate([[0], np.cumsum(beats - 1 + compute + drain)[:-1]])
    act_last = act_first + beats - 1
    first_drain = act_last + compute
    return Timeline.from_lists(act_first, act_last,
                               first_drain[:, None] + np.arange(drain)[None, :] + to_res)
