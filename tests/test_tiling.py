"""The tiler (gen/tiling.py): layers 3-5x the engine instance in each dimension that it can
cut, on every engine; the tiles' golden model against the engine's model of the whole layer,
and the RTL against both."""

import numpy as np
import pytest

from secateur import make_engine
from secateur.gen import sweep
from secateur.gen.tiling import MAX_COLS, tile_layer
from secateur.models import cim as cim_model
from secateur.models import dense as dense_model
from secateur.models import lfsr as lfsr_model
from secateur.models import permdiag as permdiag_model
from secateur.models import ternary as ternary_model
from secateur.models.requant import RequantParams

#: Engine -> (small instance, layer shape 3-5x it where the engine's columns can be cut).
CASES = {
    "dense": (dict(pe=2, fan_in=4, max_rows=8, max_cols=16), (31, 70)),
    "ternary": (dict(pe=2, fan_in=4, max_rows=8, max_cols=16, max_groups=6), (29, 61)),
    "lfsr": (dict(pe=2, max_rows=8, max_cols=40, weight_depth=24), (37, 40)),
    "permdiag": (dict(pe=2, mults=2, slots=2, max_rows=8, max_cols=12, min_p=2, max_p=4),
                 (32, 48)),
    "cim": (dict(pe=2, macro_rows=16, macro_cols=16, adcs=2, rows=4, adc_bits=3,
                 row_mask="lfsr"), (9, 70)),
}


def _weights(name, engine, shape, rng) -> dict:
    rows, cols = shape
    if name == "dense":
        return sweep.dense_layer(rng, rows, cols, 0.3)
    if name == "ternary":
        return {"w": sweep.ternary_group_sparse(rng, rows, cols, 0.5, engine.pe, engine.fan_in)}
    if name == "lfsr":
        return sweep.lfsr_layer(rng, rows, cols, 7)
    if name == "permdiag":
        return sweep.permdiag_layer(rng, rows, cols, 4)
    # The whole layer's masks, on an instance with macros enough to hold it.
    whole = make_engine("cim", **dict(CASES["cim"][0], pe=64))
    return sweep.cim_layer(rng, whole, rows, cols, 5)


def _whole_layer_model(name, engine, weights, x, requant, bias):
    """The engine's golden model of the whole layer, as if one instance held it."""
    w = weights["w"]
    if name == "dense":
        return dense_model.reference(w, x, requant, bias)
    if name == "ternary":
        return ternary_model.reference(w, x, requant, bias)
    if name == "lfsr":
        return lfsr_model.reference(w, weights["seeds"], weights["k"], x, requant, bias)
    if name == "permdiag":
        return permdiag_model.reference(w, x, int(weights["p"]), requant, bias)
    return cim_model.reference(w, x, engine.rows, engine.adc_bits, engine.adc_shift, requant,
                               bias)


def _result_keys(rng, rows, requant: bool, bias: bool) -> dict:
    keys = {}
    if requant:
        keys.update(RequantParams(rng.integers(-2**15, 2**15, rows), 20, True).to_npz())
    if bias:
        keys["bias"] = rng.integers(-2**31, 2**31, rows)
    return keys


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("requant, bias", [(False, False), (True, True), (False, True)])
def test_tiles_equal_the_model_of_the_whole_layer(name, requant, bias, seed):
    params, shape = CASES[name]
    engine = make_engine(name, **params)
    rng = np.random.default_rng(seed)
    weights = _weights(name, engine, shape, rng)
    keys = _result_keys(rng, shape[0], requant, bias)
    tiled = tile_layer(engine, dict(weights, **keys))
    x = rng.integers(-128, 128, (4, shape[1])).astype(np.int8)
    x[0] = -128
    expected = _whole_layer_model(name, engine, weights, x, tiled.requant, tiled.bias)
    assert np.array_equal(tiled.reference(x), expected)
    # Every output row and input column is covered exactly once.
    cover = np.zeros(shape, dtype=int)
    for tile in tiled.tiles:
        cover[tile.rows, tile.cols] += 1
    assert (cover == 1).all()
    assert len(tiled.tiles) >= 3
    if name == "lfsr":
        assert tiled.column_tiles == 1
    else:
        assert tiled.column_tiles >= 3 and not tiled.finished_on_chip


def test_tiles_follow_the_structure():
    ternary = make_engine("ternary", **CASES["ternary"][0])
    tiled = tile_layer(ternary, _weights("ternary", ternary, (29, 61), np.random.default_rng(1)))
    for tile in tiled.tiles:
        assert tile.rows.start % ternary.pe == 0 and tile.cols.start % ternary.fan_in == 0
        assert tile.layer.nonzero_groups.sum() <= ternary.max_groups
    permdiag = make_engine("permdiag", **CASES["permdiag"][0])
    tiled = tile_layer(permdiag, _weights("permdiag", permdiag, (32, 48),
                                          np.random.default_rng(1)))
    assert all(tile.rows.start % 4 == 0 and tile.cols.start % 4 == 0 for tile in tiled.tiles)
    cim = make_engine("cim", **CASES["cim"][0])
    tiled = tile_layer(cim, _weights("cim", cim, (9, 70), np.random.default_rng(1)))
    for tile in tiled.tiles:
        assert tile.cols.start % cim.macro_rows == 0
        assert tile.layer.row_tiles * tile.layer.col_tiles <= cim.pe


@pytest.mark.parametrize("name", ["dense", "ternary"])
def test_an_engine_with_fewer_rows_than_pes_takes_tiles_of_its_rows(name):
    """max_rows < pe (a legal draw of verif/random_params, which found the ternary tiler
    cutting whole row blocks of pe rows there): every tile fits, and the tiles' model equals
    the whole layer's."""
    engine = make_engine(name, pe=2, fan_in=3, max_rows=1, max_cols=5,
                         **({"max_groups": 2} if name == "ternary" else {}))
    rng = np.random.default_rng(3)
    w = rng.integers(-1, 2, size=(5, 11)).astype(np.int8)
    tiled = tile_layer(engine, {"w": w})
    assert all(tile.rows.stop - tile.rows.start <= engine.max_rows for tile in tiled.tiles)
    x = rng.integers(-128, 128, size=(3, 11)).astype(np.int8)
    assert np.array_equal(tiled.reference(x), x.astype(np.int64) @ w.T.astype(np.int64))


def test_a_layer_that_fits_is_one_tile_finished_on_chip():
    engine = make_engine("dense", **CASES["dense"][0])
    rng = np.random.default_rng(0)
    tiled = tile_layer(engine, dict(sweep.dense_layer(rng, 8, 16, 0.0),
                                    **_result_keys(rng, 8, True, True)))
    assert len(tiled.tiles) == 1 and tiled.finished_on_chip
    assert tiled.tiles[0].layer.bias is not None and tiled.tiles[0].layer.requant is not None


@pytest.mark.parametrize("name, weights, error, message", [
    ("lfsr", None, ValueError,
     r"^weights w has shape \(4, 41\); this lfsr engine takes at most 1048576 x 40 \(its LFSR "
     r"masks span whole rows, so columns are not tiled\)$"),
    ("permdiag", {"w": np.zeros((16, 16), dtype=np.int8), "p": np.int64(16)}, ValueError,
     r"^permdiag layer has p = 16; this engine holds at most 8 x 12 \(max_rows x max_cols\), "
     r"less than one p x p block$"),
    ("dense", {"w": np.zeros((3,), dtype=np.int8)}, ValueError,
     r"^weights w must be a 2-D \(M, N\) matrix with M, N >= 1, not shape \(3,\)$"),
    ("dense", {"w": np.zeros((2, MAX_COLS + 1), dtype=np.int8)}, ValueError,
     r"^weights w has shape \(2, 1048577\); this dense engine takes at most 1048576 x 1048576 "
     r"\(the tiler's limit\)$"),
    ("dense", {"w": np.zeros((2, 2), dtype=np.int8), "bias": np.zeros(3, dtype=np.int64)},
     ValueError, r"^bias must have shape \(2,\), one per output row, not \(3,\)$"),
])
def test_refusals(name, weights, error, message):
    engine = make_engine(name, **CASES[name][0])
    if weights is None:
        weights = sweep.lfsr_layer(np.random.default_rng(0), 4, 41, 3)
    with pytest.raises(error, match=message):
        tile_layer(engine, weights)


@pytest.mark.sim
@pytest.mark.parametrize("name", sorted(CASES))
def test_rtl_runs_tiled_layers_bit_exactly(name, seed):
    from secateur.sim.runner import BatchSimulator
    params, shape = CASES[name]
    engine = make_engine(name, **params)
    rng = np.random.default_rng(seed)
    weights = _weights(name, engine, shape, rng)
    tiled = tile_layer(engine, dict(weights, **_result_keys(rng, shape[0], True, True)))
    x = rng.integers(-128, 128, (3, shape[1])).astype(np.int8)
    run = tiled.run(BatchSimulator(engine), x)
    assert np.array_equal(run.y, tiled.reference(x))
    assert np.array_equal(run.y, _whole_layer_model(name, engine, weights, x, tiled.requant,
                                                    tiled.bias))
    report = run.report("verilator")
    assert report["tiling"]["tiles"] == len(tiled.tiles)
    assert report["load_beats"] == sum(len(tile.layer.load_beats()) for tile in tiled.tiles)
    assert report["cycles"] == sum(r.cycles for r in run.runs)
    assert report["useful_ops"] == sum(r.counters["useful_ops"] for r in run.runs)


# --------------------------------------------------------------------------- secateur run

def _run_cli(capsys, *argv):
    from secateur.gen.cli import main
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.sim
def test_secateur_run_tiles_a_layer_larger_than_the_engine(capsys, tmp_path, seed):
    import json
    params, shape = CASES["dense"]
    rng = np.random.default_rng(seed)
    weights = dict(sweep.dense_layer(rng, *shape, 0.3), **_result_keys(rng, shape[0], True, True))
    np.savez(tmp_path / "w.npz", **weights)
    x = rng.integers(-128, 128, (2, shape[1])).astype(np.int8)
    np.save(tmp_path / "x.npy", x)
    settings = [item for key, value in params.items() if key != "pe"
                for item in ("--set", f"{key}={value}")]
    status, out, err = _run_cli(capsys, "run", "--engine", "dense", "--pe", str(params["pe"]),
                                *settings, "--weights", str(tmp_path / "w.npz"), "--inputs",
                                str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npy"),
                                "--report", str(tmp_path / "r.json"))
    assert status == 0, err
    tiled = tile_layer(make_engine("dense", **params), weights)
    assert f"2 vectors in {len(tiled.tiles)} tiles" in out and "0 mismatches" in out
    y = np.load(tmp_path / "y.npy")
    assert y.dtype == np.int8 and np.array_equal(y, tiled.reference(x))
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["tiling"] == {"tiles": len(tiled.tiles), "column_tiles": tiled.column_tiles,
                                "finished_on_chip": False,
                                "host_adds": 2 * shape[0] * (tiled.column_tiles - 1)}
    assert report["load_beats"] == tiled.load_beats() and report["mismatches"] == 0


def test_secateur_run_refuses_lfsr_columns_beyond_max_cols_from_the_header(capsys, tmp_path):
    np.savez(tmp_path / "w.npz", **sweep.lfsr_layer(np.random.default_rng(0), 4, 41, 3))
    np.save(tmp_path / "x.npy", np.zeros((1, 41), dtype=np.int8))
    status, _, err = _run_cli(capsys, "run", "--engine", "lfsr", "--pe", "2", "--set",
                              "max_cols=40", "--weights", str(tmp_path / "w.npz"), "--inputs",
                              str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npy"))
    assert status == 2
    assert err == (f"secateur: error: weights file {tmp_path / 'w.npz'}: w has shape (4, 41); "
                   f"the lfsr engine takes layers of at most 1048576 x 40, in tiles\n")


def test_an_error_in_a_tile_names_the_tile():
    engine = make_engine("ternary", **CASES["ternary"][0])
    w = np.zeros((29, 61), dtype=np.int8)
    w[10, 20] = 2
    with pytest.raises(ValueError, match=r"^in the tile of rows 8\.\.15 and columns 16\.\.31 "
                                         r"\(positions within the tile\): .*w\[2, 4\] = 2"):
        tile_layer(engine, {"w": w})
