"""Ternary golden models: ternarization, PE-wise group pruning, WPC, training, reference, export."""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from secateur.models.requant import RequantParams, requantize
from secateur.models.ternary import (
    TernaryLinear, apply_group_mask, expand_group_mask, export_layer, group_grid,
    group_lasso_grad, group_lasso_penalty, group_mask, group_norms, group_sizes,
    prune_layer_groups, reference, save_npz, ternarize, ternary_codes, train_ternary_pruned,
    weight_penalty_clip, zero_group_fraction,
)


def brute_tiles(shape, pe, fan_in):
    """Yield (r, c, rows, cols) of every aligned tile, by explicit loops."""
    rows, cols = shape
    for r in range(math.ceil(rows / pe)):
        for c in range(math.ceil(cols / fan_in)):
            yield (r, c, range(r * pe, min(rows, (r + 1) * pe)),
                   range(c * fan_in, min(cols, (c + 1) * fan_in)))


def brute_norms(w, pe, fan_in):
    out = np.zeros((math.ceil(w.shape[0] / pe), math.ceil(w.shape[1] / fan_in)))
    for r, c, rows, cols in brute_tiles(w.shape, pe, fan_in):
        out[r, c] = math.sqrt(sum(float(w[i, j]) ** 2 for i in rows for j in cols))
    return out


# --------------------------------------------------------------------------- ternarize

def test_ternarize_matches_hand_computation():
    w = torch.tensor([[0.5, -0.02, 0.1, 0.05],
                      [-0.3, 0.025, -1.0, -0.05]], dtype=torch.float64)
    # max|W| = 1.0, th = 0.05; |w| >= th: 0.5 0.1 0.05 0.3 1.0 0.05 -> alpha = 2.0 / 6
    alpha = (0.5 + 0.1 + 0.05 + 0.3 + 1.0 + 0.05) / 6
    expected_codes = [[1, 0, 1, 1], [-1, 0, -1, -1]]
    codes, got_alpha = ternary_codes(w, delta=0.05)
    assert codes.dtype == torch.int8
    assert codes.tolist() == expected_codes
    assert got_alpha == pytest.approx(alpha, rel=1e-12)
    out = ternarize(w, delta=0.05)
    torch.testing.assert_close(out, alpha * torch.tensor(expected_codes, dtype=torch.float64))


def test_ternarize_threshold_scales_with_delta():
    w = torch.tensor([[0.2, 0.39, 0.41, -1.0]])
    codes, alpha = ternary_codes(w, delta=0.4)
    assert codes.tolist() == [[0, 0, 1, -1]]
    assert alpha == pytest.approx((0.41 + 1.0) / 2)
    codes, _ = ternary_codes(w, delta=0.0)  # th = 0: every non-zero weight keeps its sign
    assert codes.tolist() == [[1, 1, 1, -1]]


def test_ternarize_straight_through_gradient():
    torch.manual_seed(0)
    w = torch.randn(5, 7, requires_grad=True)
    upstream = torch.randn(5, 7)
    (ternarize(w) * upstream).sum().backward()
    torch.testing.assert_close(w.grad, upstream)


def test_ternarize_all_zero_weight():
    w = torch.zeros(3, 4, requires_grad=True)
    out = ternarize(w)
    assert torch.equal(out, torch.zeros(3, 4))
    out.sum().backward()
    assert torch.isfinite(w.grad).all()
    codes, alpha = ternary_codes(w.detach())
    assert alpha == 0.0 and not codes.any()


@pytest.mark.parametrize("kwargs, error, match", [
    ({"weight": np.ones((2, 2)), "delta": 0.05}, TypeError, "weight must be a torch.Tensor"),
    ({"weight": torch.ones(2, 2, dtype=torch.int8), "delta": 0.05}, TypeError, "floating"),
    ({"weight": torch.ones(4), "delta": 0.05}, ValueError, "2-D"),
    ({"weight": torch.ones(2, 2), "delta": 1.5}, ValueError, r"delta must be in \[0.0, 1.0\]"),
    ({"weight": torch.ones(2, 2), "delta": -0.1}, ValueError, "delta"),
    ({"weight": torch.ones(2, 2), "delta": "x"}, TypeError, "delta"),
])
def test_ternarize_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        ternarize(**kwargs)


def test_ternary_codes_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        ternary_codes(torch.tensor([[1.0, float("nan")]]))


def test_ternary_linear_is_a_drop_in_linear():
    torch.manual_seed(0)
    linear = torch.nn.Linear(10, 6)
    layer = TernaryLinear.from_linear(linear, delta=0.1)
    x = torch.randn(4, 10)
    torch.testing.assert_close(layer(x), F.linear(x, ternarize(linear.weight, 0.1), linear.bias))
    layer.ternary = False
    torch.testing.assert_close(layer(x), linear(x))
    assert set(layer.state_dict()) == {"weight", "bias", "mask"}
    fresh = TernaryLinear(10, 6, bias=False)
    assert fresh.weight.shape == (6, 10) and fresh.bias is None
    with pytest.raises(ValueError, match="in_features"):
        TernaryLinear(0, 3)


# --------------------------------------------------------------------------- groups

@pytest.mark.parametrize("shape, pe, fan_in", [((37, 100), 3, 16), ((8, 64), 4, 64),
                                               ((5, 7), 8, 64), ((1, 1), 1, 1)])
def test_group_norms_match_brute_force(shape, pe, fan_in):
    rng = np.random.default_rng(1)
    w = rng.standard_normal(shape)
    expected = brute_norms(w, pe, fan_in)
    assert group_grid(shape, pe, fan_in) == expected.shape
    np.testing.assert_allclose(group_norms(w, pe, fan_in), expected, rtol=1e-12)
    np.testing.assert_allclose(group_norms(torch.from_numpy(w), pe, fan_in).numpy(), expected,
                               rtol=1e-12)
    sizes = np.zeros(expected.shape, dtype=np.int64)
    for r, c, rows, cols in brute_tiles(shape, pe, fan_in):
        sizes[r, c] = len(rows) * len(cols)
    assert np.array_equal(group_sizes(shape, pe, fan_in), sizes)


def test_group_lasso_penalty_value_and_gradient():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((37, 100))
    w[3:6, 16:32] = 0.0  # tile (1, 1) is entirely zero: its subgradient must be 0, not NaN
    pe, fan_in = 3, 16
    expected = sum(math.sqrt(len(rows) * len(cols))
                   * math.sqrt(sum(w[i, j] ** 2 for i in rows for j in cols))
                   for _, _, rows, cols in brute_tiles(w.shape, pe, fan_in))
    assert group_lasso_penalty(w, pe, fan_in) == pytest.approx(expected, rel=1e-12)
    weight = torch.from_numpy(w).requires_grad_()
    group_lasso_penalty(weight, pe, fan_in).backward()
    assert torch.isfinite(weight.grad).all()
    assert not weight.grad[3:6, 16:32].any()
    torch.testing.assert_close(group_lasso_grad(weight, pe, fan_in), weight.grad)


def test_group_mask_hits_target_and_zeroes_whole_groups():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((37, 100))
    pe, fan_in = 3, 16
    grid = group_grid(w.shape, pe, fan_in)  # 13 x 7 = 91 tiles
    norms = group_norms(w, pe, fan_in)
    keep = group_mask(w, pe, fan_in, keep_fraction=0.3)
    assert keep.shape == grid and keep.dtype == bool
    assert keep.sum() == math.floor(0.3 * keep.size)
    assert norms[keep].min() >= norms[~keep].max()  # the largest tiles survive
    pruned = apply_group_mask(w, keep, pe, fan_in)
    for r, c, rows, cols in brute_tiles(w.shape, pe, fan_in):
        block = (slice(rows.start, rows.stop), slice(cols.start, cols.stop))
        if keep[r, c]:
            assert np.array_equal(pruned[block], w[block])
        else:
            assert not pruned[block].any()
    assert zero_group_fraction(pruned, pe, fan_in) == pytest.approx(1 - keep.sum() / keep.size)

    by_threshold = group_mask(torch.from_numpy(w), pe, fan_in, threshold=float(np.median(norms)))
    assert torch.equal(by_threshold, torch.from_numpy(norms > np.median(norms)))
    element = expand_group_mask(keep, w.shape, pe, fan_in)
    assert element.shape == w.shape and element.sum() == (pruned != 0).sum()


def test_group_mask_rejects_bad_criteria():
    w = np.ones((4, 4))
    with pytest.raises(ValueError, match="exactly one"):
        group_mask(w, 2, 2)
    with pytest.raises(ValueError, match="exactly one"):
        group_mask(w, 2, 2, keep_fraction=0.5, threshold=1.0)
    with pytest.raises(ValueError, match="keep_fraction"):
        group_mask(w, 2, 2, keep_fraction=1.5)
    with pytest.raises(ValueError, match="pe must be an integer >= 1"):
        group_norms(w, 0, 2)
    with pytest.raises(TypeError, match="fan_in"):
        group_norms(w, 2, 2.0)
    with pytest.raises(ValueError, match="group_keep has shape"):
        apply_group_mask(w, np.ones((3, 3), dtype=bool), 2, 2)


def test_zero_group_fraction_counts_partial_tiles():
    codes = np.zeros((5, 7), dtype=np.int8)  # pe=2, fan_in=4: grid 3 x 2
    codes[4, 6] = -1                           # lone weight in the partial corner tile
    codes[0, 0] = 1
    assert zero_group_fraction(codes, 2, 4) == pytest.approx(4 / 6)
    assert zero_group_fraction(torch.from_numpy(codes), 5, 7) == 0.0


def test_prune_layer_groups_prefers_empty_ternary_tiles():
    layer = TernaryLinear(32, 8, bias=False, delta=0.3)  # 2 x 2 tiles of 4 x 16; th = 0.3
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[:4, 16:] = torch.where(torch.rand(4, 16) < 0.5, -1.0, 1.0)  # all codes
        layer.weight[4, 3] = 0.5    # one code, shadow norm 0.5
        layer.weight[:4, :16] = 0.29  # no codes, but shadow norm 2.32
        layer.weight[4:, 16:] = 0.01  # no codes, shadow norm 0.08
    keep = prune_layer_groups(layer, 4, 16, zero_fraction=0.5)
    # By shadow norm, tile (1, 0) would go; by what the ternary forward uses, (0, 0) goes.
    assert keep.tolist() == [[False, True], [True, False]]
    assert not layer.mask[:4, :16].any() and layer.mask[4:, :16].all()
    assert not layer.weight[:4, :16].any() and not layer.weight[4:, 16:].any()
    codes, _ = layer.ternary_codes()
    assert zero_group_fraction(codes, 4, 16) == 0.5
    assert codes[4, 3] == 1 and codes[:4, 16:].abs().sum() == 64
    # A later, milder pruning cannot revive tiles pruned before.
    assert prune_layer_groups(layer, 4, 16, zero_fraction=0.0).all()
    assert not layer.mask[:4, :16].any()


# --------------------------------------------------------------------------- WPC

def _surviving_crossings(w0, w1, delta):
    """Weights with a non-zero code before that have code 0 after."""
    before, _ = ternary_codes(w0, delta)
    after, _ = ternary_codes(w1, delta)
    return int(((before != 0) & (after == 0)).sum())


def test_wpc_single_step_never_crosses_threshold():
    torch.manual_seed(5)
    w = torch.randn(12, 40, dtype=torch.float64)
    delta, step = 0.3, 0.5  # a huge step: unclipped, it would flip signs
    threshold = delta * float(w.abs().max())
    grad = group_lasso_grad(w, 4, 16)
    clipped = weight_penalty_clip(grad, w, threshold, step, margin=0.1)
    new = w - step * clipped
    above = w.abs() >= threshold
    assert (new[above].abs() >= threshold).all()
    clear = w.abs() >= 1.1 * threshold
    assert (new[clear].abs() >= 1.1 * threshold * (1 - 1e-12)).all()  # stops at the floor
    assert torch.equal(torch.sign(new[above]), torch.sign(w[above]))
    near = above & (w.abs() < 1.1 * threshold)
    assert near.any() and not clipped[near].any()          # at/near the threshold: no penalty
    below = ~above & (w != 0)
    assert (new[below].abs() < w[below].abs()).all()        # sub-threshold weights still shrink
    assert (new[below] * w[below] >= 0).all()               # ... but never through zero
    far = w.abs() > 3 * threshold
    assert (new[far].abs() < w[far].abs()).all()            # big weights still shrink
    assert _surviving_crossings(w, new, delta) == 0
    assert _surviving_crossings(w, w - step * grad, delta) > 0


def test_wpc_fewer_surviving_weights_cross_over_many_steps():
    torch.manual_seed(6)
    w0 = torch.randn(16, 64, dtype=torch.float64) * torch.rand(16, 1, dtype=torch.float64)
    delta, step, lam, pe, fan_in = 0.2, 1e-2, 0.5, 4, 16

    def run(wpc):
        w = w0.clone()
        for _ in range(40):
            grad = lam * group_lasso_grad(w, pe, fan_in)
            if wpc:
                grad = weight_penalty_clip(grad, w, delta * float(w.abs().max()), step)
            w = w - step * grad
        return w

    plain = _surviving_crossings(w0, run(False), delta)
    clipped = _surviving_crossings(w0, run(True), delta)
    assert plain >= 20
    assert clipped < plain
    assert clipped == 0
    # WPC does not switch the penalty off: the shrinkage still empties weak weights.
    assert run(True).abs().sum() < 0.95 * w0.abs().sum()


def test_wpc_rejects_bad_arguments():
    w = torch.ones(2, 2)
    with pytest.raises(ValueError, match="reg_grad has shape"):
        weight_penalty_clip(torch.ones(3), w, 0.1, 1.0)
    with pytest.raises(ValueError, match="step must be > 0"):
        weight_penalty_clip(w, w, 0.1, 0.0)
    with pytest.raises(ValueError, match="threshold"):
        weight_penalty_clip(w, w, -0.1, 1.0)


# --------------------------------------------------------------------------- training

def _teacher_task(seed, rows=16, cols=48, pe=4, fan_in=16, samples=512):
    generator = torch.Generator().manual_seed(seed)
    codes = torch.randint(-1, 2, (rows, cols), generator=generator).to(torch.float32)
    grid = group_grid((rows, cols), pe, fan_in)
    keep = torch.zeros(grid[0] * grid[1], dtype=torch.bool)
    keep[torch.randperm(keep.numel(), generator=generator)[:keep.numel() // 2]] = True
    keep = keep.reshape(grid)
    teacher = apply_group_mask(codes, keep, pe, fan_in)
    inputs = torch.randn(samples, cols, generator=generator)
    return inputs, inputs @ teacher.T * 0.1, keep


def test_train_ternary_pruned_recovers_sparse_teacher():
    pe, fan_in, target = 4, 16, 0.5
    inputs, targets, teacher_keep = _teacher_task(0)

    def train(seed):
        torch.manual_seed(0)
        layer = TernaryLinear(48, 16, bias=False)
        report = train_ternary_pruned(layer, (inputs, targets), pe=pe, fan_in=fan_in,
                                      lambda_group=0.1, target_zero_groups=target, epochs=10,
                                      warmup_epochs=2, seed=seed)
        return layer, report

    layer, report = train(seed=0)
    assert set(report.history) == {"warmup", "penalty", "finetune"}
    assert [len(v) for v in report.history.values()] == [2, 10, 10]
    relative_mse = report.final_loss / float(targets.var())
    assert relative_mse < 0.1
    assert report.zero_group_fraction[0] >= target
    codes, _ = layer.ternary_codes()
    assert zero_group_fraction(codes, pe, fan_in) >= target
    assert torch.equal(report.group_keep[0], teacher_keep)  # it found the teacher's tiles
    assert layer.ternary and layer.training                # caller's modes restored
    again, _ = train(seed=0)
    assert torch.equal(again.weight, layer.weight)          # deterministic for a seed


def test_train_ternary_pruned_on_a_classifier_stack():
    torch.manual_seed(1)
    inputs = torch.randn(256, 20)
    labels = inputs[:, :4].argmax(dim=1)  # 4 classes: chance is 0.25
    model = torch.nn.Sequential(TernaryLinear(20, 32), torch.nn.ReLU(), TernaryLinear(32, 4))
    report = train_ternary_pruned(model, (inputs, labels), pe=4, fan_in=8, lambda_group=0.05,
                                  target_zero_groups=0.25, epochs=10, warmup_epochs=3, seed=3)
    assert len(report.zero_group_fraction) == 2
    assert min(report.zero_group_fraction) >= 0.25
    accuracy = float((model(inputs).argmax(dim=1) == labels).float().mean())
    assert accuracy > 0.85


def test_train_ternary_pruned_rejects_bad_arguments():
    data = (torch.randn(8, 4), torch.randn(8, 2))
    with pytest.raises(ValueError, match="no TernaryLinear"):
        train_ternary_pruned(torch.nn.Linear(4, 2), data, pe=1, fan_in=4)
    layer = TernaryLinear(4, 2)
    with pytest.raises(ValueError, match="target_zero_groups"):
        train_ternary_pruned(layer, data, pe=1, fan_in=4, target_zero_groups=1.5)
    with pytest.raises(ValueError, match="same number"):
        train_ternary_pruned(layer, (data[0], data[1][:4]), pe=1, fan_in=4)
    with pytest.raises(TypeError, match="data must be a pair"):
        train_ternary_pruned(layer, data[0], pe=1, fan_in=4)


# --------------------------------------------------------------------------- reference

def brute_reference(w, x):
    out = np.zeros((x.shape[0], w.shape[0]), dtype=np.int64)
    for b, m in itertools.product(range(x.shape[0]), range(w.shape[0])):
        out[b, m] = sum(int(w[m, n]) * int(x[b, n]) for n in range(w.shape[1]))
    return out


def test_reference_matches_brute_force():
    rng = np.random.default_rng(7)
    w = rng.integers(-1, 2, (9, 37), dtype=np.int8)
    x = rng.integers(-128, 128, (5, 37), dtype=np.int8)
    got = reference(w, x)
    assert got.dtype == np.int64 and got.shape == (5, 9)
    assert np.array_equal(got, brute_reference(w, x))


@pytest.mark.parametrize("w_value, x_value, expected", [(1, -128, -128 * 1024),
                                                        (-1, -128, 128 * 1024),
                                                        (1, 127, 127 * 1024)])
def test_reference_extremes(w_value, x_value, expected):
    w = np.full((3, 1024), w_value, dtype=np.int8)
    x = np.full((2, 1024), x_value, dtype=np.int8)
    got = reference(w, x)
    assert (got == expected).all()
    assert np.array_equal(got, brute_reference(w, x))


def test_reference_requantizes_with_the_shared_requantizer():
    rng = np.random.default_rng(8)
    w = rng.integers(-1, 2, (6, 64), dtype=np.int8)
    x = rng.integers(-128, 128, (4, 64), dtype=np.int8)
    params = RequantParams(mult=np.arange(1000, 1006), shift=12, relu=True)
    got = reference(w, x, requant=params)
    assert np.array_equal(got, requantize(brute_reference(w, x), params))
    assert got.min() >= 0 and got.max() <= 127


@pytest.mark.parametrize("w, x, requant, error, match", [
    (np.zeros((2, 4), np.int16), np.zeros((1, 4), np.int8), None, TypeError, "w must be int8"),
    (np.zeros((2, 4), np.int8), np.zeros((1, 4), np.uint8), None, TypeError, "x must be int8"),
    (np.full((2, 4), 2, np.int8), np.zeros((1, 4), np.int8), None, ValueError,
     r"ternary codes in \{-1, 0, 1\}; w\[0, 0\] = 2"),
    (np.zeros((2, 4), np.int8), np.zeros((1, 5), np.int8), None, ValueError, "must match"),
    (np.zeros(4, np.int8), np.zeros((1, 4), np.int8), None, ValueError, "w must be a 2-D"),
    (np.zeros((2, 4), np.int8), np.zeros(4, np.int8), None, ValueError, "x must be a 2-D"),
    (np.zeros((2, 4), np.int8), np.zeros((1, 4), np.int8), {"mult": 1}, TypeError, "requant"),
    (np.zeros((2, 4), np.int8), np.zeros((1, 4), np.int8), RequantParams([1, 2, 3], 0),
     ValueError, "3 entries"),
])
def test_reference_rejects_bad_inputs(w, x, requant, error, match):
    with pytest.raises(error, match=match):
        reference(w, x, requant=requant)


# --------------------------------------------------------------------------- export

def test_export_layer_codes_and_requant(tmp_path):
    torch.manual_seed(9)
    layer = TernaryLinear(40, 12, bias=False)
    exported = export_layer(layer, 4, 16)
    assert set(exported) == {"w"}
    assert exported["w"].dtype == np.int8 and exported["w"].shape == (12, 40)
    assert set(np.unique(exported["w"])) <= {-1, 0, 1}
    codes, alpha = layer.ternary_codes()
    assert np.array_equal(exported["w"], codes.numpy())

    s_x, s_y = 0.02, 0.05
    exported = export_layer(layer, 4, 16, input_scale=s_x, output_scale=s_y, relu=False)
    params = RequantParams(exported["mult"], exported["shift"], exported["relu"])
    ratio = int(params.mult) / 2 ** params.shift
    assert ratio == pytest.approx(alpha * s_x / s_y, rel=1e-4)
    assert 2 ** 14 <= int(params.mult) < 2 ** 15  # best precision: the multiplier is full

    # The documented convention: layer(s_x * x_int) ~= s_y * reference(w, x_int, requant).
    x_int = torch.randint(-128, 128, (32, 40), generator=torch.Generator().manual_seed(0),
                          dtype=torch.int8)
    expected = (layer(s_x * x_int.float()) / s_y).round().clamp(-128, 127)
    got = reference(exported["w"], x_int.numpy(), requant=params)
    assert np.abs(got - expected.detach().numpy()).max() <= 1

    path = save_npz(tmp_path / "ternary", exported)
    assert path.name == "ternary.npz"
    with np.load(path) as npz:
        assert np.array_equal(npz["w"], exported["w"]) and npz["w"].dtype == np.int8
        loaded = RequantParams.from_npz(npz)
    assert (int(loaded.mult), loaded.shift, loaded.relu) == (int(params.mult), params.shift, False)


def test_export_layer_and_save_npz_reject_bad_input(tmp_path):
    with pytest.raises(ValueError, match="bias"):
        export_layer(TernaryLinear(8, 4, bias=True), 4, 8)
    layer = TernaryLinear(8, 4, bias=False)
    with pytest.raises(ValueError, match="both input_scale and output_scale"):
        export_layer(layer, 4, 8, input_scale=0.1)
    with pytest.raises(ValueError, match="exceeds the largest multiplier"):
        export_layer(layer, 4, 8, input_scale=1e6, output_scale=1e-6)
    with pytest.raises(TypeError, match="int8"):
        save_npz(tmp_path / "a.npz", {"w": np.zeros((2, 2), np.int32)})
    with pytest.raises(ValueError, match="unknown keys"):
        save_npz(tmp_path / "a.npz", {"w": np.zeros((2, 2), np.int8), "bias": 0})
    with pytest.raises(ValueError, match="lacks"):
        save_npz(tmp_path / "a.npz", {"w": np.zeros((2, 2), np.int8), "mult": 3})
