"""LFSR-generated pruning (LGPS): the mask convention, the seed choice and the integer reference.

A pruned layer keeps ``k`` of the ``N`` columns of each row, and the positions it keeps are not
stored: they are the first ``k`` *accepted* states of a maximal-length linear-feedback shift
register (LFSR) started from the row's seed, so the hardware regenerates them at run time.
This module is the one definition of that convention; the torch pruning method
(:mod:`secateur.models.lfsr_pruning`), the engine's layer loader
(:mod:`secateur.hdl.engines.lfsr`), the RTL LFSR (:mod:`secateur.hdl.lfsr`, whose polynomials
and look-ahead masks are computed here) and ``secateur mask`` all call it. It needs numpy
only, never torch, so that the generators and ``secateur mask`` start quickly.

The mask convention
-------------------
**Width.** A layer of ``N`` columns uses the LFSR of width ``w = max(2, bit_length(N))``, the
smallest ``w >= 2`` with ``2**w - 1 >= N`` (:func:`lfsr_width`). Widths 2 to 32 are defined,
so ``1 <= N <= 2**32 - 1``. Because ``w`` is minimal, ``N >= 2**(w - 1)``: at most half of
the states are rejected.

**Form.** Fibonacci (many-to-one), shifting towards the most significant bit. The state is
an integer ``s`` in ``[1, 2**w - 1]`` (bit ``i`` is register stage ``i``); one step is::

    feedback = parity(s & tap_mask(w))          # XOR of the tapped stages
    s'       = ((s << 1) | feedback) & (2**w - 1)

**Polynomials.** :data:`TAPS` lists, per width, the tapped stages ``t`` (1-based: tap ``t`` is
bit ``t - 1``, tap ``w`` the most significant bit), from Xilinx XAPP052 ("Efficient Shift
Registers, LFSR Counters, and Long Pseudo-Random Sequence Generators", table 3). With XOR
feedback the all-zero state is the lock-up state and every other state lies on one cycle of
length ``2**w - 1``; :func:`period_is_maximal` proves it algebraically for every width, and
the tests run it.

**State to column.** State ``s`` names column ``s - 1``. A state with ``s - 1 >= N`` (that is,
``s > N``) is *rejected*: it is stepped over and names no column.

**Seeds.** A row's seed is the state the register starts in, and it must be an accepted
state: legal seeds are ``1 <= seed <= N``. So the first kept column is ``seed - 1``, which is
why different seeds always give different masks (a seed in ``(N, 2**w - 1]`` would give the
same mask as the first accepted state after it).

**The mask.** Row ``r`` keeps the columns of the first ``k`` accepted states of the sequence
``seed_r, step(seed_r), step(step(seed_r)), ...``, in that order (the order the hardware
visits them). ``1 <= k <= N``. The cycle holds every state once, so the ``N`` accepted states
are the ``N`` columns each exactly once: with ``k = N`` the mask is a permutation of
``0 .. N-1``, and for one seed the mask of a smaller ``k`` is a prefix of the mask of a larger
one.

**Runs of rejected states.** A rejected state exceeds ``N >= 2**(w-1)``, so its top bit is
set. The top bit of the state is the bit shifted in ``w - 1`` steps earlier, that is, a bit of
the m-sequence, whose longest run of ones has length ``w``. Hence at most ``w`` rejected
states follow one another, and the next accepted state is at most ``w + 1`` steps ahead
(:func:`max_rejected_run` measures it; the tests check the bound). The bound is tight: runs
of exactly ``w`` occur at ``N = 2**(w-1)`` for widths 5, 8 to 14 and 16. The engine's
look-ahead of ``w + 1`` states per cycle therefore never stalls, and a shorter one would at
some layer sizes.

**Look-ahead.** The state ``j`` steps ahead is ``((s << j) | n_1 n_2 .. n_j) & (2**w - 1)``,
where the new bits ``n_i`` are linear in ``s``: ``n_i = parity(s & jump_masks(w, L)[i-1])``.
The hardware computes all ``L`` candidates in one cycle from these masks.

Engine weights
--------------
A weights ``.npz`` holds ``w`` (int8, ``(M, N)``, zero outside every row's mask; a kept
position may hold zero), ``seeds`` (integers, ``(M,)``), ``k`` (integer) and optionally the
requantizer keys of :mod:`secateur.models.requant`. The engine computes exactly
``y[b, m] = sum_n w[m, n] * x[b, n]`` (:func:`reference`), storing only the ``k`` kept values
of each row, in LFSR order (:func:`kept_values`).

Seeds, pruning and training
---------------------------
A row's best seed is the one whose ``k`` kept positions carry the largest total importance
(``|w|``, say), found exactly with a sliding window over the accepted cycle
(:func:`best_seeds`). Pruning a torch layer to these masks, training with them and exporting
the int8 weights are in :mod:`secateur.models.lfsr_pruning`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Mapping

import numpy as np

from .common import check_int, check_int8_inputs, check_int8_weights, save_weights_npz
# requant_for_channel_scales is re-exported: this engine's per-row export introduced it.
from .requant import RequantParams, check_requant, requant_for_channel_scales, result_path

__all__ = [
    "MIN_WIDTH", "MAX_WIDTH", "TAPS",
    "lfsr_width", "tap_mask", "width_mask", "lfsr_step", "lfsr_states", "jump_masks",
    "period_is_maximal", "max_rejected_run", "accepted_cycle",
    "check_n", "check_k", "check_seeds", "mask_indices",
    "check_weights", "kept_values", "reference",
    "best_seeds", "requant_for_channel_scales", "save_npz",
]

#: Narrowest and widest LFSR defined.
MIN_WIDTH, MAX_WIDTH = 2, 32

#: Maximal-length taps per width, XAPP052 table 3 (1-based stages; the width itself is the
#: most significant stage). Every entry is checked by :func:`period_is_maximal`.
TAPS: dict[int, tuple[int, ...]] = {
    2: (2, 1), 3: (3, 2), 4: (4, 3), 5: (5, 3), 6: (6, 5), 7: (7, 6), 8: (8, 6, 5, 4),
    9: (9, 5), 10: (10, 7), 11: (11, 9), 12: (12, 6, 4, 1), 13: (13, 4, 3, 1),
    14: (14, 5, 3, 1), 15: (15, 14), 16: (16, 15, 13, 4), 17: (17, 14), 18: (18, 11),
    19: (19, 6, 2, 1), 20: (20, 17), 21: (21, 19), 22: (22, 21), 23: (23, 18),
    24: (24, 23, 22, 17), 25: (25, 22), 26: (26, 6, 2, 1), 27: (27, 5, 2, 1), 28: (28, 25),
    29: (29, 27), 30: (30, 6, 4, 1), 31: (31, 28), 32: (32, 22, 2, 1),
}

_MAX_N = (1 << MAX_WIDTH) - 1


# --------------------------------------------------------------------------- validation

def _check_width(width) -> int:
    return check_int(width, "LFSR width", MIN_WIDTH, MAX_WIDTH)


def check_n(n) -> int:
    """Validate a column count: an integer in ``[1, 2**32 - 1]``.

    Raises
    ------
    TypeError
        If ``n`` is not an integer.
    ValueError
        If it is out of range.
    """
    return check_int(n, "n (columns)", 1, _MAX_N)


def check_k(k, n: int) -> int:
    """Validate the kept columns per row: an integer in ``[1, n]``.

    Raises
    ------
    TypeError
        If ``k`` is not an integer (a 0-d integer array is accepted).
    ValueError
        If it is out of range.
    """
    if isinstance(k, np.ndarray) and k.ndim == 0 and k.dtype.kind in "iu":
        k = k.item()
    elif isinstance(k, np.integer):
        k = int(k)
    return check_int(k, f"k (kept columns per row, N = {n})", 1, n)


def check_seeds(seeds, n: int) -> np.ndarray:
    """Validate row seeds for ``n`` columns: integers in ``[1, n]``, a scalar or a vector.

    Returns
    -------
    numpy.ndarray
        int64 seeds, 1-D (a scalar becomes one row).

    Raises
    ------
    TypeError
        If the seeds are not integers.
    ValueError
        If they are not a scalar or a vector, or a seed is 0 or above ``n`` (naming the
        first offending row).
    """
    n = check_n(n)
    array = np.asarray(seeds)
    if array.dtype.kind not in "iu" or array.dtype == np.bool_:
        raise TypeError(f"seeds must be integers, not {array.dtype}")
    if array.ndim > 1:
        raise ValueError(f"seeds must be a scalar or a vector of one seed per row, "
                         f"not shape {array.shape}")
    array = array.reshape(-1)
    if array.size == 0:
        raise ValueError("seeds must not be empty")
    bad = np.flatnonzero((array < 1) | (array > n))
    if bad.size:
        row = int(bad[0])
        raise ValueError(f"seed of row {row} is {int(array[row])}; a seed must be an accepted "
                         f"LFSR state, an integer in [1, {n}] for N = {n} (0 is the lock-up "
                         f"state)")
    return array.astype(np.int64)


# --------------------------------------------------------------------------- the LFSR

def lfsr_width(n) -> int:
    """The LFSR width for ``n`` columns: the smallest ``w >= 2`` with ``2**w - 1 >= n``.

    Raises
    ------
    TypeError, ValueError
        If ``n`` is not an integer in ``[1, 2**32 - 1]``.
    """
    return max(MIN_WIDTH, check_n(n).bit_length())


def tap_mask(width: int) -> int:
    """The feedback taps of ``width`` as a bit mask (tap ``t`` is bit ``t - 1``)."""
    return sum(1 << (tap - 1) for tap in TAPS[_check_width(width)])


def width_mask(width: int) -> int:
    """``2**width - 1``: the state bits of an LFSR of that width."""
    return (1 << _check_width(width)) - 1


def lfsr_step(state, width: int):
    """One step of the Fibonacci LFSR of ``width``; works on ints and int64 arrays.

    Raises
    ------
    ValueError
        If ``width`` is out of range (states are not checked, for speed).
    """
    taps, mask = tap_mask(width), width_mask(width)
    if isinstance(state, np.ndarray):
        feedback = np.bitwise_count(state & taps).astype(np.int64) & 1
    else:
        feedback = (int(state) & taps).bit_count() & 1
    return ((state << 1) | feedback) & mask


def lfsr_states(seed: int, width: int, count: int) -> list[int]:
    """``count`` consecutive states from ``seed`` (included), nothing rejected.

    Raises
    ------
    TypeError, ValueError
        If ``seed`` is not in ``[1, 2**width - 1]`` or ``count < 0``.
    """
    mask = width_mask(width)
    state = check_int(seed, f"seed of a {width}-bit LFSR", 1, mask)
    states = []
    for _ in range(check_int(count, "count", 0)):
        states.append(state)
        state = lfsr_step(state, width)
    return states


def jump_masks(width: int, steps: int) -> list[int]:
    """The look-ahead masks: the ``i``-th new bit shifted in after state ``s`` is
    ``parity(s & jump_masks(width, steps)[i - 1])``, for ``i = 1 .. steps``.

    Obtained by running the register on symbols: stage ``j`` starts as the mask ``1 << j``
    (the state bit it holds) and every step XORs the tapped masks into the new stage.

    Raises
    ------
    TypeError, ValueError
        If ``width`` or ``steps`` (``>= 0``) is out of range.
    """
    width = _check_width(width)
    stages = [1 << bit for bit in range(width)]
    masks = []
    for _ in range(check_int(steps, "steps", 0)):
        new = 0
        for tap in TAPS[width]:
            new ^= stages[tap - 1]
        stages = [new] + stages[:-1]
        masks.append(new)
    return masks


def _prime_factors(value: int) -> list[int]:
    factors, divisor = [], 2
    while divisor * divisor <= value:
        if value % divisor == 0:
            factors.append(divisor)
            while value % divisor == 0:
                value //= divisor
        divisor += 1 if divisor == 2 else 2
    if value > 1:
        factors.append(value)
    return factors


def period_is_maximal(width: int) -> bool:
    """Whether the LFSR of ``width`` cycles through all ``2**width - 1`` non-zero states.

    Algebraic proof, fast at every width: with ``A`` the step as a linear map over GF(2),
    the period of every non-zero state is ``2**width - 1`` exactly when ``A**(2**width - 1)``
    is the identity and ``A**((2**width - 1) / q)`` is not, for every prime ``q`` dividing
    ``2**width - 1``.
    """
    width = _check_width(width)
    # A linear map as the images of the basis vectors.
    step = [lfsr_step(1 << bit, width) for bit in range(width)]
    identity = [1 << bit for bit in range(width)]

    def apply(columns, vector):
        result = 0
        for bit in range(width):
            if vector >> bit & 1:
                result ^= columns[bit]
        return result

    def power(exponent):
        result, base = identity, step
        while exponent:
            if exponent & 1:
                result = [apply(base, column) for column in result]
            base = [apply(base, column) for column in base]
            exponent >>= 1
        return result

    order = (1 << width) - 1
    if power(order) != identity:
        return False
    return all(power(order // prime) != identity for prime in _prime_factors(order))


@functools.lru_cache(maxsize=64)
def _cycle(width: int) -> np.ndarray:
    """All ``2**width - 1`` states in cycle order from state 1 (read-only)."""
    if width > 24:
        raise ValueError(f"the whole cycle of a {width}-bit LFSR is too long to tabulate "
                         f"(at most 24 bits)")
    length = (1 << width) - 1
    states = np.empty(length, dtype=np.int64)
    taps, mask, state = tap_mask(width), width_mask(width), 1
    for index in range(length):
        states[index] = state
        state = ((state << 1) | ((state & taps).bit_count() & 1)) & mask
    states.setflags(write=False)
    return states


def accepted_cycle(n: int) -> np.ndarray:
    """The ``n`` accepted states of the ``n``-column LFSR in cycle order, from state 1.

    Raises
    ------
    TypeError, ValueError
        If ``n`` is not a legal column count, or needs a width above 24 bits.
    """
    cycle = _cycle(lfsr_width(n))
    return cycle[cycle <= n]


def max_rejected_run(n: int) -> int:
    """The longest run of consecutive rejected states on the ``n``-column LFSR's cycle.

    At most ``lfsr_width(n)`` (see the module documentation); 0 when ``n = 2**w - 1``.
    """
    cycle = _cycle(lfsr_width(n))
    rejected = np.concatenate([cycle, cycle]) > n  # doubled: runs may wrap around
    if not rejected.any():
        return 0
    edges = np.diff(np.concatenate([[0], rejected.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return int(min((ends - starts).max(), len(cycle)))


# --------------------------------------------------------------------------- masks

def mask_indices(n, k, seeds) -> np.ndarray:
    """Each row's kept columns, in the order the hardware visits them.

    Parameters
    ----------
    n : int
        Columns ``N``, in ``[1, 2**32 - 1]``.
    k : int
        Kept columns per row, in ``[1, n]``.
    seeds : int or array-like of int
        One seed per row, each in ``[1, n]``.

    Returns
    -------
    numpy.ndarray
        int64, shape ``(rows, k)``: row ``r`` lists the columns of the first ``k`` accepted
        states from ``seeds[r]``.

    Raises
    ------
    TypeError, ValueError
        If ``n``, ``k`` or a seed is illegal (naming the first offending row).
    """
    n = check_n(n)
    k = check_k(k, n)
    seeds = check_seeds(seeds, n)
    width = lfsr_width(n)
    rows = seeds.size
    out = np.empty((rows, k), dtype=np.int64)
    out[:, 0] = seeds - 1
    count = np.ones(rows, dtype=np.int64)
    state = seeds.copy()
    # All rows step together; a row stops filling once it has k columns. At most
    # 2**width - 1 steps, which visit every state.
    while (count < k).any():
        state = lfsr_step(state, width)
        take = (state <= n) & (count < k)
        out[take, count[take]] = state[take] - 1
        count += take
    return out


# --------------------------------------------------------------------------- integer reference

def check_weights(w_int8, seeds, k) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """Check an engine layer: the one statement of the LGPS weight structure.

    Parameters
    ----------
    w_int8 : array-like
        int8, shape ``(M, N)`` with ``M, N >= 1``.
    seeds : array-like of int
        Shape ``(M,)``, each in ``[1, N]``.
    k : int
        In ``[1, N]``.

    Returns
    -------
    tuple
        ``(w, seeds, k, indices)``: the arrays, ``k`` as an int, and
        :func:`mask_indices` ``(M, k)``.

    Raises
    ------
    TypeError
        If ``w`` is not int8, or ``seeds`` / ``k`` are not integers.
    ValueError
        If a shape is wrong, ``k`` or a seed is out of range, or ``w`` is non-zero outside a
        row's mask (naming the first offending row and column).
    """
    w = check_int8_weights(w_int8, "int8")
    rows, cols = w.shape
    seeds_array = np.asarray(seeds)
    if seeds_array.shape != (rows,):
        raise ValueError(f"seeds must have shape ({rows},), one per row of w, "
                         f"not {seeds_array.shape}")
    seeds_array = check_seeds(seeds_array, cols)
    k = check_k(k, cols)
    indices = mask_indices(cols, k, seeds_array)
    outside = w != 0
    outside[np.arange(rows)[:, None], indices] = False
    bad = np.argwhere(outside)
    if bad.size:
        row, col = (int(value) for value in bad[0])
        raise ValueError(f"w[{row}, {col}] = {int(w[row, col])} lies outside row {row}'s LFSR "
                         f"mask (seed {int(seeds_array[row])}, k = {k}); w must be zero there "
                         f"({len(bad)} such values)")
    return w, seeds_array, k, indices


def kept_values(w_int8, seeds, k) -> np.ndarray:
    """The values the engine stores: row ``m``'s ``k`` kept weights in LFSR order, int8 ``(M, k)``.

    Raises
    ------
    TypeError, ValueError
        As :func:`check_weights`.
    """
    w, _, _, indices = check_weights(w_int8, seeds, k)
    return np.take_along_axis(w, indices, axis=1)


def reference(w_int8, seeds, k, x_int8, requant: RequantParams | None = None,
              bias=None) -> np.ndarray:
    """Bit-exact output of the LFSR engine (either index source).

    Computes, as the engine does, from the stored values and the regenerated indices,
    ``acc[b, m] = sum_j kept[m, j] * x[b, idx[m, j]]`` exactly in int64
    (``|acc| <= 16384 * k``), which equals ``w @ x`` because ``w`` is zero outside the mask;
    then requantizes when ``requant`` is given (:func:`secateur.models.requant.requantize`).

    Parameters
    ----------
    w_int8, seeds, k
        The layer, as :func:`check_weights`.
    x_int8 : array-like
        int8 activations, shape ``(B, N)``.
    requant : RequantParams, optional
        The layer's requantizer; ``None`` returns the raw accumulators.
    bias : array-like of int, optional
        One int32 bias per output row, added before the requantizer (:func:`~secateur.models.
        requant.result_path`).

    Returns
    -------
    numpy.ndarray
        int64, shape ``(B, M)``.

    Raises
    ------
    TypeError
        If an array has the wrong dtype or ``requant`` is not a RequantParams.
    ValueError
        If the layer is malformed, ``x`` has the wrong shape, or a per-channel ``mult``
        does not have ``M`` entries.
    """
    w, _, _, indices = check_weights(w_int8, seeds, k)
    x = check_int8_inputs(x_int8, w.shape[1])
    check_requant(requant)
    kept = np.take_along_axis(w, indices, axis=1).astype(np.int64)   # (M, k)
    gathered = x.astype(np.int64)[:, indices]                          # (B, M, k)
    acc = (gathered * kept[None]).sum(axis=2)
    return result_path(acc, requant, bias)


# --------------------------------------------------------------------------- seed choice

def best_seeds(importance, k: int) -> np.ndarray:
    """Per row, the seed whose ``k`` kept columns carry the largest total importance.

    The ``N`` masks a row can have are the windows of ``k`` consecutive entries of the
    accepted cycle (:func:`accepted_cycle`), so all of them are scored at once with a
    cumulative sum. Ties go to the window that starts earliest on the cycle.

    Parameters
    ----------
    importance : array-like
        Non-negative real scores, shape ``(M, N)`` (a torch tensor: detached and on the CPU,
        as ``tensor.detach().cpu().numpy()``).
    k : int
        Kept columns per row, in ``[1, N]``.

    Returns
    -------
    numpy.ndarray
        int64 seeds, shape ``(M,)``.

    Raises
    ------
    TypeError, ValueError
        If ``importance`` is not a non-empty 2-D real matrix or ``k`` is out of range.
    """
    scores = np.asarray(importance, dtype=np.float64)
    if scores.ndim != 2 or scores.size == 0:
        raise ValueError(f"importance must be a non-empty 2-D (M, N) matrix, not shape "
                         f"{scores.shape}")
    n = scores.shape[1]
    k = check_k(k, n)
    cycle = accepted_cycle(n)
    ordered = scores[:, cycle - 1]                                    # (M, N) in cycle order
    doubled = np.concatenate([np.zeros((scores.shape[0], 1)), ordered, ordered], axis=1)
    cumulative = np.cumsum(doubled, axis=1)
    windows = cumulative[:, k:k + n] - cumulative[:, :n]              # window starting at p
    return cycle[np.argmax(windows, axis=1)].astype(np.int64)


# --------------------------------------------------------------------------- weights files

def save_npz(path, weights: Mapping[str, np.ndarray]) -> Path:
    """Write an engine weights dict (as from :func:`secateur.models.lfsr_pruning.
    quantize_layer`) to an ``.npz`` file.

    Raises
    ------
    TypeError, ValueError
        If a key is unknown or missing, or the layer or requantizer is malformed.
    """
    return save_weights_npz(path, weights, ("w", "seeds", "k"), _checked_layer)


def _checked_layer(weights) -> dict:
    w, seeds, k, _ = check_weights(weights["w"], weights["seeds"], weights["k"])
    return {"w": w, "seeds": seeds, "k": np.asarray(k, dtype=np.int64)}
