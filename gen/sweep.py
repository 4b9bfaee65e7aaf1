"""Cycles and utilization against sparsity, measured on the RTL: the sweeps behind the
benchmarks (``benchmarks/bench_*.py``) and ``secateur report``.

Every point is a layer of the engine's structure and a batch of int8 inputs, streamed through
the engine's Verilog by :class:`~secateur.sim.runner.BatchSimulator` (one harness build per
engine configuration, cached) and checked against the golden model (``exact``).

Sparsity, per engine (:func:`weight_sparsity_layer`; the structure each engine skips)
    ``dense``     fraction of zero weights, unstructured (the dense engine skips nothing, so
                  its cycles do not change: it is the baseline);
    ``ternary``   fraction of zero ``pe x fan_in`` groups (PE-wise structured pruning);
    ``lfsr``      ``1 - k / N``: each row keeps ``k`` of ``N`` columns on its LFSR mask;
    ``permdiag``  ``1 - 1 / p``: permuted-diagonal ``p x p`` blocks (``p`` must divide the
                  layer; a level that needs another ``p`` is not representable);
    ``cim``       ``1 - k / macro_rows``: the twofold LFSR row mask of every macro tile
                  (``row_mask=lfsr``); its bit-level skipping comes on top.
Activation sparsity (:func:`sparse_inputs`): the fraction of zero inputs per vector, which
``permdiag`` (zero activations skipped) and ``cim`` (dead bit-planes skipped) exploit.

The layer generators are shared with the benchmarks: :func:`ternary_group_sparse`
(``bench_ternary``), :func:`lfsr_layer` (``bench_lfsr``), :func:`permdiag_layer` and
:func:`sparse_inputs` (``bench_permdiag``).
"""

from __future__ import annotations

import math
import time

import numpy as np

__all__ = ["WEIGHT_SPARSITIES", "SPARSITY_KINDS", "ternary_group_sparse", "lfsr_layer",
           "permdiag_layer", "sparse_inputs", "random_positions", "dense_layer", "cim_layer", "engine_settings",
           "weight_sparsity_layer", "run_point", "sweep_engine"]

#: Weight sparsity levels of the report's sweep: powers of two, so that every engine's
#: structure (group counts, k, p, kept rows) represents them exactly on power-of-two layers.
WEIGHT_SPARSITIES = (0.0, 0.5, 0.75, 0.875, 0.9375)

#: Engine -> what its weight sparsity is.
SPARSITY_KINDS = {
    "dense": "zero weights, unstructured (nothing skipped)",
    "ternary": "zero pe x fan_in groups (PE-wise structured)",
    "lfsr": "1 - k/N (LFSR row masks)",
    "permdiag": "1 - 1/p (permuted-diagonal blocks)",
    "cim": "1 - k/macro_rows (twofold LFSR row masks)",
}


# --------------------------------------------------------------------------- layers

def ternary_group_sparse(rng, rows: int, cols: int, zero_groups: float, pe: int,
                         fan_in: int) -> np.ndarray:
    """Ternary weights (~2/3 non-zero) with exactly ``round(zero_groups * groups)`` zero
    ``pe x fan_in`` groups, at random positions."""
    w = rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=(rows, cols))
    row_blocks, col_blocks = math.ceil(rows / pe), math.ceil(cols / fan_in)
    groups = row_blocks * col_blocks
    for index in rng.permutation(groups)[:round(zero_groups * groups)]:
        r, c = divmod(int(index), col_blocks)
        w[r * pe:(r + 1) * pe, c * fan_in:(c + 1) * fan_in] = 0
    return w


def lfsr_layer(rng, rows: int, cols: int, k: int) -> dict:
    """An LFSR-pruned int8 layer: random seeds, ``k`` random int8 values per row on its
    mask (:func:`secateur.models.lfsr.mask_indices`)."""
    from ..models.lfsr import mask_indices
    seeds = rng.integers(1, cols + 1, size=rows)
    w = np.zeros((rows, cols), dtype=np.int8)
    w[np.arange(rows)[:, None], mask_indices(cols, k, seeds)] = rng.integers(-128, 128, (rows, k))
    return {"w": w, "seeds": seeds, "k": np.int64(k)}


def permdiag_layer(rng, rows: int, cols: int, p: int) -> dict:
    """Random offsets and all-non-zero int8 diagonals (zero weights would not change the
    cycles: the engine skips zero inputs, not zero weights)."""
    from ..models import permdiag as permdiag_model
    offsets = permdiag_model.random_offsets(rows // p, cols // p, p,
                                            seed=int(rng.integers(1 << 30)))
    shape = (rows // p, cols // p, p)
    diag = rng.integers(1, 128, size=shape) * rng.choice([-1, 1], shape)
    return {"w": permdiag_model.expand(diag.astype(np.int8), offsets), "p": np.int64(p)}


def sparse_inputs(rng, batch: int, cols: int, zeros: float) -> np.ndarray:
    """int8 inputs with exactly ``round(zeros * cols)`` zero activations per vector, at random
    positions (non-zero values drawn from [-128, 127] without 0)."""
    x = rng.integers(1, 128, size=(batch, cols)) * rng.choice([-1, 1], (batch, cols))
    for row in x:
        row[rng.permutation(cols)[:round(zeros * cols)]] = 0
    return x.astype(np.int8)


def random_positions(rng, size: int, count: int) -> np.ndarray:
    """A bool mask of ``size`` with ``count`` positions set, every such mask equally likely.

    Draws the smaller of the set and the unset positions, in rounds of fresh random indices
    (duplicates of a round or of earlier ones are drawn again), so that a layer of 10^8
    weights costs a fraction of a permutation of them.
    """
    if count > size - count:
        return ~random_positions(rng, size, size - count)
    mask = np.zeros(size, dtype=bool)
    chosen = 0
    while chosen < count:
        mask[rng.integers(0, size, size=count - chosen)] = True
        chosen = int(np.count_nonzero(mask))
    return mask


def dense_layer(rng, rows: int, cols: int, zeros: float) -> dict:
    """int8 weights with ``round(zeros * rows * cols)`` zeros at random positions and the
    others in [-127, 127] without 0."""
    size = rows * cols
    kept = random_positions(rng, size, size - round(zeros * size))
    values = rng.integers(1, 128, size=int(np.count_nonzero(kept)), dtype=np.int8)
    values[rng.integers(0, 2, size=values.size, dtype=np.int8).astype(bool)] *= -1
    w = np.zeros(size, dtype=np.int8)
    w[kept] = values
    return {"w": w.reshape(rows, cols)}


def cim_layer(rng, engine, rows: int, cols: int, k: int) -> dict:
    """int8 weights under the twofold row mask of ``engine`` (``row_mask=lfsr``): one random
    seed per macro tile, ``k`` kept rows per tile. A layer with more macro tiles than the
    engine has macros gets them all (the tiler cuts it into the engine's)."""
    import dataclasses

    from ..models import cim as cim_model
    geometry = engine.geometry
    tiles = (math.ceil(cols / geometry.macro_rows), math.ceil(rows / geometry.slots))
    geometry = dataclasses.replace(geometry, macros=max(geometry.macros, tiles[0] * tiles[1]))
    seeds = rng.integers(1, geometry.macro_rows + 1, size=tiles)
    mask = cim_model.twofold_mask((rows, cols), geometry, seeds, k)
    w = rng.integers(-128, 128, size=(rows, cols)) * mask
    return {"w": w.astype(np.int8), "seeds": seeds.astype(np.int64), "k": np.int64(k)}


# --------------------------------------------------------------------------- configurations

def engine_settings(name: str, pe: int, rows: int, cols: int, max_p: int = 16) -> dict:
    """Generator settings of ``name`` at ``pe`` PEs whose memories fit one ``rows x cols``
    layer at every level of the sweep (and no more, which keeps the harness build short).

    ``dense`` and ``ternary`` share ``fan_in = min(8, cols // 4)``: ``pe * 8`` multipliers
    (adder-tree operands), as many as ``permdiag``'s ``pe`` PEs of 8 multipliers, and a
    harness that builds in about a minute at ``pe = 32``; ``lfsr`` stores up to
    ``k = N`` per row; ``permdiag`` takes ``p`` from 1 to ``max_p``; ``cim`` gets macros of
    ``8 * slots`` bit lines (``slots = 16``, or more when ``rows / 16`` tiles exceed ``pe``)
    and as many word lines as cover ``cols`` with the macros left, and ``row_mask=lfsr``.

    Raises
    ------
    ValueError
        If the layer cannot fit the engine at this ``pe`` (``cim``: more tiles than macros).
    """
    if name in ("dense", "ternary"):
        return {"pe": pe, "fan_in": max(1, min(8, cols // 4)), "max_rows": rows,
                "max_cols": cols}
    if name == "lfsr":
        return {"pe": pe, "max_rows": rows, "max_cols": cols,
                "weight_depth": math.ceil(rows / pe) * cols}
    if name == "permdiag":
        return {"pe": pe, "max_rows": rows, "max_cols": cols, "min_p": 1,
                "max_p": max(1, min(max_p, rows, cols))}
    if name == "cim":
        slots = max(16 if rows >= 16 else rows, math.ceil(rows / pe))
        col_tiles = math.ceil(rows / slots)
        if slots * 8 > 1024 or col_tiles > pe:
            raise ValueError(f"a {rows}x{cols} layer does not fit {pe} CIM macros")
        row_tiles = max(1, pe // col_tiles)
        macro_rows = -(-math.ceil(cols / row_tiles) // 8) * 8
        return {"pe": pe, "macro_rows": macro_rows, "macro_cols": 8 * slots,
                "row_mask": "lfsr"}
    raise ValueError(f"no sweep is defined for the {name} engine")


def weight_sparsity_layer(name: str, engine, rng, rows: int, cols: int,
                          sparsity: float) -> tuple[dict, float] | None:
    """A layer of ``engine`` at (about) ``sparsity`` in its own structure (see the module
    documentation) and the sparsity actually achieved, or ``None`` if the structure cannot
    represent it."""
    if name == "dense":
        layer = dense_layer(rng, rows, cols, sparsity)
        return layer, float(np.mean(layer["w"] == 0))
    if name == "ternary":
        pe, fan_in = engine.pe, engine.fan_in
        groups = math.ceil(rows / pe) * math.ceil(cols / fan_in)
        w = ternary_group_sparse(rng, rows, cols, sparsity, pe, fan_in)
        return {"w": w}, round(sparsity * groups) / groups
    if name == "lfsr":
        k = max(1, round((1 - sparsity) * cols))
        return lfsr_layer(rng, rows, cols, k), 1 - k / cols
    if name == "permdiag":
        p = round(1 / (1 - sparsity)) if sparsity < 1 else 0
        if not (p and abs(1 - 1 / p - sparsity) < 1e-9 and rows % p == 0 and cols % p == 0
                and engine.min_p <= p <= engine.max_p):
            return None
        return permdiag_layer(rng, rows, cols, p), 1 - 1 / p
    if name == "cim":
        macro_rows = engine.macro_rows
        k = max(1, round((1 - sparsity) * macro_rows))
        return cim_layer(rng, engine, rows, cols, k), 1 - k / macro_rows
    raise ValueError(f"no sweep is defined for the {name} engine")


# --------------------------------------------------------------------------- running

def run_point(simulator, engine, weights, x: np.ndarray) -> dict:
    """One layer (a weights dict, or a :class:`~secateur.hdl.engines.base.Layer` of
    ``engine``) and batch through the RTL: the ``secateur run`` report plus ``exact`` (the
    RTL equals the golden model)."""
    from ..hdl.engines.base import Layer
    layer = weights if isinstance(weights, Layer) else engine.layer(weights)
    result = simulator.run(layer, x)
    report = result.report(engine, layer, "verilator")
    report["exact"] = bool(np.array_equal(result.y, layer.reference(x)))
    return report


def _summary(report: dict, batch: int) -> dict:
    energy = report.get("energy_pj")
    return {"cycles": int(report["cycles"]), "cycles_per_vector": report["cycles"] / batch,
            "ideal_cycles": report.get("ideal_cycles"),
            "utilization": float(report["utilization"]), "useful_ops": int(report["useful_ops"]),
            "energy_pj_per_vector": None if energy is None else energy / batch,
            "exact": report["exact"]}


def sweep_engine(name: str, pe: int, rows: int, cols: int, *,
                 sparsities=WEIGHT_SPARSITIES, input_zeros=(), batch: int = 8,
                 seed: int = 2026, simulator: str = "verilator", progress=None) -> dict:
    """Cycles, utilization and energy of ``name`` at ``pe`` PEs on a ``rows x cols`` layer.

    ``weight`` rows: one per level of ``sparsities`` the engine's structure represents, on
    dense random int8 inputs (activation sparsity 0). ``activation`` rows: one per level of
    ``input_zeros`` (fraction of zero inputs per vector), on the layer of the first weight
    level (normally dense). Every point is checked against the golden model.

    Returns
    -------
    dict
        ``engine``, ``params``, ``lanes``, ``sparsity_kind``, ``rows``, ``cols``, ``batch``,
        ``build_seconds``, ``weight`` and ``activation`` (lists of dicts with ``sparsity``,
        ``cycles``, ``cycles_per_vector``, ``ideal_cycles``, ``utilization``,
        ``useful_ops``, ``energy_pj_per_vector`` and ``exact``).

    ``progress``, a callable of a line: the harness build's progress
    (:class:`~secateur.sim.runner.BatchSimulator`).
    """
    from ..sim.runner import BatchSimulator
    from .registry import make_engine
    engine = make_engine(name, **engine_settings(name, pe, rows, cols))
    runner = BatchSimulator(engine, simulator, progress=progress)
    start = time.perf_counter()
    runner.build()
    build_seconds = time.perf_counter() - start
    rng = np.random.default_rng(seed)
    weight_rows, first = [], None
    for level in sparsities:
        made = weight_sparsity_layer(name, engine, rng, rows, cols, level)
        if made is None:
            continue
        weights, achieved = made
        first = first or weights
        x = sparse_inputs(rng, batch, cols, 0.0)
        report = run_point(runner, engine, weights, x)
        weight_rows.append({"sparsity": achieved, "requested": level, **_summary(report, batch)})
    activation_rows = []
    for zeros in input_zeros:
        if first is None:
            break
        x = sparse_inputs(rng, batch, cols, zeros)
        report = run_point(runner, engine, first, x)
        activation_rows.append({"sparsity": zeros, **_summary(report, batch)})
    return {"engine": name, "params": engine.params, "lanes": engine.lanes,
            "sparsity_kind": SPARSITY_KINDS[name], "rows": rows, "cols": cols, "batch": batch,
            "build_seconds": round(build_seconds, 1), "weight": weight_rows,
            "activation": activation_rows}
