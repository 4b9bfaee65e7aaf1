"""The CIM engine end to end through ``secateur run``: lossless runs give ``W @ x``, dead
input bit-planes cost no cycles, the report carries the CIM fields, illegal settings and
weights that break the twofold mask exit with status 2, and the RTL passes the lint gate."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import run_timed

from secateur.gen import synth
from secateur.gen.cli import main
from secateur.gen.registry import make_engine
from secateur.gen.rtl import write_rtl
from secateur.hdl.cim_macro import CIMMacro
from secateur.models import cim
from secateur.models.requant import RequantParams, requantize
from secateur.sim.runner import BatchSimulator
from secateur.sim.toolchain import simulator_env, verilator_bin_dir

#: The one simulated build of these tests (2 macros of 16 x 16, 2 ADCs, R = 4, lossless).
PARAMS = dict(pe=2, macro_rows=16, macro_cols=16, adcs=2, rows=4, adc_bits=3)
SETTINGS = ["--pe", "2"] + [arg for key, value in PARAMS.items() if key != "pe"
                            for arg in ("--set", f"{key}={value}")]


def cli(*argv):
    return subprocess.run([sys.executable, "-m", "secateur.gen.cli", *argv], capture_output=True,
                          text=True)


@pytest.mark.sim
def test_cli_run_lossless_gives_the_matrix_product(tmp_path, seed):
    rng = np.random.default_rng(seed)
    w = rng.integers(-128, 128, (2, 29)).astype(np.int8)
    x = rng.integers(-128, 128, (3, 29)).astype(np.int8)
    x[0], w[1, :8] = -128, -128
    mult = rng.integers(-3000, 3000, 2)
    np.savez(tmp_path / "w.npz", w=w)
    np.savez(tmp_path / "wq.npz", w=w, mult=mult, shift=np.int64(12), relu=np.bool_(False))
    np.save(tmp_path / "x.npy", x)
    exact = x.astype(np.int64) @ w.astype(np.int64).T
    for weights, expected in (("w.npz", exact),
                              ("wq.npz", requantize(exact, RequantParams(mult, 12, False)))):
        result = cli("run", "--engine", "cim", *SETTINGS, "--weights", str(tmp_path / weights),
                     "--inputs", str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npy"),
                     "--report", str(tmp_path / "r.json"))
        assert result.returncode == 0, result.stderr
        assert np.array_equal(np.load(tmp_path / "y.npy"), expected), f"seed {seed}"
    report = json.loads((tmp_path / "r.json").read_text())
    work = cim.schedule(w, x, make_engine("cim", **PARAMS).geometry)
    for field in ("adc_conversions", "adc_conversions_skipped", "row_activations"):
        assert report[field] == work[field], field
    assert report["adc_conversions"] + report["adc_conversions_skipped"] == 3 * 8 * 4 * 16 * 2
    assert report["cycles"] >= work["compute_cycles"] > 0 and 0 < report["utilization"] <= 1
    assert report["mismatches"] == 0
    # 3-bit ADCs have no sourced energy figure (models/energy.json): the energy is not
    # guessed, it is null and names the action; the sourced actions are still priced.
    assert report["energy_pj"] is None and report["energy_missing"] == ["adc_conversion"]
    assert report["energy_actions"]["adc_conversion"] == report["adc_conversions"]
    assert report["energy_breakdown"]["row_activation"] > 0


@pytest.mark.sim
def test_three_live_bit_planes_take_at_most_045_of_the_cycles(seed):
    rng = np.random.default_rng(seed)
    engine = make_engine("cim", **PARAMS)
    layer = engine.layer({"w": rng.integers(-128, 128, (2, 32)).astype(np.int8)})
    full = rng.integers(-128, 128, (4, 32)).astype(np.int8)
    full[:, ::4] = -1                          # every group has all 8 bit-planes live
    three = rng.integers(0, 8, (4, 32)).astype(np.int8)
    three[:, ::4] = 7                          # bit-planes 0, 1, 2 live, the rest dead
    simulator = BatchSimulator(engine)
    runs = {name: run_timed(simulator, layer, x) for name, x in (("full", full), ("three", three))}
    for name, x in (("full", full), ("three", three)):
        assert np.array_equal(runs[name].y, x.astype(np.int64) @ layer.w.astype(np.int64).T)
    ratio = runs["three"].cycles / runs["full"].cycles
    assert ratio <= 0.45, f"{runs['three'].cycles} / {runs['full'].cycles} cycles = {ratio:.3f}"


@pytest.mark.sim
def test_latency_matches_manifest():
    engine = make_engine("cim", **PARAMS)
    layer = engine.layer({"w": np.ones((2, 16), dtype=np.int8)})
    result = run_timed(BatchSimulator(engine), layer, np.zeros((1, 16), dtype=np.int8))
    # Cycles count from the first act beat; the vector is one beat (one 16-row tile).
    assert layer.input_beats_per_vector == 1
    assert result.cycles - 1 == engine.latency


@pytest.mark.parametrize("setting, message", [
    ("rows=5", r"rows \(R\) must divide macro_rows = 16, not 5"),
    ("adc_bits=9", r"cim engine parameter adc_bits must be an integer in \[1, 8\], not 9"),
    ("adc_bits=0", r"cim engine parameter adc_bits must be an integer in \[1, 8\], not 0"),
    ("adc_shift=9", r"cim engine parameter adc_shift must be an integer in \[0, 8\], not 9"),
    ("adcs=3", "adcs must divide macro_cols = 16, not 3"),
    ("row_mask=random", "cim engine parameter row_mask must be one of none, lfsr"),
])
def test_illegal_parameters_exit_2(tmp_path, capsys, setting, message):
    status = main(["rtl", "--engine", "cim", *SETTINGS, "--set", setting, "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert status == 2 and captured.out == ""
    assert re.search(message, captured.err), captured.err
    assert captured.err.startswith("secateur: error: ") and captured.err.count("\n") == 1


def test_weights_that_violate_the_row_mask_exit_2(tmp_path, capsys):
    engine = make_engine("cim", **PARAMS, row_mask="lfsr")
    seeds, k = np.array([[5], [9]]), 6
    mask = cim.twofold_mask((2, 20), engine.geometry, seeds, k)
    w = np.where(mask, 3, 0).astype(np.int8)
    engine.layer({"w": w, "seeds": seeds, "k": np.int64(k)})
    m, n = np.argwhere(~mask)[0]
    w[m, n] = -7
    np.savez(tmp_path / "w.npz", w=w, seeds=seeds, k=np.int64(k))
    np.save(tmp_path / "x.npy", np.zeros((1, 20), np.int8))
    base = ["run", "--engine", "cim", *SETTINGS, "--set", "row_mask=lfsr", "--inputs",
            str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npy")]
    assert main([*base, "--weights", str(tmp_path / "w.npz")]) == 2
    assert f"w[{m}, {n}] = -7 lies on row {n % 16} of macro tile" in capsys.readouterr().err
    np.savez(tmp_path / "nomask.npz", w=w)
    assert main([*base, "--weights", str(tmp_path / "nomask.npz")]) == 2
    assert "row_mask=lfsr needs weights keys 'seeds'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="'seeds'/'k' need the engine parameter row_mask=lfsr"):
        make_engine("cim", **PARAMS).layer({"w": w, "seeds": seeds, "k": np.int64(k)})


def test_layers_beyond_the_macros_are_refused():
    engine = make_engine("cim", **PARAMS)
    engine.layer({"w": np.ones((2, 32), np.int8)})
    engine.layer({"w": np.ones((4, 16), np.int8)})
    with pytest.raises(ValueError, match=r"a 3x17 layer needs 2 x 2 tiles of 2 outputs x 16 "
                                         r"inputs, more than the 2 macros \(pe\)"):
        engine.layer({"w": np.ones((3, 17), np.int8)})
    with pytest.raises(TypeError, match="weights w must be int8, not int16"):
        engine.layer({"w": np.ones((2, 8), np.int16)})


def test_defaults_and_derived_facts():
    engine = make_engine("cim")
    assert (engine.macro_rows, engine.macro_cols, engine.pe) == (128, 128, 4)
    assert (engine.adcs, engine.rows, engine.adc_bits, engine.adc_shift) == (16, 8, 4, 0)
    assert engine.derived()["lossless"]
    assert not make_engine("cim", adc_bits=3).derived()["lossless"]
    # The accumulator holds the largest |y| of the formula: 255 * 255 per input row.
    assert 255 * 255 * 4 * 128 <= (1 << (engine.acc_width - 1)) - 1


def test_macro_parameters_are_validated():
    with pytest.raises(ValueError, match="CIMMacro cols must be a multiple of 8, not 12"):
        CIMMacro(rows=4, cols=12, adcs=1, adc_bits=2)
    with pytest.raises(ValueError, match=r"CIMMacro adc_bits must be in \[1, 8\], not 9"):
        CIMMacro(rows=4, cols=8, adcs=1, adc_bits=9)
    with pytest.raises(TypeError, match="CIMMacro latency must be an integer"):
        CIMMacro(rows=4, cols=8, adcs=1, adc_bits=2, latency=1.5)
    macro = CIMMacro(rows=4, cols=16, adcs=4, adc_bits=3, adc_shift=1, latency=2)
    assert (macro.col_mux, macro.adc_shift, macro.latency) == (4, 1, 2)


@pytest.mark.parametrize("params", [
    dict(pe=3, macro_rows=16, macro_cols=16, adcs=4, rows=4, adc_bits=2, adc_shift=1,
         adc_latency=2, act_lanes=4, row_mask="lfsr"),
    dict(pe=1, macro_rows=8, macro_cols=24, adcs=1, rows=8, adc_bits=4),
])
def test_lint_gate(tmp_path, params):
    engine = make_engine("cim", **params)
    bundle = write_rtl(engine, tmp_path)
    result = subprocess.run([str(verilator_bin_dir() / "verilator"), "--lint-only", "-Wall", "-F",
                             str(bundle.filelist)], capture_output=True, text=True,
                            env=simulator_env())
    assert result.returncode == 0 and "%Warning" not in result.stderr, result.stderr[-3000:]
    synth.check(bundle.verilog, engine.top)


def test_macros_are_one_black_box_module_instantiated_per_macro():
    """The controller reaches the macros only through instances of ``<top>_macro``, one in
    the slice module that every macro's logic instantiates; the behavioral model is emitted
    once, so a real macro of the same ports can replace it."""
    from secateur.gen.rtl import manifest, verilog_text
    engine = make_engine("cim", **dict(PARAMS, pe=3))
    verilog = verilog_text(engine)
    modules = re.findall(r"^module (\w+)", verilog, flags=re.M)
    assert modules == ["cim_engine", "cim_engine_slice", "cim_engine_macro"]
    controller = verilog[:verilog.index("module cim_engine_macro")]
    assert len(re.findall(r"^\s*cim_engine_macro\s+\\?macro\s*\(", controller, flags=re.M)) == 1
    assert "top =" not in verilog[verilog.index("module cim_engine_slice") - 80:]
    assert list(manifest(engine, verilog, engine.component())["macro_models"]) == ["cim_engine_macro"]


@pytest.mark.parametrize("row_mask", ["none", "lfsr"])
def test_macro_slices_are_one_module(row_mask):
    """The per-macro logic is one module, ``cim_engine_slice``, written once and instantiated
    by the top as ``pe0`` ... ``pe<P-1>``, so that simulators and synthesis read it once; the
    accumulators live in it, not in the top."""
    from secateur.gen.rtl import verilog_text
    engine = make_engine("cim", **dict(PARAMS, pe=3, row_mask=row_mask))
    verilog = verilog_text(engine)
    modules = dict(re.findall(r"^module (\\\S+|\w+)\s*(\(.*?^endmodule)", verilog,
                              flags=re.M | re.S))
    assert not any(name.startswith("\\cim_engine.pe") for name in modules)
    top = modules["cim_engine"]
    assert re.findall(r"^\s*cim_engine_slice\s+(\S+)\s*\(", top, flags=re.M) == ["pe0", "pe1", "pe2"]
    assert not re.search(r"\bacc\d", top) and re.search(r"\bacc0\b", modules["cim_engine_slice"])
