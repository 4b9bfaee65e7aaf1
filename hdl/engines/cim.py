"""The compute-in-memory engine: a controller that drives ``pe`` RRAM CIM macros bit-serially,
skipping dead input bit-planes and all-zero weight bit-columns (BitS-Net), with an optional
LFSR row mask (twofold sparsity).

Arithmetic
    The golden formula of :mod:`secateur.models.cim` (saturating ``adc_bits``-bit ADC with LSB
    ``2**adc_shift`` over groups of ``rows`` word lines; exactly ``W @ x`` when lossless), then
    the shared requantizer if the layer carries ``mult``/``shift``/``relu``.

Structure
    A top (:class:`CIMComponent`) over ``pe`` identical slices (:class:`CIMSlice`, submodules
    ``pe0`` .. ``pe<P-1>``), one per macro. The top keeps what the macros share: the load
    decoder (which slice a beat writes), the configuration registers, the fill counter, the
    step sequencer (live-step search, mux position, the tags of conversions in flight), the
    drain counter and the result path. A slice holds one behavioral macro
    (:class:`~secateur.hdl.cim_macro.CIMMacro`), reached only through the macro port
    (:class:`~secateur.hdl.cim_macro.MacroSignature`), so a real macro can replace the model,
    and everything kept per macro: its tile register, its own copy of its row tile's inputs,
    its row mask, its column map and its accumulators. The layer is mapped as in
    :mod:`secateur.models.cim`: tile ``(rt, ct)`` in macro ``rt * CT + ct``; the host writes
    each macro's tile coordinates, so the hardware needs no division. No macro index is
    built into a slice, so the Verilog holds ``pe`` modules ``<top>.pe<i>`` with the same
    body, which a synthesis flow can merge into one.

Schedule (per input vector)
    *Fill*: the vector arrives as ``RT * macro_rows / act_lanes`` beats; beat ``k`` belongs to
    row tile ``k // (macro_rows / act_lanes)`` and is written into the input buffer of every
    macro of that row tile.
    *Compute*: steps ``(i, gl)`` (input bit-plane ``i``, local row group ``gl``) are visited in
    increasing ``i * 2**ceil(log2(G)) + gl`` order; a find-first-set over the live-step mask
    jumps over steps whose group has no set input bit in any macro, at no cost. A live step
    takes ``col_mux`` cycles, one ADC start per mux position ``sel``: each macro drives the
    word lines of its group's rows whose input bit ``i`` is set (and that its row mask keeps),
    and enables ADC lane ``j`` only if column ``j * col_mux + sel`` has a set weight bit in the
    group (the host-written column map) and its group is live; a macro with no lane enabled
    does not start.
    *Accumulate*: ``adc_latency`` cycles later each returned code ``q`` becomes
    ``sgn_i * sgn_b * (q << (adc_shift + i + b))`` (``b`` the column's weight bit) and is added
    to the accumulator of that column's output in that macro.
    *Drain*: result beat ``ct`` sums the accumulators of the macros of column tile ``ct``
    (one cycle per beat, through an adder tree with a register per level), through the
    requantizer and an output register; the accumulators are then cleared and the next
    vector is accepted.

Pipeline (why each register is there: ECP5 post-route timing)
    Every stage of the compute path starts and ends at registers. After the last fill beat,
    the slices register their live bits (phase LIVE; the inputs and the row mask are then
    stable until the next fill) and the top loads their OR into its pending-step mask
    (START). The search runs two registers ahead of the issue: each time a step completes,
    the pending mask drops its lowest bit (found per 16-step chunk, the first chunk with
    one winning, so no carry chain spans all steps) into a one-hot register, which
    is encoded into the registered ``step`` the next time; ``step``, ``sel`` and ``issue``
    are registers. Each slice turns the issued step into registered macro inputs one cycle
    later (its issue stage: word lines, mux position, live gate, and a registered column
    map read), so the macro starts one cycle after the issue; the tags of the conversions
    in flight are delayed ``1 + adc_latency`` cycles to meet the results, whose signed
    codes and shifts, then shifted sums, are registered before the accumulator adds them.
    The drain's accumulator clear is registered in each slice. A vector thus costs a
    constant few cycles more than the live steps' ``col_mux`` cycles each (see
    :attr:`CIMEngine.latency`); the cycles per live step are unchanged.

Twofold row mask (``row_mask=lfsr``)
    Writing a macro's ``mask`` word (seed, ``k``) clears its row mask and runs an
    :class:`~secateur.hdl.lfsr.LFSR` over ``n = macro_rows`` for ``k`` cycles, setting the
    row of each state (the convention of :mod:`secateur.models.lfsr`); ``load.ready`` is low
    meanwhile. Only kept rows are written and ever activated.

Loading
    Regions ``config`` (column tiles, input beats per vector, requantizer control), ``tile``
    (per macro: bit 31 used, bits 15..0 row tile, bits 30..16 column tile), ``mask`` (only with
    ``row_mask=lfsr``: bits 15..0 seed, bits 31..16 ``k``), ``cells`` (8 cells of a bit line per
    beat, with a mask of the rows to write), ``colmap`` (per macro, group and mux position:
    the lanes to enable) and ``mult`` (one multiplier per output).
"""

from __future__ import annotations

import functools
import math
import operator
from typing import Mapping

import numpy as np
from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from ...models import cim as cim_model
from ...models.lfsr import lfsr_width
from ..adder_tree import AdderTree
from ..cim_macro import CIMMacro, instantiate_macro
from ..lfsr import LFSR
from ..loadmap import DATA_WIDTH, LoadMap, Region
from ..result_path import CONTROL_DOC, ResultPath, linear_placements, result_regions
from ..shared import SharedModule
from .base import Engine, EngineComponent, Layer, Param

__all__ = ["CIMEngine", "CIMComponent", "CIMSlice", "CIMLayer"]

# Offsets within the `config` region.
CONFIG_COL_TILES, CONFIG_INPUT_BEATS, CONFIG_REQUANT = 0, 1, 2
CONFIG_REGISTERS = 3
# Fields of a `tile` word and of a `mask` word.
TILE_USED_BIT, TILE_COL_LSB = 31, 16
MASK_K_LSB = 16
#: Largest |sum over i, b of sgn * 2**(i + b)| = 255 * 255: the per-row bound of |y|, since
#: every ADC value q is at most the number of rows it sums.
_ROW_GAIN = 255 * 255


def _ceil_log2(value: int) -> int:
    return max(0, (value - 1).bit_length())


class CIMEngine(Engine):
    """Generator of the CIM macro controller and its behavioral macros.

    Parameters
    ----------
    pe : int
        Macros ``P``, in ``[1, 64]``; default 4.
    macro_rows : int
        Word lines per macro, in ``[1, 1024]``; default 128.
    macro_cols : int
        Bit lines per macro, a multiple of 8 in ``[8, 1024]``; default 128.
    adcs : int
        ADCs per macro, in ``[1, min(32, macro_cols)]``, dividing ``macro_cols`` with
        ``macro_cols / adcs`` dividing 8 or a multiple of 8; default ``macro_cols / 8``.
    rows : int
        Rows per conversion ``R``, dividing ``macro_rows``; default ``gcd(8, macro_rows)``.
    adc_bits : int
        ADC resolution ``B``, in ``[1, 8]``; default the lossless ``ceil(log2(R + 1))``.
    adc_shift : int
        ADC LSB exponent ``a``, in ``[0, 8]``; default 0.
    adc_latency : int
        Macro cycles from ADC start to valid, in ``[1, 8]``; default 1.
    act_lanes : int
        int8 lanes per ``act`` beat, dividing ``macro_rows``; default ``gcd(16, macro_rows)``.
    row_mask : str
        ``none`` or ``lfsr`` (twofold sparsity); default ``none``.

    Raises
    ------
    TypeError, ValueError
        If a parameter is unknown, not an integer or out of its range.
    """

    name = "cim"
    top = "cim_engine"
    WEIGHT_KEYS = ("w", "seeds", "k")
    PARAMS = (
        Param("pe", "CIM macros", 4, 1, 64),
        Param("macro_rows", "word lines per macro", 128, 1, 1024),
        Param("macro_cols", "bit lines per macro (8 per output)", 128, 8, 1024),
        Param("adcs", "ADCs per macro, shared by column multiplexing",
              lambda p: max(1, p["macro_cols"] // 8), 1, lambda p: min(32, p["macro_cols"])),
        Param("rows", "rows per conversion R (divides macro_rows)",
              lambda p: math.gcd(8, p["macro_rows"]), 1, lambda p: p["macro_rows"]),
        Param("adc_bits", "ADC resolution B",
              lambda p: min(8, max(1, _ceil_log2(p["rows"] + 1))), 1, cim_model.ADC_BITS_MAX),
        Param("adc_shift", "ADC LSB exponent a (LSB = 2**a)", 0, 0, cim_model.ADC_SHIFT_MAX),
        Param("adc_latency", "macro ADC latency in cycles", 1, 1, 8),
        Param("act_lanes", "int8 lanes per act beat (divides macro_rows)",
              lambda p: math.gcd(16, p["macro_rows"]), 1, lambda p: p["macro_rows"]),
        Param("row_mask", "twofold sparsity: LFSR row mask per macro tile", "none",
              choices=("none", "lfsr")),
    )

    def _check(self, params: dict) -> None:
        try:
            self._geometry = cim_model.Geometry(
                macros=params["pe"], macro_rows=params["macro_rows"],
                macro_cols=params["macro_cols"], adcs=params["adcs"], rows=params["rows"],
                adc_bits=params["adc_bits"], adc_shift=params["adc_shift"])
        except ValueError as error:
            raise ValueError(f"cim engine: {error}") from None
        if params["macro_rows"] % params["act_lanes"]:
            raise ValueError(f"cim engine parameter act_lanes must divide macro_rows = "
                             f"{params['macro_rows']}, not {params['act_lanes']}")

    # Derived sizes -----------------------------------------------------------------------

    @property
    def geometry(self) -> cim_model.Geometry:
        return self._geometry

    @property
    def slots(self) -> int:
        return self._geometry.slots

    @property
    def col_mux(self) -> int:
        return self._geometry.col_mux

    @property
    def groups(self) -> int:
        return self._geometry.groups

    @property
    def beats_per_tile(self) -> int:
        return self.macro_rows // self.act_lanes

    @property
    def acc_width(self) -> int:
        """Signed width of every accumulator: holds ``_ROW_GAIN`` times all inputs' rows."""
        return (_ROW_GAIN * self.pe * self.macro_rows).bit_length() + 1

    # The Engine contract -----------------------------------------------------------------

    @property
    def act_lanes(self) -> int:
        return self._params["act_lanes"]

    @property
    def res_lanes(self) -> int:
        return self.slots

    @property
    def lanes(self) -> int:
        """ADC lanes: conversions the macros can do per cycle."""
        return self.pe * self.adcs

    @property
    def drain_stages(self) -> int:
        """Registers of the drain's adder tree over the macros: one per level."""
        return _ceil_log2(self.pe)

    @property
    def latency(self) -> int:
        # For a vector with no live step: last act beat -> live (1) -> start (1) -> compute
        # (1) -> flush (1) -> drain (1) -> adder tree (drain_stages) -> result path. Each live
        # step adds col_mux cycles; when any step is live, 4 + adc_latency cycles are added
        # once: the search's two registers, the advance, the flush check, the slices' issue
        # stage, the ADC latency and the code and term registers (7 + adc_latency) replace
        # the idle path's compute, flush and drain edges (3); models/perf/cim.compute_edges.
        return 1 + 1 + 1 + 1 + 1 + self.drain_stages + ResultPath.LATENCY

    @property
    def load_map(self) -> LoadMap:
        regions = [
            Region("config", [("register", CONFIG_REGISTERS)],
                   "0: column tiles CT; 1: act beats per vector RT*macro_rows/act_lanes; 2: "
                   + CONTROL_DOC),
            Region("tile", [("macro", self.pe)],
                   "bit 31: macro holds a tile; bits 15..0: its row tile; bits 30..16: its "
                   "column tile"),
        ]
        if self.row_mask == "lfsr":
            regions.append(Region("mask", [("macro", self.pe)],
                                  "twofold row mask: bits 15..0 LFSR seed, bits 31..16 k; "
                                  "writing it regenerates the macro's row mask in k cycles"))
        regions += [
            Region("cells", [("macro", self.pe), ("col", self.macro_cols),
                             ("chunk", math.ceil(self.macro_rows / 8))],
                   "cells of column col (bit b of output ct*slots+col//8 for b = col%8), rows "
                   "8*chunk .. 8*chunk+7: data[7:0] their bits, data[15:8] which to write"),
            Region("colmap", [("macro", self.pe), ("group", self.groups),
                              ("sel", self.col_mux)],
                   "bit j: column j*col_mux+sel has a set weight bit on a kept row of the "
                   "group (ADC lane j converts at mux position sel)"),
            *result_regions(self.pe, self.slots),
        ]
        return LoadMap(regions)

    def derived(self) -> dict:
        return dict(super().derived(), slots=self.slots, col_mux=self.col_mux,
                    groups=self.groups,
                    cells=self.pe * self.macro_rows * self.macro_cols,
                    lossless=cim_model.is_lossless(self.rows, self.adc_bits, self.adc_shift))

    @property
    def macro_module(self) -> str:
        """The Verilog module name of the macro black box."""
        return f"{self.top}_macro"

    def component(self) -> "CIMComponent":
        return CIMComponent(self)

    def shared_modules(self) -> dict:
        return {"slice": SharedModule(f"{self.top}_slice", lambda: CIMSlice(self))}

    def macro_models(self) -> dict:
        return {self.macro_module: lambda: CIMMacro(
            rows=self.macro_rows, cols=self.macro_cols, adcs=self.adcs, adc_bits=self.adc_bits,
            adc_shift=self.adc_shift, latency=self.adc_latency)}

    def layer(self, weights: Mapping[str, np.ndarray]) -> "CIMLayer":
        return CIMLayer(self, weights)


class CIMLayer(Layer):
    """An int8 weight matrix mapped onto the engine's macros.

    Keys: ``w`` (int8 ``(M, N)``); with ``row_mask=lfsr`` also ``seeds`` (one per tile,
    ``(RT, CT)``, each in ``[1, macro_rows]``) and ``k`` (kept rows per tile, scalar or
    ``(RT, CT)``, in ``[1, macro_rows]``); optionally the requantizer keys and ``bias``.

    Raises
    ------
    TypeError
        If ``w`` is missing or not int8, or the seeds or ``k`` are not integers.
    ValueError
        If ``w`` is not 2-D, needs more tiles than macros, violates the row mask (naming the
        position), or ``seeds``/``k`` are missing, superfluous or out of range.
    """

    def __init__(self, engine: CIMEngine, weights: Mapping[str, np.ndarray]):
        super().__init__(engine)
        if "w" not in weights:
            raise TypeError("weights npz has no key 'w' (int8 matrix of shape (M, N))")
        w = np.asarray(weights["w"])
        if w.dtype != np.int8:
            raise TypeError(f"weights w must be int8, not {w.dtype}")
        if w.ndim != 2 or 0 in w.shape:
            raise ValueError(f"weights w must be a 2-D (M, N) matrix with M, N >= 1, not "
                             f"shape {w.shape}")
        geometry = engine.geometry
        self.row_tiles, self.col_tiles = cim_model.tile_grid(w.shape, geometry)
        self.rows, self.cols, self.w = w.shape[0], w.shape[1], w
        has_mask = "seeds" in weights or "k" in weights
        self.keep = None
        self.seeds = self.k = None
        if engine.row_mask == "lfsr":
            if not ("seeds" in weights and "k" in weights):
                raise ValueError("row_mask=lfsr needs weights keys 'seeds' (one per macro tile, "
                                 f"shape ({self.row_tiles}, {self.col_tiles})) and 'k'")
            tiles = (self.row_tiles, self.col_tiles)
            self.seeds = np.asarray(weights["seeds"])
            cim_model.check_twofold(w, geometry, self.seeds, weights["k"])
            self.k = np.broadcast_to(np.asarray(weights["k"]), tiles).astype(np.int64)
            self.keep = cim_model.tile_keep(geometry, tiles, self.seeds, self.k)
        elif has_mask:
            raise ValueError("weights keys 'seeds'/'k' need the engine parameter row_mask=lfsr")
        self._read_result_keys(weights)

    @property
    def input_beats_per_vector(self) -> int:
        return self.row_tiles * self.engine.beats_per_tile

    @property
    def result_beats_per_vector(self) -> int:
        return self.col_tiles

    def _macro(self, row_tile: int, col_tile: int) -> int:
        return row_tile * self.col_tiles + col_tile

    def load_beats(self) -> list[tuple[int, int]]:
        engine, load_map, geometry = self.engine, self.engine.load_map, self.engine.geometry
        beats = [
            (load_map.address("config", register=CONFIG_COL_TILES), self.col_tiles),
            (load_map.address("config", register=CONFIG_INPUT_BEATS), self.input_beats_per_vector),
        ]
        # Output m is lane m % slots of column tile m // slots, the result path's row block.
        beats += self.result_path_beats(CONFIG_REQUANT, linear_placements(self.rows, engine.slots))
        for macro in range(engine.pe):
            word = 0
            if macro < self.row_tiles * self.col_tiles:
                row_tile, col_tile = divmod(macro, self.col_tiles)
                word = (1 << TILE_USED_BIT) | (col_tile << TILE_COL_LSB) | row_tile
            beats.append((load_map.address("tile", macro=macro), word))

        cells, keep = cim_model.tile_cells(self.w, geometry, self.keep)
        colmap = cim_model.column_map(self.w, geometry, self.keep)
        for row_tile, col_tile in np.ndindex(self.row_tiles, self.col_tiles):
            macro = self._macro(row_tile, col_tile)
            if self.keep is not None:
                beats.append((load_map.address("mask", macro=macro),
                              int(self.seeds[row_tile, col_tile])
                              | (int(self.k[row_tile, col_tile]) << MASK_K_LSB)))
            # Eight cells of a bit line per beat; only kept rows are written.
            chunks = math.ceil(geometry.macro_rows / 8)
            column_cells = np.zeros((chunks * 8, geometry.macro_cols), dtype=bool)
            column_cells[:geometry.macro_rows] = cells[row_tile, col_tile]
            kept = np.zeros(chunks * 8, dtype=bool)
            kept[:geometry.macro_rows] = keep[row_tile, col_tile]
            for chunk in range(chunks):
                mask = int(np.packbits(kept[8 * chunk:8 * chunk + 8], bitorder="little")[0])
                if not mask:
                    continue
                for column in range(geometry.macro_cols):
                    bits = int(np.packbits(column_cells[8 * chunk:8 * chunk + 8, column],
                                           bitorder="little")[0])
                    beats.append((load_map.address("cells", macro=macro, col=column,
                                                   chunk=chunk), bits | mask << 8))
            lanes = colmap[row_tile, col_tile].reshape(geometry.groups, geometry.adcs,
                                                       geometry.col_mux)
            for group in range(geometry.groups):
                for sel in range(geometry.col_mux):
                    word = sum(1 << lane for lane in np.flatnonzero(lanes[group, :, sel]))
                    beats.append((load_map.address("colmap", macro=macro, group=group, sel=sel),
                                  word))
        return beats

    def _input_lanes(self, vector: np.ndarray) -> np.ndarray:
        padded = np.zeros(self.row_tiles * self.engine.macro_rows, dtype=np.int8)
        padded[:self.cols] = vector
        return padded.reshape(self.input_beats_per_vector, self.engine.act_lanes)

    def _result_rows(self, lanes: np.ndarray) -> np.ndarray:
        return lanes.reshape(-1)[:self.rows]

    def reference(self, x: np.ndarray) -> np.ndarray:
        engine = self.engine
        return cim_model.reference(self.w, self.check_inputs(x), engine.rows, engine.adc_bits,
                                   engine.adc_shift, self.requant, self.bias)

    def counters(self, x: np.ndarray) -> dict:
        """Work of a batch (:func:`secateur.models.cim.schedule`) and its energy.

        ``useful_ops`` are the ADC conversions done, so ``utilization`` is the fraction of
        ADC-lane cycles that convert. ``ideal_cycles`` is the compute cycles plus the input
        beats (the phases are sequential).

        Energy (:mod:`secateur.models.energy`, from the schedule's counts): ``adc_conversions``
        conversions at ``adc_bits`` (``adc_conversion``) and ``row_activations``
        (``row_activation``; the RRAM cells' read current has no sourced figure and is not
        counted); per conversion, a shift-add into an ``acc_width``-bit accumulator
        (``add_bit`` + ``register_bit``; the shift is wiring); per compute cycle, each used
        macro reads its ``adcs``-bit column-map word (``sram_bit``); per vector, every used
        macro latches its row tile's ``8 * macro_rows`` input bits (``register_bit``), the
        drain adds the ``RT`` macros' accumulators of each of the ``CT * slots`` result lanes
        (:func:`~secateur.models.energy.tree_add_bits`) and, with requantization, requantizes
        them (:meth:`~secateur.models.energy.Actions.requantize`). Weight (cell) writes and
        the twofold mask's LFSR run at load time and are not counted. ``dense_energy_pj`` is
        the same accounting of the dense bit-serial schedule's counts (``dense_*``).
        """
        from ...models import energy

        x = self.check_inputs(x)
        engine = self.engine
        batch = x.shape[0]
        work = cim_model.schedule(self.w, x, engine.geometry, self.keep)
        drained = batch * self.result_beats_per_vector * engine.res_lanes

        def actions(conversions, activations, cycles):
            counted = energy.Actions(
                adc_conversion=conversions, row_activation=activations,
                sram_bit=cycles * work["tiles"] * engine.adcs,
                register_bit=batch * work["tiles"] * engine.macro_rows * 8,
                add_bit=drained * energy.tree_add_bits(self.row_tiles, engine.acc_width))
            counted.accumulate(conversions, engine.acc_width)
            counted.result_path(drained, engine.acc_width, self.requant, self.bias)
            return counted

        params = {"adc_bits": engine.adc_bits}
        dense = energy.estimate(actions(work["dense_adc_conversions"],
                                        work["dense_row_activations"],
                                        work["dense_compute_cycles"]), params)
        return {
            "useful_ops": work["adc_conversions"],
            "lanes": engine.lanes,
            "ideal_cycles": work["compute_cycles"] + batch * self.input_beats_per_vector,
            **work,
            **energy.estimate(actions(work["adc_conversions"], work["row_activations"],
                                      work["compute_cycles"]), params),
            "dense_energy_pj": dense["energy_pj"],
            "macs": batch * self.rows * self.cols,
        }


class CIMSlice(wiring.Component):
    """The logic of one macro: the macro itself and everything the controller keeps per macro.

    One slice is instantiated per macro, all of them of the one module ``<top>_slice``
    (:meth:`CIMEngine.shared_modules`): the slices of an engine are the same hardware (no
    macro index is built in: the top decodes which slice a load beat addresses, and the
    host writes each slice's tile coordinates). A slice holds the macro black box, its tile
    register (used, row tile, column tile), its copy of its row tile's inputs, its row mask
    (with ``row_mask=lfsr``, an :class:`~secateur.hdl.lfsr.LFSR` regenerating it), its
    column map and its accumulators, and computes its live steps, its word lines and ADC
    enables, its shift-add and its contribution to the drained result beat.

    Parameters
    ----------
    engine : CIMEngine
        The generator whose sizes the slice takes.

    Members
    -------
    load_data : ``In(32)``
        The load beat's data word.
    tile_write, cell_write, colmap_write : ``In(1)``
        The load beat writes this slice's ``tile`` word, cells or column map word.
    mask_write : ``In(1)``
        With ``row_mask=lfsr`` only: the beat writes this slice's ``mask`` word.
    cell_col : ``In(range(macro_cols))``, cell_chunk : ``In(range(ceil(macro_rows / 8)))``
        The ``col`` and ``chunk`` fields of a ``cells`` beat.
    colmap_addr : ``In(range(groups * 2**ceil(log2(col_mux))))``
        Column map word of a ``colmap`` beat: ``sel`` in the low bits, ``group`` above.
    fill : ``In(1)``
        An act beat is accepted; ``beat_tile`` (``In(range(pe))``) and ``beat_in_tile``
        (``In(range(macro_rows / act_lanes))``) say where it belongs, ``act``
        (``In(ArrayLayout(unsigned(8), act_lanes))``) carries it.
    live : ``Out(8 * 2**ceil(log2(groups)))``
        Registered, one cycle behind the inputs and the row mask: bit
        ``i * 2**ceil(log2(groups)) + gl``, the slice holds a tile and group ``gl`` has a
        kept row whose input bit ``i`` is set.
    issue : ``In(1)``, step : ``In(range(len(live)))``, sel : ``In(range(col_mux))``
        The step being issued and its mux position; the slice registers the macro inputs
        they make (and reads its column map), so the macro starts one cycle later.
    tag_valid : ``In(1)``, tag_plane : ``In(3)``, tag_sel : ``In(range(col_mux))``
        The issued step, ``1 + adc_latency`` cycles later: the macro's codes are shifted
        into registers and added to the accumulators two cycles later.
    clear : ``In(1)``
        Clears the accumulators in the next cycle (after the last drained beat).
    drain_tile : ``In(range(pe))``, drain : ``Out(ArrayLayout(signed(acc_width), slots))``
        The accumulators if the slice holds a tile of column tile ``drain_tile``, else 0.
    busy : ``Out(1)``
        With ``row_mask=lfsr`` only: the row mask is being regenerated.
    """

    def __init__(self, engine: CIMEngine):
        self._engine = engine
        pe, rows, col_mux = engine.pe, engine.macro_rows, engine.col_mux
        members = {
            "load_data": In(DATA_WIDTH),
            "tile_write": In(1),
            "cell_write": In(1),
            "colmap_write": In(1),
            "cell_col": In(range(max(2, engine.macro_cols))),
            "cell_chunk": In(range(max(2, -(-rows // 8)))),
            "colmap_addr": In(range(self.colmap_depth(engine))),
            "fill": In(1),
            "beat_tile": In(range(max(2, pe))),
            "beat_in_tile": In(range(max(2, engine.beats_per_tile))),
            "act": In(data.ArrayLayout(unsigned(8), engine.act_lanes)),
            "live": Out(self.steps(engine)),
            "issue": In(1),
            "step": In(range(self.steps(engine))),
            "sel": In(range(max(2, col_mux))),
            "tag_valid": In(1),
            "tag_plane": In(3),
            "tag_sel": In(range(max(2, col_mux))),
            "clear": In(1),
            "drain_tile": In(range(max(2, pe))),
            "drain": Out(data.ArrayLayout(signed(engine.acc_width), engine.slots)),
        }
        if engine.row_mask == "lfsr":
            members.update(mask_write=In(1), busy=Out(1))
        super().__init__(members)

    @staticmethod
    def sel_bits(engine: CIMEngine) -> int:
        """Address bits of the mux position in a column map address (at least 1)."""
        return max(1, _ceil_log2(engine.col_mux))

    @classmethod
    def colmap_depth(cls, engine: CIMEngine) -> int:
        """Words of the column map; at least two, so that the address is never zero bits."""
        return max(2, engine.groups << cls.sel_bits(engine))

    @staticmethod
    def steps(engine: CIMEngine) -> int:
        """Step indices ``i * 2**ceil(log2(groups)) + gl``."""
        return 8 << _ceil_log2(engine.groups)

    def elaborate(self, platform):
        engine = self._engine
        rows_per_macro, slots, adcs = engine.macro_rows, engine.slots, engine.adcs
        group_rows, groups, col_mux = engine.rows, engine.groups, engine.col_mux
        acc_width = engine.acc_width
        group_bits = _ceil_log2(groups)
        sel_bits = self.sel_bits(engine)
        load_data = self.load_data
        m = Module()

        macro = instantiate_macro(m, name="macro", module=engine.macro_module,
                                  rows=rows_per_macro, cols=engine.macro_cols, adcs=adcs,
                                  adc_bits=engine.adc_bits)

        # Tile register and host writes ---------------------------------------------------
        used = Signal()
        row_tile = Signal(range(max(2, engine.pe)))
        col_tile = Signal(range(max(2, engine.pe)))
        with m.If(self.tile_write):
            m.d.sync += [used.eq(load_data[TILE_USED_BIT]),
                         row_tile.eq(load_data[:16]),
                         col_tile.eq(load_data[TILE_COL_LSB:TILE_USED_BIT])]
        m.d.comb += [
            macro.wr_en.eq(self.cell_write),
            macro.wr_col.eq(self.cell_col),
            macro.wr_chunk.eq(self.cell_chunk),
            macro.wr_data.eq(load_data[:8]),
            macro.wr_mask.eq(load_data[8:16]),
        ]
        # A registered read: the word of the step issued in one cycle drives the macro in the
        # next (the issue stage), so no combinational path runs from the sequencer through
        # the memory to the macro. Bit ``adcs`` of a word says it has a lane set, so that
        # ``adc_start`` needs no OR over the lanes after the read.
        m.submodules.colmap = colmap = memory.Memory(
            shape=unsigned(adcs + 1), depth=self.colmap_depth(engine), init=[])
        colmap_write = colmap.write_port()
        colmap_read = colmap.read_port()
        m.d.comb += [
            colmap_write.addr.eq(self.colmap_addr),
            colmap_write.data.eq(Cat(load_data[:adcs], load_data[:adcs].any())),
            colmap_write.en.eq(self.colmap_write),
        ]

        # Row mask --------------------------------------------------------------------------
        if engine.row_mask == "lfsr":
            width = lfsr_width(rows_per_macro)
            row_mask = Signal(rows_per_macro)
            seed = Signal(width)
            remaining = Signal(range(rows_per_macro + 1), name="mask_remaining")
            first = Signal(name="mask_first")
            m.submodules.lfsr = lfsr = LFSR(max_width=width)
            running = remaining != 0
            m.d.comb += [lfsr.n.eq(rows_per_macro), lfsr.seed.eq(seed),
                         lfsr.start.eq(first), lfsr.advance.eq(running)]
            with m.If(running):
                m.d.sync += [remaining.eq(remaining - 1), first.eq(0),
                             row_mask.eq(row_mask | Cat(lfsr.state == row + 1
                                                        for row in range(rows_per_macro)))]
            with m.If(self.mask_write):
                m.d.sync += [row_mask.eq(0), seed.eq(load_data[:width]), first.eq(1),
                             remaining.eq(load_data[MASK_K_LSB:])]
            m.d.comb += self.busy.eq(running)
        else:
            row_mask = Const((1 << rows_per_macro) - 1, rows_per_macro)

        # Fill: the act beat is written if it belongs to this slice's row tile --------------
        # The inputs are kept as bit-planes, word ``p`` holding bit ``p`` of every row: a
        # step's word lines are then one plane masked, not one bit selected per row (the
        # same multiplexers in hardware; the slice's Verilog shrank from 7,842 to 2,871 lines
        # at the default geometry).
        # Not reset: every vector fills all rows of its row tile before they are used, and
        # the reset net already reaches every control and accumulator register.
        lanes = engine.act_lanes
        planes = [Signal(rows_per_macro, name=f"plane{bit}", reset_less=True)
                  for bit in range(8)]
        with m.If(self.fill & (row_tile == self.beat_tile)):
            for bit, plane_word in enumerate(planes):
                beat_bits = Cat(self.act[lane][bit] for lane in range(lanes))
                target = (plane_word if engine.beats_per_tile == 1
                          else plane_word.word_select(self.beat_in_tile, lanes))
                m.d.sync += target.eq(beat_bits)
        kept = [Signal(rows_per_macro, name=f"kept{bit}") for bit in range(8)]
        m.d.comb += [word.eq(plane_word & row_mask) for word, plane_word in zip(kept, planes)]

        # Compute ---------------------------------------------------------------------------
        # The live bits are registered: the inputs and the row mask do not change during
        # COMPUTE, and the top waits a cycle after the last fill beat (phase LIVE) before it
        # reads them, so the search never sees a stale bit and no path runs from the input
        # registers through the search to the macro.
        for bit in range(8):
            for group in range(groups):
                m.d.sync += self.live[(bit << group_bits) + group].eq(
                    used & kept[bit][group * group_rows:(group + 1) * group_rows].any())
        # Issue stage: the step the top issues (registered there) is decoded into registered
        # macro inputs, one cycle later; the column map word is read at the same edge.
        plane = self.step[group_bits:]
        group = self.step[:group_bits] if group_bits else Const(0, 1)
        group_lines = Cat((group == index).replicate(group_rows) for index in range(groups))
        gate = Signal()             # the issued step's group is live in this macro
        # Sampled by the macro only with adc_start, which `gate` (reset) qualifies.
        word_lines = Signal(rows_per_macro, reset_less=True)
        col_sel = Signal.like(self.sel, name="col_sel", reset_less=True)
        m.d.sync += [
            gate.eq(self.issue & self.live.bit_select(self.step, 1)),
            word_lines.eq(Array(kept)[plane] & group_lines),
            col_sel.eq(self.sel),
        ]
        m.d.comb += [
            colmap_read.addr.eq(Cat(self.sel[:sel_bits], group)),
            # A dead group converts nothing; a dead column is skipped (its lane is off).
            macro.wl.eq(word_lines),
            macro.col_sel.eq(col_sel),
            macro.adc_en.eq(Mux(gate, colmap_read.data[:adcs], 0)),
            macro.adc_start.eq(gate & colmap_read.data[adcs]),
        ]

        # Shift-add: lane j at mux position sel converted column j * col_mux + sel, bit
        # (j * col_mux + sel) % 8 of output slot (j * col_mux + sel) // 8. Three registered
        # stages, so that a sign, a shifter and an adder never share a cycle: the signed code
        # and its shift (``code``, ``shift``; the sign is applied to the narrow code, and the
        # shift then sign-extends it), the shifted codes of a slot summed (``term``), the
        # accumulator. Both registers are zero unless a conversion of the issued steps
        # returns, so the accumulator adds them unconditionally.
        clearing = Signal()
        m.d.sync += clearing.eq(self.clear)
        tag_plane, tag_sel = self.tag_plane, self.tag_sel
        shifted = {slot: [] for slot in range(slots)}
        for lane in range(adcs):
            first = lane * col_mux
            for slot in sorted({(first + offset) // 8 for offset in range(col_mux)}):
                if col_mux >= 8:
                    # The lane spans col_mux / 8 outputs; sel's high bits pick one.
                    hit = tag_sel[3:] == slot - first // 8 if col_mux > 8 else Const(1)
                    bit = tag_sel[:3]
                else:
                    hit = Const(1)
                    bit = (first % 8 + tag_sel)[:3]
                code = macro.adc_data[lane]
                negative = (tag_plane == 7) ^ (bit == 7)
                signed_code = Signal(signed(engine.adc_bits + 1), name=f"code{slot}_{lane}")
                shift = Signal(4, name=f"shift{slot}_{lane}")
                m.d.sync += [
                    signed_code.eq(Mux(self.tag_valid & macro.adc_valid & hit,
                                       Mux(negative, -code, code), 0)),
                    shift.eq(tag_plane + bit),
                ]
                shifted[slot].append((signed_code << engine.adc_shift) << shift)
        for slot in range(slots):
            acc = Signal(signed(acc_width), name=f"acc{slot}")
            if shifted[slot]:
                term = Signal(signed(acc_width), name=f"term{slot}")
                m.d.sync += [term.eq(sum(shifted[slot])), acc.eq(acc + term)]
            # The clear is registered: it fans out to every accumulator bit, and the next
            # vector's first codes arrive many cycles after the last drained beat.
            with m.If(clearing):
                m.d.sync += acc.eq(0)
            # Drain: this slice's share of the result beat of column tile drain_tile.
            m.d.comb += self.drain[slot].eq(Mux(used & (col_tile == self.drain_tile), acc, 0))
        return m


class CIMComponent(EngineComponent):
    """The CIM engine's hardware; see the module documentation."""

    def __init__(self, engine: CIMEngine):
        self._engine = engine
        super().__init__(load_map=engine.load_map, act_lanes=engine.act_lanes,
                         res_lanes=engine.res_lanes, res_width=engine.res_width)

    def elaborate(self, platform):
        engine = self._engine
        pe, slots, col_mux = engine.pe, engine.slots, engine.col_mux
        group_bits = _ceil_log2(engine.groups)
        steps = CIMSlice.steps(engine)
        sel_bits = CIMSlice.sel_bits(engine)
        m = Module()

        slice_module = engine.shared_modules()["slice"]
        pes = [slice_module.instantiate(m, f"pe{index}") for index in range(pe)]

        # Configuration registers ---------------------------------------------------------
        # Kept as the index of the last beat, and whether any beat is configured, so that
        # the fill and drain counters compare with a register instead of through a subtractor.
        last_col_tile = Signal(range(pe + 1))
        last_input_beat = Signal(range(pe * engine.beats_per_tile + 1))
        configured = Signal()
        # The drain issues a beat with a result path credit, so that its adder trees never
        # stall: the trees are the credits' lead.
        m.submodules.result_path = result_path = ResultPath(lanes=slots, acc_width=engine.acc_width,
                                                            row_blocks=pe,
                                                            lead=engine.drain_stages)

        # Phases: fill -> live -> start -> compute -> flush -> drain -> fill. LIVE lets the
        # slices register the live bits of the inputs just filled; START loads them into the
        # step search.
        FILL, LIVE, START, COMPUTE, FLUSH, DRAIN = range(6)
        phase = Signal(range(6))
        beat = Signal(range(max(2, pe * engine.beats_per_tile)))
        beat_tile = Signal(range(max(2, pe)))
        beat_in_tile = Signal(range(max(2, engine.beats_per_tile)))
        # The drain sums the slices' shares in a pipelined adder tree, one register per level.
        tree_stages = engine.drain_stages
        # Result beats drained but not yet delivered sit in the adder tree's registers or in
        # the result path, whose credits stall the drain when they are all taken.
        outstanding = Signal(range(result_path.capacity + 1))
        generating = Signal()

        # Load port: decoded once, each slice told which of its words a beat writes ---------
        idle = (phase == FILL) & (beat == 0) & (outstanding == 0) & ~generating
        m.d.comb += self.load.ready.eq(idle)
        load_data = self.load.payload.data
        regions = self.load_map.decode(self.load.payload.addr)
        loading = self.load.valid & self.load.ready

        selected, fields = regions["config"]
        with m.If(loading & selected):
            with m.Switch(fields["register"]):
                with m.Case(CONFIG_COL_TILES):
                    m.d.sync += last_col_tile.eq(load_data - 1)
                with m.Case(CONFIG_INPUT_BEATS):
                    m.d.sync += [last_input_beat.eq(load_data - 1),
                                 configured.eq(load_data != 0)]

        tile_selected, tile_fields = regions["tile"]
        cells_selected, cell_fields = regions["cells"]
        colmap_selected, colmap_fields = regions["colmap"]
        for index, pe_slice in enumerate(pes):
            m.d.comb += [
                pe_slice.load_data.eq(load_data),
                pe_slice.tile_write.eq(loading & tile_selected & (tile_fields["macro"] == index)),
                pe_slice.cell_write.eq(loading & cells_selected
                                       & (cell_fields["macro"] == index)),
                pe_slice.cell_col.eq(cell_fields["col"]),
                pe_slice.cell_chunk.eq(cell_fields["chunk"]),
                pe_slice.colmap_write.eq(loading & colmap_selected
                                         & (colmap_fields["macro"] == index)),
                pe_slice.colmap_addr.eq(Cat(colmap_fields["sel"][:sel_bits],
                                            colmap_fields["group"])),
            ]
        if engine.row_mask == "lfsr":
            mask_selected, mask_fields = regions["mask"]
            for index, pe_slice in enumerate(pes):
                m.d.comb += pe_slice.mask_write.eq(loading & mask_selected
                                                   & (mask_fields["macro"] == index))
            m.d.comb += generating.eq(Cat(pe_slice.busy for pe_slice in pes).any())

        result_path.decode_loads(m, regions, loading, load_data, CONFIG_REQUANT)

        # Fill: the act beat goes to every slice, which keeps it if it is of its row tile ---
        filling = self.act.valid & self.act.ready
        m.d.comb += self.act.ready.eq(configured & (phase == FILL) & ~generating)
        for pe_slice in pes:
            m.d.comb += [pe_slice.fill.eq(filling), pe_slice.beat_tile.eq(beat_tile),
                         pe_slice.beat_in_tile.eq(beat_in_tile),
                         pe_slice.act.eq(self.act.payload)]
        with m.If(filling):
            with m.If(beat == last_input_beat):
                m.d.sync += [beat.eq(0), beat_tile.eq(0), beat_in_tile.eq(0), phase.eq(LIVE)]
            with m.Else():
                m.d.sync += beat.eq(beat + 1)
                with m.If(beat_in_tile == engine.beats_per_tile - 1):
                    m.d.sync += [beat_in_tile.eq(0), beat_tile.eq(beat_tile + 1)]
                with m.Else():
                    m.d.sync += beat_in_tile.eq(beat_in_tile + 1)

        with m.If(phase == LIVE):
            m.d.sync += phase.eq(START)

        # Compute: the live steps in order, one mux position per cycle. The search is a
        # two-register pipeline that runs ahead of the issued step and advances when it
        # completes: `pending` holds the live steps not yet taken, `next_step` (one-hot) the
        # next step, and `step` (binary), `sel` and `issue` the step being issued, all
        # registers; so the only logic between registers is the search for the lowest
        # pending step or a one-hot encoder.
        any_live = Signal(steps)
        m.d.comb += any_live.eq(functools.reduce(operator.or_, [pe_slice.live for pe_slice in pes]))
        pending = Signal(steps)
        # The lowest pending step, found per chunk of 16 steps and taken from the first chunk
        # that has one: a carry chain over all steps (128 by default) took 11 ns on ECP5.
        chunk = min(steps, 16)
        chunk_any = Signal(steps // chunk)
        chunk_lowest = []
        for index in range(steps // chunk):
            word = pending[index * chunk:(index + 1) * chunk]
            word_lowest = Signal(chunk, name=f"chunk_lowest{index}")
            m.d.comb += [chunk_any[index].eq(word.any()),
                         word_lowest.eq(word & (~word + 1))]
            chunk_lowest.append(word_lowest)
        lowest = Signal(steps)
        m.d.comb += lowest.eq(Cat(Mux(chunk_any[index] & ~chunk_any[:index].any(), word_lowest, 0)
                                  if index else Mux(chunk_any[0], word_lowest, 0)
                                  for index, word_lowest in enumerate(chunk_lowest)))
        next_step = Signal(steps)               # one-hot
        next_valid = Signal()
        step = Signal(range(steps))
        sel = Signal(range(max(2, col_mux)))
        issue = Signal()
        advance = ~issue | (sel == col_mux - 1)
        plane = step[group_bits:]
        with m.If(phase == START):
            m.d.sync += [pending.eq(any_live), phase.eq(COMPUTE)]
        with m.If(phase == COMPUTE):
            with m.If(advance):
                m.d.sync += [
                    pending.eq(pending & ~lowest),
                    next_step.eq(lowest),
                    next_valid.eq(chunk_any.any()),
                    step.eq(Cat(Cat(next_step[index] for index in range(steps)
                                    if index >> bit & 1).any()
                                for bit in range(len(step)))),
                    issue.eq(next_valid),
                    sel.eq(0),
                ]
            with m.Else():
                m.d.sync += sel.eq(sel + 1)
            with m.If(~issue & ~next_valid & ~chunk_any.any()):
                m.d.sync += phase.eq(FLUSH)
        for pe_slice in pes:
            m.d.comb += [pe_slice.issue.eq(issue), pe_slice.step.eq(step), pe_slice.sel.eq(sel)]

        # The step of each conversion in flight, delayed like the macros' results: one cycle
        # of the slices' issue stage, then the ADC latency. Two more cycles (the slices' code
        # and term registers) before the accumulators hold every result.
        tag_valid, tag_plane, tag_sel = issue, plane, sel
        in_flight = []
        for stage in range(1 + engine.adc_latency):
            valid_next = Signal(name=f"tag_valid{stage}")
            plane_next = Signal(3, name=f"tag_plane{stage}")
            sel_next = Signal.like(sel, name=f"tag_sel{stage}")
            m.d.sync += [valid_next.eq(tag_valid), plane_next.eq(tag_plane), sel_next.eq(tag_sel)]
            tag_valid, tag_plane, tag_sel = valid_next, plane_next, sel_next
            in_flight.append(valid_next)
        for name in ("code_valid", "term_valid"):
            valid_next = Signal(name=name)
            m.d.sync += valid_next.eq(in_flight[-1])
            in_flight.append(valid_next)
        with m.If((phase == FLUSH) & ~Cat(in_flight).any()):
            m.d.sync += phase.eq(DRAIN)
        for pe_slice in pes:
            m.d.comb += [pe_slice.tag_valid.eq(tag_valid), pe_slice.tag_plane.eq(tag_plane),
                         pe_slice.tag_sel.eq(tag_sel)]

        # Drain: one result beat per column tile, the sum of the slices' shares, through an
        # adder tree per lane (one register per level; the first tree carries the column tile
        # and the valid bit for all) --------------------------------------------------------
        drain_tile = Signal(range(max(2, pe)))
        load_result = Signal()
        last_beat = Signal()
        trees = [AdderTree(fan_in=pe, input_width=engine.acc_width, stages=tree_stages,
                           tag_shape=unsigned(len(drain_tile))) for _ in range(slots)]
        m.d.comb += load_result.eq(result_path.issue(m, phase == DRAIN))
        for slot, tree in enumerate(trees):
            m.submodules[f"drain_tree{slot}"] = tree
            m.d.comb += [
                tree.i.valid.eq(load_result),
                # The sum fits: acc_width holds the output of all pe * macro_rows rows.
                result_path.i.payload.acc[slot].eq(tree.o.payload.sum),
                tree.o.ready.eq(1),
            ]
            m.d.comb += [tree.i.payload.operands[index].eq(pe_slice.drain[slot])
                         for index, pe_slice in enumerate(pes)]
        m.d.comb += [
            trees[0].i.payload.tag.eq(drain_tile),
            result_path.i.valid.eq(trees[0].o.valid),
            result_path.i.payload.row_block.eq(trees[0].o.payload.tag),
            last_beat.eq(drain_tile == last_col_tile),
        ]
        for pe_slice in pes:
            m.d.comb += [pe_slice.drain_tile.eq(drain_tile),
                         pe_slice.clear.eq(load_result & last_beat)]
        with m.If(load_result):
            with m.If(last_beat):
                m.d.sync += [drain_tile.eq(0), phase.eq(FILL)]
            with m.Else():
                m.d.sync += drain_tile.eq(drain_tile + 1)
        wiring.connect(m, result_path.o, wiring.flipped(self.res))
        # Result beats drained but not yet delivered; the load port waits for zero.
        m.d.sync += outstanding.eq(outstanding + load_result - (self.res.valid & self.res.ready))
        return m
