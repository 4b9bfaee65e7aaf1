"""``secateur estimate``: what a layer and a batch cost on an engine, from the exact performance
model (:mod:`secateur.models.perf`), without building or simulating any RTL.

The layer is a weights file, or drawn at a weight density in the engine's own structure
(:func:`secateur.gen.sweep.weight_sparsity_layer`: zero groups for ternary, ``k / N`` for
lfsr, ``p = round(1 / density)`` for permdiag, ``k / macro_rows`` row masks for cim with
``row_mask=lfsr``, unstructured zeros for dense and for cim without a row mask); the inputs
are a file, or random int8 values at an input density. A layer larger than the engine is cut
by the tiler (:mod:`secateur.gen.tiling`) as ``secateur run`` cuts it, and its tiles' figures
add up as their runs' do: the cycles equal ``secateur run``'s for the same layer and inputs.
"""

from __future__ import annotations

import time

import numpy as np

from ..models import perf
from .safeio import MAX_ARRAY_ELEMENTS
from .sweep import SPARSITY_KINDS, dense_layer, sparse_inputs, weight_sparsity_layer
from .tiling import add_counters, tile_layer

__all__ = ["MAX_BATCH", "check_options", "draw_weights", "draw_inputs", "estimate_layer", "run",
           "summary"]

#: The most input vectors an estimate draws or reads: the model steps through the vectors of
#: every tile one by one.
MAX_BATCH = 4096

#: What the report says the model is.
MODEL = ("models/perf: exact against the RTL when res never stalls and act beats come back "
         "to back (cycles equal secateur run's)")


def check_options(*, shape, density, inputs, input_density, batch) -> None:
    """Refuse option combinations and values before any file is read.

    Parameters
    ----------
    shape : tuple of int or None
        ``--shape`` as ``(M, N)``.
    density : float or None
        ``--density``, the fraction of weights kept.
    inputs : str or None
        ``--inputs``.
    input_density : float or None
        ``--input-density``, the fraction of non-zero inputs.
    batch : int or None
        ``--batch``.

    Raises
    ------
    ValueError
        Naming the option and what it needs or takes.
    """
    if (shape is None) != (density is None):
        raise ValueError("--shape and --density go together (the layer drawn at that weight "
                         "density)")
    if shape is not None:
        rows, cols = shape
        if rows < 1 or cols < 1 or rows * cols > MAX_ARRAY_ELEMENTS:
            raise ValueError(f"--shape must be MxN with M, N >= 1 and M*N at most "
                             f"{MAX_ARRAY_ELEMENTS}, not {rows}x{cols}")
        if not 0 < density <= 1:
            raise ValueError(f"--density must be in (0, 1], not {density:g}")
    if inputs is not None and (input_density is not None or batch is not None):
        given = "--input-density" if input_density is not None else "--batch"
        raise ValueError(f"{given} draws random inputs; --inputs gives them")
    if input_density is not None and not 0 <= input_density <= 1:
        raise ValueError(f"--input-density must be in [0, 1], not {input_density:g}")
    if batch is not None and not 1 <= batch <= MAX_BATCH:
        raise ValueError(f"--batch must be in [1, {MAX_BATCH}], not {batch}")


def draw_weights(engine, shape: tuple[int, int], density: float,
                 rng: np.random.Generator) -> tuple[dict, dict]:
    """A weights dict of ``engine``'s structure at about ``density`` and what was drawn.

    Parameters
    ----------
    engine : Engine
    shape : tuple of int
        ``(M, N)``.
    density : float
        Fraction of weights kept, in ``(0, 1]``.
    rng : numpy.random.Generator

    Returns
    -------
    tuple of dict
        The weights and the report's ``weights`` entry: ``drawn`` (shape, requested and
        achieved density, the structure, ``seed`` filled in by the caller).

    Raises
    ------
    ValueError
        If the engine's structure cannot represent ``density`` on this shape (permdiag:
        ``p = round(1 / density)`` must give ``1 / p == density``, divide ``M`` and ``N``
        and lie in ``[min_p, max_p]``).
    """
    rows, cols = shape
    if engine.name == "cim" and engine.row_mask == "none":
        # Without a row mask the CIM structure has no weight sparsity of its own.
        weights = dense_layer(rng, rows, cols, 1 - density)
        structure = "zero weights, unstructured (row_mask=none: no row mask)"
        achieved = 1 - float(np.mean(weights["w"] == 0))
    else:
        made = weight_sparsity_layer(engine.name, engine, rng, rows, cols, 1 - density)
        if made is None:
            raise ValueError(f"the {engine.name} engine cannot draw density {density:g} on "
                             f"{rows}x{cols}: p = 1/density must be an integer in "
                             f"[{engine.min_p}, {engine.max_p}] (min_p, max_p) that divides "
                             f"{rows} and {cols}")
        weights, sparsity = made
        structure, achieved = SPARSITY_KINDS[engine.name], 1 - sparsity
    return weights, {"shape": [rows, cols], "density": density, "achieved_density": achieved,
                     "structure": structure}


def draw_inputs(rng: np.random.Generator, batch: int, cols: int, density: float) -> np.ndarray:
    """Random int8 inputs, ``round((1 - density) * cols)`` zeros per vector
    (:func:`secateur.gen.sweep.sparse_inputs`).

    Parameters
    ----------
    rng : numpy.random.Generator
    batch, cols : int
        The shape ``(B, N)``.
    density : float
        Fraction of non-zero inputs, in ``[0, 1]``.

    Returns
    -------
    numpy.ndarray
        int8 ``(batch, cols)``.
    """
    return sparse_inputs(rng, batch, cols, 1 - density)


def estimate_layer(engine, weights, x: np.ndarray) -> dict:
    """The estimate of ``weights`` (any size the tiler takes) on the batch ``x``.

    Parameters
    ----------
    engine : Engine
    weights : mapping of str to numpy.ndarray
        A weights npz of the engine.
    x : numpy.ndarray
        int8 ``(B, N)``.

    Returns
    -------
    dict
        The report: ``secateur run``'s figures (``cycles``, ``load_cycles``, every work and
        energy counter, ``utilization``, ``params``, ``layer``) with ``load_beats`` and
        ``tiling`` as a tiled run reports them, plus ``first_result_latency``,
        ``latency`` (the manifest's), ``cycles_per_vector``, ``storage_bits`` and ``model``.

    Raises
    ------
    TypeError, ValueError
        If the weights are not a layer of the engine or ``x`` not a batch of it.
    """
    start = time.perf_counter()
    tiled = tile_layer(engine, weights)
    x = tiled.check_inputs(x)
    estimates = [perf.estimate(tile.layer, np.ascontiguousarray(x[:, tile.cols]))
                 for tile in tiled.tiles]
    counters, layer_storage = {}, {}
    for estimate in estimates:
        add_counters(counters, estimate.counters)
        add_counters(layer_storage, estimate.storage["layer"])
    batch, cycles = x.shape[0], sum(estimate.cycles for estimate in estimates)
    energy = counters.get("energy_pj")
    return {
        "engine": engine.name,
        "batch": batch,
        **counters,
        "cycles": cycles,
        "cycles_per_vector": cycles / batch,
        "first_result_latency": estimates[0].first_result_latency,
        "latency": engine.latency,
        "load_beats": sum(estimate.load_beats for estimate in estimates),
        "load_cycles": sum(estimate.load_cycles for estimate in estimates),
        "utilization": counters["useful_ops"] / (cycles * engine.lanes),
        "energy_pj": energy,
        "energy_pj_per_vector": None if energy is None else energy / batch,
        "storage_bits": {"engine": estimates[0].storage["engine"], "layer": layer_storage},
        "tiling": {"tiles": len(tiled.tiles), "column_tiles": tiled.column_tiles,
                   "finished_on_chip": tiled.finished_on_chip},
        "params": engine.params,
        "layer": tiled.report_parameters(),
        "model": MODEL,
        "model_seconds": round(time.perf_counter() - start, 3),
    }


def run(engine, *, weights=None, weights_file=None, shape=None, density=None, inputs=None,
        inputs_file=None, input_density=None, batch=None, seed: int = 0) -> dict:
    """``secateur estimate``: the report of a weights dict (read from ``weights_file``) or of
    a layer of ``shape`` drawn at ``density``, on ``inputs`` (read from ``inputs_file``) or
    on ``batch`` random vectors (default 1) at ``input_density`` (default 1), all drawn from
    ``seed``. Call :func:`check_options` first.

    Returns
    -------
    dict
        :func:`estimate_layer`'s report with ``weights`` and ``inputs``: ``{"file": path}``
        or ``{"drawn": {...}}`` (what was drawn, and the seed).

    Raises
    ------
    TypeError, ValueError
        If the weights are not a layer of the engine, the inputs not a batch of it or have
        more than :data:`MAX_BATCH` vectors, or the density cannot be drawn.
    """
    rng = np.random.default_rng(seed)
    if weights is None:
        weights, drawn = draw_weights(engine, shape, density, rng)
        weights_source = {"drawn": dict(drawn, seed=seed)}
    else:
        engine.check_weight_keys(weights, weights)
        weights_source = {"file": str(weights_file)}
    if inputs is None:
        batch, input_density = batch or 1, 1.0 if input_density is None else input_density
        cols = int(np.asarray(weights["w"]).shape[1])
        inputs = draw_inputs(rng, batch, cols, input_density)
        inputs_source = {"drawn": {"batch": batch, "density": input_density, "seed": seed}}
    else:
        if inputs.ndim == 2 and inputs.shape[0] > MAX_BATCH:
            raise ValueError(f"inputs file {inputs_file} has {inputs.shape[0]} vectors; an "
                             f"estimate takes at most {MAX_BATCH}")
        inputs_source = {"file": str(inputs_file)}
    return dict(estimate_layer(engine, weights, inputs), weights=weights_source,
                inputs=inputs_source)


def summary(report: dict) -> str:
    """The one line ``secateur estimate`` prints for :func:`run`'s ``report``."""
    tiles = report["tiling"]["tiles"]
    energy = report["energy_pj"]
    return (f"{report['engine']}: {report['batch']} vectors"
            f"{'' if tiles == 1 else f' in {tiles} tiles'}, {report['cycles']} cycles "
            f"(model), first result after {report['first_result_latency']}, utilization "
            f"{report['utilization']:.3f}, {report['load_beats']} load beats, "
            f"{'no sourced energy' if energy is None else f'{energy:.4g} pJ'}")
