"""The LFSR index generator: LGPS column indices regenerated in hardware, one per cycle.

The convention (widths, polynomials, state-to-column mapping, rejection, seeds) is defined in
:mod:`secateur.models.lfsr`, and this module takes its polynomials and look-ahead masks from
there, so the RTL and the golden model cannot drift apart.

The width is chosen at run time from the layer's column count ``n`` (``w = max(2,
bit_length(n))``), up to the generator's ``max_width``: state registers are ``max_width``
bits and the upper ``max_width - w`` bits stay zero.

Rejection at no cost
    Each cycle the ``lookahead`` states after the current one are examined and the first that
    is accepted (``<= n``) is taken. The Fibonacci form makes this cheap: the state ``j``
    steps ahead is the current state shifted left by ``j`` with ``j`` new bits below, and new
    bit ``i`` is the parity of the current state under a per-width mask
    (:func:`secateur.models.lfsr.jump_masks`). At most ``w`` rejected states follow one
    another (see :mod:`secateur.models.lfsr`), so with ``lookahead >= w + 1`` every cycle
    yields an accepted state. With a shorter look-ahead the sequencer may land on a rejected
    state; it then *hunts* (``valid`` low), stepping ``lookahead`` states per cycle until it
    is on an accepted one again.

Two organizations
    :class:`LFSRStep` computes the next accepted state from the presented one in one
    combinational cloud: parity trees, then comparators, then a priority multiplexer. The
    :class:`LFSR` primitive uses it, presenting a seed in the cycle it is given.
    :class:`LFSRSequencer`, one per PE of the engine, keeps the new bits in its register
    beside the state (a *window* of the LFSR's bit stream), so each cycle only compares,
    picks and shifts; the parity trees compute the bits after the window beside that path.
    Both visit the same states.

Components
    :class:`LFSRTable` (per layer, shared: ``n`` -> width mask and look-ahead masks),
    :class:`LFSRStep` (combinational: state -> next accepted state), :class:`LFSRSequencer`
    (one PE's index stream, registered), and :class:`LFSR`, the stand-alone primitive (table,
    step and a state register).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..models.lfsr import MAX_WIDTH, MIN_WIDTH, jump_masks, width_mask

__all__ = ["LFSRTable", "LFSRStep", "LFSRSequencer", "LFSR"]


def _check_geometry(owner: str, max_width, lookahead) -> None:
    for name, value in (("max_width", max_width), ("lookahead", lookahead)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{owner} {name} must be an integer, not {value!r}")
    if not MIN_WIDTH <= max_width <= MAX_WIDTH:
        raise ValueError(f"{owner} max_width must be in [{MIN_WIDTH}, {MAX_WIDTH}], "
                         f"not {max_width}")
    if not 1 <= lookahead <= MAX_WIDTH + 1:
        raise ValueError(f"{owner} lookahead must be in [1, {MAX_WIDTH + 1}], not {lookahead}")


class _Geometry:
    """Validated ``max_width``/``lookahead`` and their read-only properties."""

    def _set_geometry(self, max_width: int, lookahead: int) -> None:
        _check_geometry(type(self).__name__, max_width, lookahead)
        self._max_width = max_width
        self._lookahead = lookahead

    @property
    def max_width(self) -> int:
        return self._max_width

    @property
    def lookahead(self) -> int:
        return self._lookahead

    @property
    def stall_free(self) -> bool:
        """Whether a sequencer of this geometry yields an accepted state every cycle at every
        width up to ``max_width``."""
        return self._lookahead >= self._max_width + 1


def _jumps_layout(max_width: int, lookahead: int) -> data.ArrayLayout:
    return data.ArrayLayout(unsigned(max_width), lookahead)


def _accepted(n, state):
    """Whether ``state`` is an accepted state (``state <= n``), written ``~(n < state)``:
    Yosys maps that to a third of the LUTs of ``state <= n`` (11 against 35 at 11 bits)."""
    return ~(n < state)


def _new_bits(state, jumps) -> list:
    """The bits the LFSR shifts in after ``state``, oldest first: bit ``i`` is the parity of
    ``state`` under look-ahead mask ``i`` (:func:`secateur.models.lfsr.jump_masks`)."""
    return [(state & jump).xor() for jump in jumps]


class LFSRTable(_Geometry, wiring.Component):
    """The per-layer constants of the run-time width LFSR, from the column count ``n``.

    Combinational. One table serves any number of sequencers.

    Parameters
    ----------
    max_width : int
        Widest LFSR, in ``[2, 32]``; ``n`` is ``max_width`` bits.
    lookahead : int
        Look-ahead masks to produce, in ``[1, 33]``.

    Raises
    ------
    TypeError
        If a parameter is not an integer.
    ValueError
        If a parameter is out of its range.

    Members
    -------
    n : ``In(max_width)``
        Columns of the layer, ``>= 1`` (0 reads as width 2).
    width : ``Out(range(max_width + 1))``
        ``max(2, bit_length(n))``.
    mask : ``Out(max_width)``
        ``2**width - 1``.
    jumps : ``Out(ArrayLayout(unsigned(max_width), lookahead))``
        ``jump_masks(width, lookahead)``.
    """

    def __init__(self, *, max_width: int, lookahead: int):
        self._set_geometry(max_width, lookahead)
        super().__init__({
            "n": In(max_width),
            "width": Out(range(max_width + 1)),
            "mask": Out(max_width),
            "jumps": Out(_jumps_layout(max_width, lookahead)),
        })

    def elaborate(self, platform):
        m = Module()

        def constants(width):
            return [self.width.eq(width), self.mask.eq(width_mask(width)),
                    *[jump.eq(value) for jump, value
                      in zip(self.jumps, jump_masks(width, self._lookahead))]]

        # The width is the position of n's leading one; the narrowest table covers n <= 3.
        with m.If(self.n[MIN_WIDTH:] == 0):
            m.d.comb += constants(MIN_WIDTH)
        for width in range(MIN_WIDTH + 1, self._max_width + 1):
            with m.Elif(self.n[width - 1:] == 1):
                m.d.comb += constants(width)
        return m


class LFSRStep(_Geometry, wiring.Component):
    """Combinational look-ahead: the first accepted state among the ``lookahead`` states that
    follow ``state``.

    Parameters
    ----------
    max_width : int
        Widest LFSR, in ``[2, 32]``.
    lookahead : int
        States examined, in ``[1, 33]``.

    Raises
    ------
    TypeError
        If a parameter is not an integer.
    ValueError
        If a parameter is out of its range.

    Members
    -------
    state : ``In(max_width)``
        A non-zero state of the LFSR of ``mask``'s width.
    n, mask, jumps : ``In``
        The layer's column count and its :class:`LFSRTable` outputs.
    next : ``Out(max_width)``
        The first state ``<= n`` among the next ``lookahead`` ones, else the last of them.
    found : ``Out(1)``
        ``next <= n``.
    """

    def __init__(self, *, max_width: int, lookahead: int):
        self._set_geometry(max_width, lookahead)
        super().__init__({
            "state": In(max_width),
            "n": In(max_width),
            "mask": In(max_width),
            "jumps": In(_jumps_layout(max_width, lookahead)),
            "next": Out(max_width),
            "found": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        new_bits = _new_bits(self.state, self.jumps)
        candidates = []
        for steps in range(1, self._lookahead + 1):
            candidate = Signal(self._max_width, name=f"ahead{steps}")
            # Cat is LSB first: the newest bit at bit 0, the oldest new bit just below the
            # shifted state.
            m.d.comb += candidate.eq(Cat(*reversed(new_bits[:steps]), self.state) & self.mask)
            candidates.append(candidate)
        m.d.comb += [self.next.eq(candidates[-1]), self.found.eq(0)]
        # Later assignments win, so the nearest accepted candidate is the one taken.
        for candidate in reversed(candidates):
            with m.If(_accepted(self.n, candidate)):
                m.d.comb += [self.next.eq(candidate), self.found.eq(1)]
        return m


class LFSRSequencer(_Geometry, wiring.Component):
    """One index stream, pipelined: presents an accepted LFSR state from a register and moves
    to the next when told, from a window of the stream kept one cycle ahead.

    The register holds the *window*: the presented state and the ``lookahead`` bits the LFSR
    shifts in after it (``Cat(e[L], ..., e[1], state)``, so state ``j`` steps ahead is the
    ``max_width``-bit slice ending at ``e[j]``). Each cycle, from that register alone:

    * ``lookahead`` comparators say which of the states ahead are accepted, and a priority
      one-hot picks the first (``d`` steps ahead; ``lookahead`` if none is);
    * ``lookahead`` parity trees (the look-ahead masks, as :class:`LFSRStep`) compute the
      bits after the window's last state, the ones a move of up to ``lookahead`` steps needs;
    * the next window is the stream ``d`` bits further: a one-hot multiplexer.

    So the per-cycle path is a comparator, the priority and a multiplexer; the parity trees
    run beside it instead of in front of it, and the states visited are those of
    :class:`LFSRStep` (the same masks, the same rule). On a restart the parity trees take the
    seed instead, so loading a seed costs nothing either.

    Parameters
    ----------
    max_width : int
        Widest LFSR, in ``[2, 32]``.
    lookahead : int
        States examined per cycle, in ``[1, 33]``; ``>= max_width + 1`` never hunts.

    Raises
    ------
    TypeError
        If a parameter is not an integer.
    ValueError
        If a parameter is out of its range.

    Members
    -------
    seed : ``In(max_width)``
        The first state of a sequence: an accepted state, ``1 <= seed <= n``. Read only when
        ``start`` is; a register, as it feeds the parity trees.
    start : ``In(1)``
        The next state is ``seed`` instead of the next accepted one: on the first edge with
        ``advance`` or, while ``valid`` is low, on the next edge. It selects the next
        window, so drive it from registers (not from ``advance``).
    advance : ``In(1)``
        The presented state is consumed: present the next one from the next cycle.
    n, mask, jumps : ``In``
        The layer's column count and its :class:`LFSRTable` outputs; constant while in use.
    state : ``Out(max_width)``
        The presented state (registered); its column is ``state - 1``.
    valid : ``Out(1)``
        ``state`` is accepted (registered). Low only while hunting (a look-ahead shorter
        than ``width + 1``), when the sequencer steps on its own; a ``start`` ends it.
    """

    def __init__(self, *, max_width: int, lookahead: int):
        self._set_geometry(max_width, lookahead)
        super().__init__({
            "seed": In(max_width),
            "start": In(1),
            "advance": In(1),
            "n": In(max_width),
            "mask": In(max_width),
            "jumps": In(_jumps_layout(max_width, lookahead)),
            "state": Out(max_width),
            "valid": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        width, ahead = self._max_width, self._lookahead
        # Reset to state 1, so the register never holds the lock-up state; its look-ahead
        # bits are not those of state 1, which is why a sequence begins with a start.
        window = Signal(width + ahead, init=1 << ahead)
        valid = Signal()
        m.d.comb += [self.state.eq(window[ahead:] & self.mask), self.valid.eq(valid)]

        # Which of the states 1 .. lookahead steps ahead are accepted, and `skip`, one less
        # than the steps to the first of them (the last one if none is: a hunting step).
        accepted = Signal(ahead)
        m.d.comb += accepted.eq(Cat(_accepted(self.n, window[ahead - steps:ahead - steps + width]
                                              & self.mask)
                                    for steps in range(1, ahead + 1)))
        skip = Signal(range(ahead))
        m.d.comb += skip.eq(ahead - 1)
        for steps in reversed(range(1, ahead)):
            with m.If(accepted[steps - 1]):
                m.d.comb += skip.eq(steps - 1)

        # The bits after the window's last state, or after the seed on a restart. The upper
        # state bits beyond the layer's width are outside every mask, so the window needs no
        # masking here.
        base = Mux(self.start, self.seed, window[:width])
        new_bits = Cat(*reversed(_new_bits(base, self.jumps)))

        # The next window is the stream `skip + 1` bits further on. A barrel shifter, half the
        # LUTs of a one-hot multiplexer; its stages go by `skip`'s most significant bit first,
        # as the priority settles the high bits first (few accepted flags decide them).
        stream = Cat(new_bits, window)
        for bit in reversed(range(len(skip))):
            stream = Mux(skip[bit], Cat(Const(0, 1 << bit), stream)[:len(stream)], stream)
        moved = stream[ahead - 1:ahead - 1 + width + ahead]

        with m.If(self.advance | ~valid):
            with m.If(self.start):
                # Seeds are accepted states by the convention.
                m.d.sync += [window.eq(Cat(new_bits, self.seed)), valid.eq(1)]
            with m.Else():
                m.d.sync += [window.eq(moved), valid.eq(accepted.any())]
        return m


class LFSR(_Geometry, wiring.Component):
    """The stand-alone LGPS index generator: an :class:`LFSRTable` and an :class:`LFSRStep`
    behind a state register.

    Unlike :class:`LFSRSequencer` it presents the seed in the cycle ``start`` is asserted,
    and computes each next state with :class:`LFSRStep` from the presented one (the seed
    included) in one cycle: the simplest timing for a user (the CIM engine's row mask),
    with the look-ahead in front of the register rather than beside it.

    Parameters
    ----------
    max_width : int
        Widest LFSR, in ``[2, 32]``; ``n`` up to ``2**max_width - 1``.
    lookahead : int
        States examined per cycle, in ``[1, 33]``; default ``max_width + 1``, which yields
        an accepted state every cycle.

    Raises
    ------
    TypeError
        If a parameter is not an integer.
    ValueError
        If a parameter is out of its range.

    Members
    -------
    n : ``In(max_width)``
        Columns; hold constant while in use.
    seed : ``In(max_width)``
        The first state of a sequence: an accepted state, ``1 <= seed <= n``.
    start : ``In(1)``
        Present ``seed`` instead of the register (the first index of a row). Assert it for
        the first state after reset.
    advance : ``In(1)``
        The presented state is consumed; present the next accepted one from the next cycle.
    state : ``Out(max_width)``
        The presented state.
    index : ``Out(max_width)``
        Its column, ``state - 1``.
    valid : ``Out(1)``
        ``state`` is accepted. Low only while hunting, when the generator steps on its own.
    """

    def __init__(self, *, max_width: int, lookahead: int | None = None):
        lookahead = max_width + 1 if lookahead is None else lookahead
        self._set_geometry(max_width, lookahead)
        super().__init__({
            "n": In(max_width),
            "seed": In(max_width),
            "start": In(1),
            "advance": In(1),
            "state": Out(max_width),
            "index": Out(max_width),
            "valid": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        geometry = dict(max_width=self._max_width, lookahead=self._lookahead)
        m.submodules.table = table = LFSRTable(**geometry)
        m.submodules.step = step = LFSRStep(**geometry)
        # Reset to a non-zero state, so the register never holds the lock-up state.
        register = Signal(self._max_width, init=1)
        found = Signal()
        m.d.comb += [
            table.n.eq(self.n),
            self.state.eq(Mux(self.start, self.seed, register)),
            self.index.eq(self.state - 1),
            # Seeds are accepted states by the convention, so a start is always valid.
            self.valid.eq(self.start | found),
            step.state.eq(self.state),
            step.n.eq(self.n),
            step.mask.eq(table.mask),
            step.jumps.eq(table.jumps),
        ]
        with m.If(self.advance | ~self.valid):
            m.d.sync += [register.eq(step.next), found.eq(step.found)]
        return m
