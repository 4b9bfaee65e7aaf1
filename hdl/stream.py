"""Valid/ready streams: the one handshake every secateur engine and primitive uses.

The signature is Amaranth's own :class:`amaranth.lib.stream.Signature` (members ``payload``,
``valid``, ``ready``; in Verilog ``<name>__payload``, ``<name>__valid``, ``<name>__ready``).
The rules, as in AXI4-Stream:

* A beat transfers on a rising clock edge where ``valid`` and ``ready`` are both high.
* Once ``valid`` is high, the source holds ``valid`` and ``payload`` until the beat transfers.
* ``ready`` may depend combinationally on ``valid``; ``valid`` never depends on ``ready``.
* ``rst`` (synchronous, active high) empties every stream register.

:class:`StreamRegister` is the register slice that cuts the combinational ``ready`` path
without losing throughput. The engines' result paths no longer use it (their beats enter
with credits, :mod:`secateur.hdl.result_path`); the shared-module and coverage tests use it
as a small design under test.
"""

from amaranth.hdl import Module, Signal, ShapeLike, Shape
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Signature", "StreamRegister"]

Signature = stream.Signature


class StreamRegister(wiring.Component):
    """A two-entry skid buffer: full throughput, registered ``valid``, ``payload`` and ``ready``.

    Parameters
    ----------
    payload_shape : ShapeLike
        Shape of the payload.

    Raises
    ------
    TypeError
        If ``payload_shape`` is not shape-castable.

    Members
    -------
    i : ``In(Signature(payload_shape))``
    o : ``Out(Signature(payload_shape))``
    """

    def __init__(self, payload_shape: ShapeLike):
        try:
            Shape.cast(payload_shape)
        except TypeError as error:
            raise TypeError(f"StreamRegister payload_shape must be shape-castable, "
                            f"not {payload_shape!r}") from error
        self._payload_shape = payload_shape
        super().__init__({"i": In(Signature(payload_shape)), "o": Out(Signature(payload_shape))})

    @property
    def payload_shape(self):
        return self._payload_shape

    def elaborate(self, platform):
        m = Module()
        # The skid register catches the beat that arrives in the cycle `o.ready` falls, which
        # lets `i.ready` be a register instead of a copy of `o.ready`.
        skid = Signal.like(self.i.payload, name="skid")
        skid_valid = Signal()
        m.d.comb += self.i.ready.eq(~skid_valid)

        with m.If(~self.o.valid | self.o.ready):
            with m.If(skid_valid):
                m.d.sync += [self.o.payload.eq(skid), self.o.valid.eq(1), skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [self.o.payload.eq(self.i.payload), self.o.valid.eq(self.i.valid)]
        with m.Elif(self.i.valid & self.i.ready):
            m.d.sync += [skid.eq(self.i.payload), skid_valid.eq(1)]
        return m
