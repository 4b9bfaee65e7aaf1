"""The requantizer every engine ends in; its golden model is :mod:`secateur.models.requant`.

``y = sat8(relu?((acc * mult + 2**(shift - 1)) >> shift))`` per lane, or ``y = acc`` when
``enable`` is low (the engine then returns exact accumulators). Results are sign-extended to
the accumulator width in both cases, so the output stream has one shape.

Pipeline (``LATENCY = 6`` registers, stalling together while the output beat is not
accepted), cut so that no stage holds more than one wide operation, for Fmax:

1. operands: ``acc`` and ``mult`` (``1`` when disabled) registered, so the multipliers'
   inputs come from registers and not from the multiplier memory's read port;
2. partial products: ``acc`` is cut into ``chunk_width``-bit pieces (unsigned, the top one
   signed), each multiplied by ``mult``: with the default 17 bits every piece is one
   18 x 18 signed DSP multiply (ECP5 ``MULT18X18D``), without an adder behind it;
3. the sum of the shifted partial products and the rounding term;
4. the arithmetic right shift by the multiple of 8 in ``shift`` (its bits 3 and up);
5. the arithmetic right shift by the rest (bits 0 to 2): the two halves of the shifter are
   three multiplexer levels each, since every ``shift`` bit drives every lane's shifter, a
   fan-out whose routing leaves no room for six levels in one cycle (it was the critical
   path of a 16-lane result path at 100 MHz);
6. relu and saturation, or the accumulator itself when disabled.

When ``enable`` is low, ``acc`` travels alongside in delay registers and is the output.
The product is exact in ``max(acc_width + MULT_BITS, SHIFT_MAX) + 1`` bits.

Each lane registers its own copy of the held settings (``shift``, ``relu``, ``enable``:
registers named ``*_held``), so that a setting drives one lane's shifter and clamps, not
every lane's: that fan-out's routing was the critical path of the 16-lane result paths.
Yosys merges identical registers; a flow that keeps them marks their cells ``keep``
(:mod:`secateur.gen.synth` does, with ``setattr -set keep 1 w:*_held %ci1 t:$dff %i``
after ``proc``).
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
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
    chunk_width : int
        Width of the pieces ``acc`` is multiplied in, ``>= 2``; default 17, so that each
        partial product is one 18 x 18 signed multiply.

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
        Hold constant while beats flow, and set it at least one cycle before the first beat
        enters (its rounding term is registered).
    relu : ``In(1)``
        Hold constant while beats flow.
    """

    LATENCY = 6

    def __init__(self, *, lanes: int, acc_width: int, chunk_width: int = 17):
        for name, value in (("lanes", lanes), ("acc_width", acc_width),
                            ("chunk_width", chunk_width)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"Requantizer {name} must be an integer, not {value!r}")
        if lanes < 1:
            raise ValueError(f"Requantizer lanes must be >= 1, not {lanes}")
        if not 8 <= acc_width <= 64:
            raise ValueError(f"Requantizer acc_width must be in [8, 64], not {acc_width}")
        if chunk_width < 2:
            raise ValueError(f"Requantizer chunk_width must be >= 2, not {chunk_width}")
        self._lanes = lanes
        self._acc_width = acc_width
        self._chunk_width = chunk_width
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

    def _chunks(self) -> list[tuple[int, int]]:
        """``(lsb, width)`` of the pieces ``acc`` is cut into; only the top one is signed."""
        return [(lsb, min(self._chunk_width, self._acc_width - lsb))
                for lsb in range(0, self._acc_width, self._chunk_width)]

    def elaborate(self, platform):
        m = Module()
        advance = Signal()
        m.d.comb += [advance.eq(~self.o.valid | self.o.ready), self.i.ready.eq(advance)]

        # Wide enough for the exact product and for the rounding term 2**(SHIFT_MAX-1), which
        # exceeds the product's width when the shift is larger than the product.
        product_width = max(self._acc_width + MULT_BITS, SHIFT_MAX)
        shift = self.shift
        # 2**(shift-1), or 0 when shift == 0: shifting a one left by `shift` and back right by
        # one yields both cases without a comparison. Registered: the settings are held while
        # beats flow, and the decoder in front of every lane's rounding adder was the critical
        # path of a 16-lane result path at 150 MHz.
        rounding = Signal(unsigned(SHIFT_MAX + 1))
        m.d.sync += rounding.eq((1 << shift) >> 1)
        chunks = self._chunks()

        valid = [Signal(name=f"stage{stage}_valid") for stage in range(1, self.LATENCY + 1)]
        with m.If(advance):
            m.d.sync += [valid[0].eq(self.i.valid)]
            m.d.sync += [later.eq(earlier) for earlier, later in zip(valid, valid[1:])]
        m.d.comb += self.o.valid.eq(valid[-1])

        # One submodule per lane, all the same module: synthesis maps one lane, not all.
        for lane in range(self._lanes):
            unit = _RequantizerLane(acc_width=self._acc_width, chunks=chunks,
                                    product_width=product_width, latency=self.LATENCY)
            m.submodules[f"lane{lane}"] = unit
            m.d.comb += [unit.acc.eq(self.i.payload.acc[lane]),
                         unit.mult.eq(self.i.payload.mult[lane]),
                         unit.advance.eq(advance), unit.rounding.eq(rounding),
                         unit.shift.eq(shift), unit.relu.eq(self.relu),
                         unit.enable.eq(self.enable), self.o.payload[lane].eq(unit.result)]
        return m


class _RequantizerLane(wiring.Component):
    """One lane of the :class:`Requantizer`'s pipeline (see the module documentation); the
    stage valid bits, ``advance`` and the rounding term are the parent's, shared by every
    lane."""

    def __init__(self, *, acc_width: int, chunks: list, product_width: int, latency: int):
        self._acc_width, self._chunks = acc_width, chunks
        self._product_width, self._latency = product_width, latency
        super().__init__({
            "acc": In(signed(acc_width)),
            "mult": In(signed(MULT_BITS)),
            "advance": In(1),
            "rounding": In(unsigned(SHIFT_MAX + 1)),
            "shift": In(range(SHIFT_MAX + 1)),
            "relu": In(1),
            "enable": In(1),
            "result": Out(signed(acc_width)),
        })

    def elaborate(self, platform):
        m = Module()
        acc_width, chunks = self._acc_width, self._chunks
        acc = Signal(signed(acc_width))
        mult = Signal(signed(MULT_BITS))
        partials = [Signal(signed(width + 1 + MULT_BITS) if lsb + width < acc_width
                           else signed(width + MULT_BITS), name=f"partial{lsb}")
                    for lsb, width in chunks]
        rounded = Signal(signed(self._product_width + 1))
        coarse = Signal(signed(self._product_width + 1))
        # This lane's copies of the held settings (see the module documentation): the first
        # is used two edges after a beat enters, the others later still.
        shift = Signal.like(self.shift, name="shift_held", reset_less=True)
        relu = Signal(name="relu_held", reset_less=True)
        enable = Signal(name="enable_held", reset_less=True)
        m.d.sync += [shift.eq(self.shift), relu.eq(self.relu), enable.eq(self.enable)]
        shifted = Signal(signed(self._product_width + 1))
        with m.If(self.advance):
            m.d.sync += [acc.eq(self.acc), mult.eq(self.mult)]
            passthrough = acc
            for stage in range(2, self._latency):
                delayed = Signal(signed(acc_width), name=f"passthrough{stage}")
                m.d.sync += delayed.eq(passthrough)
                passthrough = delayed
            for (lsb, width), partial in zip(chunks, partials):
                piece = acc[lsb:lsb + width]
                # Low pieces are unsigned: one zero bit on top makes them signed operands.
                piece = piece.as_signed() if lsb + width == acc_width else piece
                m.d.sync += partial.eq(piece * mult)
            m.d.sync += rounded.eq(sum(partial << lsb for (lsb, _), partial
                                       in zip(chunks, partials)) + self.rounding)
            m.d.sync += coarse.eq(rounded >> Cat(Const(0, 3), shift[3:]))
            m.d.sync += shifted.eq(coarse >> shift[:3])
            # Relu and saturation from bit tests instead of wide comparisons (for Fmax): the
            # value fits int8 when bits 7 and up all equal the sign.
            negative, high = shifted[-1], shifted[7:]
            saturated = Signal(signed(8))
            with m.If(relu & negative):
                m.d.comb += saturated.eq(0)
            with m.Elif(~negative & high.any()):
                m.d.comb += saturated.eq(127)
            with m.Elif(negative & ~high.all()):
                m.d.comb += saturated.eq(-128)
            with m.Else():
                m.d.comb += saturated.eq(shifted[:8])
            m.d.sync += self.result.eq(Mux(enable, saturated, passthrough))
        return m
