"""The ternary adder-tree engine: PE-wise structured-pruned layers with weights in {-1, 0, +1}.

Arithmetic
    ``y[b, m] = sum_n w[m, n] * x[b, n]`` exactly (golden model: :func:`secateur.models.ternary.reference`),
    then the shared requantizer if the layer carries ``mult``/``shift``/``relu``. Every
    multiply is an add or a subtract: there is no multiplier in the datapath, only in the
    requantizer.

Structure
    ``pe`` PEs; PE ``p`` computes row ``r * pe + p`` of row block ``r``. Each PE is an
    add/subtract :class:`~secateur.hdl.adder_tree.AdderTree` of ``fan_in`` operands, so one
    cycle processes a *group*: an aligned tile of ``pe`` rows x ``fan_in`` columns (column
    block ``c`` = columns ``c * fan_in ... c * fan_in + fan_in - 1``; edge tiles are
    zero-padded). The PEs run in lock step and share one activation broadcast.

PE-wise structured sparsity
    A per-row-block *skip bitmap* marks the column blocks whose group has a non-zero weight.
    The sequencer finds the next set bit each cycle (a find-first-set over the bitmap), so an
    all-zero group costs no cycle. Only non-zero groups are stored, consecutively, in row-block
    then column order. A row block whose groups are all zero costs one cycle (it still emits
    its zero results). Cycles per vector = ``sum_r max(1, nonzero groups in row block r)``.

Weight storage
    One memory per PE, one word per stored group: ``2 * fan_in`` bits, column ``j`` of the
    group at bits ``[2j, 2j+2)`` as a 2-bit two's-complement code (``01`` = +1, ``11`` = -1,
    ``00`` = 0; ``10`` is never written and reads as 0): bit 0 says non-zero, bit 1 negative.

Widths (derived, so nothing can overflow)
    Operands ``x * w`` lie in ``[-128, 128]``: 9 bits. Tree sums: ``9 + ceil(log2(fan_in))``
    bits. Accumulators add ``ceil(log2(ceil(max_cols / fan_in)))`` bits for the column blocks.

Loading
    Weights come through the ``load`` port (see :mod:`secateur.hdl.loadmap` for why), as
    regions ``config`` (``row_blocks``, ``col_blocks``, requantizer control), ``bitmap``,
    ``mult`` (one multiplier per output row) and ``weights``.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, wiring

from ...models import ternary as ternary_model
from ..adder_tree import adder_tree_output_width
from ..loadmap import DATA_WIDTH, LoadMap, Region
from ..pe import TernaryCode, drive_pe_array
from ..result_path import ResultPath, result_regions
from .base import EngineComponent, Param
from .rowblock import (CONFIG_COL_BLOCKS, CONFIG_REGISTERS, CONFIG_REQUANT,  # noqa: F401 (C header)
                       CONFIG_ROW_BLOCKS, RowBlockControl, RowBlockEngine, RowBlockLayer)

__all__ = ["TernaryEngine", "TernaryComponent", "TernaryLayer"]

#: Product of an int8 activation and a ternary weight: [-128, 128] needs 9 signed bits.
OPERAND_WIDTH = TernaryCode.operand_width



def _levels(fan_in: int) -> int:
    return math.ceil(math.log2(fan_in)) if fan_in > 1 else 0


def _full_groups(params: dict) -> int:
    return math.ceil(params["max_rows"] / params["pe"]) * math.ceil(params["max_cols"] / params["fan_in"])


class TernaryEngine(RowBlockEngine):
    """Generator of the ternary adder-tree engine.

    Parameters
    ----------
    pe : int
        Processing elements (rows per row block), in ``[1, 1024]``.
    fan_in : int
        Adder-tree operands per PE (columns per group), in ``[1, 256]``; default 64.
    max_rows : int
        Largest ``M`` the engine accepts, in ``[1, 65536]``; default 512.
    max_cols : int
        Largest ``N`` the engine accepts, in ``[1, 65536]``; default 512.
    tree_stages : int
        Pipeline registers in each adder tree, in ``[0, max(1, ceil(log2(fan_in)))]``;
        default the maximum (a register after every adder level, for Fmax).
    max_groups : int
        Depth of the weight memories: the most non-zero groups a layer may have, in
        ``[1, ceil(max_rows / pe) * ceil(max_cols / fan_in)]``; default the upper bound (dense).
        Sparse deployments set it lower to save memory.

    Raises
    ------
    TypeError, ValueError
        If a parameter is unknown, not an integer or out of its range.
    """

    name = "ternary"
    top = "ternary_engine"
    CODE = TernaryCode
    #: ``empty``: the row block has no non-zero group; its stale operands are discarded at the
    #: accumulators.
    TAG_FLAGS = ("first", "last", "empty")
    PARAMS = (
        Param("pe", "processing elements (rows per row block)", 32, 1, 1024),
        Param("fan_in", "adder-tree operands per PE (columns per group)", 64, 1, 256),
        Param("max_rows", "largest number of output rows M", 512, 1, 65536),
        Param("max_cols", "largest number of input columns N", 512, 1, 65536),
        Param("tree_stages", "pipeline registers per adder tree",
              lambda p: max(1, _levels(p["fan_in"])), 0,
              lambda p: max(1, _levels(p["fan_in"]))),
        Param("max_groups", "weight memory depth: most non-zero groups a layer may have",
              lambda p: _full_groups(p), 1, lambda p: _full_groups(p)),
    )

    # Derived sizes -----------------------------------------------------------------------

    @property
    def tiles(self) -> int:
        """Weight memory depth, in groups."""
        return self.max_groups

    @property
    def tree_width(self) -> int:
        return adder_tree_output_width(self.fan_in, OPERAND_WIDTH)

    @property
    def acc_width(self) -> int:
        return self.tree_width + _levels(self.col_blocks_max)

    @property
    def bitmap_chunks(self) -> int:
        return math.ceil(self.col_blocks_max / DATA_WIDTH)

    # The Engine contract -----------------------------------------------------------------

    @property
    def latency(self) -> int:
        # act write -> bank full (1), sequencer start (1), memory read (1), read data
        # register (1), tree, result path.
        return 1 + 1 + 1 + 1 + self.tree_stages + ResultPath.LATENCY

    @property
    def load_map(self) -> LoadMap:
        return LoadMap([
            self.config_region(),
            Region("bitmap", [("row_block", self.row_blocks_max), ("chunk", self.bitmap_chunks)],
                   "skip bitmap: bit c of row block r is set if group (r, c) has a non-zero "
                   "weight; 32 column blocks per chunk"),
            *result_regions(self.row_blocks_max, self.pe),
            self.weights_region(self.tiles,
                                "stored group t (non-zero groups in row-block then column "
                                "order), PE row p, 32-bit chunk k of the 2-bit codes (column j "
                                "at bits 2j+1:2j)"),
        ])

    def derived(self) -> dict:
        return dict(super().derived(), bitmap_bits=self.row_blocks_max * self.col_blocks_max)

    def component(self) -> "TernaryComponent":
        return TernaryComponent(self)

    def layer(self, weights: Mapping[str, np.ndarray]) -> "TernaryLayer":
        return TernaryLayer(self, weights)


class TernaryLayer(RowBlockLayer):
    """A ternary weight matrix cut into this engine's groups.

    Raises
    ------
    TypeError
        If ``w`` is missing or not an int8 array.
    ValueError
        If ``w`` is not 2-D, exceeds ``max_rows`` x ``max_cols``, or holds a value outside
        {-1, 0, +1} (naming the first offending row and column); or the requantization keys
        are incomplete or out of range.
    """

    def __init__(self, engine: TernaryEngine, weights: Mapping[str, np.ndarray]):
        if "w" not in weights:
            raise TypeError("weights npz has no key 'w' (int8 ternary matrix of shape (M, N))")
        w = np.asarray(weights["w"])
        ternary_model.check_weights(w)
        super().__init__(engine, w, weights)
        # groups[r, c] is the (pe, fan_in) tile of row block r and column block c.
        self.groups = self.tiles
        self.nonzero_groups = np.any(self.groups != 0, axis=(2, 3))
        if self.nonzero_groups.sum() > engine.max_groups:
            raise ValueError(f"weights w have {int(self.nonzero_groups.sum())} non-zero groups of "
                             f"{engine.pe} x {engine.fan_in}; this engine stores at most "
                             f"{engine.max_groups} (max_groups)")

    def load_beats(self) -> list[tuple[int, int]]:
        engine, load_map = self.engine, self.engine.load_map
        beats = self.config_beats()

        for row_block in range(self.row_blocks):
            bitmap = sum(1 << c for c in np.flatnonzero(self.nonzero_groups[row_block]))
            for chunk in range(engine.bitmap_chunks):
                beats.append((load_map.address("bitmap", row_block=row_block, chunk=chunk),
                              (bitmap >> (chunk * DATA_WIDTH)) & 0xFFFFFFFF))

        tile = 0
        for row_block, col_block in zip(*np.nonzero(self.nonzero_groups)):
            for pe_row, codes in enumerate(self.groups[row_block, col_block]):
                word = sum((int(code) & 0b11) << (2 * column) for column, code in enumerate(codes))
                for chunk in range(engine.weight_chunks):
                    beats.append((load_map.address("weights", tile=tile, pe=pe_row, chunk=chunk),
                                  (word >> (chunk * DATA_WIDTH)) & 0xFFFFFFFF))
            tile += 1
        return beats

    def reference(self, x: np.ndarray) -> np.ndarray:
        return ternary_model.reference(self.w, self.check_inputs(x), requant=self.requant,
                                     bias=self.bias)

    def counters(self, x: np.ndarray) -> dict:
        """Work of a batch.

        ``useful_ops`` counts the weight positions of the layer inside the groups the engine
        must process (the non-zero groups), once per input vector: the work left after
        PE-wise structured pruning. ``nonzero_weight_ops`` counts only non-zero weights, and
        ``dense_ops`` the whole ``M x N`` matrix.

        Energy (:mod:`secateur.models.energy`; ``issued`` = the cycles of one vector, ``G``
        = its non-zero groups, ``B`` the batch; padded lanes of edge groups count, as the
        hardware runs them): per vector, ``G * pe`` weight words of ``weight_word_width``
        bits and ``row_blocks`` bitmap words read (``sram_bit``); ``issued`` activation words
        of ``8 * fan_in`` bits read and ``input_beats_per_vector`` written (``sram_bit``);
        ``issued * pe`` adder-tree passes over ``fan_in`` 9-bit operands
        (:func:`~secateur.models.energy.tree_add_bits`, ``add_bit``; a ternary "multiply" is
        a sign select and costs nothing here) and as many accumulator updates of
        ``acc_width`` bits (``add_bit`` + ``register_bit``); with requantization, ``pe``
        lanes per row block (:meth:`~secateur.models.energy.Actions.requantize`).
        """
        from ...models import energy

        batch = self.check_inputs(x).shape[0]
        engine = self.engine
        valid_rows = np.minimum(engine.pe, self.rows - np.arange(self.row_blocks) * engine.pe)
        valid_cols = np.minimum(engine.fan_in,
                                self.cols - np.arange(self.col_blocks) * engine.fan_in)
        positions = int((np.outer(valid_rows, valid_cols) * self.nonzero_groups).sum())
        issued = int(np.maximum(1, self.nonzero_groups.sum(axis=1)).sum())
        stored = int(self.nonzero_groups.sum())
        actions = energy.Actions(sram_bit=batch * (
            stored * engine.pe * engine.weight_word_width
            + self.row_blocks * engine.bitmap_chunks * DATA_WIDTH
            + (issued + self.input_beats_per_vector) * engine.act_lanes * 8))
        actions["add_bit"] += batch * issued * engine.pe * energy.tree_add_bits(
            engine.fan_in, OPERAND_WIDTH)
        actions.accumulate(batch * issued * engine.pe, engine.acc_width)
        actions.result_path(batch * self.row_blocks * engine.pe, engine.acc_width, self.requant,
                            self.bias)
        return {
            "useful_ops": batch * positions,
            "nonzero_weight_ops": batch * int(np.count_nonzero(self.w)),
            "dense_ops": batch * self.rows * self.cols,
            "lanes": engine.lanes,
            "groups": int(self.nonzero_groups.size),
            "nonzero_groups": int(self.nonzero_groups.sum()),
            "ideal_cycles": batch * issued,
            "weight_bits": int(self.nonzero_groups.sum()) * engine.pe * 2 * engine.fan_in,
            "bitmap_bits": self.row_blocks * self.col_blocks,
            **energy.estimate(actions),
        }


class TernaryComponent(EngineComponent):
    """The ternary engine's hardware; see the module documentation."""

    def __init__(self, engine: TernaryEngine):
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

        # Memories ------------------------------------------------------------------------
        bitmap_width = DATA_WIDTH * engine.bitmap_chunks
        bitmap_mem = memory.Memory(shape=unsigned(bitmap_width), depth=row_blocks_max, init=[])
        act_mem = memory.Memory(shape=data.ArrayLayout(signed(8), fan_in),
                                depth=2 * col_blocks_max, init=[])
        m.submodules.bitmap_mem = bitmap_mem
        m.submodules.act_mem = act_mem

        bitmap_write = bitmap_mem.write_port(granularity=DATA_WIDTH)
        act_write = act_mem.write_port()
        # Not transparent: the load port writes the bitmap only while the sequencer is idle,
        # at least two edges before it reads it. A transparent read port maps to LUT RAM
        # with its register on the address side, which put the memory's read and the group
        # search and the activation memory's read in one cycle (ternary's critical path).
        bitmap_read = bitmap_mem.read_port()
        act_read = act_mem.read_port()

        # PEs: one weight memory, adder tree and accumulator each (secateur.hdl.pe).
        tag_layout = engine.pe_tag_layout
        pes = control.add_pes(m)

        # Input vectors fill one bank of the activation buffer while the other is computed.
        bank_full = Signal(2)
        write_bank, read_bank = Signal(), Signal()
        write_col = Signal(range(max(2, col_blocks_max)))
        busy = Signal()
        none_in_flight = Signal()

        # Load port -----------------------------------------------------------------------
        idle = ~busy & (bank_full == 0) & (write_col == 0) & none_in_flight
        m.d.comb += self.load.ready.eq(idle)
        load_data = self.load.payload.data
        regions = self.load_map.decode(self.load.payload.addr)
        loading = self.load.valid & self.load.ready

        control.decode_loads(m, regions, loading, load_data, pes)
        bitmap_selected, bitmap_fields = regions["bitmap"]
        m.d.comb += [
            bitmap_write.addr.eq(bitmap_fields["row_block"]),
            bitmap_write.data.eq(load_data.replicate(engine.bitmap_chunks)),
            bitmap_write.en.eq(Mux(loading & bitmap_selected,
                                   1 << bitmap_fields["chunk"], 0)),
        ]

        # Activation input ----------------------------------------------------------------
        configured = col_blocks != 0
        m.d.comb += [
            self.act.ready.eq(configured & ~bank_full.bit_select(write_bank, 1)),
            act_write.addr.eq(Mux(write_bank, write_col + col_blocks_max, write_col)),
            act_write.data.eq(self.act.payload),
            act_write.en.eq(self.act.valid & self.act.ready),
        ]
        set_full = Signal(2)
        clear_full = Signal(2)
        with m.If(self.act.valid & self.act.ready):
            with m.If(write_col == col_blocks - 1):
                m.d.sync += [write_col.eq(0), write_bank.eq(~write_bank)]
                m.d.comb += set_full.eq(1 << write_bank)
            with m.Else():
                m.d.sync += write_col.eq(write_col + 1)
        m.d.sync += bank_full.eq((bank_full | set_full) & ~clear_full)

        # Sequencer: one group per cycle, skipping zero groups ----------------------------
        row_block = Signal(range(max(2, row_blocks_max)))
        issued_cols = Signal(col_blocks_max)
        tile = Signal(range(max(2, engine.tiles)))

        remaining = Signal(col_blocks_max)
        lowest = Signal(col_blocks_max)
        m.d.comb += [
            remaining.eq(bitmap_read.data[:col_blocks_max] & ~issued_cols),
            lowest.eq(remaining & (~remaining + 1)),
        ]
        col = Signal(range(max(2, col_blocks_max)))
        for index in reversed(range(col_blocks_max)):
            with m.If(remaining[index]):
                m.d.comb += col.eq(index)
        has_group = remaining.any()
        # At most one bit left: a tree of (any, several) pairs, without the carry chain of
        # `lowest`, because this decides the issue in the same cycle (for Fmax).
        pairs = [(bit, 0) for bit in remaining]
        while len(pairs) > 1:
            pairs = [(a[0] | b[0], a[1] | b[1] | (a[0] & b[0])) if b is not None else a
                     for a, b in zip(pairs[0::2], pairs[1::2] + [None])]
        last_group = ~pairs[0][1] if col_blocks_max > 1 else 1
        first_group = issued_cols == 0
        last_row_block = row_block == row_blocks - 1

        # Stage 1 holds the issued beat while its weights and activations are read, stage 2
        # the read data (a block RAM's clock-to-output time leaves no room for logic behind it
        # in the same cycle).
        s1_valid, s2_valid = Signal(), Signal()
        s1_tag, s2_tag = Signal(tag_layout), Signal(tag_layout)
        array_ready = Signal()
        s2_advance = ~s2_valid | array_ready
        s1_advance = ~s1_valid | s2_advance
        issue = busy & s1_advance

        row_block_next = Signal.like(row_block)
        m.d.comb += row_block_next.eq(row_block)
        with m.If(issue & last_group):
            m.d.comb += row_block_next.eq(Mux(last_row_block, 0, row_block + 1))
        m.d.sync += row_block.eq(row_block_next)
        m.d.comb += [bitmap_read.addr.eq(row_block_next), bitmap_read.en.eq(1)]

        with m.If(issue):
            with m.If(has_group):
                m.d.sync += [tile.eq(tile + 1), issued_cols.eq(issued_cols | lowest)]
            with m.If(last_group):
                m.d.sync += issued_cols.eq(0)
                with m.If(last_row_block):
                    # The last group's activations are read at this edge, so the bank is free.
                    m.d.sync += [tile.eq(0), read_bank.eq(~read_bank),
                                 busy.eq(bank_full.bit_select(~read_bank, 1))]
                    m.d.comb += clear_full.eq(1 << read_bank)
        with m.Elif(~busy):
            m.d.sync += busy.eq(bank_full.bit_select(read_bank, 1))

        with m.If(s1_advance):
            m.d.sync += [s1_valid.eq(issue), s1_tag.empty.eq(~has_group),
                         s1_tag.first.eq(first_group), s1_tag.last.eq(last_group),
                         s1_tag.row_block.eq(row_block)]
        m.d.comb += [act_read.addr.eq(Mux(read_bank, col + col_blocks_max, col)),
                     act_read.en.eq(s1_advance)]

        s2_acts = Signal(act_read.data.shape())
        with m.If(s2_advance):
            m.d.sync += [s2_valid.eq(s1_valid), s2_tag.eq(s1_tag), s2_acts.eq(act_read.data)]

        # An empty row block's stale operands are discarded at the accumulators (tag.empty).
        m.d.comb += array_ready.eq(drive_pe_array(
            m, pes, code=engine.CODE(), read_addr=tile, read_en=s1_advance, acts=s2_acts,
            advance=s2_advance, valid=s2_valid, tag=s2_tag, result_path=result_path))
        wiring.connect(m, result_path.o, wiring.flipped(self.res))

        # Row blocks issued but not yet delivered; the load port waits for zero.
        # Row blocks started and not yet delivered (an empty one is a single beat, so a
        # generous bound: the pipeline holds at most a few dozen beats).
        m.d.comb += none_in_flight.eq(control.none_in_flight(
            m, issue & last_group, self.res.valid & self.res.ready,
            bound=4 * row_blocks_max + 64))
        return m
