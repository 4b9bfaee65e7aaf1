"""Host operations: what runs on the host between engine layers, as integer operations, and the
integer network that strings them together with the engine layers. Part of the golden model of
a compiled network (``secateur compile``): the RTL run and the golden run call the same code,
so they see the same glue.

Every tensor is NCHW (images) or ``(B, F)`` (vectors), int8 with one scale per tensor
(``x ~= scale * x_int``, zero point 0), except the logits, which are the last engine layer's
raw ``acc + bias`` (int64).

The operations, bit for bit
    * :func:`im2col`: the ``kh x kw`` windows of an image at stride ``(sh, sw)`` and padding
      ``(top, left, bottom, right)`` (zeros, which are real zeros at zero point 0) become the
      rows of a ``(B * OH * OW, C * kh * kw)`` matrix, in ``F.unfold``'s column order
      (channel-major, then kernel row, then kernel column) and row order ``(b, oy, ox)``;
      ``OH = (H + top + bottom - kh) // sh + 1``, likewise ``OW``. A convolution is then one
      engine layer of ``C * kh * kw`` columns, and :func:`rows_to_image` turns its
      ``(B * OH * OW, O)`` outputs back into ``(B, O, OH, OW)``.
    * :func:`max_pool`: the largest value of each window; padding holds the smallest value of
      the dtype (-128 for int8), which no window can select over a real element, since every
      window holds at least one (each padding is smaller than its kernel). Max pooling
      commutes with the monotonic requantizer, so pooling int8 values is exact pooling of the
      float model's grid. The output keeps the input's scale.
    * :func:`avg_pool` and :func:`global_avg_pool`: ``y = floor((2 * sum + n) / (2 * n))``,
      the window's exact integer sum divided by its count ``n`` and rounded half up (towards
      +inf), computed exactly in int64. ``n`` is ``kh * kw`` with ``count_include_pad``, else
      the window's real (unpadded) elements. A mean of int8 values is in int8, so nothing
      saturates; the output keeps the input's scale. On floats (the calibration model) the
      same windows give the exact mean.
    * :func:`flatten`: ``(B, ...) -> (B, prod(...))`` in C order, as ``torch.flatten(x, 1)``.
    * :func:`relu`: ``max(x, 0)``, exact at any scale.
    * :func:`clip`: ``min(max(x, low), high)``, the range of a model's own quantizer narrower
      than int8 (a QONNX ``Quant`` of fewer than 8 bits; :mod:`secateur.models.quantize`);
      exact at any scale, and it commutes with max pooling, flatten and ReLU.
    * :func:`residual_add`: ``y = sat8(relu?((a * mult_a + b * mult_b + 2**(shift - 1)) >>
      shift))``: both operands brought to the output scale by their multipliers under one
      shift, with the rounding, ReLU and saturation of the engines' requantizer
      (:func:`secateur.models.requant.requantize`, applied with ``mult = 1``), so the one
      definition of that arithmetic serves both.

The integer network (:func:`run_steps`) is a list of steps, each a JSON-ready dict naming its
input and output tensors: ``{"op": "engine", "layer": i, ...}`` runs engine layer ``i``
through a caller-supplied function (the golden model or the RTL), every other ``op`` is one
of :data:`HOST_OPS`, with its parameters in the same dict.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from .requant import RequantParams, requantize

__all__ = [
    "INT8_MIN", "INT8_MAX", "out_size", "windows", "im2col", "rows_to_image", "max_pool",
    "avg_pool", "global_avg_pool", "flatten", "relu", "clip", "residual_add", "HOST_OPS",
    "run_host_op", "run_steps",
]

INT8_MIN, INT8_MAX = -128, 127


def _pair(value, name: str) -> tuple[int, int]:
    values = tuple(int(item) for item in value)
    if len(values) != 2 or min(values) < 1:
        raise ValueError(f"{name} must be two integers >= 1, not {list(value)}")
    return values


def _pads(pads) -> tuple[int, int, int, int]:
    values = tuple(int(item) for item in pads)
    if len(values) != 4 or min(values) < 0:
        raise ValueError(f"pads must be four integers >= 0 (top, left, bottom, right), not "
                         f"{list(pads)}")
    return values


def out_size(size: int, kernel: int, stride: int, before: int, after: int) -> int:
    """Output length of a window op along one axis: ``(size + before + after - kernel) //
    stride + 1`` (floor: a partial window at the end is dropped, as ``ceil_mode = 0``).

    Raises
    ------
    ValueError
        If the kernel is larger than the padded input.
    """
    span = size + before + after
    if kernel > span:
        raise ValueError(f"a kernel of {kernel} does not fit an input of {size} padded to {span}")
    return (span - kernel) // stride + 1


def windows(x: np.ndarray, kernel, stride=(1, 1), pads=(0, 0, 0, 0), fill=0) -> np.ndarray:
    """The sliding windows of NCHW images, ``(B, C, OH, OW, kh, kw)``.

    Parameters
    ----------
    x : numpy.ndarray
        ``(B, C, H, W)``, any dtype.
    kernel, stride : pair of int
        ``(kh, kw)`` and ``(sh, sw)``, each ``>= 1``.
    pads : four ints
        ``(top, left, bottom, right)``, each ``>= 0`` and smaller than its kernel side when
        ``fill`` is not 0 (so that every window holds a real element).
    fill : scalar
        The value of the padding.

    Returns
    -------
    numpy.ndarray
        A copy, ``(B, C, OH, OW, kh, kw)`` with :func:`out_size` ``OH`` and ``OW``.

    Raises
    ------
    ValueError
        If ``x`` is not 4-D, an argument is malformed, or the kernel does not fit.
    """
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"images must be 4-D (B, C, H, W), not shape {x.shape}")
    (kh, kw), (sh, sw) = _pair(kernel, "kernel"), _pair(stride, "stride")
    top, left, bottom, right = _pads(pads)
    out_h = out_size(x.shape[2], kh, sh, top, bottom)
    out_w = out_size(x.shape[3], kw, sw, left, right)
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=fill)
    view = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(2, 3))
    return np.ascontiguousarray(view[:, :, ::sh, ::sw][:, :, :out_h, :out_w])


def im2col(x: np.ndarray, kernel, stride=(1, 1), pads=(0, 0, 0, 0)) -> np.ndarray:
    """Images ``(B, C, H, W)`` -> patches ``(B * OH * OW, C * kh * kw)`` (module docstring),
    zero padded, in ``x``'s dtype.

    Raises
    ------
    ValueError
        As :func:`windows`.
    """
    patches = windows(x, kernel, stride, pads, fill=0)
    batch, channels, out_h, out_w, kh, kw = patches.shape
    return patches.transpose(0, 2, 3, 1, 4, 5).reshape(batch * out_h * out_w,
                                                        channels * kh * kw)


def rows_to_image(rows: np.ndarray, height: int, width: int) -> np.ndarray:
    """An engine layer's outputs on :func:`im2col` patches, ``(B * OH * OW, O)``, as images
    ``(B, O, OH, OW)``.

    Raises
    ------
    ValueError
        If the row count is not a multiple of ``height * width``.
    """
    rows = np.asarray(rows)
    positions = int(height) * int(width)
    if rows.ndim != 2 or rows.shape[0] % positions:
        raise ValueError(f"{rows.shape} outputs are not whole {height}x{width} images")
    batch = rows.shape[0] // positions
    return np.ascontiguousarray(rows.reshape(batch, height, width, -1).transpose(0, 3, 1, 2))


def _check_pads_inside(kernel, pads, what: str):
    (kh, kw), (top, left, bottom, right) = _pair(kernel, "kernel"), _pads(pads)
    if max(top, bottom) >= kh or max(left, right) >= kw:
        raise ValueError(f"{what} padding {list(pads)} must be smaller than its kernel "
                         f"{[kh, kw]}, so that every window holds a real element")


def max_pool(x: np.ndarray, kernel, stride, pads=(0, 0, 0, 0)) -> np.ndarray:
    """Max pooling of NCHW images, in ``x``'s dtype (module docstring).

    Raises
    ------
    ValueError
        As :func:`windows`, or if a padding is not smaller than its kernel side.
    """
    _check_pads_inside(kernel, pads, "max pool")
    x = np.asarray(x)
    lowest = np.iinfo(x.dtype).min if x.dtype.kind in "iu" else -np.inf
    return windows(x, kernel, stride, pads, fill=lowest).max(axis=(4, 5))


def _rounded_mean(total: np.ndarray, count) -> np.ndarray:
    """``floor((2 * total + count) / (2 * count))``: the mean rounded half up, exact in int64."""
    count = np.asarray(count, dtype=np.int64)
    return (2 * total + count) // (2 * count)


def avg_pool(x: np.ndarray, kernel, stride, pads=(0, 0, 0, 0),
             count_include_pad: bool = False) -> np.ndarray:
    """Average pooling of NCHW images (module docstring): integers rounded half up, floats
    exact.

    Raises
    ------
    ValueError
        As :func:`windows`, or if a padding is not smaller than its kernel side.
    """
    _check_pads_inside(kernel, pads, "average pool")
    x = np.asarray(x)
    cells = windows(x, kernel, stride, pads, fill=0)
    if count_include_pad:
        count = np.full(cells.shape[2:4], cells.shape[4] * cells.shape[5], dtype=np.int64)
    else:
        real = np.ones((1, 1) + x.shape[2:], dtype=np.int64)
        count = windows(real, kernel, stride, pads, fill=0).sum(axis=(4, 5))[0, 0]
    if x.dtype.kind in "iu":
        total = cells.astype(np.int64).sum(axis=(4, 5))
        return _rounded_mean(total, count).astype(x.dtype)
    return cells.sum(axis=(4, 5)) / count


def global_avg_pool(x: np.ndarray) -> np.ndarray:
    """The mean of each channel, ``(B, C, H, W) -> (B, C, 1, 1)``: :func:`avg_pool` with one
    ``H x W`` window."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"images must be 4-D (B, C, H, W), not shape {x.shape}")
    return avg_pool(x, x.shape[2:], (1, 1))


def flatten(x: np.ndarray) -> np.ndarray:
    """``(B, ...) -> (B, prod(...))`` in C order."""
    x = np.asarray(x)
    return np.ascontiguousarray(x.reshape(x.shape[0], -1))


def relu(x: np.ndarray) -> np.ndarray:
    """``max(x, 0)``, in ``x``'s dtype."""
    x = np.asarray(x)
    return np.maximum(x, np.zeros((), dtype=x.dtype))


def clip(x: np.ndarray, low: int, high: int) -> np.ndarray:
    """``min(max(x, low), high)`` of int8 ``x``, in int8.

    Raises
    ------
    TypeError, ValueError
        If ``x`` is not int8, or ``[low, high]`` is not a non-empty range inside int8.
    """
    x = np.asarray(x)
    if x.dtype != np.int8:
        raise TypeError(f"clip takes int8 values, not {x.dtype}")
    if not INT8_MIN <= int(low) <= int(high) <= INT8_MAX:
        raise ValueError(f"clip range [{low}, {high}] must be a non-empty range inside "
                         f"[{INT8_MIN}, {INT8_MAX}]")
    return np.clip(x, int(low), int(high)).astype(np.int8)


def residual_add(a: np.ndarray, b: np.ndarray, mult_a: int, mult_b: int, shift: int,
                 relu: bool = False) -> np.ndarray:
    """The integer residual add (module docstring): int8 ``a`` and ``b`` of one shape -> int8.

    Parameters
    ----------
    a, b : numpy.ndarray
        int8 operands at scales ``s_a`` and ``s_b``.
    mult_a, mult_b, shift : int
        ``mult_x / 2**shift ~= s_x / s_out``, as
        :func:`secateur.models.quantize.residual_add_params` chooses them (signed 16-bit
        multipliers, shift in ``[0, 47]``).
    relu : bool
        Clamp negative sums to zero before saturation (a ReLU after the add).

    Raises
    ------
    TypeError, ValueError
        If the operands are not int8 of one shape, or a parameter is out of the requantizer's
        range.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != np.int8 or b.dtype != np.int8:
        raise TypeError(f"residual add operands must be int8, not {a.dtype} and {b.dtype}")
    if a.shape != b.shape:
        raise ValueError(f"residual add operands must have one shape, not {a.shape} and "
                         f"{b.shape}")
    for value in (mult_a, mult_b):  # the multipliers' range check of the requantizer
        RequantParams(int(value), int(shift), relu)
    total = a.astype(np.int64) * int(mult_a) + b.astype(np.int64) * int(mult_b)
    summed = requantize(total.reshape(-1, 1), RequantParams(1, int(shift), bool(relu)))
    return summed.reshape(a.shape).astype(np.int8)


def _im2col_step(inputs, step):
    return im2col(inputs[0], step["kernel"], step["stride"], step["pads"])


#: Host op name -> ``f(input arrays, step dict) -> output array``.
HOST_OPS: dict[str, Callable] = {
    "im2col": _im2col_step,
    "rows_to_image": lambda inputs, step: rows_to_image(inputs[0], *step["image"]),
    "max_pool": lambda inputs, step: max_pool(inputs[0], step["kernel"], step["stride"],
                                              step["pads"]),
    "avg_pool": lambda inputs, step: avg_pool(inputs[0], step["kernel"], step["stride"],
                                              step["pads"], step["count_include_pad"]),
    "global_avg_pool": lambda inputs, step: global_avg_pool(inputs[0]),
    "flatten": lambda inputs, step: flatten(inputs[0]),
    "relu": lambda inputs, step: relu(inputs[0]),
    "clip": lambda inputs, step: clip(inputs[0], step["low"], step["high"]),
    "residual_add": lambda inputs, step: residual_add(inputs[0], inputs[1], step["mult_a"],
                                                      step["mult_b"], step["shift"],
                                                      step["relu"]),
}


def run_host_op(step: Mapping, inputs: Sequence[np.ndarray]) -> np.ndarray:
    """Run one host step (``step["op"]`` in :data:`HOST_OPS`) on its input arrays.

    Raises
    ------
    ValueError
        If the op is unknown, or from the op.
    """
    if step["op"] not in HOST_OPS:
        raise ValueError(f"unknown host op {step['op']!r}; host ops are {', '.join(HOST_OPS)}")
    return HOST_OPS[step["op"]](list(inputs), step)


def _engine_vectors(step: Mapping, vectors: np.ndarray) -> np.ndarray:
    """A layer's input vectors, zero padded to the layer's ``cols`` (permuted-diagonal
    layers are padded to whole blocks; padded columns hold zero weights)."""
    cols = int(step["cols"])
    if vectors.ndim != 2 or vectors.shape[1] > cols:
        raise ValueError(f"engine layer {step['layer']} takes (B, {cols}) vectors, not "
                         f"{vectors.shape}")
    if vectors.shape[1] < cols:
        vectors = np.pad(vectors, ((0, 0), (0, cols - vectors.shape[1])))
    return np.ascontiguousarray(vectors, dtype=np.int8)


def run_steps(steps: Sequence[Mapping], input_name: str, x_int8: np.ndarray,
              engine_layer: Callable[[int, np.ndarray], np.ndarray]) -> tuple[dict, list]:
    """Run the integer network on int8 inputs.

    Parameters
    ----------
    steps : sequence of dict
        In order; each has ``op``, ``inputs`` (tensor names) and ``output``. An engine step
        (``op == "engine"``) also has ``layer`` (its index), ``cols`` (the layer's columns;
        narrower inputs are zero padded), ``model_rows`` (the rows kept, the first ones) and
        ``raw`` (True for the last layer, whose ``acc + bias`` are the logits).
    input_name : str
        The network input's tensor name.
    x_int8 : numpy.ndarray
        int8 network input, ``(B, ...)``.
    engine_layer : callable
        ``engine_layer(index, vectors) -> outputs``: int8 ``(R, cols)`` -> int64
        ``(R, rows)``, the golden model or the RTL.

    Returns
    -------
    tensors : dict
        Every tensor by name (int8, the raw logits int64).
    trace : list
        Per engine step, ``(layer index, input vectors, outputs)``.

    Raises
    ------
    ValueError
        If a hidden engine layer returns values outside int8, or from a host op.
    """
    tensors = {input_name: np.asarray(x_int8)}
    trace = []
    for step in steps:
        inputs = [tensors[name] for name in step["inputs"]]
        if step["op"] != "engine":
            tensors[step["output"]] = run_host_op(step, inputs)
            continue
        vectors = _engine_vectors(step, inputs[0])
        out = np.asarray(engine_layer(int(step["layer"]), vectors), dtype=np.int64)
        trace.append((int(step["layer"]), vectors, out))
        out = out[:, :int(step["model_rows"])]
        if not step["raw"]:
            if out.size and (out.min() < INT8_MIN or out.max() > INT8_MAX):
                raise ValueError(f"engine layer {step['layer']} produced values outside int8")
            out = out.astype(np.int8)
        tensors[step["output"]] = out
    return tensors, trace
