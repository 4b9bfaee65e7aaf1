"""The ternary engine end to end through ``secateur run``: bit-exact on data the generator's
tests never saw, at full size (PE=32, fan-in 64), after training, and on both simulators."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from conftest import run_timed
import torch

from secateur.gen.registry import make_engine
from secateur.models import ternary
from secateur.models.requant import RequantParams, requantize
from secateur.sim.runner import BatchSimulator
from secateur.sim.toolchain import icarus_available


def group_sparse_ternary(rng, rows, cols, pe, fan_in, zero_groups):
    w = rng.integers(-1, 2, (rows, cols)).astype(np.int8)
    for r in range(math.ceil(rows / pe)):
        for c in range(math.ceil(cols / fan_in)):
            if rng.random() < zero_groups:
                w[r * pe:(r + 1) * pe, c * fan_in:(c + 1) * fan_in] = 0
    return w


@pytest.mark.sim
@pytest.mark.regress  # the PE=32 Verilog is linted by make lint and simulated at fan_in 4
def test_cli_run_full_size_matches_matmul(tmp_path, seed):
    """PE=32, fan-in 64 (the default build) on a 256x500 layer, 50% zero groups, plus requant."""
    rng = np.random.default_rng(seed)
    w = group_sparse_ternary(rng, 256, 500, 32, 64, 0.5)
    x = rng.integers(-128, 128, (6, 500)).astype(np.int8)
    mult = rng.integers(-3000, 3000, 256)
    np.savez(tmp_path / "w.npz", w=w)
    np.savez(tmp_path / "wq.npz", w=w, mult=mult, shift=np.int64(9), relu=np.bool_(True))
    np.save(tmp_path / "x.npy", x)
    exact = x.astype(np.int64) @ w.astype(np.int64).T
    for weights, expected in (("w.npz", exact),
                              ("wq.npz", requantize(exact, RequantParams(mult, 9, True)))):
        result = subprocess.run(
            [sys.executable, "-m", "secateur.gen.cli", "run", "--engine", "ternary", "--pe", "32",
             "--weights", str(tmp_path / weights), "--inputs", str(tmp_path / "x.npy"),
             "--out", str(tmp_path / "y.npy"), "--report", str(tmp_path / "r.json")],
            capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        y = np.load(tmp_path / "y.npy")
        assert y.dtype == (np.int8 if weights == "wq.npz" else np.int64) and y.shape == (6, 256)
        assert np.array_equal(y, expected), f"seed {seed}"
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["mismatches"] == 0 and report["params"]["pe"] == 32
    # Useful work: the layer's positions inside non-zero groups (the last column block has
    # 500 - 7 * 64 = 52 real columns), once per vector.
    nonzero = np.abs(w).reshape(8, 32, 500)
    expected_ops = sum(32 * (52 if c == 7 else 64) for r in range(8) for c in range(8)
                       if nonzero[r, :, c * 64:(c + 1) * 64].any())
    assert report["useful_ops"] == 6 * expected_ops
    assert 0 < report["utilization"] <= 1


@pytest.mark.sim
def test_trained_pruned_layer_runs_bit_exactly(seed):
    """Ternarize and PE-wise prune a small trained layer, export it, run it on the RTL."""
    torch.manual_seed(seed)
    teacher = torch.randn(12, 40)
    inputs = torch.randn(256, 40)
    layer = ternary.TernaryLinear(40, 12, bias=False)
    ternary.train_ternary_pruned(layer, (inputs, inputs @ teacher.T), pe=4, fan_in=8,
                                 target_zero_groups=0.4, epochs=4, seed=seed)
    weights = ternary.export_layer(layer, pe=4, fan_in=8, input_scale=0.05, output_scale=0.1)
    assert ternary.zero_group_fraction(weights["w"], 4, 8) >= 0.4
    engine = make_engine("ternary", pe=4, fan_in=8, max_rows=12, max_cols=40)
    engine_layer = engine.layer(weights)
    x = np.random.default_rng(seed).integers(-128, 128, (5, 40)).astype(np.int8)
    result = run_timed(BatchSimulator(engine), engine_layer, x)
    assert np.array_equal(result.y, ternary.reference(weights["w"], x, engine_layer.requant))


@pytest.mark.sim
def test_latency_matches_manifest():
    engine = make_engine("ternary", pe=3, fan_in=5, max_rows=20, max_cols=23)
    layer = engine.layer({"w": np.ones((3, 5), dtype=np.int8)})
    result = run_timed(BatchSimulator(engine), layer, np.ones((1, 5), dtype=np.int8))
    assert result.cycles - 1 == engine.latency


@pytest.mark.sim
@pytest.mark.icarus
@pytest.mark.skipif(not icarus_available(), reason="Icarus Verilog is not installed "
                    "(apt-get install iverilog)")
def test_icarus_and_verilator_agree(seed):
    rng = np.random.default_rng(seed)
    engine = make_engine("ternary", pe=3, fan_in=5, max_rows=20, max_cols=23)
    layer = engine.layer({"w": group_sparse_ternary(rng, 17, 23, 3, 5, 0.3)})
    x = rng.integers(-128, 128, (4, 23)).astype(np.int8)
    verilator, icarus = (BatchSimulator(engine, sim).run(layer, x) for sim in ("verilator", "icarus"))
    assert np.array_equal(verilator.y, icarus.y) and np.array_equal(icarus.y, layer.reference(x))
    assert verilator.cycles == icarus.cycles


def test_engine_parameters_are_validated_before_elaboration():
    with pytest.raises(ValueError, match=r"ternary engine parameter fan_in must be an integer in \[1, 256\], not 0"):
        make_engine("ternary", fan_in=0)
    with pytest.raises(TypeError, match="ternary engine parameter max_rows must be an integer"):
        make_engine("ternary", max_rows=2.5)


def test_accumulator_width_covers_the_extremes():
    for pe, fan_in, cols in [(1, 1, 1), (3, 5, 23), (32, 64, 512), (7, 3, 65536)]:
        engine = make_engine("ternary", pe=pe, fan_in=fan_in, max_cols=cols)
        assert 128 * cols <= (1 << (engine.acc_width - 1)) - 1


def test_layers_beyond_the_weight_memory_are_refused():
    engine = make_engine("ternary", pe=2, fan_in=4, max_rows=4, max_cols=8, max_groups=3)
    engine.layer({"w": np.ones((4, 6), dtype=np.int8)[:, :6] * np.array([1, 1, 1, 1, 0, 0], dtype=np.int8)})
    with pytest.raises(ValueError, match=r"weights w have 4 non-zero groups of 2 x 4; this engine "
                                         r"stores at most 3 \(max_groups\)"):
        engine.layer({"w": np.ones((4, 8), dtype=np.int8)})
