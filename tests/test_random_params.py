"""Constrained-random engine parameter sets (verif/random_params.py): the draw itself, and the
RTL of drawn engines on random layers, direct and tiled, against the golden model.

Each drawn test's seed (the ``draw_seed`` fixture: another every run) draws the parameter
set; a failure prints it with the seed, and ``SECATEUR_TB_SEED=<seed>`` replays it. ``make
test`` runs one drawn set per engine, ``make regress`` four (``make regress N=50``: fifty), and
the summary counts the sets exercised and lists the failed ones.
"""

import math

import numpy as np
import pytest

from secateur import make_engine
from secateur.gen.registry import engine_class, engine_names
from secateur.gen.tiling import tile_layer
from secateur.verif.random_params import BUDGET, describe, draw_engine, draw_layer, draw_params

from conftest import DRAWS, in_make_test


@pytest.mark.parametrize("name", engine_names())
def test_draws_are_legal_reproducible_and_within_the_budget(name):
    draws = [draw_params(name, seed) for seed in range(40)]
    assert draws[7] == draw_params(name, 7)
    for params in draws:
        make_engine(name, **params)
        for key, value in params.items():
            if key in BUDGET and not isinstance(value, str):
                assert value <= BUDGET[key], f"{key} = {value} beyond the budget"
    # The draws cover the ranges: several values of every integer parameter with room, odd
    # (non-power-of-two) ones among them, and every choice.
    for param in engine_class(name).PARAMS:
        values = {params[param.name] for params in draws}
        if param.choices:
            assert values == set(param.choices), f"{param.name} never drew {set(param.choices) - values}"
        elif BUDGET.get(param.name, 2) >= 2 and param.name not in ("tree_stages",):
            assert len(values) >= 2, f"{param.name} always {values}"
    pes = {params["pe"] for params in draws}
    assert any(pe & (pe - 1) for pe in pes), f"pe only powers of two: {pes}"


def test_an_impossible_budget_is_reported(monkeypatch):
    from secateur.verif import random_params
    monkeypatch.setattr(random_params, "MAX_ATTEMPTS", 3)
    # permdiag needs min_p <= max_p and slots dividing pe; with p pinned above every size
    # nothing is legal.
    monkeypatch.setitem(random_params.BUDGET, "max_rows", 1)
    monkeypatch.setattr(random_params, "DEFAULT_ODDS", 10**9)
    original = random_params._draw_value

    def no_small_p(param, resolved, rng):
        return 8 if param.name == "min_p" else original(param, resolved, rng)
    monkeypatch.setattr(random_params, "_draw_value", no_small_p)
    with pytest.raises(ValueError, match=r"^no legal permdiag parameter set within the budget "
                                         r"after 3 draws \(seed 5\)$"):
        draw_params("permdiag", 5)


def _result_keys(rng, rows: int) -> dict:
    keys = {}
    if rng.random() < 0.5:
        keys.update(mult=rng.integers(-2**15, 2**15, rows), shift=np.int64(rng.integers(0, 30)),
                    relu=np.bool_(rng.random() < 0.5))
    if rng.random() < 0.5:
        keys["bias"] = rng.integers(-2**31, 2**31, rows)
    return keys


def _grown(engine):
    """The same engine with room for a layer three times larger (more macros for cim), to
    draw the layers that the tiler cuts for ``engine``."""
    params, grow = engine.params, {}
    # The lfsr tiler cuts rows only, each row's k kept weights in one PE's memory: its
    # columns and weight_depth stay, so that every drawn k fits the engine itself.
    for key in ("max_rows", "max_cols", "weight_depth"):
        if key in params and not (key in ("max_cols", "weight_depth") and engine.name == "lfsr"):
            grow[key] = params[key] * 3
    if engine.name == "ternary":
        del params["max_groups"]  # the default: every group of the larger layer
    if engine.name == "permdiag":
        # A block size the engine holds a whole block of.
        grow["max_p"] = min(params["max_p"], params["max_rows"], params["max_cols"])
    if engine.name == "cim":
        grow["pe"] = min(64, params["pe"] * 9)
    return make_engine(engine.name, **dict(params, **grow))


@pytest.mark.sim
@pytest.mark.parametrize("draw", in_make_test(range(DRAWS), {0}))
@pytest.mark.parametrize("name", engine_names())
def test_drawn_engines_are_bit_exact_on_random_layers(name, draw, draw_seed, record_property):
    from secateur.sim.runner import BatchSimulator
    seed = draw_seed
    engine = draw_engine(name, seed)
    what = describe(name, seed)
    record_property("drawn", what)
    record_property("draw_seed", seed)
    simulator = BatchSimulator(engine)
    rng = np.random.default_rng(seed)
    grown = _grown(engine)
    for case in range(4):
        # Two layers the engine holds, then two that it takes in tiles.
        weights = draw_layer(engine if case < 2 else grown, rng)
        rows, cols = weights["w"].shape
        tiled = tile_layer(engine, dict(weights, **_result_keys(rng, rows)))
        x = rng.integers(-128, 128, (int(rng.integers(1, 4)), cols)).astype(np.int8)
        x[0, : math.ceil(cols / 2)] = -128
        y = tiled.run(simulator, x).y
        expected = tiled.reference(x)
        assert np.array_equal(y, expected), (
            f"{what}: layer {case} ({rows}x{cols}, {len(tiled.tiles)} tiles): "
            f"{int(np.count_nonzero(y != expected))} outputs differ")
