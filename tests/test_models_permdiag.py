"""Permuted-diagonal golden models: the structure, offset inference, conversions, the training
module, int8 export and the integer references."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from secateur.models.permdiag import (
    PermutedDiagonalLinear, block_grid, check_block_size, check_weights, column_reference,
    compress, expand, export_layer, infer_offsets, int8_codes, project, random_offsets,
    reference, save_npz, structure_mask,
)
from secateur.models.requant import RequantParams, requantize


def random_pd(rng, row_blocks, col_blocks, p, zero_blocks=0.0):
    offsets = rng.integers(0, p, size=(row_blocks, col_blocks))
    diag = rng.integers(-128, 128, size=(row_blocks, col_blocks, p), dtype=np.int8)
    diag[rng.random(diag.shape[:2]) < zero_blocks] = 0
    return diag, offsets


def brute_expand(diag, offsets):
    """The definition, literally: block (bi, bj) holds diag[bi, bj, c] at row bi*p + c and
    column bj*p + (c + k) mod p."""
    row_blocks, col_blocks, p = diag.shape
    w = np.zeros((row_blocks * p, col_blocks * p), dtype=diag.dtype)
    for bi in range(row_blocks):
        for bj in range(col_blocks):
            for c in range(p):
                w[bi * p + c, bj * p + (c + offsets[bi, bj]) % p] = diag[bi, bj, c]
    return w


# --------------------------------------------------------------------------- structure

@pytest.mark.parametrize("row_blocks, col_blocks, p", [(3, 5, 4), (1, 1, 1), (2, 7, 5), (4, 2, 32)])
def test_expand_follows_the_definition(row_blocks, col_blocks, p):
    rng = np.random.default_rng(p)
    diag, offsets = random_pd(rng, row_blocks, col_blocks, p)
    w = expand(diag, offsets)
    assert np.array_equal(w, brute_expand(diag, offsets))
    # At most one non-zero per row and per column of every block.
    blocks = (w != 0).reshape(row_blocks, p, col_blocks, p)
    assert blocks.sum(axis=1).max() <= 1 and blocks.sum(axis=3).max() <= 1
    assert np.array_equal(structure_mask(offsets, p), brute_expand(np.ones_like(diag), offsets) != 0)
    torch.testing.assert_close(expand(torch.from_numpy(diag.astype(np.float32)), offsets),
                               torch.from_numpy(w.astype(np.float32)))


def test_compress_round_trip_and_offset_inference():
    rng = np.random.default_rng(1)
    diag, offsets = random_pd(rng, 6, 9, 8)
    diag[diag == 0] = 1  # every block fully non-zero, so every offset is inferable
    w = expand(diag, offsets)
    back, inferred = compress(w, 8)
    assert np.array_equal(inferred, offsets) and np.array_equal(back, diag)
    assert back.dtype == np.int8 and inferred.dtype == np.int64


def test_partly_zero_and_all_zero_blocks():
    p = 4
    diag = np.zeros((1, 3, p), dtype=np.int8)
    offsets = np.array([[3, 2, 1]])
    diag[0, 0, 2] = 5          # a single value fixes offset 3
    diag[0, 1] = [0, 7, 0, -1]  # partly zero, offset 2
    w = expand(diag, offsets)   # block (0, 2) is all zero: its offset is lost
    assert infer_offsets(w, p).tolist() == [[3, 2, 0]]
    back, inferred = compress(w, p)
    assert np.array_equal(expand(back, inferred), w)


def test_infer_offsets_names_the_first_offending_block():
    p = 4
    diag, offsets = random_pd(np.random.default_rng(2), 3, 3, p)
    diag[diag == 0] = 3
    w = expand(diag, offsets)
    # Break block (2, 0) and, later in row-major order, block (2, 1).
    w[9, (1 + offsets[2, 0] + 1) % p] = 9
    w[10, 4 + (2 + offsets[2, 1] + 2) % p] = 9
    with pytest.raises(ValueError, match=r"block \(2, 0\) \(rows 8\.\.11, columns 0\.\.3\).*"
                                         r"2 offending blocks"):
        infer_offsets(w, p)
    with pytest.raises(ValueError, match="not permuted-diagonal"):
        check_weights(w, p)


@pytest.mark.parametrize("shape, match", [((10, 8), r"block row 2 \(rows 8\.\.9\) is partial"),
                                          ((8, 14), r"block column 3 \(columns 12\.\.13\)")])
def test_shape_must_be_a_multiple_of_p(shape, match):
    with pytest.raises(ValueError, match=match):
        infer_offsets(np.zeros(shape, dtype=np.int8), 4)
    with pytest.raises(ValueError, match=match):
        block_grid(shape, 4)


@pytest.mark.parametrize("p, error", [(0, ValueError), (-2, ValueError), (2.0, TypeError),
                                      (True, TypeError), ("4", TypeError)])
def test_block_size_validation(p, error):
    with pytest.raises(error, match="block size p"):
        check_block_size(p)
    assert check_block_size(np.int64(4)) == 4 and check_block_size(np.asarray(3)) == 3


def test_random_offsets_are_reproducible_and_in_range():
    a, b = random_offsets(7, 9, 5, seed=3), random_offsets(7, 9, 5, seed=3)
    assert np.array_equal(a, b) and a.min() >= 0 and a.max() < 5
    assert not np.array_equal(a, random_offsets(7, 9, 5, seed=4))
    assert set(np.unique(random_offsets(40, 40, 5, seed=0))) == set(range(5))
    with pytest.raises(ValueError, match="row_blocks"):
        random_offsets(0, 2, 3)
    with pytest.raises(TypeError, match="col_blocks"):
        random_offsets(2, 1.5, 3)


def test_expand_rejects_mismatched_offsets():
    with pytest.raises(ValueError, match="offsets has shape"):
        expand(np.zeros((2, 3, 4), dtype=np.int8), np.zeros((3, 2), dtype=np.int64))
    with pytest.raises(ValueError, match=r"offsets must be in \[0, 3\]"):
        expand(np.zeros((1, 1, 4), dtype=np.int8), np.array([[4]]))


def test_project_keeps_the_strongest_diagonal():
    rng = np.random.default_rng(5)
    diag, offsets = random_pd(rng, 4, 5, 6)
    diag[diag == 0] = 2
    w = expand(diag, offsets).astype(np.float64)
    projected, chosen = project(w + 0.01 * rng.standard_normal(w.shape), 6)
    assert np.array_equal(chosen, offsets)
    np.testing.assert_allclose(projected, diag, atol=0.05)
    # Among all offsets, the chosen diagonal has the most energy.
    dense = rng.standard_normal((6, 6))
    _, best = project(dense, 6)
    energies = [sum(dense[c, (c + k) % 6] ** 2 for c in range(6)) for k in range(6)]
    assert best[0, 0] == int(np.argmax(energies))


# --------------------------------------------------------------------------- integer reference

@pytest.mark.parametrize("p", [1, 2, 3, 8, 32])
def test_reference_matches_dense_and_column_wise_definitions(p):
    rng = np.random.default_rng(10 + p)
    diag, offsets = random_pd(rng, 3, 4, p, zero_blocks=0.3)
    w = expand(diag, offsets)
    x = rng.integers(-128, 128, size=(5, 4 * p), dtype=np.int8)
    x[rng.random(x.shape) < 0.5] = 0
    expected = x.astype(np.int64) @ w.astype(np.int64).T
    assert np.array_equal(reference(w, x, p), expected)
    assert np.array_equal(column_reference(diag, offsets, x), expected)
    requant = RequantParams(rng.integers(-2**15, 2**15, size=3 * p), 12, True)
    assert np.array_equal(reference(w, x, p, requant), requantize(expected, requant))


def test_reference_extremes_fit_the_documented_bound():
    p, col_blocks = 4, 64
    w = expand(np.full((2, col_blocks, p), -128, dtype=np.int8),
               np.zeros((2, col_blocks), dtype=np.int64))
    x = np.stack([np.full(col_blocks * p, -128), np.full(col_blocks * p, 127)]).astype(np.int8)
    y = reference(w, x, p)
    assert (y[0] == 2 ** 14 * col_blocks).all() and (y[1] == -128 * 127 * col_blocks).all()


@pytest.mark.parametrize("kwargs, error, match", [
    ({"w_int8": np.zeros((4, 4), dtype=np.int16), "x_int8": np.zeros((1, 4), dtype=np.int8)},
     TypeError, "int8 matrix"),
    ({"w_int8": np.zeros((4, 4), dtype=np.int8), "x_int8": np.zeros((1, 4), dtype=np.int32)},
     TypeError, "int8 activations"),
    ({"w_int8": np.zeros((4, 4), dtype=np.int8), "x_int8": np.zeros((1, 8), dtype=np.int8)},
     ValueError, "must match"),
    ({"w_int8": np.ones((4, 4), dtype=np.int8), "x_int8": np.zeros((1, 4), dtype=np.int8)},
     ValueError, "not permuted-diagonal"),
])
def test_reference_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        reference(p=4, **kwargs)
    with pytest.raises(TypeError, match="RequantParams"):
        reference(np.zeros((4, 4), dtype=np.int8), np.zeros((1, 4), dtype=np.int8), 4,
                  requant=(1, 2, False))


# --------------------------------------------------------------------------- training

def test_layer_stores_only_the_diagonal_values():
    layer = PermutedDiagonalLinear(32, 16, p=8, seed=5)
    assert [name for name, _ in layer.named_parameters()] == ["diag"]
    assert layer.diag.numel() == 16 * 32 // 8
    assert set(layer.state_dict()) == {"diag", "offsets"}
    again = PermutedDiagonalLinear(32, 16, p=8, seed=5)
    assert torch.equal(layer.offsets, again.offsets)
    assert not torch.equal(layer.offsets, PermutedDiagonalLinear(32, 16, p=8, seed=6).offsets)
    dense = layer.dense_weight().detach().numpy()
    assert not dense[~structure_mask(layer.offsets.numpy(), 8)].any()
    x = torch.randn(3, 32)
    torch.testing.assert_close(layer(x), F.linear(x, layer.dense_weight()))
    layer(x).square().sum().backward()
    assert layer.diag.grad.shape == layer.diag.shape and layer.diag.grad.abs().sum() > 0
    biased = PermutedDiagonalLinear(8, 8, p=4, bias=True)
    assert biased.bias.shape == (8,)
    with pytest.raises(ValueError, match=r"p = 3 does not divide"):
        PermutedDiagonalLinear(8, 6, p=3)
    with pytest.raises(ValueError, match="in_features"):
        PermutedDiagonalLinear(0, 4, p=2)


def test_training_from_scratch_reaches_a_permuted_diagonal_teacher():
    torch.manual_seed(0)
    teacher = PermutedDiagonalLinear(64, 32, p=8, seed=11)
    student = PermutedDiagonalLinear(64, 32, p=8, seed=11)  # same offsets, fresh values
    inputs = torch.randn(512, 64)
    targets = teacher(inputs).detach()
    optimizer = torch.optim.Adam(student.parameters(), lr=0.02)
    first = F.mse_loss(student(inputs), targets).item()
    for _ in range(300):
        optimizer.zero_grad()
        loss = F.mse_loss(student(inputs), targets)
        loss.backward()
        optimizer.step()
    assert loss.item() < first * 1e-3
    assert torch.equal(student.offsets, teacher.offsets)  # the structure never moved
    torch.testing.assert_close(student.diag, teacher.diag, atol=2e-2, rtol=0)


def test_from_dense_exact_and_projected():
    rng = np.random.default_rng(7)
    diag, offsets = random_pd(rng, 2, 3, 4)
    diag[diag == 0] = 1
    w = expand(diag.astype(np.float32), offsets)
    layer = PermutedDiagonalLinear.from_dense(w, 4)
    torch.testing.assert_close(layer.dense_weight().detach(), torch.from_numpy(w))
    with pytest.raises(ValueError, match="not permuted-diagonal"):
        PermutedDiagonalLinear.from_dense(w + 1, 4)
    projected = PermutedDiagonalLinear.from_dense(w + 0.001, 4, project_weight=True)
    assert torch.equal(projected.offsets, torch.from_numpy(offsets))


# --------------------------------------------------------------------------- int8 export

def test_int8_codes_are_symmetric_and_round():
    codes, scale = int8_codes(np.array([0.5, -1.27, 0.0049, 0.006]))
    assert scale == pytest.approx(0.01) and codes.tolist() == [50, -127, 0, 1]
    assert int8_codes(np.zeros(3))[1] == 1.0
    with pytest.raises(TypeError, match="floating"):
        int8_codes(np.ones(3, dtype=np.int8))
    with pytest.raises(ValueError, match="NaN"):
        int8_codes(np.array([np.nan]))


def test_export_runs_on_the_integer_reference(tmp_path):
    torch.manual_seed(1)
    layer = PermutedDiagonalLinear(48, 24, p=6, seed=2)
    weights = export_layer(layer, input_scale=0.05, output_scale=0.1, relu=True)
    w, p = weights["w"], int(weights["p"])
    assert w.dtype == np.int8 and p == 6
    codes, scale = int8_codes(layer.diag)
    assert np.array_equal(w, expand(codes, layer.offsets.numpy()))
    assert int(weights["mult"]) / 2 ** int(weights["shift"]) == \
        pytest.approx(scale * 0.05 / 0.1, rel=1e-4)
    x_float = torch.randn(16, 48) * 2
    x_int = torch.clamp(torch.round(x_float / 0.05), -128, 127)
    y_int = reference(w, x_int.numpy().astype(np.int8), p, RequantParams.from_npz(weights))
    y_float = torch.relu(layer(x_int * 0.05)).detach().numpy() / 0.1
    assert np.abs(y_int - np.clip(y_float, -128, 127)).max() <= 1.5
    path = save_npz(tmp_path / "layer", weights)
    with np.load(path) as loaded:
        assert set(loaded.files) == {"w", "p", "mult", "shift", "relu"}
        assert np.array_equal(loaded["w"], w) and int(loaded["p"]) == 6


@pytest.mark.parametrize("kwargs, error, match", [
    ({"input_scale": 0.1}, ValueError, "both"),
    ({"input_scale": 0.1, "output_scale": 0.0}, ValueError, "output_scale"),
    ({"input_scale": "a", "output_scale": 1.0}, TypeError, "input_scale"),
    ({"input_scale": 1.0, "output_scale": 1.0, "relu": 1}, TypeError, "relu"),
])
def test_export_rejects_bad_scales(kwargs, error, match):
    with pytest.raises(error, match=match):
        export_layer(PermutedDiagonalLinear(8, 8, p=4), **kwargs)


def test_export_and_save_reject_what_the_engine_cannot_run(tmp_path):
    biased = PermutedDiagonalLinear(8, 8, p=4, bias=True)
    with pytest.raises(ValueError, match="bias"):
        export_layer(biased)
    with torch.no_grad():
        biased.bias.zero_()
    assert export_layer(biased)["w"].shape == (8, 8)
    with pytest.raises(ValueError, match="unknown keys"):
        save_npz(tmp_path / "x", {"w": np.zeros((4, 4), dtype=np.int8), "p": 4, "q": 1})
    with pytest.raises(ValueError, match=r"lacks \['p'\]"):
        save_npz(tmp_path / "x", {"w": np.zeros((4, 4), dtype=np.int8)})
    with pytest.raises(ValueError, match="not permuted-diagonal"):
        save_npz(tmp_path / "x", {"w": np.ones((4, 4), dtype=np.int8), "p": 4})
