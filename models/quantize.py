"""Post-training quantization of a float network into engine layers: the rules, written once.

Scales (``x ~= scale * x_int``, zero point 0 everywhere)
    * Activations: one scale per tensor, ``scale = max(P, 1e-8) / 127`` where ``P`` is the
      :data:`PERCENTILE` (99.99th) percentile of ``|x|`` over every element of the tensor on
      every calibration input (:func:`activation_scale`; ``secateur net`` calibrates its
      activations by the same rule, :func:`secateur.models.network.calibrate`). The few
      larger values saturate at 127; the rest keep their resolution.
    * **Calibrated on the compressed network, layer by layer.** The network input's scale
      comes from the calibration inputs themselves. Every later tensor's scale comes from its
      values in the integer network being built: the calibration inputs are run through the
      layers already quantized (integer host ops and exact accumulators ``W_int @ x_int +
      bias``, as every engine computes them; a lossy CIM ADC is not modelled), and a layer's
      output scale is taken from its own dequantized outputs ``s_in * s_w[m] * (acc +
      bias)`` (after its ReLU, if fused), a residual add's from ``s_a a + s_b b``. So the
      scales see what pruning and rounding did to the activations, not the float model's
      (standard PTQ practice; ``secateur compile`` runs it,
      :func:`secateur.gen.compile.ptq.quantize_steps`).
    * :func:`quantize_activations`: ``x_int = sat8(rint(x / scale))``, ``rint`` rounding half
      to even, ``sat8`` clamping to ``[-128, 127]``; :func:`fake_quant` is the same on torch
      tensors with a straight-through gradient (quantization-aware training).
    * Weights (:func:`engine_weights`): one scale per output row (``per_channel``), or one for
      the whole layer; the last engine layer uses one, so that its raw outputs share one scale
      and their argmax is the class. Per engine:

      - ``dense``, ``cim``: int8, ``scale = max|w| / 127`` (1 for an all-zero row),
        ``w_int = clip(rint(w / scale), -127, 127)`` (:func:`int8_weights`; :func:`fake_int8`
        is the same rule in training);
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

      A *structure* (:class:`WeightForm`) fixes what the rule would choose: the seeds of
      ``lfsr``, the offsets of ``permdiag``, the codes and ``alpha`` of ``ternary``. Given one
      (fine-tuning fixed it, or :func:`reconstruct` refitted the kept weights), the rule keeps
      it and only rounds the kept values to int8.
    * **Reconstruction of pruned weights** (``lfsr``, ``permdiag``; :func:`reconstruct`):
      after the mask is chosen, each row's kept weights and its bias are refitted by least
      squares so that the layer, on the inputs the compressed network really gives it,
      reproduces the float layer's pre-activation outputs on the calibration inputs (the
      mask-fixed reconstruction of Optimal Brain Compression, Frantar and Alistarh, NeurIPS
      2022, solved exactly per row). Dropping half of a row's weights leaves the kept ones
      no longer the best weights for that row; refitting them recovers most of what pruning
      lost. A small ridge (:data:`RIDGE` times the mean diagonal of the row's Gram matrix)
      keeps a constant or all-zero input column from making the fit singular.
    * **Bias correction** (:func:`corrected_bias`): rounding, ternarization and pruning shift
      the mean of a layer's outputs (post-ReLU inputs have a large positive mean, so every
      dropped weight moves its row's output by ``w * E[x]``). The shift is measured on the
      calibration inputs, per output row, as the mean of the float layer's pre-activation
      output on the float model's inputs minus the compressed layer's dequantized accumulator
      on the compressed network's inputs, and that mean is the float bias that is quantized
      (empirical bias correction, Nagel et al., "Data-Free Quantization Through Weight
      Equalization and Bias Correction", ICCV 2019). It replaces the model's bias (which it
      contains); a layer without one gets one.
    * Bias: ``bias = rint(b / (s_in * s_w[m]))`` as int64 at the accumulator's scale
      (:func:`quantize_bias`), refused, not clamped, outside the engine's bias range
      (:func:`check_bias_range`).
    * Requantizer of a hidden layer: ``mult[m] / 2**shift ~= s_in * s_w[m] / s_out``
      (:func:`secateur.models.requant.requant_for_channel_scales`), ReLU fused when one
      follows (:func:`layer_requant`).
    * Residual add: ``mult_x / 2**shift ~= s_x / s_out`` for both operands under one shift
      (:func:`residual_add_params`; the arithmetic is :func:`secateur.models.hostops.
      residual_add`).

Quantization given by the model (a QONNX ``Quant`` node, as Brevitas exports it)
    * A ``Quant`` of ``bits`` bits, ``signed``, ``narrow``, zero point 0 and rounding ``ROUND``
      maps ``x`` to the integers ``q = clip(rint(x / scale), lo, hi)`` (:func:`given_integers`;
      ``rint`` rounds half to even, as numpy's ``round`` in qonnx's executor; clipping before
      or after rounding is the same, the bounds being integers) in the range of
      :func:`int_range`, and its output is ``q * scale``.
    * On a weight, ``q`` *are* the engine's integer weights and ``scale`` their scales (one per
      output row, or one for the layer): nothing is re-rounded. ``q`` in ``{-1, 0, 1}`` (a
      2-bit narrow quantizer) is the ternary engine's native form, ``alpha = scale``.
    * On an activation, ``scale`` is the tensor's activation scale instead of a calibrated
      one; the integer network's int8 values then equal ``q`` wherever the requantizer's
      rounding agrees with ``rint`` (its ``mult / 2**shift`` approximates the ratio of scales
      and rounds half up). A range narrower than the int8 the network gives (fewer bits, a
      narrow range, unsigned without a ReLU before) is a host ``clip``
      (:func:`secateur.models.hostops.clip`). Unsigned 8 bits (0..255) does not fit int8 and
      is refused by the importer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .requant import RequantParams, requant_for_channel_scales

__all__ = [
    "PERCENTILE", "SCALE_FLOOR", "DELTAS", "RIDGE", "activation_scale",
    "quantize_activations", "fake_quant", "int8_weights", "fake_int8", "ternary_weights",
    "lfsr_weights", "permdiag_weights", "WeightForm", "engine_weights", "ENGINE_FORMS",
    "reconstruct", "corrected_bias", "quantize_bias", "check_bias_range", "layer_requant",
    "residual_add_params", "int_range", "given_integers",
]

#: The calibration percentile of ``|x|`` (the rule of :func:`activation_scale`).
PERCENTILE = 99.99
#: The smallest percentile an activation scale is computed from (an all-zero tensor).
SCALE_FLOOR = 1e-8
#: Ternary thresholds tried per row, as fractions of ``max|w|``.
DELTAS = tuple(round(0.05 * step, 2) for step in range(1, 19))
#: Ridge of :func:`reconstruct`, relative to the mean diagonal of a row's Gram matrix.
RIDGE = 1e-6


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


class _RoundSTE(torch.autograd.Function):
    """``torch.round`` (half to even, as ``numpy.rint``) with the identity as its gradient."""

    @staticmethod
    def forward(ctx, value):
        return torch.round(value)

    @staticmethod
    def backward(ctx, grad):
        return grad


def fake_quant(x: torch.Tensor, scale: float) -> torch.Tensor:
    """:func:`quantize_activations` in training: ``sat8(rint(x / scale)) * scale`` with a
    straight-through gradient (the rounding passes it unchanged; saturated values get
    none)."""
    return torch.clamp(_RoundSTE.apply(x / scale), -128, 127) * scale


def _int8_codes(w: torch.Tensor, per_channel: bool,
                rounding=torch.round) -> tuple[torch.Tensor, torch.Tensor]:
    """The int8 rule (module docstring) on a torch ``(M, N)`` weight: float codes and the
    ``(M,)`` scales (held constant: no gradient); the one implementation behind
    :func:`int8_weights` and :func:`fake_int8`."""
    magnitude = w.detach().abs().amax(dim=1) if per_channel else \
        w.detach().abs().max().expand(w.shape[0])
    scales = torch.where(magnitude > 0, magnitude / 127.0, torch.ones_like(magnitude))
    return torch.clamp(rounding(w / scales[:, None]), -127, 127), scales


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
    codes, scales = _int8_codes(torch.from_numpy(w), per_channel)
    return codes.numpy().astype(np.int8), scales.numpy().astype(np.float64)


def fake_int8(w: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """:func:`int8_weights` in training: ``scales[:, None] * codes`` of a torch ``(M, N)``
    weight, with a straight-through gradient to ``w`` (the scales are held constant). On a
    float64 weight it is exactly the dequantized result of :func:`int8_weights`."""
    codes, scales = _int8_codes(w, per_channel, _RoundSTE.apply)
    return codes * scales[:, None]


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


def lfsr_weights(w, density: float, per_channel: bool = True, seeds=None) -> dict:
    """LFSR-pruned int8 weights (module docstring).

    Parameters
    ----------
    w : array-like
        Float ``(M, N)``.
    density : float
        Kept fraction of each row, in ``(0, 1]``: ``k = max(1, round(density * N))``.
    per_channel : bool
        One scale per row, else one for the matrix.
    seeds : array-like of int, optional
        The rows' seeds, fixed (a structure); by default each row's is the one keeping the
        most ``|w|``.

    Returns
    -------
    dict
        ``w`` (int8 ``(M, N)``, zero outside each row's mask), ``seeds`` (int64 ``(M,)``),
        ``k`` (0-d int64) and ``scales`` (float64 ``(M,)``).

    Raises
    ------
    ValueError
        If ``density`` is not in ``(0, 1]``, ``w`` is not a finite non-empty matrix, or a
        seed is illegal.
    """
    from .lfsr import best_seeds, check_seeds
    from .lfsr_pruning import lfsr_mask
    w = _check_matrix(w)
    if not (isinstance(density, (int, float)) and 0 < density <= 1):
        raise ValueError(f"density must be in (0, 1], not {density!r}")
    cols = w.shape[1]
    k = max(1, round(density * cols))
    seeds = best_seeds(np.abs(w), k) if seeds is None else check_seeds(seeds, cols)
    if seeds.shape != (w.shape[0],):
        raise ValueError(f"seeds must have shape ({w.shape[0]},), one per row, not "
                         f"{seeds.shape}")
    kept = w * lfsr_mask(cols, k, seeds).numpy()
    codes, scales = int8_weights(kept, per_channel)
    return {"w": codes, "seeds": seeds.astype(np.int64), "k": np.asarray(k, dtype=np.int64),
            "scales": scales}


def permdiag_weights(w, p: int, per_channel: bool = True, offsets=None) -> dict:
    """Permuted-diagonal int8 weights (module docstring), zero padded to whole blocks
    (:func:`secateur.models.permdiag.pad_to_blocks`).

    Parameters
    ----------
    w : array-like
        Float ``(M, N)``.
    p : int
        Block size, ``>= 1``.
    per_channel : bool
        One scale per (padded) row, else one for the matrix.
    offsets : array-like of int, optional
        The blocks' offsets ``(ceil(M/p), ceil(N/p))``, fixed (a structure); by default each
        block's is the one keeping the most energy.

    Returns
    -------
    dict
        ``w`` (int8 ``(ceil(M/p) p, ceil(N/p) p)``), ``p`` (0-d int64), ``scales`` (float64,
        one per padded row) and ``offsets`` (int64, the structure; not a weights npz key).

    Raises
    ------
    ValueError
        If ``p < 1``, ``w`` is not a finite non-empty matrix, or the offsets do not fit.
    """
    from .permdiag import block_grid, pad_to_blocks, project, structure_mask
    w = _check_matrix(w)
    if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 1:
        raise ValueError(f"p must be an integer >= 1, not {p!r}")
    padded = pad_to_blocks(w, p)
    if offsets is None:
        _, offsets = project(padded, p)
    offsets = np.asarray(offsets)
    if offsets.shape != block_grid(padded.shape, p):
        raise ValueError(f"offsets must have shape {block_grid(padded.shape, p)}, one per "
                         f"{p}x{p} block, not {offsets.shape}")
    codes, scales = int8_weights(padded * structure_mask(offsets, p), per_channel)
    return {"w": codes, "p": np.asarray(p, dtype=np.int64), "scales": scales,
            "offsets": offsets.astype(np.int64)}


@dataclass
class WeightForm:
    """A weight in an engine's native form.

    Attributes
    ----------
    weights : dict
        The engine's weights npz keys (``w`` and its structure keys: ``seeds``, ``k``, ``p``).
    scales : numpy.ndarray
        float64, the scale of each row of ``weights["w"]`` (``w ~= scales[:, None] * w``).
    structure : dict
        What fixes the form, to give back to :func:`engine_weights`: ``seeds`` and ``k`` (lfsr),
        ``offsets`` (permdiag), ``codes`` and ``alpha`` (ternary); empty for int8.
    mask : numpy.ndarray or None
        bool, the positions of ``weights["w"]`` whose int8 value is free (lfsr, permdiag:
        the kept ones); None when the form prunes nothing (dense, cim) or its values are not
        int8 (ternary). :func:`reconstruct` refits these.
    """
    weights: dict
    scales: np.ndarray
    structure: dict = field(default_factory=dict)
    mask: np.ndarray | None = None


def _int8_form(w, per_channel, options, structure):
    codes, scales = int8_weights(w, per_channel)
    return WeightForm({"w": codes}, scales)


def _ternary_form(w, per_channel, options, structure):
    if structure:
        codes = np.asarray(structure["codes"])
        if codes.shape != np.shape(w) or not np.isin(codes, (-1, 0, 1)).all():
            raise ValueError(f"ternary codes must be {np.shape(w)} values in {{-1, 0, 1}}")
        alpha = np.broadcast_to(np.asarray(structure["alpha"], dtype=np.float64),
                                (codes.shape[0],)).copy()
        alpha = np.where(alpha > 0, alpha, 1.0)
    else:
        codes, alpha = ternary_weights(w, per_channel, options.get("delta"))
    codes = codes.astype(np.int8)
    return WeightForm({"w": codes}, alpha, {"codes": codes, "alpha": alpha})


def _lfsr_form(w, per_channel, options, structure):
    from .lfsr_pruning import lfsr_mask
    weights = lfsr_weights(w, options["density"], per_channel, structure.get("seeds"))
    if "k" in structure and int(structure["k"]) != int(weights["k"]):
        raise ValueError(f"the structure keeps k = {int(structure['k'])} columns per row; "
                         f"density {options['density']} keeps {int(weights['k'])}")
    scales = weights.pop("scales")
    mask = lfsr_mask(weights["w"].shape[1], int(weights["k"]), weights["seeds"]).numpy()
    return WeightForm(weights, scales, {"seeds": weights["seeds"], "k": weights["k"]}, mask)


def _permdiag_form(w, per_channel, options, structure):
    from .permdiag import structure_mask
    weights = permdiag_weights(w, options["p"], per_channel, structure.get("offsets"))
    scales, offsets = weights.pop("scales"), weights.pop("offsets")
    return WeightForm(weights, scales, {"offsets": offsets},
                      structure_mask(offsets, options["p"]))


#: Engine -> ``form(w, per_channel, options, structure) -> WeightForm``.
ENGINE_FORMS = {
    "dense": _int8_form,
    "cim": _int8_form,
    "ternary": _ternary_form,
    "lfsr": _lfsr_form,
    "permdiag": _permdiag_form,
}


def engine_weights(engine: str, w, per_channel: bool, options: dict,
                   structure: dict | None = None) -> WeightForm:
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
    structure : dict, optional
        A :attr:`WeightForm.structure` to keep instead of choosing one.

    Returns
    -------
    WeightForm
        ``weights["w"]`` may have more rows and columns than ``w`` (permdiag's zero padding).

    Raises
    ------
    ValueError
        If the engine is unknown, or from the engine's rule.
    """
    if engine not in ENGINE_FORMS:
        raise ValueError(f"no quantization rule for the {engine} engine; engines with one: "
                         f"{', '.join(ENGINE_FORMS)}")
    return ENGINE_FORMS[engine](w, per_channel, options, dict(structure or {}))


def reconstruct(x, target, mask, ridge: float = RIDGE) -> tuple[np.ndarray, np.ndarray]:
    """Refit pruned weights (module docstring): per row ``m``, the weights on the kept
    columns ``S = mask[m]`` and a bias minimising ``||x[:, S] w + b - target[:, m]||^2 +
    lambda ||(w, b)||^2``, ``lambda = ridge * mean(diag(G))`` with ``G`` the row's Gram
    matrix of ``[x[:, S], 1]``.

    Parameters
    ----------
    x : array-like
        Float ``(R, N)``: the layer's inputs in the compressed network (dequantized).
    target : array-like
        Float ``(R, M0)``: the float layer's pre-activation outputs, ``M0 <= M`` (rows past
        ``M0``, padding, stay zero).
    mask : array-like
        bool ``(M, N)``, the positions a row may keep.
    ridge : float
        ``>= 0``.

    Returns
    -------
    weight, bias : numpy.ndarray
        float64 ``(M, N)``, zero outside ``mask``, and ``(M,)``.

    Raises
    ------
    ValueError
        If the shapes disagree or a value is not finite.
    """
    x = np.asarray(x, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if x.ndim != 2 or target.ndim != 2 or mask.ndim != 2 or x.shape[0] != target.shape[0] \
            or mask.shape[1] != x.shape[1] or target.shape[1] > mask.shape[0]:
        raise ValueError(f"reconstruct takes x (R, N), target (R, M0) and mask (M, N) with "
                         f"M0 <= M, not {x.shape}, {target.shape} and {mask.shape}")
    if not (np.isfinite(x).all() and np.isfinite(target).all()):
        raise ValueError("reconstruct: an input or target is not finite")
    augmented = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)
    gram = augmented.T @ augmented
    moments = augmented.T @ target
    weight = np.zeros(mask.shape)
    bias = np.zeros(mask.shape[0])
    for row in range(target.shape[1]):
        kept = np.append(np.flatnonzero(mask[row]), x.shape[1])
        system = gram[np.ix_(kept, kept)]
        system = system + ridge * float(np.mean(np.diag(system))) * np.eye(kept.size)
        solution = np.linalg.solve(system, moments[kept, row])
        weight[row, kept[:-1]] = solution[:-1]
        bias[row] = solution[-1]
    return weight, bias


def corrected_bias(target, output) -> np.ndarray:
    """The bias that removes a compressed layer's mean shift (module docstring):
    ``mean(target - output)`` per output row over the calibration rows.

    Parameters
    ----------
    target : array-like
        Float ``(R, M)``: the float layer's pre-activation outputs (its bias included) on
        the float model's inputs.
    output : array-like
        Float ``(R, M)``: the compressed layer's dequantized accumulators, without bias, on
        the compressed network's inputs.

    Raises
    ------
    ValueError
        If the shapes differ or are empty.
    """
    target, output = np.asarray(target, dtype=np.float64), np.asarray(output, dtype=np.float64)
    if target.shape != output.shape or target.ndim != 2 or target.shape[0] == 0:
        raise ValueError(f"corrected_bias takes two (R, M) arrays, R >= 1, not {target.shape} "
                         f"and {output.shape}")
    return (target - output).mean(axis=0)


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


def int_range(bits: int, signed: bool, narrow: bool) -> tuple[int, int]:
    """The integers of a ``bits``-bit QONNX quantizer (qonnx's ``min_int`` and ``max_int``):
    signed ``[-2**(bits-1), 2**(bits-1) - 1]``, narrow ``[-2**(bits-1) + 1, ...]``; unsigned
    ``[0, 2**bits - 1]``, narrow ``[0, 2**bits - 2]``.

    Raises
    ------
    ValueError
        If ``bits`` is not an integer >= 2 (a 1-bit signed quantizer is bipolar, not a range).
    """
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or bits < 2:
        raise ValueError(f"a quantizer's bit width must be an integer >= 2, not {bits!r}")
    bits = int(bits)
    if signed:
        return -(1 << (bits - 1)) + int(bool(narrow)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1 - int(bool(narrow))


def given_integers(x, scale, low: int, high: int, dtype=np.float64) -> np.ndarray:
    """``clip(rint(x / scale), low, high)`` as int64: the integers of a model's quantizer
    (module docstring), ``scale`` broadcast against ``x``, the quotient computed in ``dtype``
    (a model's float32 constants: float32, as qonnx's executor divides them, so that a
    quotient near a half rounds as there).

    Raises
    ------
    ValueError
        If a scale is not finite and > 0, or ``x`` is not finite.
    """
    scale = np.asarray(scale, dtype=dtype)
    x = np.asarray(x, dtype=dtype)
    if scale.size == 0 or not (np.isfinite(scale).all() and (scale > 0).all()):
        raise ValueError("a quantizer's scales must be finite and > 0")
    if not np.isfinite(x).all():
        raise ValueError("a quantized value is not finite")
    return np.clip(np.rint(x / scale), low, high).astype(np.int64)
