"""The dense int8 engine: the weight-stationary multiply-accumulate baseline of every comparison.

Arithmetic
    ``y[b, m] = sum_n w[m, n] * x[b, n]`` exactly, for any int8 weights and activations
    (golden model: :func:`secateur.models.dense.reference`), then the shared requantizer if
    the layer carries ``mult``/``shift``/``relu``.

Structure
    ``pe`` PEs of ``fan_in`` int8 x int8 multipliers each, feeding an
    :class:`~secateur.hdl.adder_tree.AdderTree`: ``pe * fan_in`` multiply-accumulate lanes,
    the same lane count as the ternary engine at the same ``pe`` and ``fan_in``, so the two
    are compared at equal lanes. PE ``p`` computes row ``r * pe + p`` of row block ``r``. One
    cycle processes a *tile*: ``pe`` rows x ``fan_in`` columns (column block ``c`` = columns
    ``c * fan_in ... c * fan_in + fan_in - 1``; edge tiles are zero-padded). The PEs run in
    lock step on one activation broadcast. Nothing is skipped: a vector takes exactly
    ``ceil(M / pe) * ceil(N / fan_in)`` cycles, row block after row block, column block
    after column block, and consecutive vectors follow without a gap.

Weight-stationary storage
    The whole layer stays on chip: one memory per PE, one word per tile, ``8 * fan_in``
    bits, column ``j`` of the tile at bits ``[8j, 8j+8)`` as int8 (words wider than one
    32-bit load beat are padded to whole beats, because partial writes need equal chunks).
    Tile ``(r, c)`` of a layer with ``C`` column blocks is word ``r * C + c``, which is also
    the order the sequencer reads them, so the read address is a counter.

Activations
    An :class:`~secateur.hdl.actbuffer.ActivationBuffer` of two banks: the ``act`` stream
    fills one while the PEs read the other, once per row block.

Pipeline
    issue (weight and activation reads) -> read data register -> product register ->
    adder tree (``tree_stages`` registers) -> accumulate -> the shared
    :class:`~secateur.hdl.result_path.ResultPath` (input, result and operand
    registers, requantizer, output buffer), whose ``i.ready`` is its credit. A result that
    cannot be handed on stalls the whole pipeline. The read data and the products are
    registered because a block RAM's clock-to-output time and a DSP
    multiply each fill a cycle at the target clock (150 MHz on ECP5).

Widths (derived, so nothing can overflow)
    Products lie in ``[-16256, 16384]``: 16 signed bits. Accumulators hold
    ``16384 * max_cols`` in magnitude (:func:`secateur.models.dense.acc_bound`):
    ``bit_length(16384 * max_cols) + 1`` signed bits. Adder-tree sums are wider when
    ``fan_in > max_cols``; truncating them to the accumulator is exact because padded lanes
    are zero, so the true sum is within the bound.

Loading
    Regions ``config`` (row blocks, column blocks, requantizer control; the same layout as
    the ternary engine's, so host code is shared), ``mult`` (one multiplier per output row)
    and ``weights``.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring

from ...models import dense as dense_model
from ..actbuffer import ActivationBuffer
from ..adder_tree import adder_tree_output_width
from ..loadmap import DATA_WIDTH, LoadMap
from ..pe import Int8Code, drive_pe_array
from ..result_path import ResultPath, result_regions
from .base import EngineComponent, Param
from .rowblock import (CONFIG_COL_BLOCKS, CONFIG_REGISTERS, CONFIG_REQUANT,  # noqa: F401 (C header)
                       CONFIG_ROW_BLOCKS, RowBlockControl, RowBlockEngine, RowBlockLayer)

__all__ = ["DenseEngine", "DenseComponent", "DenseLayer"]

#: int8 x int8 products lie in [-16256, 16384]: 16 signed bits.
PRODUCT_WIDTH = Int8Code.operand_width


def _levels(count: int) -> int:
    """Adder levels of a tree of ``count`` operands (0 for one operand)."""
    return math.ceil(math.log2(count))


class DenseEngine(RowBlockEngine):
    """Generator of the dense int8 engine.

    Parameters
    ----------
    pe : int
        Processing elements (rows per row block), in ``[1, 1024]``.
    fan_in : int
        Multipliers per PE (columns per tile), in ``[1, 256]``; default 64, as the ternary
        engine, so that the two compare at equal lanes.
    max_rows : int
        Largest ``M`` the engine accepts, in ``[1, 65536]``; default 512.
    max_cols : int
        Largest ``N`` the engine accepts, in ``[1, 65536]``; default 512.
    tree_stages : int
        Pipeline registers in each adder tree, in ``[0, max(1, ceil(log2(fan_in)))]``;
        default the maximum (a register after every adder level, for Fmax).

    Raises
    ------
    TypeError, ValueError
        If a parameter is unknown, not an integer or out of its range.
    """

    name = "dense"
    top = "dense_engine"
    CODE = Int8Code
    PARAMS = (
        Param("pe", "processing elements (rows per row block)", 32, 1, 1024),
        Param("fan_in", "multipliers per PE (columns per tile)", 64, 1, 256),
        Param("max_rows", "largest number of output rows M", 512, 1, 65536),
        Param("max_cols", "largest number of input columns N", 512, 1, 65536),
        Param("tree_stages", "pipeline registers per adder tree",
              lambda p: max(1, _levels(p["fan_in"])), 0,
              lambda p: max(1, _levels(p["fan_in"]))),
    )

    # Derived sizes -----------------------------------------------------------------------

    @property
    def tiles(self) -> int:
        """Weight memory depth: every tile of the largest layer."""
        return self.row_blocks_max * self.col_blocks_max

    @property
    def tree_width(self) -> int:
        return adder_tree_output_width(self.fan_in, PRODUCT_WIDTH)

    @property
    def acc_width(self) -> int:
        return dense_model.acc_bound(self.max_cols).bit_length() + 1

    # The Engine contract -----------------------------------------------------------------

    @property
    def latency(self) -> int:
        # act write -> bank full (1), memory read (1), read data register (1), product
        # register (1), tree, result path.
        return 1 + 1 + 1 + 1 + self.tree_stages + ResultPath.LATENCY

    @property
    def load_map(self) -> LoadMap:
        return LoadMap([
            self.config_region(),
            *result_regions(self.row_blocks_max, self.pe),
            self.weights_region(self.tiles,
                                "tile t = r*C + c (row block r, column block c of C), PE row p, "
                                "32-bit chunk k of the int8 weights (column j at bits 8j+7:8j)"),
        ])

    def component(self) -> "DenseComponent":
        return DenseComponent(self)

    def layer(self, weights: Mapping[str, np.ndarray]) -> "DenseLayer":
        return DenseLayer(self, weights)


class DenseLayer(RowBlockLayer):
    """An int8 weight matrix cut into this engine's tiles.

    Raises
    ------
    TypeError
        If ``w`` is missing or not an int8 array.
    ValueError
        If ``w`` is not 2-D or exceeds ``max_rows`` x ``max_cols``; or the requantization
        keys are incomplete or out of range.
    """

    def __init__(self, engine: DenseEngine, weights: Mapping[str, np.ndarray]):
        if "w" not in weights:
            raise TypeError("weights npz has no key 'w' (int8 matrix of shape (M, N))")
        super().__init__(engine, dense_model.check_weights(weights["w"]), weights)

    def load_beats(self) -> list[tuple[int, int]]:
        engine, load_map = self.engine, self.engine.load_map
        beats = self.config_beats()

        # One 32-bit chunk holds four int8 weights, lowest column in the low byte.
        chunk_lanes = DATA_WIDTH // 8
        lanes = engine.weight_chunks * chunk_lanes
        flat = np.zeros((self.row_blocks * self.col_blocks, engine.pe, lanes), dtype=np.uint32)
        flat[:, :, :engine.fan_in] = self.tiles.reshape(-1, engine.pe, engine.fan_in) \
            .astype(np.uint8)
        shifts = (8 * np.arange(chunk_lanes, dtype=np.uint32))
        words = (flat.reshape(*flat.shape[:2], engine.weight_chunks, chunk_lanes) << shifts) \
            .sum(axis=-1, dtype=np.uint64)
        for tile in range(words.shape[0]):
            for pe_row in range(engine.pe):
                for chunk in range(engine.weight_chunks):
                    beats.append((load_map.address("weights", tile=tile, pe=pe_row, chunk=chunk),
                                  int(words[tile, pe_row, chunk])))
        return beats

    def reference(self, x: np.ndarray) -> np.ndarray:
        return dense_model.reference(self.w, self.check_inputs(x), requant=self.requant,
                                     bias=self.bias)

    def counters(self, x: np.ndarray) -> dict:
        """Work of a batch.

        ``useful_ops`` is the whole ``M x N`` matrix once per input vector: a dense engine
        has no work to skip, so padding of edge tiles is its only loss. ``nonzero_weight_ops``
        counts only non-zero weights, for comparison with the sparse engines.

        Energy (:mod:`secateur.models.energy`; ``T = row_blocks * col_blocks`` tiles per
        vector, all issued, padded lanes included as the hardware runs them): per tile,
        ``pe`` weight words of ``weight_word_width`` bits and one activation word of
        ``8 * fan_in`` bits read, plus ``input_beats_per_vector`` activation words written
        per vector (``sram_bit``); ``pe * fan_in`` int8 products (``int8_mult``); ``pe``
        adder-tree passes over ``fan_in`` 16-bit products
        (:func:`~secateur.models.energy.tree_add_bits`, ``add_bit``) and ``pe`` accumulator
        updates of ``acc_width`` bits (``add_bit`` + ``register_bit``); with requantization,
        ``pe`` lanes per row block (:meth:`~secateur.models.energy.Actions.requantize`).
        """
        from ...models import energy

        batch = self.check_inputs(x).shape[0]
        engine = self.engine
        tiles = batch * self.row_blocks * self.col_blocks
        actions = energy.Actions(
            sram_bit=tiles * (engine.pe * engine.weight_word_width + 8 * engine.fan_in)
            + batch * self.input_beats_per_vector * engine.act_lanes * 8,
            int8_mult=tiles * engine.pe * engine.fan_in,
            add_bit=tiles * engine.pe * energy.tree_add_bits(engine.fan_in, PRODUCT_WIDTH))
        actions.accumulate(tiles * engine.pe, engine.acc_width)
        actions.result_path(batch * self.row_blocks * engine.pe, engine.acc_width, self.requant,
                            self.bias)
        return {
            "useful_ops": batch * self.rows * self.cols,
            "nonzero_weight_ops": batch * int(np.count_nonzero(self.w)),
            "dense_ops": batch * self.rows * self.cols,
            "lanes": engine.lanes,
            "tiles": self.row_blocks * self.col_blocks,
            "ideal_cycles": batch * self.row_blocks * self.col_blocks,
            "weight_bits": self.row_blocks * self.col_blocks * engine.pe * 8 * engine.fan_in,
            **energy.estimate(actions),
        }


class DenseComponent(EngineComponent):
    """The dense engine's hardware; see the module documentation."""

    def __init__(self, engine: DenseEngine):
        self._engine = engine
        super().__init__(load_map=engine.load_map, act_lanes=engine.act_lanes,
                         res_lanes=engine.res_lanes, res_width=engine.res_width)

    def elaborate(self, platform):
        engine = self._engine
        pe, fan_in = engine.pe, engine.fan_in
        row_blocks_max, col_blocks_max = engine.row_blocks_max, engine.col_blocks_max
        m = Module()

        # Configuration registers and the result path ------------------------------------
        control = RowBlockControl(m, engine)
        row_blocks, col_blocks = control.row_blocks, control.col_blocks
        result_path = control.result_path

        # PEs: one weight memory, multipliers, adder tree and accumulator each (secateur.hdl.pe).
        tag_layout = engine.pe_tag_layout
        pes = control.add_pes(m)

        m.submodules.acts = acts = ActivationBuffer(lanes=fan_in, depth=col_blocks_max,
                                                    read_ports=1)
        act_read = acts.read[0]
        m.d.comb += acts.beats.eq(col_blocks)
        wiring.connect(m, wiring.flipped(self.act), acts.i)

        none_in_flight = Signal()

        # Load port -----------------------------------------------------------------------
        m.d.comb += self.load.ready.eq(acts.empty & none_in_flight)
        load_data = self.load.payload.data
        regions = self.load_map.decode(self.load.payload.addr)
        loading = self.load.valid & self.load.ready

        control.decode_loads(m, regions, loading, load_data, pes)

        # Sequencer: every tile of the layer, row block by row block ----------------------
        row_block = Signal(range(max(2, row_blocks_max)))
        col = Signal(range(max(2, col_blocks_max)))
        tile = Signal(range(max(2, engine.tiles)))
        last_col = col == col_blocks - 1
        last_row_block = row_block == row_blocks - 1

        # Stage 1 holds the issued tile while its weights and activations are read; stage 2
        # registers the read data, stage 3 the products.
        s1_valid, s2_valid, s3_valid = Signal(), Signal(), Signal()
        s1_tag, s2_tag, s3_tag = Signal(tag_layout), Signal(tag_layout), Signal(tag_layout)
        array_ready = Signal()
        s3_advance = ~s3_valid | array_ready
        s2_advance = ~s2_valid | s3_advance
        s1_advance = ~s1_valid | s2_advance
        issue = acts.full & s1_advance

        with m.If(issue):
            m.d.sync += [tile.eq(tile + 1), col.eq(col + 1)]
            with m.If(last_col):
                m.d.sync += [col.eq(0), row_block.eq(row_block + 1)]
                with m.If(last_row_block):
                    m.d.sync += [row_block.eq(0), tile.eq(0)]
        # The vector's last activation read is issued now, so its bank is free.
        m.d.comb += acts.release.eq(issue & last_col & last_row_block)

        with m.If(s1_advance):
            m.d.sync += [s1_valid.eq(issue), s1_tag.first.eq(col == 0), s1_tag.last.eq(last_col),
                         s1_tag.row_block.eq(row_block)]
        m.d.comb += [act_read.addr.eq(col), act_read.en.eq(s1_advance)]

        s2_acts = Signal(act_read.data.shape())
        with m.If(s2_advance):
            m.d.sync += [s2_valid.eq(s1_valid), s2_tag.eq(s1_tag), s2_acts.eq(act_read.data)]
        with m.If(s3_advance):
            m.d.sync += [s3_valid.eq(s2_valid), s3_tag.eq(s2_tag)]
        m.d.comb += array_ready.eq(drive_pe_array(
            m, pes, code=engine.CODE(), read_addr=tile, read_en=s1_advance, acts=s2_acts,
            advance=Cat(s2_advance, s3_advance), valid=s3_valid, tag=s3_tag,
            result_path=result_path))
        wiring.connect(m, result_path.o, wiring.flipped(self.res))

        # Row blocks issued but not yet delivered. At most one per pipeline register can be in
        # flight (s1 to s3, the tree) and what the result path holds; twice that is ample.
        m.d.comb += none_in_flight.eq(control.none_in_flight(
            m, issue & last_col, self.res.valid & self.res.ready,
            bound=2 * (3 + engine.tree_stages + ResultPath.CAPACITY + 1)))
        return m
