"""The integer host ops (models/hostops.py): against float torch where they are exact, against
hand-computed integers at the extremes (int8 -128/127, rounding ties), and the step runner."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from secateur.models import hostops


def _images(seed, shape=(2, 3, 7, 6)):
    return np.random.default_rng(seed).integers(-128, 128, shape).astype(np.int8)


def _torch(x):
    return torch.from_numpy(x.astype(np.float64))


@pytest.mark.parametrize("kernel, stride, padding", [((3, 3), (1, 1), 1), ((2, 3), (2, 1), 0),
                                                     ((1, 1), (2, 2), 0), ((3, 2), (1, 2), 2)])
def test_im2col_is_unfold(seed, kernel, stride, padding):
    x = _images(seed)
    ours = hostops.im2col(x, kernel, stride, (padding,) * 4)
    theirs = F.unfold(_torch(x), kernel, padding=padding, stride=stride)
    np.testing.assert_array_equal(ours, theirs.transpose(1, 2).reshape(ours.shape).numpy())
    assert ours.dtype == np.int8


def test_im2col_then_rows_to_image_is_a_convolution(seed):
    x = _images(seed)
    w = np.random.default_rng(seed + 1).integers(-3, 4, (4, 3, 3, 3))
    rows = hostops.im2col(x, (3, 3), (2, 2), (1, 0, 1, 0)).astype(np.int64) @ w.reshape(4, -1).T
    ours = hostops.rows_to_image(rows, 4, 2)
    padded = F.pad(_torch(x), (0, 0, 1, 1))
    theirs = F.conv2d(padded, torch.from_numpy(w.astype(np.float64)), stride=2)
    np.testing.assert_array_equal(ours, theirs.numpy())


@pytest.mark.parametrize("kernel, stride, padding", [((2, 2), (2, 2), 0), ((3, 3), (1, 1), 1),
                                                     ((3, 2), (2, 1), 1)])
def test_max_pool_is_torch_and_padding_never_wins(seed, kernel, stride, padding):
    x = _images(seed)
    x[0, 0] = -128  # an all-minimum channel: padding (-128) and values tie
    ours = hostops.max_pool(x, kernel, stride, (padding,) * 4)
    theirs = F.max_pool2d(_torch(x), kernel, stride, padding)
    np.testing.assert_array_equal(ours, theirs.numpy())
    assert ours.dtype == np.int8


@pytest.mark.parametrize("count_include_pad", [False, True])
def test_avg_pool_of_floats_is_torch(seed, count_include_pad):
    x = np.random.default_rng(seed).normal(size=(2, 3, 7, 6))
    ours = hostops.avg_pool(x, (3, 3), (2, 2), (1, 1, 1, 1), count_include_pad)
    theirs = F.avg_pool2d(torch.from_numpy(x), 3, 2, 1, count_include_pad=count_include_pad)
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-12)


def test_avg_pool_of_int8_is_the_torch_mean_rounded_half_up(seed):
    x = _images(seed)
    ours = hostops.avg_pool(x, (2, 3), (1, 2), (1, 1, 1, 1))
    mean = F.avg_pool2d(_torch(x), (2, 3), (1, 2), 1, count_include_pad=False).numpy()
    np.testing.assert_array_equal(ours, np.floor(mean + 0.5))


@pytest.mark.parametrize("values, expected", [
    ([1, 2], 2), ([-1, -2], -1), ([127, -128], 0), ([-128, -128], -128), ([127, 127], 127),
    ([1, 0, 0], 0), ([2, 0, 0], 1), ([-2, 0, 0], -1), ([126, 127, 127], 127),
])
def test_average_rounding_at_ties_and_extremes(values, expected):
    x = np.asarray(values, dtype=np.int8).reshape(1, 1, 1, -1)
    assert hostops.global_avg_pool(x).reshape(()) == expected
    assert hostops.avg_pool(x, (1, len(values)), (1, 1)).reshape(()) == expected


def test_global_avg_pool_tracks_torch_within_half_a_step(seed):
    x = _images(seed)
    ours = hostops.global_avg_pool(x).astype(np.float64)
    theirs = F.adaptive_avg_pool2d(_torch(x), 1).numpy()
    assert ours.shape == (2, 3, 1, 1) and np.abs(ours - theirs).max() <= 0.5


def test_flatten_and_relu():
    x = _images(0)
    np.testing.assert_array_equal(hostops.flatten(x), torch.flatten(_torch(x), 1).numpy())
    np.testing.assert_array_equal(hostops.relu(x), np.maximum(x, 0))
    assert hostops.relu(x).dtype == np.int8


@pytest.mark.parametrize("a, b, mult_a, mult_b, shift, relu, expected", [
    (127, 127, 1 << 10, 1 << 10, 10, False, 127),       # saturates high
    (-128, -128, 1 << 10, 1 << 10, 10, False, -128),    # saturates low
    (-128, -128, 1 << 10, 1 << 10, 10, True, 0),        # relu before saturation
    (1, 0, 1, 1, 1, False, 1),                          # 0.5 rounds half up
    (-1, 0, 1, 1, 1, False, 0),                         # -0.5 rounds half up
    (-3, 0, 1, 1, 1, False, -1),                        # -1.5 rounds half up
    (100, -50, 3, 2, 2, False, 50),                     # (300 - 100 + 2) >> 2
    (5, 7, 1, 1, 0, False, 12),                         # shift 0: no rounding term
])
def test_residual_add_by_hand(a, b, mult_a, mult_b, shift, relu, expected):
    x, y = (np.asarray([[value]], dtype=np.int8) for value in (a, b))
    assert hostops.residual_add(x, y, mult_a, mult_b, shift, relu).item() == expected


def test_residual_add_refuses_wrong_operands():
    x = np.zeros((1, 2), dtype=np.int8)
    with pytest.raises(TypeError, match=r"^residual add operands must be int8, not int8 and "
                                        r"int16$"):
        hostops.residual_add(x, x.astype(np.int16), 1, 1, 0)
    with pytest.raises(ValueError, match=r"^residual add operands must have one shape, not "
                                         r"\(1, 2\) and \(2, 1\)$"):
        hostops.residual_add(x, x.T, 1, 1, 0)
    with pytest.raises(ValueError, match=r"^Requantizer mult must be in \[-32768, 32767\], not "
                                         r"40000$"):
        hostops.residual_add(x, x, 40000, 1, 0)


def test_window_ops_refuse_a_padding_as_large_as_the_kernel():
    with pytest.raises(ValueError, match=r"^max pool padding \[2, 2, 2, 2\] must be smaller "
                                         r"than its kernel \[2, 2\], so that every window holds "
                                         r"a real element$"):
        hostops.max_pool(_images(0), (2, 2), (1, 1), (2, 2, 2, 2))


def test_run_steps_pads_vectors_keeps_model_rows_and_returns_raw_logits():
    steps = [{"op": "flatten", "inputs": ["x"], "output": "v"},
             {"op": "engine", "layer": 0, "inputs": ["v"], "output": "h", "cols": 6,
              "model_rows": 2, "raw": False},
             {"op": "engine", "layer": 1, "inputs": ["h"], "output": "y", "cols": 2,
              "model_rows": 2, "raw": True}]
    seen = []

    def engine_layer(index, vectors):
        seen.append(vectors)
        return np.full((vectors.shape[0], 3), 1000 if index else 7, dtype=np.int64)

    x = np.ones((2, 1, 2, 2), dtype=np.int8)
    tensors, trace = hostops.run_steps(steps, "x", x, engine_layer)
    assert seen[0].shape == (2, 6) and not seen[0][:, 4:].any()
    assert tensors["h"].dtype == np.int8 and tensors["h"].shape == (2, 2)
    assert tensors["y"].dtype == np.int64 and (tensors["y"] == 1000).all()
    assert [index for index, _, _ in trace] == [0, 1]


def test_run_steps_refuses_a_hidden_layer_outside_int8():
    steps = [{"op": "engine", "layer": 0, "inputs": ["x"], "output": "h", "cols": 2,
              "model_rows": 1, "raw": False}]
    with pytest.raises(ValueError, match=r"^engine layer 0 produced values outside int8$"):
        hostops.run_steps(steps, "x", np.zeros((1, 2), dtype=np.int8),
                          lambda index, vectors: np.full((1, 1), 128))
