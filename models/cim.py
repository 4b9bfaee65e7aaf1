"""Compute-in-memory (CIM) with bit-slice sparsity: the golden formula, the controller's
schedule and work counts, BitS-Net regularization and twofold sparsity. (The energy of the
counted work is :mod:`secateur.models.energy`'s, through the engine's ``counters``.)

This module is the one definition of the arithmetic of :mod:`secateur.hdl.engines.cim` and
of its behavioral macro (:mod:`secateur.hdl.cim_macro`).

The golden formula
------------------
Weights ``w`` (``(M, N)``) and inputs ``x`` (``(N,)``) are int8 two's complement. Cells are
single-bit: one weight bit per cell. A conversion activates ``R`` rows (``rows``); row group
``g`` holds inputs ``g*R .. g*R + R - 1`` (``N`` is zero-padded to a multiple of ``R``).
For output ``m``, input bit ``i``, weight bit ``b`` and group ``g``::

    s = sum_{n in g} xbit_i(n) * wbit_b(m, n)          # over the two's-complement bits
    q = min(s >> a, 2**B - 1) << a                      # saturating B-bit ADC, LSB 2**a
    y[m] = sum_{i, b, g} sgn_i * sgn_b * 2**(i + b) * q

where ``sgn`` is ``-1`` for bit 7 and ``+1`` otherwise, ``B = adc_bits`` in ``[1, 8]`` and
``a = adc_shift`` in ``[0, 8]``. If ``B >= ceil(log2(R + 1))`` and ``a = 0`` the ADC never
saturates nor truncates, and ``y = W @ x`` exactly (:func:`is_lossless`); otherwise the
result is lossy and the formula above, not ``W @ x``, is what the hardware computes bit for
bit. The optional requantizer of :mod:`secateur.models.requant` follows.

Mapping onto macros
-------------------
A macro has ``macro_rows`` word lines (inputs) and ``macro_cols`` bit lines; output ``m``
occupies 8 adjacent columns, one per weight bit, so a macro holds ``slots = macro_cols / 8``
outputs. The layer is cut into tiles: tile ``(rt, ct)`` holds inputs ``rt*macro_rows ..``
and outputs ``ct*slots ..`` (zero-padded), and sits in macro ``p = rt * CT + ct`` where
``RT = ceil(N / macro_rows)`` and ``CT = ceil(M / slots)``; ``RT * CT`` must not exceed the
macro count. Within a tile, row ``r`` is input ``rt*macro_rows + r`` and column
``c = 8 * slot + b`` holds bit ``b`` of ``w[ct*slots + slot, n]``. ``R`` divides
``macro_rows``, so a group never straddles two tiles: local group ``gl`` of tile ``rt`` is
global group ``rt * macro_rows / R + gl``. The macro's ``adcs`` ADCs are shared by column
multiplexing: ADC ``j`` converts column ``j * col_mux + sel`` at mux position ``sel``
(``col_mux = macro_cols / adcs``).

The schedule (what :func:`schedule` counts)
-------------------------------------------
All macros run in lock step over *steps* ``(i, gl)``: input bit-plane ``i`` against local
group ``gl``. In tile ``p`` the step is *live* when some input of the group has bit ``i`` set
(on a row the twofold mask keeps). A step that is live in no tile costs no cycle; a live step
costs ``col_mux`` cycles, one per mux position. A tile whose group is dead does not convert.
A column whose weight bits are all zero within the group (on kept rows) is not converted:
its ADC is disabled and the conversion counts as *skipped*. Skipped conversions are counted
against the dense bit-serial schedule, which converts every column of every group of every
tile for all 8 bit-planes: ``adc_conversions + adc_conversions_skipped = 8 * G * macro_cols *
tiles`` per vector (``G = macro_rows / R``). ``row_activations`` counts word lines held high
for one conversion cycle of one macro (a macro drives its word lines only in the cycles it
converts).

Twofold sparsity
----------------
With an LFSR row mask, tile ``(rt, ct)`` keeps the ``k`` rows named by the LFSR convention
of :mod:`secateur.models.lfsr` over ``n = macro_rows`` rows: the first ``k`` accepted states
from the tile's seed, state ``s`` naming row ``s - 1`` (:func:`twofold_mask`). Only kept rows
are stored and activated; weights on other rows must be zero (:func:`check_twofold`).

BitS-Net regularization
-----------------------
:func:`soft_bit_count` is a differentiable surrogate of the number of ones in the 8-bit
two's-complement pattern of a real value ``v`` in ``[-128, 127]``: with ``u = v mod 256``,
bit ``b`` (a square wave of period ``2**(b+1)`` in ``u``: 0 for the integers
``0 .. 2**b - 1`` of each period, 1 for the next ``2**b``) is replaced by the raised cosine of
the same period whose minimum sits at the centre ``(2**b - 1) / 2`` of the run of zeros:
``(1 - cos(pi * (u - (2**b - 1) / 2) / 2**b)) / 2``. Bit 0 is then exact at integers, and
over the 256 int8 values the surrogate's correlation with the true count is 0.92.
:func:`bits_penalty` applies it to a layer's weights at their int8 scale (and optionally to
activations); :func:`train_bits` trains with it, optionally under a twofold row mask.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .common import check_int, minibatches
from .lfsr import mask_indices
from .requant import RequantParams, check_requant, result_path

__all__ = [
    "WEIGHT_BITS", "ADC_BITS_MAX", "ADC_SHIFT_MAX", "SIGNS",
    "check_adc", "is_lossless", "bit_planes", "cim_matvec", "reference",
    "Geometry", "tile_grid", "tile_keep", "tile_cells", "column_map", "twofold_mask",
    "check_twofold", "schedule",
    "bit_density", "soft_bit_count", "bits_penalty", "quantize_int8", "train_bits",
]

#: Bits of the two's-complement weights and inputs.
WEIGHT_BITS = 8
#: Widest ADC, and the largest ADC LSB exponent ``a``.
ADC_BITS_MAX, ADC_SHIFT_MAX = 8, 8
#: ``sgn`` of bit ``0 .. 7``: bit 7 of two's complement weighs ``-2**7``.
SIGNS = (1, 1, 1, 1, 1, 1, 1, -1)


def check_adc(rows, adc_bits, adc_shift=0) -> tuple[int, int, int]:
    """Validate the conversion parameters ``R``, ``B`` and ``a``.

    Raises
    ------
    TypeError
        If a parameter is not an integer.
    ValueError
        If ``rows < 1``, ``adc_bits`` is outside ``[1, 8]`` or ``adc_shift`` outside ``[0, 8]``.
    """
    return (check_int(rows, "rows (R, rows per conversion)", 1),
            check_int(adc_bits, "adc_bits (B)", 1, ADC_BITS_MAX),
            check_int(adc_shift, "adc_shift (a)", 0, ADC_SHIFT_MAX))


def is_lossless(rows: int, adc_bits: int, adc_shift: int = 0) -> bool:
    """Whether the ADC can represent every partial sum exactly: ``B >= ceil(log2(R + 1))``
    and ``a = 0`` (then the formula equals ``W @ x``)."""
    rows, adc_bits, adc_shift = check_adc(rows, adc_bits, adc_shift)
    return adc_shift == 0 and (1 << adc_bits) - 1 >= rows


def bit_planes(values: torch.Tensor) -> torch.Tensor:
    """The 8 two's-complement bits of int8-range integers: shape ``(..., 8)``, bit ``i`` at
    index ``i``, as int64 zeros and ones."""
    unsigned = values.to(torch.int64) & 0xFF
    return (unsigned[..., None] >> torch.arange(WEIGHT_BITS, device=values.device)) & 1


def cim_matvec(w: torch.Tensor, x: torch.Tensor, rows: int, adc_bits: int,
               adc_shift: int = 0) -> torch.Tensor:
    """The golden formula on torch tensors (exact, int64).

    Parameters
    ----------
    w : torch.Tensor
        Integer weights in ``[-128, 127]``, shape ``(M, N)``.
    x : torch.Tensor
        Integer inputs in ``[-128, 127]``, shape ``(B, N)``.
    rows, adc_bits, adc_shift : int
        ``R``, ``B`` and ``a`` of the module documentation.

    Returns
    -------
    torch.Tensor
        int64, shape ``(B, M)``.

    Raises
    ------
    TypeError, ValueError
        If a parameter is illegal, the tensors are not integers in int8 range, or the
        shapes do not match.
    """
    rows, adc_bits, adc_shift = check_adc(rows, adc_bits, adc_shift)
    for name, tensor in (("w", w), ("x", x)):
        if not isinstance(tensor, torch.Tensor) or tensor.is_floating_point() \
                or tensor.is_complex():
            raise TypeError(f"{name} must be an integer torch tensor")
        if tensor.numel() and (tensor.min() < -128 or tensor.max() > 127):
            raise ValueError(f"{name} must hold int8 values in [-128, 127]")
    if w.ndim != 2 or x.ndim != 2 or w.shape[1] != x.shape[1]:
        raise ValueError(f"w must be (M, N) and x (B, N), not {tuple(w.shape)} and "
                         f"{tuple(x.shape)}")
    groups = math.ceil(w.shape[1] / rows)
    pad = groups * rows - w.shape[1]
    wb = torch.nn.functional.pad(bit_planes(w), (0, 0, 0, pad)).reshape(w.shape[0], groups, rows, 8)
    xb = torch.nn.functional.pad(bit_planes(x), (0, 0, 0, pad)).reshape(x.shape[0], groups, rows, 8)
    # s[z, m, g, i, b]: ones of input bit-plane i meeting weight bit b in group g.
    s = torch.einsum("zgri,mgrb->zmgib", xb, wb)
    q = torch.clamp(s >> adc_shift, max=(1 << adc_bits) - 1) << adc_shift
    bits = torch.arange(WEIGHT_BITS)
    signs = torch.tensor(SIGNS, dtype=torch.int64)
    weight = (signs[:, None] * signs[None, :]) << (bits[:, None] + bits[None, :])  # (i, b)
    return (q * weight).sum(dim=(2, 3, 4))


def reference(w, x, rows: int, adc_bits: int, adc_shift: int = 0,
              requant: RequantParams | None = None,
              bias=None) -> np.ndarray:
    """Bit-exact output of the CIM engine: :func:`cim_matvec` on int8 numpy arrays, then the
    requantizer if ``requant`` is given.

    Parameters
    ----------
    w : numpy.ndarray
        int8 ``(M, N)``.
    x : numpy.ndarray
        int8 ``(B, N)``.
    rows, adc_bits, adc_shift : int
        ``R``, ``B`` and ``a``.
    requant : RequantParams, optional
        The layer's requantizer; ``None`` returns the raw sums.
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
        If ``w`` or ``x`` is not int8, or ``requant`` is not a RequantParams.
    ValueError
        If the shapes do not match or a parameter is out of range.
    """
    for name, array in (("w", w), ("x", x)):
        if not isinstance(array, np.ndarray) or array.dtype != np.int8:
            raise TypeError(f"{name} must be an int8 array, not "
                            f"{getattr(array, 'dtype', type(array).__name__)}")
    check_requant(requant)
    y = cim_matvec(torch.from_numpy(w.astype(np.int64)), torch.from_numpy(x.astype(np.int64)),
                   rows, adc_bits, adc_shift).numpy()
    return result_path(y, requant, bias)


# --------------------------------------------------------------------------- geometry

@dataclass(frozen=True)
class Geometry:
    """The macro array a layer is mapped on (see the module documentation).

    Parameters
    ----------
    macros : int
        Macro count ``P``, ``>= 1``.
    macro_rows, macro_cols : int
        Word lines and bit lines per macro; ``macro_cols`` a multiple of 8.
    adcs : int
        ADCs per macro; divides ``macro_cols``, and ``col_mux = macro_cols / adcs`` divides
        8 or is a multiple of 8 (so each ADC lane serves whole bits of whole outputs).
    rows, adc_bits, adc_shift : int
        ``R`` (divides ``macro_rows``), ``B`` and ``a``.

    Raises
    ------
    TypeError, ValueError
        Naming the parameter and its legal range.
    """
    macros: int
    macro_rows: int
    macro_cols: int
    adcs: int
    rows: int
    adc_bits: int
    adc_shift: int = 0

    def __post_init__(self):
        check_int(self.macros, "macros (pe)", 1)
        check_int(self.macro_rows, "macro_rows", 1)
        check_int(self.macro_cols, "macro_cols", 8)
        if self.macro_cols % 8:
            raise ValueError(f"macro_cols must be a multiple of 8 (8 bit lines per output), "
                             f"not {self.macro_cols}")
        check_int(self.adcs, "adcs", 1, self.macro_cols)
        if self.macro_cols % self.adcs:
            raise ValueError(f"adcs must divide macro_cols = {self.macro_cols}, not {self.adcs}")
        col_mux = self.macro_cols // self.adcs
        if 8 % col_mux and col_mux % 8:
            raise ValueError(f"macro_cols / adcs (column multiplexing) must divide 8 or be a "
                             f"multiple of 8, not {col_mux}")
        check_adc(self.rows, self.adc_bits, self.adc_shift)
        if self.macro_rows % self.rows:
            raise ValueError(f"rows (R) must divide macro_rows = {self.macro_rows}, "
                             f"not {self.rows}")

    @property
    def slots(self) -> int:
        """Outputs per macro."""
        return self.macro_cols // 8

    @property
    def col_mux(self) -> int:
        """Columns per ADC."""
        return self.macro_cols // self.adcs

    @property
    def groups(self) -> int:
        """Row groups per macro, ``G``."""
        return self.macro_rows // self.rows


def tile_grid(shape, geometry: Geometry) -> tuple[int, int]:
    """``(RT, CT)``: the row and column tiles of an ``(M, N)`` layer.

    Raises
    ------
    ValueError
        If the layer needs more tiles than there are macros.
    """
    rows, cols = shape
    row_tiles = math.ceil(cols / geometry.macro_rows)
    col_tiles = math.ceil(rows / geometry.slots)
    if row_tiles * col_tiles > geometry.macros:
        raise ValueError(f"a {rows}x{cols} layer needs {row_tiles} x {col_tiles} tiles of "
                         f"{geometry.slots} outputs x {geometry.macro_rows} inputs, more than "
                         f"the {geometry.macros} macros (pe)")
    return row_tiles, col_tiles


def tile_keep(geometry: Geometry, tiles: tuple[int, int], seeds, k) -> np.ndarray:
    """The rows each tile keeps under the twofold mask.

    Parameters
    ----------
    geometry : Geometry
    tiles : tuple of int
        ``(RT, CT)``.
    seeds : array-like of int
        Shape ``(RT, CT)``, each in ``[1, macro_rows]``.
    k : int or array-like of int
        Scalar or ``(RT, CT)``, each in ``[1, macro_rows]``.

    Returns
    -------
    numpy.ndarray
        bool ``(RT, CT, macro_rows)``.

    Raises
    ------
    TypeError, ValueError
        If the seeds or ``k`` are not integers, have the wrong shape or are out of range.
    """
    seeds = np.asarray(seeds)
    if seeds.dtype.kind not in "iu":
        raise TypeError(f"seeds must be integers, not {seeds.dtype}")
    if seeds.shape != tiles:
        raise ValueError(f"seeds must have shape {tiles}, one per macro tile (row tiles, "
                         f"column tiles), not {seeds.shape}")
    k = np.asarray(k)
    if k.dtype.kind not in "iu":
        raise TypeError(f"k must be integers, not {k.dtype}")
    if k.shape not in ((), tiles):
        raise ValueError(f"k must be a scalar or have shape {tiles}, not {k.shape}")
    k = np.broadcast_to(k, tiles)
    keep = np.zeros(tiles + (geometry.macro_rows,), dtype=bool)
    for rt, ct in np.ndindex(tiles):
        rows = mask_indices(geometry.macro_rows, int(k[rt, ct]), int(seeds[rt, ct]))[0]
        keep[rt, ct, rows] = True
    return keep


def twofold_mask(shape, geometry: Geometry, seeds, k) -> np.ndarray:
    """The twofold (LFSR row) keep-mask of an ``(M, N)`` layer, bool ``(M, N)``.

    Parameters
    ----------
    shape : tuple of int
        ``(M, N)``.
    geometry : Geometry
    seeds : array-like of int
        One seed per tile, shape ``(RT, CT)``, each in ``[1, macro_rows]``.
    k : int or array-like of int
        Kept rows per tile, in ``[1, macro_rows]``; scalar or ``(RT, CT)``.

    Raises
    ------
    TypeError, ValueError
        If the layer does not fit, or the seeds or ``k`` are illegal.
    """
    tiles = tile_grid(shape, geometry)
    keep = tile_keep(geometry, tiles, seeds, k)
    rows, cols = shape
    m = np.arange(rows) // geometry.slots
    n = np.arange(cols)
    return keep[(n // geometry.macro_rows)[None, :], m[:, None], (n % geometry.macro_rows)[None, :]]


def check_twofold(w: np.ndarray, geometry: Geometry, seeds, k) -> np.ndarray:
    """Refuse weights that are non-zero outside the twofold mask; return the mask.

    Raises
    ------
    ValueError
        Naming the first offending position, its tile and the rule.
    """
    mask = twofold_mask(w.shape, geometry, seeds, k)
    bad = np.argwhere((w != 0) & ~mask)
    if bad.size:
        m, n = (int(v) for v in bad[0])
        raise ValueError(f"w[{m}, {n}] = {int(w[m, n])} lies on row {n % geometry.macro_rows} of "
                         f"macro tile ({n // geometry.macro_rows}, {m // geometry.slots}), which "
                         f"its LFSR row mask does not keep; w must be zero there ({len(bad)} such "
                         f"values)")
    return mask


def tile_cells(w: np.ndarray, geometry: Geometry,
               keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The cells of every tile and the rows it keeps.

    Returns
    -------
    tuple of numpy.ndarray
        Cell bits, bool ``(RT, CT, macro_rows, macro_cols)`` (column ``8 * slot + b`` holds
        bit ``b`` of output ``ct * slots + slot``), and ``keep`` (all rows if ``None``).

    Raises
    ------
    ValueError
        If the layer needs more tiles than there are macros.
    """
    row_tiles, col_tiles = tile_grid(w.shape, geometry)
    padded = np.zeros((col_tiles * geometry.slots, row_tiles * geometry.macro_rows),
                      dtype=np.int64)
    padded[:w.shape[0], :w.shape[1]] = w
    bits = bit_planes(torch.from_numpy(padded)).numpy()                 # (M', N', 8)
    bits = bits.reshape(col_tiles, geometry.slots, row_tiles, geometry.macro_rows, 8)
    cells = bits.transpose(2, 0, 3, 1, 4).reshape(row_tiles, col_tiles, geometry.macro_rows,
                                                  geometry.macro_cols)
    if keep is None:
        keep = np.ones((row_tiles, col_tiles, geometry.macro_rows), dtype=bool)
    return cells.astype(bool), keep


def column_map(w: np.ndarray, geometry: Geometry, keep: np.ndarray | None = None) -> np.ndarray:
    """Live columns per tile and local group: bool ``(RT, CT, G, macro_cols)``, true where a
    kept row of the group has that weight bit set (the conversions that cannot be skipped)."""
    cells, keep = tile_cells(w, geometry, keep)
    live = cells & keep[..., None]
    return live.reshape(live.shape[0], live.shape[1], geometry.groups, geometry.rows,
                        geometry.macro_cols).any(axis=3)


def schedule(w: np.ndarray, x: np.ndarray, geometry: Geometry,
             keep: np.ndarray | None = None) -> dict:
    """Work of the lock-step schedule on a batch, and of the dense bit-serial schedule.

    Parameters
    ----------
    w : numpy.ndarray
        int8 ``(M, N)``.
    x : numpy.ndarray
        int8 ``(B, N)``.
    geometry : Geometry
    keep : numpy.ndarray, optional
        Kept rows per tile, bool ``(RT, CT, macro_rows)`` (the twofold mask); all by default.

    Returns
    -------
    dict
        Batch totals: ``live_steps``, ``compute_cycles`` (``col_mux`` per live step),
        ``adc_conversions``, ``adc_conversions_skipped``, ``row_activations``, and the dense
        schedule's ``dense_compute_cycles``, ``dense_adc_conversions`` and
        ``dense_row_activations``; ``tiles`` is ``RT * CT``.
    """
    g = geometry
    colmap = column_map(w, g, keep)                                       # (RT, CT, G, cols)
    _, keep = tile_cells(w, g, keep)
    row_tiles, col_tiles = colmap.shape[:2]
    xp = np.zeros((x.shape[0], row_tiles * g.macro_rows), dtype=np.int64)
    xp[:, :x.shape[1]] = x
    xb = bit_planes(torch.from_numpy(xp)).numpy().astype(bool)
    xb = xb.reshape(x.shape[0], row_tiles, 1, g.groups, g.rows, 8)
    kept = keep.reshape(1, row_tiles, col_tiles, g.groups, g.rows, 1)
    on = xb & kept                                                        # (B, RT, CT, G, R, 8)
    word_lines = on.sum(axis=4)                                           # (B, RT, CT, G, 8)
    live_tile = word_lines > 0
    live_step = live_tile.any(axis=(1, 2))                                # (B, G, 8)
    conversions_per = colmap.sum(axis=3)                                  # (RT, CT, G)
    # Column j * col_mux + sel is ADC j's at mux position sel.
    live_sels = colmap.reshape(row_tiles, col_tiles, g.groups, g.adcs,
                               g.col_mux).any(axis=3).sum(axis=3)
    conversions = int((live_tile * conversions_per[None, ..., None]).sum())
    activations = int((word_lines * live_tile * live_sels[None, ..., None]).sum())
    dense = x.shape[0] * WEIGHT_BITS * g.groups * g.macro_cols * row_tiles * col_tiles
    return {
        "tiles": row_tiles * col_tiles,
        "live_steps": int(live_step.sum()),
        "compute_cycles": int(live_step.sum()) * g.col_mux,
        "adc_conversions": conversions,
        "adc_conversions_skipped": dense - conversions,
        "row_activations": activations,
        "dense_compute_cycles": x.shape[0] * WEIGHT_BITS * g.groups * g.col_mux,
        "dense_adc_conversions": dense,
        "dense_row_activations": int((word_lines * g.col_mux).sum()),
    }


# --------------------------------------------------------------------------- BitS-Net

def bit_density(values) -> float:
    """Fraction of ones in the 8-bit two's-complement patterns of int8 ``values``."""
    tensor = torch.as_tensor(np.asarray(values).astype(np.int64))
    if tensor.numel() == 0:
        raise ValueError("bit_density needs at least one value")
    return float(bit_planes(tensor).double().mean())


def soft_bit_count(v: torch.Tensor) -> torch.Tensor:
    """Differentiable surrogate of the ones in the two's-complement bits of ``v`` (real, in
    ``[-128, 127]``), elementwise; see the module documentation."""
    u = torch.where(v < 0, v + 256.0, v)
    periods = 2.0 ** torch.arange(WEIGHT_BITS, dtype=v.dtype, device=v.device)
    phase = torch.pi * (u[..., None] - (periods - 1) / 2) / periods
    return (0.5 - 0.5 * torch.cos(phase)).sum(-1)


def bits_penalty(weight: torch.Tensor, scale: float | torch.Tensor,
                 activations: torch.Tensor | None = None,
                 act_scale: float | torch.Tensor | None = None) -> torch.Tensor:
    """The BitS-Net penalty: mean soft bit count of ``weight / scale`` (clamped to int8 range),
    plus that of ``activations / act_scale`` when given.

    Raises
    ------
    ValueError
        If activations are given without ``act_scale``.
    """
    penalty = soft_bit_count(torch.clamp(weight / scale, -128.0, 127.0)).mean()
    if activations is not None:
        if act_scale is None:
            raise ValueError("act_scale is required with activations")
        scaled = torch.clamp(activations / act_scale, -128.0, 127.0)
        penalty = penalty + soft_bit_count(scaled).mean()
    return penalty


def quantize_int8(weight: torch.Tensor) -> tuple[np.ndarray, float]:
    """Symmetric per-tensor int8: ``(round(weight / scale), scale)``, ``scale = max|w| / 127``."""
    scale = float(weight.detach().abs().max()) / 127.0 or 1.0
    q = torch.clamp(torch.round(weight.detach() / scale), -128, 127)
    return q.to(torch.int8).cpu().numpy(), scale


def train_bits(layer: nn.Linear, data, *, strength: float, epochs: int = 20, lr: float = 1e-2,
               batch_size: int = 64, mask: np.ndarray | None = None, seed: int = 0) -> list[float]:
    """Train ``layer`` (in place) for MSE on ``data`` with the BitS-Net penalty, optionally
    under a twofold row mask.

    The penalty's int8 scale is the current ``max|w| / 127`` (held constant within a step),
    so it counts the ones of the weights as :func:`quantize_int8` would export them.

    Parameters
    ----------
    layer : nn.Linear
    data : tuple of torch.Tensor
        ``(inputs, targets)``.
    strength : float
        Penalty weight, ``>= 0`` (0 trains without it).
    epochs, batch_size : int
        ``>= 1``.
    lr : float
        Adam learning rate, ``> 0``.
    mask : numpy.ndarray, optional
        Bool ``(M, N)`` keep-mask (:func:`twofold_mask`); weights outside stay zero.
    seed : int
        Shuffling seed.

    Returns
    -------
    list of float
        The task loss of each epoch.

    Raises
    ------
    TypeError, ValueError
        If a parameter is illegal or the mask has the wrong shape.
    """
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"layer must be an nn.Linear, not {type(layer).__name__}")
    if isinstance(strength, bool) or not isinstance(strength, numbers.Real) or strength < 0:
        raise ValueError(f"strength must be a real number >= 0, not {strength!r}")
    check_int(epochs, "epochs", 1)
    check_int(batch_size, "batch_size", 1)
    if not lr > 0:
        raise ValueError(f"lr must be > 0, not {lr}")
    keep = None
    if mask is not None:
        if np.asarray(mask).shape != tuple(layer.weight.shape):
            raise ValueError(f"mask must have shape {tuple(layer.weight.shape)}, not "
                             f"{np.asarray(mask).shape}")
        keep = torch.as_tensor(np.asarray(mask), dtype=layer.weight.dtype)
        with torch.no_grad():
            layer.weight.mul_(keep)
    inputs, targets = data
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(layer.parameters(), lr=lr)
    losses = []
    for _ in range(epochs):
        total = 0.0
        for batch in minibatches(inputs.shape[0], batch_size, generator):
            loss = torch.nn.functional.mse_loss(layer(inputs[batch]), targets[batch])
            objective = loss
            if strength:
                scale = layer.weight.detach().abs().max() / 127.0
                objective = loss + strength * bits_penalty(layer.weight, scale)
            optimizer.zero_grad()
            objective.backward()
            optimizer.step()
            if keep is not None:
                with torch.no_grad():
                    layer.weight.mul_(keep)
            total += float(loss.detach()) * batch.numel()
        losses.append(total / inputs.shape[0])
    return losses
