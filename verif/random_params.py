"""Constrained-random engine parameter sets: every generator parameter of an engine drawn from
its declared range (:attr:`~secateur.hdl.engines.base.Engine.PARAMS`), within a build budget,
seeded and recorded, so that the regression covers parameter sets nobody picked by hand.

Draw (:func:`draw_params`)
    Parameters are drawn in declaration order, each from its legal range given the ones
    before it (a range may depend on them, as ``slots <= pe``): a choice uniformly, an
    integer log-uniformly between its minimum and ``min(maximum, BUDGET[name])`` (small
    values, non-powers of two and both ends included), or, one time in :data:`DEFAULT_ODDS`,
    the parameter's default (which may itself be derived). A set that the engine's
    cross-parameter checks refuse (``slots`` must divide ``pe``, powers of two...) is drawn
    again; the engine's constructor is the only judge of legality.

Budget (:data:`BUDGET`)
    Upper bounds on the parameters that size the hardware, so that a drawn engine's harness
    builds in seconds. A parameter without a budget entry ranges over everything legal.

Recording
    :func:`draw_params` is a pure function of ``(engine, seed)``; :func:`describe` is the
    one line a failing test prints, with the seed that replays it
    (``SECATEUR_TB_SEED=<seed>``).

Layers (:func:`draw_layer`)
    A random layer that the drawn engine holds: a shape up to its limits (the largest one
    sometimes, 1 x 1 sometimes) and the engine's structure at a random density, drawn with
    the per-engine generators of :mod:`secateur.gen.sweep`.
"""

from __future__ import annotations

import math

import numpy as np

from ..gen.registry import engine_class, make_engine
from ..hdl.engines.base import Engine, Param

__all__ = ["BUDGET", "DEFAULT_ODDS", "MAX_ATTEMPTS", "draw_params", "draw_engine", "describe",
           "draw_layer"]

#: The largest value drawn for each parameter that sizes the hardware.
BUDGET = {
    "pe": 6, "fan_in": 12, "max_rows": 24, "max_cols": 48, "max_groups": 48,
    "weight_depth": 192, "act_lanes": 16, "mults": 4, "max_p": 8, "min_p": 8,
    "act_per_slot": 8, "drain_pack": 4, "macro_rows": 48, "macro_cols": 48, "adcs": 16,
    "adc_latency": 3,
}
#: One draw in this many takes the parameter's default instead.
DEFAULT_ODDS = 4
#: Draws of a whole set before giving up (a budget that leaves no legal set is a bug).
MAX_ATTEMPTS = 1000


def _draw_value(param: Param, resolved: dict, rng: np.random.Generator):
    if param.choices:
        return param.choices[int(rng.integers(len(param.choices)))]
    maximum = param.maximum(resolved) if callable(param.maximum) else param.maximum
    high = min(maximum, BUDGET.get(param.name, maximum))
    low = param.minimum
    if rng.integers(DEFAULT_ODDS) == 0 and param.default is not None:
        default = param.default(resolved) if callable(param.default) else param.default
        if low <= default <= high:
            return default
    if high <= low:
        return low
    # Log-uniform over [low, high]: small values are cheap and most likely, the top of the
    # budget still comes up; +1 keeps a minimum of 0 drawable.
    value = math.exp(rng.uniform(math.log(low + 1), math.log(high + 2))) - 1
    return int(min(high, max(low, math.floor(value))))


def draw_params(name: str, seed: int) -> dict:
    """A legal parameter set of engine ``name`` within :data:`BUDGET`, drawn from ``seed``.

    Parameters
    ----------
    name : str
        A registered engine.
    seed : int
        The draw's seed, ``>= 0``.

    Returns
    -------
    dict
        Every parameter of the engine, resolved (what ``make_engine(name, **params)`` takes).

    Raises
    ------
    ValueError
        If ``name`` is not an engine, or no legal set was drawn in :data:`MAX_ATTEMPTS`.
    """
    cls = engine_class(name)
    rng = np.random.default_rng(seed)
    for _ in range(MAX_ATTEMPTS):
        resolved: dict = {}
        for param in cls.PARAMS:
            resolved[param.name] = _draw_value(param, resolved, rng)
        try:
            return make_engine(name, **resolved).params
        except (TypeError, ValueError):
            continue
    raise ValueError(f"no legal {name} parameter set within the budget after {MAX_ATTEMPTS} "
                     f"draws (seed {seed})")


def draw_engine(name: str, seed: int) -> Engine:
    """The engine of :func:`draw_params`."""
    return make_engine(name, **draw_params(name, seed))


def describe(name: str, seed: int) -> str:
    """One line naming the drawn set and how to replay it."""
    params = draw_params(name, seed)
    settings = " ".join(f"{key}={value}" for key, value in params.items())
    return f"{name} {settings} (drawn from seed {seed}; replay: SECATEUR_TB_SEED={seed})"


def _shape(rng, max_rows: int, max_cols: int, row_step: int = 1, col_step: int = 1):
    """A random ``(rows, cols)``, multiples of the steps, up to the limits; the largest one a
    quarter of the time, the smallest one an eighth."""
    largest = (max_rows // row_step * row_step, max_cols // col_step * col_step)
    roll = rng.random()
    if roll < 0.25:
        return largest
    if roll < 0.375:
        return row_step, col_step
    return (int(rng.integers(1, largest[0] // row_step + 1)) * row_step,
            int(rng.integers(1, largest[1] // col_step + 1)) * col_step)


def draw_layer(engine: Engine, rng: np.random.Generator) -> dict:
    """A random legal layer of ``engine`` (a weights dict of its structure keys).

    Parameters
    ----------
    engine : Engine
    rng : numpy.random.Generator

    Returns
    -------
    dict
        What ``engine.layer`` takes, without requantizer or bias keys.
    """
    from ..gen import sweep
    name, density = engine.name, float(rng.choice([0.0, 0.3, 1.0, rng.random()]))
    if name == "dense":
        return sweep.dense_layer(rng, *_shape(rng, engine.max_rows, engine.max_cols),
                                 1.0 - density)
    if name == "ternary":
        rows, cols = _shape(rng, engine.max_rows, engine.max_cols)
        groups = math.ceil(rows / engine.pe) * math.ceil(cols / engine.fan_in)
        zero_groups = max(1.0 - density, 1.0 - engine.max_groups / groups)
        return {"w": sweep.ternary_group_sparse(rng, rows, cols, zero_groups, engine.pe,
                                                engine.fan_in)}
    if name == "lfsr":
        rows, cols = _shape(rng, engine.max_rows, engine.max_cols)
        k = max(1, min(cols, round(density * cols)))
        # ceil(M / pe) * k must fit the weight memory: fewer rows when it does not.
        k = min(k, engine.weight_depth)
        rows = min(rows, engine.weight_depth // k * engine.pe)
        return sweep.lfsr_layer(rng, rows, cols, k)
    if name == "permdiag":
        legal = [p for p in range(engine.min_p, engine.max_p + 1)
                 if p <= min(engine.max_rows, engine.max_cols)]
        p = int(rng.choice(legal))
        return sweep.permdiag_layer(rng, *_shape(rng, engine.max_rows, engine.max_cols, p, p), p)
    if name == "cim":
        geometry = engine.geometry
        input_tiles = int(rng.integers(1, geometry.macros + 1))
        output_tiles = geometry.macros // input_tiles
        rows, cols = _shape(rng, output_tiles * geometry.slots, input_tiles * geometry.macro_rows)
        if engine.row_mask == "lfsr":
            k = max(1, round(density * geometry.macro_rows))
            return sweep.cim_layer(rng, engine, rows, cols, k)
        return {"w": rng.integers(-128, 128, (rows, cols)).astype(np.int8)}
    raise ValueError(f"draw_layer has no rule for the {name} engine")
