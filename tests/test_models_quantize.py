"""The post-training quantization rules (models/quantize.py)."""

import numpy as np
import pytest

from secateur.models import lfsr, permdiag, quantize as q


def test_activation_scale_is_the_percentile_of_magnitudes_over_127():
    values = np.concatenate([np.linspace(-1, 1, 100001), [50.0]])
    assert q.activation_scale(values) == pytest.approx(np.percentile(np.abs(values), 99.99) / 127)
    assert q.activation_scale(np.zeros(4)) == q.SCALE_FLOOR / 127


def test_quantize_activations_rounds_half_to_even_and_saturates():
    x = np.array([0.5, 1.5, -0.5, 126.6, 1000.0, -1000.0])
    np.testing.assert_array_equal(q.quantize_activations(x, 1.0), [0, 2, 0, 127, 127, -128])
    with pytest.raises(ValueError, match=r"^an activation scale must be finite and > 0, not 0$"):
        q.quantize_activations(x, 0)


def test_int8_weights_per_channel_and_per_tensor(seed):
    w = np.random.default_rng(seed).normal(size=(4, 9))
    w[2] = 0
    codes, scales = q.int8_weights(w)
    assert codes.dtype == np.int8 and np.abs(codes).max() == 127 and scales[2] == 1.0
    assert np.abs(codes * scales[:, None] - w).max() <= scales.max() / 2 + 1e-12
    _, shared = q.int8_weights(w, per_channel=False)
    assert np.all(shared == np.abs(w).max() / 127)


def test_ternary_weights_pick_the_closest_threshold_per_row(seed):
    w = np.random.default_rng(seed).normal(size=(6, 32))
    codes, alpha = q.ternary_weights(w)
    assert set(np.unique(codes)) <= {-1, 0, 1}
    best = ((w - alpha[:, None] * codes) ** 2).sum(axis=1)
    for delta in q.DELTAS:
        other, other_alpha = q.ternary_weights(w, delta=delta)
        assert np.all(best <= ((w - other_alpha[:, None] * other) ** 2).sum(axis=1) + 1e-12)


def test_lfsr_weights_keep_the_most_magnitude_and_are_legal(seed):
    w = np.random.default_rng(seed).normal(size=(5, 20))
    weights = q.lfsr_weights(w, 0.25)
    assert int(weights["k"]) == 5
    lfsr.check_weights(weights["w"], weights["seeds"], weights["k"])
    np.testing.assert_array_equal(weights["seeds"], lfsr.best_seeds(np.abs(w), 5))
    with pytest.raises(ValueError, match=r"^density must be in \(0, 1\], not 0$"):
        q.lfsr_weights(w, 0)


def test_permdiag_weights_are_padded_to_whole_blocks_and_legal(seed):
    w = np.random.default_rng(seed).normal(size=(10, 14))
    weights = q.permdiag_weights(w, 4)
    assert weights["w"].shape == (12, 16) and weights["scales"].shape == (12,)
    permdiag.check_weights(weights["w"], 4)
    assert not weights["w"][10:].any() and not weights["w"][:, 14:].any()


def test_engine_weights_refuses_an_unknown_engine():
    with pytest.raises(ValueError, match=r"^no quantization rule for the tpu engine; engines "
                                         r"with one: dense, cim, ternary, lfsr, permdiag$"):
        q.engine_weights("tpu", np.ones((2, 2)), True, {})


def test_bias_is_quantized_at_the_accumulator_scale_and_refused_outside_the_range():
    bias = q.quantize_bias([0.25, -0.75], 0.5, [0.25, 0.5])
    np.testing.assert_array_equal(bias, [2, -3])
    with pytest.raises(ValueError, match=r"^layer 3 \(Gemm fc\): the quantized bias of row 1 is "
                                         r"-200, outside the engine's 8-bit bias range "
                                         r"\[-128, 127\]$"):
        q.check_bias_range(np.array([5, -200]), 8, "layer 3 (Gemm fc)")


def test_requantizer_and_residual_add_ratios():
    params = q.layer_requant(0.02, np.array([0.01, 0.03]), 0.05, True)
    ratios = params.mult / 2.0 ** params.shift
    np.testing.assert_allclose(ratios, [0.004, 0.012], rtol=1e-3)
    assert params.relu
    add = q.residual_add_params(0.1, 0.05, 0.2)
    assert add["mult_a"] / 2 ** add["shift"] == pytest.approx(0.5, rel=1e-4)
    assert add["mult_b"] / 2 ** add["shift"] == pytest.approx(0.25, rel=1e-4)
