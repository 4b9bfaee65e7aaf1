"""Synthesis: where the multipliers are (the ternary datapath has none), and the ``make synth``
flow (``secateur synth``) end to end on a small configuration."""

import json
import re
import tempfile
from pathlib import Path

import pytest

from secateur.gen import synth
from secateur.gen.cli import main
from secateur.gen.registry import make_engine
from secateur.gen.rtl import macro_models_verilog, verilog_text, write_rtl


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
    """Only the requantizer multiplies (``(acc + bias) * mult`` per lane, in its lane modules,
    in 17-bit pieces of the 33-bit sum); the adder trees, the operand selection and the
    sequencer use none."""
    engine = make_engine("ternary", **params)
    counts = multipliers(tmp_path, engine)
    requantizer = [module for module in counts if ".requantizer" in module]
    assert requantizer, f"no requantizer module in {sorted(counts)}"
    outside = {module: count for module, count in counts.items()
               if count and module not in requantizer}
    assert not outside, f"multipliers outside the requantizer: {outside}"
    assert engine.res_width == 33
    assert sum(counts[module] for module in requantizer) == engine.pe * 2


def test_the_count_finds_datapath_multipliers(tmp_path):
    """The same count on the dense engine finds its fan_in products in the PE module (one
    module, instantiated by every PE), so the ternary test above could fail."""
    engine = make_engine("dense", pe=2, fan_in=3, max_rows=4, max_cols=6)
    counts = multipliers(tmp_path, engine)
    assert counts["dense_engine_pe"] == 3
    verilog = (tmp_path / "dense" / "dense_engine.v").read_text()
    assert re.findall(r"^\s*dense_engine_pe\s+(\S+)\s*\(", verilog, flags=re.M) == ["pe0", "pe1"]
    # The requantizer multiplies each lane's acc + bias in 17-bit pieces.
    pieces = -(-engine.res_width // 17)
    assert engine.res_width > 17 and sum(count for module, count in counts.items()
                                         if ".requantizer" in module) == 2 * pieces
    assert sum(counts.values()) == 3 + 2 * pieces


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


#: Three instances of a registered adder: u1 is u0 with other design-numbered names (its clock
#: port and a local wire), u2 adds another constant.
COPIES = r"""/* test */
(* top =  1  *)
module top(clk, a, y0, y1, y2);
  input clk;
  wire clk;
  input [7:0] a;
  wire [7:0] a;
  output [7:0] y0;
  wire [7:0] y0;
  output [7:0] y1;
  wire [7:0] y1;
  output [7:0] y2;
  wire [7:0] y2;
  \top.u0  u0 (
    .a(a),
    .\port$3$0 (clk),
    .y(y0)
  );
  \top.u1  u1 (
    .a(a),
    .\port$9$0 (clk),
    .y(y1)
  );
  \top.u2  u2 (
    .a(a),
    .\port$11$0 (clk),
    .y(y2)
  );
endmodule

module \top.u0 (a, \port$3$0 , y);
  input [7:0] a;
  wire [7:0] a;
  input \port$3$0 ;
  wire \port$3$0 ;
  output [7:0] y;
  reg [7:0] y = 8'h00;
  wire [7:0] \$auto$x.cc:1:f$4 ;
  assign \$auto$x.cc:1:f$4  = a + 8'h01;
  always @(posedge \port$3$0 )
    y <= \$auto$x.cc:1:f$4 ;
endmodule

module \top.u1 (a, \port$9$0 , y);
  input [7:0] a;
  wire [7:0] a;
  input \port$9$0 ;
  wire \port$9$0 ;
  output [7:0] y;
  reg [7:0] y = 8'h00;
  wire [7:0] \$auto$x.cc:1:f$17 ;
  assign \$auto$x.cc:1:f$17  = a + 8'h01;
  always @(posedge \port$9$0 )
    y <= \$auto$x.cc:1:f$17 ;
endmodule

module \top.u2 (a, \port$11$0 , y);
  input [7:0] a;
  wire [7:0] a;
  input \port$11$0 ;
  wire \port$11$0 ;
  output [7:0] y;
  reg [7:0] y = 8'h00;
  wire [7:0] \$auto$x.cc:1:f$21 ;
  assign \$auto$x.cc:1:f$21  = a + 8'h02;
  always @(posedge \port$11$0 )
    y <= \$auto$x.cc:1:f$21 ;
endmodule
"""


def test_dedupe_merges_copies_but_not_a_different_constant(tmp_path):
    text, merged = synth.deduplicate_verilog(COPIES, "top")
    # u1 differs from u0 only in names numbered across the design: merged, and its instance
    # rewritten, its connections renamed by port position.
    assert merged == {"\\top.u1": "\\top.u0"}
    assert "module \\top.u1 " not in text and "module \\top.u0 " in text
    assert re.search(r"\\top\.u0\s+u1 \(\n    \.a\(a\),\n    \.\\port\$3\$0 \(clk\),", text), text
    # Negative control: u2 adds 2 instead of 1, and stays a module of its own.
    assert "module \\top.u2 " in text and re.search(r"\\top\.u2\s+u2 \(", text)
    assert synth.deduplicate_modules(COPIES, "top") == text
    # Yosys reads the result, and counts one adder per instance.
    verilog = tmp_path / "dedup.v"
    verilog.write_text(text)
    synth.check(verilog, "top")
    with tempfile.TemporaryDirectory() as work:
        synth.run_yosys(f"read_verilog design.v\nhierarchy -check -top top\n"
                        f"{synth.GENERIC_SCRIPT}\ntee -q -o stat.json stat -json -top top\n",
                        Path(work), verilog)
        counts = synth.hierarchy_counts(json.loads((Path(work) / "stat.json").read_text()), "top",
                                        {"top.u0": 2})
    assert counts["modules"]["top.u0"]["instances"] == 2
    assert counts["modules"]["top.u2"]["instances"] == 1
    assert counts["cells"]["$add"] == 3 and counts["pe_array"]["cells"]["$add"] == 2


def test_dedupe_validates():
    with pytest.raises(ValueError, match="top must name a module of verilog_text; 'nope'"):
        synth.deduplicate_modules(COPIES, "nope")
    with pytest.raises(TypeError, match="verilog_text must be a str, not bytes"):
        synth.deduplicate_modules(COPIES.encode(), "top")


def test_hierarchy_counts_multiply_through_levels():
    stat = {"modules": {
        "\\top": {"num_cells_by_type": {"$add": 1, "top.pe0": 1, "top.pe1": 3, "macro": 2}},
        "\\top.pe0": {"num_cells_by_type": {"$mul": 2, "top.tree": 1}},
        "\\top.pe1": {"num_cells_by_type": {"$mul": 2, "top.tree": 1, "$scopeinfo": 1}},
        "\\top.tree": {"num_cells_by_type": {"$add": 3}}},
        "design": {"num_cells_by_type": {"$add": 13, "$mul": 8, "macro": 2}}}
    counts = synth.hierarchy_counts(stat, "top", {"top.pe0": 1, "top.pe1": 3})
    assert counts["cells"] == {"$add": 13, "$mul": 8, "macro": 2} and counts["num_cells"] == 23
    assert counts["yosys_design_totals_agree"]
    assert counts["modules"]["top.tree"] == {"instances": 4, "cells": {"$add": 3},
                                             "num_cells": 3}
    assert counts["pe_array"]["cells"] == {"$add": 12, "$mul": 8}
    assert counts["pe_array"]["instances"] == 4
    with pytest.raises(ValueError, match="top must be a module of the statistics"):
        synth.hierarchy_counts(stat, "pe9")


def test_hierarchical_counts_match_the_flattened_design(tmp_path):
    """The deduplicated, unflattened generic synthesis counts what the flattened design has:
    the same operators and memories, and within 2% of its cells (flattening lets Yosys merge
    equal registers and fold constants across instances; see the module documentation).
    Both keep the requantizer lanes' copies of the held settings, as the timing flow does."""
    engine = make_engine("ternary", pe=3, fan_in=4, max_rows=6, max_cols=8)
    text = synth.synthesis_verilog(verilog_text(engine))
    deduplicated, merged = synth.deduplicate_verilog(text, engine.top)
    # The PEs are one module already; the requantizer's lanes are merged here.
    assert synth._pe_instances(text, engine.top) == {"ternary_engine_pe": 3}
    assert "\\ternary_engine.result_path.requantizer.lane2" in merged, merged
    (tmp_path / "flat.v").write_text(text)
    (tmp_path / "hier.v").write_text(deduplicated)
    counts = {}
    for name, flatten, verilog in (("flat", "flatten; ", text), ("hier", "", deduplicated)):
        with tempfile.TemporaryDirectory() as work:
            synth.run_yosys(f"read_verilog design.v\nhierarchy -check -top {engine.top}\n"
                            f"proc; {synth.KEEP_HELD}; {flatten}{synth.GENERIC_SCRIPT}\n"
                            f"tee -q -o stat.json stat -json -top {engine.top}\n", Path(work),
                            tmp_path / f"{name}.v")
            counts[name] = synth.hierarchy_counts(
                json.loads((Path(work) / "stat.json").read_text()), engine.top,
                synth._pe_instances(verilog, engine.top) if not flatten else None)
    flat, hier = counts["flat"], counts["hier"]
    for kind in ("$mul", "$mem_v2", "$add"):
        assert hier["cells"].get(kind) == flat["cells"].get(kind), kind
    assert abs(hier["num_cells"] - flat["num_cells"]) <= 0.02 * flat["num_cells"]
    assert hier["yosys_design_totals_agree"]
    assert hier["pe_array"]["instances"] == 3


def test_cim_timing_shell_has_registered_macro_stand_ins():
    """The CIM shell's macro is a stand-in with the model's ports, all outputs registered."""
    engine = make_engine("cim", pe=1)
    shell = synth.timing_shell_verilog(engine)
    (name,) = engine.macro_models()
    model = synth._ports(re.search(rf"module {name}(\(.*?\);)",
                                   macro_models_verilog(engine), re.S).group(1))
    stand_in = re.search(rf"module {name}(\(.*?\);)(.*?)endmodule", shell, re.S)
    assert stand_in and sorted(synth._ports(stand_in.group(1))) == sorted(model)
    assert "clk" in model
    # No memory in the stand-in, and every output is a register.
    body = stand_in.group(2)
    assert not re.search(r"reg \[[^]]*\] \S+ \[", body), "the stand-in holds an array"
    outputs = re.findall(r"output (?:\[\d+:0\] )?(\S+);", body)
    assert outputs
    for output in outputs:
        source = re.search(rf"assign {re.escape(output)} = (\w+)\[[\d:]+\];", body)
        assert source and re.search(rf"always @\(posedge clk\)\s+{source.group(1)} <=", body), \
            output


@pytest.mark.parametrize("name, settings, expected", [
    # Fewer PEs, the same row blocks (so the same memory depths per PE).
    ("dense", dict(pe=32), dict(pe=1, max_rows=16)),
    ("ternary", dict(pe=32, max_rows=100), dict(pe=1, max_rows=4)),
    ("lfsr", dict(pe=32, index="csr"), dict(pe=1, index="csr", max_rows=8)),
    # One slot of the same PEs per slot (16 slots of 2 PEs at pe=32), and its columns.
    ("permdiag", dict(pe=32), dict(pe=2, slots=1, max_cols=32)),
    ("cim", dict(pe=32), dict(pe=1)),
    ("dense", dict(pe=1), dict(pe=1)),
])
def test_timing_configuration_is_a_slice(name, settings, expected):
    assert synth.timing_settings(name, settings, 1) == expected
    engine, sliced = make_engine(name, **settings), make_engine(name, **expected)
    if hasattr(engine, "row_blocks_max"):
        assert sliced.row_blocks_max == engine.row_blocks_max


def test_comparisons_state_the_target_ratios():
    def report(lut4, bram=0, pe_lut4=None):
        ice40 = {"resources": dict(lut4=lut4, ff=0, carry=0, bram=bram, dsp=0)}
        if pe_lut4 is not None:
            ice40["pe_array"] = {"instances": 2, "resources": dict(
                lut4=pe_lut4, ff=0, carry=0, bram=0, dsp=0)}
        return {"stat": {"status": "ok", "ice40": ice40}}
    rows = {row["name"]: row["ratio"] for row in synth.comparisons({
        "ternary": report(500, pe_lut4=300), "dense": report(2000, pe_lut4=1000),
        "lfsr": report(100, bram=1), "lfsr-csr": report(200, bram=2)})}
    assert rows["ternary/dense PE-array LUT4"] == 0.3
    assert rows["ternary/dense LUT4"] == 0.25
    assert rows["lfsr/lfsr-csr LUT4"] == 0.5 and rows["lfsr/lfsr-csr BRAM"] == 0.5
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
    (dict(seeds=0), ValueError, "seeds must be an integer >= 1, not 0"),
    (dict(seeds=-2), ValueError, "seeds must be an integer >= 1, not -2"),
    (dict(seeds=2.0), TypeError, "seeds must be an integer >= 1, not 2.0"),
    (dict(seeds=True), TypeError, "seeds must be an integer >= 1, not True"),
    (dict(seeds=(1, 2)), TypeError, "seeds must be an integer >= 1, not (1, 2)"),
    (dict(timeout=0), ValueError, "timeout must be > 0 seconds, not 0"),
    (dict(budget=-1), ValueError, "budget must be > 0 seconds, not -1"),
    (dict(jobs=0), ValueError, "jobs must be an integer >= 1, not 0"),
])
def test_synthesize_validates(tmp_path, kwargs, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        synth.synthesize({"dense": dict(pe=1)}, tmp_path, **kwargs)
    assert not any(tmp_path.iterdir()), "a rejected call wrote files"


def _placement(seed: int, fmax_mhz: float | None, status: str = "ok") -> dict:
    """A seed's place and route result as the flow stores it, its critical path named after
    the seed so that a test can tell which seed's path a summary took."""
    result = {"seed": seed, "status": status, "task_seconds": 2.0, "task_cpu_seconds": 1.5}
    if status == "ok":
        result.update(fmax_mhz=fmax_mhz, router="router1",
                      critical_path={"from": f"seed{seed}", "delay_ns": 1000 / fmax_mhz})
    else:
        result["detail"] = f"seed {seed} {status}"
    return result


SYNTHESIZED = {"status": "synthesized", "part": "LFE5U-85F", "task_seconds": 4.0,
               "task_cpu_seconds": 3.0, "reused": True}


def test_fmax_summary_takes_min_and_median_over_the_seeds():
    per_seed = [_placement(1, 151.3), _placement(2, 148.1), _placement(3, 160.0)]
    summary = synth.fmax_summary(SYNTHESIZED, per_seed, 3)
    assert {key: summary[key] for key in ("status", "fmax_mhz", "fmax_min_mhz",
                                          "fmax_median_mhz", "seeds", "seeds_completed",
                                          "not_completed", "median_seed", "router")} == {
        "status": "ok", "fmax_mhz": 151.3, "fmax_min_mhz": 148.1, "fmax_median_mhz": 151.3,
        "seeds": [1, 2, 3], "seeds_completed": 3, "not_completed": [], "median_seed": 1,
        "router": "router1"}
    assert summary["critical_path"]["from"] == "seed1"      # the median seed's path
    assert summary["per_seed"] == per_seed and summary["synthesis"] == SYNTHESIZED
    # The synthesis was reused: the time is the three seeds'; a step ran, so not reused.
    assert summary["task_seconds"] == 6.0 and summary["task_cpu_seconds"] == 4.5
    assert summary["reused"] is False and summary["part"] == "LFE5U-85F"


def test_fmax_summary_of_fewer_seeds_than_asked_for():
    """Of two completed seeds the median is their mean, and the critical path the slower
    one's; the seed the budget cut is named, in the JSON and under the table."""
    per_seed = [_placement(1, 160.0), _placement(2, 148.1), _placement(3, None, "skipped")]
    summary = synth.fmax_summary(SYNTHESIZED, per_seed, 3)
    assert summary["status"] == "ok" and summary["seeds_completed"] == 2
    assert summary["fmax_min_mhz"] == 148.1
    assert summary["fmax_median_mhz"] == summary["fmax_mhz"] == 154.05
    assert summary["median_seed"] == 2 and summary["critical_path"]["from"] == "seed2"
    assert summary["not_completed"] == [{"seed": 3, "status": "skipped"}]
    table = synth.summary_table({"dense": {
        "stat": {"status": "skipped", "params": {"pe": 2}},
        "timing": {"params": {"pe": 1}, "ecp5": summary,
                   "ice40": synth.fmax_summary(SYNTHESIZED, per_seed[:1], 1)}}})
    assert re.search(r"^dense .* 160\.0/160\.0 +148\.1/154\.1\*$", table, re.M), table
    assert "MHz: post-route Fmax of a slice of pe = tpe, min/median over 1 or 3 nextpnr " \
           "seeds" in table
    assert "*: min/median of fewer seeds than asked for: dense ecp5 2 of 3 (seed 3 skipped)" \
        in table


@pytest.mark.parametrize("synthesis, per_seed, status, detail", [
    # No seed completed: the status that says the most about the design.
    (SYNTHESIZED, [_placement(1, None, "skipped"), _placement(2, None, "timed out")],
     "timed out", "seed 2 timed out"),
    (SYNTHESIZED, [_placement(1, None, "failed"), _placement(2, None, "does not fit")],
     "does not fit", "seed 2 does not fit"),
    # Nothing to place: the synthesis' own status, and every seed asked for not completed.
    ({"status": "does not fit", "detail": "bram 40/34", "part": "iCE40UP5K-SG48"}, [],
     "does not fit", "bram 40/34"),
    # A budget that skipped the synthesis, after an earlier run had placed seed 1.
    ({"status": "skipped", "detail": "ecp5 synthesis not started"},
     [_placement(1, None, "timed out")], "timed out", "seed 1 timed out"),
])
def test_fmax_summary_without_a_completed_seed(synthesis, per_seed, status, detail):
    summary = synth.fmax_summary(synthesis, per_seed, 2)
    assert (summary["status"], summary.get("detail")) == (status, detail)
    assert summary["seeds_completed"] == 0 and "fmax_mhz" not in summary
    stopped = {result["seed"]: result["status"] for result in per_seed}
    assert summary["not_completed"] == [
        {"seed": seed, "status": stopped.get(seed, synthesis["status"])} for seed in (1, 2)]


@pytest.mark.parametrize("argv, message", [
    (["synth", "--engine", "nope", "--out", "x"], "unknown engine 'nope'"),
    (["synth", "--engine", "dense", "--pe", "0", "--out", "x"],
     r"dense engine parameter pe must be an integer in [1, 1024], not 0"),
    (["synth", "--engine", "all", "--set", "colour=red", "--out", "x"],
     "no engine has a parameter colour"),
    (["synth", "--engine", "dense", "--timing-pe", "0", "--out", "x"],
     "timing_pe must be an integer >= 1, not 0"),
    (["synth", "--engine", "dense", "--seeds", "0", "--out", "x"],
     "seeds must be an integer >= 1, not 0"),
])
def test_cli_synth_usage_errors(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("secateur: error: ") and message in err, err
    assert err.count("\n") == 1, f"not one line: {err!r}"


def test_cli_synth_writes_reports(tmp_path, capsys):
    """A small dense engine: cell counts, and Fmax from two seeds or an honest status on both
    families; a second run reuses every result (which steps a run with more seeds starts is
    the subject of test_seeds_are_reused_one_by_one)."""
    out = tmp_path / "synth"
    command = ["synth", "--engine", "dense", "--pe", "2", "--set", "fan_in=2",
               "--set", "max_rows=4", "--set", "max_cols=4", "--out", str(out)]
    status = main([*command, "--seeds", "2"])
    captured = capsys.readouterr()
    printed = captured.out
    assert status == 0
    # Progress on stderr: the plan, then a line per step as it ends, with its time.
    progress = captured.err.splitlines()
    assert re.fullmatch(r"secateur: synth: \d+ steps to run on \d+ workers .*, 0 reused from .*",
                        progress[0]), progress
    steps = [line for line in progress[1:] if line.startswith("secateur: synth: dense ")]
    assert any(re.fullmatch(r"secateur: synth: dense cell count: ok in \d+ s \(\d+ done, \d+ "
                            r"waiting or running\)", line) for line in steps), progress
    for seed in (1, 2):
        assert sum(f" ecp5 place and route (seed {seed}): " in line for line in steps) == 1, \
            progress
    assert sum(" ecp5 timing synthesis: " in line for line in steps) == 1, progress
    stat = json.loads((out / "dense" / "stat.json").read_text())
    timing = json.loads((out / "dense" / "timing.json").read_text())
    assert stat["status"] == "ok" and stat["params"]["pe"] == 2
    # 2 PEs x 2 int8 products and 2 requantizer lanes (two 17-bit pieces each), as word-level
    # cells; in iCE40 LUTs, not DSPs.
    assert stat["generic"]["cells"]["$mul"] == 2 * 2 + 2 * 2
    resources = stat["ice40"]["resources"]
    assert resources["dsp"] == 0 and resources["lut4"] > 0 and resources["ff"] > 0
    # The PE array: 2 instances of the PE modules, whose subtrees hold the products.
    pe_array = stat["generic"]["pe_array"]
    assert pe_array["instances"] == 2 and pe_array["cells"]["$mul"] == 2 * 2
    assert 0 < stat["ice40"]["pe_array"]["resources"]["lut4"] < resources["lut4"]
    modules = stat["ice40"]["modules"]
    assert sum(entry["instances"] for name, entry in modules.items()
               if name in pe_array["modules"]) == 2
    assert timing["params"]["pe"] == 1
    assert timing["ecp5"]["status"] == "ok", timing["ecp5"]
    for family in ("ice40", "ecp5"):
        result = timing[family]
        assert result["status"] in ("ok", "does not fit"), result
        if result["status"] == "ok":
            assert [seed["seed"] for seed in result["per_seed"]] == result["seeds"] == [1, 2]
            assert all(seed["status"] == "ok" and 1 < seed["fmax_mhz"] < 1000
                       for seed in result["per_seed"]), result["per_seed"]
            slower, faster = sorted(result["per_seed"], key=lambda seed: seed["fmax_mhz"])
            assert result["seeds_completed"] == 2 and result["not_completed"] == []
            assert result["fmax_min_mhz"] == slower["fmax_mhz"]
            assert result["fmax_mhz"] == result["fmax_median_mhz"] == \
                round((slower["fmax_mhz"] + faster["fmax_mhz"]) / 2, 2)
            assert result["median_seed"] == slower["seed"]
            assert result["critical_path"] == slower["critical_path"]
    ecp5 = timing["ecp5"]
    assert re.search(rf"^dense\s+2\s+\d+.* {ecp5['fmax_min_mhz']:.1f}/"
                     rf"{ecp5['fmax_median_mhz']:.1f}$", printed, re.M), printed
    # A second run with nothing changed measures nothing again: no synthesis, no nextpnr.
    assert main([*command, "--seeds", "2"]) == 0
    captured = capsys.readouterr()
    assert "not measured again: dense" in captured.out, captured.out
    # The cell count, the two timing syntheses and every seed placed.
    reused = 3 + sum(len(timing[family]["per_seed"]) for family in ("ice40", "ecp5"))
    assert re.match(rf"secateur: synth: 0 steps to run on 1 workers .*, {reused} reused from ",
                    captured.err), captured.err
    assert json.loads((out / "dense" / "stat.json").read_text()) == {**stat, "reused": True}
    again = json.loads((out / "dense" / "timing.json").read_text())
    assert [seed["fmax_mhz"] for seed in again["ecp5"]["per_seed"]] == \
        [seed["fmax_mhz"] for seed in ecp5["per_seed"]]
    assert again["ecp5"]["reused"] and all(seed["reused"] for seed in again["ecp5"]["per_seed"])


#: Seeds whose place and route :func:`_fake_task` reports as not started (the budget).
SKIPPED_SEEDS = "skipped-seeds"


def _fake_task(kind, name, settings, directory, budget, seed=None):
    """:func:`secateur.gen.synth._task` without the tools, run in the flow's workers: each
    call is appended to ``calls.log`` beside the engines' directories, a timing synthesis
    writes a netlist, and seed ``s`` reaches ``100 + s`` MHz unless the file
    :data:`SKIPPED_SEEDS` there lists it."""
    root = Path(directory).parent
    with open(root / "calls.log", "a") as log:
        log.write(f"{Path(directory).name} {settings.get('family', kind)} {kind} {seed}\n")
    if kind == "stat":
        return {"status": "ok"}
    if kind == "pnr":
        skipped = root / SKIPPED_SEEDS
        if skipped.exists() and str(seed) in skipped.read_text().split():
            return {"status": "skipped", "detail": "not started"}
        return {"status": "ok", "fmax_mhz": 100.0 + seed, "router": "router1",
                "critical_path": {"from": f"seed{seed}"}}
    work = Path(directory) / kind
    work.mkdir(parents=True, exist_ok=True)
    (work / "netlist.json").write_text(json.dumps({"engine": name, **settings}))
    return {"status": "synthesized", "part": kind, "shell_resources": {"lut4": 1, "ff": 1},
            "netlist_sha256": synth._digest(work / "netlist.json")}


def test_seeds_are_reused_one_by_one(tmp_path, monkeypatch):
    """Which steps a run starts: every seed after the one synthesis; nothing when nothing
    changed; only the seeds a run lacks (more seeds, or one the budget skipped), from the
    netlist left by the last synthesis, unless that netlist has changed."""
    monkeypatch.setattr(synth, "_task", _fake_task)
    log = tmp_path / "calls.log"

    def run(seeds):
        log.unlink(missing_ok=True)
        reports = synth.synthesize({"ternary": dict(pe=1)}, tmp_path, seeds=seeds, jobs=2)
        calls = sorted(log.read_text().splitlines()) if log.exists() else []
        return reports["ternary"]["timing"], calls

    timing, calls = run(2)
    assert calls == sorted(["ternary stat stat None", "ternary ice40 ice40 None",
                            "ternary ecp5 ecp5 None", "ternary ice40 pnr 1",
                            "ternary ice40 pnr 2", "ternary ecp5 pnr 1", "ternary ecp5 pnr 2"])
    assert (timing["ecp5"]["fmax_min_mhz"], timing["ecp5"]["fmax_median_mhz"]) == (101, 101.5)
    assert run(2)[1] == []
    timing, calls = run(3)
    assert calls == ["ternary ecp5 pnr 3", "ternary ice40 pnr 3"]
    assert [seed.get("reused", False) for seed in timing["ecp5"]["per_seed"]] == \
        [True, True, False]
    assert timing["ecp5"]["fmax_median_mhz"] == 102 and not timing["ecp5"]["reused"]
    # Seed 4 skipped by the budget: it is reported so, and the next run places only it.
    (tmp_path / SKIPPED_SEEDS).write_text("4")
    timing, calls = run(4)
    assert calls == ["ternary ecp5 pnr 4", "ternary ice40 pnr 4"]
    assert timing["ecp5"]["not_completed"] == [{"seed": 4, "status": "skipped"}]
    assert timing["ecp5"]["fmax_median_mhz"] == 102
    (tmp_path / SKIPPED_SEEDS).unlink()
    # The iCE40 netlist has changed since (another run's): that shell is synthesized again.
    (tmp_path / "ternary" / "ice40" / "netlist.json").write_text("{}")
    timing, calls = run(4)
    assert calls == ["ternary ecp5 pnr 4", "ternary ice40 ice40 None", "ternary ice40 pnr 4"]
    assert timing["ice40"]["seeds_completed"] == timing["ecp5"]["seeds_completed"] == 4
    # Fewer seeds than stored: only those asked for are reported, all reused.
    timing, calls = run(1)
    assert calls == [] and timing["ecp5"]["seeds"] == [1] and timing["ecp5"]["reused"]
    assert [seed["seed"] for seed in timing["ecp5"]["per_seed"]] == [1]
