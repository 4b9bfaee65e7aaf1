"""The per-row bias of every engine's result path (models/requant.py, hdl/result_path.py):
its golden model, its load beats, and the RTL of every engine at the extremes.

The RTL cases run one harness per engine, in configurations that the engine's own tests
build too, so the builds are shared:

* raw ``acc + bias`` with the accumulator and the bias both at their extremes, where the sum
  leaves int32 and only the widened ``res`` lanes hold it;
* ``acc + bias`` requantized, per channel, with ReLU;
* a layer without a bias right after one with a bias: the bias memory still holds the old
  values, and the control word's bias bit must keep them out.
"""

import numpy as np
import pytest
from conftest import run_timed

from secateur import make_engine
from secateur.gen.sweep import weight_sparsity_layer
from secateur.hdl.result_path import BIAS_BIT, control_word, result_path_load_beats
from secateur.models.requant import (BIAS_BITS, RequantParams, check_bias, requantize,
                                     result_path, result_width)

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1

#: One configuration per engine, as its own tests build it, and the layer shape tried on it.
CONFIGS = {
    "dense": (dict(pe=3, fan_in=16, max_rows=7, max_cols=512), (7, 40), 0.0),
    "ternary": (dict(pe=4, fan_in=8, max_rows=12, max_cols=40), (12, 40), 0.25),
    "lfsr": (dict(pe=3, index="lfsr", max_rows=8, max_cols=40), (8, 40), 0.5),
    "permdiag": (dict(pe=5, mults=2, slots=5, max_rows=40, max_cols=60, min_p=2, max_p=10,
                      drain_pack=2), (10, 20), 0.5),
    "cim": (dict(pe=2, macro_rows=16, macro_cols=16, adcs=2, rows=4, adc_bits=3), (2, 32), 0.0),
}


# --------------------------------------------------------------------------- golden model

def test_result_path_adds_the_bias_before_requantizing():
    acc = np.array([[100, -100, 0]])
    bias = np.array([28, -28, -5])
    requant = RequantParams(np.array([1, 1, 3]), 1, relu=True)
    assert result_path(acc, None, bias).tolist() == [[128, -128, -5]]
    # (128*1 + 1) >> 1 = 64; relu(-64) = 0; (-5*3 + 1) >> 1 = -7, relu 0.
    assert result_path(acc, requant, bias).tolist() == [[64, 0, 0]]
    assert result_path(acc, requant).tolist() == requantize(acc, requant).tolist()
    assert result_path(acc, None).tolist() == acc.tolist()


def test_result_width_holds_every_sum():
    assert BIAS_BITS == 32
    for acc_width in (8, 20, 32, 40):
        width = result_width(acc_width)
        extreme = -(1 << (acc_width - 1)) + INT32_MIN, (1 << (acc_width - 1)) - 1 + INT32_MAX
        assert -(1 << (width - 1)) <= extreme[0] and extreme[1] <= (1 << (width - 1)) - 1
        # One bit narrower would not hold them.
        assert extreme[0] < -(1 << (width - 2)) or extreme[1] > (1 << (width - 2)) - 1


@pytest.mark.parametrize("bias, error, message", [
    (np.array([1.5, 2.0]), TypeError, r"^bias must be integers, not float64$"),
    (np.array([1, 2, 3]), ValueError, r"^bias must have shape \(2,\), one per output row, not "
                                      r"\(3,\)$"),
    (np.array([0, 1 << 31]), ValueError, r"^bias must be in \[-2147483648, 2147483647\] \(32 "
                                         r"bits\), not 2147483648 \(row 1\)$"),
])
def test_bias_is_checked(bias, error, message):
    with pytest.raises(error, match=message):
        check_bias(bias, 2)


def _layer(name, engine, rows, cols, sparsity, rng) -> dict:
    """A random layer of the engine's structure (cim: without a row mask)."""
    if name == "cim":
        return {"w": rng.integers(-128, 128, (rows, cols)).astype(np.int8)}
    return weight_sparsity_layer(name, engine, rng, rows, cols, sparsity)[0]


def test_every_engine_reads_and_refuses_a_bias():
    for name, (params, (rows, cols), sparsity) in CONFIGS.items():
        engine = make_engine(name, **params)
        weights = _layer(name, engine, rows, cols, sparsity, np.random.default_rng(0))
        engine.check_weight_keys(list(weights) + ["bias"])
        layer = engine.layer(dict(weights, bias=np.arange(rows)))
        assert layer.bias.tolist() == list(range(rows))
        assert layer.report_parameters()["bias"] is True
        with pytest.raises(ValueError, match=rf"^bias must have shape \({rows},\), one per "
                                             rf"output row, not \({rows + 1},\)$"):
            engine.layer(dict(weights, bias=np.arange(rows + 1)))
        assert engine.res_width == result_width(engine.acc_width)
        assert engine.derived()["bias_width"] == BIAS_BITS


def test_bias_beats_only_with_a_bias():
    engine = make_engine("dense", pe=2, fan_in=4, max_rows=8, max_cols=16)
    load_map = engine.load_map
    placements = [(0, 0, 0), (0, 1, 1), (1, 0, 2), (1, 1, None)]
    beats = result_path_load_beats(load_map, None, np.array([-1, 2, 3]), 3, placements)
    assert beats == [(load_map.address("bias", row_block=0, lane=0), 0xFFFFFFFF),
                     (load_map.address("bias", row_block=0, lane=1), 2),
                     (load_map.address("bias", row_block=1, lane=0), 3),
                     (load_map.address("bias", row_block=1, lane=1), 0)]
    assert result_path_load_beats(load_map, None, None, 3, placements) == []
    assert control_word(None, np.zeros(3)) == 1 << BIAS_BIT
    assert control_word(None) == 0


# --------------------------------------------------------------------------- RTL

def _extreme_layer(name, engine, rows, cols, sparsity, rng):
    """The engine's layer with every stored weight at -128 (ternary: -1), so that an input
    of -128 drives the accumulator to its largest value."""
    weights = _layer(name, engine, rows, cols, sparsity, rng)
    w = weights["w"]
    weights["w"] = np.where(w != 0, -1 if name == "ternary" else -128, 0).astype(np.int8)
    return weights


@pytest.mark.sim
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_rtl_adds_the_bias_exactly_at_the_extremes(name, seed):
    from secateur.sim.runner import BatchSimulator
    params, (rows, cols), sparsity = CONFIGS[name]
    engine = make_engine(name, **params)
    simulator = BatchSimulator(engine)
    rng = np.random.default_rng(seed)
    weights = _extreme_layer(name, engine, rows, cols, sparsity, rng)
    bias = np.where(np.arange(rows) % 2 == 0, INT32_MAX, INT32_MIN)
    x = np.concatenate([np.full((1, cols), -128), np.full((1, cols), 127),
                        rng.integers(-128, 128, (3, cols))]).astype(np.int8)

    raw = engine.layer(dict(weights, bias=bias))
    result = run_timed(simulator, raw, x)
    expected = raw.reference(x)
    assert np.array_equal(result.y, expected)
    assert expected.max() > INT32_MAX or expected.min() < INT32_MIN, "the sum never left int32"

    requant = {"mult": rng.integers(-2**15, 2**15, rows), "shift": np.int64(30),
               "relu": np.bool_(True), "bias": rng.integers(INT32_MIN, INT32_MAX, rows,
                                                            endpoint=True)}
    requantized = engine.layer(dict(weights, **requant))
    assert np.array_equal(run_timed(simulator, requantized, x).y, requantized.reference(x))

    # The bias memory still holds the previous layer's biases; the control word says none.
    plain = engine.layer(weights)
    assert np.array_equal(run_timed(simulator, plain, x).y, plain.reference(x))
