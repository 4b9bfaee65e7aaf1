"""The load port's work for one layer: how many ``load`` beats program it and how many cycles
they take, counted from the engines' load maps without building the beats (which
:meth:`~secateur.hdl.engines.base.Layer.load_beats` does one Python tuple at a time).

Every count is that of the engine's ``Layer.load_beats``, written as a product of the
layout it walks; ``tests/test_perf.py`` holds the two equal on random layers of every
engine.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["load_beats", "load_cycles"]


def _result_path(layer, placements: int) -> int:
    """The result path's beats: a multiplier and a bias per placement, when the layer has
    them, and the control word (:meth:`~secateur.hdl.engines.base.Layer.result_path_beats`)."""
    return placements * ((layer.requant is not None) + (layer.bias is not None)) + 1


def _dense(layer) -> int:
    engine = layer.engine
    return 2 + _result_path(layer, layer.rows) \
        + layer.row_blocks * layer.col_blocks * engine.pe * engine.weight_chunks


def _ternary(layer) -> int:
    engine = layer.engine
    return 2 + _result_path(layer, layer.rows) + layer.row_blocks * engine.bitmap_chunks \
        + int(layer.nonzero_groups.sum()) * engine.pe * engine.weight_chunks


def _lfsr(layer) -> int:
    engine = layer.engine
    lfsr = engine.index == "lfsr"
    # A seed per row slot (lfsr), and per kept weight a weight beat plus an index beat (csr).
    return 3 + _result_path(layer, layer.rows) + (layer.row_blocks * engine.pe if lfsr else 0) \
        + layer.row_blocks * layer.k * engine.pe * (1 if lfsr else 2)


def _permdiag(layer) -> int:
    engine, geometry = layer.engine, layer.geometry
    # The result path has a word per res lane of every drained beat, row or padding.
    return 7 + _result_path(layer, geometry.drain_words * engine.res_lanes) \
        + engine.pe * (geometry.weight_words * engine.weight_chunks
                       + geometry.offset_words * engine.offset_chunks)


def _cim_kept_chunks(layer) -> np.ndarray:
    """Per used macro tile, the 8-row chunks of cells it writes (those with a kept row)."""
    geometry = layer.engine.geometry
    chunks = math.ceil(geometry.macro_rows / 8)
    tiles = (layer.row_tiles, layer.col_tiles)
    if layer.keep is None:
        return np.full(tiles, chunks, dtype=np.int64)
    kept = np.zeros(tiles + (chunks * 8,), dtype=bool)
    kept[..., :geometry.macro_rows] = layer.keep
    return kept.reshape(tiles + (chunks, 8)).any(axis=-1).sum(axis=-1)


def _cim(layer) -> int:
    engine = layer.engine
    geometry = engine.geometry
    used = layer.row_tiles * layer.col_tiles
    # A tile word per macro; per used tile its mask word (row_mask=lfsr), one beat per bit
    # line of each written chunk, and a column-map word per group and mux position.
    return 2 + _result_path(layer, layer.rows) + engine.pe \
        + used * ((layer.keep is not None) + geometry.groups * geometry.col_mux) \
        + int(_cim_kept_chunks(layer).sum()) * geometry.macro_cols


_COUNTS = {"dense": _dense, "ternary": _ternary, "lfsr": _lfsr, "permdiag": _permdiag,
           "cim": _cim}


def load_beats(layer) -> int:
    """``len(layer.load_beats())``, counted.

    Parameters
    ----------
    layer : Layer
        A layer of any engine of :data:`secateur.gen.registry.ENGINES`.

    Returns
    -------
    int

    Raises
    ------
    ValueError
        If the layer's engine has no count here.
    """
    name = layer.engine.name
    if name not in _COUNTS:
        raise ValueError(f"no load-beat count for the {name} engine")
    return _COUNTS[name](layer)


def load_cycles(layer) -> int:
    """Cycles the load port takes for :func:`load_beats` offered back to back (the
    harness's ``load_cycles``): one per beat, plus, on the CIM engine with
    ``row_mask=lfsr``, the ``k`` cycles each macro tile's mask write holds ``load.ready``
    low while its LFSR regenerates the row mask.

    Raises
    ------
    ValueError
        As :func:`load_beats`.
    """
    beats = load_beats(layer)
    if layer.engine.name == "cim" and layer.keep is not None:
        beats += int(layer.k.sum())
    return beats
