"""The LGPS engine and its LFSR primitive: parameters, layer checks, the RTL LFSR against the
model (Amaranth simulation and cocotb at every width), the lint gate, ``secateur mask`` and
``secateur run``, and bit-exactness and utilization at PE=32 through the batch harness."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import in_make_test, run_timed
from amaranth.back import verilog
from amaranth.sim import Simulator

from secateur.gen.cli import main
from secateur.gen.registry import make_engine
from secateur.gen.rtl import write_rtl
from secateur.gen.synth import check as yosys_check
from secateur.hdl.actbuffer import ActivationBuffer
from secateur.hdl.engines.lfsr import LFSREngine
from secateur.hdl.lfsr import LFSR, LFSRSequencer, LFSRStep, LFSRTable
from secateur.models.lfsr import (MAX_WIDTH, MIN_WIDTH, jump_masks, lfsr_width, mask_indices,
                                  max_rejected_run, reference)
from secateur.sim.runner import BatchSimulator
from secateur.sim.toolchain import simulator_env, verilator_bin_dir
from secateur.verif.launch import run_testbench

#: The PE=32 harness configuration: N up to 1024, density up to 50% at M = 128.
PE32 = dict(pe=32, max_rows=128, max_cols=1024, weight_depth=2048)


def random_weights(rng, rows, cols, k, requant=False):
    seeds = rng.integers(1, cols + 1, size=rows)
    w = np.zeros((rows, cols), dtype=np.int8)
    w[np.arange(rows)[:, None], mask_indices(cols, k, seeds)] = rng.integers(-128, 128, (rows, k))
    weights = {"w": w, "seeds": seeds, "k": np.int64(k)}
    if requant:
        weights.update(mult=rng.integers(-2**15, 2**15, size=rows), shift=np.int64(11),
                       relu=np.bool_(True))
    return weights


# --------------------------------------------------------------------------- parameters

def test_defaults_and_derived_widths():
    engine = make_engine("lfsr")
    assert engine.params == {"pe": 32, "index": "lfsr", "max_rows": 256, "max_cols": 1024,
                             "weight_depth": 8 * 512, "act_lanes": 8, "lookahead": 12}
    assert engine.lfsr_width == 11 and engine.stall_free
    # |acc| <= 16384 * 1024 = 2**24 needs 26 signed bits; acc + an int32 bias needs 33.
    assert engine.acc_width == 26 and engine.res_width == 33
    derived = engine.derived()
    assert derived["index_bits"] == 0 and derived["seed_bits"] == 8 * 32 * 11
    assert make_engine("lfsr", index="csr").derived()["index_bits"] == 4096 * 32 * 10
    assert not make_engine("lfsr", lookahead=11).stall_free
    assert set(engine.load_map.describe()["regions"]) == {"config", "mult", "bias", "weights", "seeds"}
    assert "indices" in make_engine("lfsr", index="csr").load_map.describe()["regions"]


@pytest.mark.parametrize("settings,error,message", [
    (dict(pe=0), ValueError, "pe must be an integer in \\[1, 1024\\], not 0"),
    (dict(index="coo"), ValueError, "index must be one of lfsr, csr"),
    (dict(act_lanes=3), ValueError, "act_lanes must be a power of two"),
    (dict(max_cols=65536), ValueError, "max_cols must be an integer in \\[1, 65535\\]"),
    (dict(max_cols=300, lookahead=11), ValueError, "lookahead must be an integer in \\[1, 10\\]"),
    (dict(weight_depth="many"), TypeError, "weight_depth must be"),
    (dict(fan_in=4), ValueError, "no parameter fan_in"),
])
def test_parameters_are_validated(settings, error, message):
    with pytest.raises(error, match=message):
        LFSREngine(**settings)


@pytest.mark.parametrize("component,settings,error,message", [
    (LFSRTable, dict(max_width=1, lookahead=2), ValueError, "max_width must be in \\[2, 32\\]"),
    (LFSRStep, dict(max_width=33, lookahead=2), ValueError, "max_width must be in \\[2, 32\\]"),
    (LFSRSequencer, dict(max_width=8, lookahead=0), ValueError, "lookahead must be in \\[1, 33\\]"),
    (LFSR, dict(max_width=8.0), TypeError, "max_width must be an integer"),
    (ActivationBuffer, dict(lanes=0, depth=4, read_ports=1), ValueError, "lanes must be >= 1"),
])
def test_components_validate_their_parameters(component, settings, error, message):
    with pytest.raises(error, match=message):
        component(**settings)


# --------------------------------------------------------------------------- layers

def test_layer_load_beats_and_counters():
    rng = np.random.default_rng(0)
    weights = random_weights(rng, 5, 37, 6, requant=True)
    for index in ("lfsr", "csr"):
        engine = make_engine("lfsr", pe=3, index=index, max_rows=8, max_cols=40)
        layer = engine.layer(weights)
        load_map, beats = engine.load_map, dict()
        for addr, value in layer.load_beats():
            beats[addr] = value
        assert beats[load_map.address("config", register=2)] == 6
        for row in range(6):
            block, lane = divmod(row, 3)
            for position in range(6):
                tile = block * 6 + position
                expected = int(layer.kept[row, position]) & 0xFF if row < 5 else 0
                assert beats[load_map.address("weights", tile=tile, pe=lane)] == expected
                if index == "csr":
                    column = layer.indices[row, position] if row < 5 else 0
                    assert beats[load_map.address("indices", tile=tile, pe=lane)] == column
            if index == "lfsr":
                seed = int(weights["seeds"][row]) if row < 5 else 1
                assert beats[load_map.address("seeds", row_block=block, pe=lane)] == seed
        x = rng.integers(-128, 128, size=(3, 37), dtype=np.int8)
        counters = layer.counters(x)
        assert counters["useful_ops"] == 3 * 5 * 6 and counters["ideal_cycles"] == 3 * 2 * 6
        assert counters["weight_bits"] == 5 * 6 * 8
        assert counters["index_bits"] == (5 * 6 * 6 if index == "csr" else 0)
        assert counters["seed_bits"] == (5 * 6 if index == "lfsr" else 0)
        assert np.array_equal(layer.reference(x), reference(weights["w"], weights["seeds"], 6, x,
                                                            requant=layer.requant))
        assert layer.input_beats_per_vector == 5 and layer.result_beats_per_vector == 2


def test_layer_violations_name_the_position():
    engine = make_engine("lfsr", pe=4, max_rows=8, max_cols=40, weight_depth=20)
    weights = random_weights(np.random.default_rng(1), 6, 40, 9)
    outside = np.setdiff1d(np.arange(40), mask_indices(40, 9, weights["seeds"][4])[0])
    weights["w"][4, outside[2]] = 1
    with pytest.raises(ValueError, match=f"w\\[4, {outside[2]}\\] = 1 lies outside row 4"):
        engine.layer(weights)
    weights["w"][4, outside[2]] = 0
    with pytest.raises(ValueError, match="seed of row 2 is 41"):
        engine.layer(dict(weights, seeds=np.where(np.arange(6) == 2, 41, weights["seeds"])))
    with pytest.raises(ValueError, match="ceil\\(M/pe\\) \\* k = 2 \\* 11 = 22 .* weight_depth 20"):
        engine.layer(random_weights(np.random.default_rng(2), 6, 40, 11))
    with pytest.raises(ValueError, match="at most 8 x 40"):
        engine.layer(random_weights(np.random.default_rng(2), 9, 40, 2))
    with pytest.raises(TypeError, match="no key 'seeds'"):
        engine.layer({"w": weights["w"], "k": 9})
    with pytest.raises(ValueError, match="lacks"):
        engine.layer(dict(weights, mult=np.int64(3)))


# --------------------------------------------------------------------------- the RTL LFSR

def _simulate(dut, testbench, clocked=True):
    simulator = Simulator(dut)
    if clocked:
        simulator.add_clock(1e-6)
    simulator.add_testbench(testbench)
    simulator.run()


def test_table_matches_the_model_at_every_width():
    dut = LFSRTable(max_width=MAX_WIDTH, lookahead=5)

    async def testbench(ctx):
        for width in range(MIN_WIDTH, MAX_WIDTH + 1):
            smallest = 1 if width == MIN_WIDTH else 1 << (width - 1)
            for n in (smallest, smallest + 1, (1 << width) - 1):
                ctx.set(dut.n, n)
                assert ctx.get(dut.width) == lfsr_width(n) == width
                assert ctx.get(dut.mask) == (1 << width) - 1
                assert list(ctx.get(dut.jumps)) == jump_masks(width, 5)

    _simulate(dut, testbench, clocked=False)


@pytest.mark.parametrize("lookahead", [1, 2, 5, 11])
def test_sequencer_with_any_lookahead_follows_the_model(lookahead):
    """A short look-ahead hunts (valid low) but visits the same columns; lookahead = w + 1
    never hunts."""
    dut = LFSR(max_width=10, lookahead=lookahead)
    cases = [(512, 512, 7), (300, 120, 300), (1023, 50, 1), (1, 1, 1), (3, 3, 2), (600, 200, 11)]

    async def testbench(ctx):
        for n, k, seed in cases:
            ctx.set(dut.n, n)
            ctx.set(dut.seed, seed)
            ctx.set(dut.start, 1)
            ctx.set(dut.advance, 1)
            columns, hunting = [], 0
            while len(columns) < k:
                if ctx.get(dut.valid):
                    columns.append(ctx.get(dut.index))
                else:
                    hunting += 1
                await ctx.tick()
                ctx.set(dut.start, 0)
            assert columns == mask_indices(n, k, seed)[0].tolist(), (n, k, seed)
            if lookahead >= lfsr_width(n) + 1:
                assert hunting == 0
            elif n == 512 and lookahead <= max_rejected_run(512) - 1:
                assert hunting > 0

    _simulate(dut, testbench)


@pytest.mark.parametrize("lookahead", [1, 3, 11])
def test_pipelined_sequencer_follows_the_model(lookahead, seed):
    """The engine's sequencer (registered, loaded by `start`): with random pauses of
    `advance` and restarts in mid-row it visits the model's columns; lookahead = w + 1 never
    hunts."""
    import random

    from amaranth.hdl import Module

    rng = random.Random(seed)
    m = Module()
    m.submodules.table = table = LFSRTable(max_width=10, lookahead=lookahead)
    m.submodules.dut = dut = LFSRSequencer(max_width=10, lookahead=lookahead)
    m.d.comb += [dut.n.eq(table.n), dut.mask.eq(table.mask), dut.jumps.eq(table.jumps)]
    cases = [(512, 512, 7), (300, 120, 300), (1023, 50, 1), (1, 1, 1), (3, 3, 2), (2, 2, 2),
             (600, 200, 11), (257, 40, 256)]

    async def testbench(ctx):
        for n, k, row_seed in cases:
            # A restart while the previous row's state is presented and consumed.
            ctx.set(table.n, n)
            ctx.set(dut.seed, row_seed)
            ctx.set(dut.start, 1)
            ctx.set(dut.advance, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            ctx.set(dut.seed, rng.randint(0, 1023))      # read only on a start
            columns, hunting = [], 0
            while len(columns) < k:
                advance = rng.random() < 0.8
                ctx.set(dut.advance, advance)
                if ctx.get(dut.valid):
                    if advance:
                        columns.append(ctx.get(dut.state) - 1)
                elif advance:
                    hunting += 1
                await ctx.tick()
            assert columns == mask_indices(n, k, row_seed)[0].tolist(), (n, k, row_seed, seed)
            if lookahead >= lfsr_width(n) + 1:
                assert hunting == 0, (n, seed)

    simulator = Simulator(m)
    simulator.add_clock(1e-6)
    simulator.add_testbench(testbench)
    simulator.run()


@pytest.mark.sim
@pytest.mark.regress  # make test: the engine testbench and the PE32 run check the sequence
def test_rtl_sequence_equals_the_model_at_every_width(seed):
    """cocotb on Verilator: widths 2 to 32 (every width the primitive allows; the engine
    allows 2 to 16)."""
    dut = LFSR(max_width=MAX_WIDTH)
    run_testbench(verilog=verilog.convert(dut, name="lfsr_primitive", emit_src=False),
                  toplevel="lfsr_primitive", test_module="secateur.verif.tb_lfsr_sequence",
                  config={"max_width": MAX_WIDTH, "lookahead": dut.lookahead, "seed": seed},
                  seed=seed)


# --------------------------------------------------------------------------- lint gate

@pytest.mark.sim
@pytest.mark.parametrize("index", in_make_test(["lfsr", "csr"], {1}))  # make lint lints lfsr
def test_lint_gate_at_pe32(index, tmp_path):
    """``secateur rtl --engine lfsr`` output (the default configuration, as ``make rtl
    PE=32``) passes ``verilator --lint-only -Wall`` with the shipped waivers only."""
    assert main(["rtl", "--engine", "lfsr", "--pe", "32", "--set", f"index={index}",
                 "--out", str(tmp_path)]) == 0
    filelist = tmp_path / "lfsr" / "lfsr_engine.f"
    result = subprocess.run([str(verilator_bin_dir() / "verilator"), "--lint-only", "-Wall",
                             "-F", str(filelist)], capture_output=True, text=True,
                            env=simulator_env(), cwd=filelist.parent)
    assert result.returncode == 0 and "%Warning" not in result.stderr, result.stderr[-3000:]
    manifest = json.loads((tmp_path / "lfsr" / "manifest.json").read_text())
    # Bank full, read, operands, product (4), then the result path: input, result and operand
    # registers (3), requantizer (6), output register. The index register adds nothing.
    assert manifest["params"]["index"] == index and manifest["latency"] == 4 + 3 + 6 + 1


@pytest.mark.parametrize("index", ["lfsr", "csr"])
def test_yosys_structural_check(index, tmp_path):
    """No multiple drivers, combinational loops or undriven inputs (``proc; check -assert``),
    on a small configuration with a short look-ahead (the hunting logic included)."""
    engine = make_engine("lfsr", pe=3, index=index, max_rows=7, max_cols=37, lookahead=3)
    bundle = write_rtl(engine, tmp_path)
    yosys_check(bundle.verilog, engine.top)


# --------------------------------------------------------------------------- secateur mask

def test_mask_command(capsys):
    assert main(["mask", "--n", "300", "--k", "5", "--seed", "1", "17", "300"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in lines] == mask_indices(300, 5, [1, 17, 300]).tolist()
    assert main(["mask", "--n", "8", "--k", "8", "--seed", "3"]) == 0
    assert sorted(json.loads(capsys.readouterr().out)) == list(range(8))


@pytest.mark.parametrize("arguments,message", [
    (["--n", "10", "--k", "3", "--seed", "0"], "seed of row 0 is 0"),
    (["--n", "10", "--k", "3", "--seed", "4", "11"], "seed of row 1 is 11"),
    (["--n", "10", "--k", "11", "--seed", "1"], "--k must be in \\[1, 10\\] \\(--n\\), not 11"),
    (["--n", "0", "--k", "1", "--seed", "1"], "--n must be in \\[1, 65535\\] \\(the lfsr engine.s max_cols\\), not 0"),
    (["--n", "10", "--k", "3", "--seed", "two"], "--seed must be an integer"),
    (["--n", "10", "--k", "3"], "required: --seed"),
])
def test_mask_command_errors(arguments, message, capsys):
    assert main(["mask", *arguments]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("secateur: error: ")
    assert re.search(message, lines[0]), lines[0]


def test_mask_command_as_a_program():
    result = subprocess.run([sys.executable, "-m", "secateur.gen.cli", "mask", "--n", "5", "--k",
                             "2", "--seed", "5", "1"], capture_output=True, text=True,
                            env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [json.dumps(row) for row
                                          in mask_indices(5, 2, [5, 1]).tolist()]


# --------------------------------------------------------------------------- the harness

def _cli_settings(params):
    settings = ["--pe", str(params["pe"])]
    for key, value in params.items():
        if key != "pe":
            settings += ["--set", f"{key}={value}"]
    return settings


@pytest.mark.sim
@pytest.mark.xdist_group("lfsr-pe32")  # one worker, one build of PE32
def test_run_command_reports_storage_and_utilization(tmp_path, capsys):
    rng = np.random.default_rng(7)
    weights = random_weights(rng, 100, 513, 77, requant=True)
    np.savez(tmp_path / "w.npz", **weights)
    x = rng.integers(-128, 128, size=(3, 513), dtype=np.int8)
    np.save(tmp_path / "x.npy", x)
    arguments = ["run", "--engine", "lfsr", *_cli_settings(PE32), "--weights",
                 str(tmp_path / "w.npz"), "--inputs", str(tmp_path / "x.npy"),
                 "--out", str(tmp_path / "y.npy"), "--report", str(tmp_path / "report.json")]
    assert main(arguments) == 0, capsys.readouterr().err
    y = np.load(tmp_path / "y.npy")
    layer = make_engine("lfsr", **PE32).layer(weights)
    assert np.array_equal(y, layer.reference(x))
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["mismatches"] == 0
    assert report["index_bits"] == 0 and report["seed_bits"] == 100 * 10
    assert report["weight_bits"] == 100 * 77 * 8 and report["useful_ops"] == 3 * 100 * 77
    assert report["utilization"] == pytest.approx(report["useful_ops"] / (report["cycles"] * 32))
    assert report["cycles"] >= report["ideal_cycles"] == 3 * 4 * 77

    # A weight outside a row's mask: exit 2, one line naming the row and column.
    column = int(np.setdiff1d(np.arange(513), layer.indices[42])[0])
    weights["w"][42, column] = 5
    np.savez(tmp_path / "bad.npz", **weights)
    capsys.readouterr()
    arguments[arguments.index(str(tmp_path / "w.npz"))] = str(tmp_path / "bad.npz")
    assert main(arguments) == 2
    error = capsys.readouterr().err.splitlines()
    assert error == [f"secateur: error: w[42, {column}] = 5 lies outside row 42's LFSR mask "
                     f"(seed {weights['seeds'][42]}, k = 77); w must be zero there (1 such "
                     f"values)"]


@pytest.mark.sim
@pytest.mark.xdist_group("lfsr-pe32")  # one worker, one build of PE32
def test_pe32_bit_exact_and_utilization():
    """Odd and power-of-two N at 10% and 50% density: bit-exact, utilization >= 0.95, and no
    stall at all: rejected LFSR states are free, so a batch takes exactly its ideal cycles
    plus one vector's input beats and the pipeline latency."""
    engine = make_engine("lfsr", **PE32)
    simulator = BatchSimulator(engine)
    rng = np.random.default_rng(11)
    for cols in (301, 512, 777, 1024):
        for density in (0.1, 0.5):
            k = max(1, round(density * cols))
            layer = engine.layer(random_weights(rng, 128, cols, k, requant=density > 0.3))
            x = rng.integers(-128, 128, size=(16, cols), dtype=np.int8)
            result = run_timed(simulator, layer, x)
            what = f"N={cols}, k={k}"
            assert np.array_equal(result.y, layer.reference(x)), what
            report = result.report(engine, layer, "verilator")
            assert report["utilization"] >= 0.95, f"{what}: {report['utilization']:.3f}"
            # Compute-bound (ceil(M/pe) * k >= input beats), so the first vector's input and
            # the last result's latency are the only cycles beyond the ideal.
            assert result.cycles == report["ideal_cycles"] + layer.input_beats_per_vector \
                + engine.latency - 1, what
    # Odd-shaped layers and partial row blocks are exact too.
    layer = engine.layer(random_weights(rng, 45, 1000, 1000 // 3))
    x = rng.integers(-128, 128, size=(2, 1000), dtype=np.int8)
    assert np.array_equal(run_timed(simulator, layer, x).y, layer.reference(x))
