"""What the golden models share (secateur.models.common and the scale search of
secateur.models.requant): one wording of every error, one arithmetic."""

import numpy as np
import pytest
import torch

from secateur.models.common import (
    check_int, check_int8_inputs, check_int8_weights, export_requant, minibatches,
    save_weights_npz,
)
from secateur.models.requant import (
    RequantParams, check_requant, requant_for_channel_scales, requant_for_scale, requantize,
)


@pytest.mark.parametrize("value, kwargs, error, match", [
    (0, {}, ValueError, "pe must be an integer >= 1, not 0"),
    (True, {}, TypeError, "pe must be an integer >= 1, not True"),
    (2.0, {}, TypeError, "pe must be an integer >= 1, not 2.0"),
    (9, dict(minimum=1, maximum=8), ValueError, r"pe must be an integer in \[1, 8\], not 9"),
])
def test_check_int_names_the_legal_range(value, kwargs, error, match):
    with pytest.raises(error, match=match):
        check_int(value, "pe", **kwargs)


def test_check_int_accepts_numpy_integers():
    assert check_int(np.int64(3), "pe") == 3 and type(check_int(np.int64(3), "pe")) is int


def test_int8_operands_are_checked_with_one_wording():
    with pytest.raises(TypeError, match="w must be int8 ternary codes, not int16"):
        check_int8_weights(np.zeros((2, 2), np.int16), "int8 ternary codes")
    with pytest.raises(ValueError, match=r"w must be a 2-D \(M, N\) matrix"):
        check_int8_weights(np.zeros((0, 2), np.int8))
    with pytest.raises(ValueError, match="x has 3 features per vector but w has N = 2"):
        check_int8_inputs(np.zeros((1, 3), np.int8), 2)
    with pytest.raises(TypeError, match="requant must be a RequantParams or None, not dict"):
        check_requant({})
    assert check_requant(None) is None


@pytest.mark.parametrize("scale", [1e-9, 0.003, -0.37, 1.0, 5.5, 32767.0])
def test_requant_for_scale_is_the_best_16_bit_multiplier(scale):
    params = requant_for_scale(scale, True)
    assert params.mult.ndim == 0 and abs(int(params.mult)) <= 2**15 - 1 and params.relu
    assert int(params.mult) / 2**params.shift == pytest.approx(scale, rel=2**-14)
    if params.shift < 47:   # one more bit of shift would overflow the multiplier
        assert abs(scale) * 2**(params.shift + 1) + 0.5 >= 2**15


def test_requant_for_scale_edges():
    assert requant_for_scale(0.0, False).as_dict() == {"mult": 0, "shift": 0, "relu": False}
    with pytest.raises(ValueError, match="exceeds the largest multiplier 32767"):
        requant_for_scale(40000.0, False)


def test_export_requant_picks_per_layer_or_per_channel():
    assert export_requant(0.5, None, None, False) == {}
    layer = export_requant(0.5, 0.1, 0.2, True)
    assert layer["mult"].ndim == 0 and layer["shift"].dtype == np.int64 and bool(layer["relu"])
    channels = export_requant(np.array([0.5, 0.25]), 0.1, 0.2, False)
    expected = requant_for_channel_scales(np.array([0.5, 0.25]) * 0.1 / 0.2)
    assert np.array_equal(channels["mult"], expected.mult)
    with pytest.raises(ValueError, match="give both input_scale and output_scale, or neither"):
        export_requant(0.5, 0.1, None, False)
    with pytest.raises(ValueError, match="output_scale must be finite and > 0, not inf"):
        export_requant(0.5, 0.1, float("inf"), False)
    with pytest.raises(TypeError, match="relu must be a bool, not 1"):
        export_requant(0.5, 0.1, 0.2, 1)


def test_save_weights_npz_checks_keys_then_structure_then_requant(tmp_path):
    def structure(weights):
        return {"w": np.asarray(weights["w"], dtype=np.int8)}

    with pytest.raises(TypeError, match="weights must be a mapping, not list"):
        save_weights_npz(tmp_path / "a", [], ("w",), structure)
    with pytest.raises(ValueError, match=r"unknown keys \['q'\]; allowed: w, p, mult, shift, relu"):
        save_weights_npz(tmp_path / "a", {"w": 0, "q": 0}, ("w", "p"), structure)
    with pytest.raises(ValueError, match=r"weights lacks \['p'\]"):
        save_weights_npz(tmp_path / "a", {"w": 0}, ("w", "p"), structure)
    with pytest.raises(ValueError, match="the layer has 2 output channels"):
        save_weights_npz(tmp_path / "a", {"w": np.zeros((2, 3)), "mult": np.ones(3, np.int64),
                                          "shift": np.int64(1), "relu": np.bool_(False)},
                         ("w",), structure)
    params = RequantParams(np.array([3, -4]), 5, True)
    path = save_weights_npz(tmp_path / "a", {"w": np.ones((2, 3)), **params.to_npz()}, ("w",),
                            structure)
    assert path.name == "a.npz"
    with np.load(path) as loaded:
        assert RequantParams.from_npz(loaded).as_dict() == params.as_dict()
        assert loaded["w"].dtype == np.int8


def test_minibatches_cover_every_example_once():
    batches = list(minibatches(10, 4, torch.Generator().manual_seed(0)))
    assert [len(batch) for batch in batches] == [4, 4, 2]
    assert sorted(torch.cat(batches).tolist()) == list(range(10))
    again = list(minibatches(10, 4, torch.Generator().manual_seed(0)))
    assert all(torch.equal(a, b) for a, b in zip(batches, again))


@pytest.mark.parametrize("magnitude", [2**33, 2**47, 2**62])
def test_requantize_is_exact_on_both_sides_of_the_int64_bound(magnitude, seed):
    """Below 2^62 the product is computed in int64, above it in Python integers: both must
    equal the formula evaluated in unbounded integers."""
    rng = np.random.default_rng(seed)
    acc = rng.integers(-magnitude, magnitude, size=(3, 5), dtype=np.int64)
    acc[0, 0], acc[0, 1] = magnitude - 1, -magnitude
    mult = rng.integers(-2**15, 2**15, size=5)
    mult[0], mult[1] = 2**15 - 1, -2**15
    for shift, relu in ((0, False), (1, True), (47, False)):
        got = requantize(acc, RequantParams(mult, shift, relu))
        rounding = (1 << (shift - 1)) if shift else 0
        want = [[min(127, max(0 if relu else -128, (int(a) * int(m) + rounding) >> shift))
                 for a, m in zip(row, mult)] for row in acc]
        assert got.tolist() == want
