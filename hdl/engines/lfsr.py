"""The LGPS engine: a sparse int8 PE array whose column indices come from LFSRs (``index=lfsr``)
or, as the baseline it is measured against, from an index memory (``index=csr``).

Arithmetic
    ``y[b, m] = sum_n w[m, n] * x[b, n]`` exactly, with int8 weights and activations
    (golden model: :func:`secateur.models.lfsr.reference`), then the shared requantizer if the
    layer carries ``mult``/``shift``/``relu``.

Sparsity
    Row ``m`` keeps ``k`` columns, the LFSR mask of its seed (see :mod:`secateur.models.lfsr`
    for the convention). Only the ``k`` kept values of each row are stored, in the order the
    LFSR visits their columns; a kept position may hold zero.

Structure
    ``pe`` PEs; PE ``p`` computes row ``r * pe + p`` of row block ``r``. The PEs run in lock
    step: in each cycle each PE multiplies one kept weight by the activation of its column
    and accumulates, so a row block takes ``k`` cycles and a vector ``ceil(M / pe) * k``.
    Each PE fetches its own activation (its columns differ from the other PEs'), so the
    activation buffer has one read port per PE.

Index sources
    ``lfsr``: each PE has an :class:`~secateur.hdl.lfsr.LFSRSequencer`, loaded with the row's
    seed as each row begins (seeds are fetched two rows ahead, so a seed reaches a sequencer
    from a register); the only per-row index state stored is the seed. ``csr``: each PE reads the column of each kept weight from an index memory beside
    the weight memory (CSR with a fixed ``k`` per row needs no row-pointer array). Everything
    else is the same hardware, so the two differ exactly by the index storage and the index
    logic.

Rejected LFSR states are free
    The sequencers look ``lookahead`` states ahead each cycle (default
    ``lfsr_width(max_cols) + 1``): at most ``w`` rejected states follow one another, so the
    default never stalls and a vector takes exactly ``ceil(M / pe) * k`` issue cycles. A
    shorter look-ahead trades area for stalls: when any PE lands on a rejected state, all PEs
    wait while it hunts.

Pipeline
    index (the counters; the sequencers or the index memory) -> index register (each PE's
    column and the beat's tags) -> issue (weight and activation reads) -> operand register
    (the weight and the selected activation) -> product register -> accumulate ->
    :class:`~secateur.hdl.result_path.ResultPath` (input, result and operand
    registers, requantizer, output buffer), whose ``i.ready`` is its credit. A result that
    cannot be handed on stalls the whole pipeline, issue included; the index stage runs one beat ahead into the index register
    and waits there (so while the array waits for a vector, that vector's first beat is
    ready, and the index register adds no latency). A load rewinds the index stage to the
    first beat. The column that selects an activation comes from the index register, the
    read data and the products are registered, because a block RAM's clock-to-output time
    and a DSP multiply each fill a cycle at the target clock (150 MHz on ECP5).

Widths (derived, so nothing can overflow)
    Products lie in ``[-16256, 16384]``: 16 signed bits. Accumulators hold ``16384 * max_cols``
    in magnitude: ``bit_length(16384 * max_cols) + 1`` signed bits.

Loading
    Regions ``config`` (row blocks, columns, ``k``, requantizer control), ``mult``,
    ``weights`` (one int8 per beat, kept weight ``j`` of row block ``r`` at tile
    ``r * k + j``) and ``seeds`` (``lfsr``) or ``indices`` (``csr``).
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, wiring

from ...models import lfsr as lfsr_model
from ..actbuffer import ActivationBuffer
from ..lfsr import LFSRSequencer, LFSRTable
from ..loadmap import LoadMap, Region
from ..result_path import CONTROL_DOC, ResultPath, linear_placements, result_regions
from ..shared import SharedModule
from .base import Engine, EngineComponent, Layer, Param

__all__ = ["INDEX_SOURCES", "LFSREngine", "LFSRComponent", "LFSRLayer"]

#: Where the PEs' column indices come from.
INDEX_SOURCES = ("lfsr", "csr")

#: |int8 * int8| <= 128 * 128; the product is 16 signed bits.
PRODUCT_MAX = 128 * 128
PRODUCT_WIDTH = 16

# Offsets within the `config` region.
CONFIG_ROW_BLOCKS, CONFIG_COLS, CONFIG_K, CONFIG_REQUANT = 0, 1, 2, 3
CONFIG_REGISTERS = 4

# Last beats of row blocks that can be in flight after they issued: one in each of the read
# data, operand and product registers, and what the result path holds. The load port waits
# until none is left.
_IN_FLIGHT_MAX = 3 + ResultPath.CAPACITY


def _max_width(params: dict) -> int:
    return lfsr_model.lfsr_width(params["max_cols"])


class LFSREngine(Engine):
    """Generator of the LGPS engine and its CSR baseline.

    Parameters
    ----------
    pe : int
        Processing elements (rows per row block), in ``[1, 1024]``; default 32.
    index : str
        ``"lfsr"`` (indices regenerated by LFSRs) or ``"csr"`` (indices stored); default lfsr.
    max_rows : int
        Largest ``M``, in ``[1, 65536]``; default 256.
    max_cols : int
        Largest ``N``, in ``[1, 65535]`` (LFSR widths 2 to 16); default 1024.
    weight_depth : int
        Kept weights stored per PE, in ``[1, 2**20]``; a layer needs ``ceil(M / pe) * k``.
        Default ``ceil(max_rows / pe) * ceil(max_cols / 2)``: room for any layer of density
        up to 50% (LGPS layers are sparse; set it higher for denser ones).
    act_lanes : int
        int8 activations per ``act`` beat, a power of two in ``[1, 64]``; default 8.
    lookahead : int
        LFSR states examined per PE per cycle (lfsr only), in
        ``[1, lfsr_width(max_cols) + 1]``; default the maximum, which never stalls.

    Raises
    ------
    TypeError, ValueError
        If a parameter is unknown, of the wrong type or out of its range, or ``act_lanes``
        is not a power of two.
    """

    name = "lfsr"
    top = "lfsr_engine"
    WEIGHT_KEYS = ("w", "seeds", "k")
    PARAMS = (
        Param("pe", "processing elements (rows per row block)", 32, 1, 1024),
        Param("index", "column index source: lfsr (regenerated) or csr (stored baseline)",
              "lfsr", choices=INDEX_SOURCES),
        Param("max_rows", "largest number of output rows M", 256, 1, 65536),
        Param("max_cols", "largest number of input columns N", 1024, 1, (1 << 16) - 1),
        Param("weight_depth", "kept weights stored per PE (ceil(M/pe) * k must fit)",
              lambda p: math.ceil(p["max_rows"] / p["pe"]) * math.ceil(p["max_cols"] / 2),
              1, 1 << 20),
        Param("act_lanes", "int8 activations per act beat (a power of two)", 8, 1, 64),
        Param("lookahead", "LFSR states examined per PE per cycle (lfsr only; the maximum "
              "never stalls)", lambda p: _max_width(p) + 1, 1, lambda p: _max_width(p) + 1),
    )

    def _check(self, params: dict) -> None:
        lanes = params["act_lanes"]
        if lanes & (lanes - 1):
            raise ValueError(f"{self.name} engine parameter act_lanes must be a power of two "
                             f"in [1, 64], not {lanes}")

    # Derived sizes -----------------------------------------------------------------------

    @property
    def row_blocks_max(self) -> int:
        return math.ceil(self.max_rows / self.pe)

    @property
    def lfsr_width(self) -> int:
        """State bits of the LFSRs: the width of the widest layer, ``lfsr_width(max_cols)``."""
        return _max_width(self._params)

    @property
    def index_width(self) -> int:
        """Bits of a stored column index (csr)."""
        return self.bits(self.max_cols)

    @property
    def act_depth(self) -> int:
        """``act`` beats of the widest vector: words per activation bank."""
        return math.ceil(self.max_cols / self.act_lanes)

    @property
    def acc_width(self) -> int:
        return (PRODUCT_MAX * self.max_cols).bit_length() + 1

    @property
    def stall_free(self) -> bool:
        """Whether every vector takes exactly ``ceil(M / pe) * k`` issue cycles."""
        return self.index == "csr" or self.lookahead >= self.lfsr_width + 1

    # The Engine contract -----------------------------------------------------------------

    @property
    def act_lanes(self) -> int:
        return self._params["act_lanes"]

    @property
    def act_lane_bits(self) -> int:
        """Bits of a column that select its lane within an ``act`` word."""
        return (self.act_lanes - 1).bit_length()

    @property
    def res_lanes(self) -> int:
        return self.pe

    @property
    def lanes(self) -> int:
        return self.pe

    @property
    def latency(self) -> int:
        # For a one-weight row block: bank full (1), read (1), operands (1), product (1), then
        # the result path (its input register loads as the last product accumulates). Each
        # further kept weight adds a cycle. The index register adds none: an idle engine
        # holds the next vector's first beat there.
        return 1 + 1 + 1 + 1 + ResultPath.LATENCY

    @property
    def load_map(self) -> LoadMap:
        regions = [
            Region("config", [("register", CONFIG_REGISTERS)],
                   "0: row blocks ceil(M/pe); 1: columns N; 2: kept columns per row k; "
                   "3: " + CONTROL_DOC),
            *result_regions(self.row_blocks_max, self.pe),
            Region("weights", [("tile", self.weight_depth), ("pe", self.pe)],
                   "kept weight j of row r*pe+p at tile r*k+j, PE p, in LFSR order; int8 in "
                   "data[7:0]"),
        ]
        if self.index == "lfsr":
            regions.append(Region("seeds", [("row_block", self.row_blocks_max), ("pe", self.pe)],
                                  f"LFSR seed of row r*pe+p, in [1, N], in "
                                  f"data[{self.lfsr_width - 1}:0]"))
        else:
            regions.append(Region("indices", [("tile", self.weight_depth), ("pe", self.pe)],
                                  f"column of the kept weight at the same tile and PE, in "
                                  f"data[{self.index_width - 1}:0]"))
        return LoadMap(regions)

    def derived(self) -> dict:
        storage = {
            "weight_bits": self.weight_depth * self.pe * 8,
            "index_bits": self.weight_depth * self.pe * self.index_width
            if self.index == "csr" else 0,
            "seed_bits": self.row_blocks_max * self.pe * self.lfsr_width
            if self.index == "lfsr" else 0,
        }
        return dict(super().derived(), row_blocks_max=self.row_blocks_max,
                    lfsr_width=self.lfsr_width, index_width=self.index_width,
                    act_depth=self.act_depth,
                    stall_free=self.stall_free, **storage)

    def shared_modules(self) -> dict:
        if self.index != "lfsr":
            return {}
        return {"sequencer": SharedModule(f"{self.top}_sequencer",
                                          lambda: LFSRSequencer(**self.lfsr_geometry))}

    @property
    def lfsr_geometry(self) -> dict:
        """What the LFSR table and every sequencer are built for (their ``max_width`` and
        ``lookahead``)."""
        return dict(max_width=self.lfsr_width, lookahead=self.lookahead)

    def component(self) -> "LFSRComponent":
        return LFSRComponent(self)

    def layer(self, weights: Mapping[str, np.ndarray]) -> "LFSRLayer":
        return LFSRLayer(self, weights)


class LFSRLayer(Layer):
    """An LGPS layer checked against this engine.

    Raises
    ------
    TypeError
        If ``w``, ``seeds`` or ``k`` is missing or of the wrong type.
    ValueError
        If the layer breaks the LFSR structure (naming the first offending row and column,
        or row for a seed), exceeds ``max_rows`` x ``max_cols`` or ``weight_depth``, or the
        requantization keys or the bias are incomplete or out of range.
    """

    def __init__(self, engine: LFSREngine, weights: Mapping[str, np.ndarray]):
        super().__init__(engine)
        for key, what in (("w", "int8 matrix of shape (M, N)"), ("seeds", "one seed per row"),
                          ("k", "kept columns per row")):
            if key not in weights:
                raise TypeError(f"weights npz has no key {key!r} ({what})")
        w, seeds, k, indices = lfsr_model.check_weights(weights["w"], weights["seeds"],
                                                        weights["k"])
        rows, cols = w.shape
        if rows > engine.max_rows or cols > engine.max_cols:
            raise ValueError(f"weights w has shape {w.shape}; this engine takes at most "
                             f"{engine.max_rows} x {engine.max_cols} (max_rows x max_cols)")
        self.rows, self.cols, self.w, self.seeds, self.k = rows, cols, w, seeds, k
        self.row_blocks = math.ceil(rows / engine.pe)
        if self.row_blocks * k > engine.weight_depth:
            raise ValueError(f"layer needs ceil(M/pe) * k = {self.row_blocks} * {k} = "
                             f"{self.row_blocks * k} stored weights per PE; this engine has "
                             f"weight_depth {engine.weight_depth}")
        self._read_result_keys(weights)
        self.indices = indices
        self.kept = np.take_along_axis(w, indices, axis=1)

    @property
    def input_beats_per_vector(self) -> int:
        return math.ceil(self.cols / self.engine.act_lanes)

    @property
    def result_beats_per_vector(self) -> int:
        return self.row_blocks

    def _padded(self, values: np.ndarray, fill: int) -> np.ndarray:
        """Per-row values padded to whole row blocks: ``(row_blocks, pe, ...)``."""
        pe = self.engine.pe
        padded = np.full((self.row_blocks * pe,) + values.shape[1:], fill, dtype=np.int64)
        padded[:self.rows] = values
        return padded.reshape((self.row_blocks, pe) + values.shape[1:])

    def load_beats(self) -> list[tuple[int, int]]:
        engine, load_map = self.engine, self.engine.load_map
        beats = [
            (load_map.address("config", register=CONFIG_ROW_BLOCKS), self.row_blocks),
            (load_map.address("config", register=CONFIG_COLS), self.cols),
            (load_map.address("config", register=CONFIG_K), self.k),
        ]
        beats += self.result_path_beats(CONFIG_REQUANT, linear_placements(self.rows, engine.pe))

        # Rows past M in the last row block compute zeros: weight 0 from a legal seed.
        kept = self._padded(self.kept, 0)                     # (row_blocks, pe, k)
        if engine.index == "lfsr":
            seeds = self._padded(self.seeds, 1)
            for row_block, lane in np.ndindex(seeds.shape):
                beats.append((load_map.address("seeds", row_block=row_block, pe=lane),
                              int(seeds[row_block, lane])))
        else:
            indices = self._padded(self.indices, 0)
        for row_block in range(self.row_blocks):
            for position in range(self.k):
                tile = row_block * self.k + position
                for lane in range(engine.pe):
                    beats.append((load_map.address("weights", tile=tile, pe=lane),
                                  int(kept[row_block, lane, position]) & 0xFF))
                    if engine.index == "csr":
                        beats.append((load_map.address("indices", tile=tile, pe=lane),
                                      int(indices[row_block, lane, position])))
        return beats

    def _input_lanes(self, vector: np.ndarray) -> np.ndarray:
        lanes = self.engine.act_lanes
        padded = np.zeros(self.input_beats_per_vector * lanes, dtype=np.int8)
        padded[:self.cols] = vector
        return padded.reshape(-1, lanes)

    def _result_rows(self, lanes: np.ndarray) -> np.ndarray:
        return lanes.reshape(-1)[:self.rows]

    def reference(self, x: np.ndarray) -> np.ndarray:
        return lfsr_model.reference(self.w, self.seeds, self.k, self.check_inputs(x),
                                    requant=self.requant, bias=self.bias)

    def counters(self, x: np.ndarray) -> dict:
        """Work and storage of a batch.

        ``useful_ops`` counts the kept positions (``M * k`` multiply-accumulates per
        vector, kept zeros included: the engine does them). ``ideal_cycles`` is
        ``ceil(M / pe) * k`` per vector. Storage is that of this layer's information at
        its own width: ``weight_bits = 8 M k``; ``index_bits = M k ceil(log2 N)`` for csr
        and 0 for lfsr; ``seed_bits = M lfsr_width(N)`` for lfsr and 0 for csr.

        Energy (:mod:`secateur.models.energy`; ``C = ceil(M / pe) * k`` issue cycles per
        vector, every PE busy in each, padded rows of the last row block included): per cycle,
        one weight word of ``8 * pe`` bits, with csr one index word of ``pe * index_width``
        bits, and ``pe`` activation words of ``8 * act_lanes`` bits (one read port per PE)
        read (``sram_bit``); ``pe`` int8 products (``int8_mult``) and accumulator updates of
        ``acc_width`` bits (``add_bit`` + ``register_bit``); with lfsr, ``pe`` LFSR state
        updates of ``lfsr_width`` bits (``lfsr_step_bit``: the look-ahead jumps over rejected
        states within the cycle, and its parity logic is not counted). Per vector:
        ``input_beats_per_vector`` activation words written, with lfsr one seed word of
        ``pe * lfsr_width`` bits read per row block (``sram_bit``), and with requantization
        ``pe`` lanes per row block (:meth:`~secateur.models.energy.Actions.requantize`).
        Stall cycles of a short look-ahead are not counted.
        """
        from ...models import energy

        batch = self.check_inputs(x).shape[0]
        engine = self.engine
        lfsr = engine.index == "lfsr"
        issued = batch * self.row_blocks * self.k * engine.pe
        actions = energy.Actions(
            sram_bit=issued * (8 + 8 * engine.act_lanes + (0 if lfsr else engine.index_width))
            + batch * self.input_beats_per_vector * engine.act_lanes * 8
            + (batch * self.row_blocks * engine.pe * engine.lfsr_width if lfsr else 0),
            int8_mult=issued,
            lfsr_step_bit=issued * engine.lfsr_width if lfsr else 0)
        actions.accumulate(issued, engine.acc_width)
        actions.result_path(batch * self.row_blocks * engine.pe, engine.acc_width, self.requant,
                            self.bias)
        return {
            "useful_ops": batch * self.rows * self.k,
            "nonzero_weight_ops": batch * int(np.count_nonzero(self.w)),
            "dense_ops": batch * self.rows * self.cols,
            "lanes": engine.lanes,
            "k": self.k,
            "density": self.k / self.cols,
            "ideal_cycles": batch * self.row_blocks * self.k,
            "weight_bits": self.rows * self.k * 8,
            "index_bits": 0 if lfsr else self.rows * self.k * engine.bits(self.cols),
            "seed_bits": self.rows * lfsr_model.lfsr_width(self.cols) if lfsr else 0,
            **energy.estimate(actions),
        }


class LFSRComponent(EngineComponent):
    """The LGPS engine's hardware; see the module documentation."""

    def __init__(self, engine: LFSREngine):
        self._engine = engine
        super().__init__(load_map=engine.load_map, act_lanes=engine.act_lanes,
                         res_lanes=engine.res_lanes, res_width=engine.res_width)

    def elaborate(self, platform):
        engine = self._engine
        pe, lfsr = engine.pe, engine.index == "lfsr"
        row_blocks_max, max_cols = engine.row_blocks_max, engine.max_cols
        m = Module()

        # Configuration registers ---------------------------------------------------------
        row_blocks = Signal(range(row_blocks_max + 1))
        cols = Signal(range(max_cols + 1))
        k = Signal(range(max_cols + 1))
        m.submodules.result_path = result_path = ResultPath(
            lanes=pe, acc_width=engine.acc_width, row_blocks=row_blocks_max)

        # Memories: one word holds the values of all PEs, which read the same tile ---------
        weight_mem = memory.Memory(shape=data.ArrayLayout(signed(8), pe),
                                   depth=engine.weight_depth, init=[])
        m.submodules.weight_mem = weight_mem
        if lfsr:
            index_mem = memory.Memory(shape=data.ArrayLayout(unsigned(engine.lfsr_width), pe),
                                      depth=row_blocks_max, init=[])
            m.submodules.seed_mem = index_mem
        else:
            index_mem = memory.Memory(shape=data.ArrayLayout(unsigned(engine.index_width), pe),
                                      depth=engine.weight_depth, init=[])
            m.submodules.index_mem = index_mem
        m.submodules.buffer = buffer = ActivationBuffer(
            lanes=engine.act_lanes, depth=engine.act_depth, read_ports=pe)

        weight_write = weight_mem.write_port(granularity=1)  # one lane per beat
        index_write = index_mem.write_port(granularity=1)
        weight_read = weight_mem.read_port()
        index_read = index_mem.read_port()

        # Load port -----------------------------------------------------------------------
        in_flight = Signal(range(_IN_FLIGHT_MAX + 1))
        m.d.comb += self.load.ready.eq(buffer.empty & (in_flight == 0))
        load_data = self.load.payload.data
        regions = self.load_map.decode(self.load.payload.addr)
        loading = self.load.valid & self.load.ready

        config_selected, config_fields = regions["config"]
        with m.If(loading & config_selected):
            with m.Switch(config_fields["register"]):
                with m.Case(CONFIG_ROW_BLOCKS):
                    m.d.sync += row_blocks.eq(load_data)
                with m.Case(CONFIG_COLS):
                    m.d.sync += cols.eq(load_data)
                with m.Case(CONFIG_K):
                    m.d.sync += k.eq(load_data)
        result_path.decode_loads(m, regions, loading, load_data, CONFIG_REQUANT)

        def lane_write(port, region, address_field, width):
            # A beat writes one PE's lane of a word, through that lane's write enable.
            selected, fields = regions[region]
            m.d.comb += [
                port.addr.eq(fields[address_field]),
                port.data.eq(load_data[:width].replicate(pe)),
                port.en.eq(Mux(loading & selected, 1 << fields["pe"], 0)),
            ]

        lane_write(weight_write, "weights", "tile", 8)
        if lfsr:
            lane_write(index_write, "seeds", "row_block", engine.lfsr_width)
        else:
            lane_write(index_write, "indices", "tile", engine.index_width)

        lane_bits = engine.act_lane_bits
        m.d.comb += buffer.beats.eq((cols + engine.act_lanes - 1) >> lane_bits)
        m.d.comb += [
            buffer.i.payload.eq(self.act.payload),
            buffer.i.valid.eq(self.act.valid),
            self.act.ready.eq(buffer.i.ready),
        ]

        # Index stage: the next beat's column indices, computed ahead of issue ----------------
        # The counters walk the beats of a vector (kept weight `position` of row block
        # `row_block`, at `tile`) and each beat's indices are registered, with its tags, in
        # the index register (`r_*`) that the issue stage reads. While the array waits for
        # a vector, the next one's first beat waits there, so the registering costs no
        # latency; the column selecting an activation comes from a register, not from a
        # block RAM (a block RAM's clock-to-output time leaves no room for logic behind it).
        row_block = Signal(range(max(2, row_blocks_max)))
        position = Signal(range(max(2, max_cols)))
        tile = Signal(range(max(2, engine.weight_depth)))
        last_in_row = Signal()      # position == k - 1, registered: it steers the sequencers
        last_row_block = row_block == row_blocks - 1

        # A load rewinds the index stage to the first beat; it stays put in the cycle after
        # the last load beat too, when the index or seed memory's read data may still be
        # that of a word the beat rewrote.
        settle = Signal(init=1)
        m.d.sync += settle.eq(loading)
        hold = loading | settle

        advance = Signal()      # the pipeline moves (defined by the accumulator stage)
        indices_valid = Signal()
        primed = Signal()
        r_valid = Signal()
        issue = Signal()
        generate = Signal()     # the beat of the counters enters the index register
        m.d.comb += [
            issue.eq(r_valid & buffer.full & advance),
            generate.eq(~hold & primed & indices_valid & (~r_valid | issue)),
        ]

        tile_next = Signal.like(tile)
        m.d.comb += tile_next.eq(tile)
        with m.If(hold):
            m.d.sync += [position.eq(0), row_block.eq(0), last_in_row.eq(k == 1)]
            m.d.comb += tile_next.eq(0)
        with m.Elif(generate):
            with m.If(last_in_row):
                m.d.sync += [position.eq(0), last_in_row.eq(k == 1)]
                with m.If(last_row_block):
                    m.d.sync += row_block.eq(0)
                    m.d.comb += tile_next.eq(0)
                with m.Else():
                    m.d.sync += row_block.eq(row_block + 1)
                    m.d.comb += tile_next.eq(tile + 1)
            with m.Else():
                m.d.sync += [position.eq(position + 1), last_in_row.eq(position + 2 == k)]
                m.d.comb += tile_next.eq(tile + 1)
        m.d.sync += tile.eq(tile_next)

        if lfsr:
            m.submodules.lfsr_table = table = LFSRTable(**engine.lfsr_geometry)
            # The table's outputs are registered: constant while the engine runs, and a
            # layer's are ready before the index stage leaves its hold.
            mask = Signal.like(table.mask)
            jumps = Signal.like(table.jumps)
            m.d.comb += table.n.eq(cols)
            m.d.sync += [mask.eq(table.mask), jumps.eq(table.jumps)]

            # Seeds are fetched two rows ahead: `seeds` holds the seed of the row after the
            # current beat's, which a sequencer loads when that row begins, and the seed
            # memory's read data the one after (row block `fetch`). After a hold, two
            # priming steps fill both (their sequencer loads are discarded), so the
            # sequencers start on row block 0.
            fetch = Signal.like(row_block)
            fetch_next = Mux(fetch == row_blocks - 1, 0, fetch + 1)
            priming = Signal(range(3), init=2)
            m.d.comb += primed.eq(priming == 0)
            row_change = Signal()
            m.d.comb += row_change.eq(~hold & (~primed | (generate & last_in_row)))
            with m.If(hold):
                m.d.sync += [fetch.eq(0), priming.eq(2)]
            with m.Elif(row_change):
                m.d.sync += fetch.eq(fetch_next)
                with m.If(~primed):
                    m.d.sync += priming.eq(priming - 1)
            m.d.comb += [index_read.addr.eq(Mux(hold, 0, fetch_next)),
                         index_read.en.eq(hold | row_change)]

            columns, valids = [], []
            sequencer_module = engine.shared_modules()["sequencer"]
            for lane in range(pe):
                seed = Signal(engine.lfsr_width, name=f"seed{lane}")
                with m.If(row_change):
                    m.d.sync += seed.eq(index_read.data[lane])
                sequencer = sequencer_module.instantiate(m, f"lfsr{lane}")
                m.d.comb += [
                    sequencer.n.eq(cols), sequencer.mask.eq(mask), sequencer.jumps.eq(jumps),
                    sequencer.seed.eq(seed),
                    # From registers only: the next state is the next row's seed when the
                    # presented one ends its row (or while priming).
                    sequencer.start.eq(~primed | (last_in_row & sequencer.valid)),
                    sequencer.advance.eq(row_change | generate),
                ]
                columns.append(sequencer.state - 1)
                valids.append(sequencer.valid)
            # A PE on a rejected state (only with a short look-ahead) holds up the array.
            m.d.comb += indices_valid.eq(Cat(*valids).all())
            column_width = engine.lfsr_width
        else:
            # Reading at the next tile makes this cycle's index word the current beat's.
            m.d.comb += [index_read.addr.eq(tile_next), index_read.en.eq(1),
                         indices_valid.eq(1), primed.eq(1)]
            columns = [index_read.data[lane] for lane in range(pe)]
            column_width = engine.index_width

        # The index register.
        tag_layout = data.StructLayout({"first": 1, "last": 1,
                                        "row_block": range(max(2, row_blocks_max))})
        r_tag, r_tile, r_release = Signal(tag_layout), Signal.like(tile), Signal()
        r_columns = [Signal(column_width, name=f"r_column{lane}") for lane in range(pe)]
        with m.If(generate):
            m.d.sync += [r_valid.eq(1), r_tile.eq(tile), r_tag.first.eq(position == 0),
                         r_tag.last.eq(last_in_row), r_tag.row_block.eq(row_block),
                         r_release.eq(last_in_row & last_row_block)]
            m.d.sync += [r_column.eq(column) for r_column, column in zip(r_columns, columns)]
        with m.Elif(issue | hold):
            m.d.sync += r_valid.eq(0)

        # Stage 1: weight and activation reads ---------------------------------------------
        s1_valid, s1_tag = Signal(), Signal(tag_layout)
        # The lane of each PE's activation within the word it reads (none at act_lanes 1, where
        # a zero-width register would be a [-1:0] wire in the Verilog).
        s1_lanes = [Signal(lane_bits, name=f"s1_act_lane{lane}") for lane in range(pe)
                    if lane_bits]
        m.d.comb += buffer.release.eq(issue & r_release)
        with m.If(advance):
            m.d.sync += [s1_valid.eq(issue), s1_tag.eq(r_tag)]
        m.d.comb += [weight_read.addr.eq(r_tile), weight_read.en.eq(advance)]
        for lane, (column, port) in enumerate(zip(r_columns, buffer.read)):
            m.d.comb += [port.addr.eq(column >> lane_bits), port.en.eq(advance)]
            if lane_bits:
                with m.If(advance):
                    m.d.sync += s1_lanes[lane].eq(column[:lane_bits])

        # Stage 2: operands. Each PE's activation is selected from the word it read and
        # registered with its weight: a block RAM's clock-to-output time and the select leave
        # no room for the multiply in the same cycle.
        s2_valid, s2_tag = Signal(), Signal(tag_layout)
        s2_weights = [Signal(signed(8), name=f"s2_weight{lane}") for lane in range(pe)]
        s2_acts = [Signal(signed(8), name=f"s2_act{lane}") for lane in range(pe)]
        with m.If(advance):
            m.d.sync += [s2_valid.eq(s1_valid), s2_tag.eq(s1_tag)]
            for lane, port in enumerate(buffer.read):
                m.d.sync += [s2_weights[lane].eq(weight_read.data[lane]),
                             s2_acts[lane].eq(port.data[s1_lanes[lane] if lane_bits else 0])]

        # Stage 3: products ----------------------------------------------------------------
        s3_valid, s3_tag = Signal(), Signal(tag_layout)
        products = [Signal(signed(PRODUCT_WIDTH), name=f"product{lane}") for lane in range(pe)]
        with m.If(advance):
            m.d.sync += [s3_valid.eq(s2_valid), s3_tag.eq(s2_tag)]
            m.d.sync += [product.eq(weight * act)
                         for product, weight, act in zip(products, s2_weights, s2_acts)]

        # Accumulators; each row block's totals go to the result path ----------------------
        accept = s3_valid & (~s3_tag.last | result_path.i.ready)
        m.d.comb += [
            advance.eq(~s3_valid | accept),
            result_path.i.valid.eq(s3_valid & s3_tag.last),
            result_path.i.payload.row_block.eq(s3_tag.row_block),
        ]
        for lane, product in enumerate(products):
            acc = Signal(signed(engine.acc_width), name=f"acc{lane}")
            total = Signal(signed(engine.acc_width), name=f"total{lane}")
            m.d.comb += [total.eq(Mux(s3_tag.first, 0, acc) + product),
                         result_path.i.payload.acc[lane].eq(total)]
            with m.If(accept):
                m.d.sync += acc.eq(total)
        wiring.connect(m, result_path.o, wiring.flipped(self.res))

        # Row blocks issued but not yet delivered; the load port waits for none.
        delivered = self.res.valid & self.res.ready
        m.d.sync += in_flight.eq(in_flight + (issue & r_tag.last) - delivered)
        return m
