"""The permuted-diagonal FC engine (PermDNN): column-wise, zero-skipping, p-fold compressed.

Arithmetic
    ``y[b, m] = sum_n W[m, n] * x[b, n]`` exactly (golden model:
    :func:`secateur.models.permdiag.reference`), then the shared requantizer if the layer
    carries ``mult``/``shift``/``relu``.

Weight structure (:mod:`secateur.models.permdiag`, stated here as it is there)
    ``W`` is ``(M, N)`` with ``M`` and ``N`` multiples of ``p``. Block ``(bi, bj)`` has an
    offset ``k`` in ``[0, p)``. Its only possible non-zeros are at rows ``bi*p + c`` and
    columns ``bj*p + (c + k) mod p``, for ``c = 0..p-1``. A block whose values are all zero,
    or partly zero, is legal. ``p`` is a property of the layer, in ``[min_p, max_p]``.

Storage
    Only the ``M*N/p`` diagonal values and one offset per block, no indices. The value that
    block row ``bi`` applies to input column ``j`` is stored at the column's position (the
    diagonal rotated by the offset), so a weight read needs no offset; the offset is read in
    parallel and only steers the product to its row.

Schedule (column-wise, as in PermDNN)
    Every non-zero activation ``x[j]`` is broadcast to ``L = pe/slots * mults`` multipliers,
    and every block row has exactly one target row for it,
    ``bi*p + (j mod p - k[bi, j // p]) mod p``. Multiplier ``l`` of a slot handles block rows
    ``l, l + L, l + 2L, ...``, one per cycle: an activation takes ``passes = ceil((M/p) / L)``
    cycles, and a zero activation takes none (the sequencer scans a bitmap of the non-zero
    inputs with a find-first-set, so skipped zeros cost nothing).

PEs and slots
    ``pe`` PEs of ``mults`` multipliers each, grouped into ``slots`` slots of ``pe/slots``
    PEs. The slots work on different activations at once (``slots`` non-zeros per pick), which
    is what keeps the multipliers busy when ``M/p`` is small. Column blocks are dealt to slots
    round robin (block ``bj`` belongs to slot ``bj mod slots``), and a slot stores the weights
    and offsets of its own columns only, so nothing is stored twice. Two slots can update the
    same output row in one cycle, so every slot accumulates into private accumulators and the
    drain adds the ``slots`` partial sums (an adder tree per result lane).

Load balance
    A slot's columns hold a random number of non-zeros, so a slot that only served its own
    columns would finish late. Slot ``g`` may also take activations of its left neighbour
    ``g - 1`` (a ring): the owner takes its columns lowest first, the helper highest first,
    through a second read port of the neighbour's weight and activation memories. At every
    pick a slot takes from the neighbour if the neighbour has more non-zeros left than it
    has, else from itself. The slots pick in lock step, every ``passes`` cycles, so one pass
    counter serves them all, and the picks depend only on the per-slot counts
    (:meth:`PermDiagLayer.pick_rounds` replays them exactly).

Cycles and utilization
    A vector takes ``rounds * passes`` cycles in the PEs (1 if it is all zero), where
    ``rounds`` is the number of picks; consecutive vectors follow without a gap while their
    inputs and accumulator banks are ready. Utilization is
    ``useful MACs / (cycles * pe * mults)`` with ``useful MACs = (non-zero inputs) * M/p``
    per vector: each non-zero input meets exactly one weight per block row.

Pipeline
    pick (bitmaps and counts of the non-zero inputs) -> A: activation read, in the first
    pass -> B: weight and offset reads -> R: their read data registered (a block RAM's
    output and a multiply do not fit one cycle together) -> T (in the PEs): target row,
    registered (its carry chains and the accumulator read do not either) -> C: product,
    accumulator read -> D: accumulator write. An activation is stored with its local
    column's block ``jl // p`` and position ``jl mod p``, counted as the inputs stream in, so
    no divider sits in the pick path. The accumulator read is transparent to the write, so
    back-to-back updates of one row need no stall, and an update writes only its own
    accumulator (write enables per accumulator). Accumulators are double-banked: a vector
    accumulates into one bank while the other is drained, summed across slots by adder trees
    and cleared as it is read, then requantized by the shared
    :class:`~secateur.hdl.result_path.ResultPath`.

Input and output formats (what :class:`PermDiagLayer` packs)
    An ``act`` beat carries ``act_per_slot`` activations for each slot: lane
    ``g*act_per_slot + i`` of beat ``t`` is local column ``t*act_per_slot + i`` of slot
    ``g``; local column ``jl`` of slot ``g`` is global column ``(jb*slots + g)*p + rho`` with
    ``jb, rho = divmod(jl, p)``. A ``res`` beat is accumulator word ``w`` of every multiplier:
    lane ``e*L + l`` holds entry ``d = w*drain_pack + e`` of multiplier ``l``, which is row
    ``((d // p)*L + l)*p + d mod p``.

Widths (derived, so nothing can overflow)
    A row has at most ``N/p <= max_cols // min_p`` non-zero weights, each product is in
    ``[-16256, 16384]``, so accumulators (private partial sums and their total alike) take
    ``bit_length(2**14 * (max_cols // min_p)) + 1`` bits. The drain's adder trees widen by
    ``ceil(log2(slots))`` bits and are truncated back, which is exact because the true sum
    fits.

Reset
    Configuration registers, bitmaps and pipelines are cleared; then the accumulator banks
    are scrubbed to zero (``act.ready`` stays low meanwhile), since a reset in mid-stream
    leaves partial sums in them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from ...models import permdiag as permdiag_model
from ..adder_tree import AdderTree
from ..loadmap import DATA_WIDTH, LoadMap, Region
from ..result_path import CONTROL_DOC, ResultPath, result_regions
from ..shared import SharedModule
from .base import Engine, EngineComponent, Layer, Param

__all__ = ["Geometry", "PermDiagEngine", "PermDiagComponent", "PermDiagPE", "PermDiagLayer"]

#: Weights are int8; products of two int8 values are in [-16256, 16384].
WEIGHT_BITS = 8
PRODUCT_MAX = 128 * 128

# Offsets within the `config` region; the requantizer control word is ResultPath's.
(CONFIG_P, CONFIG_PASSES, CONFIG_LAST_LANES, CONFIG_SLOT_COLS, CONFIG_SLOT_COL_BLOCKS,
 CONFIG_BEATS, CONFIG_DRAIN_WORDS, CONFIG_REQUANT) = range(8)
CONFIG_REGISTERS = 8


def _levels(count: int) -> int:
    return math.ceil(math.log2(count)) if count > 1 else 0


def _is_power_of_two(value: int) -> bool:
    return value >= 1 and value & (value - 1) == 0


def _span(count: int) -> range:
    """A range for a counter or address of ``count`` values; at least one bit wide, so that
    no port or register is zero bits wide."""
    return range(max(2, count))


@dataclass(frozen=True)
class Geometry:
    """How a layer of shape ``(rows, cols)`` and block size ``p`` maps onto an engine.

    Attributes
    ----------
    row_blocks, col_blocks : int
        ``M/p`` and ``N/p``.
    passes : int
        Cycles per activation: ``ceil(row_blocks / L)``.
    last_lanes : int
        Multipliers with a block row in the last pass: ``row_blocks - (passes - 1) * L``.
    slot_col_blocks : int
        Column blocks per slot, ``ceil(col_blocks / slots)`` (the last slots may have fewer).
    slot_cols : int
        Local columns per slot, ``slot_col_blocks * p``.
    beats : int
        ``act`` beats per vector, ``ceil(slot_cols / act_per_slot)``.
    drain_words : int
        ``res`` beats per vector, ``ceil(passes * p / drain_pack)``.
    """
    rows: int
    cols: int
    p: int
    row_blocks: int
    col_blocks: int
    passes: int
    last_lanes: int
    slot_col_blocks: int
    slot_cols: int
    beats: int
    drain_words: int

    @property
    def weight_words(self) -> int:
        """Weight memory words used per PE: ``passes * slot_cols``."""
        return self.passes * self.slot_cols

    @property
    def offset_words(self) -> int:
        """Offset memory words used per PE: ``passes * slot_col_blocks``."""
        return self.passes * self.slot_col_blocks

    @property
    def acc_entries(self) -> int:
        """Accumulators used per multiplier and bank: ``passes * p``."""
        return self.passes * self.p


class PermDiagEngine(Engine):
    """Generator of the permuted-diagonal engine.

    Parameters
    ----------
    pe : int
        Processing elements, in ``[1, 256]``; default 32.
    mults : int
        Multipliers per PE, in ``[1, 64]``; default 8 (as in the PermDNN paper).
    slots : int
        Activations picked at once (groups of ``pe/slots`` PEs), in ``[1, pe]``, a divisor of
        ``pe``; default ``pe/2`` for an even ``pe``, else ``pe``.
    max_rows, max_cols : int
        Largest ``M`` and ``N``, in ``[1, 65536]``; default 512.
    min_p, max_p : int
        Range of the block size ``p`` of a layer, ``1 <= min_p <= max_p <= 64``; defaults 4
        and 16. ``min_p`` sizes the weight memories (a smaller ``p`` stores more values).
    act_per_slot : int
        Activations per slot in one ``act`` beat (``act_lanes = slots * act_per_slot``), a
        power of two in ``[1, 64]``; default 4.
    drain_pack : int
        Accumulators per memory word, so results drained per multiplier and cycle
        (``res_lanes = L * drain_pack``), a power of two in ``[1, 8]``; default 1. Layers
        with few block rows per multiplier and sparse inputs finish a vector in fewer cycles
        than its drain takes; 2 or 4 keep the drain off the critical path for them.
    tree_stages : int
        Pipeline registers in each drain adder tree (``slots`` operands), in
        ``[0, max(1, ceil(log2(slots)))]``; default ``ceil(ceil(log2(slots)) / 2)``.

    Raises
    ------
    TypeError, ValueError
        If a parameter is unknown, not an integer, out of its range, ``slots`` does not
        divide ``pe``, ``min_p > max_p``, a power of two is not one, or no layer fits
        (``min_p`` above ``max_rows`` or ``max_cols``).
    """

    name = "permdiag"
    top = "permdiag_engine"
    WEIGHT_KEYS = ("w", "p")
    PARAMS = (
        Param("pe", "processing elements", 32, 1, 256),
        Param("mults", "multipliers per PE", 8, 1, 64),
        Param("slots", "activations picked at once (groups of pe/slots PEs); divides pe",
              lambda p: p["pe"] // 2 if p["pe"] % 2 == 0 else p["pe"], 1, lambda p: p["pe"]),
        Param("max_rows", "largest number of output rows M", 512, 1, 65536),
        Param("max_cols", "largest number of input columns N", 512, 1, 65536),
        Param("min_p", "smallest block size p", 4, 1, 64),
        Param("max_p", "largest block size p", 16, 1, 64),
        Param("act_per_slot", "activations per slot and act beat (a power of two)", 4, 1, 64),
        Param("drain_pack", "accumulators per word, drained per multiplier and cycle "
              "(a power of two)", 1, 1, 8),
        Param("tree_stages", "pipeline registers per drain adder tree",
              lambda p: math.ceil(_levels(p["slots"]) / 2), 0,
              lambda p: max(1, _levels(p["slots"]))),
    )

    def _check(self, params: dict) -> None:
        if params["pe"] % params["slots"]:
            raise ValueError(f"permdiag engine parameter slots must divide pe = {params['pe']}, "
                             f"not {params['slots']}")
        if params["min_p"] > params["max_p"]:
            raise ValueError(f"permdiag engine parameter min_p must be <= max_p = "
                             f"{params['max_p']}, not {params['min_p']}")
        for name in ("act_per_slot", "drain_pack"):
            if not _is_power_of_two(params[name]):
                raise ValueError(f"permdiag engine parameter {name} must be a power of two, "
                                 f"not {params[name]}")
        if params["min_p"] > min(params["max_rows"], params["max_cols"]):
            raise ValueError(f"permdiag engine parameter min_p = {params['min_p']} exceeds "
                             f"max_rows or max_cols; no layer would fit")
        self._maxima = self._compute_maxima()

    # Geometry ----------------------------------------------------------------------------

    @property
    def pes_per_slot(self) -> int:
        return self.pe // self.slots

    @property
    def slot_lanes(self) -> int:
        """``L``: the multipliers of one slot, each handling one block row per cycle."""
        return self.pes_per_slot * self.mults

    def geometry(self, rows: int, cols: int, p: int) -> Geometry:
        """The mapping of an ``(rows, cols)`` layer of block size ``p`` (``p`` divides both)."""
        lanes = self.slot_lanes
        row_blocks, col_blocks = rows // p, cols // p
        passes = math.ceil(row_blocks / lanes)
        slot_col_blocks = math.ceil(col_blocks / self.slots)
        slot_cols = slot_col_blocks * p
        return Geometry(rows=rows, cols=cols, p=p, row_blocks=row_blocks, col_blocks=col_blocks,
                        passes=passes, last_lanes=row_blocks - (passes - 1) * lanes,
                        slot_col_blocks=slot_col_blocks, slot_cols=slot_cols,
                        beats=math.ceil(slot_cols / self.act_per_slot),
                        drain_words=math.ceil(passes * p / self.drain_pack))

    def _compute_maxima(self) -> dict:
        # Every size grows with M and N, so the largest layer of each p bounds it; the
        # maximum over p sizes the memories.
        shapes = [self.geometry(self.max_rows // p * p, self.max_cols // p * p, p)
                  for p in range(self.min_p, self.max_p + 1)
                  if p <= self.max_rows and p <= self.max_cols]
        return {
            "passes": max(g.passes for g in shapes),
            "slot_cols": max(g.slot_cols for g in shapes),
            "slot_col_blocks": max(g.slot_col_blocks for g in shapes),
            "weight_depth": max(g.weight_words for g in shapes),
            "offset_depth": max(g.offset_words for g in shapes),
            "acc_words": max(g.drain_words for g in shapes),
            "beats": max(g.beats for g in shapes),
        }

    @property
    def passes_max(self) -> int:
        return self._maxima["passes"]

    @property
    def slot_cols_max(self) -> int:
        """Bitmap width of a slot: its most local columns over all legal layers."""
        return self._maxima["slot_cols"]

    @property
    def slot_col_blocks_max(self) -> int:
        return self._maxima["slot_col_blocks"]

    @property
    def weight_depth(self) -> int:
        """Words (one int8 per multiplier) of each PE's weight memory."""
        return self._maxima["weight_depth"]

    @property
    def offset_depth(self) -> int:
        """Words (one offset per multiplier) of each PE's offset memory."""
        return self._maxima["offset_depth"]

    @property
    def acc_words(self) -> int:
        """Words (``drain_pack`` accumulators) of each multiplier's accumulator bank."""
        return self._maxima["acc_words"]

    @property
    def act_words(self) -> int:
        """Words (``act_per_slot`` activations) of each bank of a slot's activation memory."""
        return self._maxima["beats"]

    @property
    def offset_width(self) -> int:
        return max(1, (self.max_p - 1).bit_length())

    @property
    def block_index_width(self) -> int:
        """Bits of a local column block index ``jl // p`` for any local column ``jl``."""
        return max(1, ((self.slot_cols_max - 1) // self.min_p).bit_length())

    @property
    def max_row_nonzeros(self) -> int:
        """Most non-zero weights in one row: ``max_cols // min_p``."""
        return max(1, self.max_cols // self.min_p)

    @property
    def acc_width(self) -> int:
        return (PRODUCT_MAX * self.max_row_nonzeros).bit_length() + 1

    @property
    def weight_chunks(self) -> int:
        return math.ceil(self.mults / (DATA_WIDTH // WEIGHT_BITS))

    @property
    def offsets_per_chunk(self) -> int:
        return DATA_WIDTH // self.offset_width

    @property
    def offset_chunks(self) -> int:
        return math.ceil(self.mults / self.offsets_per_chunk)

    # The Engine contract -----------------------------------------------------------------

    @property
    def act_lanes(self) -> int:
        return self.slots * self.act_per_slot

    @property
    def res_lanes(self) -> int:
        return self.slot_lanes * self.drain_pack

    @property
    def lanes(self) -> int:
        """Multipliers: ``pe * mults``."""
        return self.pe * self.mults

    @property
    def latency(self) -> int:
        """Cycles from the last ``act`` beat of an all-zero vector to its first ``res`` beat
        (engine idle, no stalls); each pick round of a vector with non-zeros adds ``passes``.

        Bank full (1), vector start (1), retire (1), the rest of the wait for the last
        accumulator write (4: it is in stage D five cycles after the last pass), drain read
        (1), adder tree, then the shared result path (``ResultPath.LATENCY``: input, result
        and operand registers, requantizer, output register).
        """
        return 1 + 1 + 1 + 4 + 1 + self.tree_stages + ResultPath.LATENCY

    @property
    def load_map(self) -> LoadMap:
        return LoadMap([
            Region("config", [("register", CONFIG_REGISTERS)],
                   "0: p; 1: passes ceil((M/p)/L); 2: multipliers with a block row in the last "
                   "pass; 3: local columns per slot; 4: local column blocks per slot; 5: act "
                   "beats per vector; 6: res beats per vector; 7: " + CONTROL_DOC),
            Region("weights", [("pe", self.pe), ("addr", self.weight_depth),
                               ("chunk", self.weight_chunks)],
                   "PE q, word pass*local_columns + local_column, multipliers 4*chunk.. "
                   "4*chunk+3 as int8 bytes (multiplier m of PE h of a slot is lane "
                   "h*mults + m and handles block row pass*L + lane)"),
            Region("offsets", [("pe", self.pe), ("addr", self.offset_depth),
                               ("chunk", self.offset_chunks)],
                   f"PE q, word pass*local_column_blocks + local_block, offsets of multipliers "
                   f"{self.offsets_per_chunk}*chunk.. as {self.offset_width}-bit fields"),
            # ResultPath's field names; its rows map to res beats and lanes as documented.
            *result_regions(self.acc_words, self.res_lanes,
                            "the output row result_row(M, N, p, row_block, lane) of the "
                            "manifest's format (words where it is -1 are never read)"),
        ])

    def derived(self) -> dict:
        return dict(super().derived(), slot_lanes=self.slot_lanes, passes_max=self.passes_max,
                    slot_cols_max=self.slot_cols_max, weight_depth=self.weight_depth,
                    offset_depth=self.offset_depth, acc_words=self.acc_words,
                    act_words=self.act_words,
                    offset_width=self.offset_width,
                    weight_bits=self.pe * self.weight_depth * self.mults * WEIGHT_BITS,
                    offset_bits=self.pe * self.offset_depth * self.mults * self.offset_width,
                    accumulator_bits=2 * self.lanes * self.acc_words * self.drain_pack
                    * self.acc_width)

    def component(self) -> "PermDiagComponent":
        return PermDiagComponent(self)

    def shared_modules(self) -> dict:
        return {"pe": SharedModule(f"{self.top}_pe", lambda: PermDiagPE(
            mults=self.mults, weight_depth=self.weight_depth, offset_depth=self.offset_depth,
            max_p=self.max_p, acc_words=self.acc_words, acc_width=self.acc_width,
            drain_pack=self.drain_pack, second_port=self.slots > 1))}

    def layer(self, weights: Mapping[str, np.ndarray]) -> "PermDiagLayer":
        return PermDiagLayer(self, weights)


class PermDiagLayer(Layer):
    """A permuted-diagonal weight matrix mapped onto this engine.

    Raises
    ------
    TypeError
        If ``w`` or ``p`` is missing, ``w`` is not int8 or ``p`` not an integer.
    ValueError
        If ``p`` is outside ``[min_p, max_p]``, ``w`` exceeds ``max_rows`` x ``max_cols``, its
        shape is not a multiple of ``p`` or it is not permuted-diagonal (naming the first
        offending block), or the requantization keys are incomplete or out of range.
    """

    def __init__(self, engine: PermDiagEngine, weights: Mapping[str, np.ndarray]):
        super().__init__(engine)
        for key, meaning in (("w", "int8 permuted-diagonal matrix of shape (M, N)"),
                             ("p", "block size, an integer")):
            if key not in weights:
                raise TypeError(f"weights npz has no key {key!r} ({meaning})")
        p_array = np.asarray(weights["p"])
        if p_array.ndim != 0 or p_array.dtype.kind not in "iu":
            raise TypeError(f"weights p must be one integer (the block size), not "
                            f"{p_array.dtype} of shape {p_array.shape}")
        p = int(p_array)
        if not engine.min_p <= p <= engine.max_p:
            raise ValueError(f"weights p = {p}; this engine takes block sizes in "
                             f"[{engine.min_p}, {engine.max_p}] (min_p, max_p)")
        w = np.asarray(weights["w"])
        if w.dtype != np.int8:
            raise TypeError(f"weights w must be an int8 matrix, not {w.dtype}")
        if w.ndim == 2 and (w.shape[0] > engine.max_rows or w.shape[1] > engine.max_cols):
            raise ValueError(f"weights w has shape {w.shape}; this engine takes at most "
                             f"{engine.max_rows} x {engine.max_cols} (max_rows x max_cols)")
        self.diag, self.offsets = permdiag_model.compress(w, p)
        self.w, self.p = w, p
        self.rows, self.cols = w.shape
        self._read_result_keys(weights)
        self.geometry = engine.geometry(self.rows, self.cols, p)
        self._input_columns = self._local_column_map()
        self._result_map = self._result_row_map()

    # Mappings ----------------------------------------------------------------------------

    def _local_column_map(self) -> np.ndarray:
        """Global column of each ``act`` lane of each beat, or -1 for padding."""
        engine, geo = self.engine, self.geometry
        beat, lane = np.meshgrid(np.arange(geo.beats), np.arange(engine.act_lanes),
                                 indexing="ij")
        slot, index = divmod(lane, engine.act_per_slot)
        local = beat * engine.act_per_slot + index
        block = (local // self.p) * engine.slots + slot
        column = block * self.p + local % self.p
        return np.where((local < geo.slot_cols) & (block < geo.col_blocks), column, -1)

    def _result_row_map(self) -> np.ndarray:
        """Output row of each ``res`` lane of each beat, or -1 for padding."""
        engine, geo = self.engine, self.geometry
        word, lane = np.meshgrid(np.arange(geo.drain_words), np.arange(engine.res_lanes),
                                 indexing="ij")
        entry, multiplier = divmod(lane, engine.slot_lanes)
        index = word * engine.drain_pack + entry
        block_row = (index // self.p) * engine.slot_lanes + multiplier
        row = block_row * self.p + index % self.p
        return np.where((index < geo.acc_entries) & (block_row < geo.row_blocks), row, -1)

    def slot_counts(self, x: np.ndarray) -> np.ndarray:
        """Non-zero inputs of each slot, ``(B, slots)``: what the sequencer balances."""
        x = self.check_inputs(x)
        slot_of_column = (np.arange(self.cols) // self.p) % self.engine.slots
        counts = np.zeros((x.shape[0], self.engine.slots), dtype=np.int64)
        for slot in range(self.engine.slots):
            counts[:, slot] = np.count_nonzero(x[:, slot_of_column == slot], axis=1)
        return counts

    def pick_rounds(self, x: np.ndarray) -> np.ndarray:
        """The number of picks the sequencer makes for each vector, replaying its rule.

        At a pick, slot ``g`` takes from its left neighbour ``g - 1`` if that one has more
        non-zeros left than ``g`` has, else from its own columns if any are left; the owner
        always gets its column, the helper only if a second one is left.
        """
        counts = self.slot_counts(x)
        helping = self.engine.slots > 1
        rounds = np.zeros(counts.shape[0], dtype=np.int64)
        while counts.any():
            rounds += counts.any(axis=1)
            left = np.roll(counts, 1, axis=1)
            want_left = (left > counts) if helping else np.zeros_like(counts, dtype=bool)
            want_own = ~want_left & (counts > 0)
            take_left = want_left & ((left >= 2) | ~np.roll(want_own, 1, axis=1))
            counts = counts - want_own - np.roll(take_left, -1, axis=1)
        return rounds

    # The Layer contract ------------------------------------------------------------------

    @property
    def input_beats_per_vector(self) -> int:
        return self.geometry.beats

    @property
    def result_beats_per_vector(self) -> int:
        return self.geometry.drain_words

    def load_beats(self) -> list[tuple[int, int]]:
        engine, geo, load_map = self.engine, self.geometry, self.engine.load_map

        def config(register, value):
            return (load_map.address("config", register=register), int(value))

        beats = [config(CONFIG_P, self.p), config(CONFIG_PASSES, geo.passes),
                 config(CONFIG_LAST_LANES, geo.last_lanes),
                 config(CONFIG_SLOT_COLS, geo.slot_cols),
                 config(CONFIG_SLOT_COL_BLOCKS, geo.slot_col_blocks),
                 config(CONFIG_BEATS, geo.beats), config(CONFIG_DRAIN_WORDS, geo.drain_words)]
        beats += self.result_path_beats(CONFIG_REQUANT, [
            (word, lane, int(row) if row >= 0 else None)
            for (word, lane), row in np.ndenumerate(self._result_map)])

        # weights[q, a, m] / offsets[q, b, m] for PE q, word a or b, multiplier m.
        weights, offsets = self.memory_images()
        per_chunk = DATA_WIDTH // WEIGHT_BITS
        for q in range(engine.pe):
            for address in range(geo.weight_words):
                lanes = weights[q, address]
                for chunk in range(engine.weight_chunks):
                    word = sum((int(v) & 0xFF) << (WEIGHT_BITS * i) for i, v in
                               enumerate(lanes[chunk * per_chunk:(chunk + 1) * per_chunk]))
                    beats.append((load_map.address("weights", pe=q, addr=address, chunk=chunk),
                                  word))
        per_chunk, width = engine.offsets_per_chunk, engine.offset_width
        for q in range(engine.pe):
            for address in range(geo.offset_words):
                lanes = offsets[q, address]
                for chunk in range(engine.offset_chunks):
                    word = sum(int(v) << (width * i) for i, v in
                               enumerate(lanes[chunk * per_chunk:(chunk + 1) * per_chunk]))
                    beats.append((load_map.address("offsets", pe=q, addr=address, chunk=chunk),
                                  word))
        return beats

    def memory_images(self) -> tuple[np.ndarray, np.ndarray]:
        """What each PE's memories hold: weights ``(pe, passes*slot_cols, mults)`` int8 and
        offsets ``(pe, passes*slot_col_blocks, mults)``, zero where no block row or column
        exists. PE ``q`` is PE ``q % (pe/slots)`` of slot ``q // (pe/slots)``."""
        engine, geo, p = self.engine, self.geometry, self.p
        q, pass_, local, mult = np.meshgrid(np.arange(engine.pe), np.arange(geo.passes),
                                            np.arange(geo.slot_cols), np.arange(engine.mults),
                                            indexing="ij")
        slot, pe_in_slot = divmod(q, engine.pes_per_slot)
        block_row = pass_ * engine.slot_lanes + pe_in_slot * engine.mults + mult
        local_block, rho = divmod(local, p)
        col_block = local_block * engine.slots + slot
        valid = (block_row < geo.row_blocks) & (col_block < geo.col_blocks)
        bi, bj = np.where(valid, block_row, 0), np.where(valid, col_block, 0)
        offset = self.offsets[bi, bj]
        # The value block row bi applies to column bj*p + rho sits at diagonal position c.
        value = self.diag[bi, bj, (rho - offset) % p]
        weights = np.where(valid, value, 0).astype(np.int8)
        weights = weights.reshape(engine.pe, geo.weight_words, engine.mults)
        # One offset per block: the entry of the block's first local column.
        first = (local % p == 0)
        offsets = np.where(valid, offset, 0)[first].reshape(
            engine.pe, geo.passes, geo.slot_col_blocks, engine.mults)
        return weights, offsets.reshape(engine.pe, geo.offset_words, engine.mults)

    def _input_lanes(self, vector: np.ndarray) -> np.ndarray:
        columns = self._input_columns
        return np.where(columns >= 0, vector[np.maximum(columns, 0)], 0).astype(np.int8)

    def _result_rows(self, lanes: np.ndarray) -> np.ndarray:
        rows = np.zeros(self.rows, dtype=np.int64)
        valid = self._result_map >= 0
        rows[self._result_map[valid]] = lanes[valid]
        return rows

    def reference(self, x: np.ndarray) -> np.ndarray:
        return permdiag_model.reference(self.w, self.check_inputs(x), self.p,
                                        requant=self.requant, bias=self.bias)

    def counters(self, x: np.ndarray) -> dict:
        """Work of a batch.

        ``useful_ops`` counts one multiply-accumulate per non-zero input and block row (each
        non-zero input meets exactly one weight of every block row); ``dense_ops`` the
        whole ``M x N`` matrix. ``ideal_cycles`` is the sequencer's own count: ``rounds *
        passes`` per vector, 1 for an all-zero vector.

        Energy (:mod:`secateur.models.energy`; ``L = slot_lanes`` multipliers per slot, ``Z``
        the non-zero inputs of the batch, ``R = result_beats_per_vector * res_lanes`` drained
        lanes per vector): per non-zero input, one activation word of ``8 * act_per_slot``
        bits read, and in each of its ``passes`` cycles one weight word (``8 * mults`` bits)
        and one offset word (``mults * offset_width`` bits) per PE of its slot read
        (``sram_bit``); per useful MAC (``useful_ops``), one int8 product (``int8_mult``),
        an accumulator word of ``drain_pack * acc_width`` bits read and ``acc_width`` bits
        written (``sram_bit``) and an ``acc_width``-bit add (``add_bit``). Per vector,
        ``input_beats_per_vector`` activation words written, and the drain reads and clears
        ``slots`` partial sums per lane (``sram_bit``) and adds them
        (:func:`~secateur.models.energy.tree_add_bits`); with requantization, ``R`` lanes
        (:meth:`~secateur.models.energy.Actions.requantize`). The pick logic is not counted.
        """
        from ...models import energy

        x = self.check_inputs(x)
        engine, geo = self.engine, self.geometry
        nonzero = int(np.count_nonzero(x))
        rounds = self.pick_rounds(x)
        batch, macs = x.shape[0], nonzero * geo.row_blocks
        drained = batch * self.result_beats_per_vector * engine.res_lanes
        actions = energy.Actions(
            sram_bit=nonzero * (8 * engine.act_per_slot + geo.passes * engine.slot_lanes
                                * (WEIGHT_BITS + engine.offset_width))
            + macs * (engine.drain_pack + 1) * engine.acc_width
            + batch * self.input_beats_per_vector * engine.act_lanes * 8
            + drained * engine.slots * 2 * engine.acc_width,
            int8_mult=macs,
            add_bit=macs * engine.acc_width
            + drained * energy.tree_add_bits(engine.slots, engine.acc_width))
        actions.result_path(drained, engine.acc_width, self.requant, self.bias)
        return {
            "useful_ops": nonzero * geo.row_blocks,
            "nonzero_inputs": nonzero,
            "dense_ops": x.shape[0] * self.rows * self.cols,
            "lanes": engine.lanes,
            "pick_rounds": int(rounds.sum()),
            "ideal_cycles": int(np.where(rounds > 0, rounds * geo.passes, 1).sum()),
            "weight_bits": self.rows * self.cols // self.p * WEIGHT_BITS,
            "offset_bits": geo.row_blocks * geo.col_blocks * max(1, (self.p - 1).bit_length()),
            **energy.estimate(actions),
        }

    def report_parameters(self) -> dict:
        return dict(super().report_parameters(), p=self.p, passes=self.geometry.passes)


class PermDiagPE(wiring.Component):
    """One PE: ``mults`` multipliers with their weights, offsets and accumulators.

    Each cycle the PE takes one activation ``op.x`` and, per multiplier ``m``, the weight
    ``op.weights[m]`` and block offset ``op.offsets[m]`` that its slot read (from this PE's
    memories or from the left neighbour's) and registered (stage R); it adds the product to
    accumulator ``op.base + (op.rho - offset) mod p`` of bank ``op.bank``. The PE computes
    that index in the cycle ``op`` arrives (stage T) and registers it; the accumulator is
    read and the product formed in the next cycle (stage C), and the accumulator is written
    in the one after (stage D). The read is transparent to the write, so consecutive updates
    of one accumulator need no stall.

    Parameters
    ----------
    mults : int
        Multipliers, ``>= 1``.
    weight_depth, offset_depth, acc_words : int
        Memory depths, ``>= 1``.
    max_p : int
        Largest block size, ``>= 1``.
    acc_width : int
        Signed accumulator width, ``>= 16``.
    drain_pack : int
        Accumulators per memory word, a power of two.
    second_port : bool
        Add read port B on the weights and offsets, for the slot to the right.

    Raises
    ------
    TypeError
        If a size is not an integer.
    ValueError
        If a size is out of its range.

    Members
    -------
    weight_write : ``In(StructLayout({"addr", "data": ArrayLayout(signed(8), mults), "en": mults}))``
    offset_write : ``In(StructLayout({"addr", "data": ArrayLayout(unsigned(offset_width), mults), "en": mults}))``
    read_a, read_b : ``In(StructLayout({"weight_addr", "offset_addr"}))``
        Read every cycle; the data appears in ``out_a``/``out_b`` one cycle later.
    out_a, out_b : ``Out(StructLayout({"weights", "offsets"}))``
    op : ``In(StructLayout({"valid": mults, "weights", "offsets", "x": signed(8), "rho", "base", "bank": 1}))``
    p : ``In(range(max_p + 1))``
    drain : ``In(StructLayout({"read", "addr", "bank", "shown", "zero": 2, "zero_addr"}))``
        ``read`` reads word ``addr`` of bank ``bank``; from the next cycle ``drained`` shows
        the last word read from bank ``shown``, held while that bank is not read again.
        ``zero[b]`` writes zeros to word ``zero_addr`` of bank ``b`` in the next cycle (the
        drain clears what it read; after a reset both banks are scrubbed). A bank is never
        zeroed while it accumulates.
    drained : ``Out(ArrayLayout(ArrayLayout(signed(acc_width), drain_pack), mults))``
    """

    def __init__(self, *, mults: int, weight_depth: int, offset_depth: int, max_p: int,
                 acc_words: int, acc_width: int, drain_pack: int, second_port: bool):
        for name, value in (("mults", mults), ("weight_depth", weight_depth),
                            ("offset_depth", offset_depth), ("max_p", max_p),
                            ("acc_words", acc_words), ("acc_width", acc_width),
                            ("drain_pack", drain_pack)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"PermDiagPE {name} must be an integer, not {value!r}")
            if value < 1:
                raise ValueError(f"PermDiagPE {name} must be >= 1, not {value}")
        if acc_width < 2 * WEIGHT_BITS:
            raise ValueError(f"PermDiagPE acc_width must be >= 16, not {acc_width}")
        if not _is_power_of_two(drain_pack):
            raise ValueError(f"PermDiagPE drain_pack must be a power of two, not {drain_pack}")
        self._mults, self._max_p = mults, max_p
        self._weight_depth, self._offset_depth, self._acc_words = \
            weight_depth, offset_depth, acc_words
        self._acc_width, self._drain_pack = acc_width, drain_pack
        self._second_port = bool(second_port)
        offset_width = max(1, (max_p - 1).bit_length())
        weights = data.ArrayLayout(signed(WEIGHT_BITS), mults)
        offsets = data.ArrayLayout(unsigned(offset_width), mults)
        read = data.StructLayout({"weight_addr": _span(weight_depth),
                                  "offset_addr": _span(offset_depth)})
        out = data.StructLayout({"weights": weights, "offsets": offsets})
        members = {
            "weight_write": In(data.StructLayout({"addr": _span(weight_depth), "data": weights,
                                                  "en": mults})),
            "offset_write": In(data.StructLayout({"addr": _span(offset_depth), "data": offsets,
                                                  "en": mults})),
            "read_a": In(read),
            "out_a": Out(out),
            "op": In(data.StructLayout({
                "valid": mults, "weights": weights, "offsets": offsets,
                "x": signed(WEIGHT_BITS), "rho": _span(max_p),
                "base": _span(acc_words * drain_pack), "bank": 1})),
            "p": In(range(max_p + 1)),
            "drain": In(data.StructLayout({
                "read": 1, "addr": _span(acc_words), "bank": 1, "shown": 1,
                "zero": 2, "zero_addr": _span(acc_words)})),
            "drained": Out(data.ArrayLayout(
                data.ArrayLayout(signed(acc_width), drain_pack), mults)),
        }
        if self._second_port:
            members.update(read_b=In(read), out_b=Out(out))
        super().__init__(members)

    @property
    def mults(self) -> int:
        return self._mults

    @property
    def second_port(self) -> bool:
        return self._second_port

    def elaborate(self, platform):
        m = Module()
        mults, pack = self._mults, self._drain_pack
        entry_bits = _levels(pack)

        weight_mem = memory.Memory(shape=data.ArrayLayout(signed(WEIGHT_BITS), mults),
                                   depth=self._weight_depth, init=[])
        offset_mem = memory.Memory(shape=self.offset_write.data.shape(),
                                   depth=self._offset_depth, init=[])
        m.submodules.weight_mem = weight_mem
        m.submodules.offset_mem = offset_mem
        for mem, write in ((weight_mem, self.weight_write), (offset_mem, self.offset_write)):
            port = mem.write_port(granularity=1)
            m.d.comb += [port.addr.eq(write.addr), port.data.eq(write.data),
                         port.en.eq(write.en)]
        read_ports = [(self.read_a, self.out_a)]
        if self._second_port:
            read_ports.append((self.read_b, self.out_b))
        for read, out in read_ports:
            weight_read, offset_read = weight_mem.read_port(), offset_mem.read_port()
            m.d.comb += [weight_read.addr.eq(read.weight_addr),
                         offset_read.addr.eq(read.offset_addr),
                         out.weights.eq(weight_read.data), out.offsets.eq(offset_read.data)]

        op, drain = self.op, self.drain
        width = self._acc_width
        # Stage T: the target accumulator, index base + (rho - offset) mod p: three carry
        # chains, registered with the weight so that stage C's accumulator read address and
        # multiply start from registers. Per-multiplier state, in one register per stage for
        # the whole PE.
        target = data.StructLayout({"valid": 1, "word": _span(self._acc_words),
                                    "entry": _span(pack), "weight": signed(WEIGHT_BITS)})
        t_stage = Signal(data.ArrayLayout(target, mults))
        c_target = Signal(data.ArrayLayout(target, mults))
        c_x = Signal(signed(WEIGHT_BITS))
        c_bank = Signal()
        m.d.sync += [c_target.eq(t_stage), c_x.eq(op.x), c_bank.eq(op.bank)]
        for lane in range(mults):
            difference = Signal(signed(op.rho.shape().width + 1), name=f"difference{lane}")
            index = Signal(op.base.shape(), name=f"index{lane}")
            m.d.comb += [difference.eq(op.rho - op.offsets[lane]),
                         index.eq(op.base + Mux(difference[-1], difference + self.p,
                                                difference))]
            m.d.comb += [t_stage[lane].valid.eq(op.valid[lane]),
                         t_stage[lane].word.eq(index[entry_bits:]),
                         t_stage[lane].entry.eq(index[:entry_bits] if entry_bits else 0),
                         t_stage[lane].weight.eq(op.weights[lane])]

        stage = data.StructLayout({"valid": 1, "word": _span(self._acc_words),
                                   "entry": _span(pack), "product": signed(2 * WEIGHT_BITS)})
        c_stage = Signal(data.ArrayLayout(stage, mults))
        d_stage = Signal(data.ArrayLayout(stage, mults))
        d_bank = Signal()
        m.d.sync += [d_stage.eq(c_stage), d_bank.eq(c_bank)]

        # The zero command is registered here, a cycle late (its word is not read again
        # until the bank's next vector), so that the drain's control reaches one register
        # per PE and not, in the same cycle, the write port of every accumulator.
        zero = Signal.like(drain.zero)
        zero_addr = Signal.like(drain.zero_addr)
        m.d.sync += [zero.eq(drain.zero), zero_addr.eq(drain.zero_addr)]

        # Decodes shared by all multipliers, as vectors with one bit per multiplier.
        drain_reads = [Signal(name=f"drain_reads{bank}") for bank in range(2)]
        read_en = [Signal(mults, name=f"read_en{bank}") for bank in range(2)]
        write_valid = [Signal(mults, name=f"write_valid{bank}") for bank in range(2)]
        c_valid = Cat(*(c_target[lane].valid for lane in range(mults)))
        d_valid = Cat(*(d_stage[lane].valid for lane in range(mults)))
        for bank in range(2):
            this_bank = c_bank if bank else ~c_bank
            m.d.comb += [
                drain_reads[bank].eq(drain.read & (drain.bank if bank else ~drain.bank)),
                read_en[bank].eq(drain_reads[bank].replicate(mults)
                                 | (c_valid & this_bank.replicate(mults))),
                write_valid[bank].eq(d_valid & (d_bank if bank else ~d_bank).replicate(mults)),
            ]

        for lane in range(mults):
            # Stage C: the product and the accumulator read.
            word = c_target[lane].word
            m.d.comb += [c_stage[lane].valid.eq(c_target[lane].valid),
                         c_stage[lane].word.eq(word), c_stage[lane].entry.eq(c_target[lane].entry),
                         c_stage[lane].product.eq(c_target[lane].weight * c_x)]

            reads, writes = [], []
            for bank in range(2):
                mem = memory.Memory(shape=data.ArrayLayout(signed(width), pack),
                                    depth=self._acc_words, init=[])
                m.submodules[f"acc{lane}_bank{bank}"] = mem
                # Entry by entry, so that an update writes only its accumulator.
                write = mem.write_port(granularity=1)
                read = mem.read_port(transparent_for=(write,))
                reads.append(read.data.as_value())
                writes.append(write)
                m.d.comb += [read.addr.eq(Mux(drain_reads[bank], drain.addr, word)),
                             read.en.eq(read_en[bank][lane])]

            # Stage D: one adder serves both banks (only one bank accumulates at a time;
            # the other is drained and zeroed, or both are scrubbed).
            here = d_stage[lane]
            words = Mux(d_bank, reads[1], reads[0])
            old = _select(words, here.entry, width, pack)
            total = Signal(signed(width), name=f"total{lane}")
            m.d.comb += total.eq(old.as_signed() + here.product)
            entry_mask = Signal(pack, name=f"entry_mask{lane}")
            m.d.comb += entry_mask.eq(1 << here.entry if pack > 1 else 1)
            for bank, write in enumerate(writes):
                zeroing = zero[bank]
                updating = entry_mask & write_valid[bank][lane].replicate(pack) \
                    if pack > 1 else write_valid[bank][lane]
                m.d.comb += [
                    write.addr.eq(Mux(zeroing, zero_addr, here.word)),
                    write.data.eq(Mux(zeroing, 0, total.replicate(pack))),
                    write.en.eq(zeroing.replicate(pack) | updating),
                ]
            m.d.comb += self.drained[lane].eq(Mux(drain.shown, reads[1], reads[0]))
        return m


class PermDiagComponent(EngineComponent):
    """The permuted-diagonal engine's hardware; see the module documentation."""

    def __init__(self, engine: PermDiagEngine):
        self._engine = engine
        super().__init__(load_map=engine.load_map, act_lanes=engine.act_lanes,
                         res_lanes=engine.res_lanes, res_width=engine.res_width)

    def elaborate(self, platform):
        engine = self._engine
        slots, per_slot, mults = engine.slots, engine.pes_per_slot, engine.mults
        lanes, columns = engine.slot_lanes, engine.slot_cols_max
        cols_per_beat, lane_bits = engine.act_per_slot, _levels(engine.act_per_slot)
        acc_words, pack = engine.acc_words, engine.drain_pack
        act_words = engine.act_words
        helping = slots > 1
        m = Module()

        def named(value, name, shape=None):
            # A shared expression must be one net: Amaranth instantiates an expression's
            # logic again at every use.
            signal = Signal(value.shape() if shape is None else shape, name=name)
            m.d.comb += signal.eq(value)
            return signal

        # Configuration registers ---------------------------------------------------------
        p = Signal(range(engine.max_p + 1))
        passes = Signal(range(engine.passes_max + 1))
        last_lanes = Signal(range(lanes + 1))
        slot_cols = Signal(range(columns + 1))
        slot_col_blocks = Signal(range(engine.slot_col_blocks_max + 1))
        beats = Signal(range(act_words + 1))
        drain_words = Signal(range(acc_words + 1))
        # The drain issues a beat with a result path credit, so that neither its D1 register
        # nor its adder trees stall: they are the credits' lead.
        result_path = ResultPath(lanes=engine.res_lanes, acc_width=engine.acc_width,
                                 row_blocks=acc_words, lead=1 + engine.tree_stages)
        m.submodules.result_path = result_path

        # PEs ------------------------------------------------------------------------------
        pe_module = engine.shared_modules()["pe"]
        pes = [[pe_module.instantiate(m, f"pe{slot * per_slot + index}")
                for index in range(per_slot)] for slot in range(slots)]
        for pe in (pe for row in pes for pe in row):
            m.d.comb += pe.p.eq(p)

        # Load port -----------------------------------------------------------------------
        # Vectors accepted and not yet delivered. At most: one arriving, one waiting, one
        # being picked, one waiting for the drain, then one per beat the drain pipeline can
        # hold (D1, the adder trees, the result path: its credits), when a vector is a single
        # res beat.
        in_flight = Signal(range(4 + result_path.capacity + 1))
        m.d.comb += self.load.ready.eq(in_flight == 0)
        load_data = self.load.payload.data
        regions = self.load_map.decode(self.load.payload.addr)
        loading = named(self.load.valid & self.load.ready, "loading")

        config_selected, config_fields = regions["config"]
        with m.If(loading & config_selected):
            with m.Switch(config_fields["register"]):
                for register, target in ((CONFIG_P, p), (CONFIG_PASSES, passes),
                                         (CONFIG_LAST_LANES, last_lanes),
                                         (CONFIG_SLOT_COLS, slot_cols),
                                         (CONFIG_SLOT_COL_BLOCKS, slot_col_blocks),
                                         (CONFIG_BEATS, beats),
                                         (CONFIG_DRAIN_WORDS, drain_words)):
                    with m.Case(register):
                        m.d.sync += target.eq(load_data)
        result_path.decode_loads(m, regions, loading, load_data, CONFIG_REQUANT)

        for region, width, per_chunk in (("weights", WEIGHT_BITS, DATA_WIDTH // WEIGHT_BITS),
                                         ("offsets", engine.offset_width,
                                          engine.offsets_per_chunk)):
            selected, fields = regions[region]
            # The multipliers whose values this beat carries, then the PE it is for.
            chunk_hit = [named(loading & selected & (fields["chunk"] == chunk),
                               f"{region}_chunk{chunk}")
                         for chunk in range(math.ceil(mults / per_chunk))]
            lane_hit = named(Cat(*(chunk_hit[lane // per_chunk] for lane in range(mults))),
                             f"{region}_lanes")
            lane_data = [load_data[(lane % per_chunk) * width:][:width]
                         for lane in range(mults)]
            for slot in range(slots):
                for index, pe in enumerate(pes[slot]):
                    write = pe.weight_write if region == "weights" else pe.offset_write
                    m.d.comb += [write.addr.eq(fields["addr"]), write.data.eq(Cat(*lane_data)),
                                 write.en.eq(Mux(fields["pe"] == slot * per_slot + index,
                                                 lane_hit, 0))]

        # Accumulator scrub after reset ---------------------------------------------------
        scrubbing = Signal(init=1)
        scrub_addr = Signal(_span(acc_words))
        with m.If(scrubbing):
            m.d.sync += scrub_addr.eq(scrub_addr + 1)
            with m.If(scrub_addr == acc_words - 1):
                m.d.sync += scrubbing.eq(0)

        # Activation input ----------------------------------------------------------------
        # One bank of every slot's buffer fills while the other is computed. Each entry
        # keeps its local column's block jl // p and position jl mod p, counted here as the
        # columns stream in, so that no divider sits in the pick path.
        block_width = engine.block_index_width
        entry_layout = data.StructLayout({"x": signed(8), "block": unsigned(block_width),
                                          "rho": range(engine.max_p)})
        act_mems = [memory.Memory(shape=data.ArrayLayout(entry_layout, cols_per_beat),
                                  depth=2 * act_words, init=[]) for _ in range(slots)]
        for slot, mem in enumerate(act_mems):
            m.submodules[f"act_mem{slot}"] = mem
        act_writes = [mem.write_port() for mem in act_mems]
        act_read_a = [mem.read_port() for mem in act_mems]
        act_read_b = [mem.read_port() for mem in act_mems] if helping else []

        fill_bank = Signal()
        beat = Signal(_span(act_words))
        beat_block = Signal(block_width)
        beat_rho = Signal(range(engine.max_p))
        incoming_full = Signal()
        incoming = [Signal(columns, name=f"incoming{g}") for g in range(slots)]
        incoming_count = [Signal(range(columns + 1), name=f"incoming_count{g}")
                          for g in range(slots)]
        m.d.comb += self.act.ready.eq((beats != 0) & ~scrubbing & ~incoming_full)
        receiving = named(self.act.valid & self.act.ready, "receiving")
        positions = [(beat_block, beat_rho)]
        for i in range(cols_per_beat):
            block, rho = positions[-1]
            wrap = rho == p - 1
            positions.append((named(Mux(wrap, block + 1, block), f"column_block{i + 1}",
                                    block_width),
                              named(Mux(wrap, 0, rho + 1), f"column_rho{i + 1}",
                                    range(engine.max_p))))
        last_beat = named(beat == beats - 1, "last_beat")
        with m.If(receiving):
            with m.If(last_beat):
                m.d.sync += [beat.eq(0), beat_block.eq(0), beat_rho.eq(0),
                             fill_bank.eq(~fill_bank), incoming_full.eq(1)]
            with m.Else():
                m.d.sync += [beat.eq(beat + 1), beat_block.eq(positions[-1][0]),
                             beat_rho.eq(positions[-1][1])]
        # The bitmap positions this beat writes: act_per_slot bits at beat*act_per_slot.
        beat_mask = named(Cat(*((receiving & (beat == word)).replicate(cols_per_beat)
                                for word in range(math.ceil(columns / cols_per_beat))))
                          [:columns], "beat_mask")
        act_addr = named(Mux(fill_bank, beat + act_words, beat), "act_write_addr",
                         _span(2 * act_words))
        for slot in range(slots):
            values = [self.act.payload[slot * cols_per_beat + i] for i in range(cols_per_beat)]
            nonzero = named(Cat(*(value != 0 for value in values)), f"nonzero{slot}")
            m.d.comb += [act_writes[slot].addr.eq(act_addr), act_writes[slot].en.eq(receiving)]
            for i, value in enumerate(values):
                m.d.comb += [act_writes[slot].data[i].x.eq(value),
                             act_writes[slot].data[i].block.eq(positions[i][0]),
                             act_writes[slot].data[i].rho.eq(positions[i][1])]
            with m.If(receiving):
                m.d.sync += [
                    incoming[slot].eq(incoming[slot] | (
                        nonzero.replicate(math.ceil(columns / cols_per_beat)) & beat_mask)),
                    incoming_count[slot].eq(incoming_count[slot]
                                            + sum(nonzero[i] for i in range(cols_per_beat))),
                ]

        # Sequencer: the slots pick in lock step, one activation each per `passes` cycles --
        remaining = [Signal(columns, name=f"remaining{g}") for g in range(slots)]
        count = [Signal(range(columns + 1), name=f"count{g}") for g in range(slots)]
        a_valid = [Signal(name=f"a_valid{g}") for g in range(slots)]
        a_left = [Signal(name=f"a_left{g}") for g in range(slots)]
        a_column = [Signal(range(columns), name=f"a_column{g}") for g in range(slots)]

        phase = Signal(_span(engine.passes_max))
        weight_base = Signal(_span(engine.weight_depth))
        offset_base = Signal(_span(engine.offset_depth))
        acc_base = Signal(_span(acc_words * pack))
        last_pass = named(phase == passes - 1, "last_pass")
        pick = named(~Cat(*a_valid).any() | last_pass, "pick")

        # read_bank and compute_bank start at 1 so that the first vector uses bank 0 of both
        # (the drain starts at bank 0).
        read_bank = Signal(init=1)     # activation bank of the newest vector
        compute_bank = Signal(init=1)  # accumulator bank of the newest vector
        vector_active = Signal()       # the newest vector is still being picked
        acc_busy = Signal(2)           # bank holds a vector not yet fully drained
        next_bank = named(~compute_bank, "next_bank")
        done_issuing = named(pick & Cat(*(n == 0 for n in count)).all(), "done_issuing")
        start = named(done_issuing & incoming_full & ~acc_busy.bit_select(next_bank, 1),
                      "start")
        retire = named(done_issuing & vector_active, "retire")

        current = [named(Mux(start, incoming[g], remaining[g]), f"current{g}")
                   for g in range(slots)]
        current_count = [named(Mux(start, incoming_count[g], count[g]), f"current_count{g}")
                         for g in range(slots)]
        lowest, highest = [], []
        for g in range(slots):
            reversed_bits = named(current[g][::-1], f"reversed{g}")
            reversed_lowest = named(reversed_bits & (~reversed_bits + 1), f"reversed_lowest{g}",
                                    columns)
            lowest.append(named(current[g] & (~current[g] + 1), f"lowest{g}", columns))
            highest.append(named(reversed_lowest[::-1], f"highest{g}"))
        want_own = [Signal(name=f"want_own{g}") for g in range(slots)]
        take_own = [Signal(name=f"take_own{g}") for g in range(slots)]
        take_left = [Signal(name=f"take_left{g}") for g in range(slots)]
        for g in range(slots):
            left = (g - 1) % slots
            if helping:
                want_left = named(current_count[left] > current_count[g], f"want_left{g}")
                # The owner always gets its column; the helper needs a second one.
                helper_fits = (current_count[left] >= 2) | ~want_own[left]
                m.d.comb += take_left[g].eq(pick & want_left & helper_fits)
            else:
                want_left = 0
            m.d.comb += [want_own[g].eq(~want_left & (current_count[g] != 0)),
                         take_own[g].eq(pick & want_own[g])]
        chosen = [named(Mux(take_left[g], highest[(g - 1) % slots], lowest[g]), f"chosen{g}")
                  for g in range(slots)]

        with m.If(pick):
            m.d.sync += [phase.eq(0), weight_base.eq(0), offset_base.eq(0), acc_base.eq(0)]
            for g in range(slots):
                taken_by_helper = take_left[(g + 1) % slots] if helping else 0
                m.d.sync += [
                    remaining[g].eq(current[g] & ~Mux(take_own[g], lowest[g], 0)
                                    & ~Mux(taken_by_helper, highest[g], 0)),
                    count[g].eq(current_count[g] - take_own[g] - taken_by_helper),
                    a_valid[g].eq(take_own[g] | take_left[g]),
                    a_left[g].eq(take_left[g]),
                    a_column[g].eq(_encode(chosen[g], columns)),
                ]
        with m.Else():
            m.d.sync += [phase.eq(phase + 1), weight_base.eq(weight_base + slot_cols),
                         offset_base.eq(offset_base + slot_col_blocks), acc_base.eq(acc_base + p)]

        with m.If(start):
            m.d.sync += [incoming_full.eq(0), compute_bank.eq(next_bank),
                         read_bank.eq(~read_bank), vector_active.eq(1)]
            for g in range(slots):
                m.d.sync += [incoming[g].eq(0), incoming_count[g].eq(0)]
        with m.Elif(done_issuing):
            m.d.sync += vector_active.eq(0)

        # Stage A: read each activation (with its block and position) in its first pass; the
        # read port holds it for the later passes.
        first_pass = named(phase == 0, "first_pass")
        for g in range(slots):
            right = (g + 1) % slots
            own_word = a_column[g] >> lane_bits
            m.d.comb += [
                act_read_a[g].addr.eq(Mux(read_bank, own_word + act_words, own_word)),
                act_read_a[g].en.eq(first_pass & a_valid[g] & ~a_left[g]),
            ]
            if helping:
                right_word = a_column[right] >> lane_bits
                m.d.comb += [
                    act_read_b[g].addr.eq(Mux(read_bank, right_word + act_words, right_word)),
                    act_read_b[g].en.eq(first_pass & a_valid[right] & a_left[right]),
                ]

        b_valid = [Signal(name=f"b_valid{g}") for g in range(slots)]
        b_left = [Signal(name=f"b_left{g}") for g in range(slots)]
        b_column = [Signal(range(columns), name=f"b_column{g}") for g in range(slots)]
        b_weight_base, b_offset_base = Signal.like(weight_base), Signal.like(offset_base)
        b_acc_base = Signal.like(acc_base)
        b_last, b_bank = Signal(), Signal()
        m.d.sync += [b_weight_base.eq(weight_base), b_offset_base.eq(offset_base),
                     b_acc_base.eq(acc_base), b_last.eq(last_pass), b_bank.eq(compute_bank)]
        for g in range(slots):
            m.d.sync += [b_valid[g].eq(a_valid[g]), b_left[g].eq(a_left[g]),
                         b_column[g].eq(a_column[g])]

        # Stage B: weight and offset reads, from the owner's memories: this slot's (port A)
        # or the left slot's (port B, addressed by this slot).
        entries = []
        for g in range(slots):
            left = (g - 1) % slots
            lane_index = b_column[g][:lane_bits] if lane_bits else 0
            own = act_read_a[g].data[lane_index].as_value()
            entry = Mux(b_left[g], act_read_b[left].data[lane_index].as_value(), own) \
                if helping else own
            entries.append(named(entry, f"entry{g}", entry_layout))
        for g in range(slots):
            weight_addr = named(b_weight_base + b_column[g], f"weight_addr{g}",
                                _span(engine.weight_depth))
            offset_addr = named(b_offset_base + entries[g].block, f"offset_addr{g}",
                                _span(engine.offset_depth))
            for pe in pes[g]:
                m.d.comb += [pe.read_a.weight_addr.eq(weight_addr),
                             pe.read_a.offset_addr.eq(offset_addr)]
            if helping:
                for pe in pes[(g - 1) % slots]:
                    m.d.comb += [pe.read_b.weight_addr.eq(weight_addr),
                                 pe.read_b.offset_addr.eq(offset_addr)]

        # Stage R: the weight and offset memories' read data arrives and is registered,
        # with the port chosen (own or left neighbour's), so that the PEs' arithmetic starts
        # from registers: a block RAM's clock-to-output time and a DSP multiply each take
        # most of a cycle. The activation and the pass's fields move along with it.
        r_valid = [Signal(name=f"r_valid{g}") for g in range(slots)]
        r_left = [Signal(name=f"r_left{g}") for g in range(slots)]
        r_x = [Signal(signed(8), name=f"r_x{g}") for g in range(slots)]
        r_rho = [Signal(range(engine.max_p), name=f"r_rho{g}") for g in range(slots)]
        r_acc_base = Signal.like(acc_base)
        r_last, r_bank = Signal(), Signal()
        m.d.sync += [r_acc_base.eq(b_acc_base), r_last.eq(b_last), r_bank.eq(b_bank)]
        for g in range(slots):
            m.d.sync += [r_valid[g].eq(b_valid[g]), r_left[g].eq(b_left[g]),
                         r_x[g].eq(entries[g].x), r_rho[g].eq(entries[g].rho)]

        t_valid = [Signal(name=f"t_valid{g}") for g in range(slots)]
        t_x = [Signal(signed(8), name=f"t_x{g}") for g in range(slots)]
        t_rho = [Signal(range(engine.max_p), name=f"t_rho{g}") for g in range(slots)]
        t_acc_base = Signal.like(acc_base)
        t_last, t_bank = Signal(), Signal()
        m.d.sync += [t_acc_base.eq(r_acc_base), t_last.eq(r_last), t_bank.eq(r_bank)]
        for g in range(slots):
            m.d.sync += [t_valid[g].eq(r_valid[g]), t_x[g].eq(r_x[g]), t_rho[g].eq(r_rho[g])]
        t_weights, t_offsets = [], []
        for g in range(slots):
            left = (g - 1) % slots
            for index, pe in enumerate(pes[g]):
                number = g * per_slot + index
                weights = pe.out_a.weights.as_value()
                offsets = pe.out_a.offsets.as_value()
                if helping:
                    source = pes[left][index]
                    weights = Mux(r_left[g], source.out_b.weights.as_value(), weights)
                    offsets = Mux(r_left[g], source.out_b.offsets.as_value(), offsets)
                t_weights.append(Signal.like(pe.op.weights, name=f"t_weights{number}"))
                t_offsets.append(Signal.like(pe.op.offsets, name=f"t_offsets{number}"))
                m.d.sync += [t_weights[-1].eq(weights), t_offsets[-1].eq(offsets)]

        # Stages T, C and D are in the PEs: target row; product and accumulator read;
        # accumulator write. Multipliers beyond the last block row idle in the last pass.
        lane_limit = named(Mux(t_last, last_lanes, lanes), "lane_limit", range(lanes + 1))
        lane_live = named(Cat(*(lane < lane_limit for lane in range(lanes))), "lane_live")
        for g in range(slots):
            for index, pe in enumerate(pes[g]):
                number = g * per_slot + index
                valid = t_valid[g].replicate(mults) & lane_live[index * mults:][:mults]
                m.d.comb += [pe.op.valid.eq(valid), pe.op.weights.eq(t_weights[number]),
                             pe.op.offsets.eq(t_offsets[number]), pe.op.x.eq(t_x[g]),
                             pe.op.rho.eq(t_rho[g]), pe.op.base.eq(t_acc_base),
                             pe.op.bank.eq(t_bank)]

        # Retirement: a vector's last accumulator write (stage D) lands five cycles after
        # its last pass (stages B, R, T, C, D), so the drain may read from then on (the read
        # is transparent to that write).
        retired = Signal(4)
        retired_bank = Signal(4)
        m.d.sync += [retired.eq(Cat(retire, retired[:-1])),
                     retired_bank.eq(Cat(compute_bank, retired_bank[:-1]))]

        # Drain: read a word of every multiplier's bank, add the slots' partial sums, and
        # hand the beat to the result path; the word is cleared as it leaves -------------
        # A read is issued with a result path credit, so D1 and the trees never stall (a
        # stall there reached every accumulator's read enable and address). The trees carry
        # the beat's index (the multipliers' address) in lock step; the first tree's copy is
        # the one used.
        trees = [AdderTree(fan_in=slots, input_width=engine.acc_width,
                           stages=engine.tree_stages, tag_shape=_span(acc_words))
                 for _ in range(engine.res_lanes)]
        for index, tree in enumerate(trees):
            m.submodules[f"tree{index}"] = tree

        drain_pending = Signal(2)
        drain_bank = Signal()
        drain_word = Signal(_span(acc_words))
        d1_valid, d1_last, d1_bank = Signal(), Signal(), Signal()
        d1_word = Signal(_span(acc_words))
        drain_go = result_path.issue(m, drain_pending.bit_select(drain_bank, 1))
        drain_last = named(drain_word == drain_words - 1, "drain_last")
        pending_set = Mux(retired[-1], 1 << retired_bank[-1], 0)
        pending_clear = Mux(drain_go & drain_last, 1 << drain_bank, 0)
        m.d.sync += drain_pending.eq((drain_pending | pending_set) & ~pending_clear)
        m.d.sync += [d1_valid.eq(drain_go), d1_word.eq(drain_word), d1_bank.eq(drain_bank),
                     d1_last.eq(drain_last)]
        with m.If(drain_go):
            with m.If(drain_last):
                m.d.sync += [drain_word.eq(0), drain_bank.eq(~drain_bank)]
            with m.Else():
                m.d.sync += drain_word.eq(drain_word + 1)

        busy_set = Mux(start, 1 << next_bank, 0)
        busy_clear = Mux(d1_valid & d1_last, 1 << d1_bank, 0)
        m.d.sync += acc_busy.eq((acc_busy | busy_set) & ~busy_clear)

        # The drain zeroes each word after reading it; the scrub zeroes both banks. The PEs
        # write the zeros a cycle late, which is still long before a new vector's first
        # update of the bank (the bank stays busy until its last word leaves D1, and the
        # update reaches stage D six cycles after the vector starts).
        zero = named(Cat(*(scrubbing | (d1_valid & (d1_bank == bank)) for bank in range(2))),
                     "zero")
        zero_addr = named(Mux(scrubbing, scrub_addr, d1_word), "zero_addr", _span(acc_words))
        for row in pes:
            for pe in row:
                m.d.comb += [pe.drain.read.eq(drain_go), pe.drain.addr.eq(drain_word),
                             pe.drain.bank.eq(drain_bank), pe.drain.shown.eq(d1_bank),
                             pe.drain.zero.eq(zero), pe.drain.zero_addr.eq(zero_addr)]
        for entry in range(pack):
            for lane in range(lanes):
                tree = trees[entry * lanes + lane]
                index, mult = divmod(lane, mults)
                for g in range(slots):
                    m.d.comb += tree.i.payload.operands[g].eq(
                        pes[g][index].drained[mult][entry])
                m.d.comb += [tree.i.valid.eq(d1_valid), tree.i.payload.tag.eq(d1_word)]

        for index, tree in enumerate(trees):
            # The slots' partial sums add up to the row's total, which fits acc_width.
            m.d.comb += [result_path.i.payload.acc[index].eq(tree.o.payload.sum),
                         tree.o.ready.eq(1)]
        m.d.comb += [result_path.i.payload.row_block.eq(trees[0].o.payload.tag),
                     result_path.i.valid.eq(trees[0].o.valid)]
        wiring.connect(m, result_path.o, wiring.flipped(self.res))

        # Vectors in flight, for the load port: from the first act beat to the last res beat.
        delivered_beat = Signal(_span(acc_words))
        delivering = self.res.valid & self.res.ready
        vector_out = named(delivering & (delivered_beat == drain_words - 1), "vector_out")
        with m.If(delivering):
            m.d.sync += delivered_beat.eq(Mux(vector_out, 0, delivered_beat + 1))
        m.d.sync += in_flight.eq(in_flight + (receiving & (beat == 0)) - vector_out)
        return m


def _select(value, index, width: int, count: int):
    """Element ``index`` of ``count`` packed ``width``-bit elements of ``value``, as a mux
    tree (``word_select`` would build a multiplier and a shifter)."""
    elements = [value[i * width:(i + 1) * width] for i in range(count)]
    bit = 0
    while len(elements) > 1:
        elements = [Mux(index[bit], elements[i + 1], elements[i])
                    for i in range(0, len(elements), 2)]
        bit += 1
    return elements[0]


def _encode(onehot, width: int):
    """The index of the set bit of a ``width``-bit one-hot signal (an OR of the indices, no
    priority chain)."""
    bits = max(1, (width - 1).bit_length())
    return Cat(*(Cat(*(onehot[i] for i in range(width) if i >> bit & 1)).any()
                 if width > 1 << bit else Const(0, 1)
                 for bit in range(bits)))
