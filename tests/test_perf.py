"""The performance model (:mod:`secateur.models.perf`) against the RTL, cycle for cycle, and
``secateur estimate``.

The property tests draw layers, structures, sparsities, inputs and batches with hypothesis
(derandomized, so every run draws the same cases and reuses the same harness builds) on a
recorded set of engine configurations per engine, and on engine configurations hypothesis
draws from each engine's parameter ranges; each case runs through
:class:`~secateur.sim.runner.BatchSimulator` and must match the model exactly: cycles, load
cycles and, without building a beat, the load beats.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import in_make_test
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from secateur.gen import estimate as estimate_module
from secateur.gen.cli import main
from secateur.gen.registry import engine_names, make_engine
from secateur.gen.sweep import sparse_inputs, weight_sparsity_layer
from secateur.gen.tiling import tile_layer
from secateur.models import perf
from secateur.models.lfsr import lfsr_width

#: The tiler's configurations (tests/test_tiling.py builds them in ``make test`` too), each
#: with a layer 3-5x larger than it holds and the weight density it is drawn at.
TILED = [("dense", dict(pe=2, fan_in=4, max_rows=8, max_cols=16), (31, 70), 0.5),
         ("ternary", dict(pe=2, fan_in=4, max_rows=8, max_cols=16, max_groups=6), (29, 61), 0.5),
         ("lfsr", dict(pe=2, max_rows=8, max_cols=40, weight_depth=24), (37, 40), 0.2),
         ("permdiag", dict(pe=2, mults=2, slots=2, max_rows=8, max_cols=12, min_p=2, max_p=4),
          (32, 48), 0.25),
         ("cim", dict(pe=2, macro_rows=16, macro_cols=16, adcs=2, rows=4, adc_bits=3,
                      row_mask="lfsr"), (9, 70), 0.5)]
_TILER = {name: params for name, params, _, _ in TILED}

#: Recorded engine configurations, small enough to build in seconds: the first of each
#: engine runs in ``make test`` (the tiler's, whose builds are shared, but for lfsr a
#: look-ahead that hunts), all of them in ``make regress``. Between them: one PE and several,
#: non-power-of-two fan-ins, tree_stages 0, a small max_groups, lfsr look-aheads that hunt and
#: csr, permdiag with one slot per PE and drain packing, cim with and without a row mask.
CONFIGS = {
    "dense": [_TILER["dense"], dict(pe=4, fan_in=16, max_rows=10, max_cols=72),
              dict(pe=3, fan_in=5, max_rows=11, max_cols=23, tree_stages=0),
              dict(pe=1, fan_in=1, max_rows=4, max_cols=9)],
    "ternary": [_TILER["ternary"], dict(pe=4, fan_in=8, max_rows=12, max_cols=40),
                dict(pe=3, fan_in=5, max_rows=20, max_cols=23, max_groups=9),
                dict(pe=1, fan_in=3, max_rows=5, max_cols=13, tree_stages=0)],
    "lfsr": [dict(pe=3, max_rows=8, max_cols=40, weight_depth=60, act_lanes=4, lookahead=2),
             dict(pe=3, index="csr", max_rows=8, max_cols=40, weight_depth=60, act_lanes=4),
             dict(pe=2, max_rows=6, max_cols=33, weight_depth=66, act_lanes=1, lookahead=1),
             _TILER["lfsr"]],
    "permdiag": [_TILER["permdiag"],
                 dict(pe=4, mults=8, slots=2, max_rows=32, max_cols=64, min_p=2, max_p=16,
                      act_per_slot=4, drain_pack=1, tree_stages=1),
                 dict(pe=3, mults=2, slots=3, max_rows=24, max_cols=36, min_p=2, max_p=12,
                      drain_pack=2),
                 dict(pe=1, mults=2, max_rows=8, max_cols=12, min_p=2, max_p=4)],
    "cim": [_TILER["cim"], dict(pe=4, macro_rows=64, macro_cols=128, adcs=16, rows=8, adc_bits=4),
            dict(pe=3, macro_rows=16, macro_cols=16, adcs=4, rows=4, adc_bits=2, adc_shift=1,
                 adc_latency=2, act_lanes=4),
            dict(pe=2, macro_rows=12, macro_cols=24, adcs=1, rows=2, adc_bits=2, act_lanes=3)],
}
FIXED = [(name, params) for name, configs in CONFIGS.items() for params in configs]
FIRST = {FIXED.index((name, configs[0])) for name, configs in CONFIGS.items()}

#: Hypothesis examples (layers and batches) per configuration: (make test, make regress).
EXAMPLES = (16, 60)
#: Engine configurations hypothesis draws per engine, with layers on each.
RANDOM_CONFIGS = (1, 6)
LAYERS_PER_RANDOM_CONFIG = 4

_SETTINGS = dict(derandomize=True, database=None, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                        HealthCheck.filter_too_much])


def _ids(cases):
    return [f"{name}-" + "-".join(f"{key}{value}" for key, value in params.items())
            for name, params in cases]


# --------------------------------------------------------------------------- drawing

def _draw_layer(data, engine):
    """A legal layer of ``engine`` and a batch for it, drawn from ``data``: shape and weight
    sparsity in the engine's structure (:func:`~secateur.gen.sweep.weight_sparsity_layer`),
    half the time a requantizer and a bias, inputs with a fraction of zeros and a mask of
    live bit-planes."""
    name = engine.name

    def ints(low, high, label):
        return data.draw(st.integers(low, high), label=label)

    if name == "permdiag":
        p = ints(engine.min_p, min(engine.max_p, engine.max_rows, engine.max_cols), "p")
        rows, cols = p * ints(1, engine.max_rows // p, "rows/p"), \
            p * ints(1, engine.max_cols // p, "cols/p")
        sparsity = 1 - 1 / p
    elif name == "cim":
        geometry = engine.geometry
        row_tiles = ints(1, engine.pe, "row tiles")
        col_tiles = ints(1, engine.pe // row_tiles, "column tiles")
        cols = ints((row_tiles - 1) * geometry.macro_rows + 1, row_tiles * geometry.macro_rows,
                    "cols")
        rows = ints((col_tiles - 1) * geometry.slots + 1, col_tiles * geometry.slots, "rows")
        sparsity = 1 - ints(1, geometry.macro_rows, "kept rows") / geometry.macro_rows
    elif name == "lfsr":
        # Rows of at most weight_depth row blocks, so that k = 1 fits.
        rows = ints(1, min(engine.max_rows, engine.weight_depth * engine.pe), "rows")
        cols = ints(1, engine.max_cols, "cols")
        k = ints(1, min(cols, engine.weight_depth // -(-rows // engine.pe)), "k")
        sparsity = 1 - k / cols
    else:
        rows, cols = ints(1, engine.max_rows, "rows"), ints(1, engine.max_cols, "cols")
        # Ternary: enough zero groups that the non-zero ones fit max_groups.
        groups = -(-rows // engine.pe) * -(-cols // engine.fan_in)
        least = max(0.0, 1 - engine.max_groups / groups) if name == "ternary" else 0.0
        sparsity = data.draw(st.floats(least, 1), label="sparsity")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    weights, _ = weight_sparsity_layer(name, engine, rng, rows, cols, sparsity)
    if name == "cim" and engine.row_mask == "none":
        weights = {"w": weights["w"]}
    if data.draw(st.booleans(), label="requantized"):
        weights.update(mult=rng.integers(-2**15, 2**15, size=rows), shift=np.int64(9),
                       relu=np.bool_(True))
    if data.draw(st.booleans(), label="bias"):
        weights["bias"] = rng.integers(-2**31, 2**31, size=rows)
    layer = engine.layer(weights)
    batch = ints(1, 6, "batch")
    x = sparse_inputs(rng, batch, cols, data.draw(st.sampled_from([0.0, 0.3, 0.8, 1.0]),
                                                  label="input zeros"))
    planes = data.draw(st.sampled_from([0xFF, 0x07, 0x81, 0x01]), label="live bit-planes")
    return layer, (x.view(np.uint8) & planes).view(np.int8)


def _draw_params(data, name: str) -> dict:
    """Legal parameters of engine ``name``, small enough to build in seconds: every
    generator parameter drawn (pe 1-4, memories of a few words)."""
    draw = data.draw
    pe = draw(st.integers(1, 4), label="pe")
    if name in ("dense", "ternary"):
        params = dict(pe=pe, fan_in=draw(st.integers(1, 9)), max_rows=draw(st.integers(1, 12)),
                      max_cols=draw(st.integers(1, 30)))
        fan_in = params["fan_in"]
        params["tree_stages"] = draw(st.integers(0, max(1, (fan_in - 1).bit_length())))
        if name == "ternary":
            groups = -(-params["max_rows"] // pe) * -(-params["max_cols"] // fan_in)
            params["max_groups"] = draw(st.integers(1, groups))
        return params
    if name == "lfsr":
        max_cols = draw(st.integers(2, 40))
        params = dict(pe=pe, index=draw(st.sampled_from(["lfsr", "csr"])),
                      max_rows=draw(st.integers(1, 10)), max_cols=max_cols,
                      weight_depth=draw(st.integers(1, 80)),
                      act_lanes=draw(st.sampled_from([1, 2, 4, 8])))
        params["lookahead"] = draw(st.integers(1, lfsr_width(max_cols) + 1))
        return params
    if name == "permdiag":
        slots = draw(st.sampled_from([d for d in range(1, pe + 1) if pe % d == 0]))
        min_p = draw(st.integers(1, 4))
        params = dict(pe=pe, mults=draw(st.integers(1, 3)), slots=slots,
                      max_rows=draw(st.integers(min_p, 24)), max_cols=draw(st.integers(min_p, 24)),
                      min_p=min_p, max_p=draw(st.integers(min_p, 8)),
                      act_per_slot=draw(st.sampled_from([1, 2, 4])),
                      drain_pack=draw(st.sampled_from([1, 2, 4])))
        params["tree_stages"] = draw(st.integers(0, max(1, (slots - 1).bit_length())))
        return params
    macro_rows = draw(st.sampled_from([4, 6, 8, 12, 16]))
    macro_cols = draw(st.sampled_from([8, 16, 24]))
    adcs = draw(st.sampled_from([a for a in range(1, macro_cols + 1) if macro_cols % a == 0
                                 and (8 % (macro_cols // a) == 0 or macro_cols // a % 8 == 0)]))
    rows = draw(st.sampled_from([r for r in range(1, macro_rows + 1) if macro_rows % r == 0]))
    return dict(pe=pe, macro_rows=macro_rows, macro_cols=macro_cols, adcs=adcs, rows=rows,
                adc_bits=draw(st.integers(1, 4)), adc_shift=draw(st.integers(0, 2)),
                adc_latency=draw(st.integers(1, 3)),
                act_lanes=draw(st.sampled_from([a for a in range(1, macro_rows + 1)
                                                if macro_rows % a == 0])),
                row_mask=draw(st.sampled_from(["none", "lfsr"])))


def _assert_model_equals_rtl(simulator, layer, x):
    """Run ``layer`` on ``x`` through the RTL: exact outputs, and the model's cycles, load
    cycles and load beats."""
    result = simulator.run(layer, x)
    assert np.array_equal(result.y, layer.reference(x))
    model = perf.estimate(layer, x)
    what = (f"{layer.engine.name} {layer.engine.params}, layer {layer.rows}x{layer.cols}, "
            f"batch {x.shape[0]}")
    assert (model.cycles, model.load_cycles) == (result.cycles, result.load_cycles), what
    assert model.load_beats == len(layer.load_beats()), what
    assert model.utilization == result.report(layer.engine, layer, "verilator")["utilization"]


# --------------------------------------------------------------------------- against the RTL

@pytest.mark.sim
@pytest.mark.parametrize("config", in_make_test(FIXED, FIRST), ids=_ids(FIXED))
def test_model_equals_rtl_on_recorded_configurations(config, request):
    from secateur.sim.runner import BatchSimulator
    name, params = config
    engine = make_engine(name, **params)
    simulator = BatchSimulator(engine)
    examples = EXAMPLES[request.node.get_closest_marker("regress") is not None]

    @settings(max_examples=examples, **_SETTINGS)
    @given(st.data())
    def property_(data):
        _assert_model_equals_rtl(simulator, *_draw_layer(data, engine))

    property_()


@pytest.mark.sim
@pytest.mark.parametrize("name, configs", in_make_test(
    [(name, count) for count in RANDOM_CONFIGS for name in engine_names()],
    set(range(len(engine_names()))), unpack=True))
def test_model_equals_rtl_on_drawn_configurations(name, configs):
    """Engine parameter sets drawn from every parameter's range (recorded by hypothesis's
    derandomized draw, so their builds are cached), a few layers on each."""
    from secateur.sim.runner import BatchSimulator

    @settings(max_examples=configs, **_SETTINGS)
    @given(st.data())
    def property_(data):
        try:
            engine = make_engine(name, **_draw_params(data, name))
        except ValueError:     # a cross-parameter rule (permdiag: min_p above both sizes)
            assume(False)
        simulator = BatchSimulator(engine)
        for _ in range(LAYERS_PER_RANDOM_CONFIG):
            _assert_model_equals_rtl(simulator, *_draw_layer(data, engine))

    property_()


@pytest.mark.sim
@pytest.mark.parametrize("name, params, shape, density", TILED,
                         ids=[case[0] for case in TILED])
def test_estimate_of_a_tiled_layer_equals_secateur_run(name, params, shape, density, seed):
    from secateur.sim.runner import BatchSimulator
    engine = make_engine(name, **params)
    rng = np.random.default_rng(seed)
    weights, _ = estimate_module.draw_weights(engine, shape, density, rng)
    x = estimate_module.draw_inputs(rng, 3, shape[1], 0.6)
    report = estimate_module.estimate_layer(engine, weights, x)
    run = tile_layer(engine, weights).run(BatchSimulator(engine), x).report("verilator")
    assert report["tiling"]["tiles"] > 1
    for key in ("cycles", "load_cycles", "load_beats", "useful_ops", "energy_pj", "utilization"):
        assert report[key] == run[key], (key, seed)


# --------------------------------------------------------------------------- without the RTL

@pytest.mark.parametrize("config", FIXED, ids=_ids(FIXED))
def test_counted_load_beats_equal_the_built_ones(config):
    name, params = config
    engine = make_engine(name, **params)

    @settings(max_examples=25, **_SETTINGS)
    @given(st.data())
    def property_(data):
        layer, _ = _draw_layer(data, engine)
        assert perf.load_beats(layer) == len(layer.load_beats())

    property_()


def test_the_model_reads_the_data_where_the_hardware_does(seed):
    """Ternary zero groups, lfsr hunting, permdiag zero inputs and cim dead bit-planes
    change the modelled cycles; dense does not care."""
    rng = np.random.default_rng(seed)
    zeros, ones = np.zeros((2, 40), dtype=np.int8), np.full((2, 40), 127, dtype=np.int8)
    ternary = make_engine("ternary", pe=2, fan_in=4, max_rows=8, max_cols=40)
    sparse, full = (ternary.layer({"w": weight_sparsity_layer(
        "ternary", ternary, rng, 8, 40, level)[0]["w"]}) for level in (0.9, 0.0))
    assert perf.cycles(sparse, ones) < perf.cycles(full, ones)
    hunting, free = (make_engine("lfsr", pe=2, max_rows=8, max_cols=40, lookahead=lookahead)
                     for lookahead in (1, lfsr_width(40) + 1))
    weights = weight_sparsity_layer("lfsr", free, rng, 8, 40, 0.5)[0]
    assert perf.cycles(hunting.layer(weights), ones) > perf.cycles(free.layer(weights), ones)
    for name in ("permdiag", "cim"):
        engine = make_engine(name, pe=4)
        layer = engine.layer({"w": weight_sparsity_layer(name, engine, rng, 16, 40, 0.75)[0]["w"],
                              **({"p": np.int64(4)} if name == "permdiag" else {})})
        assert perf.cycles(layer, zeros) < perf.cycles(layer, ones), name
    dense = make_engine("dense", pe=2, fan_in=4, max_rows=8, max_cols=40)
    layer = dense.layer({"w": np.ones((8, 40), dtype=np.int8)})
    assert perf.cycles(layer, zeros) == perf.cycles(layer, ones)


def test_unknown_engines_are_refused():
    class Other:
        name = "other"

    class Layer:
        engine = Other()

    with pytest.raises(ValueError, match=r"^no performance model for the other engine$"):
        perf.timeline(Layer(), np.zeros((1, 1), dtype=np.int8))
    with pytest.raises(ValueError, match=r"^no load-beat count for the other engine$"):
        perf.load_beats(Layer())


# --------------------------------------------------------------------------- secateur estimate

def _estimate(tmp_path, capsys, *arguments):
    report = tmp_path / "estimate.json"
    status = main(["estimate", *arguments, "--report", str(report)])
    captured = capsys.readouterr()
    return status, captured, (json.loads(report.read_text()) if report.exists() else None)


def test_estimate_of_files_reports_the_model(tmp_path, capsys, seed):
    rng = np.random.default_rng(seed)
    engine = make_engine("ternary", pe=2, fan_in=4, max_rows=8, max_cols=16)
    weights = weight_sparsity_layer("ternary", engine, rng, 7, 13, 0.5)[0]
    x = rng.integers(-128, 128, (3, 13), dtype=np.int8)
    np.savez(tmp_path / "w.npz", **weights)
    np.save(tmp_path / "x.npy", x)
    status, captured, report = _estimate(
        tmp_path, capsys, "--engine", "ternary", "--pe", "2", "--set", "fan_in=4",
        "--set", "max_rows=8", "--set", "max_cols=16", "--weights", str(tmp_path / "w.npz"),
        "--inputs", str(tmp_path / "x.npy"))
    assert status == 0, captured.err
    layer = engine.layer(weights)
    model = perf.estimate(layer, x)
    assert report["cycles"] == model.cycles and report["batch"] == 3
    assert report["first_result_latency"] == model.first_result_latency
    assert report["load_beats"] == len(layer.load_beats())
    assert report["energy_pj"] == layer.counters(x)["energy_pj"]
    assert report["storage_bits"] == model.storage
    assert report["weights"] == {"file": str(tmp_path / "w.npz")}
    assert report["inputs"] == {"file": str(tmp_path / "x.npy")}
    assert report["tiling"] == {"tiles": 1, "column_tiles": 1, "finished_on_chip": True}
    assert report["latency"] == engine.latency and report["params"] == engine.params
    assert captured.out.startswith(f"ternary: 3 vectors, {model.cycles} cycles (model)")


@pytest.mark.parametrize("name", engine_names())
def test_estimate_draws_the_structure_and_says_so(tmp_path, capsys, name):
    settings_ = ["--set", "row_mask=lfsr"] if name == "cim" else []
    status, captured, report = _estimate(
        tmp_path, capsys, "--engine", name, "--pe", "4", *settings_, "--shape", "64x96",
        "--density", "0.25", "--batch", "3", "--input-density", "0.5", "--seed", "7")
    assert status == 0, captured.err
    drawn = report["weights"]["drawn"]
    assert (drawn["shape"], drawn["density"], drawn["seed"]) == ([64, 96], 0.25, 7)
    assert abs(drawn["achieved_density"] - 0.25) < 0.05
    assert report["inputs"] == {"drawn": {"batch": 3, "density": 0.5, "seed": 7}}
    assert report["batch"] == 3 and report["cycles"] > 0 and 0 < report["utilization"] <= 1
    # The same seed draws the same layer: the estimate is reproducible.
    assert _estimate(tmp_path, capsys, "--engine", name, "--pe", "4", *settings_, "--shape",
                     "64x96", "--density", "0.25", "--batch", "3", "--input-density", "0.5",
                     "--seed", "7")[2]["cycles"] == report["cycles"]


def test_estimate_never_builds_or_simulates(tmp_path):
    """The command runs in a process whose cache is empty and never imports the simulator."""
    script = ("import sys; from secateur.gen.cli import main; "
              "status = main(['estimate', '--engine', 'dense', '--pe', '2', '--shape', "
              "'30x50', '--density', '0.5']); "
              "assert 'secateur.sim.runner' not in sys.modules, 'the simulator was imported'; "
              "sys.exit(status)")
    cache = tmp_path / "cache"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={"SECATEUR_CACHE_DIR": str(cache), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert not cache.exists()


@pytest.mark.parametrize("arguments, message", [
    (["--shape", "8x8"], "--shape and --density go together (the layer drawn at that weight "
                         "density)"),
    (["--shape", "8by8", "--density", "0.5"], "--shape takes ROWSxCOLS (e.g. 128x128), not "
                                              "'8by8'"),
    (["--shape", "0x8", "--density", "0.5"], "--shape must be MxN with M, N >= 1 and M*N at "
                                             "most 268435456, not 0x8"),
    (["--shape", "8x8", "--density", "0"], "--density must be in (0, 1], not 0"),
    (["--shape", "8x8", "--density", "0.5", "--input-density", "1.5"],
     "--input-density must be in [0, 1], not 1.5"),
    (["--shape", "8x8", "--density", "0.5", "--batch", "0"], "--batch must be in [1, 4096], "
                                                             "not 0"),
    (["--shape", "8x8", "--density", "0.5", "--inputs", "x.npy", "--batch", "2"],
     "--batch draws random inputs; --inputs gives them"),
    (["--shape", "8x8", "--weights", "w.npz"], "argument --weights: not allowed with argument "
                                               "--shape"),
    (["--density", "0.5"], "one of the arguments --weights --shape is required"),
])
def test_estimate_refuses_bad_options(capsys, arguments, message):
    assert main(["estimate", "--engine", "dense", *arguments]) == 2
    assert capsys.readouterr().err.splitlines() == [f"secateur: error: {message}"]


def test_estimate_refuses_a_density_the_structure_cannot_draw(capsys):
    assert main(["estimate", "--engine", "permdiag", "--shape", "64x90", "--density",
                 "0.25"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "secateur: error: the permdiag engine cannot draw density 0.25 on 64x90: p = "
        "1/density must be an integer in [4, 16] (min_p, max_p) that divides 64 and 90"]


def test_check_options_names_the_option():
    with pytest.raises(ValueError, match=r"^--input-density draws random inputs; --inputs "
                                         r"gives them$"):
        estimate_module.check_options(shape=None, density=None, inputs="x.npy",
                                      input_density=0.5, batch=None)


def test_estimate_refuses_too_many_input_vectors(tmp_path, capsys):
    np.savez(tmp_path / "w.npz", w=np.ones((2, 3), dtype=np.int8))
    np.save(tmp_path / "x.npy", np.zeros((estimate_module.MAX_BATCH + 1, 3), dtype=np.int8))
    assert main(["estimate", "--engine", "dense", "--weights", str(tmp_path / "w.npz"),
                 "--inputs", str(tmp_path / "x.npy")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"secateur: error: inputs file {tmp_path / 'x.npy'} has 4097 vectors; an estimate "
        f"takes at most 4096"]
