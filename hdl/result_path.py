"""The result path every engine ends in: one beat of accumulators per row block, plus that
block's biases, requantized with its multipliers, into an output buffer, onto ``res``.

Hardware (:class:`ResultPath`)::

    i (acc[lanes], row_block) -> input register -> [result register + bias and multiplier
                                                    memory reads]
                              -> operand register (result, bias, multiplier)
                              -> acc + bias -> Requantizer -> output buffer -> o (``res``)

The operand register keeps the block RAMs' clock-to-output time out of the bias adder's
cycle (block RAM output, then a 33-bit carry chain, was permdiag's critical path).

Credits, not stalls: everything from ``i`` to the output buffer advances on every clock
edge. A beat enters only with a credit, and there are as many credits as the output buffer
and its register hold, so a beat can always be stored when it arrives however long ``o``
stalls. ``o.ready`` therefore reaches only the output register and the buffer's pointers,
not the thousands of pipeline registers behind them (when the requantizer stalled with
``o``, the fan-out of its stall to every one of its registers' clock enables was the
critical path of the CIM and permuted-diagonal engines). An engine that issues beats a
fixed ``lead`` cycles before they reach ``i`` (through its own free-running drain
pipeline) takes the credit when it issues: :attr:`ResultPath.room` and
:attr:`ResultPath.reserve`. With ``lead = 0``, ``i`` is an ordinary stream whose ``ready``
is the credit, a register.

The golden model is :func:`secateur.models.requant.result_path`. ``acc + bias`` is exact: the
``res`` lanes are :func:`~secateur.models.requant.result_width` bits wide,
``max(acc_width, 32) + 1``, and carry ``acc + bias`` when the requantizer is off.

Host side: the load map regions ``mult`` (one signed 16-bit multiplier per output row) and
``bias`` (one signed 32-bit bias per output row), at the same ``(row_block, lane)`` as the
row's result, and the requantizer control word, and :func:`result_path_load_beats`, which
writes them for a layer. An engine puts :func:`result_regions` in its load map, gives the
control word a register of its region ``config``, and lets :meth:`ResultPath.decode_loads`
connect all three to the load port.

Requantizer control word (:data:`CONTROL_DOC`): bit 0 enable, bit 1 relu, bit 2 bias, bits
8..13 shift. With bit 2 clear the bias memory is ignored (``bias = 0``), so a layer without a
bias writes no ``bias`` beats.
"""

from __future__ import annotations

from typing import Iterable

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from ..models.requant import BIAS_BITS, MULT_BITS, RequantParams, result_width
from .loadmap import LoadMap, Region
from .requant import Requantizer
from .stream import Signature

__all__ = ["ENABLE_BIT", "RELU_BIT", "BIAS_BIT", "SHIFT_LSB", "CONTROL_DOC", "result_regions",
           "control_word", "linear_placements", "result_path_load_beats", "ResultPath"]

ENABLE_BIT, RELU_BIT, BIAS_BIT, SHIFT_LSB = 0, 1, 2, 8
#: How every engine's ``config`` region documents the requantizer control word.
CONTROL_DOC = "requantizer control, bit 0 enable, bit 1 relu, bit 2 bias, bits 8..13 shift"


def result_regions(row_blocks: int, lanes: int, row: str | None = None) -> list[Region]:
    """The load map regions ``mult`` and ``bias`` of a result path whose row blocks hold
    ``lanes`` results; ``row`` says which output row ``(row_block, lane)`` is (by default
    ``row_block * lanes + lane``)."""
    row = row or f"output row row_block*{lanes}+lane"
    return [Region("mult", [("row_block", row_blocks), ("lane", lanes)],
                   f"requantizer multiplier of {row}, signed {MULT_BITS} bits in "
                   f"data[{MULT_BITS - 1}:0]"),
            Region("bias", [("row_block", row_blocks), ("lane", lanes)],
                   f"bias of {row}, signed {BIAS_BITS} bits in data[{BIAS_BITS - 1}:0], added "
                   f"to the accumulator before the requantizer (control bit 2)")]


def control_word(requant: RequantParams | None, bias=None) -> int:
    """The requantizer control word of a layer (0: no bias, raw accumulators)."""
    word = 0 if bias is None else 1 << BIAS_BIT
    if requant is None:
        return word
    return (word | (1 << ENABLE_BIT) | (int(requant.relu) << RELU_BIT)
            | (requant.shift << SHIFT_LSB))


def linear_placements(rows: int, lanes: int) -> list[tuple[int, int, int]]:
    """``(row_block, lane, row)`` of a layer whose output row ``r`` is lane ``r % lanes`` of
    row block ``r // lanes``."""
    return [(row // lanes, row % lanes, row) for row in range(rows)]


def result_path_load_beats(load_map: LoadMap, requant: RequantParams | None, bias,
                           rows: int, placements: Iterable[tuple[int, int, int | None]]
                           ) -> list[tuple[int, int]]:
    """The ``mult`` and ``bias`` beats of a layer of ``rows`` outputs: one of each per
    placement ``(row_block, lane, row)`` (``row`` ``None`` for a lane that holds no output,
    which gets 0), none of a kind that the layer does not have."""
    placements = list(placements)
    beats = []
    for region, values, bits in (
            ("mult", None if requant is None else requant.mult_per_channel(rows), MULT_BITS),
            ("bias", bias, BIAS_BITS)):
        if values is None:
            continue
        beats += [(load_map.address(region, row_block=row_block, lane=lane),
                   (0 if row is None else int(values[row])) & ((1 << bits) - 1))
                  for row_block, lane, row in placements]
    return beats


class ResultPath(wiring.Component):
    """Accumulated row blocks in, ``acc + bias`` requantized (or raw) results out.

    Parameters
    ----------
    lanes : int
        Results per row block (the ``res`` lanes), ``>= 1``.
    acc_width : int
        Signed accumulator width, in ``[8, 63]``.
    row_blocks : int
        Depth of the multiplier and bias memories (row blocks of the largest layer), ``>= 1``.
    lead : int
        Cycles from the engine's issue of a beat, where it takes a credit, to the beat on
        ``i``, in ``[0, 16]``; default 0 (``i`` is an ordinary stream whose ``ready`` is the
        credit).

    Raises
    ------
    TypeError, ValueError
        If a parameter is not an integer in its range.

    Members
    -------
    i : ``In(Signature(StructLayout({"acc": ArrayLayout(signed(acc_width), lanes), "row_block": range(row_blocks)})))``
        With ``lead > 0`` ``i.ready`` is constant high: every beat was issued with a credit.
    o : ``Out(Signature(ArrayLayout(signed(result_width(acc_width)), lanes)))``
    room : ``Out(1)``, only with ``lead > 0``
        A credit is free: a beat issued in this cycle (``reserve`` high) will find room.
    reserve : ``In(1)``, only with ``lead > 0``
        The engine issues a beat in this cycle, which reaches ``i`` ``lead`` cycles later.
        Only while ``room`` is high.
    mult_write : ``In(StructLayout({"row_block", "lane", "data": signed(16), "en": 1}))``
        A multiplier write from the load port.
    bias_write : ``In(StructLayout({"row_block", "lane", "data": signed(32), "en": 1}))``
        A bias write from the load port.
    control_write : ``In(StructLayout({"data": unsigned(32), "en": 1}))``
        A requantizer control word write from the load port.
    """

    #: Cycles from a beat on ``i`` to its result valid on ``o``: the input register, the
    #: result register, the operand register, the requantizer and the output register.
    LATENCY = 1 + 1 + 1 + Requantizer.LATENCY + 1
    #: Beats the result path can hold with ``lead = 0``, its credits: one per cycle of
    #: :attr:`LATENCY` and one more, the fewest that keep a beat entering every cycle while
    #: ``o`` takes one every cycle (a credit returns the cycle after its result leaves). An
    #: engine's count of beats in flight is sized from it (add ``lead``).
    CAPACITY = LATENCY + 1
    LEAD_MAX = 16

    def __init__(self, *, lanes: int, acc_width: int, row_blocks: int, lead: int = 0):
        for name, value in (("lanes", lanes), ("acc_width", acc_width), ("row_blocks", row_blocks),
                            ("lead", lead)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"ResultPath {name} must be an integer, not {value!r}")
        if lanes < 1 or row_blocks < 1:
            raise ValueError(f"ResultPath lanes and row_blocks must be >= 1, not {lanes} and "
                             f"{row_blocks}")
        if not 8 <= acc_width <= 63:
            raise ValueError(f"ResultPath acc_width must be in [8, 63], not {acc_width}")
        if not 0 <= lead <= self.LEAD_MAX:
            raise ValueError(f"ResultPath lead must be in [0, {self.LEAD_MAX}], not {lead}")
        self._lanes, self._acc_width, self._row_blocks = lanes, acc_width, row_blocks
        self._lead = lead
        self._width = result_width(acc_width)
        self._requantizer = Requantizer(lanes=lanes, acc_width=self._width)
        address = range(max(2, row_blocks))
        members = {
            "i": In(Signature(data.StructLayout({
                "acc": data.ArrayLayout(signed(acc_width), lanes),
                "row_block": address,
            }), always_ready=lead > 0)),
            "o": Out(Signature(data.ArrayLayout(signed(self._width), lanes))),
            "mult_write": In(data.StructLayout({"row_block": address, "lane": range(max(2, lanes)),
                                                "data": signed(MULT_BITS), "en": 1})),
            "bias_write": In(data.StructLayout({"row_block": address, "lane": range(max(2, lanes)),
                                                "data": signed(BIAS_BITS), "en": 1})),
            "control_write": In(data.StructLayout({"data": 32, "en": 1})),
        }
        if lead:
            members.update(room=Out(1, init=1), reserve=In(1))
        super().__init__(members)

    @property
    def latency(self) -> int:
        return self.LATENCY

    @property
    def lead(self) -> int:
        return self._lead

    @property
    def capacity(self) -> int:
        """Credits: beats issued and not yet delivered on ``o``, at most."""
        return self.CAPACITY + self._lead

    def issue(self, m: Module, want) -> Signal:
        """The engine's issue of a beat that reaches ``i`` :attr:`lead` cycles later: high
        when ``want`` is and a credit is free, and the credit taken (with ``lead = 0``, the
        beat is ``i``'s transfer)."""
        issue = Signal(name="result_issue")
        if self._lead:
            m.d.comb += [issue.eq(want & self.room), self.reserve.eq(issue)]
        else:
            m.d.comb += issue.eq(want & self.i.ready)
        return issue

    def decode_loads(self, m: Module, regions: dict, loading, load_data,
                     control_register: int) -> None:
        """Connect the load port's writes of the regions ``mult`` and ``bias`` and of the
        requantizer control word, configuration register ``control_register`` of the region ``config``
        (``regions`` is the engine's :meth:`LoadMap.decode` of the load address, ``loading``
        says a beat transfers now)."""
        config_selected, config_fields = regions["config"]
        mult_selected, mult_fields = regions["mult"]
        bias_selected, bias_fields = regions["bias"]
        m.d.comb += [
            self.control_write.data.eq(load_data),
            self.control_write.en.eq(loading & config_selected
                                     & (config_fields["register"] == control_register)),
            self.mult_write.row_block.eq(mult_fields["row_block"]),
            self.mult_write.lane.eq(mult_fields["lane"]),
            self.mult_write.data.eq(load_data[:MULT_BITS]),
            self.mult_write.en.eq(loading & mult_selected),
            self.bias_write.row_block.eq(bias_fields["row_block"]),
            self.bias_write.lane.eq(bias_fields["lane"]),
            self.bias_write.data.eq(load_data[:BIAS_BITS]),
            self.bias_write.en.eq(loading & bias_selected),
        ]

    def elaborate(self, platform):
        m = Module()
        lanes = self._lanes
        m.submodules.requantizer = requantizer = self._requantizer

        enable, relu, bias_enable, shift = Signal(), Signal(), Signal(), Signal(6)
        with m.If(self.control_write.en):
            m.d.sync += [enable.eq(self.control_write.data[ENABLE_BIT]),
                         relu.eq(self.control_write.data[RELU_BIT]),
                         bias_enable.eq(self.control_write.data[BIAS_BIT]),
                         shift.eq(self.control_write.data[SHIFT_LSB:])]

        # Credits: beats issued and not yet delivered. `room` is a register, so neither the
        # engine's issue nor `i.ready` waits for the comparison.
        m.submodules.output = output = _OutputBuffer(self.o.payload.shape(),
                                                     depth=self.capacity - 1)
        wiring.connect(m, output.o, wiring.flipped(self.o))
        issued = Signal(range(self.capacity + 1))
        if self._lead:
            room, reserve = self.room, self.reserve
        else:
            room, reserve = Signal(init=1, name="room"), Signal(name="reserve")
            m.d.comb += [self.i.ready.eq(room), reserve.eq(self.i.valid & room)]
        issued_next = issued + reserve - (self.o.valid & self.o.ready)
        m.d.sync += [issued.eq(issued_next), room.eq(issued_next < self.capacity)]

        m.submodules.mult_mem = mult_mem = _RowMemory(MULT_BITS, lanes, self._row_blocks)
        m.submodules.bias_mem = bias_mem = _RowMemory(BIAS_BITS, lanes, self._row_blocks)
        m.d.comb += [mult_mem.write.eq(self.mult_write), bias_mem.write.eq(self.bias_write)]

        # Free running from here on: the input register, then the result register, loaded
        # at the edge that reads the multipliers and biases, so that they line up with it.
        arriving = Signal(self.i.payload.shape(), name="arriving")
        arriving_valid, result_valid = Signal(), Signal()
        result = Signal(data.ArrayLayout(signed(self._acc_width), lanes))
        m.d.sync += [arriving.eq(self.i.payload), arriving_valid.eq(self.i.valid & self.i.ready),
                     result.eq(arriving.acc), result_valid.eq(arriving_valid)]
        for memory_ in (mult_mem, bias_mem):
            m.d.comb += memory_.read_addr.eq(arriving.row_block)
        operand, operand_valid = Signal.like(result, name="operand"), Signal()
        operand_bias = Signal.like(bias_mem.read_data, name="operand_bias")
        operand_mult = Signal.like(mult_mem.read_data, name="operand_mult")
        m.d.sync += [operand.eq(result), operand_valid.eq(result_valid),
                     operand_mult.eq(mult_mem.read_data)]
        for lane in range(lanes):
            m.d.sync += operand_bias[lane].eq(Mux(bias_enable, bias_mem.read_data[lane], 0))
            m.d.comb += requantizer.i.payload.acc[lane].eq(operand[lane] + operand_bias[lane])
        m.d.comb += [
            requantizer.i.payload.mult.eq(operand_mult),
            requantizer.i.valid.eq(operand_valid),
            requantizer.enable.eq(enable),
            requantizer.relu.eq(relu),
            requantizer.shift.eq(shift),
            # The credits guarantee the buffer room for every result: the requantizer's
            # pipeline never holds.
            requantizer.o.ready.eq(1),
            output.w.valid.eq(requantizer.o.valid),
            output.w.payload.eq(requantizer.o.payload),
        ]
        return m


class _OutputBuffer(wiring.Component):
    """The result path's output register and, behind it, ``depth`` results in a small memory
    (LUT RAM: asynchronous read). A result arriving on ``w`` is never refused: the credits
    keep ``w`` from overrunning it. When the buffer is empty and the output register free,
    the result goes straight into the register, one cycle after it arrives."""

    def __init__(self, shape, depth: int):
        self._shape, self._depth = shape, 1 << max(1, (depth - 1).bit_length())
        super().__init__({"w": In(Signature(shape, always_ready=True)),
                          "o": Out(Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        depth = self._depth
        m.submodules.storage = storage = memory.Memory(shape=self._shape, depth=depth, init=[])
        write = storage.write_port()
        read = storage.read_port(domain="comb")
        # `depth` is a power of two, so the pointers wrap by themselves.
        tail, head = Signal(range(depth)), Signal(range(depth))
        stored = Signal(range(depth + 1))
        # `stored == 0`, kept as a register: it selects every bit of the output register's
        # input, and a comparison there would lengthen that wide fan-out's path.
        empty = Signal(init=1)
        load = ~self.o.valid | self.o.ready
        take = load & ~empty
        put = self.w.valid & ~(load & empty)
        m.d.comb += [write.addr.eq(tail), write.data.eq(self.w.payload), write.en.eq(put),
                     read.addr.eq(head)]
        stored_next = stored + put - take
        m.d.sync += [tail.eq(tail + put), head.eq(head + take),
                     stored.eq(stored_next), empty.eq(stored_next == 0)]
        with m.If(load):
            m.d.sync += [self.o.valid.eq(~empty | self.w.valid),
                         self.o.payload.eq(Mux(empty, self.w.payload, read.data))]
        return m


class _RowMemory(wiring.Component):
    """One signed ``width``-bit value per ``(row_block, lane)``: written one lane at a time
    from the load port, read a whole row block at a time (synchronous read)."""

    def __init__(self, width: int, lanes: int, row_blocks: int):
        self._width, self._lanes, self._depth = width, lanes, max(2, row_blocks)
        super().__init__({
            "write": In(data.StructLayout({"row_block": range(self._depth),
                                           "lane": range(max(2, lanes)),
                                           "data": signed(width), "en": 1})),
            "read_addr": In(range(self._depth)),
            "read_data": Out(data.ArrayLayout(signed(width), lanes)),
        })

    def elaborate(self, platform):
        m = Module()
        # Depth 1 would give a zero-width address, which Verilog cannot declare.
        m.submodules.mem = mem = memory.Memory(
            shape=data.ArrayLayout(signed(self._width), self._lanes), depth=self._depth, init=[])
        write = mem.write_port(granularity=1)  # one lane (an ArrayLayout element)
        read = mem.read_port()
        m.d.comb += [
            write.addr.eq(self.write.row_block),
            write.data.eq(self.write.data.replicate(self._lanes)),
            write.en.eq(Mux(self.write.en, 1 << self.write.lane, 0)),
            read.addr.eq(self.read_addr),
            self.read_data.eq(read.data),
        ]
        return m
