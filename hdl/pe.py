"""The processing element of the weight-stationary row-block engines (ternary and dense).

A :class:`WeightStationaryPE` holds one output row's share of the layer and computes, per
cycle, the dot product of one stored weight word with the activation broadcast:

    weight memory -> read data register -> operand code (``code.stages`` registers) ->
    :class:`~secateur.hdl.adder_tree.AdderTree` (``tree_stages`` registers) -> accumulator

The engines differ only in how a stored weight turns an activation into an adder-tree operand,
the *operand code*:

* :class:`TernaryCode`: 2 bits per weight, ``+x``, ``-x`` or ``0`` selected by the code; no
  multiplier. The negations ``-x`` are part of the broadcast, computed once for all PEs.
* :class:`Int8Code`: 8 bits per weight, an int8 x int8 product, registered (a DSP multiply
  fills a cycle at the target clock).

Every PE of an engine is the same module: the engine's sequencer drives all of them with the
same addresses and stage enables, and nothing in a PE depends on its position. That is what
lets a synthesis flow count one PE and multiply it (:mod:`secateur.gen.synth`).

Weight words
    ``code_width * fan_in`` bits, column ``j`` at bits ``[code_width * j, code_width * (j + 1))``;
    a word wider than one 32-bit load beat is padded to whole beats and written one beat at a
    time (partial writes need equal chunks): :func:`weight_word_width`.

Accumulation
    ``total = (first ? 0 : acc) + (empty ? 0 : sum)``, where ``first`` and ``empty`` are
    fields of the tag that rides through the adder tree (``empty`` is optional: a beat with
    no stored weights). ``acc`` takes ``total`` when an output beat is accepted. ``total``
    has ``acc_width`` bits; the engine sizes ``acc_width`` so that the true sum fits, which
    also makes truncating a wider tree sum exact (the ``fan_in > max_cols`` case of the
    dense engine, where the padded lanes are zero).
"""

from __future__ import annotations

import math

from amaranth.hdl import Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from .adder_tree import AdderTree
from .loadmap import DATA_WIDTH
from .stream import Signature

__all__ = ["TernaryCode", "Int8Code", "WeightStationaryPE", "drive_pe_array", "weight_word_width"]


def weight_word_width(code_width: int, fan_in: int) -> int:
    """Width of a PE's weight word: ``code_width * fan_in`` bits, padded to whole 32-bit load
    beats when it spans several."""
    bits = code_width * fan_in
    return bits if bits <= DATA_WIDTH else DATA_WIDTH * math.ceil(bits / DATA_WIDTH)


class TernaryCode:
    """Weights in {-1, 0, +1} as 2-bit codes: bit 0 non-zero, bit 1 negative (``01`` = +1,
    ``11`` = -1, ``00`` = 0; ``10`` is never written and reads as 0). The operand is
    ``x``, ``-x`` or 0: 9 signed bits, since ``-(-128) = 128``."""

    code_width = 2
    operand_width = 9
    stages = 0
    broadcast_shape = data.StructLayout({"plus": signed(8), "minus": signed(9)})

    def drive_broadcast(self, m: Module, broadcast, act) -> None:
        m.d.comb += [broadcast.plus.eq(act), broadcast.minus.eq(-act)]

    def operand(self, m: Module, code, broadcast, advance) -> Signal:
        operand = Signal(signed(self.operand_width))
        m.d.comb += operand.eq(Mux(code[0], Mux(code[1], broadcast.minus, broadcast.plus), 0))
        return operand


class Int8Code:
    """int8 weights: the operand is the registered product ``x * w``, in ``[-16256, 16384]``:
    16 signed bits."""

    code_width = 8
    operand_width = 16
    stages = 1
    broadcast_shape = signed(8)

    def drive_broadcast(self, m: Module, broadcast, act) -> None:
        m.d.comb += broadcast.eq(act)

    def operand(self, m: Module, code, broadcast, advance) -> Signal:
        product = Signal(signed(self.operand_width))
        with m.If(advance[0]):
            m.d.sync += product.eq(broadcast * code.as_signed())
        return product


class WeightStationaryPE(wiring.Component):
    """One PE: weight memory, operand code, adder tree and accumulator (see the module
    documentation).

    Parameters
    ----------
    code : TernaryCode or Int8Code
        How a stored weight turns an activation into an operand.
    fan_in : int
        Columns per weight word (adder-tree operands), ``>= 1``.
    depth : int
        Weight words stored, ``>= 1``.
    acc_width : int
        Signed width of the accumulator and of ``total``, ``>= 1``.
    tree_stages : int
        Pipeline registers of the adder tree (see :class:`~secateur.hdl.adder_tree.AdderTree`).
    tag_shape : StructLayout
        Sideband through the tree; must have a field ``first`` and may have ``empty``.

    Raises
    ------
    TypeError
        If ``code`` is not an operand code, a count is not an integer, or ``tag_shape`` is
        not a struct layout with a field ``first``.
    ValueError
        If a count is out of its range.

    Members
    -------
    write : ``In(StructLayout({"addr": range(depth), "data": word_width, "en": chunks}))``
        Weight memory write port; ``en`` has one bit per 32-bit chunk of a padded word.
    read : ``In(StructLayout({"addr": range(depth), "en": 1}))``
        Weight memory read port (synchronous: the word is there one cycle later).
    broadcast : ``In(ArrayLayout(code.broadcast_shape, fan_in))``
        The activations, as the code needs them; aligned with the read data register.
    advance : ``In(1 + code.stages)``
        Enables: bit 0 the read data register, bit ``k`` the code's stage ``k``.
    i : ``In(Signature(tag_shape))``
        Valid and tag of the operands entering the tree (``ready`` is the tree's).
    o : ``Out(Signature(tag_shape))``
        The tree's output beat; accepting it updates the accumulator.
    total : ``Out(signed(acc_width))``
        The accumulator plus the tree's sum (see the module documentation).
    """

    def __init__(self, *, code, fan_in: int, depth: int, acc_width: int, tree_stages: int,
                 tag_shape: data.StructLayout):
        if not isinstance(code, (TernaryCode, Int8Code)):
            raise TypeError(f"WeightStationaryPE code must be a TernaryCode or an Int8Code, "
                            f"not {code!r}")
        for name, value, low in (("fan_in", fan_in, 1), ("depth", depth, 1),
                                 ("acc_width", acc_width, 1), ("tree_stages", tree_stages, 0)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"WeightStationaryPE {name} must be an integer, not {value!r}")
            if value < low:
                raise ValueError(f"WeightStationaryPE {name} must be >= {low}, not {value}")
        if not isinstance(tag_shape, data.StructLayout) or "first" not in tag_shape.members:
            raise TypeError(f"WeightStationaryPE tag_shape must be a StructLayout with a field "
                            f"'first', not {tag_shape!r}")
        self._code, self._fan_in, self._depth = code, fan_in, depth
        self._acc_width, self._tree_stages, self._tag_shape = acc_width, tree_stages, tag_shape
        self._word_width = weight_word_width(code.code_width, fan_in)
        self._chunks = self._word_width // DATA_WIDTH if self._word_width > DATA_WIDTH else 1
        super().__init__({
            "write": In(data.StructLayout({"addr": range(depth), "data": self._word_width,
                                           "en": self._chunks})),
            "read": In(data.StructLayout({"addr": range(depth), "en": 1})),
            "broadcast": In(data.ArrayLayout(code.broadcast_shape, fan_in)),
            "advance": In(1 + code.stages),
            "i": In(Signature(tag_shape)),
            "o": Out(Signature(tag_shape)),
            "total": Out(signed(acc_width)),
        })

    @property
    def code(self):
        return self._code

    @property
    def word_width(self) -> int:
        return self._word_width

    def elaborate(self, platform):
        m = Module()
        code, fan_in = self._code, self._fan_in

        m.submodules.weights = weights = memory.Memory(
            shape=unsigned(self._word_width), depth=self._depth, init=[])
        write = weights.write_port(granularity=DATA_WIDTH if self._chunks > 1 else None)
        read = weights.read_port()
        m.d.comb += [write.addr.eq(self.write.addr), write.data.eq(self.write.data),
                     write.en.eq(self.write.en),
                     read.addr.eq(self.read.addr), read.en.eq(self.read.en)]

        # A block RAM's clock-to-output time leaves no room for logic behind it in one cycle.
        word = Signal(self._word_width)
        with m.If(self.advance[0]):
            m.d.sync += word.eq(read.data)

        m.submodules.tree = tree = AdderTree(fan_in=fan_in, input_width=code.operand_width,
                                             stages=self._tree_stages, tag_shape=self._tag_shape)
        width = code.code_width
        for column in range(fan_in):
            operand = code.operand(m, word[width * column:width * (column + 1)],
                                   self.broadcast[column], self.advance[1:])
            m.d.comb += tree.i.payload.operands[column].eq(operand)
        m.d.comb += [tree.i.valid.eq(self.i.valid), tree.i.payload.tag.eq(self.i.payload),
                     self.i.ready.eq(tree.i.ready)]

        tag = tree.o.payload.tag
        empty = tag.empty if "empty" in self._tag_shape.members else 0
        acc = Signal(signed(self._acc_width))
        m.d.comb += [
            self.o.valid.eq(tree.o.valid), self.o.payload.eq(tag), tree.o.ready.eq(self.o.ready),
            self.total.eq(Mux(tag.first, 0, acc) + Mux(empty, 0, tree.o.payload.sum)),
        ]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += acc.eq(self.total)
        return m


def drive_pe_array(m: Module, pes: list, *, code, read_addr, read_en, acts, advance, valid,
                   tag, result_path) -> Value:
    """Drive an engine's PEs in lock step and hand their totals to its result path.

    ``pes`` are the PEs' ports (the members of :class:`WeightStationaryPE`), ``code`` their
    operand code. Every PE reads word ``read_addr`` (when ``read_en``), takes the activation broadcast
    ``acts`` (an ``ArrayLayout(signed(8), fan_in)`` value aligned with the read data
    register) in the form its code needs, computed once here for all PEs, and the stage
    enables ``advance``. ``valid`` and ``tag`` enter the trees with the operands. A tree
    output beat whose tag has ``last`` set carries the row block's totals: it waits for
    ``result_path.i.ready`` and is the result path's input beat (lanes = PEs, ``row_block``
    from the tag).

    Returns
    -------
    Value
        The trees' input ``ready``: the operands' last register may advance.
    """
    head = pes[0]
    fan_in = len(acts)
    broadcast = Signal(data.ArrayLayout(code.broadcast_shape, fan_in))
    for column in range(fan_in):
        code.drive_broadcast(m, broadcast[column], acts[column])
    tree_ready = ~head.o.payload.last | result_path.i.ready
    for lane, unit in enumerate(pes):
        m.d.comb += [
            unit.read.addr.eq(read_addr), unit.read.en.eq(read_en),
            unit.broadcast.eq(broadcast), unit.advance.eq(advance),
            unit.i.valid.eq(valid), unit.i.payload.eq(tag), unit.o.ready.eq(tree_ready),
            result_path.i.payload.acc[lane].eq(unit.total),
        ]
    m.d.comb += [result_path.i.valid.eq(head.o.valid & head.o.payload.last),
                 result_path.i.payload.row_block.eq(head.o.payload.row_block)]
    return head.i.ready
