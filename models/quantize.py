"""Post-training quantization of a float network into engine layers: the rules, written once.

Scales (``x ~= scale * x_int``, zero point 0 everywhere)
    * Activations: one scale per tensor, calibrated on the calibration inputs:
      ``scale = max(P, 1e-8) / 127`` where ``P`` is the :data:`PERCENTILE` (99.99th)
      percentile of ``|x|`` over every element of the tensor on every calibration input
      (:func:`activation_scale`; ``secateur net`` calibrates its post-ReLU activations the
      same way). The few larger values saturate at 127; the rest keep their resolution.
    * :func:`quantize_activations`: ``x_int = sat8(rint(x / scale))``, ``rint`` rounding half
      to even, ``sat8`` clamping to ``[-128, 127]``.
    * Weights (:func:`engine_weights`): one scale per output row (``per_channel``), or one for
      the whole layer; the last engine layer uses one, so that its raw outputs share one scale
      and their argmax is the class. Per engine:

      - ``dense``, ``cim``: int8, ``scale = max|w| / 127`` (1 for an all-zero row),
        ``w_int = clip(rint(w / scale), -127, 127)`` (:func:`int8_weights`);
      - ``ternary``: codes in ``{-1, 0, +1}`` times ``alpha``
        (:func:`secateur.models.ternary.ternary_codes`), with the threshold ``delta`` (a
        fraction of ``max|w|``) given, or chosen per row (per layer) from :data:`DELTAS` as
        the one whose ``alpha * codes`` is closest to ``w`` in squared error
        (:func:`ternary_weights`);
      - ``lfsr``: ``k = max(1, round(density * N))`` kept columns per row; each row's seed is
        the one whose LFSR mask keeps the most ``|w|`` (:func:`secateur.models.lfsr.
        best_seeds`), the rest is pruned, then int8 as above (:func:`lfsr_weights`);
      - ``permdiag``: each ``p x p`` block keeps the diagonal offset with the most energy
        (:func:`secateur.models.permdiag.project`), then int8 as above; a layer whose shape
        is not a multiple of ``p`` is zero padded to whole blocks first
        (:func:`permdiag_weights`).
    * Bias: ``bias = rint(b / (s_in * s_w[m]))`` as int64 at the accumulator's scale
      (:func:`quantize_bias`), refused, not clamped, outside the engine's bias range
      (:func:`check_bias_range`).
    * Requantizer of a hidden layer: ``mult[m] / 2**shift ~= s_in * s_w[m] / s_out``
      (:func:`secateur.models.requant.requant_for_channel_scales`), ReLU fused when one
      follows (:func:`layer_requant`).
    * Residual add: ``mult_x / 2**shift ~= s_x / s_out`` for both operands under one shift
      (:func:`residual_add_params`; the arithmetic is :func:`secateur.models.hostops.
      residual_add`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .requant import RequantParams, requant_for_channel_scales

__all__ = [
    "PERCENTILE", "SCALE_FLOOR", "DELTAS", "activation_scale", "quantize_activations",
    "int8_weights", "ternary_weights", "lfsr_weights", "permdiag_weights", "engine_weights",
    "ENGINE_FORMS", "quantize_bias", "check_bias_range", "layer_requant",
    "residual_add_params",
]

#: The calibration percentile of ``|x|`` (the rule of :func:`activation_scale`).
PERCENTILE = 99.99
#: The smallest percentile an activation scale is computed from (an all-zero tensor).
SCALE_FLOOR = 1e-8
#: Ternary thresholds tried per row, as fractions of ``max|w|``.
DELTAS = tuple(round(0.05 * step, 2) for step in range(1, 19))


def activation_scale(values, percentile: float = PERCENTILE) -> float:
    """``max(percentile(|values|), SCALE_FLOOR) / 127`` over every element of ``values``.

    Raises
    ------
    ValueError
        If ``values`` is empty or holds a NaN or an infinity.
    """
    values = np.abs(np.asarray(values, dtype=np.float64)).reshape(-1)
    if values.size == 0 or not np.isfinite(values).all():
        raise ValueError("calibration values must be non-empty and finite")
    return max(float(np.percentile(values, percentile)), SCALE_FLOOR) / 127.0


def quantize_activations(x, scale: float) -> np.ndarray:
    """``sat8(rint(x / scale))`` as int8 (round half to even).

    Raises
    ------
    ValueError
        If ``scale`` is not finite and positive.
    """
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"an activation scale must be finite and > 0, not {scale}")
    scaled = np.rint(np.asarray(x, dtype=np.float64) / scale)
    return np.clip(scaled, -128, 127).astype(np.int8)


def _row_scales(w: np.ndarray, per_channel: bool) -> np.ndarray:
    magnitude = np.abs(w).max(axis=1) if per_channel else np.full(w.shape[0], np.abs(w).max())
    return np.where(magnitude > 0, magnitude / 127.0, 1.0)


def _check_matrix(w) -> np.ndarray:
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2 or w.size == 0:
        raise ValueError(f"a weight must be a non-empty (M, N) matrix, not shape {w.shape}")
    if not np.isfinite(w).all():
        raise ValueError("a weight holds a NaN or an infinity")
    return w


def int8_weights(w, per_channel: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8: ``(w_int8, scales)`` with ``w ~= scales[:, None] * w_int8``.

    Parameters
    ----------
    w : array-like
        Float ``(M, N)``.
    per_channel : bool
        One scale per row, else one for the matrix (repeated per row).

    Returns
    -------
    w_int8 : numpy.ndarray
        int8 ``(M, N)`` in ``[-127, 127]``.
    scales : numpy.ndarray
        float64 ``(M,)``: ``max|w| / 127``, 1 where that is 0.

    Raises
    ------
    ValueError
        If ``w`` is not a finite non-empty matrix.
    """
    w = _check_matrix(w)
    scales = _row_scales(w, per_channel)
    codes = np.clip(np.rint(w / scales[:, None]), -127, 127).astype(np.int8)
    return codes, scales


def _ternary_error(w: torch.Tensor, delta: float) -> tuple[float, np.ndarray, float]:
    from .ternary import ternary_codes
    codes, alpha = ternary_codes(w, delta)
    error = float(((w - alpha * codes.to(w.dtype)) ** 2).sum())
    return error, codes.numpy(), alpha


def _ternarize(w: np.ndarray, delta: float | None) -> tuple[np.ndarray, float]:
    tensor = torch.from_numpy(w.reshape(1, -1) if w.ndim == 1 else w)
    candidates = DELTAS if delta is None else (delta,)
    _, codes, alpha = min((_ternary_error(tensor, value) for value in candidates),
                          key=lambda result: result[0])
    return codes.reshape(w.shape), alpha


def ternary_weights(w, per_channel: bool = True,
                    delta: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Ternary codes and their magnitudes: ``w ~= alpha[:, None] * codes``.

    Parameters
    ----------
    w : array-like
        Float ``(M, N)``.
    per_channel : bool
        One ``alpha`` (and threshold) per row, else one for the matrix.
    delta : float, optional
        The threshold as a fraction of ``max|w|`` (of the row or the matrix), in ``[0, 1]``;
        ``None`` picks the best of :data:`DELTAS` (module docstring).

    Returns
    -------
    codes : numpy.ndarray
        int8 ``(M, N)`` in ``{-1, 0, 1}``.
    alpha : numpy.ndarray
        float64 ``(M,)``, the scale of each row; 1 where the row is all zero.

    Raises
    ------
    TypeError, ValueError
        If ``w`` is not a finite non-empty matrix or ``delta`` is out of range.
    """
    w = _check_matrix(w)
    if per_channel:
        rows = [_ternarize(row, delta) for row in w]
        codes = np.stack([row_codes for row_codes, _ in rows])
        alpha = np.array([row_alpha for _, row_alpha in rows], dtype=np.float64)
    else:
        codes, value = _ternarize(w, delta)
        alpha = np.full(w.shape[0], value, dtype=np.float64)
    return codes.astype(np.int8), np.where(alpha > 0, alpha, 1.0)


def lfsr_weights(w, density: float, per_channel: bool = True) -> dict:
    """LFSR-pruned int8 weights (module docstring).

    Returns
    -------
    dict
        ``w`` (int8 ``(M, N)``, zero outside each row's mask), ``seeds`` (int64 ``(M,)``),
        ``k`` (0-d int64) and ``scales`` (float64 ``(M,)``).

    Raises
    ------
    ValueError
        If ``density`` is not in ``(0, 1]`` or ``w`` is not a finite non-empty matrix.
    """
    from .lfsr import best_seeds, lfsr_mask
    w = _check_matrix(w)
    if not (isinstance(density, (int, float)) and 0 < density <= 1):
        raise ValueError(f"density must be in (0, 1], not {density!r}")
    cols = w.shape[1]
    k = max(1, round(density * cols))
    seeds = best_seeds(np.abs(w), k)
    kept = w * lfsr_mask(cols, k, seeds).numpy()
    codes, scales = int8_weights(kept, per_channel)
    return {"w": codes, "seeds": seeds, "k": np.asarray(k, dtype=np.int64), "scales": scales}


def permdiag_weights(w, p: int, per_channel: bool = True) -> dict:
    """Permuted-diagonal int8 weights (module docstring), zero padded to whole blocks.

    Returns
    -------
    dict
        ``w`` (int8 ``(ceil(M/p) p, ceil(N/p) p)``), ``p`` (0-d int64) and ``scales``
        (float64, one per padded row).

    Raises
    ------
    ValueError
        If ``p < 1`` or ``w`` is not a finite non-empty matrix.
    """
    from .permdiag import expand, project
    w = _check_matrix(w)
    if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 1:
        raise ValueError(f"p must be an integer >= 1, not {p!r}")
    rows, cols = (-(-size // p) * p for size in w.shape)
    padded = np.zeros((rows, cols))
    padded[:w.shape[0], :w.shape[1]] = w
    diag, offsets = project(padded, p)
    codes, scales = int8_weights(expand(diag, offsets), per_channel)
    return {"w": codes, "p": np.asarray(p, dtype=np.int64), "scales": scales}


def _int8_form(w, per_channel, options):
    codes, scales = int8_weights(w, per_channel)
    return {"w": codes, "scales": scales}


def _ternary_form(w, per_channel, options):
    codes, alpha = ternary_weights(w, per_channel, options.get("delta"))
    return {"w": codes, "scales": alpha}


#: Engine -> ``form(w, per_channel, options) -> dict`` of its weights npz keys plus ``scales``.
ENGINE_FORMS = {
    "dense": _int8_form,
    "cim": _int8_form,
    "ternary": _ternary_form,
    "lfsr": lambda w, per_channel, options: lfsr_weights(w, options["density"], per_channel),
    "permdiag": lambda w, per_channel, options: permdiag_weights(w, options["p"], per_channel),
}


def engine_weights(engine: str, w, per_channel: bool, options: dict) -> tuple[dict, np.ndarray]:
    """A float ``(M, N)`` weight in the native form of ``engine`` (module docstring).

    Parameters
    ----------
    engine : str
        One of :data:`ENGINE_FORMS`.
    w : array-like
        Float ``(M, N)``.
    per_channel : bool
        One weight scale per row, else one for the layer.
    options : dict
        ``density`` (lfsr), ``p`` (permdiag), optionally ``delta`` (ternary).

    Returns
    -------
    weights : dict
        The engine's weights npz keys (``w`` and its structure keys); ``w`` may have more rows
        and columns than the input (permdiag's zero padding).
    scales : numpy.ndarray
        float64, the scale of each row of ``weights["w"]``.

    Raises
    ------
    ValueError
        If the engine is unknown, or from the engine's rule.
    """
    if engine not in ENGINE_FORMS:
        raise ValueError(f"no quantization rule for the {engine} engine; engines with one: "
                         f"{', '.join(ENGINE_FORMS)}")
    weights = dict(ENGINE_FORMS[engine](w, per_channel, options))
    return weights, weights.pop("scales")


def quantize_bias(bias, input_scale: float, weight_scales) -> np.ndarray:
    """``rint(b / (s_in * s_w[m]))`` as int64 (round half to even), the bias at the scale of
    the accumulator; ``bias`` may be shorter than ``weight_scales`` (padded rows get 0).

    Raises
    ------
    ValueError
        If a bias is not finite or its quotient does not fit int64.
    """
    weight_scales = np.asarray(weight_scales, dtype=np.float64)
    values = np.zeros(weight_scales.shape, dtype=np.float64)
    bias = np.asarray(bias, dtype=np.float64).reshape(-1)
    values[:bias.size] = bias
    quotient = np.rint(values / (float(input_scale) * weight_scales))
    if not np.isfinite(quotient).all() or np.abs(quotient).max(initial=0) >= 2.0 ** 62:
        raise ValueError("a bias is not finite or too large to quantize")
    return quotient.astype(np.int64)


def check_bias_range(bias: np.ndarray, bits: int, where: str) -> np.ndarray:
    """Refuse (never clamp) a quantized bias outside ``[-2**(bits-1), 2**(bits-1) - 1]``.

    Raises
    ------
    ValueError
        Naming ``where`` (the layer), the first offending row and the range.
    """
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    outside = np.flatnonzero((bias < low) | (bias > high))
    if outside.size:
        row = int(outside[0])
        raise ValueError(f"{where}: the quantized bias of row {row} is {int(bias[row])}, outside "
                         f"the engine's {bits}-bit bias range [{low}, {high}]")
    return bias


def layer_requant(input_scale: float, weight_scales, output_scale: float,
                  relu: bool) -> RequantParams:
    """The requantizer of a hidden layer: ``mult[m] / 2**shift ~= s_in * s_w[m] / s_out``.

    Raises
    ------
    ValueError
        If a ratio needs a multiplier above ``2**15 - 1`` even at shift 0.
    """
    ratios = float(input_scale) * np.asarray(weight_scales, dtype=np.float64) / output_scale
    return requant_for_channel_scales(ratios, relu)


def residual_add_params(scale_a: float, scale_b: float, scale_out: float) -> dict:
    """``mult_a``, ``mult_b`` and ``shift`` of :func:`secateur.models.hostops.residual_add`:
    ``mult_x / 2**shift ~= s_x / s_out`` under one shift (the largest that keeps both
    multipliers in 16 signed bits).

    Raises
    ------
    ValueError
        If a ratio needs a multiplier above ``2**15 - 1`` even at shift 0.
    """
    params = requant_for_channel_scales([scale_a / scale_out, scale_b / scale_out])
    mult_a, mult_b = (int(value) for value in params.mult)
    return {"mult_a": mult_a, "mult_b": mult_b, "shift": params.shift}
