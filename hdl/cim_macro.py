"""A behavioral model of an RRAM compute-in-memory macro, behind the documented macro port.

The CIM controller (:mod:`secateur.hdl.engines.cim`) drives macros only through
:class:`MacroSignature`, so a real macro can replace this model as a black box. The model is
exact and digital: it computes what an ideal analog array and ADC would, as defined in
:mod:`secateur.models.cim`.

Array
    ``rows x cols`` single-bit cells (row ``r`` is word line ``r``, column ``c`` bit line
    ``c``). The model keeps the ``col_mux`` bit lines of each ADC in one memory whose words
    are whole bit lines, so that an ADC reads its selected bit line in one access, as the
    analog array does; ``rst`` does not clear the cells (memory contents survive a reset, as
    in the engine protocol).

Macro port protocol (one clock, synchronous)
    *Cell writes*: when ``wr_en`` is high at a rising edge, for each ``b`` in ``0 .. 7`` with
    ``wr_mask[b]`` set, the cell of column ``wr_col`` and row ``8 * wr_chunk + b`` takes
    ``wr_data[b]`` (rows beyond the array are ignored); cells whose mask bit is clear keep
    their value, so a controller can store only some rows (twofold sparsity).

    *Conversions*: when ``adc_start`` is high at a rising edge the macro samples ``wl`` (the
    word-line enables), ``col_sel`` and ``adc_en``. ADC ``j`` (of ``adcs``, each shared by
    ``col_mux = cols / adcs`` columns) converts column ``j * col_mux + col_sel``: the analog
    sum ``s`` is the number of rows whose word line is enabled and whose cell in that column
    is 1, and the code is ``min(s >> adc_shift, 2**adc_bits - 1)``. A lane whose ``adc_en``
    bit is low does not convert and returns 0. Exactly ``latency`` cycles after the start,
    ``adc_valid`` is high for one cycle with the codes on ``adc_data`` (lane ``j`` at
    ``adc_data[j]``). Starts may be issued every cycle; results return in order. Writes and
    conversions must not overlap.

Black box
    The controller instantiates every macro as the Verilog module ``<top>_macro``
    (:func:`instantiate_macro`), with ports ``clk``, ``rst`` and the members above under their
    own names (``adc_data`` packs lane ``j`` at bits ``[j*adc_bits +: adc_bits]``). The
    generator emits this model once under that name beside the controller; a real macro with
    the same ports replaces it without touching the controller. Emitting one module instead
    of ``pe`` inlined copies also keeps the generated design, and its generation time,
    proportional to the controller rather than to the cell count.

Conversion counting lives in the golden model (:func:`secateur.models.cim.schedule`): the
controller enables exactly the lanes it counts.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from ..models.cim import ADC_BITS_MAX, ADC_SHIFT_MAX
from .shared import instantiate

__all__ = ["MacroSignature", "CIMMacro", "instantiate_macro", "Popcount"]


#: Bits counted per word by :class:`Popcount`, a power of two from 8: a simulator keeps a value of
#: up to 64 bits in one machine word, and a wider one as an array of them, each operation a
#: loop; the sum of two words is one bit wider, so words of 32 bits keep every sum in one.
POPCOUNT_WORD = 32


class Popcount:
    """Counts the ones of values in the module ``m``, summed over words of
    :data:`POPCOUNT_WORD` bits; :meth:`__call__` adds one count.

    Each word is counted as a whole ("SWAR"): its 2-, 4- and 8-bit fields are summed in
    place, masked so that a field never carries into the next, then the bytes are folded
    into the lowest one: fifteen word operations, where a tree of one-bit adders is as many
    narrow ones as there are bits. The behavioural macro counts ``adcs`` bit lines of
    ``rows`` cells in every macro, every cycle; at 32 macros of 16 ADCs over 128 word lines
    that count is the CIM engine's simulation time, and a simulator computes a machine word
    in one instruction. The macro is a model that a real macro replaces (synthesis treats it
    as a black box), so the form is chosen for simulation, not for LUTs.

    The field masks are made once, for every count of the module.
    """

    def __init__(self, m: Module, name: str = "popcount"):
        self._m = m

        def fields(width: int) -> Signal:
            # Held in a register, not written as a constant: Amaranth folds an AND with a
            # constant into one wire per bit, which the simulator then moves bit by bit.
            pattern = sum(((1 << width) - 1) << start
                          for start in range(0, POPCOUNT_WORD, 2 * width))
            mask = Signal(POPCOUNT_WORD, init=pattern, reset_less=True,
                          name=f"{name}_fields{width}")
            m.d.sync += mask.eq(mask)
            return mask

        by1, by2, by4 = fields(1), fields(2), fields(4)
        self._steps = [lambda x: (x & by1) + ((x >> 1) & by1),
                       lambda x: (x & by2) + ((x >> 2) & by2),
                       lambda x: (x + (x >> 4)) & by4]
        self._steps += [lambda x, shift=shift: x + (x >> shift)
                        for shift in (8 << k for k in range(POPCOUNT_WORD.bit_length()))
                        if shift < POPCOUNT_WORD]

    def __call__(self, bits, name: str) -> Signal:
        """The number of ones in ``bits`` (a Value), as a new signal named ``name``."""
        m = self._m
        # Slicing an expression repeats the expression per slice: slice a signal instead.
        operand = Signal(len(bits), name=f"{name}_bits")
        m.d.comb += operand.eq(bits)
        counts = []
        for index, start in enumerate(range(0, len(bits), POPCOUNT_WORD)):
            word = Signal(POPCOUNT_WORD, name=f"{name}_w{index}")
            m.d.comb += word.eq(operand[start:start + POPCOUNT_WORD])
            for step_index, step in enumerate(self._steps):
                folded = Signal(POPCOUNT_WORD, name=f"{name}_w{index}_s{step_index}")
                m.d.comb += folded.eq(step(word))
                word = folded
            # The lowest byte holds the word's count (at most POPCOUNT_WORD).
            count = Signal(range(POPCOUNT_WORD + 1), name=f"{name}_c{index}")
            m.d.comb += count.eq(word[:len(count)])
            counts.append(count)
        total = Signal(range(len(bits) + 1), name=name)
        m.d.comb += total.eq(sum(counts))
        return total


def _check(owner: str, name: str, value, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner} {name} must be an integer, not {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        legal = f"[{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
        raise ValueError(f"{owner} {name} must be in {legal}, not {value}")
    return value


class MacroSignature(wiring.Signature):
    """The macro port, from the macro's side (the controller uses ``.flip()``).

    Parameters
    ----------
    rows, cols, adcs, adc_bits : int
        Word lines, bit lines, ADCs (dividing ``cols``) and ADC code width.

    Members
    -------
    wl : ``In(rows)``
    col_sel : ``In(range(cols // adcs))``
    adc_en : ``In(adcs)``
    adc_start : ``In(1)``
    adc_valid : ``Out(1)``
    adc_data : ``Out(ArrayLayout(unsigned(adc_bits), adcs))``
    wr_en : ``In(1)``
    wr_col : ``In(range(cols))``
    wr_chunk : ``In(range(ceil(rows / 8)))``
    wr_data : ``In(8)``
    wr_mask : ``In(8)``
    """

    def __init__(self, *, rows: int, cols: int, adcs: int, adc_bits: int):
        super().__init__({
            "wl": In(rows),
            "col_sel": In(range(max(2, cols // adcs))),
            "adc_en": In(adcs),
            "adc_start": In(1),
            "adc_valid": Out(1),
            "adc_data": Out(data.ArrayLayout(unsigned(adc_bits), adcs)),
            "wr_en": In(1),
            "wr_col": In(range(max(2, cols))),
            "wr_chunk": In(range(max(2, -(-rows // 8)))),
            "wr_data": In(8),
            "wr_mask": In(8),
        })


def instantiate_macro(m: Module, *, name: str, module: str, rows: int, cols: int, adcs: int,
                      adc_bits: int):
    """Instantiate the Verilog module ``module`` (the macro black box) as submodule ``name``
    of ``m``, in the ``sync`` domain, and return the controller's side of its port (an
    interface with the members of :class:`MacroSignature`)."""
    return instantiate(m, name=name, module=module,
                       signature=MacroSignature(rows=rows, cols=cols, adcs=adcs,
                                                adc_bits=adc_bits))


class CIMMacro(wiring.Component):
    """Behavioral RRAM CIM macro; see the module documentation for the port protocol.

    Parameters
    ----------
    rows : int
        Word lines, in ``[1, 4096]``.
    cols : int
        Bit lines, a multiple of 8 in ``[8, 4096]``.
    adcs : int
        ADCs, dividing ``cols``.
    adc_bits : int
        ADC resolution ``B``, in ``[1, 8]``.
    adc_shift : int
        ADC LSB exponent ``a`` (LSB = ``2**a`` rows), in ``[0, 8]``.
    latency : int
        Cycles from ``adc_start`` to ``adc_valid``, in ``[1, 8]``.

    Raises
    ------
    TypeError
        If a parameter is not an integer.
    ValueError
        If a parameter is out of its range.
    """

    def __init__(self, *, rows: int, cols: int, adcs: int, adc_bits: int, adc_shift: int = 0,
                 latency: int = 1):
        owner = "CIMMacro"
        _check(owner, "rows", rows, 1, 4096)
        _check(owner, "cols", cols, 8, 4096)
        if cols % 8:
            raise ValueError(f"CIMMacro cols must be a multiple of 8, not {cols}")
        _check(owner, "adcs", adcs, 1, cols)
        if cols % adcs:
            raise ValueError(f"CIMMacro adcs must divide cols = {cols}, not {adcs}")
        _check(owner, "adc_bits", adc_bits, 1, ADC_BITS_MAX)
        _check(owner, "adc_shift", adc_shift, 0, ADC_SHIFT_MAX)
        _check(owner, "latency", latency, 1, 8)
        self._rows, self._cols, self._adcs = rows, cols, adcs
        self._adc_bits, self._adc_shift, self._latency = adc_bits, adc_shift, latency
        super().__init__(MacroSignature(rows=rows, cols=cols, adcs=adcs, adc_bits=adc_bits))

    @property
    def rows(self) -> int:
        return self._rows

    @property
    def cols(self) -> int:
        return self._cols

    @property
    def adcs(self) -> int:
        return self._adcs

    @property
    def col_mux(self) -> int:
        return self._cols // self._adcs

    @property
    def adc_bits(self) -> int:
        return self._adc_bits

    @property
    def adc_shift(self) -> int:
        return self._adc_shift

    @property
    def latency(self) -> int:
        return self._latency

    def elaborate(self, platform):
        m = Module()
        rows, cols, col_mux = self._rows, self._cols, self.col_mux
        chunks = -(-rows // 8)
        # Which rows a write touches: the mask, placed at its chunk of 8 rows.
        row_enables = Signal(rows)
        m.d.comb += row_enables.eq(Cat(Mux(self.wr_chunk == chunk, self.wr_mask, 0)[:8]
                                       for chunk in range(chunks)))

        full_scale = (1 << self._adc_bits) - 1
        count_ones = Popcount(m)
        codes = []
        for lane in range(self._adcs):
            # Bit line lane * col_mux + k is word k of this lane's memory.
            bitlines = memory.Memory(shape=unsigned(rows), depth=max(2, col_mux), init=[])
            m.submodules[f"bitlines{lane}"] = bitlines
            write = bitlines.write_port()
            # A write merges into the word it reads: one wide store instead of one per row.
            current = bitlines.read_port(domain="comb")
            read = bitlines.read_port(domain="comb")
            first = lane * col_mux
            # Bounds at the array's edges would be constant comparisons: leave them out.
            mine = Const(1)
            if first > 0:
                mine = mine & (self.wr_col >= first)
            if first + col_mux < cols:
                mine = mine & (self.wr_col < first + col_mux)
            m.d.comb += [
                write.addr.eq(self.wr_col - first),
                current.addr.eq(write.addr),
                write.data.eq((current.data & ~row_enables)
                              | (self.wr_data.replicate(chunks)[:rows] & row_enables)),
                write.en.eq(self.wr_en & mine),
                read.addr.eq(self.col_sel),
            ]
            bitline = read.data
            total = count_ones(self.wl & bitline, f"sum{lane}")
            shifted = total >> self._adc_shift
            code = Signal(unsigned(self._adc_bits), name=f"code{lane}")
            # The comparator exists only if this ADC can saturate at all.
            saturates = (rows >> self._adc_shift) > full_scale
            m.d.comb += code.eq(Mux(shifted > full_scale, full_scale, shifted) if saturates
                                else shifted)
            codes.append(code)

        # The result pipeline: the first register samples the conversion, the rest delay it.
        valid = self.adc_start
        payload = [code & self.adc_en[lane].replicate(self._adc_bits)
                   for lane, code in enumerate(codes)]
        for stage in range(self._latency):
            next_valid = Signal(name=f"valid{stage}")
            next_payload = [Signal(unsigned(self._adc_bits), name=f"data{stage}_{lane}")
                            for lane in range(self._adcs)]
            m.d.sync += next_valid.eq(valid)
            m.d.sync += [register.eq(value) for register, value in zip(next_payload, payload)]
            valid, payload = next_valid, next_payload
        m.d.comb += self.adc_valid.eq(valid)
        m.d.comb += [self.adc_data[lane].eq(value) for lane, value in enumerate(payload)]
        return m

