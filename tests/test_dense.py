"""The dense int8 engine: golden model, parameters, layer packing, and the RTL end to end
through the batch simulator and ``secateur run`` (the cocotb testbench is in
``test_tb_engines``). Every simulation uses one engine configuration, so one Verilator build."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import run_timed

from secateur.gen.registry import make_engine
from secateur.hdl.loadmap import DATA_WIDTH
from secateur.models import dense
from secateur.models.requant import RequantParams, requantize
from secateur.sim.runner import BatchSimulator

#: The simulated configuration: odd PE count, non-power-of-two rows.
SIM_PARAMS = dict(pe=3, fan_in=16, max_rows=7, max_cols=512)
#: N at the parameter's maximum (65536), so the accumulator extremes are reached at the widest
#: accumulator; one PE of fan-in 64 keeps its 65536-column memories shallow (1024 words per row;
#: it builds in 17 s, against 30 s at fan-in 16).
WIDEST_PARAMS = dict(pe=1, fan_in=64, max_rows=4, max_cols=65536)


@pytest.fixture(scope="module")
def sim_engine():
    return make_engine("dense", **SIM_PARAMS)


@pytest.fixture(scope="module")
def simulator(sim_engine):
    return BatchSimulator(sim_engine)


# --------------------------------------------------------------------------- golden model

def test_reference_is_the_exact_matmul_and_requantizes(seed):
    rng = np.random.default_rng(seed)
    w = rng.integers(-128, 128, (9, 31)).astype(np.int8)
    x = rng.integers(-128, 128, (4, 31)).astype(np.int8)
    exact = np.array([[sum(int(w[m, n]) * int(x[b, n]) for n in range(31)) for m in range(9)]
                      for b in range(4)], dtype=np.int64)
    assert np.array_equal(dense.reference(w, x), exact)
    params = RequantParams(rng.integers(-3000, 3000, 9), 7, True)
    assert np.array_equal(dense.reference(w, x, params), requantize(exact, params))


def test_reference_extremes_do_not_wrap():
    cols = 65536
    w = np.full((2, cols), -128, dtype=np.int8)
    x = np.stack([np.full(cols, -128), np.full(cols, 127)]).astype(np.int8)
    y = dense.reference(w, x)
    assert y[0, 0] == 16384 * cols == dense.acc_bound(cols)
    assert y[1, 0] == -16256 * cols


@pytest.mark.parametrize("w, x, error, message", [
    (np.zeros((2, 3), np.int16), np.zeros((1, 3), np.int8), TypeError,
     "w must be an int8 weight matrix, not int16"),
    (np.zeros((0, 3), np.int8), np.zeros((1, 3), np.int8), ValueError,
     r"w must be a 2-D \(M, N\) matrix with M, N >= 1, not shape \(0, 3\)"),
    (np.zeros(3, np.int8), np.zeros((1, 3), np.int8), ValueError, "w must be a 2-D"),
    (np.zeros((2, 3), np.int8), np.zeros((1, 3), np.float32), TypeError,
     "x must be int8 activations, not float32"),
    (np.zeros((2, 3), np.int8), np.zeros(3, np.int8), ValueError,
     r"x must be a 2-D \(B, N\) batch of vectors, not shape \(3,\)"),
    (np.zeros((2, 3), np.int8), np.zeros((1, 4), np.int8), ValueError,
     "x has 4 features per vector but w has N = 3 columns"),
])
def test_reference_validates_its_inputs(w, x, error, message):
    with pytest.raises(error, match=message):
        dense.reference(w, x)


def test_reference_rejects_a_bad_requantizer():
    with pytest.raises(TypeError, match="requant must be a RequantParams or None, not dict"):
        dense.reference(np.zeros((1, 1), np.int8), np.zeros((1, 1), np.int8), {"mult": 1})


@pytest.mark.parametrize("cols, error, message", [
    (0, ValueError, "cols must be an integer >= 1, not 0"),
    (2.0, TypeError, "cols must be an integer >= 1, not 2.0"),
    (True, TypeError, "cols must be an integer >= 1, not True"),
])
def test_acc_bound_validates(cols, error, message):
    with pytest.raises(error, match=message):
        dense.acc_bound(cols)


# --------------------------------------------------------------------------- generator

def test_engine_parameters_are_validated_before_elaboration():
    with pytest.raises(ValueError, match=r"dense engine parameter fan_in must be an integer in "
                                         r"\[1, 256\], not 0"):
        make_engine("dense", fan_in=0)
    with pytest.raises(ValueError, match=r"dense engine parameter tree_stages must be an integer "
                                         r"in \[0, 2\], not 3"):
        make_engine("dense", fan_in=4, tree_stages=3)
    with pytest.raises(TypeError, match="dense engine parameter max_rows must be an integer"):
        make_engine("dense", max_rows=2.5)
    with pytest.raises(ValueError, match="dense engine has no parameter max_groups"):
        make_engine("dense", max_groups=3)


def test_defaults_match_the_ternary_engine_lanes():
    engine, ternary = make_engine("dense"), make_engine("ternary")
    assert (engine.pe, engine.fan_in) == (32, 64)
    assert engine.lanes == ternary.lanes == 32 * 64


@pytest.mark.parametrize("cols", [1, 5, 23, 512, 4096, 65535, 65536])
def test_accumulator_width_is_minimal_and_covers_the_extremes(cols):
    width = make_engine("dense", pe=1, fan_in=4, max_cols=cols).acc_width
    top = (1 << (width - 1)) - 1
    assert 16384 * cols <= top and -16256 * cols >= -top - 1
    assert 16384 * cols > (top >> 1), "one bit narrower would also hold the extremes"


# --------------------------------------------------------------------------- layers

def test_layer_validation_messages():
    engine = make_engine("dense", pe=2, fan_in=4, max_rows=5, max_cols=9)
    with pytest.raises(TypeError, match=r"weights npz has no key 'w'"):
        engine.layer({})
    with pytest.raises(TypeError, match="w must be an int8 weight matrix, not int64"):
        engine.layer({"w": np.zeros((2, 2), dtype=np.int64)})
    with pytest.raises(ValueError, match=r"weights w has shape \(6, 9\); this engine takes at "
                                         r"most 5 x 9 \(max_rows x max_cols\)"):
        engine.layer({"w": np.zeros((6, 9), dtype=np.int8)})
    with pytest.raises(ValueError, match="Requantizer mult has 3 entries; the layer has 5"):
        engine.layer({"w": np.zeros((5, 9), dtype=np.int8), "mult": np.ones(3, np.int64),
                      "shift": np.int64(1), "relu": np.bool_(False)})


def test_load_beats_hold_every_weight_in_its_tile(seed):
    """Decode the weight beats independently of the packer: tile r*C + c, PE p, chunk k,
    four int8 per chunk, lowest column in the low byte."""
    rng = np.random.default_rng(seed)
    engine = make_engine("dense", pe=3, fan_in=5, max_rows=10, max_cols=13)
    w = rng.integers(-128, 128, (7, 11)).astype(np.int8)
    layer = engine.layer({"w": w})
    load_map = engine.load_map
    region = load_map.describe()["regions"]["weights"]
    offset_width = load_map.describe()["offset_width"]
    chunk_bits = region["fields"][2]["bits"]
    pe_bits = region["fields"][1]["bits"]
    row_blocks, col_blocks = 3, 3
    rebuilt = np.zeros((row_blocks * 3, col_blocks * 5), dtype=np.int64)
    config = {}
    for addr, value in layer.load_beats():
        assert 0 <= value < 1 << DATA_WIDTH
        if addr >> offset_width != region["index"]:
            config[addr] = value
            continue
        offset = addr & ((1 << offset_width) - 1)
        chunk = offset & ((1 << chunk_bits) - 1)
        pe_row = (offset >> chunk_bits) & ((1 << pe_bits) - 1)
        tile = offset >> (chunk_bits + pe_bits)
        r, c = divmod(tile, col_blocks)
        for byte in range(4):
            column = chunk * 4 + byte
            if column < 5:
                rebuilt[r * 3 + pe_row, c * 5 + column] = (((value >> (8 * byte)) & 0xFF) ^ 0x80) - 0x80
            else:
                assert (value >> (8 * byte)) & 0xFF == 0, "padding bytes must be zero"
    assert np.array_equal(rebuilt[:7, :11], w)
    assert not rebuilt[7:].any() and not rebuilt[:, 11:].any()
    assert config[load_map.address("config", register=0)] == row_blocks
    assert config[load_map.address("config", register=1)] == col_blocks


def test_counters_count_the_whole_matrix():
    engine = make_engine("dense", pe=4, fan_in=8, max_rows=16, max_cols=32)
    w = np.zeros((9, 20), dtype=np.int8)
    w[0, :5] = 3
    counters = engine.layer({"w": w}).counters(np.zeros((3, 20), dtype=np.int8))
    assert counters["useful_ops"] == counters["dense_ops"] == 3 * 9 * 20
    assert counters["nonzero_weight_ops"] == 3 * 5
    assert counters["ideal_cycles"] == 3 * 3 * 3 and counters["lanes"] == 32


# --------------------------------------------------------------------------- RTL

@pytest.mark.sim
def test_random_layers_run_bit_exactly(simulator, sim_engine, seed):
    rng = np.random.default_rng(seed)
    for rows, cols in ((7, 1), (1, 16), (5, 33), (7, 100)):
        w = rng.integers(-128, 128, (rows, cols)).astype(np.int8)
        x = rng.integers(-128, 128, (3, cols)).astype(np.int8)
        for weights in ({"w": w}, {"w": w, "mult": rng.integers(-2**15, 2**15, rows),
                                   "shift": np.int64(rng.integers(0, 48)),
                                   "relu": np.bool_(rng.random() < 0.5)}):
            layer = sim_engine.layer(weights)
            result = run_timed(simulator, layer, x)
            assert np.array_equal(result.y, layer.reference(x)), f"{rows}x{cols}, seed {seed}"


@pytest.mark.sim
def test_accumulator_extremes_at_the_largest_n():
    """All -128 weights against all -128 (2**30, the positive extreme) and all 127 inputs
    (the negative extreme) at N = 65536."""
    sim_engine = make_engine("dense", **WIDEST_PARAMS)
    simulator = BatchSimulator(sim_engine)
    cols = sim_engine.max_cols
    assert cols == 65536
    x = np.stack([np.full(cols, -128), np.full(cols, 127)]).astype(np.int8)
    layer = sim_engine.layer({"w": np.full((4, cols), -128, dtype=np.int8)})
    result = run_timed(simulator, layer, x)
    assert result.y[0].tolist() == [16384 * cols] * 4
    assert result.y[1].tolist() == [-16256 * cols] * 4


@pytest.mark.sim
def test_latency_matches_manifest(simulator, sim_engine):
    layer = sim_engine.layer({"w": np.ones((3, 5), dtype=np.int8)})
    result = run_timed(simulator, layer, np.ones((1, 5), dtype=np.int8))
    assert result.cycles - 1 == sim_engine.latency


@pytest.mark.sim
def test_utilization_of_full_tiles_is_near_one(simulator, sim_engine, seed):
    """One cycle per tile, vectors back to back: 6x512 in full 3x16 tiles, batch 16, loses
    only the first vector's input beats and one pipeline fill."""
    rng = np.random.default_rng(seed)
    layer = sim_engine.layer({"w": rng.integers(-128, 128, (6, 512)).astype(np.int8)})
    x = rng.integers(-128, 128, (16, 512)).astype(np.int8)
    result = run_timed(simulator, layer, x)
    report = result.report(sim_engine, layer, "verilator")
    assert np.array_equal(result.y, layer.reference(x))
    assert report["ideal_cycles"] == 16 * 2 * 32
    assert report["cycles"] <= report["ideal_cycles"] + 32 + sim_engine.latency + 2
    assert report["utilization"] >= 0.95


@pytest.mark.sim
def test_cli_run_matches_matmul(tmp_path, seed):
    rng = np.random.default_rng(seed)
    w = rng.integers(-128, 128, (7, 45)).astype(np.int8)
    x = rng.integers(-128, 128, (5, 45)).astype(np.int8)
    np.savez(tmp_path / "w.npz", w=w, mult=rng.integers(-4000, 4000, 7), shift=np.int64(11),
             relu=np.bool_(False))
    np.save(tmp_path / "x.npy", x)
    settings = [arg for key, value in SIM_PARAMS.items() if key != "pe"
                for arg in ("--set", f"{key}={value}")]
    result = subprocess.run(
        [sys.executable, "-m", "secateur.gen.cli", "run", "--engine", "dense",
         "--pe", str(SIM_PARAMS["pe"]), *settings, "--weights", str(tmp_path / "w.npz"),
         "--inputs", str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npy"),
         "--report", str(tmp_path / "r.json")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    params = RequantParams.from_npz(dict(np.load(tmp_path / "w.npz")))
    expected = requantize(x.astype(np.int64) @ w.astype(np.int64).T, params)
    assert np.array_equal(np.load(tmp_path / "y.npy"), expected), f"seed {seed}"
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["mismatches"] == 0 and report["useful_ops"] == 5 * 7 * 45
