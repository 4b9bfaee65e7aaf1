"""Bias and requantization: the one definition of how an accumulator becomes a result.

Every engine ends in the same result path (:class:`secateur.hdl.result_path.ResultPath`),
and this module is its golden model (:func:`result_path`). The arithmetic, bit for bit::

    raw = acc + bias
    y   = sat8(relu?((raw * mult + 2**(shift - 1)) >> shift))

* ``acc``   the engine's exact accumulator (signed, ``acc_width`` bits, at most 64).
* ``bias``  optional, one signed integer of ``BIAS_BITS`` (32) bits per output row, as the
  int32 bias of int8 inference (TFLite, ONNX QLinear) at scale ``s_in * s_w``; without one,
  ``bias = 0``. ``raw`` is exact in ``max(acc_width, BIAS_BITS) + 1`` bits
  (:func:`result_width`), the width of every engine's ``res`` lanes, so nothing overflows.
* Without a requantizer the engine returns ``raw``.
* ``mult``  a signed integer of ``MULT_BITS`` bits, one per layer or one per output channel.
* ``shift`` an integer in ``[0, SHIFT_MAX]``, one per layer. The rounding term
  ``2**(shift - 1)`` is 0 when ``shift == 0``; that is round-half-up (towards +inf).
* ``>>``    arithmetic (floor) shift of the exact, unbounded product.
* ``relu``  optional: negative values become 0, applied *before* saturation.
* ``sat8``  clamps to ``[-128, 127]``.

In a weights ``.npz`` the keys are ``mult`` (scalar or shape ``(M,)``), ``shift`` (scalar)
and ``relu`` (scalar bool), which must appear together, and ``bias`` (integers, shape
``(M,)``), which may appear alone.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported by the functions that use it: the CLI starts without it
    import torch

__all__ = [
    "MULT_BITS", "SHIFT_MAX", "BIAS_BITS", "BIAS_KEY", "REQUANT_KEYS", "result_width", "check_bias",
    "bias_from_npz", "result_path", "RequantParams", "check_requant", "requant_for_scale",
    "requant_for_channel_scales", "requantize", "requantize_torch",
]

#: Width of the signed multiplier. Per-channel scales of int8 networks fit comfortably.
MULT_BITS = 16
#: Largest legal shift. Products are at most ``result_width(acc_width) + MULT_BITS`` bits wide.
SHIFT_MAX = 47

#: The requantization keys of a weights npz: all three or none.
REQUANT_KEYS = ("mult", "shift", "relu")
#: Width of the signed per-row bias: int32, as int8 inference frameworks store it, and one
#: load beat of every engine.
BIAS_BITS = 32
#: The bias key of a weights npz.
BIAS_KEY = "bias"

_BIAS_MIN, _BIAS_MAX = -(1 << (BIAS_BITS - 1)), (1 << (BIAS_BITS - 1)) - 1

_MULT_MIN, _MULT_MAX = -(1 << (MULT_BITS - 1)), (1 << (MULT_BITS - 1)) - 1


class RequantParams:
    """Validated requantization parameters of one layer.

    Parameters
    ----------
    mult : int or array-like of int
        Signed multiplier, one per layer (scalar) or one per output channel (shape ``(M,)``),
        each in ``[-2**15, 2**15 - 1]``.
    shift : int
        Arithmetic right shift, in ``[0, 47]``.
    relu : bool
        Clamp negative results to zero before saturation: a boolean, or the integer 0 or 1
        (as array files written without a bool dtype hold it).

    Raises
    ------
    TypeError
        If ``mult`` or ``shift`` is not integral, or ``relu`` is not a boolean.
    ValueError
        If a value is out of its range.
    """

    def __init__(self, mult, shift, relu=False):
        mult_array = np.asarray(mult)
        if mult_array.dtype.kind not in "iu":
            raise TypeError(f"Requantizer mult must be integers, not {mult_array.dtype}")
        if mult_array.ndim > 1:
            raise ValueError(f"Requantizer mult must be a scalar or a vector of one per output "
                             f"channel, not shape {mult_array.shape}")
        if mult_array.size == 0:
            raise ValueError("Requantizer mult is empty; give one multiplier per layer or one "
                             "per output channel")
        outside = np.flatnonzero((mult_array.ravel() < _MULT_MIN) | (mult_array.ravel() > _MULT_MAX))
        if outside.size:
            where = f" (channel {outside[0]})" if mult_array.ndim else ""
            raise ValueError(f"Requantizer mult must be in [{_MULT_MIN}, {_MULT_MAX}], not "
                             f"{mult_array.ravel()[outside[0]]}{where}")
        shift_array = np.asarray(shift)
        if shift_array.ndim != 0 or shift_array.dtype.kind not in "iu":
            raise TypeError(f"Requantizer shift must be one integer, not {shift!r}")
        if not 0 <= int(shift_array) <= SHIFT_MAX:
            raise ValueError(f"Requantizer shift must be in [0, {SHIFT_MAX}], not {int(shift_array)}")
        relu_array = np.asarray(relu)
        if relu_array.ndim != 0 or relu_array.dtype.kind not in "biu" or int(relu_array) not in (0, 1):
            raise TypeError(f"Requantizer relu must be a boolean, not {relu!r}")
        self._mult = mult_array.astype(np.int64)
        self._shift = int(shift_array)
        self._relu = bool(relu_array)

    @property
    def mult(self) -> np.ndarray:
        """Signed multiplier: a 0-d array (per layer) or shape ``(M,)`` (per channel)."""
        return self._mult

    @property
    def shift(self) -> int:
        return self._shift

    @property
    def relu(self) -> bool:
        return self._relu

    def mult_per_channel(self, rows: int) -> np.ndarray:
        """The multiplier of each of ``rows`` output channels.

        Raises
        ------
        ValueError
            If ``mult`` is a vector whose length is not ``rows``.
        """
        if self._mult.ndim == 0:
            return np.full(rows, int(self._mult), dtype=np.int64)
        if self._mult.shape != (rows,):
            raise ValueError(f"Requantizer mult has {self._mult.shape[0]} entries; the layer has "
                             f"{rows} output channels")
        return self._mult

    @classmethod
    def from_npz(cls, npz) -> "RequantParams | None":
        """Read ``mult``/``shift``/``relu`` from a loaded weights npz, or ``None`` if absent.

        Raises
        ------
        ValueError
            If only some of the three keys are present.
        """
        present = [key for key in REQUANT_KEYS if key in npz]
        if not present:
            return None
        if len(present) != 3:
            missing = sorted(set(REQUANT_KEYS) - set(present))
            raise ValueError(f"weights npz has requantization keys {present} but lacks {missing}; "
                             f"give all of mult, shift and relu, or none")
        return cls(npz["mult"], npz["shift"], npz["relu"])

    def as_dict(self) -> dict:
        mult = self._mult.tolist()
        return {"mult": mult, "shift": self._shift, "relu": self._relu}

    def to_npz(self) -> dict:
        """The weights-npz keys of these parameters, the inverse of :meth:`from_npz`.

        Returns
        -------
        dict
            ``"mult"`` (int64, 0-d or ``(M,)``), ``"shift"`` (0-d int64) and ``"relu"``
            (0-d bool).
        """
        return {"mult": np.asarray(self._mult, dtype=np.int64),
                "shift": np.asarray(self._shift, dtype=np.int64),
                "relu": np.asarray(self._relu, dtype=np.bool_)}


def check_requant(requant) -> RequantParams | None:
    """Check the optional ``requant`` argument of a golden model's ``reference``.

    Parameters
    ----------
    requant : RequantParams or None
        The layer's requantizer; ``None`` means raw accumulators.

    Returns
    -------
    RequantParams or None
        ``requant`` itself.

    Raises
    ------
    TypeError
        If ``requant`` is neither ``None`` nor a :class:`RequantParams`.
    """
    if requant is not None and not isinstance(requant, RequantParams):
        raise TypeError(f"requant must be a RequantParams or None, not {type(requant).__name__}")
    return requant


def _shift_for(magnitude: float, scale: float) -> int:
    """The largest shift (at most ``SHIFT_MAX``) at which ``magnitude > 0`` still rounds to a
    multiplier of ``MULT_BITS`` signed bits; ``scale`` is named in the error."""
    shift = min(SHIFT_MAX, max(0, math.floor(math.log2(_MULT_MAX / magnitude))))
    while math.floor(magnitude * 2.0 ** shift + 0.5) > _MULT_MAX:
        if shift == 0:
            raise ValueError(f"requantization scale {scale:g} exceeds the largest multiplier "
                             f"{_MULT_MAX}; use a larger output_scale")
        shift -= 1
    return shift


def requant_for_scale(scale: float, relu: bool) -> RequantParams:
    """One ``mult`` and ``shift`` with ``mult / 2**shift ~= scale`` at the best precision.

    The largest shift whose rounded multiplier ``floor(|scale| * 2**shift + 0.5)`` still fits
    ``MULT_BITS`` signed bits keeps the most significant bits of ``scale``; the multiplier
    takes the sign of ``scale``. A zero scale gives ``mult = shift = 0``.

    Parameters
    ----------
    scale : float
        The real factor from accumulator to output, finite.
    relu : bool
        The requantizer's ReLU flag.

    Returns
    -------
    RequantParams
        With a per-layer (0-d) ``mult``.

    Raises
    ------
    ValueError
        If ``|scale|`` needs a multiplier above ``2**15 - 1`` even at shift 0.
    """
    magnitude = abs(scale)
    if magnitude == 0.0:
        return RequantParams(0, 0, relu)
    shift = _shift_for(magnitude, scale)
    mult = math.floor(magnitude * 2.0 ** shift + 0.5)
    return RequantParams(int(math.copysign(mult, scale)), shift, relu)


def requant_for_channel_scales(scales, relu: bool = False) -> RequantParams:
    """``mult`` per channel and one ``shift`` with ``mult[m] / 2**shift ~= scales[m]``.

    The shift is the largest (at most :data:`SHIFT_MAX`) at which the largest ``|scale|``
    still rounds into ``MULT_BITS`` signed bits, which keeps the most precision for every
    channel under the one shift the requantizer has.

    Parameters
    ----------
    scales : array-like of float
        One finite factor per output channel.
    relu : bool
        The requantizer's ReLU flag.

    Returns
    -------
    RequantParams
        With a per-channel ``mult`` of shape ``(M,)``.

    Raises
    ------
    ValueError
        If ``scales`` is empty or not finite, or a scale needs a multiplier above ``2**15 - 1``
        even at shift 0.
    """
    scales = np.asarray(scales, dtype=np.float64).reshape(-1)
    if scales.size == 0 or not np.all(np.isfinite(scales)):
        raise ValueError("scales must be a non-empty vector of finite numbers")
    largest = float(np.abs(scales).max())
    if largest == 0.0:
        return RequantParams(np.zeros(scales.size, dtype=np.int64), 0, relu)
    shift = _shift_for(largest, largest)
    mult = np.sign(scales) * np.floor(np.abs(scales) * 2.0 ** shift + 0.5)
    return RequantParams(mult.astype(np.int64), shift, relu)


def requantize(acc, params: RequantParams) -> np.ndarray:
    """Requantize exact accumulators of shape ``(..., M)`` to int8 (numpy, exact int64 math).

    The product ``acc * mult`` is computed in Python integers where int64 could overflow,
    so the result is exact for any accumulator width.
    """
    acc = np.asarray(acc, dtype=np.int64)
    mult = params.mult_per_channel(acc.shape[-1]) if params.mult.ndim else params.mult
    mult = np.asarray(mult, dtype=np.int64)
    rounding = (1 << (params.shift - 1)) if params.shift else 0
    largest = (int(np.abs(acc).max(initial=0)) * int(np.abs(mult).max(initial=0)) + rounding)
    if largest < 1 << 62:
        # Every engine's acc + bias (at most 34 bits) times a 16-bit mult: exact in int64.
        shifted = (acc * mult + rounding) >> params.shift
    else:
        product = acc.astype(object) * mult.astype(object) + rounding
        shifted = np.vectorize(lambda value: value >> params.shift, otypes=[object])(product)
    if params.relu:
        shifted = np.maximum(shifted, 0)
    return np.clip(shifted, -128, 127).astype(np.int64)


def requantize_torch(acc: torch.Tensor, mult: torch.Tensor | int, shift: int,
                     relu: bool) -> torch.Tensor:
    """The same arithmetic on int64 torch tensors, for the network golden models.

    Exact as long as ``|acc * mult| < 2**62``, which holds for every engine's ``acc + bias``
    (at most 33 bits) times a 16-bit multiplier.
    """
    import torch

    acc = acc.to(torch.int64)
    rounding = (1 << (shift - 1)) if shift else 0
    value = (acc * torch.as_tensor(mult, dtype=torch.int64) + rounding) >> shift
    if relu:
        value = value.clamp(min=0)
    return value.clamp(-128, 127)


def result_width(acc_width: int) -> int:
    """Bits of ``acc + bias`` for a signed ``acc_width``-bit accumulator: the exact sum of two
    signed numbers needs one bit more than the wider of them."""
    return max(acc_width, BIAS_BITS) + 1


def check_bias(bias, rows: int) -> np.ndarray | None:
    """Validate a layer's bias: ``None``, or integers of shape ``(rows,)`` in the int32 range.

    Parameters
    ----------
    bias : array-like of int or None
        One signed bias per output row.
    rows : int
        The layer's output rows ``M``.

    Returns
    -------
    numpy.ndarray or None
        int64 ``(rows,)``, or ``None`` when ``bias`` is ``None``.

    Raises
    ------
    TypeError
        If ``bias`` is not integral.
    ValueError
        If its shape is not ``(rows,)`` or a value is outside ``[-2**31, 2**31 - 1]`` (naming
        the first such row).
    """
    if bias is None:
        return None
    values = np.asarray(bias)
    if values.dtype.kind not in "iu":
        raise TypeError(f"bias must be integers, not {values.dtype}")
    if values.shape != (rows,):
        raise ValueError(f"bias must have shape ({rows},), one per output row, not "
                         f"{values.shape}")
    outside = np.flatnonzero((values < _BIAS_MIN) | (values > _BIAS_MAX))
    if outside.size:
        raise ValueError(f"bias must be in [{_BIAS_MIN}, {_BIAS_MAX}] ({BIAS_BITS} bits), not "
                         f"{int(values[outside[0]])} (row {outside[0]})")
    return values.astype(np.int64)


def bias_from_npz(npz, rows: int) -> np.ndarray | None:
    """The checked ``bias`` of a loaded weights npz (:func:`check_bias`), or ``None``."""
    return check_bias(npz[BIAS_KEY], rows) if BIAS_KEY in npz else None


def result_path(acc, requant: RequantParams | None, bias=None) -> np.ndarray:
    """The golden model of every engine's result path: ``acc + bias``, then requantized when
    ``requant`` is given (see the module documentation).

    Parameters
    ----------
    acc : array-like of int
        Exact accumulators, shape ``(..., M)``.
    requant : RequantParams or None
        The layer's requantizer; ``None`` returns ``acc + bias``.
    bias : array-like of int, optional
        One per output row (:func:`check_bias`); ``None`` adds nothing.

    Returns
    -------
    numpy.ndarray
        int64, the shape of ``acc``.

    Raises
    ------
    TypeError, ValueError
        From :func:`check_requant` and :func:`check_bias`.
    """
    acc = np.asarray(acc, dtype=np.int64)
    check_requant(requant)
    bias = check_bias(bias, acc.shape[-1])
    raw = acc if bias is None else acc + bias
    return raw if requant is None else requantize(raw, requant)
