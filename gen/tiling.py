"""Layers larger than the engine instance: one tiler for every engine.

A layer of ``M x N`` that exceeds what the generated engine holds (``max_rows``,
``max_cols``, or a memory depth such as ternary's ``max_groups``, lfsr's ``weight_depth`` or
cim's macros) is cut into tiles, each an ordinary layer of the engine:

* **Row tiles** are independent layers: each carries its rows' bias and requantizer, and
  the engine returns their final results.
* **Column tiles** return raw accumulators, without bias or requantizer. The host adds the
  partial sums of a row's column tiles exactly in int64, then adds the bias once and
  requantizes with the one formula of :func:`secateur.models.requant.result_path`.

Tiles respect each engine's structure (:data:`RULES`), so that every tile is a legal layer
of the engine and the tiled result equals the engine's golden model of the whole layer:

``dense``     rows in multiples of ``pe``, columns of ``fan_in`` (whole row and column blocks);
``ternary``   the zero-group grid (``pe x fan_in`` groups); a row tile holds at most
              ``max_groups`` non-zero groups, and a column tile at most ``max_groups`` column
              blocks, so that every row block fits;
``lfsr``      rows only, in multiples of ``pe``, at most ``weight_depth // k`` row blocks: a
              row's mask is one LFSR sequence over all ``N`` columns, which a column cut would
              break, so ``N`` must fit ``max_cols``;
``permdiag``  whole ``p x p`` blocks in both directions;
``cim``       whole macro tiles (``slots`` outputs x ``macro_rows`` inputs, so the ADC's row
              groups of ``rows`` word lines are never cut), at most ``pe`` macro tiles per
              tile; the row-mask seeds and ``k`` follow their macro tiles.

Tiles run one after the other on one engine; cycles, load cycles, load beats and counted
work add up.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from ..hdl.engines.base import Engine, Layer
from ..models.requant import BIAS_KEY, RequantParams, bias_from_npz, result_path

__all__ = ["MAX_ROWS", "MAX_COLS", "Tile", "TiledLayer", "TiledRun", "tile_layer", "max_shape",
           "add_counters"]

#: The largest layer the tiler takes, rows and columns (the element count is bounded
#: separately when the file is read).
MAX_ROWS = MAX_COLS = 1 << 20


@dataclass(frozen=True)
class Tile:
    """One tile: output rows ``rows`` and input columns ``cols`` of the whole layer, as a
    layer of the engine (with the bias and requantizer only when it is the only column tile
    of its rows)."""
    rows: slice
    cols: slice
    layer: Layer


@dataclass(frozen=True)
class _Rule:
    """How an engine's layers are cut: ``align(engine, weights)`` gives the row and column
    multiples a cut must fall on (column ``None``: columns are never cut);
    ``limits(engine, weights, rows, cols)`` the most rows and columns of a tile (before
    data-dependent checks); ``row_cuts`` optionally cuts a column tile's rows by the data;
    ``cut(engine, weights, rows, cols)`` the structure keys of a tile."""
    align: Callable
    limits: Callable
    cut: Callable
    row_cuts: Callable | None = None


def _floor_to(value: int, multiple: int) -> int:
    """The largest multiple of ``multiple`` at most ``value``, or ``value`` if there is none."""
    return value if value < multiple else value // multiple * multiple


def _w_only(engine, weights, rows, cols):
    return {"w": np.asarray(weights["w"])[rows, cols]}


def _block_limits(engine, weights, m, n):
    row_align, col_align = RULES[engine.name].align(engine, weights)
    return _floor_to(engine.max_rows, row_align), _floor_to(engine.max_cols, col_align)


def _ternary_limits(engine, weights, m, n):
    rows, cols = _block_limits(engine, weights, m, n)
    return rows, min(cols, engine.max_groups * engine.fan_in)


def _ternary_row_cuts(engine, weights, cols: slice, row_limit: int) -> list[slice]:
    """Row tiles of a column tile, greedily as many row blocks as ``max_groups`` allows. An
    engine with fewer rows than PEs (``max_rows < pe``) holds part of one row block: its
    tiles are then ``row_limit`` rows each, one row block of the engine apiece."""
    w = np.asarray(weights["w"])[:, cols]
    pe, fan_in = min(engine.pe, row_limit), engine.fan_in
    row_blocks, col_blocks = math.ceil(w.shape[0] / pe), math.ceil(w.shape[1] / fan_in)
    padded = np.zeros((row_blocks * pe, col_blocks * fan_in), dtype=bool)
    padded[:w.shape[0], :w.shape[1]] = w != 0
    groups = padded.reshape(row_blocks, pe, col_blocks, fan_in).any(axis=(1, 3)).sum(axis=1)
    cuts, start, held = [], 0, 0
    for block, count in enumerate(groups):
        rows_after = (block + 1) * pe - start * pe
        if block > start and (held + count > engine.max_groups or rows_after > row_limit):
            cuts.append(slice(start * pe, block * pe))
            start, held = block, 0
        held += int(count)
    cuts.append(slice(start * pe, w.shape[0]))
    return cuts


def _lfsr_limits(engine, weights, m, n):
    k = int(np.asarray(weights["k"]))
    blocks = engine.weight_depth // max(k, 1)
    if blocks < 1:
        raise ValueError(f"lfsr layer keeps k = {k} columns per row; this engine stores at "
                         f"most weight_depth = {engine.weight_depth} per PE, less than one row "
                         f"block")
    return min(_floor_to(engine.max_rows, engine.pe), blocks * engine.pe), engine.max_cols


def _lfsr_cut(engine, weights, rows, cols):
    return {"w": np.asarray(weights["w"])[rows], "seeds": np.asarray(weights["seeds"])[rows],
            "k": np.asarray(weights["k"])}


def _permdiag_align(engine, weights):
    p = int(np.asarray(weights["p"]))
    return p, p


def _permdiag_limits(engine, weights, m, n):
    p = int(np.asarray(weights["p"]))
    if p > min(engine.max_rows, engine.max_cols):
        raise ValueError(f"permdiag layer has p = {p}; this engine holds at most "
                         f"{engine.max_rows} x {engine.max_cols} (max_rows x max_cols), less "
                         f"than one p x p block")
    return _block_limits(engine, weights, m, n)


def _permdiag_cut(engine, weights, rows, cols):
    return {"w": np.asarray(weights["w"])[rows, cols], "p": np.asarray(weights["p"])}


def _cim_align(engine, weights):
    return engine.geometry.slots, engine.macro_rows


def _cim_limits(engine, weights, m, n):
    geometry = engine.geometry
    input_tiles = min(math.ceil(n / geometry.macro_rows), geometry.macros)
    output_tiles = max(1, geometry.macros // input_tiles)
    return output_tiles * geometry.slots, input_tiles * geometry.macro_rows


def _cim_cut(engine, weights, rows, cols):
    cut = {"w": np.asarray(weights["w"])[rows, cols]}
    if "seeds" in weights:
        geometry = engine.geometry
        # seeds and k are per macro tile: (input tile, output tile).
        grid = (slice(cols.start // geometry.macro_rows,
                      math.ceil(cols.stop / geometry.macro_rows)),
                slice(rows.start // geometry.slots, math.ceil(rows.stop / geometry.slots)))
        cut["seeds"] = np.asarray(weights["seeds"])[grid]
        k = np.asarray(weights["k"])
        cut["k"] = k if k.ndim == 0 else k[grid]
    return cut


#: Engine name -> how its layers are cut (see the module documentation).
RULES: dict[str, _Rule] = {
    "dense": _Rule(align=lambda engine, weights: (engine.pe, engine.fan_in),
                   limits=_block_limits, cut=_w_only),
    "ternary": _Rule(align=lambda engine, weights: (engine.pe, engine.fan_in),
                     limits=_ternary_limits, cut=_w_only, row_cuts=_ternary_row_cuts),
    "lfsr": _Rule(align=lambda engine, weights: (engine.pe, None), limits=_lfsr_limits,
                  cut=_lfsr_cut),
    "permdiag": _Rule(align=_permdiag_align, limits=_permdiag_limits, cut=_permdiag_cut),
    "cim": _Rule(align=_cim_align, limits=_cim_limits, cut=_cim_cut),
}


def max_shape(engine: Engine) -> tuple[int, int]:
    """The largest ``(M, N)`` the tiler takes on ``engine``: columns up to ``max_cols`` on an
    engine whose columns cannot be cut, else :data:`MAX_COLS`."""
    cuts_columns = engine.name != "lfsr"
    return MAX_ROWS, MAX_COLS if cuts_columns else int(engine.params["max_cols"])


def _cuts(length: int, step: int) -> list[slice]:
    return [slice(start, min(start + step, length)) for start in range(0, length, step)]


class TiledLayer:
    """A layer of any size on one engine instance: the tiles, their golden model and their
    run (see the module documentation).

    Parameters
    ----------
    engine : Engine
    weights : mapping of str to numpy.ndarray
        A weights npz of the engine (its structure keys, and optionally the requantizer keys
        and ``bias``), of any ``M x N`` up to :func:`max_shape`.

    Raises
    ------
    TypeError, ValueError
        If ``weights`` is not a legal layer of the engine's structure (the engine's own
        messages, from the tile that breaks it), or cannot be cut (lfsr columns beyond
        ``max_cols``, a row block beyond a memory).
    """

    def __init__(self, engine: Engine, weights: Mapping[str, np.ndarray]):
        if engine.name not in RULES:
            raise ValueError(f"the tiler has no rule for the {engine.name} engine")
        if "w" not in weights:
            raise TypeError("weights npz has no key 'w' (int8 matrix of shape (M, N))")
        w = np.asarray(weights["w"])
        if w.ndim != 2 or 0 in w.shape:
            raise ValueError(f"weights w must be a 2-D (M, N) matrix with M, N >= 1, not shape "
                             f"{w.shape}")
        self._engine = engine
        self._load_beats = None
        self.rows, self.cols = (int(size) for size in w.shape)
        limit_rows, limit_cols = max_shape(engine)
        if self.rows > limit_rows or self.cols > limit_cols:
            why = ("its LFSR masks span whole rows, so columns are not tiled" if
                   self.cols > limit_cols and limit_cols < MAX_COLS else "the tiler's limit")
            raise ValueError(f"weights w has shape {w.shape}; this {engine.name} engine takes at "
                             f"most {limit_rows} x {limit_cols} ({why})")
        self.requant = RequantParams.from_npz(weights)
        if self.requant is not None:
            self.requant.mult_per_channel(self.rows)
        self.bias = bias_from_npz(weights, self.rows)
        try:
            self.tiles = self._plan(engine, weights)
        except KeyError:
            engine.layer(weights)  # raises the engine's own message for the missing key
            raise

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def column_tiles(self) -> int:
        return len({(tile.cols.start, tile.cols.stop) for tile in self.tiles})

    def _plan(self, engine: Engine, weights) -> list[Tile]:
        rule = RULES[engine.name]
        row_align, col_align = rule.align(engine, weights)
        row_limit, col_limit = rule.limits(engine, weights, self.rows, self.cols)
        column_cuts = _cuts(self.cols, self.cols if col_align is None else col_limit)
        structure = {key: value for key, value in weights.items()
                     if key in engine.WEIGHT_KEYS}
        tiles = []
        for cols in column_cuts:
            if rule.row_cuts is not None:
                row_cuts = rule.row_cuts(engine, structure, cols, row_limit)
            else:
                row_cuts = _cuts(self.rows, row_limit)
            for rows in row_cuts:
                tile_weights = rule.cut(engine, structure, rows, cols)
                if len(column_cuts) == 1:
                    tile_weights.update(self._result_keys(rows))
                tiles.append(Tile(rows, cols, self._tile_layer(tile_weights, rows, cols)))
        return tiles

    def _tile_layer(self, weights, rows: slice, cols: slice) -> Layer:
        """The engine's layer of one tile; its errors name the tile when it is not the whole
        layer, because their positions are the tile's."""
        try:
            return self._engine.layer(weights)
        except (TypeError, ValueError) as error:
            if (rows.stop - rows.start, cols.stop - cols.start) == (self.rows, self.cols):
                raise
            raise type(error)(f"in the tile of rows {rows.start}..{rows.stop - 1} and columns "
                              f"{cols.start}..{cols.stop - 1} (positions within the tile): "
                              f"{error}") from None

    def _result_keys(self, rows: slice) -> dict:
        """The bias and requantizer of output rows ``rows``, for a tile that finishes them."""
        keys = {}
        if self.bias is not None:
            keys[BIAS_KEY] = self.bias[rows]
        if self.requant is not None:
            mult = self.requant.mult
            keys.update(self.requant.to_npz())
            keys["mult"] = mult if mult.ndim == 0 else mult[rows]
        return keys

    @property
    def finished_on_chip(self) -> bool:
        """The engine adds the bias and requantizes (one column tile); else the host does."""
        return self.column_tiles == 1

    def check_inputs(self, x) -> np.ndarray:
        """Validate an input batch: int8 ``(B, N)``, with the messages of
        :meth:`Layer.check_inputs <secateur.hdl.engines.base.Layer.check_inputs>` (which reads
        only ``rows`` and ``cols``)."""
        return Layer.check_inputs(self, x)

    def _combine(self, batch: int, outputs) -> np.ndarray:
        """Tile outputs -> the layer's results: the final rows of single-column-tile rows,
        else the int64 sum of the raw partials, the bias and the requantizer."""
        if self.finished_on_chip:
            y = np.zeros((batch, self.rows), dtype=np.int64)
            for tile, tile_y in zip(self.tiles, outputs):
                y[:, tile.rows] = tile_y
            return y
        acc = np.zeros((batch, self.rows), dtype=np.int64)
        for tile, tile_y in zip(self.tiles, outputs):
            acc[:, tile.rows] += tile_y
        return result_path(acc, self.requant, self.bias)

    def reference(self, x: np.ndarray) -> np.ndarray:
        """The golden model: each tile's golden model, combined as the module documentation
        says (``tests/test_tiling.py`` checks it against the engine's model of the whole
        layer)."""
        x = self.check_inputs(x)
        return self._combine(x.shape[0], [tile.layer.reference(x[:, tile.cols])
                                          for tile in self.tiles])

    def load_beats(self) -> int:
        """Load beats of all tiles (counted once: building a large layer's beats takes
        seconds, and a layer does not change)."""
        if self._load_beats is None:
            self._load_beats = sum(len(tile.layer.load_beats()) for tile in self.tiles)
        return self._load_beats

    def report_parameters(self) -> dict:
        """The layer facts of a report: the one tile's, or the whole layer's shape, bias and
        requantizer."""
        if len(self.tiles) == 1:
            return self.tiles[0].layer.report_parameters()
        return {"rows": self.rows, "cols": self.cols,
                "requant": None if self.requant is None else self.requant.as_dict(),
                "bias": self.bias is not None}

    def run(self, simulator, x: np.ndarray) -> "TiledRun":
        """Every tile through ``simulator`` (a :class:`~secateur.sim.runner.BatchSimulator`
        of this engine), one after the other."""
        x = self.check_inputs(x)
        runs = [simulator.run(tile.layer, np.ascontiguousarray(x[:, tile.cols]))
                for tile in self.tiles]
        return TiledRun(self, self._combine(x.shape[0], [run.y for run in runs]), runs)


def add_counters(total: dict, counters: Mapping) -> None:
    """Add one tile's work counters into ``total``: numbers add, dicts add per key, lists
    (the actions without a sourced energy figure) unite; ``None`` (no sourced figure) wins."""
    for key, value in counters.items():
        if key not in total:
            total[key] = dict(value) if isinstance(value, Mapping) else \
                list(value) if isinstance(value, list) else value
        elif isinstance(value, Mapping):
            add_counters(total[key], value)
        elif isinstance(value, list):
            total[key] = sorted(set(total[key]) | set(value))
        elif value is None or total[key] is None:
            total[key] = None
        elif key != "lanes":
            total[key] += value


@dataclass
class TiledRun:
    """The results and measurements of a tiled layer's batch: ``y`` and the per-tile
    :class:`~secateur.sim.runner.RunResult` list ``runs``."""
    tiled: TiledLayer
    y: np.ndarray
    runs: list

    @property
    def cycles(self) -> int:
        return sum(run.cycles for run in self.runs)

    @property
    def load_cycles(self) -> int:
        return sum(run.load_cycles for run in self.runs)

    @property
    def wall_seconds(self) -> float:
        return sum(run.wall_seconds for run in self.runs)

    @functools.cached_property
    def counters(self) -> dict:
        """Every tile's work counters, added (:func:`add_counters`); summed once, since a
        report reads several of them."""
        counters: dict = {}
        for run in self.runs:
            add_counters(counters, run.counters)
        return counters

    def report(self, simulator_name: str) -> dict:
        """The ``secateur run`` report of the whole layer: the first tile's report with every
        count summed over the tiles, and ``tiling`` (tiles, row and column tiles, whether the
        host finishes the rows) and ``load_beats``."""
        tiled, engine = self.tiled, self.tiled.engine
        counters = self.counters
        first = dataclasses.replace(self.runs[0], counters=counters)
        report = first.report(engine, tiled.tiles[0].layer, simulator_name)
        report.update(
            cycles=self.cycles, load_cycles=self.load_cycles,
            utilization=counters["useful_ops"] / (self.cycles * engine.lanes),
            layer=tiled.report_parameters(), load_beats=tiled.load_beats(),
            tiling={"tiles": len(tiled.tiles), "column_tiles": tiled.column_tiles,
                    "finished_on_chip": tiled.finished_on_chip,
                    "host_adds": int(self.y.shape[0] * tiled.rows * (tiled.column_tiles - 1))},
            sim_wall_seconds=round(self.wall_seconds, 4))
        report["sim_cycles_per_second"] = round((self.cycles + self.load_cycles)
                                                / max(report["sim_wall_seconds"], 1e-9))
        return report


def tile_layer(engine: Engine, weights: Mapping[str, np.ndarray]) -> TiledLayer:
    """The tiles of ``weights`` on ``engine`` (:class:`TiledLayer`)."""
    return TiledLayer(engine, weights)
