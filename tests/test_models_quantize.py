"""The post-training quantization rules (models/quantize.py)."""

import numpy as np
import pytest

from secateur.models import lfsr, lfsr_pruning, permdiag, quantize as q


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


def test_fake_quant_and_fake_int8_are_the_export_rules_in_training(seed):
    import torch
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(5, 7)) * 3
    fake = q.fake_quant(torch.from_numpy(x), 0.02).numpy()
    np.testing.assert_array_equal(fake, q.quantize_activations(x, 0.02) * 0.02)
    w = rng.normal(size=(6, 9))
    w[1] = 0
    for per_channel in (True, False):
        tensor = torch.from_numpy(w).requires_grad_()
        out = q.fake_int8(tensor, per_channel)
        codes, scales = q.int8_weights(w, per_channel)
        np.testing.assert_array_equal(out.detach().numpy(), codes * scales[:, None])
        out.sum().backward()  # straight through
        np.testing.assert_array_equal(tensor.grad.numpy(), np.ones_like(w))


def test_a_given_structure_is_kept(seed):
    rng = np.random.default_rng(seed)
    w, other = rng.normal(size=(5, 20)), rng.normal(size=(5, 20))
    form = q.engine_weights("lfsr", w, True, {"density": 0.25})
    np.testing.assert_array_equal(form.mask,
                                  lfsr_pruning.lfsr_mask(20, 5, form.weights["seeds"]).numpy())
    kept = q.engine_weights("lfsr", other, True, {"density": 0.25}, form.structure)
    np.testing.assert_array_equal(kept.weights["seeds"], form.weights["seeds"])
    assert not kept.weights["w"][~form.mask].any()
    with pytest.raises(ValueError, match=r"^the structure keeps k = 5 columns per row; density "
                                         r"0.5 keeps 10$"):
        q.engine_weights("lfsr", other, True, {"density": 0.5}, form.structure)
    form = q.engine_weights("permdiag", w, True, {"p": 4})
    np.testing.assert_array_equal(form.mask, permdiag.structure_mask(form.structure["offsets"], 4))
    kept = q.engine_weights("permdiag", other, True, {"p": 4}, form.structure)
    assert not kept.weights["w"][~form.mask].any()
    codes = rng.integers(-1, 2, size=(5, 20))
    alpha = rng.uniform(0.5, 1, size=5)
    form = q.engine_weights("ternary", w, True, {}, {"codes": codes, "alpha": alpha})
    np.testing.assert_array_equal(form.weights["w"], codes)
    np.testing.assert_array_equal(form.scales, alpha)
    assert form.mask is None and q.engine_weights("dense", w, True, {}).structure == {}


def test_reconstruct_recovers_a_masked_layer_and_corrected_bias_its_mean_shift(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(200, 12)) + 1.0
    x[:, 3] = 0  # an all-zero input column: the ridge keeps the fit regular
    mask = rng.random((6, 12)) < 0.5
    weight = rng.normal(size=(6, 12)) * mask
    bias = rng.normal(size=6)
    target = x[:, :12] @ weight.T + bias
    fitted, fitted_bias = q.reconstruct(x, target[:, :4], mask)
    np.testing.assert_allclose(fitted[:4][:, [c for c in range(12) if c != 3]],
                               weight[:4][:, [c for c in range(12) if c != 3]], atol=1e-4)
    np.testing.assert_allclose(fitted_bias[:4], bias[:4], atol=1e-4)
    assert not fitted[4:].any() and not fitted_bias[4:].any() and not fitted[~mask].any()
    output = x @ (weight * 0.5).T
    np.testing.assert_allclose(q.corrected_bias(target, output),
                               (target - output).mean(axis=0))
    with pytest.raises(ValueError, match=r"^corrected_bias takes two \(R, M\) arrays"):
        q.corrected_bias(target, output[:, :2])
