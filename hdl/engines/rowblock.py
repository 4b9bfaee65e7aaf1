"""What the row-block engines (ternary and dense) share: the tiling of a layer into row blocks
of ``pe`` rows and column blocks of ``fan_in`` columns, their configuration registers and load
regions, and the load decoding of their PE array (:class:`~secateur.hdl.pe.WeightStationaryPE`).

Tiling
    PE ``p`` computes row ``r * pe + p`` of row block ``r``; column block ``c`` holds columns
    ``c * fan_in ... c * fan_in + fan_in - 1``. Edge tiles are zero-padded. A vector arrives
    as one ``act`` beat per column block and leaves as one ``res`` beat per row block.

Configuration registers (region ``config``; the same for both engines, so host code is shared)
    0 ``ROW_BLOCKS``: ``ceil(M / pe)``; 1 ``COL_BLOCKS``: ``ceil(N / fan_in)``; 2 ``REQUANT``:
    requantizer control (:func:`~secateur.hdl.result_path.control_word`).

Weights (region ``weights``)
    Word ``tile`` of PE ``p``, 32-bit ``chunk`` ``k``: the weight codes of that PE's row of the
    tile, column ``j`` at bits ``[code_width * j, code_width * (j + 1))`` of the word
    (:func:`~secateur.hdl.pe.weight_word_width`).
"""

from __future__ import annotations

import math

import numpy as np
from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data

from ..loadmap import DATA_WIDTH, Region
from ..pe import WeightStationaryPE, weight_word_width
from ..result_path import CONTROL_DOC, ResultPath, linear_placements
from ..shared import SharedModule
from .base import Engine, Layer

__all__ = ["CONFIG_ROW_BLOCKS", "CONFIG_COL_BLOCKS", "CONFIG_REQUANT", "CONFIG_REGISTERS",
           "RowBlockEngine", "RowBlockLayer", "RowBlockControl"]

CONFIG_ROW_BLOCKS, CONFIG_COL_BLOCKS, CONFIG_REQUANT = 0, 1, 2
CONFIG_REGISTERS = 3


class RowBlockEngine(Engine):
    """An engine of ``pe`` weight-stationary PEs of ``fan_in`` lanes; subclasses set ``CODE``
    (the PE's operand code) and have the parameters ``pe``, ``fan_in``, ``max_rows`` and
    ``max_cols``."""

    CODE = None
    #: One-bit flags of the sideband that travels with a row block through the PEs' adder
    #: trees, before its ``row_block`` index (see :attr:`pe_tag_layout`).
    TAG_FLAGS = ("first", "last")

    @property
    def pe_tag_layout(self) -> data.StructLayout:
        """The sideband through the PEs' adder trees (see
        :class:`~secateur.hdl.pe.WeightStationaryPE`)."""
        return data.StructLayout({**{flag: 1 for flag in self.TAG_FLAGS},
                                  "row_block": range(max(2, self.row_blocks_max))})

    def shared_modules(self) -> dict:
        return {"pe": SharedModule(f"{self.top}_pe", lambda: WeightStationaryPE(
            code=self.CODE(), fan_in=self.fan_in, depth=self.tiles, acc_width=self.acc_width,
            tree_stages=self.tree_stages, tag_shape=self.pe_tag_layout))}

    @property
    def row_blocks_max(self) -> int:
        return math.ceil(self.max_rows / self.pe)

    @property
    def col_blocks_max(self) -> int:
        return math.ceil(self.max_cols / self.fan_in)

    @property
    def weight_chunks(self) -> int:
        """32-bit load beats per weight word."""
        return math.ceil(self.CODE.code_width * self.fan_in / DATA_WIDTH)

    @property
    def weight_word_width(self) -> int:
        return weight_word_width(self.CODE.code_width, self.fan_in)

    @property
    def act_lanes(self) -> int:
        return self.fan_in

    @property
    def res_lanes(self) -> int:
        return self.pe

    @property
    def lanes(self) -> int:
        return self.pe * self.fan_in

    def config_region(self) -> Region:
        return Region("config", [("register", CONFIG_REGISTERS)],
                      "0: row blocks ceil(M/pe); 1: column blocks ceil(N/fan_in); 2: "
                      + CONTROL_DOC)

    def weights_region(self, depth: int, what: str) -> Region:
        return Region("weights", [("tile", depth), ("pe", self.pe), ("chunk", self.weight_chunks)],
                      what)

    def derived(self) -> dict:
        return dict(super().derived(), row_blocks_max=self.row_blocks_max,
                    col_blocks_max=self.col_blocks_max, tiles=self.tiles,
                    tree_width=self.tree_width,
                    weight_bits=self.tiles * self.pe * self.weight_word_width)


class RowBlockLayer(Layer):
    """A weight matrix ``w`` (already checked by the engine's model) cut into tiles:
    ``self.tiles[r, c]`` is the ``(pe, fan_in)`` tile of row block ``r`` and column block
    ``c``.

    Raises
    ------
    ValueError
        If ``w`` exceeds ``max_rows`` x ``max_cols``, or the requantization keys or the bias
        are incomplete or out of range.
    """

    def __init__(self, engine: RowBlockEngine, w: np.ndarray, weights):
        super().__init__(engine)
        rows, cols = w.shape
        if rows > engine.max_rows or cols > engine.max_cols:
            raise ValueError(f"weights w has shape {w.shape}; this engine takes at most "
                             f"{engine.max_rows} x {engine.max_cols} (max_rows x max_cols)")
        self.rows, self.cols, self.w = rows, cols, w
        self._read_result_keys(weights)
        self.row_blocks = math.ceil(rows / engine.pe)
        self.col_blocks = math.ceil(cols / engine.fan_in)
        padded = np.zeros((self.row_blocks * engine.pe, self.col_blocks * engine.fan_in),
                          dtype=np.int8)
        padded[:rows, :cols] = w
        self.tiles = padded.reshape(self.row_blocks, engine.pe, self.col_blocks,
                                    engine.fan_in).transpose(0, 2, 1, 3)

    @property
    def input_beats_per_vector(self) -> int:
        return self.col_blocks

    @property
    def result_beats_per_vector(self) -> int:
        return self.row_blocks

    def config_beats(self) -> list[tuple[int, int]]:
        """Load beats of the configuration registers and the result path."""
        engine, load_map = self.engine, self.engine.load_map
        beats = [
            (load_map.address("config", register=CONFIG_ROW_BLOCKS), self.row_blocks),
            (load_map.address("config", register=CONFIG_COL_BLOCKS), self.col_blocks),
        ]
        return beats + self.result_path_beats(CONFIG_REQUANT,
                                              linear_placements(self.rows, engine.pe))

    def _input_lanes(self, vector: np.ndarray) -> np.ndarray:
        padded = np.zeros(self.col_blocks * self.engine.fan_in, dtype=np.int8)
        padded[:self.cols] = vector
        return padded.reshape(self.col_blocks, self.engine.fan_in)

    def _result_rows(self, lanes: np.ndarray) -> np.ndarray:
        return lanes.reshape(-1)[:self.rows]


class RowBlockControl:
    """The configuration registers and the result path of a row-block engine, and the load
    decoding of the regions ``config``, ``mult``, ``bias`` and ``weights`` into them and into the PEs'
    weight memories.

    Attributes
    ----------
    row_blocks, col_blocks : Signal
        The configuration registers ``ROW_BLOCKS`` and ``COL_BLOCKS``.
    result_path : ResultPath
        Added to ``m`` as ``result_path``.
    """

    def __init__(self, m: Module, engine: RowBlockEngine):
        self.row_blocks = Signal(range(engine.row_blocks_max + 1))
        self.col_blocks = Signal(range(engine.col_blocks_max + 1))
        m.submodules.result_path = self.result_path = ResultPath(
            lanes=engine.pe, acc_width=engine.acc_width, row_blocks=engine.row_blocks_max)
        self._engine = engine

    def none_in_flight(self, m: Module, started, delivered, bound: int) -> Signal:
        """Count the row blocks that have started (``started``: one starts at this edge) and
        are not yet delivered (``delivered``: one leaves on ``res`` at this edge), at most
        ``bound``; the returned signal is high when none is, which the load port waits for.

        The events are registered before they are counted: ``started`` comes from the
        sequencer's issue logic, and an adder behind it did not fit a 150 MHz cycle. The
        count then lags by a cycle, so a start still in its register counts as in flight
        (a delivery still in its register only delays the load port by a cycle).
        """
        outstanding = Signal(range(bound + 1))
        started_late, delivered_late, none = Signal(), Signal(), Signal()
        m.d.sync += [started_late.eq(started), delivered_late.eq(delivered),
                     outstanding.eq(outstanding + started_late - delivered_late)]
        m.d.comb += none.eq((outstanding == 0) & ~started_late)
        return none

    def add_pes(self, m: Module) -> list:
        """The engine's PEs, instances ``pe0`` ... ``pe<P-1>`` of its shared PE module; returns
        their ports (the members of :class:`~secateur.hdl.pe.WeightStationaryPE`)."""
        module = self._engine.shared_modules()["pe"]
        return [module.instantiate(m, f"pe{index}") for index in range(self._engine.pe)]

    def decode_loads(self, m: Module, regions: dict, loading, load_data, pes: list) -> None:
        """Decode a load beat (``loading``: it transfers now) of the shared regions."""
        result_path = self.result_path
        config_selected, config_fields = regions["config"]
        with m.If(loading & config_selected):
            with m.Switch(config_fields["register"]):
                with m.Case(CONFIG_ROW_BLOCKS):
                    m.d.sync += self.row_blocks.eq(load_data)
                with m.Case(CONFIG_COL_BLOCKS):
                    m.d.sync += self.col_blocks.eq(load_data)
        result_path.decode_loads(m, regions, loading, load_data, CONFIG_REQUANT)
        weights_selected, weight_fields = regions["weights"]
        for index, unit in enumerate(pes):
            m.d.comb += [
                unit.write.addr.eq(weight_fields["tile"]),
                unit.write.data.eq(load_data.replicate(self._engine.weight_chunks)),
                unit.write.en.eq(Mux(loading & weights_selected & (weight_fields["pe"] == index),
                                     1 << weight_fields["chunk"], 0)),
            ]
