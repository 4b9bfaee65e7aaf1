"""Synthesis: where the multipliers are (the ternary datapath has none), and the ``make synth``
flow (``secateur synth``) end to end on a small configuration."""

import json
import re

import pytest

from secateur.gen import synth
from secateur.gen.cli import main
from secateur.gen.registry import make_engine
from secateur.gen.rtl import write_rtl


def multipliers(tmp_path, engine) -> dict[str, int]:
    """``$mul`` cells per module of the engine's unflattened design."""
    bundle = write_rtl(engine, tmp_path)
    cells = synth.module_cells(bundle.verilog, engine.top)
    assert engine.top in cells, f"the top module is missing from {sorted(cells)}"
    return {module: counts.get("$mul", 0) for module, counts in cells.items()}


@pytest.mark.parametrize("params", [dict(pe=3, fan_in=5, max_rows=20, max_cols=23),
                                    dict(pe=2, fan_in=16, tree_stages=0, max_rows=8,
                                         max_cols=64)])
def test_ternary_datapath_has_no_multiplier(tmp_path, params):
    """Only the requantizer multiplies (one ``acc * mult`` per lane: accumulators of these
    configurations fit one 17-bit piece); the adder trees, the operand selection and the
    sequencer use none."""
    engine = make_engine("ternary", **params)
    counts = multipliers(tmp_path, engine)
    requantizers = [module for module in counts if module.endswith(".requantizer")]
    assert len(requantizers) == 1, f"expected one requantizer module, found {requantizers}"
    outside = {module: count for module, count in counts.items()
               if count and module not in requantizers}
    assert not outside, f"multipliers outside the requantizer: {outside}"
    assert counts[requantizers[0]] == engine.pe


def test_the_count_finds_datapath_multipliers(tmp_path):
    """The same count on the dense engine finds its pe x fan_in products in the top module,
    so the ternary test above could fail."""
    engine = make_engine("dense", pe=2, fan_in=3, max_rows=4, max_cols=6)
    counts = multipliers(tmp_path, engine)
    assert counts[engine.top] == 2 * 3
    # The requantizer multiplies each lane's accumulator in 17-bit pieces.
    pieces = -(-engine.acc_width // 17)
    assert engine.acc_width > 17 and counts["dense_engine.result_path.requantizer"] == 2 * pieces
    assert sum(counts.values()) == 2 * 3 + 2 * pieces


def test_resource_counts_group_cell_types():
    cells = {"SB_LUT4": 10, "SB_DFF": 1, "SB_DFFESR": 2, "SB_CARRY": 3, "SB_RAM40_4K": 4,
             "SB_MAC16": 5, "$scopeinfo": 7}
    assert synth.resource_counts(cells, synth.DEVICES["ice40"]) == \
        {"lut4": 10, "ff": 3, "carry": 3, "bram": 4, "dsp": 5}
    ecp5 = {"LUT4": 8, "TRELLIS_FF": 6, "CCU2C": 2, "DP16KD": 1, "MULT18X18D": 3}
    assert synth.resource_counts(ecp5, synth.DEVICES["ecp5"]) == \
        {"lut4": 8, "ff": 6, "carry": 2, "bram": 1, "dsp": 3}


def test_zero_memory_initializers_are_stripped():
    text = ("  reg [7:0] mem [1:0];\n  initial begin\n    mem[0] = 8'h00;\n    mem[1] = 8'h05;\n"
            "  end\n")
    assert synth.synthesis_verilog(text) == \
        "  reg [7:0] mem [1:0];\n  initial begin\n    mem[1] = 8'h05;\n  end\n"


@pytest.mark.parametrize("name, settings, expected", [
    # Fewer PEs, the same row blocks (so the same memory depths per PE).
    ("dense", dict(pe=32), dict(pe=1, max_rows=16)),
    ("ternary", dict(pe=32, max_rows=100), dict(pe=1, max_rows=4)),
    ("lfsr", dict(pe=32, index="csr"), dict(pe=1, index="csr", max_rows=8)),
    # Two slots of the same PEs per slot, and their share of the columns.
    ("permdiag", dict(pe=32), dict(pe=4, slots=2, max_cols=64)),
    ("cim", dict(pe=32), dict(pe=1)),
    ("dense", dict(pe=1), dict(pe=1)),
])
def test_timing_configuration_is_a_slice(name, settings, expected):
    assert synth.timing_settings(name, settings, 1) == expected
    engine, sliced = make_engine(name, **settings), make_engine(name, **expected)
    if hasattr(engine, "row_blocks_max"):
        assert sliced.row_blocks_max == engine.row_blocks_max


def test_comparisons_state_the_target_ratios():
    def report(lut4, bram=0, dsp=0):
        return {"stat": {"status": "ok", "ice40": {"resources": dict(
            lut4=lut4, ff=0, carry=0, bram=bram, dsp=dsp)}}}
    rows = {row["name"]: row["ratio"] for row in synth.comparisons({
        "ternary": report(300), "dense": report(1000, dsp=10),
        "lfsr": report(100, bram=1), "lfsr-csr": report(200, bram=2)})}
    assert rows["ternary/dense LUT4"] == 0.3
    assert rows[f"ternary/dense LUT4 + {synth.DSP_LUT4} x DSP"] == \
        300 / (1000 + 10 * synth.DSP_LUT4)
    assert rows["lfsr/lfsr-csr BRAM"] == 0.5
    assert rows[f"lfsr/lfsr-csr LUT4 + {synth.BRAM_LUT4} x BRAM"] == 0.5


def test_timing_shell_has_a_handful_of_pins():
    verilog = synth.timing_shell_verilog(make_engine("dense", pe=2, fan_in=4, max_rows=4,
                                                     max_cols=8))
    header = re.search(r"module dense_engine_timing\((.*?)\);", verilog, re.S)
    assert header, "no timing shell module"
    assert sorted(port.strip() for port in header.group(1).split(",")) == \
        ["clk", "din", "dout", "rst"]


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(timing_pe=0), ValueError, "timing_pe must be an integer >= 1, not 0"),
    (dict(timing_pe=1.5), TypeError, "timing_pe must be an integer >= 1, not 1.5"),
    (dict(timeout=0), ValueError, "timeout must be > 0 seconds, not 0"),
])
def test_synthesize_validates(tmp_path, kwargs, error, message):
    with pytest.raises(error, match=message):
        synth.synthesize({"dense": dict(pe=1)}, tmp_path, **kwargs)


@pytest.mark.parametrize("argv, message", [
    (["synth", "--engine", "nope", "--out", "x"], "unknown engine 'nope'"),
    (["synth", "--engine", "dense", "--pe", "0", "--out", "x"],
     r"dense engine parameter pe must be an integer in [1, 1024], not 0"),
    (["synth", "--engine", "all", "--set", "colour=red", "--out", "x"],
     "no engine has a parameter colour"),
    (["synth", "--engine", "dense", "--timing-pe", "0", "--out", "x"],
     "timing_pe must be an integer >= 1, not 0"),
])
def test_cli_synth_usage_errors(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("secateur: error: ") and message in err, err


def test_cli_synth_writes_reports(tmp_path, capsys):
    """A small dense engine: cell counts, and Fmax or an honest status on both families."""
    out = tmp_path / "synth"
    status = main(["synth", "--engine", "dense", "--pe", "2", "--set", "fan_in=2",
                   "--set", "max_rows=4", "--set", "max_cols=4", "--out", str(out)])
    printed = capsys.readouterr().out
    assert status == 0
    stat = json.loads((out / "dense" / "stat.json").read_text())
    timing = json.loads((out / "dense" / "timing.json").read_text())
    assert stat["status"] == "ok" and stat["params"]["pe"] == 2
    # 2 PEs x 2 int8 products, and 2 requantizer lanes (16 x acc bits, two MAC16 each).
    resources = stat["ice40"]["resources"]
    assert resources["dsp"] == 2 * 2 + 2 * 2 and resources["lut4"] > 0 and resources["ff"] > 0
    assert stat["generic"]["num_cells"] > 0
    assert timing["params"]["pe"] == 1
    for family in ("ice40", "ecp5"):
        result = timing[family]
        assert result["status"] in ("ok", "does not fit"), result
        if result["status"] == "ok":
            assert 1 < result["fmax_mhz"] < 1000
    assert re.search(r"^dense\s+2\s+\d+", printed, re.M), printed
    # A second run with nothing changed measures nothing again.
    assert main(["synth", "--engine", "dense", "--pe", "2", "--set", "fan_in=2",
                 "--set", "max_rows=4", "--set", "max_cols=4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "not measured again: dense" in printed, printed
    assert json.loads((out / "dense" / "stat.json").read_text()) == {**stat, "reused": True}
