"""LFSR pruning in torch: the pruning method, gradual pruning with fine-tuning, int8 export.

The mask convention these implement, the seed choice and the integer reference are
:mod:`secateur.models.lfsr`, which imports without torch: the generators, the engine's layer
loader and ``secateur mask`` need only the convention, and importing torch would add seconds
to their start-up. What needs torch lives here.

:class:`LFSRPruning` is a :class:`torch.nn.utils.prune.BasePruningMethod`: it prunes a Linear
weight ``(M, N)`` or a Conv weight ``(O, C, kh, kw)`` as the im2col matrix ``(O, C*kh*kw)``
(row = output channel, columns in :func:`torch.nn.functional.unfold` order;
:func:`prunable_matrix_shape`). Unless seeds are given, each row's seed is the one whose ``k``
kept positions carry the largest total importance (``|w|`` by default,
:func:`secateur.models.lfsr.best_seeds`). :func:`train_lfsr_pruned` prunes gradually to the
target ``k`` with fine-tuning, and :func:`quantize_layer` exports the int8 weights and
requantizer (written with :func:`secateur.models.lfsr.save_npz`).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from .common import check_int, export_requant, minibatches
from .lfsr import best_seeds, check_k, check_n, check_seeds, check_weights, mask_indices

__all__ = [
    "prunable_matrix_shape", "lfsr_mask", "LFSRPruning", "lfsr_prune", "lfsr_pruning_of",
    "k_schedule", "TrainReport", "train_lfsr_pruned", "quantize_layer",
]


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


def lfsr_mask(n, k, seeds, *, device=None) -> torch.Tensor:
    """The boolean keep-mask ``(rows, n)`` of :func:`~secateur.models.lfsr.mask_indices`, as a
    torch tensor.

    Raises
    ------
    TypeError, ValueError
        As :func:`~secateur.models.lfsr.mask_indices`.
    """
    indices = mask_indices(n, k, seeds)
    mask = torch.zeros((indices.shape[0], n), dtype=torch.bool, device=device)
    mask.scatter_(1, torch.from_numpy(indices).to(device), True)
    return mask


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
        One seed per row in ``[1, columns]``; by default each row gets
        :func:`~secateur.models.lfsr.best_seeds` of the importance scores (``|weight|``,
        masked by any earlier pruning).

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
            seeds = best_seeds(scores.to(torch.float64).cpu().numpy(), k)
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
    stage the layer's seeds are re-chosen (:func:`~secateur.models.lfsr.best_seeds`) for the
    new ``k`` from the weights that survived so far (pruned weights count as zero), the new
    mask replaces the old one, and the model is fine-tuned for ``epochs_per_stage`` epochs
    with the mask applied; then ``final_epochs`` more. A position that re-enters a mask
    starts from zero. The layers stay pruned (``torch.nn.utils.prune`` re-parametrization)
    for export with :func:`quantize_layer`.

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
    (:func:`~secateur.models.requant.requant_for_channel_scales`).

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
