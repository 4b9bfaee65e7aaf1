"""LGPS golden models: the mask convention and its invariants and the integer reference
(models/lfsr.py), pruning, training and int8 export (models/lfsr_pruning.py)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from secateur.models.lfsr import (
    MAX_WIDTH, MIN_WIDTH, TAPS, accepted_cycle, best_seeds, check_weights, jump_masks,
    kept_values, lfsr_states, lfsr_step, lfsr_width, mask_indices, max_rejected_run,
    period_is_maximal, reference, requant_for_channel_scales, save_npz,
)
from secateur.models.lfsr_pruning import (
    LFSRPruning, k_schedule, lfsr_mask, lfsr_prune, lfsr_pruning_of, quantize_layer,
    train_lfsr_pruned,
)
from secateur.models.requant import RequantParams, requantize


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These models are tiny: thread hand-offs cost more than they save, tenfold on a busy
    machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def brute_mask(n, k, seed):
    """The convention, literally: step from the seed, keep states <= n, stop at k."""
    width = max(2, n.bit_length())
    state, columns = seed, []
    while len(columns) < k:
        if state <= n:
            columns.append(state - 1)
        state = lfsr_step(state, width)
    return columns


def random_layer(rng, rows, cols, k):
    seeds = rng.integers(1, cols + 1, size=rows)
    w = np.zeros((rows, cols), dtype=np.int8)
    w[np.arange(rows)[:, None], mask_indices(cols, k, seeds)] = rng.integers(-128, 128, (rows, k))
    return w, seeds


# --------------------------------------------------------------------------- the LFSR

def test_taps_cover_every_width_and_are_maximal():
    assert sorted(TAPS) == list(range(MIN_WIDTH, MAX_WIDTH + 1))
    for width, taps in TAPS.items():
        assert max(taps) == width, f"width {width} must tap its top stage"
        assert period_is_maximal(width), f"width {width} taps {taps} are not maximal-length"


@pytest.mark.parametrize("width", range(MIN_WIDTH, 17))
def test_period_by_enumeration(width):
    """The algebraic check agrees with walking the whole cycle where that is affordable."""
    states = lfsr_states(1, width, (1 << width))
    assert states[-1] == 1 and len(set(states[:-1])) == (1 << width) - 1


def test_period_check_rejects_a_non_primitive_polynomial(monkeypatch):
    # x^4 + x^2 + 1 = (x^2 + x + 1)^2 has period 6, not 15.
    monkeypatch.setitem(TAPS, 4, (4, 2))
    assert not period_is_maximal(4)


def test_step_by_hand():
    # Width 3, taps (3, 2): feedback = bit2 ^ bit1, shifted in at bit 0.
    assert lfsr_states(1, 3, 8) == [1, 2, 5, 3, 7, 6, 4, 1]
    assert lfsr_step(np.array([1, 2, 5]), 3).tolist() == [2, 5, 3]


@pytest.mark.parametrize("n,width", [(1, 2), (2, 2), (3, 2), (4, 3), (7, 3), (8, 4), (300, 9),
                                     (512, 10), (1023, 10), (1024, 11), (2**32 - 1, 32)])
def test_width_rule(n, width):
    assert lfsr_width(n) == width
    assert (1 << width) - 1 >= n and (width == 2 or (1 << (width - 1)) - 1 < n)


@pytest.mark.parametrize("n,error", [(0, ValueError), (2**32, ValueError), (-3, ValueError),
                                     (True, TypeError), (3.0, TypeError)])
def test_width_rule_refuses_illegal_n(n, error):
    with pytest.raises(error, match="n \\(columns\\)"):
        lfsr_width(n)


def test_jump_masks_predict_the_new_bits():
    rng = np.random.default_rng(3)
    for width in range(MIN_WIDTH, MAX_WIDTH + 1):
        masks = jump_masks(width, width + 1)
        for state in rng.integers(1, 1 << width, size=5).tolist():
            following = lfsr_states(state, width, width + 2)[1:]
            for steps, (mask, ahead) in enumerate(zip(masks, following), start=1):
                assert (state & mask).bit_count() & 1 == ahead & 1
                # The state `steps` ahead is the shifted state with the new bits below.
                new = sum(((state & masks[i]).bit_count() & 1) << (steps - 1 - i)
                          for i in range(steps))
                assert ((state << steps) | new) & ((1 << width) - 1) == ahead


# --------------------------------------------------------------------------- mask invariants

@pytest.mark.parametrize("n", list(range(1, 70)) + [255, 256, 300, 511, 512, 513, 1000, 1024])
def test_full_k_is_a_permutation(n):
    seeds = np.unique(np.random.default_rng(n).integers(1, n + 1, size=4))
    for row in mask_indices(n, n, seeds):
        assert sorted(row.tolist()) == list(range(n))


@pytest.mark.parametrize("n,k", [(1, 1), (5, 2), (37, 5), (64, 64), (100, 13), (300, 30)])
def test_masks_follow_the_convention_literally(n, k):
    seeds = np.arange(1, n + 1)
    masks = mask_indices(n, k, seeds)
    for seed, row in zip(seeds, masks):
        assert row.tolist() == brute_mask(n, k, int(seed))


@pytest.mark.parametrize("n", [2, 5, 37, 64, 300])
def test_masks_are_deterministic_and_differ_between_seeds(n):
    seeds = np.arange(1, n + 1)
    for k in sorted({1, 2, n // 2 or 1, n}):
        masks = mask_indices(n, k, seeds)
        assert np.array_equal(masks, mask_indices(n, k, seeds))
        assert len({tuple(row) for row in masks.tolist()}) == n, f"k={k}: two seeds share a mask"
        assert masks[:, 0].tolist() == (seeds - 1).tolist()   # the seed is the first column


def test_smaller_k_is_a_prefix():
    seeds = np.array([3, 77, 300])
    assert np.array_equal(mask_indices(300, 40, seeds), mask_indices(300, 200, seeds)[:, :40])


@pytest.mark.parametrize("seed", [0, 301, 511, -1])
def test_illegal_seed_is_refused(seed):
    with pytest.raises(ValueError, match=f"seed of row 1 is {seed}.*\\[1, 300\\]"):
        mask_indices(300, 4, [5, seed])


def test_seed_and_k_types_are_refused():
    with pytest.raises(TypeError, match="seeds must be integers"):
        mask_indices(10, 2, [1.0])
    with pytest.raises(ValueError, match="k .* must be an integer in \\[1, 10\\], not 11"):
        mask_indices(10, 11, [1])
    with pytest.raises(ValueError, match="not 0"):
        mask_indices(10, 0, [1])


def test_rejected_runs_are_at_most_the_width():
    for n in range(1, 1100):
        width = lfsr_width(n)
        run = max_rejected_run(n)
        assert run <= width, f"n={n}: {run} rejected states in a row > width {width}"
        if n == (1 << width) - 1:
            assert run == 0
    # The bound is reached (at n = 2**(w-1) for most widths, among them the widths of the
    # 300- to 1024-column layers), so a stall-free look-ahead needs width + 1 states.
    reached = {width for width in range(2, 17) if max_rejected_run(1 << (width - 1)) == width}
    assert reached == {5, 8, 9, 10, 11, 12, 13, 14, 16}


def test_accepted_cycle_and_torch_mask():
    cycle = accepted_cycle(300)
    assert sorted(cycle.tolist()) == list(range(1, 301))
    mask = lfsr_mask(300, 30, [1, 2, 3])
    assert mask.dtype == torch.bool and mask.sum(dim=1).tolist() == [30, 30, 30]
    assert mask[1, mask_indices(300, 30, 2)[0]].all()


# --------------------------------------------------------------------------- integer reference

def test_check_weights_names_the_first_offending_position():
    rng = np.random.default_rng(0)
    w, seeds = random_layer(rng, 4, 20, 5)
    w[0] = 0                       # a row of kept zeros is legal
    check_weights(w, seeds, 5)
    outside = np.setdiff1d(np.arange(20), mask_indices(20, 5, seeds[2])[0])
    w[2, outside[1]] = 7
    w[3, outside[0]] = -1
    with pytest.raises(ValueError, match=f"w\\[2, {outside[1]}\\] = 7 lies outside row 2"):
        check_weights(w, seeds, 5)


def test_check_weights_types_and_shapes():
    w = np.zeros((2, 5), dtype=np.int8)
    with pytest.raises(TypeError, match="int8"):
        check_weights(w.astype(np.int16), [1, 2], 2)
    with pytest.raises(ValueError, match="shape \\(2,\\)"):
        check_weights(w, [1, 2, 3], 2)
    with pytest.raises(ValueError, match="seed of row 1 is 6"):
        check_weights(w, [1, 6], 2)


def test_reference_equals_dense_matmul_and_requant():
    rng = np.random.default_rng(1)
    w, seeds = random_layer(rng, 9, 45, 11)
    x = rng.integers(-128, 128, size=(4, 45), dtype=np.int8)
    dense = x.astype(np.int64) @ w.astype(np.int64).T
    assert np.array_equal(reference(w, seeds, 11, x), dense)
    params = RequantParams(rng.integers(-2**15, 2**15, size=9), 13, True)
    assert np.array_equal(reference(w, seeds, 11, x, requant=params), requantize(dense, params))
    values = kept_values(w, seeds, 11)
    assert np.array_equal(values, w[np.arange(9)[:, None], mask_indices(45, 11, seeds)])


def test_reference_extremes_are_exact():
    n = 1024
    w = np.full((2, n), -128, dtype=np.int8)
    x = np.stack([np.full(n, -128), np.full(n, 127)]).astype(np.int8)
    acc = reference(w, [1, 1024], n, x)
    assert acc.tolist() == [[16384 * n] * 2, [-16256 * n] * 2]


# --------------------------------------------------------------------------- pruning

def test_best_seeds_is_the_best_window():
    rng = np.random.default_rng(5)
    importance = rng.random((6, 37))
    for k in (1, 5, 36, 37):
        seeds = best_seeds(importance, k)
        for row, seed in enumerate(seeds):
            scores = [importance[row, mask_indices(37, k, s)[0]].sum() for s in range(1, 38)]
            assert importance[row, mask_indices(37, k, int(seed))[0]].sum() == \
                pytest.approx(max(scores))


def test_lfsr_pruning_of_a_linear_layer():
    torch.manual_seed(0)
    layer = nn.Linear(50, 7, bias=False)
    lfsr_prune(layer, "weight", k=9)
    method = lfsr_pruning_of(layer)
    assert isinstance(method, LFSRPruning) and method.k == 9
    expected = lfsr_mask(50, 9, method.seeds)
    assert torch.equal(layer.weight_mask.bool(), expected)
    assert torch.equal(layer.weight != 0, expected)   # random weights are non-zero
    assert np.array_equal(method.seeds, best_seeds(layer.weight_orig.detach().abs().numpy(), 9))
    out = layer(torch.randn(3, 50))
    assert out.shape == (3, 7)


def test_lfsr_pruning_with_given_seeds_and_nesting():
    layer = nn.Linear(30, 3)
    prune.identity(layer, "weight")                 # an earlier pruning: a container follows
    LFSRPruning.apply(layer, "weight", 12, seeds=[4, 9, 30])
    LFSRPruning.apply(layer, "weight", 5, seeds=[4, 9, 30])
    assert torch.equal(layer.weight_mask.bool(), lfsr_mask(30, 5, [4, 9, 30]))
    assert lfsr_pruning_of(layer).seeds.tolist() == [4, 9, 30]
    with pytest.raises(ValueError, match="seed of row 0 is 31"):
        LFSRPruning.apply(nn.Linear(30, 1), "weight", 5, seeds=[31])
    with pytest.raises(ValueError, match="k .* \\[1, 30\\], not 31"):
        lfsr_prune(nn.Linear(30, 1), k=31)
    with pytest.raises(ValueError, match="not LFSR-pruned"):
        lfsr_pruning_of(nn.Linear(3, 3))


def test_conv_is_pruned_as_its_im2col_matrix():
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 4, kernel_size=3, bias=False)
    lfsr_prune(conv, k=8)
    matrix = conv.weight.reshape(4, -1)
    assert matrix.shape == (4, 27)
    assert torch.equal(matrix != 0, lfsr_mask(27, 8, lfsr_pruning_of(conv).seeds))
    x = torch.randn(2, 3, 6, 6)
    columns = F.unfold(x, kernel_size=3)             # (B, 27, L): row = output channel
    torch.testing.assert_close((matrix @ columns).reshape(2, 4, 4, 4), conv(x))


def test_k_schedule():
    schedule = k_schedule(100, 10, 4)
    assert schedule[-1] == 10 and schedule == sorted(schedule, reverse=True)
    assert schedule[0] < 100 and len(schedule) == 4
    assert k_schedule(5, 5, 3) == [5, 5, 5]


def _toy_task(seed=0):
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(512, 40, generator=generator)
    teacher = torch.zeros(40, 3)
    teacher[:8] = torch.randn(8, 3, generator=generator)   # 8 informative features
    return inputs, (inputs @ teacher).argmax(dim=1)


def test_gradual_pruning_with_fine_tuning():
    torch.manual_seed(0)
    inputs, labels = _toy_task()
    net = nn.Sequential(nn.Linear(40, 32, bias=False), nn.ReLU(), nn.Linear(32, 3, bias=False))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):
        optimizer.zero_grad()
        F.cross_entropy(net(inputs), labels).backward()
        optimizer.step()
    report = train_lfsr_pruned(net, (inputs, labels), density={"0": 0.25, "2": 0.5}, stages=3,
                               epochs_per_stage=3, final_epochs=4, lr=0.02)
    assert report.ks == {"0": k_schedule(40, 10, 3), "2": k_schedule(32, 16, 3)}
    for name, k in (("0", 10), ("2", 16)):
        layer = net[int(name)]
        assert lfsr_pruning_of(layer).k == k
        assert torch.equal(layer.weight != 0, lfsr_mask(layer.in_features, k, report.seeds[name]))
    accuracy = (net(inputs).argmax(dim=1) == labels).float().mean()
    assert accuracy > 0.9, f"pruned accuracy {accuracy:.2f}"
    assert report.losses[-1] < report.losses[0]


def test_training_refuses_bad_arguments():
    net = nn.Sequential(nn.Linear(4, 2))
    data = (torch.randn(8, 4), torch.zeros(8, dtype=torch.long))
    with pytest.raises(ValueError, match="density of 0 must be in \\(0, 1\\]"):
        train_lfsr_pruned(net, data, density=0.0)
    with pytest.raises(ValueError, match="not a Linear or Conv layer"):
        train_lfsr_pruned(net, data, density={"1": 0.5})
    with pytest.raises(ValueError, match="two non-empty tensors"):
        train_lfsr_pruned(net, (data[0],), density=0.5)


# --------------------------------------------------------------------------- int8 export

def test_requant_for_channel_scales():
    scales = np.array([0.5, -0.001, 3e-5, 0.0])
    params = requant_for_channel_scales(scales)
    assert np.abs(params.mult).max() <= 2**15 - 1
    np.testing.assert_allclose(params.mult / 2.0 ** params.shift, scales, atol=2.0 ** -params.shift)
    with pytest.raises(ValueError, match="exceeds the largest multiplier"):
        requant_for_channel_scales([1e6])


def test_quantize_layer_matches_the_float_layer(tmp_path):
    torch.manual_seed(2)
    layer = nn.Linear(64, 16, bias=False)
    lfsr_prune(layer, k=20)
    weights = quantize_layer(layer, input_scale=0.05, output_scale=0.02, relu=False)
    w, seeds, k = weights["w"], weights["seeds"], int(weights["k"])
    assert w.dtype == np.int8 and np.abs(w).max() == 127 and k == 20
    check_weights(w, seeds, k)
    x_int = np.random.default_rng(0).integers(-128, 128, size=(32, 64), dtype=np.int8)
    expected = layer(torch.from_numpy(x_int.astype(np.float32)) * 0.05).detach().numpy() / 0.02
    params = RequantParams.from_npz(weights)
    y_int = reference(w, seeds, k, x_int, requant=params)
    assert np.abs(y_int - np.clip(np.round(expected), -128, 127)).max() <= 2
    path = save_npz(tmp_path / "layer", weights)
    with np.load(path) as npz:
        assert sorted(npz.files) == ["k", "mult", "relu", "seeds", "shift", "w"]
        assert np.array_equal(npz["w"], w)
    with pytest.raises(ValueError, match="not LFSR-pruned"):
        quantize_layer(nn.Linear(3, 3, bias=False))
    with pytest.raises(ValueError, match="both input_scale and output_scale"):
        quantize_layer(layer, input_scale=0.1)
    with pytest.raises(ValueError, match="lacks \\['seeds'\\]"):
        save_npz(tmp_path / "bad", {"w": w, "k": 20})

