"""The requantizer every engine ends in; its golden model is :mod:`secateur.models.requant`.

``y = sat8(relu?((acc * mult + 2**(shift - 1)) >> shift))`` per lane, or ``y = acc`` when
``enable`` is low (the engine then returns exact accumulators). Results are sign-extended to
the accumulator width in both cases, so the output stream has one shape.

Pipeline: two registers (product and rounding; then shift, relu and saturation), stalling
while the output beat is not accepted. The product is computed exactly in
``max(acc_width + MULT_BITS, SHIFT_MAX) + 1`` bits.
"""

from amaranth.hdl import Module, Signal, signed, unsigned, Mux
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..models.requant import MULT_BITS, SHIFT_MAX
from .stream import Signature

__all__ = ["Requantizer"]


class Requantizer(wiring.Component):
    """Per-lane requantization of a vector of accumulators.

    Parameters
    ----------
    lanes : int
        Accumulators per beat, ``>= 1``.
    acc_width : int
        Signed accumulator width, in ``[8, 64]``.

    Raises
    ------
    TypeError
        If a parameter is not an integer.
    ValueError
        If a parameter is out of its range.

    Members
    -------
    i : ``In(Signature(StructLayout({"acc": ArrayLayout(signed(acc_width), lanes), "mult": ArrayLayout(signed(16), lanes)})))``
    o : ``Out(Signature(ArrayLayout(signed(acc_width), lanes)))``
    enable : ``In(1)``
        Requantize when high; pass ``acc`` through when low. Hold constant while beats flow.
    shift : ``In(range(SHIFT_MAX + 1))``
    relu : ``In(1)``
    """

    LATENCY = 2

    def __init__(self, *, lanes: int, acc_width: int):
        for name, value in (("lanes", lanes), ("acc_width", acc_width)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"Requantizer {name} must be an integer, not {value!r}")
        if lanes < 1:
            raise ValueError(f"Requantizer lanes must be >= 1, not {lanes}")
        if not 8 <= acc_width <= 64:
            raise ValueError(f"Requantizer acc_width must be in [8, 64], not {acc_width}")
        self._lanes = lanes
        self._acc_width = acc_width
        super().__init__({
            "i": In(Signature(data.StructLayout({
                "acc": data.ArrayLayout(signed(acc_width), lanes),
                "mult": data.ArrayLayout(signed(MULT_BITS), lanes),
            }))),
            "o": Out(Signature(data.ArrayLayout(signed(acc_width), lanes))),
            "enable": In(1),
            "shift": In(range(SHIFT_MAX + 1)),
            "relu": In(1),
        })

    @property
    def lanes(self) -> int:
        return self._lanes

    @property
    def acc_width(self) -> int:
        return self._acc_width

    @property
    def latency(self) -> int:
        return self.LATENCY

    def elaborate(self, platform):
        m = Module()
        advance = Signal()
        m.d.comb += [advance.eq(~self.o.valid | self.o.ready), self.i.ready.eq(advance)]

        # Wide enough for the exact product and for the rounding term 2**(SHIFT_MAX-1), which
        # exceeds the product's width when the shift is larger than the product.
        product_width = max(self._acc_width + MULT_BITS, SHIFT_MAX)
        # 2**(shift-1), or 0 when shift == 0: shifting a one left by `shift` and back right by
        # one yields both cases without a comparison.
        rounding = Signal(unsigned(SHIFT_MAX + 1))
        m.d.comb += rounding.eq((1 << self.shift) >> 1)

        rounded = [Signal(signed(product_width + 1), name=f"rounded{lane}")
                   for lane in range(self._lanes)]
        passthrough = [Signal(signed(self._acc_width), name=f"passthrough{lane}")
                       for lane in range(self._lanes)]
        stage1_valid = Signal()
        with m.If(advance):
            for lane in range(self._lanes):
                acc, mult = self.i.payload.acc[lane], self.i.payload.mult[lane]
                m.d.sync += [rounded[lane].eq(acc * mult + rounding),
                             passthrough[lane].eq(acc)]
            m.d.sync += stage1_valid.eq(self.i.valid)

        for lane in range(self._lanes):
            shifted = Signal(signed(product_width + 1), name=f"shifted{lane}")
            m.d.comb += shifted.eq(rounded[lane] >> self.shift)
            rectified = Mux(self.relu & (shifted < 0), 0, shifted)
            saturated = Mux(rectified > 127, 127, Mux(rectified < -128, -128, rectified))
            with m.If(advance):
                m.d.sync += self.o.payload[lane].eq(
                    Mux(self.enable, saturated, passthrough[lane]))
        with m.If(advance):
            m.d.sync += self.o.valid.eq(stage1_valid)
        return m
