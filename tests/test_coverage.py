"""The coverage.dat reader (verif/coverage.py), the functional coverage bins
(verif/functional_coverage.py) and the mutator (verif/mutate.py)."""

import ast
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import unsigned

from secateur.gen.registry import make_engine
from secateur.hdl.stream import StreamRegister
from secateur.verif import coverage, functional_coverage, mutate
from secateur.verif.launch import run_testbench


def _record(count, **keys):
    order = ("f", "l", "n", "t", "page", "o", "S", "h")
    key = "".join(f"\x01{name}\x02{keys[name]}" for name in order if name in keys)
    return f"C '{key}' {count}\n"


SOURCE = [
    "module eng(clk);",                                           # 1
    "  always @(posedge clk)",                                    # 2
    "    q <= d;",                                                # 3
    "  always @* begin",                                          # 4
    "    if (\\$auto$verilog_backend.cc:2355:dump_module$1 ) begin end",  # 5
    "    if (go) begin",                                          # 6
    "      d = 1;",                                               # 7
    "    end",                                                    # 8
    "  end",                                                      # 9
    "endmodule",                                                  # 10
    "module macro(x);",                                           # 11
    "endmodule",                                                  # 12
]


def _points(go_count, toggle_up, harness_count=0, macro="macro"):
    def point(count, **keys):
        keys.setdefault("f", "/somewhere/build-1/eng.v")
        keys.setdefault("h", "eng")
        return _record(count, **keys)
    return "".join([
        coverage.HEADER + "\n",
        point(9, l=2, n=3, t="line", page="v_line/eng", o="block", S="2-3"),
        point(0, l=5, n=5, t="branch", page="v_branch/eng", o="if", S="5"),
        point(9, l=5, n=6, t="branch", page="v_branch/eng", o="else"),
        point(go_count, l=6, n=5, t="branch", page="v_branch/eng", o="if", S="6-7"),
        point(4, l=6, n=6, t="branch", page="v_branch/eng", o="else"),
        point(toggle_up, l=1, n=10, t="toggle", page="v_toggle/eng", o="q[0]:0->1"),
        point(1, l=1, n=10, t="toggle", page="v_toggle/eng", o="q[0]:1->0"),
        point(0, l=1, n=10, t="toggle", page="v_toggle/eng", o="__024signal__0245[1]:0->1"),
        point(harness_count, f="/x/stream_harness.v", l=7, n=1, t="line",
              page="v_line/secateur_harness", o="block", S="7"),
        point(0, l=11, n=1, t="line", page=f"v_line/{macro}", o="block", S="11"),
    ])


def _config_dir(tmp_path, files, about=None):
    directory = tmp_path / "data" / "eng" / "0123456789abcdef"
    directory.mkdir(parents=True)
    (directory / "source.v").write_text("\n".join(SOURCE) + "\n")
    (directory / "about.json").write_text(json.dumps(about or {}))
    for index, text in enumerate(files):
        (directory / f"{index}.dat").write_text(text)
    return directory


def test_parse_line_reads_every_key():
    point, count = coverage.parse_line(_record(
        42, f="a/eng.v", l=6, n=5, t="branch", page="v_branch/eng.pe0", o="if", S="6-8,10",
        h="eng.pe0"))
    assert count == 42
    assert point == coverage.Point(kind="branch", file="a/eng.v", line=6, column=5,
                                   module="eng.pe0", comment="if", lines=(6, 7, 8, 10))
    assert coverage.parse_line(coverage.HEADER) is None
    # The type comes from the page when the record has no `t` (older writers).
    point, _ = coverage.parse_line(_record(1, f="x.v", l=1, page="v_toggle/eng", o="a:0->1"))
    assert point.kind == "toggle"


def test_signal_names_are_unescaped():
    point, _ = coverage.parse_line(_record(0, f="x.v", l=1, t="toggle", page="v_toggle/eng",
                                           o="__024signal__0245[3]:1->0"))
    assert point.signal == "$signal$5"


def test_malformed_files_are_refused(tmp_path):
    bad_header = tmp_path / "a.dat"
    bad_header.write_text("C 'x' 1\n")
    with pytest.raises(ValueError, match=r"not a Verilator coverage file"):
        coverage.read(bad_header)
    bad_record = tmp_path / "b.dat"
    bad_record.write_text(coverage.HEADER + "\nC '\x01f\x02x.v' many\n")
    with pytest.raises(ValueError, match=r"b\.dat:2: not a coverage\.dat record"):
        coverage.read(bad_record)


def test_figures_exclusions_and_merge(tmp_path):
    directory = _config_dir(tmp_path, [_points(go_count=0, toggle_up=0)])
    config = coverage.load_config(directory)
    # Lines 2, 3 (block) and 6, 7 (the if): 6-7 unhit. The prologue's line 5 is excluded,
    # the harness's point is another file, and the macro is not excluded without an engine.
    assert config.figures() == {"line": (2, 5), "branch": (1, 2), "toggle": (1, 3)}
    assert config.excluded == {"yosys prologue": 2}
    uncovered = config.uncovered()
    assert [item["line"] for item in uncovered["lines"]] == [6, 7, 11]
    assert uncovered["lines"][0] == {"line": 6, "module": "eng", "text": "if (go) begin"}
    assert uncovered["branches"] == [{"line": 6, "arm": "if", "module": "eng",
                                      "text": "if (go) begin"}]
    assert uncovered["toggles"] == {"eng: q": ["[0]:0->1"], "eng: $signal$5": ["[1]:0->1"]}

    # A second run that takes the branch and toggles q up: counts add up point by point,
    # although each run built the file at another path.
    second = _points(go_count=3, toggle_up=2).replace("/somewhere/build-1/", "/elsewhere/")
    (directory / "1.dat").write_text(second)
    merged = coverage.load_config(directory)
    assert merged.runs == 2
    assert merged.figures() == {"line": (4, 5), "branch": (2, 2), "toggle": (2, 3)}
    annotated = coverage.annotate(merged).splitlines()
    assert len(annotated) == len(SOURCE)
    assert annotated[5].startswith(" 000003") and annotated[5].endswith("| " + SOURCE[5])
    assert annotated[10].startswith("%000000")
    assert annotated[0].startswith("%") and "t 2/3" in annotated[0]


def test_macro_models_are_excluded(tmp_path):
    params = dict(pe=2, macro_rows=12, macro_cols=24, adcs=1, rows=2, adc_bits=2, act_lanes=3)
    macro = next(iter(make_engine("cim", **params).macro_models()))
    directory = _config_dir(tmp_path, [_points(0, 0, macro=macro)],
                            about={"engine": "cim", "params": params})
    config = coverage.load_config(directory)
    assert config.excluded == {"yosys prologue": 2, "macro model": 1}
    assert config.engine == "cim"
    engines = coverage.collect(tmp_path / "data")
    assert list(engines) == ["cim"]
    pooled = coverage.engine_summary(engines["cim"])
    assert pooled["line"] == {"hit": 2, "total": 4, "percent": 50.0}


def test_union_counts_a_recurring_point_once_hit_if_any_configuration_hit_it(tmp_path):
    first = coverage.load_config(_config_dir(tmp_path, [_points(go_count=0, toggle_up=0)]))
    # The same design at another configuration: the same text two lines lower, another $N.
    other = tmp_path / "data" / "eng" / "fedcba9876543210"
    other.mkdir()
    (other / "source.v").write_text("\n".join(SOURCE[:1] + ["  wire a;", "  wire b;"]
                                              + SOURCE[1:]).replace("$1 )", "$7 )") + "\n")
    shifted = "".join(
        line if not line.startswith("C ") else
        line.replace("\x01l\x022\x01", "\x01l\x024\x01").replace("S\x022-3", "S\x024-5")
        .replace("\x01l\x025\x01", "\x01l\x027\x01").replace("S\x025\x01", "S\x027\x01")
        .replace("\x01l\x026\x01", "\x01l\x028\x01").replace("S\x026-7", "S\x028-9")
        .replace("\x01l\x0211\x01", "\x01l\x0213\x01").replace("S\x0211", "S\x0213")
        for line in _points(go_count=2, toggle_up=0).splitlines(keepends=True))
    (other / "0.dat").write_text(shifted)
    second = coverage.load_config(other)
    assert second.figures()["line"] == (4, 5)
    union = coverage.engine_union([first, second])
    assert union["line"] == {"hit": 4, "total": 5, "percent": 80.0}
    assert union["branch"]["hit"] == 2 and union["toggle"] == {"hit": 1, "total": 3,
                                                              "percent": 33.33}
    assert coverage.engine_summary([first, second])["line"]["hit"] == 6
    # What no configuration hit: line 11's macro block; the if at 6-7 was hit by the second.
    hits = coverage.union_hits([first, second])
    assert [item["line"] for item in first.uncovered(hits)["lines"]] == [11]


def test_explanations_match_module_text_and_parameters():
    stored = {"module": "dense_engine.result_path.output", "text": "if (write__en)"}
    assert "output buffer" in coverage.explain_item("dense", None, stored)
    step = {"module": "ternary_engine", "text": "\\$168  = \\$124 [0];"}

    class One:
        about = {"params": {"pe": 4, "fan_in": 8, "max_rows": 4, "max_cols": 8}}

    class Many:
        about = {"params": {"pe": 4, "fan_in": 8, "max_rows": 40, "max_cols": 80}}

    assert "one tile" in coverage.explain_item("ternary", One, step)
    assert coverage.explain_item("ternary", Many, step) is None


def test_report_explains_or_flags_every_unhit_point(tmp_path):
    directory = _config_dir(tmp_path, [_points(0, 0)])
    engines = {"eng": [coverage.load_config(directory)]}
    text, data = coverage.report(engines, explain=lambda engine, config, item:
                                 "never driven" if item.get("line") in (6, 7) else None)
    configuration = data["engines"]["eng"]["configurations"][0]
    assert [item["why"] for item in configuration["uncovered_lines"]] == \
        ["never driven", "never driven", None]
    assert "NOT EXPLAINED" in text and "never driven" in text


def test_main_writes_report_and_annotated_sources(tmp_path, capsys):
    _config_dir(tmp_path, [_points(3, 2)])
    assert coverage.main([str(tmp_path / "data"), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "eng" / "0123456789abcdef.v").exists()
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["engines"]["eng"]["pooled"]["branch"]["percent"] == 100.0
    assert "eng" in capsys.readouterr().out


@pytest.mark.sim
def test_a_real_coverage_build(tmp_path, monkeypatch, seed):
    """A stream register's cocotb bench built with coverage: the data land where
    $SECATEUR_COVERAGE says, and every line of the register runs under random stalls."""
    monkeypatch.setenv("SECATEUR_COVERAGE", str(tmp_path / "data"))
    text = verilog.convert(StreamRegister(unsigned(5)), name="stream_register", emit_src=False)
    run_testbench(verilog=text, toplevel="stream_register",
                  test_module="secateur.verif.tb_stream_register",
                  config=dict(width=5, seed=seed, pause=0.5), seed=seed)
    engines = coverage.collect(tmp_path / "data")
    (config,) = engines["stream_register"]
    assert config.source == text.splitlines()
    figures = config.figures()
    assert figures["line"][1] > 10 and figures["toggle"][1] > 20
    assert figures["line"][0] == figures["line"][1], config.uncovered()["lines"]
    assert figures["branch"][0] == figures["branch"][1], config.uncovered()["branches"]


# -- functional coverage -------------------------------------------------------------------


@pytest.fixture
def fresh_bins(tmp_path, monkeypatch):
    monkeypatch.setenv(functional_coverage.ENV, str(tmp_path))
    monkeypatch.setattr(functional_coverage, "_COUNTS", Counter())
    return tmp_path


def test_bins_are_declared_per_engine_and_typos_refused(fresh_bins):
    engine = make_engine("ternary", pe=2, fan_in=3, max_rows=4, max_cols=6)
    names = functional_coverage.declared(engine)
    assert names[:engine.latency + 1] == [f"ternary: stall at stage {k}"
                                          for k in range(engine.latency + 1)]
    assert "ternary: skip: zero groups" in names and "ternary: reset while draining" in names
    with pytest.raises(KeyError, match=r"no functional coverage bin 'ternary: stal at stage 0'"):
        functional_coverage.hit(engine, "stal at stage 0")


def test_batch_bins_follow_the_stimulus(fresh_bins):
    engine = make_engine("ternary", pe=2, fan_in=3, max_rows=4, max_cols=6)
    w = np.ones((4, 6), dtype=np.int8)
    w[0:2, 0:3] = 0  # one zero group; no all-zero block of rows
    functional_coverage.sample_batch(engine, engine.layer({"w": w}),
                                     np.full((2, 6), 5, dtype=np.int8))
    assert functional_coverage.counts() == Counter({"ternary: skip: zero groups": 1})
    w[0:2] = 0
    x = np.array([[-128] * 6, [0] * 6], dtype=np.int8)
    functional_coverage.sample_batch(engine, engine.layer({"w": w}), x)
    total = functional_coverage.load(fresh_bins)
    assert total == Counter({"ternary: skip: zero groups": 2, "ternary: all-zero tile": 1,
                             "ternary: zero activations": 1,
                             "ternary: full fan-in at extreme values": 1})


def test_res_monitor_times_stalls_to_stages(fresh_bins):
    engine = make_engine("dense", pe=1, fan_in=1, max_rows=4, max_cols=9)
    sent, done = [100], [0]
    monitor = functional_coverage.ResMonitor(engine, lambda: sent, lambda: done[0])
    monitor.sample(100, valid=False, ready=False)                      # stage 0
    monitor.sample(120, valid=False, ready=True)                       # not a stall
    monitor.sample(130, valid=True, ready=False)                       # stage 3, a wait
    monitor.sample(100 + 10 * (engine.latency + 5), valid=True, ready=False)  # past: last
    done[0] = 1
    monitor.sample(500, valid=False, ready=False)                      # nothing in flight
    monitor.flush()
    total = functional_coverage.load(fresh_bins)
    assert total["dense: stall at stage 0"] == 1
    assert total["dense: stall at stage 3"] == 1
    assert total[f"dense: stall at stage {engine.latency}"] == 1
    assert total["dense: res back-pressure while a result waits"] == 2
    assert total["dense: stall at stage 1"] == 0 and "dense: stall at stage 1" in total
    lines = functional_coverage.summary(total)
    assert lines[0].startswith("dense: 4 of ") and any("MISSED" in line for line in lines)


def test_reset_phases_and_back_to_back(fresh_bins):
    engine = make_engine("dense", pe=1, fan_in=1, max_rows=4, max_cols=9)
    assert functional_coverage.reset_phase(True, True, True) == "loading"
    assert functional_coverage.reset_phase(False, True, True) == "streaming"
    assert functional_coverage.reset_phase(False, False, True) == "draining"
    assert functional_coverage.reset_phase(False, False, False) == "idle"
    functional_coverage.sample_reset(engine, "draining")
    functional_coverage.sample_program(engine, batch_since_reset=False)
    functional_coverage.sample_program(engine, batch_since_reset=True)
    assert functional_coverage.counts() == Counter({"dense: reset while draining": 1,
                                                    "dense: back-to-back layers": 1})
    with pytest.raises(ValueError, match=r"^phase must be one of idle, loading, streaming, "
                                         r"draining, not 'busy'$"):
        functional_coverage.sample_reset(engine, "busy")


# -- mutator -------------------------------------------------------------------------------

MODULE = '''"""A docstring with 3 in it."""
WIDTH = 8


def elaborate(m, a, b):
    if WIDTH < 1:
        raise ValueError(f"width {WIDTH + 1}")
    m.d.comb += a.eq(b + 1)
    m.d.sync += [a.eq(~b),
                 b.eq(a & b)]
    return m
'''


def test_mutations_cover_the_four_kinds_and_skip_messages(tmp_path):
    (tmp_path / "hdl").mkdir()
    (tmp_path / "hdl" / "x.py").write_text(MODULE)
    found = mutate.mutations(tmp_path, ["hdl/x.py"])
    described = {(m.line, m.kind, m.description) for m in found}
    assert described == {
        (2, "constant", "8 -> 9"), (2, "constant", "8 -> 7"),
        (6, "operator", "< -> <="), (6, "constant", "1 -> 2"), (6, "constant", "1 -> 0"),
        (8, "delete", "deleted `m.d.comb += ...`"), (8, "domain", "m.d.comb -> m.d.sync"),
        (8, "operator", "+ -> -"), (8, "constant", "1 -> 2"), (8, "constant", "1 -> 0"),
        (9, "delete", "deleted `m.d.sync += ...`"), (9, "domain", "m.d.sync -> m.d.comb"),
        (9, "operator", "~x -> x"), (10, "operator", "& -> |"),
    }
    by = {(m.line, m.description): m for m in found}
    assert mutate.apply(MODULE, by[(8, "+ -> -")]).splitlines()[7] == \
        "    m.d.comb += a.eq((b - 1))"
    deleted = mutate.apply(MODULE, by[(9, "deleted `m.d.sync += ...`")]).splitlines()
    assert deleted[8:10] == ["    pass", "    return m"]
    swapped = mutate.apply(MODULE, by[(9, "m.d.sync -> m.d.comb")]).splitlines()
    assert swapped[8] == "    m.d.comb += [a.eq(~b),"
    for mutation in found:  # every mutant still parses
        ast.parse(mutate.apply(MODULE, mutation))


def test_sample_is_seeded_and_stratified(tmp_path):
    (tmp_path / "hdl" / "engines").mkdir(parents=True)
    (tmp_path / "hdl" / "engines" / "dense.py").write_text(MODULE)
    (tmp_path / "hdl" / "engines" / "lfsr.py").write_text(MODULE)
    found = mutate.mutations(tmp_path, ["hdl/engines/dense.py", "hdl/engines/lfsr.py"])
    first = mutate.sample(found, 7, 8)
    assert first == mutate.sample(found, 7, 8) != mutate.sample(found, 8, 8)
    assert Counter(m.kind for m in first) == Counter(constant=2, delete=2, domain=2, operator=2)
    assert {m.file for m in mutate.sample(found, 7, None, engine="lfsr")} == \
        {"hdl/engines/lfsr.py"}
    assert mutate.engines_of("hdl/engines/rowblock.py") == ("dense", "ternary")
    assert mutate.engines_of("hdl/pe.py") == mutate.ENGINES
