"""LFSR-generated pruning (LGPS): the mask convention, pruning, training and the integer reference.

A pruned layer keeps ``k`` of the ``N`` columns of each row, and the positions it keeps are not
stored: they are the first ``k`` *accepted* states of a maximal-length linear-feedback shift
register (LFSR) started from the row's seed, so the hardware regenerates them at run time.
This module is the one definition of that convention; the torch pruning method, the engine's
layer loader (:mod:`secateur.hdl.engines.lfsr`), the RTL LFSR (:mod:`secateur.hdl.lfsr`,
whose polynomials and look-ahead masks are computed here) and ``secateur mask`` all call it.

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

Pruning and training
--------------------
:class:`LFSRPruning` is a :class:`torch.nn.utils.prune.BasePruningMethod`: it prunes a Linear
weight ``(M, N)`` or a Conv weight ``(O, C, kh, kw)`` as the im2col matrix ``(O, C*kh*kw)``
(row = output channel, columns in :func:`torch.nn.functional.unfold` order). Unless seeds
are given, each row's seed is the one whose ``k`` kept positions carry the largest total
importance (``|w|`` by default), found exactly with a sliding window over the accepted cycle
(:func:`best_seeds`). :func:`train_lfsr_pruned` prunes gradually to the target ``k`` with
fine-tuning, and :func:`quantize_layer` exports the int8 weights and requantizer.
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from .common import (
    check_int, check_int8_inputs, check_int8_weights, export_requant, minibatches,
    save_weights_npz,
)
# requant_for_channel_scales is re-exported: this engine's per-row export introduced it.
from .requant import RequantParams, check_requant, requant_for_channel_scales, result_path

__all__ = [
    "MIN_WIDTH", "MAX_WIDTH", "TAPS",
    "lfsr_width", "tap_mask", "width_mask", "lfsr_step", "lfsr_states", "jump_masks",
    "period_is_maximal", "max_rejected_run", "accepted_cycle",
    "check_n", "check_k", "check_seeds", "mask_indices", "lfsr_mask",
    "check_weights", "kept_values", "reference",
    "best_seeds", "LFSRPruning", "lfsr_prune", "lfsr_pruning_of", "prunable_matrix_shape",
    "k_schedule", "TrainReport", "train_lfsr_pruned",
    "requant_for_channel_scales", "quantize_layer", "save_npz",
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


def lfsr_mask(n, k, seeds, *, device=None) -> torch.Tensor:
    """The boolean keep-mask ``(rows, n)`` of :func:`mask_indices` as a torch tensor.

    Raises
    ------
    TypeError, ValueError
        As :func:`mask_indices`.
    """
    indices = mask_indices(n, k, seeds)
    mask = torch.zeros((indices.shape[0], n), dtype=torch.bool, device=device)
    mask.scatter_(1, torch.from_numpy(indices).to(device), True)
    return mask


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


# --------------------------------------------------------------------------- pruning

def prunable_matrix_shape(shape) -> tuple[int, int]:
    """The ``(rows, columns)`` a weight of ``shape`` is pruned as: Linear ``(M, N)`` as is,
    Conv ``(O, C, *kernel)`` as its im2col matrix ``(O, C * prod(kernel))``.

    Raises
    ------
    ValueError
        If the weight has fewer than two dimensions or is empty.
    """
    shape = tuple(shape)
    if len(shape) < 2 or math.prod(shape) == 0:
        raise ValueError(f"a prunable weight has >= 2 non-empty dimensions (Linear (M, N) or "
                         f"Conv (O, C, ...)), not shape {shape}")
    return shape[0], math.prod(shape[1:])


def best_seeds(importance, k: int) -> np.ndarray:
    """Per row, the seed whose ``k`` kept columns carry the largest total importance.

    The ``N`` masks a row can have are the windows of ``k`` consecutive entries of the
    accepted cycle (:func:`accepted_cycle`), so all of them are scored at once with a
    cumulative sum. Ties go to the window that starts earliest on the cycle.

    Parameters
    ----------
    importance : array-like or torch.Tensor
        Non-negative scores, shape ``(M, N)``.
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
    if isinstance(importance, torch.Tensor):
        importance = importance.detach().to(torch.float64).cpu().numpy()
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


class LFSRPruning(prune.BasePruningMethod):
    """Prune a weight to an LFSR mask: ``k`` kept columns per row (per output channel).

    A Linear weight ``(M, N)`` is pruned row by row; a Conv weight ``(O, C, kh, kw)`` as its
    im2col matrix ``(O, C*kh*kw)``. The mask is computed from the whole tensor, so the method
    is of pruning type ``"global"``: applied on top of an earlier pruning, its mask is ANDed
    with the earlier one (rows then keep at most ``k`` columns, still a legal engine layer).

    Parameters
    ----------
    k : int
        Kept columns per row, in ``[1, columns]`` (checked against the weight).
    seeds : array-like of int, optional
        One seed per row in ``[1, columns]``; by default each row gets :func:`best_seeds`
        of the importance scores (``|weight|``, masked by any earlier pruning).

    Raises
    ------
    TypeError, ValueError
        If ``k`` or ``seeds`` is illegal (at construction for types, when the mask is
        computed for ranges, which depend on the weight).

    Attributes
    ----------
    seeds : numpy.ndarray or None
        The seeds used by the last :meth:`compute_mask` (int64, one per row).
    """

    PRUNING_TYPE = "global"

    def __init__(self, k: int, seeds=None):
        self._k = check_int(k, "k (kept columns per row)", 1)
        self._requested_seeds = None if seeds is None else np.asarray(seeds)
        if self._requested_seeds is not None and self._requested_seeds.dtype.kind not in "iu":
            raise TypeError(f"seeds must be integers, not {self._requested_seeds.dtype}")
        self.seeds: np.ndarray | None = None

    @property
    def k(self) -> int:
        return self._k

    def compute_mask(self, t, default_mask):
        rows, cols = prunable_matrix_shape(t.shape)
        k = check_k(self._k, cols)
        if self._requested_seeds is not None:
            if self._requested_seeds.shape != (rows,):
                raise ValueError(f"seeds must have shape ({rows},), one per output row, not "
                                 f"{self._requested_seeds.shape}")
            seeds = check_seeds(self._requested_seeds, cols)
        else:
            scores = (t.detach().abs() * default_mask).reshape(rows, cols)
            seeds = best_seeds(scores, k)
        self.seeds = seeds
        mask = lfsr_mask(cols, k, seeds, device=t.device).reshape(t.shape)
        return mask.to(default_mask.dtype) * default_mask

    @classmethod
    def apply(cls, module, name, k, seeds=None, importance_scores=None):
        """Prune ``module.<name>`` in place (the ``torch.nn.utils.prune`` re-parametrization).

        Returns
        -------
        LFSRPruning
            The method, whose :attr:`seeds` the layer's export needs.
        """
        return super().apply(module, name, k=k, seeds=seeds, importance_scores=importance_scores)


def lfsr_prune(module: nn.Module, name: str = "weight", k: int = 1, seeds=None,
               importance_scores=None) -> nn.Module:
    """Prune ``module.<name>`` to an LFSR mask, as :func:`torch.nn.utils.prune.l1_unstructured`
    does to its mask: returns ``module``; :func:`lfsr_pruning_of` finds the seeds.

    Raises
    ------
    TypeError, ValueError
        If ``k`` or ``seeds`` is illegal for the weight, or it is not a prunable weight.
    """
    LFSRPruning.apply(module, name, k, seeds=seeds, importance_scores=importance_scores)
    return module


def lfsr_pruning_of(module: nn.Module, name: str = "weight") -> LFSRPruning:
    """The :class:`LFSRPruning` that last pruned ``module.<name>``.

    Raises
    ------
    ValueError
        If ``module.<name>`` is not LFSR-pruned.
    """
    for hook in module._forward_pre_hooks.values():
        if getattr(hook, "_tensor_name", None) != name:
            continue
        methods = hook._pruning_methods if isinstance(hook, prune.PruningContainer) else [hook]
        for method in reversed(list(methods)):
            if isinstance(method, LFSRPruning):
                return method
    raise ValueError(f"{type(module).__name__}.{name} is not LFSR-pruned; "
                     f"apply lfsr_prune(module, {name!r}, k=...) first")


# --------------------------------------------------------------------------- gradual pruning

def k_schedule(n: int, k: int, stages: int) -> list[int]:
    """The kept columns after each of ``stages`` pruning stages: the cubic schedule of
    Zhu and Gupta (2017), ``k_t = k + (n - k) * (1 - t / stages)**3``, rounded up, so that
    most weights go early, while the network still has the capacity to recover, and the
    last stage lands on ``k`` exactly.

    Raises
    ------
    TypeError, ValueError
        If ``n``, ``k`` or ``stages`` (``>= 1``) is out of range.
    """
    n = check_n(n)
    k = check_k(k, n)
    stages = check_int(stages, "stages", 1)
    return [k + math.ceil((n - k) * (1 - t / stages) ** 3 - 1e-9) for t in range(1, stages + 1)]


@dataclass
class TrainReport:
    """What :func:`train_lfsr_pruned` did, stage by stage."""
    ks: dict[str, list[int]] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)
    seeds: dict[str, np.ndarray] = field(default_factory=dict)


_PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {name: module for name, module in model.named_modules()
            if isinstance(module, _PRUNABLE)}


def train_lfsr_pruned(model: nn.Module, data, *, density: float | Mapping[str, float],
                      stages: int = 4, epochs_per_stage: int = 1, final_epochs: int = 1,
                      lr: float = 1e-2, batch_size: int = 64,
                      loss_fn: Callable | None = None, seed: int = 0,
                      progress: Callable | None = None) -> TrainReport:
    """Gradual LFSR pruning with fine-tuning, in place.

    Every Linear and Conv layer (or those named in ``density``) is pruned in ``stages``
    steps along :func:`k_schedule` to ``k = max(1, round(density * columns))``. At each
    stage the layer's seeds are re-chosen (:func:`best_seeds`) for the new ``k`` from the
    weights that survived so far (pruned weights count as zero), the new mask replaces the
    old one, and the model is fine-tuned for ``epochs_per_stage`` epochs with the mask
    applied; then ``final_epochs`` more. A position that re-enters a mask starts from zero.
    The layers stay pruned (``torch.nn.utils.prune`` re-parametrization) for export with
    :func:`quantize_layer`.

    Parameters
    ----------
    model : nn.Module
        The (trained) float model.
    data : tuple of torch.Tensor
        ``(inputs, targets)``; integer targets use cross-entropy, float ones MSE, unless
        ``loss_fn(outputs, targets)`` is given.
    density : float or mapping of str to float
        Target fraction of kept columns, in ``(0, 1]``, for all prunable layers, or per
        layer name (``model.named_modules()``).
    stages, epochs_per_stage, final_epochs, batch_size : int
        Schedule and batching; ``stages >= 1``, the others ``>= 0`` (``batch_size >= 1``).
    lr : float
        SGD (momentum 0.9) learning rate, ``> 0``.
    seed : int
        Shuffling seed.
    progress : callable, optional
        Called with 1 after every epoch.

    Returns
    -------
    TrainReport
        ``k`` per layer and stage, the mean loss of every epoch, the final seeds.

    Raises
    ------
    TypeError, ValueError
        If an argument is out of range, ``density`` names no prunable layer, or the data
        are not two tensors of equal length.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, not {type(model).__name__}")
    if not (isinstance(data, (tuple, list)) and len(data) == 2
            and all(isinstance(part, torch.Tensor) for part in data)
            and len(data[0]) == len(data[1]) and len(data[0]) > 0):
        raise ValueError("data must be (inputs, targets): two non-empty tensors of equal length")
    stages = check_int(stages, "stages", 1)
    epochs_per_stage = check_int(epochs_per_stage, "epochs_per_stage", 0)
    final_epochs = check_int(final_epochs, "final_epochs", 0)
    batch_size = check_int(batch_size, "batch_size", 1)
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not lr > 0:
        raise ValueError(f"lr must be a real number > 0, not {lr!r}")
    layers = _prunable_layers(model)
    if isinstance(density, Mapping):
        unknown = sorted(set(density) - set(layers))
        if unknown:
            raise ValueError(f"density names {unknown[0]!r}, which is not a Linear or Conv "
                             f"layer of the model; those are {sorted(layers)}")
        targets = dict(density)
    else:
        targets = {name: density for name in layers}
    if not targets:
        raise ValueError("the model has no Linear or Conv layer to prune")
    schedules = {}
    for name, fraction in targets.items():
        if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) \
                or not 0 < fraction <= 1:
            raise ValueError(f"density of {name} must be in (0, 1], not {fraction!r}")
        cols = prunable_matrix_shape(layers[name].weight.shape)[1]
        schedules[name] = k_schedule(cols, max(1, round(fraction * cols)), stages)

    inputs, labels = data
    if loss_fn is None:
        loss_fn = F.cross_entropy if not labels.is_floating_point() else F.mse_loss
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    report = TrainReport(ks={name: schedule for name, schedule in schedules.items()})

    def epoch():
        model.train()
        total, batches = 0.0, 0
        for batch in minibatches(len(inputs), batch_size, generator):
            optimizer.zero_grad()
            loss = loss_fn(model(inputs[batch]), labels[batch])
            loss.backward()
            optimizer.step()
            total, batches = total + loss.item(), batches + 1
        report.losses.append(total / batches)
        if progress is not None:
            progress(1)

    for stage in range(stages):
        for name, schedule in schedules.items():
            layer = layers[name]
            if prune.is_pruned(layer) and hasattr(layer, "weight_orig"):
                prune.remove(layer, "weight")   # dead weights become zeros
            lfsr_prune(layer, "weight", k=schedule[stage])
        # Momentum from the previous mask would push pruned positions around.
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        for _ in range(epochs_per_stage):
            epoch()
    for _ in range(final_epochs):
        epoch()
    report.seeds = {name: lfsr_pruning_of(layers[name]).seeds for name in schedules}
    return report


# --------------------------------------------------------------------------- int8 export

def quantize_layer(layer: nn.Module, *, input_scale: float | None = None,
                   output_scale: float | None = None, relu: bool = False) -> dict:
    """The engine weights dict of an LFSR-pruned Linear or Conv layer.

    The kept weights are quantized symmetrically per output row: ``scale[m] =
    max|w[m]| / 127`` (1 for an all-zero row) and ``w_int = round(w / scale)`` in
    ``[-127, 127]``; pruned positions stay exactly zero. A float output is then
    ``y[m] ~= scale[m] * input_scale * acc[m]`` with ``acc`` the engine's accumulator, so the
    requantizer realises ``mult[m] / 2**shift ~= scale[m] * input_scale / output_scale``
    (:func:`requant_for_channel_scales`).

    Parameters
    ----------
    layer : nn.Module
        A Linear or Conv layer pruned with :func:`lfsr_prune`, without a non-zero bias (the
        engine has no bias input).
    input_scale, output_scale : float, optional
        Both ``> 0`` to add ``mult``/``shift``/``relu``, or both ``None`` for the raw
        accumulator.
    relu : bool
        The requantizer's ReLU flag.

    Returns
    -------
    dict
        ``w`` (int8 ``(M, N)``), ``seeds`` (int64 ``(M,)``), ``k`` (0-d int64), and ``mult``,
        ``shift``, ``relu`` with scales: the keys of a weights ``.npz``.

    Raises
    ------
    TypeError
        If ``layer`` is not a Linear/Conv module, a scale is not a real number or ``relu``
        not a bool.
    ValueError
        If the layer is not LFSR-pruned, has a non-zero bias, or only one scale is given,
        or a scale is not finite and positive (:func:`secateur.models.common.export_requant`).
    """
    if not isinstance(layer, _PRUNABLE):
        raise TypeError(f"layer must be a Linear or Conv module, not {type(layer).__name__}")
    method = lfsr_pruning_of(layer, "weight")
    if layer.bias is not None and bool((layer.bias != 0).any()):
        raise ValueError("layer has a non-zero bias, but the LFSR engine has no bias input")
    rows, cols = prunable_matrix_shape(layer.weight.shape)
    weight = layer.weight.detach().to(torch.float64).reshape(rows, cols).cpu().numpy()
    magnitude = np.abs(weight).max(axis=1)
    scale = np.where(magnitude > 0, magnitude / 127.0, 1.0)
    w_int = np.clip(np.round(weight / scale[:, None]), -127, 127).astype(np.int8)
    weights = {"w": w_int, "seeds": np.asarray(method.seeds, dtype=np.int64),
               "k": np.asarray(method.k, dtype=np.int64)}
    weights.update(export_requant(scale, input_scale, output_scale, relu))
    check_weights(weights["w"], weights["seeds"], weights["k"])
    return weights


def save_npz(path, weights: Mapping[str, np.ndarray]) -> Path:
    """Write an engine weights dict (as from :func:`quantize_layer`) to an ``.npz`` file.

    Raises
    ------
    TypeError, ValueError
        If a key is unknown or missing, or the layer or requantizer is malformed.
    """
    return save_weights_npz(path, weights, ("w", "seeds", "k"), _checked_layer)


def _checked_layer(weights) -> dict:
    w, seeds, k, _ = check_weights(weights["w"], weights["seeds"], weights["k"])
    return {"w": w, "seeds": seeds, "k": np.asarray(k, dtype=np.int64)}
