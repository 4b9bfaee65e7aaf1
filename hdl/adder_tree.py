"""A pipelined signed adder tree with a stream interface.

Arithmetic: ``sum = operands[0] + ... + operands[fan_in - 1]``, exactly. The output is
``input_width + ceil(log2(fan_in))`` bits wide, the width at which ``fan_in`` operands of
``input_width`` signed bits cannot overflow (each level of pairwise additions adds one bit).

Pipelining: ``stages`` registers are spread over the ``ceil(log2(fan_in))`` adder levels;
register ``k`` (1-based) sits after level ``ceil(k * levels / stages)``, so the latency is
exactly ``stages`` cycles. When ``fan_in == 1`` there are no levels and ``stages`` may be 1, an
output register. The whole pipeline stalls while the output beat is not accepted.

A ``tag`` rides alongside the operands with the same latency, for the caller's control bits.
"""

import math

from amaranth.hdl import Module, Signal, Shape, ShapeLike, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .stream import Signature

__all__ = ["AdderTree", "adder_tree_output_width"]


def adder_tree_output_width(fan_in: int, input_width: int) -> int:
    """Signed width of the sum of ``fan_in`` signed ``input_width``-bit operands."""
    return input_width + math.ceil(math.log2(fan_in))


class AdderTree(wiring.Component):
    """Signed adder tree of ``fan_in`` operands, pipelined with ``stages`` registers.

    Parameters
    ----------
    fan_in : int
        Number of operands, ``>= 1``.
    input_width : int
        Signed width of each operand, ``>= 1``.
    stages : int
        Register stages (the latency in cycles), in ``[0, max(1, ceil(log2(fan_in)))]``.
    tag_shape : ShapeLike
        Shape of the sideband carried with each beat (default ``unsigned(0)``, none).

    Raises
    ------
    TypeError
        If a parameter is not an integer, or ``tag_shape`` is not shape-castable.
    ValueError
        If a parameter is out of its range.

    Members
    -------
    i : ``In(Signature(StructLayout({"operands": ArrayLayout(signed(input_width), fan_in), "tag": tag_shape})))``
    o : ``Out(Signature(StructLayout({"sum": signed(output_width), "tag": tag_shape})))``
    """

    def __init__(self, *, fan_in: int, input_width: int, stages: int = 0,
                 tag_shape: ShapeLike = unsigned(0)):
        for name, value in (("fan_in", fan_in), ("input_width", input_width), ("stages", stages)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"AdderTree {name} must be an integer, not {value!r}")
        if fan_in < 1:
            raise ValueError(f"AdderTree fan_in must be >= 1, not {fan_in}")
        if input_width < 1:
            raise ValueError(f"AdderTree input_width must be >= 1, not {input_width}")
        levels = math.ceil(math.log2(fan_in))
        max_stages = max(1, levels)
        if not 0 <= stages <= max_stages:
            raise ValueError(f"AdderTree stages must be in [0, {max_stages}] for fan_in {fan_in}, "
                             f"not {stages}")
        try:
            Shape.cast(tag_shape)
        except TypeError as error:
            raise TypeError(f"AdderTree tag_shape must be shape-castable, not {tag_shape!r}") from error

        self._fan_in = fan_in
        self._input_width = input_width
        self._stages = stages
        self._levels = levels
        self._output_width = adder_tree_output_width(fan_in, input_width)
        self._tag_shape = tag_shape
        super().__init__({
            "i": In(Signature(data.StructLayout({
                "operands": data.ArrayLayout(signed(input_width), fan_in),
                "tag": tag_shape,
            }))),
            "o": Out(Signature(data.StructLayout({
                "sum": signed(self._output_width),
                "tag": tag_shape,
            }))),
        })

    @property
    def fan_in(self) -> int:
        return self._fan_in

    @property
    def input_width(self) -> int:
        return self._input_width

    @property
    def stages(self) -> int:
        return self._stages

    @property
    def latency(self) -> int:
        return self._stages

    @property
    def output_width(self) -> int:
        return self._output_width

    def register_after_levels(self) -> list[int]:
        """The adder levels after which a pipeline register sits (0 is the input side)."""
        return [math.ceil(k * self._levels / self._stages) for k in range(1, self._stages + 1)]

    def elaborate(self, platform):
        m = Module()
        advance = Signal()
        m.d.comb += advance.eq(~self.o.valid | self.o.ready)
        m.d.comb += self.i.ready.eq(advance)

        values = [operand for operand in self.i.payload.operands]
        valid, tag = self.i.valid, self.i.payload.tag
        registers = self.register_after_levels()
        for level in range(self._levels + 1):
            if level > 0:
                values = [values[k] + values[k + 1] if k + 1 < len(values) else values[k]
                          for k in range(0, len(values), 2)]
            for _ in range(registers.count(level)):
                values, valid, tag = self._register(m, advance, values, valid, tag, level)

        m.d.comb += [
            self.o.payload.sum.eq(values[0]),
            self.o.payload.tag.eq(tag),
            self.o.valid.eq(valid),
        ]
        return m

    def _register(self, m, advance, values, valid, tag, level):
        registered = [Signal(signed(self._input_width + level), name=f"l{level}_sum{k}")
                      for k in range(len(values))]
        registered_valid = Signal(name=f"l{level}_valid")
        registered_tag = Signal(self._tag_shape, name=f"l{level}_tag")
        with m.If(advance):
            m.d.sync += [reg.eq(value) for reg, value in zip(registered, values)]
            m.d.sync += [registered_valid.eq(valid), registered_tag.eq(tag)]
        return registered, registered_valid, registered_tag
