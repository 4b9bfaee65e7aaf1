"""A double-banked input-vector buffer: the ``act`` stream fills one bank while the engine
reads the other, so vectors stream back to back.

The act stream writes ``beats`` beats per vector (a layer setting) into the write bank; when
the last one lands the bank is *full* and the writer moves to the other bank, stalling
(``i.ready`` low) only if that one is still full. The engine reads the full bank through any
number of read ports at its own addresses, and releases it when its last read is issued;
the bank then takes the vector after next.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from .stream import Signature

__all__ = ["ActivationBuffer"]


class ActivationBuffer(wiring.Component):
    """Two banks of ``depth`` words of ``lanes`` int8 activations.

    Parameters
    ----------
    lanes : int
        int8 activations per word (per ``act`` beat), ``>= 1``.
    depth : int
        Words per bank, the most beats a vector may take, ``>= 1``.
    read_ports : int
        Independent read ports on the read bank, ``>= 1``.

    Raises
    ------
    TypeError
        If a parameter is not an integer.
    ValueError
        If a parameter is below 1.

    Members
    -------
    i : ``In(Signature(ArrayLayout(signed(8), lanes)))``
        The ``act`` stream. Ready only while ``beats != 0`` and the write bank is free.
    beats : ``In(range(depth + 1))``
        Beats per vector; 0 while no layer is configured. Change it only while ``empty``.
    read : ``Out(ReadPort.Signature(addr_width, ArrayLayout(signed(8), lanes))).array(read_ports)``
        Synchronous read ports into the read bank (``addr`` is the word within the vector).
    full : ``Out(1)``
        The read bank holds a whole vector.
    release : ``In(1)``
        Pulse while ``full`` in the cycle of the last read of the vector: the bank is free
        from the next cycle and the reader moves to the other bank.
    empty : ``Out(1)``
        No vector is buffered or partly written.
    """

    def __init__(self, *, lanes: int, depth: int, read_ports: int):
        for name, value in (("lanes", lanes), ("depth", depth), ("read_ports", read_ports)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"ActivationBuffer {name} must be an integer, not {value!r}")
            if value < 1:
                raise ValueError(f"ActivationBuffer {name} must be >= 1, not {value}")
        self._lanes, self._depth, self._read_ports = lanes, depth, read_ports
        word = data.ArrayLayout(signed(8), lanes)
        addr_width = max(1, (depth - 1).bit_length())
        super().__init__({
            "i": In(Signature(word)),
            "beats": In(range(depth + 1)),
            "read": Out(memory.ReadPort.Signature(addr_width=addr_width, shape=word))
            .array(read_ports),
            "full": Out(1),
            "release": In(1),
            "empty": Out(1),
        })

    @property
    def lanes(self) -> int:
        return self._lanes

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def read_ports(self) -> int:
        return self._read_ports

    def elaborate(self, platform):
        m = Module()
        depth = self._depth
        m.submodules.mem = mem = memory.Memory(shape=data.ArrayLayout(signed(8), self._lanes),
                                               depth=2 * depth, init=[])
        write = mem.write_port()
        bank_full = Signal(2)
        write_bank, read_bank = Signal(), Signal()
        write_beat = Signal(range(depth))

        m.d.comb += [
            self.i.ready.eq((self.beats != 0) & ~bank_full.bit_select(write_bank, 1)),
            write.addr.eq(Mux(write_bank, write_beat + depth, write_beat)),
            write.data.eq(self.i.payload),
            write.en.eq(self.i.valid & self.i.ready),
            self.full.eq(bank_full.bit_select(read_bank, 1)),
            self.empty.eq((bank_full == 0) & (write_beat == 0)),
        ]
        for port in self.read:
            read = mem.read_port()
            m.d.comb += [read.addr.eq(Mux(read_bank, port.addr + depth, port.addr)),
                         read.en.eq(port.en), port.data.eq(read.data)]

        set_full, clear_full = Signal(2), Signal(2)
        with m.If(self.i.valid & self.i.ready):
            with m.If(write_beat == self.beats - 1):
                m.d.sync += [write_beat.eq(0), write_bank.eq(~write_bank)]
                m.d.comb += set_full.eq(1 << write_bank)
            with m.Else():
                m.d.sync += write_beat.eq(write_beat + 1)
        with m.If(self.release):
            m.d.sync += read_bank.eq(~read_bank)
            m.d.comb += clear_full.eq(1 << read_bank)
        m.d.sync += bank_full.eq((bank_full | set_full) & ~clear_full)
        return m
