"""The dense int8 baseline: the golden model of :mod:`secateur.hdl.engines.dense`.

The engine computes, for int8 weights ``W`` of shape ``(M, N)`` and int8 activations::

    acc[b, m] = sum_n W[m, n] * x[b, n]        (exact, int64)

and, when the layer carries ``mult``/``shift``/``relu``, requantizes ``acc`` with the one
shared requantizer (:func:`secateur.models.requant.requantize`). Every int8 weight is legal,
including -128, and nothing is pruned: this is the reference point that the compressed
engines are compared against, at equal lanes.

Bounds: a product lies in ``[-128 * 127, (-128) * (-128)] = [-16256, 16384]``, so
``|acc| <= 16384 * N`` (:func:`acc_bound`); the engine sizes its accumulators from that.
"""

from __future__ import annotations

import numpy as np

from .common import check_int, check_int8_inputs, check_int8_weights
from .requant import RequantParams, check_requant, result_path

__all__ = ["PRODUCT_MAX", "acc_bound", "check_weights", "reference"]

#: Largest magnitude of an int8 x int8 product: (-128) * (-128).
PRODUCT_MAX = 128 * 128


def acc_bound(cols: int) -> int:
    """Largest ``|acc|`` of a dot product of ``cols`` int8 pairs: ``16384 * cols``.

    Raises
    ------
    TypeError
        If ``cols`` is not an integer.
    ValueError
        If ``cols < 1``.
    """
    return PRODUCT_MAX * check_int(cols, "cols")


def check_weights(w_int8) -> np.ndarray:
    """Check a dense weight matrix: int8, 2-D ``(M, N)`` with ``M, N >= 1``.

    The one statement of the dense engine's weight structure, used by :func:`reference` and
    by the engine when it loads a layer.

    Returns
    -------
    numpy.ndarray
        ``w_int8`` as an array.

    Raises
    ------
    TypeError
        If ``w_int8`` is not int8.
    ValueError
        If it is not a non-empty 2-D matrix.
    """
    return check_int8_weights(w_int8, "an int8 weight matrix")


def reference(w_int8, x_int8, requant: RequantParams | None = None,
              bias=None) -> np.ndarray:
    """Bit-exact output of the dense int8 engine.

    Parameters
    ----------
    w_int8 : array-like
        int8 weights, shape ``(M, N)``.
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
        int64, shape ``(B, M)``: accumulators, or int8-range values after requantization.

    Raises
    ------
    TypeError
        If ``w_int8`` or ``x_int8`` is not int8, or ``requant`` is not a RequantParams.
    ValueError
        If a shape is wrong, the inner dimensions differ, or a per-channel ``mult`` does not
        have ``M`` entries.
    """
    w = check_weights(w_int8)
    x = check_int8_inputs(x_int8, w.shape[1])
    check_requant(requant)
    # Integer matmul in numpy is exact (no BLAS); |acc| <= 16384 * N is far inside int64.
    acc = x.astype(np.int64) @ w.astype(np.int64).T
    return result_path(acc, requant, bias)
