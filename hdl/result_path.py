"""The result path every engine ends in: one beat of accumulators per row block, requantized
with that block's multipliers, through a register slice, onto the ``res`` stream.

Hardware (:class:`ResultPath`)::

    i (acc[lanes], row_block) -> StreamRegister -> [result register + multiplier memory read]
                              -> Requantizer -> StreamRegister -> o (the engine's ``res``)

Both register slices make ``ready`` a register: ``i.ready`` does not depend on ``o.ready``,
so the stall of a full output does not reach the PE array's clock enables in the cycle it
happens (at 150 MHz that path, through every register of the requantizer and the array, was
the critical one).

Host side: the load map regions ``mult`` (one signed 16-bit multiplier per output row, lane
``r % lanes`` of row block ``r // lanes``) and the requantizer control word, and
:func:`requant_load_beats`, which writes them for a layer. An engine puts
:func:`mult_region` in its load map, gives the control word a register of its region
``config``, and lets :meth:`ResultPath.decode_loads` connect both to the load port.

Requantizer control word: bit 0 enable, bit 1 relu, bits 8..13 shift.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from ..models.requant import MULT_BITS, RequantParams
from .loadmap import LoadMap, Region
from .requant import Requantizer
from .stream import Signature, StreamRegister

__all__ = ["ENABLE_BIT", "RELU_BIT", "SHIFT_LSB", "mult_region", "control_word",
           "requant_load_beats", "ResultPath"]

ENABLE_BIT, RELU_BIT, SHIFT_LSB = 0, 1, 8


def mult_region(row_blocks: int, lanes: int) -> Region:
    """The load map region of the per-row multipliers."""
    return Region("mult", [("row_block", row_blocks), ("lane", lanes)],
                  "requantizer multiplier of output row row_block*lanes+lane, signed 16 bits "
                  "in data[15:0]")


def control_word(requant: RequantParams | None) -> int:
    """The requantizer control word of a layer (0: disabled, raw accumulators)."""
    if requant is None:
        return 0
    return (1 << ENABLE_BIT) | (int(requant.relu) << RELU_BIT) | (requant.shift << SHIFT_LSB)


def requant_load_beats(load_map: LoadMap, requant: RequantParams | None, rows: int,
                       lanes: int) -> list[tuple[int, int]]:
    """The ``mult`` beats of a layer whose output row ``r`` is lane ``r % lanes`` of row block
    ``r // lanes`` (none when requantization is off)."""
    if requant is None:
        return []
    mults = requant.mult_per_channel(rows)
    return [(load_map.address("mult", row_block=row // lanes, lane=row % lanes),
             int(mult) & ((1 << MULT_BITS) - 1)) for row, mult in enumerate(mults)]


class ResultPath(wiring.Component):
    """Accumulated row blocks in, requantized (or raw) results out.

    Parameters
    ----------
    lanes : int
        Results per row block (the ``res`` lanes), ``>= 1``.
    acc_width : int
        Signed accumulator width, in ``[8, 64]``.
    row_blocks : int
        Depth of the multiplier memory (row blocks of the largest layer), ``>= 1``.

    Raises
    ------
    TypeError, ValueError
        If a parameter is not an integer in its range.

    Members
    -------
    i : ``In(Signature(StructLayout({"acc": ArrayLayout(signed(acc_width), lanes), "row_block": range(row_blocks)})))``
    o : ``Out(Signature(ArrayLayout(signed(acc_width), lanes)))``
    mult_write : ``In(StructLayout({"row_block", "lane", "data": signed(16), "en": 1}))``
        A multiplier write from the load port.
    control_write : ``In(StructLayout({"data": unsigned(32), "en": 1}))``
        A requantizer control word write from the load port.
    """

    def __init__(self, *, lanes: int, acc_width: int, row_blocks: int):
        for name, value in (("lanes", lanes), ("acc_width", acc_width), ("row_blocks", row_blocks)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"ResultPath {name} must be an integer, not {value!r}")
        if lanes < 1 or row_blocks < 1:
            raise ValueError(f"ResultPath lanes and row_blocks must be >= 1, not {lanes} and "
                             f"{row_blocks}")
        self._lanes, self._acc_width, self._row_blocks = lanes, acc_width, row_blocks
        self._requantizer = Requantizer(lanes=lanes, acc_width=acc_width)
        super().__init__({
            "i": In(Signature(data.StructLayout({
                "acc": data.ArrayLayout(signed(acc_width), lanes),
                "row_block": range(max(2, row_blocks)),
            }))),
            "o": Out(Signature(data.ArrayLayout(signed(acc_width), lanes))),
            "mult_write": In(data.StructLayout({"row_block": range(max(2, row_blocks)),
                                                "lane": range(max(2, lanes)),
                                                "data": signed(MULT_BITS), "en": 1})),
            "control_write": In(data.StructLayout({"data": 32, "en": 1})),
        })

    #: Cycles from a beat accepted on ``i`` to its result valid on ``o``: the input register
    #: slice, the result register, the requantizer and the output register slice.
    LATENCY = 1 + 1 + Requantizer.LATENCY + 1
    #: Beats the result path can hold: one per register of :attr:`LATENCY`, and the skid
    #: register of each register slice. An engine's count of beats in flight is sized from it.
    CAPACITY = LATENCY + 2

    @property
    def latency(self) -> int:
        return self.LATENCY

    def decode_loads(self, m: Module, regions: dict, loading, load_data,
                     control_register: int) -> None:
        """Connect the load port's writes of the region ``mult`` and of the requantizer
        control word, configuration register ``control_register`` of the region ``config``
        (``regions`` is the engine's :meth:`LoadMap.decode` of the load address, ``loading``
        says a beat transfers now)."""
        config_selected, config_fields = regions["config"]
        mult_selected, mult_fields = regions["mult"]
        m.d.comb += [
            self.control_write.data.eq(load_data),
            self.control_write.en.eq(loading & config_selected
                                     & (config_fields["register"] == control_register)),
            self.mult_write.row_block.eq(mult_fields["row_block"]),
            self.mult_write.lane.eq(mult_fields["lane"]),
            self.mult_write.data.eq(load_data[:MULT_BITS]),
            self.mult_write.en.eq(loading & mult_selected),
        ]

    def elaborate(self, platform):
        m = Module()
        lanes = self._lanes
        m.submodules.requantizer = requantizer = self._requantizer

        enable, relu, shift = Signal(), Signal(), Signal(6)
        with m.If(self.control_write.en):
            m.d.sync += [enable.eq(self.control_write.data[ENABLE_BIT]),
                         relu.eq(self.control_write.data[RELU_BIT]),
                         shift.eq(self.control_write.data[SHIFT_LSB:])]

        m.submodules.mult_mem = mult_mem = memory.Memory(
            # Depth 1 would give a zero-width address, which Verilog cannot declare.
            shape=data.ArrayLayout(signed(MULT_BITS), lanes), depth=max(2, self._row_blocks),
            init=[])
        mult_write = mult_mem.write_port(granularity=1)  # one lane (an ArrayLayout element)
        mult_read = mult_mem.read_port()
        m.d.comb += [
            mult_write.addr.eq(self.mult_write.row_block),
            mult_write.data.eq(self.mult_write.data.replicate(lanes)),
            mult_write.en.eq(Mux(self.mult_write.en, 1 << self.mult_write.lane, 0)),
        ]

        # The result register; the multipliers are read at the edge that loads it, so they
        # line up with it.
        m.submodules.input = arriving = StreamRegister(self.i.payload.shape())
        wiring.connect(m, wiring.flipped(self.i), arriving.i)
        result_valid = Signal()
        m.d.comb += arriving.o.ready.eq(~result_valid | requantizer.i.ready)
        accept = arriving.o.valid & arriving.o.ready
        with m.If(requantizer.i.ready):
            m.d.sync += result_valid.eq(0)
        with m.If(accept):
            m.d.sync += [requantizer.i.payload.acc.eq(arriving.o.payload.acc),
                         result_valid.eq(1)]
        m.d.comb += [
            mult_read.addr.eq(arriving.o.payload.row_block),
            mult_read.en.eq(accept),
            requantizer.i.payload.mult.eq(mult_read.data),
            requantizer.i.valid.eq(result_valid),
            requantizer.enable.eq(enable),
            requantizer.relu.eq(relu),
            requantizer.shift.eq(shift),
        ]

        m.submodules.output = output = StreamRegister(self.o.payload.shape())
        wiring.connect(m, requantizer.o, output.i)
        wiring.connect(m, output.o, wiring.flipped(self.o))
        return m
