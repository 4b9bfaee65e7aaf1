"""What the golden models share: argument checks, the int8 operands of ``reference``, the
requantizer keys of an export, the weights ``.npz`` writer and the shuffled mini-batches of
the training loops.

Each engine module (:mod:`~secateur.models.dense`, :mod:`~secateur.models.ternary`,
:mod:`~secateur.models.lfsr`, :mod:`~secateur.models.permdiag`, :mod:`~secateur.models.cim`)
states its own weight structure; what does not depend on the structure is written here once,
so every engine words its errors the same way.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

import numpy as np

if TYPE_CHECKING:  # imported where used: the CLI starts without torch
    import torch

from .requant import (
    RequantParams, requant_for_channel_scales, requant_for_scale,
)

__all__ = [
    "REQUANT_KEYS", "check_int", "check_int8_weights", "check_int8_inputs", "export_requant",
    "save_weights_npz", "minibatches",
]

#: The optional requantizer keys of a weights ``.npz`` (:mod:`secateur.models.requant`).
REQUANT_KEYS = ("mult", "shift", "relu")


def check_int(value, name: str, minimum: int = 1, maximum: int | None = None) -> int:
    """Validate an integer argument in ``[minimum, maximum]`` (no upper bound if ``None``).

    A bool is not an integer here (``pe=True`` is always a mistake); numpy integers are.

    Parameters
    ----------
    value
        The argument.
    name : str
        Its name in the messages, e.g. ``"pe"`` or ``"k (kept columns per row)"``.
    minimum, maximum : int
        The legal range.

    Returns
    -------
    int
        ``value`` as a Python int.

    Raises
    ------
    TypeError
        If ``value`` is not an integer: "<name> must be an integer >= <minimum>, not ..."
        (or "... an integer in [<minimum>, <maximum>] ...").
    ValueError
        If it is out of range, worded the same way.
    """
    legal = f"in [{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer {legal}, not {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be an integer {legal}, not {value}")
    return int(value)


def check_int8_weights(w_int8, kind: str = "an int8 matrix") -> np.ndarray:
    """Check the common part of every engine's weights: an int8 ``(M, N)`` matrix, ``M, N >= 1``.

    Parameters
    ----------
    w_int8 : array-like
        The weight matrix ``w``.
    kind : str
        What ``w`` must be, in the type error ("w must be <kind>, not int16"), e.g.
        ``"int8 ternary codes"``.

    Returns
    -------
    numpy.ndarray
        ``np.asarray(w_int8)``, not copied.

    Raises
    ------
    TypeError
        "w must be <kind>, not <dtype>" for any dtype but int8.
    ValueError
        "w must be a 2-D (M, N) matrix with M, N >= 1, not shape ..." for any other shape.
    """
    w = np.asarray(w_int8)
    if w.dtype != np.int8:
        raise TypeError(f"w must be {kind}, not {w.dtype}")
    if w.ndim != 2 or w.shape[0] == 0 or w.shape[1] == 0:
        raise ValueError(f"w must be a 2-D (M, N) matrix with M, N >= 1, not shape {w.shape}")
    return w


def check_int8_inputs(x_int8, cols: int) -> np.ndarray:
    """Check the activations of a ``reference``: int8, shape ``(B, cols)``.

    Parameters
    ----------
    x_int8 : array-like
        The batch of input vectors.
    cols : int
        ``N``, the columns of the layer's ``w``.

    Returns
    -------
    numpy.ndarray
        ``np.asarray(x_int8)``, not copied.

    Raises
    ------
    TypeError
        "x must be int8 activations, not <dtype>".
    ValueError
        "x must be a 2-D (B, N) batch of vectors, ..." or, for vectors of the wrong length,
        "x has <n> features per vector but w has N = <cols> columns; they must match".
    """
    x = np.asarray(x_int8)
    if x.dtype != np.int8:
        raise TypeError(f"x must be int8 activations, not {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"x must be a 2-D (B, N) batch of vectors, not shape {x.shape}")
    if x.shape[1] != cols:
        raise ValueError(f"x has {x.shape[1]} features per vector but w has N = {cols} "
                         f"columns; they must match")
    return x


def export_requant(weight_scale, input_scale, output_scale, relu) -> dict:
    """The requantizer keys of an exported layer: ``{}`` without scales, else ``mult``,
    ``shift`` and ``relu`` realising ``mult / 2**shift ~= weight_scale * input_scale /
    output_scale``.

    The scale convention of every export: inputs ``x ~= input_scale * x_int``, weights
    ``w ~= weight_scale * w_int`` and outputs ``y ~= output_scale * y_int``, so
    ``y_int ~= (weight_scale * input_scale / output_scale) * acc``.

    Parameters
    ----------
    weight_scale : float or numpy.ndarray
        One scale for the layer (:func:`~secateur.models.requant.requant_for_scale`, 0-d
        ``mult``) or one per output row (:func:`~secateur.models.requant.
        requant_for_channel_scales`, ``(M,)`` ``mult``).
    input_scale, output_scale : float or None
        Both finite and ``> 0``, or both ``None`` (no requantizer).
    relu : bool
        The requantizer's ReLU flag.

    Returns
    -------
    dict
        ``{}`` or :meth:`RequantParams.to_npz`.

    Raises
    ------
    TypeError
        If a scale is not a real number or ``relu`` is not a bool.
    ValueError
        If only one scale is given, a scale is not finite and positive, or the ratio needs a
        multiplier above ``2**15 - 1``.
    """
    if (input_scale is None) != (output_scale is None):
        raise ValueError("give both input_scale and output_scale, or neither")
    if input_scale is None:
        return {}
    for name, value in (("input_scale", input_scale), ("output_scale", output_scale)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a real number, not {value!r}")
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be finite and > 0, not {value}")
    if not isinstance(relu, (bool, np.bool_)):
        raise TypeError(f"relu must be a bool, not {relu!r}")
    ratio = weight_scale * float(input_scale) / float(output_scale)
    if np.ndim(weight_scale) == 0:
        params = requant_for_scale(ratio, bool(relu))
    else:
        params = requant_for_channel_scales(ratio, bool(relu))
    return params.to_npz()


def save_weights_npz(path, weights, required: tuple[str, ...],
                     structure: Callable[[Mapping], dict]) -> Path:
    """Check an engine weights dict and write it to an ``.npz`` file.

    In order: ``weights`` is a mapping of the ``required`` keys and optionally all of
    :data:`REQUANT_KEYS`, nothing else; ``structure(weights)`` checks the engine's own keys
    and returns their arrays (``"w"`` among them); the requantizer keys are checked as
    :class:`RequantParams` against the rows of ``w``.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; ``.npz`` is appended if it is missing.
    weights : mapping
        The engine weights dict.
    required : tuple of str
        The engine's keys, ``"w"`` first; the error messages list them in this order.
    structure : callable
        ``structure(weights) -> dict`` of the arrays to save for the required keys; raises
        on a malformed layer.

    Returns
    -------
    pathlib.Path
        ``path`` as written, ``.npz`` suffix included.

    Raises
    ------
    TypeError
        "weights must be a mapping, ..."; or from ``structure`` or
        :class:`RequantParams`.
    ValueError
        "weights has unknown keys [...]; allowed: ..." or "weights lacks [...]"; or from
        ``structure`` or :class:`RequantParams` (a requantizer key alone, a per-channel
        ``mult`` whose length is not the rows of ``w``).
    """
    if not isinstance(weights, Mapping):
        raise TypeError(f"weights must be a mapping, not {type(weights).__name__}")
    allowed = tuple(required) + REQUANT_KEYS
    unknown = sorted(set(weights) - set(allowed))
    if unknown:
        raise ValueError(f"weights has unknown keys {unknown}; allowed: {', '.join(allowed)}")
    missing = sorted(set(required) - set(weights))
    if missing:
        raise ValueError(f"weights lacks {missing}")
    arrays = dict(structure(weights))
    params = RequantParams.from_npz(weights)
    if params is not None:
        params.mult_per_channel(arrays["w"].shape[0])
        arrays.update(params.to_npz())
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    np.savez(path, **arrays)
    return path


def minibatches(count: int, batch_size: int, generator: torch.Generator):
    """The index tensors of one epoch's mini-batches: a fresh permutation of ``range(count)``
    drawn from ``generator`` (when iteration starts), cut into runs of ``batch_size`` (the
    last one shorter if ``batch_size`` does not divide ``count``).

    Parameters
    ----------
    count : int
        Training examples.
    batch_size : int
        ``>= 1``.
    generator : torch.Generator
        The training loop's shuffling generator.

    Yields
    ------
    torch.Tensor
        int64 indices of one batch.
    """
    import torch

    order = torch.randperm(count, generator=generator)
    for start in range(0, count, batch_size):
        yield order[start:start + batch_size]
