"""AXI4 wrapper of an engine: AXI4-Stream data ports and an AXI4-Lite register file, with the
names Vivado's interface inference recognizes.

:class:`AXIWrapper` instantiates the engine's Verilog module ``<top>`` (an ``Instance``, so
the wrapper's own Verilog, ``<top>_axi``, is a few kilobytes beside the engine's) and exposes
only AXI ports, one clock ``aclk`` and an active-low synchronous reset ``aresetn``:

``s_axis_act_*`` (``tdata``, ``tvalid``, ``tready``, ``tlast``)
    One beat is one engine ``act`` beat (``8 * act_lanes`` bits, lane 0 in the LSBs);
    ``tlast`` marks the last beat of a vector. A ``tlast`` that disagrees with ``ACT_BEATS``
    sets ``STATUS.tlast_error``; the data still passes.
``m_axis_res_*`` (``tdata``, ``tvalid``, ``tready``, ``tlast``)
    One beat is one engine ``res`` beat (``res_lanes * res_width`` bits, zero-padded to whole
    bytes); ``tlast`` on the last beat of each vector, counted with ``RES_BEATS``.
``s_axis_load_*`` (``tdata``, ``tvalid``, ``tready``)
    64-bit beats ``{addr, data}``: the load address in bits 63:32 (only the engine's
    ``load_map.addr_width`` low bits of it are used), the data in bits 31:0.
``s_axi_ctrl_*``
    AXI4-Lite slave, 32-bit data, 12-bit byte addresses (4 KiB). One write and one read are
    served at a time; ``AWPROT``/``ARPROT`` are accepted and ignored.

Register map (:data:`REGISTERS`, the one description: it drives the decode below, the
manifest's ``axi`` section and the C header's ``<TOP>_AXI_*`` defines). Byte offsets,
32-bit registers; reads of unmapped or write-only words return 0 with OKAY, writes to them
and to read-only registers are ignored with OKAY. A write merges the bytes its ``WSTRB``
selects into the word's register (a push uses the merged word).

====== ================ ====== ============================================================
offset name             access meaning
====== ================ ====== ============================================================
0x000  ID               RO     0x53435452 ("SCTR")
0x004  KEY              RO     bits 31:0 of the manifest's ``generator_key``
0x008  GEOMETRY         RO     act_lanes[7:0], res_lanes[15:8], res_width[23:16],
                               engine code[31:24] (:data:`ENGINE_CODES`)
0x00C  STATUS           RO     bit 0 busy, 1 layer_loaded, 2 load_ready, 3 act_ready,
                               4 res_valid, 5 tlast_error (sticky)
0x010  CONTROL          RW     bit 0 clear (counters and tlast_error), bit 1 soft_reset
                               (a one-cycle engine reset), both self-clearing (read 0);
                               bit 2 cpu_mode
0x014  ACT_BEATS        RW     act beats per vector (reset 1; 0 counts as 1)
0x018  RES_BEATS        RW     res beats per vector (reset 1; 0 counts as 1)
0x020  CYCLES_BUSY      RO     cycles with STATUS.busy set
0x024  CYCLES_RES_STALL RO     cycles with the engine's res.valid high and res.ready low
0x028  VECTORS_DONE     RO     vectors whose last result beat left
0x040  LOAD_ADDR        RW     address of the next CPU load beat
0x044  LOAD_DATA        WO     pushes the load beat {LOAD_ADDR, data}; B held until accepted
0x100  ACT_DATA[i]      WO     word i of the next act beat; writing word ACT_WORDS-1 pushes
                               it, B held until accepted
0x800  RES_DATA[i]      RO     word i of the result beat at the head; reading word
                               RES_WORDS-1 pops it; R held until a beat waits
====== ================ ====== ============================================================

``ACT_WORDS = ceil(8 * act_lanes / 32)``, ``RES_WORDS = ceil(res_lanes * res_width / 32)``.

Modes. With ``CONTROL.cpu_mode`` clear (after reset) the engine's ``act``, ``res`` and
``load`` streams are the AXI4-Stream ports; a CPU push to ``LOAD_DATA`` or the last
``ACT_DATA`` word, or a read of ``RES_DATA``, then answers SLVERR at once and does nothing.
With it set, they go through the registers and the AXI4-Stream ports' ``tready``/``tvalid``
are held low. Change the mode only while no beat is offered on either side.

STATUS. ``busy``: a vector's first act beat was accepted and its last result beat has not
left (a 16-bit count of vectors in flight). ``layer_loaded``: a load beat was accepted since
the last reset or soft reset. ``load_ready``, ``act_ready``, ``res_valid``: the engine's
``load.ready``, ``act.ready`` and ``res.valid`` now. ``tlast_error``: sticky, cleared by
``CONTROL.clear``.

Counters are 32 bits and wrap (differences of two reads are exact modulo 2^32); they count
from reset or the last ``CONTROL.clear``, and keep counting through a soft reset.

Soft reset resets the engine and the wrapper's stream side (beat counts, vectors in flight,
``layer_loaded``); the registers, the counters and the AXI4-Lite slave keep their state.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

from amaranth.hdl import (Cat, ClockDomain, ClockSignal, Const, DomainRenamer, Instance, Module,
                          Mux, ResetSignal, Shape, Signal, unsigned)
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .engines.base import Engine
from .loadmap import DATA_WIDTH
from .stream import Signature

__all__ = ["ID_VALUE", "ADDR_WIDTH", "LOAD_TDATA_WIDTH", "LOAD_TDATA_ADDR_LSB", "ENGINE_CODES",
           "Field", "Register", "REGISTERS", "register", "axi_lite_members", "AXILiteSlave",
           "BeatFramer", "Counters", "StreamMux", "StreamDemux", "RegisterFile", "AXIWrapper",
           "source_sha256", "verilog_text"]

#: The ID register: "SCTR" in ASCII.
ID_VALUE = 0x53435452
#: AXI4-Lite byte address bits (4 KiB).
ADDR_WIDTH = 12
#: ``s_axis_load_tdata``: ``{addr, data}``, the address from this bit up.
LOAD_TDATA_WIDTH = 64
LOAD_TDATA_ADDR_LSB = 32
#: GEOMETRY's engine code.
ENGINE_CODES = {"dense": 0, "ternary": 1, "lfsr": 2, "permdiag": 3, "cim": 4}
#: Bits of the count of vectors in flight behind STATUS.busy.
IN_FLIGHT_BITS = 16
#: AXI responses.
OKAY, SLVERR = 0, 2


@dataclass(frozen=True)
class Field:
    """A bit field of a register: ``bits`` bits from ``lsb``."""
    name: str
    lsb: int
    bits: int
    doc: str

    @property
    def mask(self) -> int:
        return ((1 << self.bits) - 1) << self.lsb


@dataclass(frozen=True)
class Register:
    """One register (``words == 1``) or window of ``words`` consecutive words, at byte
    ``offset``; ``access`` is ``RO``, ``RW`` or ``WO``."""
    name: str
    offset: int
    access: str
    doc: str
    fields: tuple[Field, ...] = ()
    words: int = 1
    reset: int = 0

    @property
    def word(self) -> int:
        """The word address (byte offset / 4)."""
        return self.offset >> 2

    @property
    def readable(self) -> bool:
        return self.access in ("RO", "RW")

    def field(self, name: str) -> Field:
        """The field ``name``.

        Raises
        ------
        ValueError
            If the register has no such field.
        """
        for field in self.fields:
            if field.name == name:
                return field
        raise ValueError(f"AXI register {self.name} has no field {name!r}; its fields are "
                         f"{', '.join(field.name for field in self.fields) or 'none'}")

    def describe(self) -> dict:
        return {"name": self.name, "offset": self.offset, "access": self.access,
                "doc": self.doc, "words": self.words, "reset": self.reset,
                "fields": [{"name": f.name, "lsb": f.lsb, "bits": f.bits, "mask": f.mask,
                            "doc": f.doc} for f in self.fields]}


def _bits(*fields) -> tuple[Field, ...]:
    return tuple(Field(name, lsb, bits, doc) for name, lsb, bits, doc in fields)


#: The register map (see the module documentation), in address order.
REGISTERS = (
    Register("ID", 0x000, "RO", 'constant 0x53435452 ("SCTR")'),
    Register("KEY", 0x004, "RO", "bits 31:0 of the manifest's generator_key (hex sha256 as an "
             "integer)"),
    Register("GEOMETRY", 0x008, "RO", "the engine's stream geometry", _bits(
        ("act_lanes", 0, 8, "int8 lanes of an act beat"),
        ("res_lanes", 8, 8, "lanes of a res beat"),
        ("res_width", 16, 8, "bits of a res lane"),
        ("engine", 24, 8, "engine code: dense 0, ternary 1, lfsr 2, permdiag 3, cim 4"))),
    Register("STATUS", 0x00C, "RO", "state now", _bits(
        ("busy", 0, 1, "a vector's first act beat was accepted and its last result beat has "
                       "not left"),
        ("layer_loaded", 1, 1, "a load beat was accepted since reset or soft reset"),
        ("load_ready", 2, 1, "the engine's load.ready"),
        ("act_ready", 3, 1, "the engine's act.ready"),
        ("res_valid", 4, 1, "the engine's res.valid (a result beat waits)"),
        ("tlast_error", 5, 1, "sticky: an s_axis_act tlast disagreed with ACT_BEATS; cleared "
                              "by CONTROL.clear"))),
    Register("CONTROL", 0x010, "RW", "control", _bits(
        ("clear", 0, 1, "write 1: clear the counters and STATUS.tlast_error (self-clearing)"),
        ("soft_reset", 1, 1, "write 1: a one-cycle reset of the engine and the stream side "
                             "(self-clearing)"),
        ("cpu_mode", 2, 1, "1: act, res and load through ACT_DATA, RES_DATA and LOAD_DATA, "
                           "the AXI4-Stream ports held off; 0: through the AXI4-Stream "
                           "ports"))),
    Register("ACT_BEATS", 0x014, "RW", "act beats per vector (s_axis_act tlast checking, "
             "STATUS.busy); 0 counts as 1", reset=1),
    Register("RES_BEATS", 0x018, "RW", "res beats per vector (m_axis_res tlast, "
             "VECTORS_DONE); 0 counts as 1", reset=1),
    Register("CYCLES_BUSY", 0x020, "RO", "cycles with STATUS.busy set (32 bits, wraps)"),
    Register("CYCLES_RES_STALL", 0x024, "RO", "cycles with the engine's res.valid high and "
             "res.ready low (32 bits, wraps)"),
    Register("VECTORS_DONE", 0x028, "RO", "vectors whose last result beat left (32 bits, "
             "wraps)"),
    Register("LOAD_ADDR", 0x040, "RW", "load address of the next CPU load beat"),
    Register("LOAD_DATA", 0x044, "WO", "writing pushes the load beat {LOAD_ADDR, data} (cpu "
             "mode; SLVERR otherwise); the write response waits until the engine accepts it"),
    Register("ACT_DATA", 0x100, "WO", "word i of the next act beat (lane 0 in the LSBs of word "
             "0); writing word ACT_WORDS-1 pushes the beat (cpu mode; SLVERR otherwise), the "
             "write response waits until the engine accepts it", words=448),
    Register("RES_DATA", 0x800, "RO", "word i of the result beat at the head (lane 0 in the "
             "LSBs of word 0); reading word RES_WORDS-1 pops it; a read waits until a beat is "
             "there (cpu mode; SLVERR at once otherwise)", words=512),
)


def register(name: str) -> Register:
    """The register ``name`` of :data:`REGISTERS`.

    Raises
    ------
    ValueError
        If there is none.
    """
    for reg in REGISTERS:
        if reg.name == name:
            return reg
    raise ValueError(f"the AXI register map has no register {name!r}; its registers are "
                     f"{', '.join(reg.name for reg in REGISTERS)}")


def _check_int(value, name: str, low: int, high: int, owner: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner} {name} must be an integer in [{low}, {high}], not {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{owner} {name} must be an integer in [{low}, {high}], not {value}")
    return value


# AXI4-Lite slave -------------------------------------------------------------------------------

def axi_lite_members(addr_width: int) -> dict:
    """The AXI4-Lite slave's port members (without prefix), as the slave sees them."""
    return {
        "awaddr": In(addr_width), "awprot": In(3), "awvalid": In(1), "awready": Out(1),
        "wdata": In(DATA_WIDTH), "wstrb": In(DATA_WIDTH // 8), "wvalid": In(1), "wready": Out(1),
        "bresp": Out(2), "bvalid": Out(1), "bready": In(1),
        "araddr": In(addr_width), "arprot": In(3), "arvalid": In(1), "arready": Out(1),
        "rdata": Out(DATA_WIDTH), "rresp": Out(2), "rvalid": Out(1), "rready": In(1),
    }


def write_layout(word_bits: int) -> data.StructLayout:
    """A register write request: word address, data and byte strobes."""
    return data.StructLayout({"addr": unsigned(word_bits), "data": unsigned(DATA_WIDTH),
                              "strb": unsigned(DATA_WIDTH // 8)})


class AXILiteSlave(wiring.Component):
    """An AXI4-Lite slave that turns each transaction into one request on a stream.

    A write (address and data, in either order) becomes one beat on ``write`` (word address,
    data, strobes); the B response follows the cycle after the beat transfers, SLVERR if
    ``write_error`` was high with it. A read becomes one beat on ``read`` (word address); R
    carries ``read_data`` and ``read_error`` as they were at the transfer. The register side
    thus holds a response back by holding ``ready`` low. One write and one read are
    outstanding at a time; ``AWPROT`` and ``ARPROT`` are ignored.

    Parameters
    ----------
    addr_width : int
        Byte address bits, in [3, 32].

    Raises
    ------
    TypeError, ValueError
        If ``addr_width`` is not an integer in [3, 32].

    Members
    -------
    The AXI4-Lite ports of :func:`axi_lite_members`, and
    write : ``Out(Signature(write_layout(addr_width - 2)))``
    write_error : ``In(1)``
    read : ``Out(Signature(addr_width - 2))``
    read_data : ``In(32)``
    read_error : ``In(1)``
    """

    def __init__(self, addr_width: int = ADDR_WIDTH):
        self._addr_width = _check_int(addr_width, "addr_width", 3, 32, "AXILiteSlave")
        word_bits = addr_width - 2
        super().__init__(dict(axi_lite_members(addr_width),
                              write=Out(Signature(write_layout(word_bits))), write_error=In(1),
                              read=Out(Signature(word_bits)), read_data=In(DATA_WIDTH),
                              read_error=In(1)))

    def elaborate(self, platform):
        m = Module()
        aw_full, w_full, ar_full = Signal(), Signal(), Signal()
        m.d.comb += [self.awready.eq(~aw_full), self.wready.eq(~w_full),
                     self.arready.eq(~ar_full)]

        with m.If(self.awvalid & self.awready):
            m.d.sync += [aw_full.eq(1), self.write.payload.addr.eq(self.awaddr[2:])]
        with m.If(self.wvalid & self.wready):
            m.d.sync += [w_full.eq(1), self.write.payload.data.eq(self.wdata),
                         self.write.payload.strb.eq(self.wstrb)]
        # One response outstanding: the next request waits until B has been taken.
        m.d.comb += self.write.valid.eq(aw_full & w_full & ~self.bvalid)
        with m.If(self.write.valid & self.write.ready):
            m.d.sync += [aw_full.eq(0), w_full.eq(0), self.bvalid.eq(1),
                         self.bresp.eq(Mux(self.write_error, SLVERR, OKAY))]
        with m.Elif(self.bvalid & self.bready):
            m.d.sync += self.bvalid.eq(0)

        with m.If(self.arvalid & self.arready):
            m.d.sync += [ar_full.eq(1), self.read.payload.eq(self.araddr[2:])]
        m.d.comb += self.read.valid.eq(ar_full & ~self.rvalid)
        with m.If(self.read.valid & self.read.ready):
            m.d.sync += [ar_full.eq(0), self.rvalid.eq(1), self.rdata.eq(self.read_data),
                         self.rresp.eq(Mux(self.read_error, SLVERR, OKAY))]
        with m.Elif(self.rvalid & self.rready):
            m.d.sync += self.rvalid.eq(0)
        return m


# Stream side -----------------------------------------------------------------------------------

class BeatFramer(wiring.Component):
    """Counts the beats of a stream into vectors of ``beats`` beats.

    Members
    -------
    fire : ``In(1)``
        A beat transfers this cycle.
    beats : ``In(32)``
        Beats per vector; 0 counts as 1.
    first : ``Out(1)``
        The next beat is a vector's first.
    last : ``Out(1)``
        The next beat is a vector's last.
    """

    def __init__(self):
        super().__init__({"fire": In(1), "beats": In(32), "first": Out(1), "last": Out(1)})

    def elaborate(self, platform):
        m = Module()
        count = Signal(32)
        m.d.comb += [self.first.eq(count == 0), self.last.eq(count + 1 >= self.beats)]
        with m.If(self.fire):
            m.d.sync += count.eq(Mux(self.last, 0, count + 1))
        return m


class Counters(wiring.Component):
    """The performance counters: 32 bits each, wrapping, cleared by ``clear``.

    Members
    -------
    busy, res_stall, vector_done : ``In(1)``
        Counted once per cycle they are high.
    clear : ``In(1)``
        Zero every counter (this cycle's events are not counted).
    cycles_busy, cycles_res_stall, vectors_done : ``Out(32)``
    """

    #: counter output -> the event it counts.
    EVENTS = {"cycles_busy": "busy", "cycles_res_stall": "res_stall",
              "vectors_done": "vector_done"}

    def __init__(self):
        members = {event: In(1) for event in self.EVENTS.values()}
        members.update({counter: Out(32) for counter in self.EVENTS})
        members["clear"] = In(1)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        for counter, event in self.EVENTS.items():
            value = getattr(self, counter)
            with m.If(self.clear):
                m.d.sync += value.eq(0)
            with m.Elif(getattr(self, event)):
                m.d.sync += value.eq(value + 1)
        return m


def _check_width(width, owner: str) -> int:
    return _check_int(width, "width", 1, 1 << 16, owner)


class StreamMux(wiring.Component):
    """Two streams into one: ``b`` when ``select`` is high, else ``a``; the other one's
    ``ready`` is held low (combinational, no state).

    Parameters
    ----------
    width : int
        Payload bits, in [1, 65536].

    Raises
    ------
    TypeError, ValueError
        If ``width`` is not an integer in [1, 65536].

    Members
    -------
    a, b : ``In(Signature(width))``
    select : ``In(1)``
    o : ``Out(Signature(width))``
    """

    def __init__(self, width: int):
        _check_width(width, "StreamMux")
        super().__init__({"a": In(Signature(width)), "b": In(Signature(width)),
                          "select": In(1), "o": Out(Signature(width))})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [self.o.payload.eq(Mux(self.select, self.b.payload, self.a.payload)),
                     self.o.valid.eq(Mux(self.select, self.b.valid, self.a.valid)),
                     self.a.ready.eq(~self.select & self.o.ready),
                     self.b.ready.eq(self.select & self.o.ready)]
        return m


class StreamDemux(wiring.Component):
    """One stream out to two: to ``b`` when ``select`` is high, else to ``a``; the other
    one's ``valid`` is held low (combinational, no state).

    Parameters
    ----------
    width : int
        Payload bits, in [1, 65536].

    Raises
    ------
    TypeError, ValueError
        If ``width`` is not an integer in [1, 65536].

    Members
    -------
    i : ``In(Signature(width))``
    select : ``In(1)``
    a, b : ``Out(Signature(width))``
    """

    def __init__(self, width: int):
        _check_width(width, "StreamDemux")
        super().__init__({"i": In(Signature(width)), "select": In(1),
                          "a": Out(Signature(width)), "b": Out(Signature(width))})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [self.a.payload.eq(self.i.payload), self.b.payload.eq(self.i.payload),
                     self.a.valid.eq(~self.select & self.i.valid),
                     self.b.valid.eq(self.select & self.i.valid),
                     self.i.ready.eq(Mux(self.select, self.b.ready, self.a.ready))]
        return m


# The register file -----------------------------------------------------------------------------

def _words(bits: int) -> int:
    return math.ceil(bits / DATA_WIDTH)


class RegisterFile(wiring.Component):
    """The register map of :data:`REGISTERS`, decoded from its description: register requests
    from :class:`AXILiteSlave` in, control values and the CPU's act, load and res streams out.

    Parameters
    ----------
    act_width : int
        Bits of an act beat, in [1, 32 * ACT_DATA's words].
    res_width : int
        Bits of a res beat, in [1, 32 * RES_DATA's words].
    load_addr_width : int
        Bits of a load address, in [1, 32].
    key, geometry : int
        The KEY and GEOMETRY registers' values, in [0, 2**32 - 1].

    Raises
    ------
    TypeError, ValueError
        If a parameter is not an integer in its range.

    Members
    -------
    write : ``In(Signature(write_layout(ADDR_WIDTH - 2)))``, write_error : ``Out(1)``
    read : ``In(Signature(ADDR_WIDTH - 2))``, read_data : ``Out(32)``, read_error : ``Out(1)``
    busy, layer_loaded, load_ready, act_ready, res_valid : ``In(1)``
        STATUS's live bits.
    tlast_mismatch : ``In(1)``
        Sets the sticky STATUS.tlast_error.
    cycles_busy, cycles_res_stall, vectors_done : ``In(32)``
        The counters.
    cpu_mode : ``Out(1)``; clear, soft_reset : ``Out(1)``
        CONTROL's bits; the last two high for one cycle after a write of 1.
    act_beats, res_beats : ``Out(32)``
    act : ``Out(Signature(act_width))``
        The beats pushed through ACT_DATA.
    load : ``Out(Signature(load_addr_width + 32))``
        The beats pushed through LOAD_DATA: ``{data, addr}``, addr in the low bits.
    res : ``In(Signature(res_width))``
        The beats popped through RES_DATA.
    """

    #: STATUS's bits that are live inputs (tlast_error is held here).
    LIVE_STATUS = ("busy", "layer_loaded", "load_ready", "act_ready", "res_valid")

    def __init__(self, *, act_width: int, res_width: int, load_addr_width: int, key: int,
                 geometry: int):
        owner = "RegisterFile"
        self._act_width = _check_int(act_width, "act_width", 1,
                                     DATA_WIDTH * register("ACT_DATA").words, owner)
        self._res_width = _check_int(res_width, "res_width", 1,
                                     DATA_WIDTH * register("RES_DATA").words, owner)
        self._load_addr_width = _check_int(load_addr_width, "load_addr_width", 1, 32, owner)
        self._key = _check_int(key, "key", 0, (1 << 32) - 1, owner)
        self._geometry = _check_int(geometry, "geometry", 0, (1 << 32) - 1, owner)
        members = {"write": In(Signature(write_layout(ADDR_WIDTH - 2))), "write_error": Out(1),
                   "read": In(Signature(ADDR_WIDTH - 2)), "read_data": Out(DATA_WIDTH),
                   "read_error": Out(1), "tlast_mismatch": In(1),
                   "cpu_mode": Out(1), "clear": Out(1), "soft_reset": Out(1),
                   "act_beats": Out(32, init=1), "res_beats": Out(32, init=1),
                   "act": Out(Signature(act_width)), "load": Out(Signature(load_addr_width + 32)),
                   "res": In(Signature(res_width))}
        members.update({name: In(1) for name in self.LIVE_STATUS})
        members.update({counter: In(32) for counter in Counters.EVENTS})
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        act_words, res_words = _words(self._act_width), _words(self._res_width)
        act_base, res_base = register("ACT_DATA").word, register("RES_DATA").word
        write, read = self.write, self.read
        addr, wdata, strb = write.payload.addr, write.payload.data, write.payload.strb

        def merged(old):
            """``old`` with the bytes the write strobes replaced by the write data."""
            return Cat(*(Mux(strb[byte], wdata[8 * byte:8 * byte + 8], old[8 * byte:8 * byte + 8])
                         for byte in range(DATA_WIDTH // 8)))

        # Storage of the writable words. CONTROL stores cpu_mode; clear and soft_reset pulse.
        control = register("CONTROL")
        control_word = Signal(DATA_WIDTH)
        m.d.comb += self.cpu_mode.eq(control_word[control.field("cpu_mode").lsb])
        stored = {"CONTROL": control_word, "ACT_BEATS": self.act_beats,
                  "RES_BEATS": self.res_beats, "LOAD_ADDR": Signal(DATA_WIDTH, name="load_addr"),
                  "LOAD_DATA": Signal(DATA_WIDTH, name="load_data")}
        act_buffer = [Signal(DATA_WIDTH, name=f"act_word{i}") for i in range(act_words)]

        # Pushes: the write request itself is the beat, held until the engine takes it.
        act_push = write.valid & (addr == act_base + act_words - 1)
        load_push = write.valid & (addr == register("LOAD_DATA").word)
        m.d.comb += [
            self.act.payload.eq(Cat(*act_buffer[:-1], merged(act_buffer[-1]))),
            self.act.valid.eq(act_push & self.cpu_mode),
            self.load.payload.eq(Cat(stored["LOAD_ADDR"][:self._load_addr_width],
                                     merged(stored["LOAD_DATA"]))),
            self.load.valid.eq(load_push & self.cpu_mode),
            self.write_error.eq((act_push | load_push) & ~self.cpu_mode),
            write.ready.eq(Mux(self.act.valid, self.act.ready,
                               Mux(self.load.valid, self.load.ready, 1))),
        ]
        m.d.sync += [self.clear.eq(0), self.soft_reset.eq(0)]
        with m.If(write.valid & write.ready & ~self.write_error):
            with m.Switch(addr):
                for reg in REGISTERS:
                    if reg.access == "RO" or reg.words > 1:
                        continue
                    with m.Case(reg.word):
                        value = merged(stored[reg.name])
                        m.d.sync += stored[reg.name].eq(value)
                        if reg.name == "CONTROL":
                            m.d.sync += [self.clear.eq(value[control.field("clear").lsb]),
                                         self.soft_reset.eq(
                                             value[control.field("soft_reset").lsb]),
                                         # Only cpu_mode is kept: the pulses read as 0.
                                         control_word.eq(value & control.field("cpu_mode").mask)]
                for index, word in enumerate(act_buffer):
                    with m.Case(act_base + index):
                        m.d.sync += word.eq(merged(word))

        # Reads.
        tlast_error = Signal()
        with m.If(self.clear):
            m.d.sync += tlast_error.eq(0)
        with m.Elif(self.tlast_mismatch):
            m.d.sync += tlast_error.eq(1)
        live = {name: getattr(self, name) for name in self.LIVE_STATUS}
        values = {"ID": Const(ID_VALUE, DATA_WIDTH), "KEY": Const(self._key, DATA_WIDTH),
                  "GEOMETRY": Const(self._geometry, DATA_WIDTH),
                  "STATUS": Cat(*(live.get(field.name, tlast_error)
                                  for field in register("STATUS").fields)),
                  "CYCLES_BUSY": self.cycles_busy, "CYCLES_RES_STALL": self.cycles_res_stall,
                  "VECTORS_DONE": self.vectors_done}
        values.update({name: stored[name] for name in ("CONTROL", "ACT_BEATS", "RES_BEATS",
                                                      "LOAD_ADDR")})
        raddr = read.payload
        res_index = Signal(range(res_words))
        in_res = (raddr >= res_base) & (raddr < res_base + res_words)
        m.d.comb += [res_index.eq(raddr - res_base), read.ready.eq(1)]
        res_words_value = Signal(res_words * DATA_WIDTH)
        m.d.comb += res_words_value.eq(self.res.payload)
        with m.Switch(raddr):
            for reg in REGISTERS:
                if reg.readable and reg.words == 1:
                    with m.Case(reg.word):
                        m.d.comb += self.read_data.eq(values[reg.name])
        with m.If(in_res):
            with m.If(self.cpu_mode):
                m.d.comb += [read.ready.eq(self.res.valid),
                             self.read_data.eq(res_words_value.word_select(res_index, DATA_WIDTH)),
                             self.res.ready.eq(read.valid & (res_index == res_words - 1))]
            with m.Else():
                m.d.comb += self.read_error.eq(1)
        return m


# The wrapper -----------------------------------------------------------------------------------

def _byte_width(bits: int) -> int:
    return -(-bits // 8) * 8


class AXIWrapper(wiring.Component):
    """The engine ``<top>`` behind AXI4-Stream ports and the AXI4-Lite register file of
    :data:`REGISTERS` (see the module documentation), as the Verilog module ``<top>_axi``.

    The engine is an ``Instance`` of its Verilog module, so the wrapper's Verilog needs the
    engine's beside it (``<top>_axi.f`` lists both).

    Parameters
    ----------
    engine : Engine
        The engine to wrap (its name must have an :data:`ENGINE_CODES` entry).
    key : int, optional
        The KEY register, in [0, 2**32 - 1]; by default bits 31:0 of the engine's
        :func:`secateur.gen.rtl.generator_key`.

    Raises
    ------
    TypeError
        If ``engine`` is not an :class:`~secateur.hdl.engines.base.Engine` or ``key`` not an
        integer.
    ValueError
        If the engine has no engine code, its ``act_lanes``, ``res_lanes`` or ``res_width``
        does not fit GEOMETRY's 8-bit field, a beat needs more words than its window
        (ACT_DATA, RES_DATA) has, its load address is wider than 32 bits, or ``key`` is out
        of range.

    Members
    -------
    aclk, aresetn : ``In(1)``
    s_axis_act_tdata : ``In(8 * act_lanes)``, s_axis_act_tvalid, s_axis_act_tlast : ``In(1)``,
    s_axis_act_tready : ``Out(1)``
    m_axis_res_tdata : ``Out(res_lanes * res_width rounded up to bytes)``, m_axis_res_tvalid,
    m_axis_res_tlast : ``Out(1)``, m_axis_res_tready : ``In(1)``
    s_axis_load_tdata : ``In(64)``, s_axis_load_tvalid : ``In(1)``, s_axis_load_tready : ``Out(1)``
    s_axi_ctrl_* : the AXI4-Lite slave ports of :func:`axi_lite_members` (12-bit addresses)
    """

    def __init__(self, engine: Engine, key: int | None = None):
        if not isinstance(engine, Engine):
            raise TypeError(f"AXIWrapper engine must be an Engine, not {type(engine).__name__}")
        if engine.name not in ENGINE_CODES:
            raise ValueError(f"AXIWrapper has no engine code for the {engine.name} engine; "
                             f"codes exist for {', '.join(ENGINE_CODES)}")
        geometry = register("GEOMETRY")
        sizes = {"act_lanes": engine.act_lanes, "res_lanes": engine.res_lanes,
                 "res_width": engine.res_width, "engine": ENGINE_CODES[engine.name]}
        for name, value in sizes.items():
            field = geometry.field(name)
            if value >= 1 << field.bits:
                raise ValueError(f"AXIWrapper: the {engine.name} engine's {name} is {value}; "
                                 f"GEOMETRY's {name} field holds at most {(1 << field.bits) - 1}")
        self._act_width = 8 * engine.act_lanes
        self._res_width = engine.res_lanes * engine.res_width
        for window, bits, what in (("ACT_DATA", self._act_width, "act_lanes"),
                                   ("RES_DATA", self._res_width, "res_lanes * res_width")):
            words = register(window).words
            if _words(bits) > words:
                raise ValueError(f"AXIWrapper: a beat of the {engine.name} engine is "
                                 f"{_words(bits)} words ({what} = {bits} bits); the {window} "
                                 f"window holds {words}")
        self._addr_width = engine.load_map.addr_width
        if self._addr_width > DATA_WIDTH:
            raise ValueError(f"AXIWrapper: the {engine.name} engine's load addresses are "
                             f"{self._addr_width} bits; s_axis_load_tdata carries at most "
                             f"{DATA_WIDTH}")
        if key is None:
            from ..gen.rtl import generator_key  # gen builds on hdl: import on demand
            key = int(generator_key(engine), 16) & ((1 << DATA_WIDTH) - 1)
        self._key = _check_int(key, "key", 0, (1 << DATA_WIDTH) - 1, "AXIWrapper")
        self._engine = engine
        self._geometry = sum(value << geometry.field(name).lsb for name, value in sizes.items())
        members = {"aclk": In(1), "aresetn": In(1),
                   "s_axis_act_tdata": In(self._act_width), "s_axis_act_tvalid": In(1),
                   "s_axis_act_tready": Out(1), "s_axis_act_tlast": In(1),
                   "m_axis_res_tdata": Out(_byte_width(self._res_width)),
                   "m_axis_res_tvalid": Out(1), "m_axis_res_tready": In(1),
                   "m_axis_res_tlast": Out(1),
                   "s_axis_load_tdata": In(LOAD_TDATA_WIDTH), "s_axis_load_tvalid": In(1),
                   "s_axis_load_tready": Out(1)}
        members.update({f"s_axi_ctrl_{name}": member
                        for name, member in axi_lite_members(ADDR_WIDTH).items()})
        super().__init__(members)

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def top(self) -> str:
        """The wrapper's Verilog module name."""
        return f"{self._engine.top}_axi"

    @property
    def key(self) -> int:
        return self._key

    @property
    def geometry(self) -> int:
        """The GEOMETRY register's value."""
        return self._geometry

    @property
    def act_words(self) -> int:
        return _words(self._act_width)

    @property
    def res_words(self) -> int:
        return _words(self._res_width)

    def ports(self) -> list[dict]:
        """Every port: name, direction and width, in declaration order."""
        return [{"name": "_".join(str(part) for part in path),
                 "direction": "input" if member.flow == wiring.In else "output",
                 "width": Shape.cast(member.shape).width}
                for path, member, _ in self.signature.flatten(self)]

    def describe(self) -> dict:
        """The manifest's ``axi`` section: the wrapper's module and ports, the register map
        and the values of its constant registers."""
        return {
            "top": self.top,
            "clock": {"name": "aclk", "edge": "rising"},
            "reset": {"name": "aresetn", "kind": "synchronous", "active": "low"},
            "ports": self.ports(),
            "addr_width": ADDR_WIDTH, "data_width": DATA_WIDTH,
            "act_words": self.act_words, "res_words": self.res_words,
            "act_tdata_width": self._act_width,
            "res_tdata_width": _byte_width(self._res_width),
            "load_tdata": {"width": LOAD_TDATA_WIDTH, "addr_lsb": LOAD_TDATA_ADDR_LSB,
                           "addr_bits": self._addr_width, "data_lsb": 0,
                           "data_bits": DATA_WIDTH},
            "id": ID_VALUE, "key": self._key, "geometry": self._geometry,
            "engine_code": ENGINE_CODES[self._engine.name],
            "registers": [reg.describe() for reg in REGISTERS],
            "source_sha256": source_sha256(),
        }

    def elaborate(self, platform):
        m = Module()
        # Two domains on aclk: "sync" (registers, counters, AXI4-Lite) resets with aresetn;
        # "engine" (the engine and the stream side) also with CONTROL.soft_reset.
        m.domains.sync = sync = ClockDomain("sync", local=True)
        m.domains.engine = engine_domain = ClockDomain("engine", local=True)
        m.submodules.ctrl = slave = AXILiteSlave(ADDR_WIDTH)
        m.submodules.registers = regs = RegisterFile(
            act_width=self._act_width, res_width=self._res_width,
            load_addr_width=self._addr_width, key=self._key, geometry=self._geometry)
        m.submodules.counters = counters = Counters()
        m.d.comb += [sync.clk.eq(self.aclk), sync.rst.eq(~self.aresetn),
                     engine_domain.clk.eq(self.aclk),
                     engine_domain.rst.eq(~self.aresetn | regs.soft_reset)]

        for name, member in axi_lite_members(ADDR_WIDTH).items():
            port, inner = getattr(self, f"s_axi_ctrl_{name}"), getattr(slave, name)
            m.d.comb += inner.eq(port) if member.flow == wiring.In else port.eq(inner)
        wiring.connect(m, slave.write, regs.write)
        wiring.connect(m, slave.read, regs.read)
        m.d.comb += [slave.write_error.eq(regs.write_error), slave.read_data.eq(regs.read_data),
                     slave.read_error.eq(regs.read_error)]

        # The streams: AXI4-Stream port (a) or CPU registers (b), by CONTROL.cpu_mode.
        m.submodules.act_mux = act = StreamMux(self._act_width)
        m.submodules.load_mux = load = StreamMux(self._addr_width + DATA_WIDTH)
        m.submodules.res_demux = res = StreamDemux(self._res_width)
        m.submodules.act_framer = act_framer = DomainRenamer("engine")(BeatFramer())
        m.submodules.res_framer = res_framer = DomainRenamer("engine")(BeatFramer())
        tdata = self.s_axis_load_tdata
        m.d.comb += [
            act.select.eq(regs.cpu_mode), load.select.eq(regs.cpu_mode),
            res.select.eq(regs.cpu_mode),
            act.a.payload.eq(self.s_axis_act_tdata), act.a.valid.eq(self.s_axis_act_tvalid),
            self.s_axis_act_tready.eq(act.a.ready),
            load.a.payload.eq(Cat(tdata[LOAD_TDATA_ADDR_LSB:LOAD_TDATA_ADDR_LSB +
                                        self._addr_width], tdata[:DATA_WIDTH])),
            load.a.valid.eq(self.s_axis_load_tvalid), self.s_axis_load_tready.eq(load.a.ready),
            self.m_axis_res_tdata.eq(res.a.payload), self.m_axis_res_tvalid.eq(res.a.valid),
            res.a.ready.eq(self.m_axis_res_tready), self.m_axis_res_tlast.eq(res_framer.last),
        ]
        wiring.connect(m, regs.act, act.b)
        wiring.connect(m, regs.load, load.b)
        wiring.connect(m, res.b, regs.res)

        act_fire = act.o.valid & act.o.ready
        res_fire = res.i.valid & res.i.ready
        m.d.comb += [act_framer.fire.eq(act_fire), act_framer.beats.eq(regs.act_beats),
                     res_framer.fire.eq(res_fire), res_framer.beats.eq(regs.res_beats),
                     regs.tlast_mismatch.eq(act.a.valid & act.a.ready &
                                            (self.s_axis_act_tlast != act_framer.last))]

        # STATUS and the counters.
        in_flight = Signal(IN_FLIGHT_BITS)
        layer_loaded = Signal()
        enters, leaves = act_fire & act_framer.first, res_fire & res_framer.last
        m.d.engine += in_flight.eq(in_flight + enters - leaves)
        with m.If(load.o.valid & load.o.ready):
            m.d.engine += layer_loaded.eq(1)
        m.d.comb += [regs.busy.eq(in_flight != 0), regs.layer_loaded.eq(layer_loaded),
                     regs.load_ready.eq(load.o.ready), regs.act_ready.eq(act.o.ready),
                     regs.res_valid.eq(res.i.valid),
                     counters.busy.eq(in_flight != 0),
                     counters.res_stall.eq(res.i.valid & ~res.i.ready),
                     counters.vector_done.eq(leaves), counters.clear.eq(regs.clear)]
        for counter in Counters.EVENTS:
            m.d.comb += getattr(regs, counter).eq(getattr(counters, counter))

        m.submodules.engine = Instance(
            self._engine.top,
            i_clk=ClockSignal("engine"), i_rst=ResetSignal("engine"),
            i_load__payload=load.o.payload, i_load__valid=load.o.valid,
            o_load__ready=load.o.ready,
            i_act__payload=act.o.payload, i_act__valid=act.o.valid, o_act__ready=act.o.ready,
            o_res__payload=res.i.payload, o_res__valid=res.i.valid, i_res__ready=res.i.ready)
        return m


def source_sha256() -> str:
    """Digest of this module, which alone determines the wrapper's Verilog besides the engine's
    sizes and the key (the manifest records it, so that an edit here regenerates the
    wrapper)."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


#: Defined only by ``make lint``, which checks the wrapper against this port stub instead of
#: re-linting the engine (which the engine's own filelist lints).
LINT_STUB_DEFINE = "SECATEUR_AXI_LINT_STUB"


def _lint_stub(wrapper: AXIWrapper) -> str:
    engine = wrapper.engine
    ports = [("clk", "input", 1), ("rst", "input", 1),
             ("load__payload", "input", wrapper._addr_width + DATA_WIDTH),
             ("load__valid", "input", 1), ("load__ready", "output", 1),
             ("act__payload", "input", wrapper._act_width), ("act__valid", "input", 1),
             ("act__ready", "output", 1),
             ("res__payload", "output", wrapper._res_width), ("res__valid", "output", 1),
             ("res__ready", "input", 1)]
    lines = [f"`ifdef {LINT_STUB_DEFINE}",
             f"// The ports of {engine.top} and nothing else: make lint checks {wrapper.top}",
             f"// against it (verilator +define+{LINT_STUB_DEFINE}) without re-linting the engine.",
             f"module {engine.top}({', '.join(name for name, _, _ in ports)});"]
    for name, direction, width in ports:
        lines.append(f"  {direction} {'' if width == 1 else f'[{width - 1}:0] '}{name};")
        if direction == "output":
            lines.append(f"  assign {name} = {width}'d0;")
    lines += ["endmodule", "`endif", ""]
    return "\n".join(lines)


def verilog_text(wrapper: AXIWrapper) -> str:
    """The wrapper's Verilog (the module ``<top>_axi``, without the engine's module), then a
    port stub of the engine that only ``make lint`` defines (:data:`LINT_STUB_DEFINE`)."""
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")
    from amaranth.back import verilog
    return verilog.convert(wrapper, name=wrapper.top, emit_src=False) + _lint_stub(wrapper)
