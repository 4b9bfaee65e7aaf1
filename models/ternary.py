"""Ternary weights with PE-wise structured sparsity: training, pruning and the integer reference.

The engine these models describe has ``pe`` processing elements, each an add/subtract
adder tree of fan-in ``fan_in``. Weights are ternary codes in ``{-1, 0, +1}`` (int8,
shape ``(M, N)``), activations are int8, and the engine computes exactly::

    y[b, m] = sum_n w[m, n] * x[b, n]

**Groups.** The weight matrix is cut into aligned tiles of ``pe`` consecutive rows by
``fan_in`` consecutive columns: tile ``(r, c)`` holds rows ``r*pe .. r*pe + pe - 1`` and
columns ``c*fan_in .. c*fan_in + fan_in - 1``, cropped to the matrix, so the tiles of the
last row block / column block are partial when ``pe`` does not divide ``M`` or ``fan_in``
does not divide ``N``. The group grid has shape ``(ceil(M / pe), ceil(N / fan_in))``. One
tile is the work of all PEs in one pass, so a tile whose codes are all zero is skipped at
no cost: the speed-up is set by the fraction of all-zero tiles, not by element sparsity.

**Training recipe** (:func:`train_ternary_pruned`): optional float warm-up, then
ternary-aware training (straight-through estimator) with a group-lasso penalty whose
gradient is clipped by Weight Penalty Clipping (:func:`weight_penalty_clip`), then
magnitude pruning of whole tiles to a target fraction, then fine-tuning with the tile
mask frozen.

**Scale convention** (:func:`export_layer`): a ternary layer's float weights are
``alpha * W_t`` with integer codes ``W_t``. With int8 inputs ``x ~= s_x * x_int`` the
float output is ``y ~= alpha * s_x * (W_t @ x_int)``, i.e. ``alpha * s_x`` times the
engine's accumulator, and the int8 output is ``y_int ~= y / s_y``. The exported
requantizer therefore realises ``mult / 2**shift ~= alpha * s_x / s_y``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .common import (
    check_int, check_int8_inputs, check_int8_weights, export_requant, minibatches,
    save_weights_npz,
)
from .requant import RequantParams, check_requant, result_path

__all__ = [
    "DEFAULT_FAN_IN",
    "ternarize", "ternary_codes", "TernaryLinear",
    "group_grid", "group_sizes", "group_norms", "group_lasso_penalty", "group_lasso_grad",
    "group_mask", "expand_group_mask", "apply_group_mask", "zero_group_fraction",
    "prune_layer_groups", "weight_penalty_clip",
    "TrainReport", "train_ternary_pruned",
    "check_weights", "reference", "export_layer", "save_npz",
]

#: Adder-tree fan-in of one PE unless configured otherwise.
DEFAULT_FAN_IN = 64

# Absorbs float error in fraction * count (0.29 * 100 == 28.999999999999996).
_COUNT_EPS = 1e-9


# --------------------------------------------------------------------------- validation

def _check_real(value, name: str, low: float, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, not {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < low or (high is not None and value > high):
        legal = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be in {legal}, not {value}")
    return value


def _check_delta(delta) -> float:
    return _check_real(delta, "delta", 0.0, 1.0)


def _check_weight_tensor(weight, name: str = "weight") -> torch.Tensor:
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, not {type(weight).__name__}")
    if not weight.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, not {weight.dtype}")
    if weight.ndim != 2 or weight.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 2-D (out_features, in_features) tensor, "
                         f"not shape {tuple(weight.shape)}")
    return weight


def _as_matrix(weight, name: str = "weight") -> tuple[torch.Tensor, bool]:
    """A 2-D torch view of ``weight`` and whether it came in as numpy (to convert back)."""
    from_numpy = not isinstance(weight, torch.Tensor)
    if from_numpy:
        array = np.asarray(weight)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"{name} must be numeric, not {array.dtype}")
        weight = torch.from_numpy(np.ascontiguousarray(array))
    if weight.ndim != 2 or weight.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 2-D (M, N) matrix, "
                         f"not shape {tuple(weight.shape)}")
    return weight, from_numpy


def _float(weight: torch.Tensor) -> torch.Tensor:
    return weight if weight.is_floating_point() else weight.to(torch.float64)


# --------------------------------------------------------------------------- ternarization

def _threshold(weight: torch.Tensor, delta: float) -> torch.Tensor:
    return delta * weight.detach().abs().max()


def _codes_and_alpha(weight: torch.Tensor, delta: float) -> tuple[torch.Tensor, torch.Tensor]:
    magnitude = weight.detach().abs()
    threshold = delta * magnitude.max()
    # sign() keeps exact zeros at code 0 even when the threshold is 0 (delta 0 or W == 0).
    codes = torch.sign(weight.detach()) * (magnitude >= threshold)
    selected = codes != 0
    count = selected.sum()
    # An all-zero weight selects nothing: alpha is 0 rather than 0/0.
    alpha = torch.where(count > 0, (magnitude * selected).sum() / count.clamp(min=1),
                        torch.zeros((), dtype=weight.dtype, device=weight.device))
    return codes, alpha


class _TernarizeSTE(torch.autograd.Function):
    """Forward: ``alpha * codes``. Backward: the straight-through estimator.

    The ternary step function has zero gradient almost everywhere, so the incoming
    gradient is handed unchanged to the float shadow weight; that is what lets a weight
    drift across the threshold and change its code.
    """

    @staticmethod
    def forward(ctx, weight, delta):
        codes, alpha = _codes_and_alpha(weight, delta)
        return codes * alpha

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output, None


def ternarize(weight: torch.Tensor, delta: float = 0.05) -> torch.Tensor:
    """Ternarize a float weight matrix, with a straight-through gradient.

    With ``th = delta * max|W|`` and ``alpha`` the mean of ``|w|`` over ``|w| >= th``,
    each weight becomes ``+alpha`` if ``w >= th``, ``-alpha`` if ``w <= -th`` and ``0``
    otherwise (the rule is symmetric, so ``-th`` itself maps to ``-alpha``). An all-zero
    weight gives all zeros (``alpha = 0``). The gradient with respect to ``weight`` is the
    identity (straight-through estimator).

    Parameters
    ----------
    weight : torch.Tensor
        Float tensor of shape ``(out_features, in_features)``.
    delta : float
        Threshold as a fraction of ``max|W|``, in ``[0, 1]``.

    Returns
    -------
    torch.Tensor
        ``alpha * codes``, same shape and dtype as ``weight``.

    Raises
    ------
    TypeError
        If ``weight`` is not a floating-point tensor or ``delta`` is not a real number.
    ValueError
        If ``weight`` is not a non-empty 2-D tensor or ``delta`` is outside ``[0, 1]``.
    """
    _check_weight_tensor(weight)
    return _TernarizeSTE.apply(weight, _check_delta(delta))


def ternary_codes(weight: torch.Tensor, delta: float = 0.05) -> tuple[torch.Tensor, float]:
    """The integer codes and scale of :func:`ternarize`: ``ternarize(W) == alpha * codes``.

    Parameters
    ----------
    weight : torch.Tensor
        Float tensor of shape ``(out_features, in_features)``.
    delta : float
        Threshold as a fraction of ``max|W|``, in ``[0, 1]``.

    Returns
    -------
    codes : torch.Tensor
        int8 tensor of the same shape with values in ``{-1, 0, 1}``.
    alpha : float
        The common magnitude, ``>= 0`` (``0`` for an all-zero weight).

    Raises
    ------
    TypeError
        If ``weight`` is not a floating-point tensor or ``delta`` is not a real number.
    ValueError
        If ``weight`` is not a non-empty 2-D tensor, contains NaN or infinity, or
        ``delta`` is outside ``[0, 1]``.
    """
    _check_weight_tensor(weight)
    delta = _check_delta(delta)
    if not bool(torch.isfinite(weight).all()):
        raise ValueError("weight contains NaN or infinity; it cannot be ternarized")
    codes, alpha = _codes_and_alpha(weight, delta)
    return codes.to(torch.int8), float(alpha)


class TernaryLinear(nn.Module):
    """A drop-in :class:`torch.nn.Linear` whose forward pass uses ternarized weights.

    The float ``weight`` is the shadow weight that the optimizer updates; the forward pass
    computes ``F.linear(x, ternarize(weight * mask, delta), bias)``. ``mask`` is a boolean
    buffer (all ones until :func:`prune_layer_groups` zeroes whole tiles); multiplying by it
    also stops gradients from reviving pruned weights. Set ``ternary = False`` to run the
    layer in float (used for warm-up).

    Parameters
    ----------
    in_features, out_features : int
        Sizes, each ``>= 1``.
    bias : bool
        Add a learnable bias. The ternary engine has no bias input, so a layer meant for
        :func:`export_layer` must be built with ``bias=False``.
    delta : float
        Ternarization threshold as a fraction of ``max|W|``, in ``[0, 1]``.
    device, dtype
        As for :class:`torch.nn.Linear`.

    Raises
    ------
    TypeError, ValueError
        If a size or ``delta`` is not legal.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 delta: float = 0.05, device=None, dtype=None):
        super().__init__()
        self.in_features = check_int(in_features, "in_features")
        self.out_features = check_int(out_features, "out_features")
        self.delta = _check_delta(delta)
        self.ternary = True
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(self.out_features, self.in_features, **factory))
        self.bias = nn.Parameter(torch.empty(self.out_features, **factory)) if bias else None
        self.register_buffer("mask", torch.ones(self.out_features, self.in_features,
                                                dtype=torch.bool, device=device))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Same initialisation as nn.Linear so swapping layers does not change training.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)

    @classmethod
    def from_linear(cls, linear: nn.Linear, delta: float = 0.05) -> "TernaryLinear":
        """A ternary layer whose shadow weight (and bias) are copies of ``linear``'s."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear, not {type(linear).__name__}")
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                    delta=delta, device=linear.weight.device, dtype=linear.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(linear.weight)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer

    def masked_weight(self) -> torch.Tensor:
        """The shadow weight with pruned tiles zeroed (differentiable)."""
        return self.weight * self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.masked_weight()
        if self.ternary:
            weight = ternarize(weight, self.delta)
        return F.linear(x, weight, self.bias)

    def ternary_codes(self) -> tuple[torch.Tensor, float]:
        """``(codes, alpha)`` of the masked shadow weight; see :func:`ternary_codes`."""
        return ternary_codes(self.masked_weight().detach(), self.delta)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, delta={self.delta}, ternary={self.ternary}")


# --------------------------------------------------------------------------- groups

def group_grid(shape, pe: int, fan_in: int = DEFAULT_FAN_IN) -> tuple[int, int]:
    """The group grid ``(ceil(M / pe), ceil(N / fan_in))`` of an ``(M, N)`` matrix.

    Raises
    ------
    TypeError, ValueError
        If ``pe``, ``fan_in`` or a dimension of ``shape`` is not an integer ``>= 1``.
    """
    rows, cols = (check_int(int(dim), name) for dim, name in zip(shape, ("M", "N")))
    pe, fan_in = check_int(pe, "pe"), check_int(fan_in, "fan_in")
    return -(-rows // pe), -(-cols // fan_in)


def group_sizes(shape, pe: int, fan_in: int = DEFAULT_FAN_IN) -> np.ndarray:
    """Number of weights in each tile, shape ``group_grid(shape, pe, fan_in)``.

    Full tiles hold ``pe * fan_in`` weights; tiles of the last row or column block hold
    fewer when the matrix size is not a multiple of the tile size.
    """
    grid_rows, grid_cols = group_grid(shape, pe, fan_in)
    rows, cols = int(shape[0]), int(shape[1])
    row_counts = np.minimum(pe, rows - pe * np.arange(grid_rows))
    col_counts = np.minimum(fan_in, cols - fan_in * np.arange(grid_cols))
    return np.outer(row_counts, col_counts).astype(np.int64)


def _tiles(weight: torch.Tensor, pe: int, fan_in: int) -> torch.Tensor:
    """``weight`` zero-padded to whole tiles, as shape ``(R, pe, C, fan_in)``.

    Zero padding leaves every tile's L2 norm and all-zero test unchanged, so partial edge
    tiles need no special case.
    """
    grid_rows, grid_cols = group_grid(weight.shape, pe, fan_in)
    padded = F.pad(weight, (0, grid_cols * fan_in - weight.shape[1],
                            0, grid_rows * pe - weight.shape[0]))
    return padded.reshape(grid_rows, pe, grid_cols, fan_in)


def _expand(group_values: torch.Tensor, shape, pe: int, fan_in: int) -> torch.Tensor:
    expanded = group_values.repeat_interleave(pe, dim=0).repeat_interleave(fan_in, dim=1)
    return expanded[:shape[0], :shape[1]]


def _group_norms_torch(weight: torch.Tensor, pe: int, fan_in: int) -> torch.Tensor:
    squares = _tiles(_float(weight), pe, fan_in).square().sum(dim=(1, 3))
    # sqrt has an infinite derivative at 0; route zero groups through sqrt(1) and mask,
    # so an all-zero group has the subgradient 0 instead of NaN.
    nonzero = squares > 0
    return torch.where(nonzero, torch.where(nonzero, squares, 1.0).sqrt(), 0.0)


def group_norms(weight, pe: int, fan_in: int = DEFAULT_FAN_IN):
    """L2 norm of every aligned ``pe x fan_in`` tile (differentiable for tensors).

    Parameters
    ----------
    weight : torch.Tensor or numpy.ndarray
        Matrix of shape ``(M, N)``; integer input is treated as float64.
    pe : int
        Rows per tile (number of PEs), ``>= 1``.
    fan_in : int
        Columns per tile (adder-tree fan-in), ``>= 1``.

    Returns
    -------
    torch.Tensor or numpy.ndarray
        Shape ``(ceil(M / pe), ceil(N / fan_in))``, the same kind as ``weight``.

    Raises
    ------
    TypeError
        If ``weight`` is not numeric or ``pe``/``fan_in`` is not an integer.
    ValueError
        If ``weight`` is not a non-empty 2-D matrix or ``pe``/``fan_in`` is below 1.
    """
    weight, from_numpy = _as_matrix(weight)
    norms = _group_norms_torch(weight, pe, fan_in)
    return norms.numpy() if from_numpy else norms


def group_lasso_penalty(weight, pe: int, fan_in: int = DEFAULT_FAN_IN):
    """The group-lasso penalty ``sum_g sqrt(|g|) * ||W_g||_2`` over the aligned tiles.

    ``|g|`` is the number of weights in tile ``g`` (smaller for partial edge tiles), the
    standard weighting that makes groups of different sizes comparable.

    Parameters
    ----------
    weight : torch.Tensor or numpy.ndarray
        Matrix of shape ``(M, N)``.
    pe, fan_in : int
        Tile size, each ``>= 1``.

    Returns
    -------
    torch.Tensor or float
        A differentiable 0-d tensor for tensor input, a float for numpy input.

    Raises
    ------
    TypeError, ValueError
        As for :func:`group_norms`.
    """
    weight, from_numpy = _as_matrix(weight)
    norms = _group_norms_torch(weight, pe, fan_in)
    sizes = torch.from_numpy(group_sizes(weight.shape, pe, fan_in)).to(norms)
    penalty = (sizes.sqrt() * norms).sum()
    return float(penalty) if from_numpy else penalty


def group_lasso_grad(weight: torch.Tensor, pe: int, fan_in: int = DEFAULT_FAN_IN) -> torch.Tensor:
    """Gradient of :func:`group_lasso_penalty`: ``sqrt(|g|) * w / ||W_g||`` (0 in zero groups).

    Closed form, so the training loop needs no second backward pass. Every weight of a
    non-zero group is pulled towards zero in proportion to its share of the group norm.

    Raises
    ------
    TypeError, ValueError
        As for :func:`group_norms`.
    """
    weight, _ = _as_matrix(weight)
    weight = weight.detach()
    norms = _group_norms_torch(weight, pe, fan_in)
    sizes = torch.from_numpy(group_sizes(weight.shape, pe, fan_in)).to(norms)
    factor = torch.where(norms > 0, sizes.sqrt() / torch.where(norms > 0, norms, 1.0), 0.0)
    return _float(weight) * _expand(factor, weight.shape, pe, fan_in)


def _keep_top(primary: np.ndarray, n_keep: int, secondary: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask keeping the ``n_keep`` largest groups (lexicographic, ties by index)."""
    flat_primary = primary.reshape(-1)
    keys = [np.arange(flat_primary.size)]  # last-resort tie-break: earlier tiles win
    if secondary is not None:
        keys.append(-secondary.reshape(-1))
    keys.append(-flat_primary)
    order = np.lexsort(keys)
    keep = np.zeros(flat_primary.size, dtype=bool)
    keep[order[:n_keep]] = True
    return keep.reshape(primary.shape)


def _n_keep(groups: int, keep_fraction: float) -> int:
    return int(math.floor(keep_fraction * groups + _COUNT_EPS))


def group_mask(weight, pe: int, fan_in: int = DEFAULT_FAN_IN, *,
               keep_fraction: float | None = None, threshold: float | None = None):
    """Which tiles to keep, by L2 norm: the largest fraction, or those above a threshold.

    Give exactly one of ``keep_fraction`` and ``threshold``.

    Parameters
    ----------
    weight : torch.Tensor or numpy.ndarray
        Matrix of shape ``(M, N)``.
    pe, fan_in : int
        Tile size, each ``>= 1``.
    keep_fraction : float, optional
        In ``[0, 1]``: keep the ``floor(keep_fraction * G)`` tiles of largest norm out of
        ``G``, so at least ``1 - keep_fraction`` of the tiles are dropped. Ties go to the
        earlier tile in row-major order, which keeps the result deterministic.
    threshold : float, optional
        ``>= 0``: keep the tiles whose norm is strictly greater. The norm is the raw L2
        norm (not divided by the tile size), because a partial tile costs a full pass.

    Returns
    -------
    torch.Tensor or numpy.ndarray
        Boolean, shape ``(ceil(M / pe), ceil(N / fan_in))``, ``True`` = keep.

    Raises
    ------
    TypeError
        As for :func:`group_norms`, or if a criterion is not a real number.
    ValueError
        As for :func:`group_norms`, if not exactly one criterion is given, or if it is out
        of range.
    """
    weight, from_numpy = _as_matrix(weight)
    if (keep_fraction is None) == (threshold is None):
        raise ValueError("give exactly one of keep_fraction and threshold")
    norms = _group_norms_torch(weight.detach(), pe, fan_in).cpu().numpy()
    if keep_fraction is not None:
        keep_fraction = _check_real(keep_fraction, "keep_fraction", 0.0, 1.0)
        keep = _keep_top(norms, _n_keep(norms.size, keep_fraction))
    else:
        keep = norms > _check_real(threshold, "threshold", 0.0)
    return keep if from_numpy else torch.from_numpy(keep).to(weight.device)


def expand_group_mask(group_keep, shape, pe: int, fan_in: int = DEFAULT_FAN_IN):
    """Element mask of shape ``shape`` from a tile mask of shape ``group_grid(shape, ...)``.

    Raises
    ------
    ValueError
        If ``group_keep`` does not have the group-grid shape of ``shape``.
    """
    grid = group_grid(shape, pe, fan_in)
    keep, from_numpy = _as_matrix(group_keep, "group_keep")
    if tuple(keep.shape) != grid:
        raise ValueError(f"group_keep has shape {tuple(keep.shape)}; a {tuple(shape)} matrix "
                         f"in {pe}x{fan_in} tiles needs {grid}")
    mask = _expand(keep.to(torch.bool), shape, pe, fan_in)
    return mask.numpy() if from_numpy else mask


def apply_group_mask(weight, group_keep, pe: int, fan_in: int = DEFAULT_FAN_IN):
    """``weight`` with every dropped tile zeroed (a new array/tensor; same kind and dtype).

    Raises
    ------
    TypeError, ValueError
        As for :func:`group_norms` and :func:`expand_group_mask`.
    """
    matrix, from_numpy = _as_matrix(weight)
    mask = expand_group_mask(group_keep, matrix.shape, pe, fan_in)
    mask = torch.as_tensor(mask, device=matrix.device)
    masked = torch.where(mask, matrix, torch.zeros((), dtype=matrix.dtype, device=matrix.device))
    return masked.numpy() if from_numpy else masked


def zero_group_fraction(weights, pe: int, fan_in: int = DEFAULT_FAN_IN) -> float:
    """Fraction of tiles whose entries are all zero, i.e. tiles the engine skips.

    Parameters
    ----------
    weights : torch.Tensor or numpy.ndarray
        Matrix of shape ``(M, N)``, normally the int8 ternary codes.
    pe, fan_in : int
        Tile size, each ``>= 1``.

    Raises
    ------
    TypeError, ValueError
        As for :func:`group_norms`.
    """
    weights, _ = _as_matrix(weights, "weights")
    nonzero = _tiles((weights != 0).to(torch.uint8), pe, fan_in).amax(dim=(1, 3))
    return float((nonzero == 0).double().mean())


def prune_layer_groups(layer: TernaryLinear, pe: int, fan_in: int = DEFAULT_FAN_IN, *,
                       zero_fraction: float) -> torch.Tensor:
    """Zero whole tiles of a :class:`TernaryLinear` so at least ``zero_fraction`` are empty.

    The ``ceil(zero_fraction * G)`` tiles dropped are those that matter least *to the
    ternary forward pass*: ranked by the number of non-zero ternary codes (every surviving
    code weighs ``alpha``, whatever its float magnitude), ties broken by the shadow weight's
    L2 norm, then by position. Tiles whose codes are already all zero therefore go first,
    for free. The layer's ``mask`` is updated (previously pruned tiles stay pruned) and the
    shadow weight is zeroed in place.

    Returns
    -------
    torch.Tensor
        The boolean tile mask, ``True`` = kept.

    Raises
    ------
    TypeError
        If ``layer`` is not a :class:`TernaryLinear`.
    ValueError
        If ``zero_fraction`` is outside ``[0, 1]`` or the tile size is illegal.
    """
    if not isinstance(layer, TernaryLinear):
        raise TypeError(f"layer must be a TernaryLinear, not {type(layer).__name__}")
    zero_fraction = _check_real(zero_fraction, "zero_fraction", 0.0, 1.0)
    with torch.no_grad():
        shadow = layer.masked_weight().detach()
        codes, _ = layer.ternary_codes()
        code_counts = _tiles((codes != 0).to(torch.float64), pe, fan_in).sum(dim=(1, 3))
        norms = _group_norms_torch(shadow, pe, fan_in)
        groups = code_counts.numel()
        keep = _keep_top(code_counts.cpu().numpy(), _n_keep(groups, 1.0 - zero_fraction),
                         norms.cpu().numpy())
        keep = torch.from_numpy(keep).to(layer.mask.device)
        layer.mask &= _expand(keep, shadow.shape, pe, fan_in)
        layer.weight.mul_(layer.mask)
    return keep


# --------------------------------------------------------------------------- WPC

def weight_penalty_clip(reg_grad: torch.Tensor, weight: torch.Tensor, threshold, step: float,
                        margin: float = 0.0) -> torch.Tensor:
    """Weight Penalty Clipping: limit a shrinking penalty so it never un-ternarizes a weight.

    The group-lasso gradient pulls every weight of a non-zero group towards zero, so it
    drags useful weights under the ternary threshold, where they silently become 0. WPC
    clips, element by element, the part of the regularization gradient that shrinks
    ``|w|``, so that the regularization step ``w <- w - step * g`` stops at a floor:

    * ``|w| >= threshold`` (a weight with a non-zero code): the floor is
      ``(1 + margin) * threshold``. The weight may be shrunk *down to* the floor, never
      below, and a weight already between ``threshold`` and the floor ("at or near" the
      threshold) gets no regularization gradient at all.
    * ``|w| < threshold`` (a weight that is code 0 anyway): the floor is 0, so the penalty
      keeps shrinking it towards zero, which helps empty its group, but cannot overshoot
      through zero and flip its sign.

    Formally, with ``s = sign(w)`` and the shrink rate ``r = s * g``::

        g' = s * min(r, max(|w| - floor, 0) / step)   where r > 0
        g' = g                                         elsewhere (growth, or w == 0)

    Components that grow ``|w|`` pass unchanged; the group-lasso gradient never has them.
    Because the clipped step only shrinks magnitudes, ``max|W|`` and therefore the
    threshold ``delta * max|W|`` can only fall, so a weight that was at or above the
    threshold before the step is still at or above it after: the regularization step alone
    never turns a non-zero code into 0.

    Parameters
    ----------
    reg_grad : torch.Tensor
        The regularization gradient (including its strength ``lambda``), same shape as
        ``weight``.
    weight : torch.Tensor
        The float shadow weight before the step.
    threshold : float or torch.Tensor
        The ternary threshold ``delta * max|W|`` of ``weight``, ``>= 0``.
    step : float
        Learning rate of the regularization step, ``> 0``.
    margin : float
        Guard band above the threshold as a fraction of it, ``>= 0``.

    Returns
    -------
    torch.Tensor
        The clipped gradient.

    Raises
    ------
    TypeError
        If a tensor argument is not a tensor or a scalar is not a real number.
    ValueError
        If shapes differ, ``threshold < 0``, ``step <= 0`` or ``margin < 0``.
    """
    for name, tensor in (("reg_grad", reg_grad), ("weight", weight)):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, not {type(tensor).__name__}")
    if reg_grad.shape != weight.shape:
        raise ValueError(f"reg_grad has shape {tuple(reg_grad.shape)} but weight has "
                         f"{tuple(weight.shape)}")
    if isinstance(threshold, torch.Tensor) and threshold.numel() == 1:
        threshold = float(threshold)
    threshold = _check_real(threshold, "threshold", 0.0)
    step = _check_real(step, "step", 0.0)
    if step == 0.0:
        raise ValueError("step must be > 0, not 0.0")
    margin = _check_real(margin, "margin", 0.0)
    weight = weight.detach()
    magnitude = weight.abs()
    sign = torch.sign(weight)
    floor = torch.where(magnitude >= threshold, (1.0 + margin) * threshold, 0.0)
    room = (magnitude - floor).clamp(min=0.0)
    shrink = sign * reg_grad
    clipped = sign * torch.minimum(shrink, room / step)
    return torch.where(shrink > 0, clipped, reg_grad)


# --------------------------------------------------------------------------- training

@dataclass
class TrainReport:
    """What :func:`train_ternary_pruned` did.

    Attributes
    ----------
    history : dict
        Mean training loss of every epoch, per phase: ``"warmup"``, ``"penalty"``,
        ``"finetune"``.
    group_keep : list of torch.Tensor
        Per :class:`TernaryLinear` (in ``model.modules()`` order), the boolean tile mask.
    zero_group_fraction : list of float
        Per layer, the fraction of all-zero tiles of the final ternary codes.
    final_loss : float
        Loss of the final model on the whole training set, in eval mode.
    """

    history: dict = field(default_factory=lambda: {"warmup": [], "penalty": [], "finetune": []})
    group_keep: list = field(default_factory=list)
    zero_group_fraction: list = field(default_factory=list)
    final_loss: float = float("nan")


def _default_loss(targets: torch.Tensor) -> Callable:
    # Integer labels mean classification; float targets mean regression.
    return F.mse_loss if targets.is_floating_point() else F.cross_entropy


def _run_epoch(model, inputs, targets, loss_fn, optimizer, batch_size, generator,
               after_step: Callable | None) -> float:
    total, count = 0.0, 0
    for index in minibatches(inputs.shape[0], batch_size, generator):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(inputs[index]), targets[index])
        loss.backward()
        optimizer.step()
        if after_step is not None:
            after_step()
        total += float(loss.detach()) * index.numel()
        count += index.numel()
    return total / count


def train_ternary_pruned(model: nn.Module, data, *, pe: int, fan_in: int = DEFAULT_FAN_IN,
                         lambda_group: float = 0.1, target_zero_groups: float = 0.5,
                         epochs: int = 20, seed: int = 0, warmup_epochs: int = 0,
                         finetune_epochs: int | None = None, lr: float = 1e-2,
                         batch_size: int = 64, wpc: bool = True, wpc_margin: float = 0.1,
                         loss_fn: Callable | None = None,
                         progress: Callable | None = None) -> TrainReport:
    """Train ``model``'s :class:`TernaryLinear` layers to ternary codes with empty tiles.

    Phases, each with a fresh Adam optimizer over all of ``model``'s parameters:

    1. ``warmup_epochs`` of float training (ternarization switched off).
    2. ``epochs`` of ternary-aware training (straight-through estimator). After every
       optimizer step each ternary layer also takes a decoupled group-lasso step (as
       AdamW decouples weight decay): ``w <- w - lr * g`` with
       ``g = lambda_group * group_lasso_grad(w)``, clipped by
       :func:`weight_penalty_clip` at the layer's current threshold when ``wpc`` is set.
       Decoupling keeps the penalty out of Adam's normalisation, so the step really is
       ``lr * g`` and WPC's no-crossing guarantee holds.
    3. :func:`prune_layer_groups` on every ternary layer to ``target_zero_groups``.
    4. ``finetune_epochs`` (default ``epochs``) of ternary-aware training, no penalty, the
       tile masks frozen (pruned weights get no gradient and are re-zeroed every step).

    Everything random (batch order, dropout) is drawn from a forked RNG seeded with
    ``seed``, so a run is reproducible from the model's initial state and ``seed``, and the
    caller's global RNG state is untouched.

    Parameters
    ----------
    model : torch.nn.Module
        A :class:`TernaryLinear` or any module containing them (e.g. an MLP of
        ``TernaryLinear`` and activations). Other parameters train normally.
    data : tuple of torch.Tensor
        ``(inputs, targets)`` with the same first dimension ``>= 1``.
    pe, fan_in : int
        Tile size, each ``>= 1``.
    lambda_group : float
        Group-lasso strength, ``>= 0`` (0 disables the penalty).
    target_zero_groups : float
        Fraction of tiles of every ternary layer to prune, in ``[0, 1]``.
    epochs, warmup_epochs, finetune_epochs : int
        Phase lengths, each ``>= 0``.
    seed : int
        Seed of the training RNG, ``>= 0``.
    lr : float
        Adam learning rate, also the group-lasso step size, ``> 0``.
    batch_size : int
        ``>= 1``.
    wpc : bool
        Clip the group-lasso gradient with Weight Penalty Clipping.
    wpc_margin : float
        Guard band of WPC above the threshold, ``>= 0``.
    loss_fn : callable, optional
        ``loss_fn(outputs, targets)``; default cross-entropy for integer targets, mean
        squared error for float targets.
    progress : callable, optional
        Called with 1 after every epoch (of every phase).

    Returns
    -------
    TrainReport

    Raises
    ------
    TypeError
        If ``model`` is not a module, ``data`` is not a pair of tensors, or a scalar has
        the wrong type.
    ValueError
        If ``model`` has no :class:`TernaryLinear`, the data are empty or mismatched, or a
        scalar is out of range.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    layers = [module for module in model.modules() if isinstance(module, TernaryLinear)]
    if not layers:
        raise ValueError("model contains no TernaryLinear layer to ternarize and prune")
    if (not isinstance(data, (tuple, list)) or len(data) != 2
            or not all(isinstance(tensor, torch.Tensor) for tensor in data)):
        raise TypeError("data must be a pair (inputs, targets) of torch tensors")
    inputs, targets = data
    if inputs.ndim == 0 or inputs.shape[0] == 0 or targets.ndim == 0 \
            or targets.shape[0] != inputs.shape[0]:
        raise ValueError(f"data must hold the same number (>= 1) of inputs and targets, not "
                         f"shapes {tuple(inputs.shape)} and {tuple(targets.shape)}")
    pe, fan_in = check_int(pe, "pe"), check_int(fan_in, "fan_in")
    lambda_group = _check_real(lambda_group, "lambda_group", 0.0)
    target_zero_groups = _check_real(target_zero_groups, "target_zero_groups", 0.0, 1.0)
    epochs = check_int(epochs, "epochs", 0)
    warmup_epochs = check_int(warmup_epochs, "warmup_epochs", 0)
    finetune_epochs = epochs if finetune_epochs is None else \
        check_int(finetune_epochs, "finetune_epochs", 0)
    seed = check_int(seed, "seed", 0)
    lr = _check_real(lr, "lr", 0.0)
    if lr == 0.0:
        raise ValueError("lr must be > 0, not 0.0")
    batch_size = check_int(batch_size, "batch_size")
    wpc_margin = _check_real(wpc_margin, "wpc_margin", 0.0)
    loss_fn = loss_fn if loss_fn is not None else _default_loss(targets)

    def penalty_step():
        with torch.no_grad():
            for layer in layers:
                weight = layer.weight
                grad = lambda_group * group_lasso_grad(weight * layer.mask, pe, fan_in)
                if wpc:
                    threshold = layer.delta * float((weight * layer.mask).abs().max())
                    grad = weight_penalty_clip(grad, weight, threshold, lr, wpc_margin)
                weight.sub_(lr * grad)

    def reapply_masks():
        with torch.no_grad():
            for layer in layers:
                layer.weight.mul_(layer.mask)

    def set_ternary(enabled: bool):
        for layer in layers:
            layer.ternary = enabled

    report = TrainReport()
    was_training = model.training
    previous_modes = [layer.ternary for layer in layers]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        model.train()
        phases = [
            ("warmup", warmup_epochs, False, None),
            ("penalty", epochs, True, penalty_step if lambda_group > 0 else None),
        ]
        for name, count, ternary, after_step in phases:
            set_ternary(ternary)
            optimizer = torch.optim.Adam(model.parameters(), lr=lr)
            for _ in range(count):
                report.history[name].append(_run_epoch(model, inputs, targets, loss_fn,
                                                       optimizer, batch_size, generator,
                                                       after_step))
                if progress is not None:
                    progress(1)
        report.group_keep = [prune_layer_groups(layer, pe, fan_in,
                                                zero_fraction=target_zero_groups)
                             for layer in layers]
        set_ternary(True)
        # Fresh optimizer: Adam's momentum from before pruning would push pruned weights.
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        for _ in range(finetune_epochs):
            report.history["finetune"].append(_run_epoch(model, inputs, targets, loss_fn,
                                                         optimizer, batch_size, generator,
                                                         reapply_masks))
            if progress is not None:
                progress(1)
        model.eval()
        with torch.no_grad():
            report.final_loss = float(loss_fn(model(inputs), targets))
    model.train(was_training)
    for layer, mode in zip(layers, previous_modes):
        layer.ternary = mode
    report.zero_group_fraction = [zero_group_fraction(layer.ternary_codes()[0], pe, fan_in)
                                  for layer in layers]
    return report


# --------------------------------------------------------------------------- integer reference

def check_weights(w_int8) -> np.ndarray:
    """Check a ternary weight matrix: int8, 2-D ``(M, N)`` with ``M, N >= 1``, values in {-1, 0, 1}.

    The one statement of the ternary engine's weight structure, used by :func:`reference` and
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
        If it is not a non-empty 2-D matrix, or a value is outside {-1, 0, 1} (naming the
        first offending row and column).
    """
    w = check_int8_weights(w_int8, "int8 ternary codes")
    bad = np.argwhere((w < -1) | (w > 1))
    if bad.size:
        row, col = bad[0]
        raise ValueError(f"w must hold ternary codes in {{-1, 0, 1}}; w[{row}, {col}] = "
                         f"{int(w[row, col])} ({len(bad)} values out of range)")
    return w


def reference(w_int8, x_int8, requant: RequantParams | None = None,
              bias=None) -> np.ndarray:
    """Bit-exact output of the ternary adder-tree engine.

    Computes ``acc[b, m] = sum_n w[m, n] * x[b, n]`` exactly in int64 (``|acc| <= 128 * N``)
    and, when ``requant`` is given, requantizes it with
    :func:`secateur.models.requant.requantize`.

    Parameters
    ----------
    w_int8 : array-like
        int8 ternary codes, shape ``(M, N)``, values in ``{-1, 0, 1}``.
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
        If a shape is wrong, the inner dimensions differ, a weight is not in
        ``{-1, 0, 1}``, or a per-channel ``mult`` does not have ``M`` entries.
    """
    w = check_weights(w_int8)
    x = check_int8_inputs(x_int8, w.shape[1])
    check_requant(requant)
    # Integer matmul in numpy is exact (no BLAS); int64 cannot overflow at |acc| <= 128 * N.
    acc = x.astype(np.int64) @ w.astype(np.int64).T
    return result_path(acc, requant, bias)


# --------------------------------------------------------------------------- export

def export_layer(layer: TernaryLinear, pe: int, fan_in: int = DEFAULT_FAN_IN, *,
                 input_scale: float | None = None, output_scale: float | None = None,
                 relu: bool = False) -> dict:
    """The engine's weights dict of a trained :class:`TernaryLinear`.

    Scale convention: inputs are ``x ~= input_scale * x_int``, outputs are
    ``y ~= output_scale * y_int``, and the layer computes ``y ~= alpha * W_t @ x``, so
    ``y_int ~= (alpha * input_scale / output_scale) * acc`` with ``acc = W_t @ x_int``
    the engine's accumulator. The requantizer is the ``mult / 2**shift`` closest to that
    ratio with ``mult`` in 16 signed bits and the largest possible ``shift`` (at most 47).

    Parameters
    ----------
    layer : TernaryLinear
        The trained layer, without a bias (the engine has no bias input).
    pe, fan_in : int
        The engine's tile size, each ``>= 1``; checked so an export is for a real engine.
    input_scale, output_scale : float, optional
        Both ``> 0`` to add ``mult``/``shift``/``relu``, or both ``None`` for ``w`` only.
    relu : bool
        The requantizer's ReLU flag.

    Returns
    -------
    dict
        ``{"w": int8 (M, N) codes}``, plus ``"mult"`` (0-d int64), ``"shift"`` (0-d int64)
        and ``"relu"`` (0-d bool) when scales are given: the keys of a weights ``.npz``.

    Raises
    ------
    TypeError
        If ``layer`` is not a TernaryLinear, a scale is not a real number or ``relu`` not a
        bool.
    ValueError
        If the layer has a non-zero bias, only one scale is given, a scale is not finite
        and positive, the tile size is illegal, or the scale ratio needs a multiplier above
        ``2**15 - 1`` (:func:`secateur.models.common.export_requant`).
    """
    if not isinstance(layer, TernaryLinear):
        raise TypeError(f"layer must be a TernaryLinear, not {type(layer).__name__}")
    check_int(pe, "pe"), check_int(fan_in, "fan_in")
    if layer.bias is not None and bool((layer.bias != 0).any()):
        raise ValueError("layer has a non-zero bias, but the ternary engine has no bias "
                         "input; train it as TernaryLinear(..., bias=False)")
    codes, alpha = layer.ternary_codes()
    weights = {"w": codes.cpu().numpy().astype(np.int8)}
    weights.update(export_requant(alpha, input_scale, output_scale, relu))
    return weights


def save_npz(path, weights: dict) -> Path:
    """Write an engine weights dict (as from :func:`export_layer`) to an ``.npz`` file.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; numpy appends ``.npz`` if it is missing.
    weights : dict
        ``"w"`` (int8 ternary codes, 2-D) and optionally all of ``"mult"``, ``"shift"``,
        ``"relu"`` (validated as :class:`RequantParams`, per-layer or ``M`` per-channel).

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    TypeError
        If ``weights`` is not a mapping, ``w`` is not int8, or requant values have bad
        types.
    ValueError
        If keys are missing or unknown, ``w`` is not ternary, or requant values are out of
        range.
    """
    return save_weights_npz(path, weights, ("w",), _checked_codes)


def _checked_codes(weights) -> dict:
    w = np.asarray(weights["w"])
    if w.dtype != np.int8:
        raise TypeError(f"weights['w'] must be int8, not {w.dtype}")
    if w.ndim != 2 or w.size == 0 or ((w < -1) | (w > 1)).any():
        raise ValueError("weights['w'] must be a non-empty 2-D matrix of codes in {-1, 0, 1}")
    return {"w": w}
