"""The CIM golden models: the formula against a scalar transcription, the lossless case, the
schedule's counts against a cycle-by-cycle walk, twofold masks, the energy of the counts and
the BitS-Net regularizer."""

import numpy as np
import pytest
import torch

from secateur.models import cim
from secateur.models.lfsr import mask_indices
from secateur.models.requant import RequantParams, requantize


def scalar_formula(w, x, R, B, a):
    """The issue's formula, transcribed loop by loop for one input vector."""
    rows, cols = w.shape
    y = np.zeros(rows, dtype=np.int64)
    sign = lambda bit: -1 if bit == 7 else 1
    for m in range(rows):
        for i in range(8):
            for b in range(8):
                for g in range(-(-cols // R)):
                    s = sum(((int(x[n]) & 0xFF) >> i & 1) * ((int(w[m, n]) & 0xFF) >> b & 1)
                            for n in range(g * R, min(cols, g * R + R)))
                    q = min(s >> a, 2 ** B - 1) << a
                    y[m] += sign(i) * sign(b) * 2 ** (i + b) * q
    return y


@pytest.mark.parametrize("R, B, a", [(1, 1, 0), (3, 2, 0), (4, 2, 1), (8, 3, 0), (5, 1, 2)])
def test_formula_matches_its_scalar_transcription(seed, R, B, a):
    rng = np.random.default_rng(seed)
    w = rng.integers(-128, 128, (3, 11)).astype(np.int8)
    x = rng.integers(-128, 128, (2, 11)).astype(np.int8)
    x[1, :4] = [-128, 127, -1, 0]
    y = cim.reference(w, x, R, B, a)
    for batch in range(2):
        assert np.array_equal(y[batch], scalar_formula(w, x[batch], R, B, a)), f"seed {seed}"


@pytest.mark.parametrize("R", [1, 2, 3, 7, 8, 15, 16, 64])
def test_lossless_setting_gives_the_matrix_product(seed, R):
    rng = np.random.default_rng(seed)
    B = max(1, int(np.ceil(np.log2(R + 1))))
    assert cim.is_lossless(R, B, 0) and not cim.is_lossless(R, B, 1)
    if B > 1:
        assert not cim.is_lossless(R, B - 1, 0)
    w = rng.integers(-128, 128, (9, 70)).astype(np.int8)
    x = rng.integers(-128, 128, (4, 70)).astype(np.int8)
    x[0], w[0] = -128, -128  # the extremes
    assert np.array_equal(cim.reference(w, x, R, B), x.astype(np.int64) @ w.astype(np.int64).T)


def test_saturation_is_lossy_and_requantization_follows():
    w = np.full((2, 16), -1, dtype=np.int8)
    x = np.full((1, 16), -1, dtype=np.int8)
    exact = x.astype(np.int64) @ w.astype(np.int64).T
    lossy = cim.reference(w, x, 16, 2)
    assert not np.array_equal(lossy, exact)
    params = RequantParams(np.int64(300), np.int64(6), np.bool_(True))
    assert np.array_equal(cim.reference(w, x, 16, 2, requant=params), requantize(lossy, params))


def test_torch_formula_checks_its_inputs():
    w = torch.zeros((2, 3), dtype=torch.int64)
    with pytest.raises(ValueError, match=r"adc_bits \(B\) must be an integer in \[1, 8\], not 9"):
        cim.cim_matvec(w, torch.zeros((1, 3), dtype=torch.int64), 1, 9)
    with pytest.raises(ValueError,
                       match=r"rows \(R, rows per conversion\) must be an integer >= 1, not 0"):
        cim.cim_matvec(w, torch.zeros((1, 3), dtype=torch.int64), 0, 1)
    with pytest.raises(TypeError, match="w must be an integer torch tensor"):
        cim.cim_matvec(w.float(), torch.zeros((1, 3), dtype=torch.int64), 1, 1)
    with pytest.raises(ValueError, match=r"x must hold int8 values"):
        cim.cim_matvec(w, torch.full((1, 3), 128), 1, 1)
    with pytest.raises(TypeError, match="x must be an int8 array"):
        cim.reference(np.zeros((2, 3), np.int8), np.zeros((1, 3), np.int16), 1, 1)


def test_geometry_names_each_rule():
    with pytest.raises(ValueError, match=r"rows \(R\) must divide macro_rows = 16, not 5"):
        cim.Geometry(1, 16, 16, 2, 5, 3)
    with pytest.raises(ValueError, match="adcs must divide macro_cols = 16, not 3"):
        cim.Geometry(1, 16, 16, 3, 4, 3)
    with pytest.raises(ValueError, match="must divide 8 or be a multiple of 8, not 3"):
        cim.Geometry(1, 16, 24, 8, 4, 3)
    with pytest.raises(ValueError, match="macro_cols must be a multiple of 8"):
        cim.Geometry(1, 16, 12, 2, 4, 3)
    geometry = cim.Geometry(2, 16, 16, 2, 4, 3)
    assert (geometry.slots, geometry.col_mux, geometry.groups) == (2, 8, 4)
    with pytest.raises(ValueError,
                       match=r"a 3x17 layer needs 2 x 2 tiles .* more than the 2 macros"):
        cim.tile_grid((3, 17), geometry)


def test_twofold_mask_follows_the_lfsr_convention(seed):
    rng = np.random.default_rng(seed)
    geometry = cim.Geometry(4, 16, 16, 2, 4, 3)
    seeds, k = rng.integers(1, 17, (2, 2)), rng.integers(1, 17, (2, 2))
    mask = cim.twofold_mask((4, 20), geometry, seeds, k)
    for rt in range(2):
        for ct in range(2):
            kept = np.zeros(16, bool)
            kept[mask_indices(16, int(k[rt, ct]), int(seeds[rt, ct]))[0]] = True
            block = mask[ct * 2:ct * 2 + 2, rt * 16:rt * 16 + 16]
            assert np.array_equal(block, np.broadcast_to(kept[:block.shape[1]], block.shape))
    w = np.ones((4, 20), np.int8) * mask
    assert np.array_equal(cim.check_twofold(w, geometry, seeds, k), mask)
    if not mask.all():
        m, n = np.argwhere(~mask)[0]
        w[m, n] = 3
        with pytest.raises(ValueError, match=rf"w\[{m}, {n}\] = 3 lies on row {n % 16} of macro "
                                             rf"tile \({n // 16}, {m // 2}\)"):
            cim.check_twofold(w, geometry, seeds, k)
    with pytest.raises(ValueError, match=r"seeds must have shape \(2, 2\)"):
        cim.twofold_mask((4, 20), geometry, seeds[0], k)
    with pytest.raises(ValueError, match=r"seed of row 0 is 17"):
        cim.twofold_mask((4, 20), geometry, np.full((2, 2), 17), k)


def walk_schedule(w, x, geometry, keep):
    """The controller's schedule, cycle by cycle, for one vector: (cycles, conversions,
    row activations)."""
    g = geometry
    cells, keep = cim.tile_cells(w, g, keep)
    row_tiles, col_tiles = cells.shape[:2]
    xp = np.zeros(row_tiles * g.macro_rows, np.int64)
    xp[:x.shape[0]] = x
    cycles = conversions = activations = 0
    for i in range(8):
        for gl in range(g.groups):
            rows = range(gl * g.rows, gl * g.rows + g.rows)
            word_lines = {(rt, ct): [r for r in rows if (xp[rt * g.macro_rows + r] & 0xFF) >> i & 1
                                     and keep[rt, ct, r]]
                          for rt in range(row_tiles) for ct in range(col_tiles)}
            if not any(word_lines.values()):
                continue
            for sel in range(g.col_mux):
                cycles += 1
                for (rt, ct), lines in word_lines.items():
                    if not lines:
                        continue
                    lanes = [j for j in range(g.adcs)
                             if any(cells[rt, ct, r, j * g.col_mux + sel] and keep[rt, ct, r]
                                    for r in rows)]
                    if lanes:
                        conversions += len(lanes)
                        activations += len(lines)
    return cycles, conversions, activations


@pytest.mark.parametrize("adcs", [1, 2, 4, 16])
def test_schedule_counts_match_a_cycle_walk(seed, adcs):
    rng = np.random.default_rng(seed)
    geometry = cim.Geometry(4, 16, 16, adcs, 4, 3)
    w = (rng.integers(-128, 128, (3, 30)) * (rng.random((3, 30)) < 0.3)).astype(np.int8)
    x = np.stack([rng.integers(-128, 128, 30), rng.integers(0, 8, 30),
                  np.zeros(30, int)]).astype(np.int8)
    keep = cim.tile_keep(geometry, (2, 2), rng.integers(1, 17, (2, 2)), 9)
    for mask in (None, keep):
        counts = cim.schedule(w, x, geometry, mask)
        walked = np.array([walk_schedule(w, vector, geometry, mask) for vector in x]).sum(axis=0)
        assert (counts["compute_cycles"], counts["adc_conversions"],
                counts["row_activations"]) == tuple(walked), f"seed {seed}"
        assert counts["adc_conversions"] + counts["adc_conversions_skipped"] \
            == counts["dense_adc_conversions"] == 3 * 8 * 4 * 16 * 4
        assert counts["dense_compute_cycles"] == 3 * 8 * 4 * geometry.col_mux


def test_dead_bit_planes_cost_no_cycles():
    geometry = cim.Geometry(1, 16, 16, 2, 4, 3)
    w = np.full((2, 16), 5, np.int8)
    three_planes = cim.schedule(w, np.full((1, 16), 7, np.int8), geometry)
    all_planes = cim.schedule(w, np.full((1, 16), -1, np.int8), geometry)
    assert three_planes["compute_cycles"] * 8 == all_planes["compute_cycles"] * 3
    assert cim.schedule(w, np.zeros((1, 16), np.int8), geometry)["compute_cycles"] == 0
    # Weight 5 = 0b101: two live bit-columns of 8 per output.
    assert all_planes["adc_conversions"] * 4 == all_planes["dense_adc_conversions"]


def test_energy_prices_the_schedule_counts_by_adc_resolution():
    # The shared table (secateur.models.energy) prices CIM's conversions by ADC resolution:
    # 4..8 bits are sourced (ISAAC via Accelergy), narrower ADCs are not.
    from secateur.models import energy

    work = cim.schedule(np.full((2, 16), 5, np.int8), np.full((1, 16), -1, np.int8),
                        cim.Geometry(1, 16, 16, 2, 8, 4))
    counts = {"adc_conversion": work["adc_conversions"],
              "row_activation": work["row_activations"]}
    table = energy.load_table()
    expected = (work["adc_conversions"] * table["actions"]["adc_conversion"]["value_pj"]["4"]
                + work["row_activations"] * table["actions"]["row_activation"]["value_pj"])
    assert energy.energy_pj(counts, {"adc_bits": 4}) == (pytest.approx(expected), [])
    assert energy.energy_pj(counts, {"adc_bits": 3}) == (None, ["adc_conversion"])


def test_soft_bit_count_tracks_the_true_count():
    values = torch.arange(-128, 128, dtype=torch.float64)
    true = cim.bit_planes(values.long()).sum(-1).double()
    soft = cim.soft_bit_count(values)
    assert np.corrcoef(soft, true)[0, 1] > 0.9
    assert cim.bit_density(np.array([0, -1], np.int8)) == 0.5
    values.requires_grad_(True)
    cim.soft_bit_count(values).sum().backward()
    assert torch.isfinite(values.grad).all() and values.grad.abs().sum() > 0


def test_regularizer_lowers_the_bit_density_of_a_trained_layer():
    torch.manual_seed(0)
    teacher = torch.randn(16, 64) * 0.5
    inputs = torch.randn(1024, 64)
    data = (inputs, inputs @ teacher.T)
    densities, losses = {}, {}
    for strength in (0.0, 0.05):
        torch.manual_seed(1)
        layer = torch.nn.Linear(64, 16, bias=False)
        losses[strength] = cim.train_bits(layer, data, strength=strength, epochs=30)[-1]
        densities[strength] = cim.bit_density(cim.quantize_int8(layer.weight)[0])
    assert densities[0.05] < 0.85 * densities[0.0], densities
    # Still a useful layer: the task loss stays far below the targets' variance.
    assert losses[0.05] < 0.05 * float(data[1].var()), losses


def test_twofold_training_keeps_the_mask_and_exports_a_legal_layer():
    geometry = cim.Geometry(2, 16, 16, 2, 4, 3)
    mask = cim.twofold_mask((4, 16), geometry, np.array([[3, 11]]), 6)
    torch.manual_seed(0)
    inputs = torch.randn(256, 16)
    layer = torch.nn.Linear(16, 4, bias=False)
    cim.train_bits(layer, (inputs, inputs @ torch.randn(4, 16).T), strength=0.02, epochs=3,
                   mask=mask)
    w, _ = cim.quantize_int8(layer.weight)
    assert not w[~mask].any() and w[mask].any()
    cim.check_twofold(w, geometry, np.array([[3, 11]]), 6)
    with pytest.raises(ValueError, match=r"mask must have shape \(4, 16\)"):
        cim.train_bits(layer, (inputs, inputs[:, :4]), strength=0.0, mask=mask[:, :8])
    with pytest.raises(ValueError, match="strength must be a real number >= 0"):
        cim.train_bits(layer, (inputs, inputs[:, :4]), strength=-1.0)
