"""Permuted-diagonal weight matrices (PermDNN): the structure, training, int8 export and the
integer reference of the permuted-diagonal engine.

**Definition.** A weight matrix ``W`` of shape ``(M, N)``, with ``M`` and ``N`` multiples of
the block size ``p``, is cut into ``p x p`` blocks. Block ``(bi, bj)`` has an offset ``k`` in
``[0, p)``. Its only possible non-zeros are at rows ``bi*p + c`` and columns
``bj*p + (c + k) mod p``, for ``c = 0..p-1``. A block whose values are all zero, or partly
zero, is legal. So each block row has exactly one possible non-zero per column, each column
block one per row: ``M * N / p`` values and one offset per block describe ``W`` completely,
with no index storage.

**Compressed form.** ``diag`` of shape ``(M/p, N/p, p)`` with
``diag[bi, bj, c] = W[bi*p + c, bj*p + (c + k[bi, bj]) mod p]``, and ``offsets`` of shape
``(M/p, N/p)`` (:func:`compress`, :func:`expand`).

**Offset inference** (:func:`infer_offsets`). Every non-zero of a block fixes its offset as
``(column - row) mod p`` within the block; all of them must agree. An all-zero block has no
inferable offset and gets offset 0 (any offset describes it equally well).

**Arithmetic of the engine** (:func:`reference`): for int8 ``W`` and int8 inputs ``x``,
``y[b, m] = sum_n W[m, n] * x[b, n]`` exactly, in int64, then optionally the shared
requantizer (:func:`secateur.models.requant.requantize`). A row has at most ``N/p`` non-zero
weights, so ``|y| <= 2**14 * N / p`` before requantization. The result does not depend on
the order of the products: :func:`column_reference` computes it in the engine's column-wise
order (PermDNN's schedule: each non-zero ``x[j]`` is broadcast, and block row ``bi`` adds
``diag[bi, j // p, (j mod p - k) mod p] * x[j]`` to its one target row
``bi*p + (j mod p - k) mod p``) and must agree bit for bit.

**Training** (:class:`PermutedDiagonalLinear`): as in the paper, the offsets are drawn once
from a seed when the layer is built and never change; only the diagonal values are
parameters, so a model is trained from scratch with the structure fixed.

**Scale convention** (:func:`export_layer`): the float layer computes ``y = W x``; with
``W ~= s_w * W_int`` (symmetric int8, :func:`int8_codes`), inputs ``x ~= s_x * x_int`` and
outputs ``y ~= s_y * y_int``, the engine's requantizer realises
``mult / 2**shift ~= s_w * s_x / s_y``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .common import (
    check_int, check_int8_inputs, check_int8_weights, export_requant, save_weights_npz,
)
from .requant import RequantParams, check_requant, result_path

__all__ = [
    "check_block_size", "block_grid", "pad_to_blocks", "random_offsets", "structure_mask",
    "infer_offsets", "compress", "expand", "project",
    "PermutedDiagonalLinear", "int8_codes",
    "check_weights", "reference", "column_reference", "export_layer", "save_npz",
]


# --------------------------------------------------------------------------- structure

def check_block_size(p) -> int:
    """Validate a block size: an integer ``>= 1``.

    Raises
    ------
    TypeError
        If ``p`` is not an integer (a bool is not one).
    ValueError
        If ``p < 1``.
    """
    if isinstance(p, np.ndarray) and p.ndim == 0:
        p = p.item()
    return check_int(p, "block size p")


def block_grid(shape, p) -> tuple[int, int]:
    """The block grid ``(M/p, N/p)`` of a matrix shape.

    Raises
    ------
    TypeError
        If ``p`` is not an integer.
    ValueError
        If the shape is not 2-D and non-empty, or ``p`` does not divide ``M`` or ``N``; the
        message names the partial block row or column.
    """
    p = check_block_size(p)
    shape = tuple(int(size) for size in shape)
    if len(shape) != 2 or shape[0] < 1 or shape[1] < 1:
        raise ValueError(f"a permuted-diagonal matrix must be 2-D (M, N) with M, N >= 1, "
                         f"not shape {shape}")
    rows, cols = shape
    if rows % p:
        first = rows - rows % p
        raise ValueError(f"w has shape {shape}, but p = {p} does not divide M = {rows}: block "
                         f"row {rows // p} (rows {first}..{rows - 1}) is partial")
    if cols % p:
        first = cols - cols % p
        raise ValueError(f"w has shape {shape}, but p = {p} does not divide N = {cols}: block "
                         f"column {cols // p} (columns {first}..{cols - 1}) is partial")
    return rows // p, cols // p


def pad_to_blocks(w, p) -> np.ndarray:
    """``w`` ``(M, N)`` zero padded at the bottom and right to ``(ceil(M/p) p, ceil(N/p) p)``,
    whole blocks, as float64 (a bias ``(M,)`` to ``(ceil(M/p) p,)``).

    Raises
    ------
    TypeError, ValueError
        If ``p`` is not an integer ``>= 1`` or ``w`` is not a non-empty 1-D or 2-D array.
    """
    p = check_block_size(p)
    w = np.asarray(w.detach().cpu() if isinstance(w, torch.Tensor) else w, dtype=np.float64)
    if w.ndim not in (1, 2) or w.size == 0:
        raise ValueError(f"pad_to_blocks takes a non-empty (M, N) matrix or (M,) vector, not "
                         f"shape {w.shape}")
    padded = np.zeros(tuple(-(-size // p) * p for size in w.shape))
    padded[tuple(slice(0, size) for size in w.shape)] = w
    return padded


def random_offsets(row_blocks: int, col_blocks: int, p: int, seed: int = 0) -> np.ndarray:
    """Offsets drawn uniformly from ``[0, p)`` for every block, reproducibly from ``seed``.

    Raises
    ------
    TypeError, ValueError
        If a size or ``p`` is not an integer ``>= 1``.
    """
    p = check_block_size(p)
    row_blocks = check_int(row_blocks, "row_blocks")
    col_blocks = check_int(col_blocks, "col_blocks")
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randint(0, p, (int(row_blocks), int(col_blocks)),
                         generator=generator).numpy().astype(np.int64)


def _check_offsets(offsets, p: int) -> np.ndarray:
    offsets = np.asarray(offsets)
    if offsets.dtype.kind not in "iu":
        raise TypeError(f"offsets must be integers, not {offsets.dtype}")
    if offsets.ndim != 2 or offsets.size == 0:
        raise ValueError(f"offsets must be a non-empty 2-D (M/p, N/p) array, "
                         f"not shape {offsets.shape}")
    bad = np.argwhere((offsets < 0) | (offsets >= p))
    if bad.size:
        bi, bj = bad[0]
        raise ValueError(f"offsets must be in [0, {p - 1}] for p = {p}; block ({bi}, {bj}) "
                         f"has offset {int(offsets[bi, bj])}")
    return offsets.astype(np.int64)


def _positions(offsets: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column index of every ``diag[bi, bj, c]`` in the dense matrix, each shaped
    like ``diag``."""
    row_blocks, col_blocks = offsets.shape
    c = np.arange(p)
    rows = np.arange(row_blocks)[:, None, None] * p + c[None, None, :]
    cols = (np.arange(col_blocks)[None, :, None] * p
            + (c[None, None, :] + offsets[:, :, None]) % p)
    return np.broadcast_to(rows, cols.shape), cols


def structure_mask(offsets, p) -> np.ndarray:
    """The boolean ``(M, N)`` mask of the positions that may be non-zero.

    Raises
    ------
    TypeError, ValueError
        If ``p`` or ``offsets`` is malformed (offsets must be integers in ``[0, p)``).
    """
    p = check_block_size(p)
    offsets = _check_offsets(offsets, p)
    rows, cols = _positions(offsets, p)
    mask = np.zeros((offsets.shape[0] * p, offsets.shape[1] * p), dtype=bool)
    mask[rows, cols] = True
    return mask


def infer_offsets(w, p) -> np.ndarray:
    """Every block's offset, inferred from the non-zeros of ``w``.

    All-zero blocks get offset 0 (they have no inferable offset, and any offset describes
    them). Works for any numeric dtype: "non-zero" means ``!= 0``.

    Returns
    -------
    numpy.ndarray
        int64, shape ``(M/p, N/p)``.

    Raises
    ------
    TypeError
        If ``w`` is not numeric or ``p`` not an integer.
    ValueError
        If the shape is not a multiple of ``p``, or ``w`` is not permuted-diagonal: the
        message names the first offending block in row-major order and two of its
        non-zeros that need different offsets (or the non-zero that breaks the rule).
    """
    w = w.detach().cpu().numpy() if isinstance(w, torch.Tensor) else np.asarray(w)
    if w.dtype.kind not in "biuf":
        raise TypeError(f"w must be numeric, not {w.dtype}")
    row_blocks, col_blocks = block_grid(w.shape, p)
    blocks = (w != 0).reshape(row_blocks, p, col_blocks, p).transpose(0, 2, 1, 3)
    c = np.arange(p)
    # need[c, col]: the offset that a non-zero at (c, col) of a block implies.
    need = (np.arange(p)[None, :] - c[:, None]) % p
    offsets = np.zeros((row_blocks, col_blocks), dtype=np.int64)
    any_nonzero = blocks.any(axis=(2, 3))
    # The first non-zero (row-major within the block) fixes the candidate offset.
    flat_first = np.argmax(blocks.reshape(row_blocks, col_blocks, p * p), axis=2)
    candidate = need.reshape(-1)[flat_first]
    offsets[any_nonzero] = candidate[any_nonzero]
    allowed = need[None, None, :, :] == offsets[:, :, None, None]
    offending = np.argwhere((blocks & ~allowed).any(axis=(2, 3)))
    if offending.size:
        bi, bj = (int(v) for v in offending[0])
        first_row, first_col = divmod(int(flat_first[bi, bj]), p)
        bad_row, bad_col = (int(v) for v in np.argwhere(blocks[bi, bj] & ~allowed[bi, bj])[0])
        raise ValueError(
            f"w is not permuted-diagonal for p = {p}: block ({bi}, {bj}) (rows "
            f"{bi * p}..{bi * p + p - 1}, columns {bj * p}..{bj * p + p - 1}) has non-zeros at "
            f"w[{bi * p + first_row}, {bj * p + first_col}] (offset "
            f"{(first_col - first_row) % p}) and w[{bi * p + bad_row}, {bj * p + bad_col}] "
            f"(offset {(bad_col - bad_row) % p}); a block may only hold one permuted diagonal "
            f"({len(offending)} offending blocks)")
    return offsets


def compress(w, p) -> tuple[np.ndarray, np.ndarray]:
    """Dense permuted-diagonal ``w`` -> ``(diag, offsets)``, keeping ``w``'s dtype.

    Raises
    ------
    TypeError, ValueError
        As :func:`infer_offsets`.
    """
    w = w.detach().cpu().numpy() if isinstance(w, torch.Tensor) else np.asarray(w)
    offsets = infer_offsets(w, p)
    rows, cols = _positions(offsets, int(p))
    return w[rows, cols], offsets


def expand(diag, offsets):
    """``(diag, offsets)`` -> the dense ``(M, N)`` matrix; torch in, torch out (differentiable
    with respect to ``diag``), numpy otherwise.

    Raises
    ------
    TypeError, ValueError
        If ``diag`` is not 3-D ``(M/p, N/p, p)`` or ``offsets`` does not match it.
    """
    is_torch = isinstance(diag, torch.Tensor)
    shape = tuple(diag.shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"diag must be a non-empty 3-D (M/p, N/p, p) array, not shape {shape}")
    p = shape[2]
    offsets = _check_offsets(offsets.cpu().numpy() if isinstance(offsets, torch.Tensor)
                             else offsets, p)
    if offsets.shape != shape[:2]:
        raise ValueError(f"offsets has shape {offsets.shape}; diag of shape {shape} needs "
                         f"{shape[:2]}")
    rows, cols = _positions(offsets, p)
    if is_torch:
        dense = diag.new_zeros((shape[0] * p, shape[1] * p))
        # _positions broadcasts the rows (a read-only view); torch needs its own copy.
        return dense.index_put((torch.from_numpy(np.array(rows)).to(diag.device),
                                torch.from_numpy(np.array(cols)).to(diag.device)), diag)
    diag = np.asarray(diag)
    dense = np.zeros((shape[0] * p, shape[1] * p), dtype=diag.dtype)
    dense[rows, cols] = diag
    return dense


def project(weight, p) -> tuple[np.ndarray, np.ndarray]:
    """The permuted-diagonal matrix closest to an arbitrary dense ``weight`` (in Frobenius
    norm): per block, the offset whose diagonal carries the most energy (ties: the smallest
    offset), and that diagonal's values.

    Returns
    -------
    diag, offsets : numpy.ndarray
        float64 ``(M/p, N/p, p)`` and int64 ``(M/p, N/p)``.

    Raises
    ------
    TypeError, ValueError
        If ``weight`` is not numeric, or its shape is not a multiple of ``p``.
    """
    weight = (weight.detach().cpu().numpy() if isinstance(weight, torch.Tensor)
              else np.asarray(weight))
    if weight.dtype.kind not in "biuf":
        raise TypeError(f"weight must be numeric, not {weight.dtype}")
    row_blocks, col_blocks = block_grid(weight.shape, p)
    p = int(p)
    blocks = weight.astype(np.float64).reshape(row_blocks, p, col_blocks, p).transpose(0, 2, 1, 3)
    c = np.arange(p)
    # energy[bi, bj, k] = sum_c block[c, (c + k) mod p] ** 2
    energy = np.stack([(blocks[:, :, c, (c + k) % p] ** 2).sum(axis=2) for k in range(p)],
                      axis=2)
    offsets = np.argmax(energy, axis=2).astype(np.int64)
    rows, cols = _positions(offsets, p)
    return weight.astype(np.float64)[rows, cols], offsets


# --------------------------------------------------------------------------- training

class PermutedDiagonalLinear(nn.Module):
    """A fully-connected layer whose weight is permuted-diagonal, trained from scratch.

    The offsets are drawn from ``seed`` at construction (a buffer, saved with the model but
    never trained); the parameter ``diag`` holds only the ``out_features * in_features / p``
    diagonal values. ``forward`` is ``F.linear(x, expand(diag, offsets), bias)``, so
    gradients reach exactly the stored values.

    Parameters
    ----------
    in_features, out_features : int
        Multiples of ``p``.
    p : int
        Block size, ``>= 1``.
    bias : bool
        Add a trainable bias (the engine has none; export requires it to be zero).
    seed : int
        Seed of the offsets.

    Raises
    ------
    TypeError, ValueError
        If a size or ``p`` is not a positive integer, or ``p`` does not divide a size.
    """

    def __init__(self, in_features: int, out_features: int, p: int, bias: bool = False,
                 seed: int = 0):
        super().__init__()
        check_int(in_features, "in_features"), check_int(out_features, "out_features")
        row_blocks, col_blocks = block_grid((out_features, in_features), p)
        self.in_features, self.out_features, self.p = int(in_features), int(out_features), int(p)
        self.seed = int(seed)
        self.register_buffer("offsets", torch.from_numpy(
            random_offsets(row_blocks, col_blocks, self.p, self.seed)))
        self.diag = nn.Parameter(torch.empty(row_blocks, col_blocks, self.p))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Each output sums in_features / p products: Kaiming-uniform for that fan-in.
        fan_in = self.in_features // self.p
        bound = 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(self.diag, -bound * math.sqrt(3.0), bound * math.sqrt(3.0))
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    @classmethod
    def from_dense(cls, weight, p: int, bias=None, project_weight: bool = False
                   ) -> "PermutedDiagonalLinear":
        """A layer holding a dense matrix: exactly (it must be permuted-diagonal for ``p``)
        or, with ``project_weight``, its projection (:func:`project`).

        Raises
        ------
        TypeError, ValueError
            As :func:`compress` or :func:`project`.
        """
        weight_t = torch.as_tensor(weight)
        diag, offsets = (project(weight_t, p) if project_weight else compress(weight_t, p))
        layer = cls(weight_t.shape[1], weight_t.shape[0], p, bias=bias is not None)
        with torch.no_grad():
            layer.offsets.copy_(torch.from_numpy(offsets))
            layer.diag.copy_(torch.as_tensor(np.asarray(diag, dtype=np.float64)))
            if bias is not None:
                layer.bias.copy_(torch.as_tensor(bias))
        return layer

    def dense_weight(self) -> torch.Tensor:
        """The ``(out_features, in_features)`` dense weight (differentiable in ``diag``)."""
        return expand(self.diag, self.offsets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dense_weight(), self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, p={self.p}, "
                f"bias={self.bias is not None}, seed={self.seed}")


def int8_codes(diag) -> tuple[np.ndarray, float]:
    """Symmetric per-layer int8 quantization: ``diag ~= scale * codes`` with codes in
    ``[-127, 127]`` (round half to even) and ``scale = max|diag| / 127`` (1.0 for all zeros).

    Raises
    ------
    TypeError
        If ``diag`` is not floating point.
    ValueError
        If it holds a NaN or an infinity.
    """
    values = diag.detach().cpu().numpy() if isinstance(diag, torch.Tensor) else np.asarray(diag)
    if values.dtype.kind != "f":
        raise TypeError(f"diag must be floating point, not {values.dtype}")
    if not np.isfinite(values).all():
        raise ValueError("diag holds a NaN or an infinity")
    peak = float(np.abs(values).max()) if values.size else 0.0
    scale = peak / 127.0 if peak > 0.0 else 1.0
    codes = np.clip(np.round(values / scale), -127, 127).astype(np.int8)
    return codes, scale


# --------------------------------------------------------------------------- integer reference

def check_weights(w_int8, p) -> np.ndarray:
    """Check an engine weight matrix: int8, ``(M, N)`` multiples of ``p``, permuted-diagonal.

    The one statement of the engine's weight structure, used by :func:`reference` and by the
    engine when it loads a layer.

    Returns
    -------
    numpy.ndarray
        The inferred offsets, int64 ``(M/p, N/p)`` (0 for all-zero blocks).

    Raises
    ------
    TypeError
        If ``w_int8`` is not int8 or ``p`` not an integer.
    ValueError
        If the shape is wrong or the matrix is not permuted-diagonal (naming the first
        offending block).
    """
    return infer_offsets(check_int8_weights(w_int8), p)


def reference(w_int8, x_int8, p, requant: RequantParams | None = None,
              bias=None) -> np.ndarray:
    """Bit-exact output of the permuted-diagonal engine.

    ``acc[b, m] = sum_n w[m, n] * x[b, n]`` exactly in int64 (``|acc| <= 2**14 * N / p``),
    then, when ``requant`` is given, :func:`secateur.models.requant.requantize`.

    Parameters
    ----------
    w_int8 : array-like
        int8 permuted-diagonal matrix ``(M, N)`` for block size ``p``.
    x_int8 : array-like
        int8 activations ``(B, N)``.
    p : int
        Block size.
    requant : RequantParams, optional
        The layer's requantizer; ``None`` returns the raw accumulators.
    bias : array-like of int, optional
        One int32 bias per output row, added before the requantizer (:func:`~secateur.models.
        requant.result_path`).

    Returns
    -------
    numpy.ndarray
        int64 ``(B, M)``.

    Raises
    ------
    TypeError
        If ``w_int8`` or ``x_int8`` is not int8, ``p`` not an integer, or ``requant`` not a
        RequantParams.
    ValueError
        If a shape is wrong, ``w`` is not permuted-diagonal, or a per-channel ``mult`` does
        not have ``M`` entries.
    """
    w = check_int8_weights(w_int8)
    check_weights(w, p)
    x = check_int8_inputs(x_int8, w.shape[1])
    check_requant(requant)
    # numpy integer matmul is exact (no BLAS), and int64 holds 2**14 * N / p easily.
    acc = x.astype(np.int64) @ w.astype(np.int64).T
    return result_path(acc, requant, bias)


def column_reference(diag, offsets, x_int8) -> np.ndarray:
    """The engine's arithmetic in its own order, from the compressed form: every non-zero
    ``x[b, j]`` is broadcast to all block rows, and block row ``bi`` adds
    ``diag[bi, j // p, c] * x[b, j]`` to its one target row ``bi*p + c`` with
    ``c = (j mod p - k[bi, j // p]) mod p``. Zero activations contribute nothing and are
    skipped. Equal to :func:`reference` of ``expand(diag, offsets)`` bit for bit.

    Parameters
    ----------
    diag : array-like
        int8 ``(M/p, N/p, p)``.
    offsets : array-like
        Integers in ``[0, p)``, ``(M/p, N/p)``.
    x_int8 : array-like
        int8 ``(B, N)``.

    Returns
    -------
    numpy.ndarray
        int64 ``(B, M)`` accumulators.

    Raises
    ------
    TypeError, ValueError
        If a dtype or shape is wrong.
    """
    diag = np.asarray(diag)
    if diag.dtype != np.int8 or diag.ndim != 3:
        raise TypeError(f"diag must be a 3-D int8 array, not {diag.dtype} of shape {diag.shape}")
    row_blocks, col_blocks, p = diag.shape
    offsets = _check_offsets(offsets, p)
    x = check_int8_inputs(x_int8, col_blocks * p)
    y = np.zeros((x.shape[0], row_blocks * p), dtype=np.int64)
    block_rows = np.arange(row_blocks)
    for b, j in zip(*np.nonzero(x)):
        bj, rho = divmod(int(j), p)
        c = (rho - offsets[:, bj]) % p
        y[b, block_rows * p + c] += diag[block_rows, bj, c].astype(np.int64) * int(x[b, j])
    return y


# --------------------------------------------------------------------------- export

def export_layer(layer: PermutedDiagonalLinear, *, input_scale: float | None = None,
                 output_scale: float | None = None, relu: bool = False) -> dict:
    """The engine's weights dict of a trained :class:`PermutedDiagonalLinear`.

    ``w`` is the dense int8 matrix of :func:`int8_codes` of ``diag`` (the engine infers the
    offsets again from it; an all-zero block loses its offset, which changes nothing).

    Parameters
    ----------
    layer : PermutedDiagonalLinear
        Without a bias, or with an all-zero one.
    input_scale, output_scale : float, optional
        Both ``> 0`` to add ``mult``/``shift``/``relu`` with
        ``mult / 2**shift ~= s_w * input_scale / output_scale``, or both ``None``.
    relu : bool
        The requantizer's ReLU flag.

    Returns
    -------
    dict
        ``{"w": int8 (M, N), "p": 0-d int64}``, plus ``"mult"``, ``"shift"`` (0-d int64) and
        ``"relu"`` (0-d bool) when scales are given: the keys of a weights ``.npz``.

    Raises
    ------
    TypeError
        If ``layer`` is not a PermutedDiagonalLinear, a scale is not real or ``relu`` not a
        bool.
    ValueError
        If the bias is non-zero, only one scale is given, a scale is not positive and
        finite, or the ratio needs a multiplier above ``2**15 - 1``.
    """
    if not isinstance(layer, PermutedDiagonalLinear):
        raise TypeError(f"layer must be a PermutedDiagonalLinear, not {type(layer).__name__}")
    if layer.bias is not None and bool((layer.bias != 0).any()):
        raise ValueError("layer has a non-zero bias, but the permuted-diagonal engine has no "
                         "bias input; train it with bias=False")
    codes, scale = int8_codes(layer.diag)
    weights = {"w": expand(codes, layer.offsets.cpu().numpy()),
               "p": np.asarray(layer.p, dtype=np.int64)}
    weights.update(export_requant(scale, input_scale, output_scale, relu))
    return weights


def save_npz(path, weights: dict) -> Path:
    """Write a permuted-diagonal weights dict (as from :func:`export_layer`) to ``.npz``.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; ``.npz`` is appended if missing.
    weights : dict
        ``"w"`` (int8, permuted-diagonal for ``"p"``), ``"p"`` (integer), and optionally all
        of ``"mult"``, ``"shift"``, ``"relu"``.

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    TypeError, ValueError
        If ``weights`` is not a mapping, a key is missing or unknown, ``w`` is not a valid
        permuted-diagonal int8 matrix, or the requantization keys are invalid.
    """
    return save_weights_npz(path, weights, ("w", "p"), _checked_layer)


def _checked_layer(weights) -> dict:
    p = check_block_size(np.asarray(weights["p"]))
    w = check_int8_weights(weights["w"])
    check_weights(w, p)
    return {"w": w, "p": np.asarray(p, dtype=np.int64)}
