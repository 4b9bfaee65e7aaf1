"""Single faults planted in the Amaranth sources, to measure what the regression catches.

:func:`mutations` lists every fault of four classes that the AST of a module of ``hdl/``
admits:

``operator``
    a binary or comparison operator swapped for its usual confusion (``+``/``-``, ``&``/``|``,
    ``|``/``^``, ``<<``/``>>``, ``<``/``<=``, ``>``/``>=``, ``==``/``!=``), and a unary ``~``
    dropped;
``constant``
    an integer literal one more or one less (``0`` only up: a width of ``-1`` fails to
    elaborate, which no test needs to catch);
``delete``
    an assignment statement ``m.d.comb += ...`` or ``m.d.sync += ...`` removed;
``domain``
    such an assignment moved from ``comb`` to ``sync`` or back.

A :class:`Mutation` is applied to the source text, not to the AST, so the rest of the file
keeps its form: the node's span is replaced with the unparsed mutant, parenthesized.

:class:`Workspace` runs mutants in a copy of the package (``git archive HEAD``) under a
temporary directory with its own ``SECATEUR_CACHE_DIR``: the checkout and other users'
builds are never touched. For one mutant it writes the mutated file, generates the Verilog of
the affected engines at their test configurations (in a subprocess of the copy) and compares
it with the unmutated text: unchanged Verilog is an *equivalent* mutant. Otherwise it runs the
covering tests (:data:`COVERING_TESTS`) with a timeout: a failure (or a timeout, or a
Verilog generation error) *kills* the mutant, a pass lets it *survive*.
"""

from __future__ import annotations

import ast
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["Mutation", "mutations", "apply", "ENGINES", "engines_of", "covering_tests",
           "Workspace", "Outcome", "sample"]

ENGINES = ("dense", "ternary", "lfsr", "permdiag", "cim")

_SWAPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitXor,
          ast.BitXor: ast.BitOr, ast.LShift: ast.RShift, ast.RShift: ast.LShift,
          ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
          ast.NotEq: ast.Eq}
_SYMBOLS = {ast.Add: "+", ast.Sub: "-", ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^",
            ast.LShift: "<<", ast.RShift: ">>", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">",
            ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}


@dataclass(frozen=True)
class Mutation:
    """One fault: where (``file`` relative to the package, 1-based ``line``, the node's span
    as ``(line, col, end_line, end_col)`` in characters), its ``kind``, a description and the
    replacement text of the span (``""`` with ``kind == "delete"``: the statement becomes
    ``pass``)."""
    file: str
    line: int
    span: tuple[int, int, int, int]
    kind: str
    description: str
    replacement: str

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def _domain_assignment(node) -> str | None:
    """``"comb"``/``"sync"`` if ``node`` is ``<x>.d.comb += ...`` / ``<x>.d.sync += ...``."""
    if isinstance(node, ast.AugAssign) and isinstance(node.op, ast.Add):
        target = node.target
        if (isinstance(target, ast.Attribute) and target.attr in ("comb", "sync")
                and isinstance(target.value, ast.Attribute) and target.value.attr == "d"):
            return target.attr
    return None


def _docstring_nodes(tree) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _skipped_nodes(tree) -> set[int]:
    """Nodes inside ``raise``, ``assert`` and f-strings: messages and parameter checks, which
    never reach the Verilog."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Raise, ast.Assert, ast.JoinedStr)):
            ids.update(id(child) for child in ast.walk(node))
    return ids


def _span(node) -> tuple[int, int, int, int]:
    return (node.lineno, node.col_offset, node.end_lineno, node.end_col_offset)


def _mutants_of(node, source_lines) -> list[tuple[str, str, ast.AST]]:
    """``(kind, description, mutated node)`` of ``node`` itself."""
    import copy
    found = []
    if isinstance(node, ast.BinOp) and type(node.op) in _SWAPS:
        new = copy.copy(node)
        new.op = _SWAPS[type(node.op)]()
        found.append(("operator", f"{_SYMBOLS[type(node.op)]} -> {_SYMBOLS[type(new.op)]}", new))
    elif isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _SWAPS:
        new = copy.copy(node)
        new.ops = [_SWAPS[type(node.ops[0])]()]
        found.append(("operator", f"{_SYMBOLS[type(node.ops[0])]} -> "
                                  f"{_SYMBOLS[type(new.ops[0])]}", new))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Invert):
        found.append(("operator", "~x -> x", node.operand))
    elif (isinstance(node, ast.Constant) and type(node.value) is int):
        for delta in ((1, -1) if node.value > 0 else (1,)):
            found.append(("constant", f"{node.value} -> {node.value + delta}",
                          ast.Constant(node.value + delta)))
    return found


def mutations(package: Path, files) -> list[Mutation]:
    """Every mutation of ``files`` (paths relative to ``package``), in file order."""
    result = []
    for relative in files:
        source = (Path(package) / relative).read_text()
        tree = ast.parse(source)
        lines = source.splitlines()
        skipped = _docstring_nodes(tree) | _skipped_nodes(tree)
        for node in ast.walk(tree):
            domain = _domain_assignment(node)
            if domain:
                result.append(Mutation(relative, node.lineno, _span(node), "delete",
                                       f"deleted `m.d.{domain} += ...`", ""))
                other = "sync" if domain == "comb" else "comb"
                target = node.target
                segment = ast.get_source_segment(source, target)
                result.append(Mutation(relative, node.lineno, _span(target), "domain",
                                       f"m.d.{domain} -> m.d.{other}",
                                       segment[:-len(domain)] + other))
                continue
            if id(node) in skipped or not hasattr(node, "lineno"):
                continue
            for kind, description, new in _mutants_of(node, lines):
                text = ast.unparse(new)
                if kind == "operator":
                    text = f"({text})"
                result.append(Mutation(relative, node.lineno, _span(node), kind, description,
                                       text))
    return result


def apply(source: str, mutation: Mutation) -> str:
    """``source`` with ``mutation`` applied."""
    lines = source.splitlines(keepends=True)
    line, col, end_line, end_col = mutation.span
    if mutation.kind == "delete":
        indent = lines[line - 1][:col]
        tail = lines[end_line - 1][end_col:]
        return "".join(lines[:line - 1] + [indent + "pass" + tail] + lines[end_line:])
    # ast columns are UTF-8 byte offsets
    first = lines[line - 1].encode()
    last = lines[end_line - 1].encode()
    head = first[:col].decode()
    rest = last[end_col:].decode()
    return "".join(lines[:line - 1] + [head + mutation.replacement + rest] + lines[end_line:])


#: Modules of hdl/ that no engine's Verilog contains (the bus wrappers around an engine).
NOT_IN_ENGINES = {"hdl/axi.py"}


def engines_of(relative: str) -> tuple[str, ...]:
    """The engines whose Verilog a file of ``hdl/`` may change."""
    name = Path(relative).stem
    if relative.startswith("hdl/engines/") and name in ENGINES:
        return (name,)
    if name == "rowblock":
        return ("dense", "ternary")
    return ENGINES


#: Tests of an engine's module that the mutation run leaves out: lint and synthesis checks
#: and CLI runs (slow, and covered by the harness tests beside them).
SLOW_TESTS = "not lint and not yosys and not cli and not command and not icarus"


def _first_configs(package: Path) -> dict:
    """engine -> ``(parameters, pytest id)`` of its first configuration in
    tests/test_tb_engines.py (the one ``make test`` runs)."""
    sys.path.insert(0, str(package / "tests"))
    try:
        import test_tb_engines
    finally:
        sys.path.pop(0)
    first = {}
    for config in test_tb_engines.CONFIGS:
        first.setdefault(config[0], (config[1], test_tb_engines._id(config)))
    return first


def covering_tests(engine: str, test_id: str) -> list[list[str]]:
    """The pytest arguments of the fast tests that cover ``engine``: its cocotb bench at its
    first configuration, then the harness and unit tests of its module (:data:`SLOW_TESTS`
    left out)."""
    return [[f"tests/test_tb_engines.py::test_engine_testbench[{test_id}]"],
            [f"tests/test_{engine}.py", "-k", SLOW_TESTS]]


# The subprocess that writes the Verilog of engines at their test configurations (run with
# the copy on PYTHONPATH, so it elaborates the mutated sources).
_GENERATE = r"""
import hashlib, json, sys
from secateur.gen.registry import make_engine
from secateur.gen.rtl import verilog_text
configs = json.loads(sys.argv[1])
print(json.dumps({engine: hashlib.sha256(verilog_text(make_engine(engine, **params)).encode())
                  .hexdigest() for engine, params in configs.items()}))
"""


@dataclass
class Outcome:
    mutation: Mutation
    status: str  # equivalent, killed, survived
    detail: str
    engines: tuple[str, ...]
    seconds: float

    def as_dict(self) -> dict:
        data = asdict(self)
        data["mutation"] = asdict(self.mutation)
        return data


class Workspace:
    """A copy of the package at ``HEAD`` in a temporary directory, with its own build cache.

    Parameters
    ----------
    repository : Path
        The checkout (its ``HEAD`` is copied; uncommitted edits are not).
    timeout : float
        Seconds the covering tests of one mutant may take.
    """

    def __init__(self, repository: Path, timeout: float = 900.0, keep: bool = False):
        self.repository = Path(repository).resolve()
        self.timeout = timeout
        self.root = Path(tempfile.mkdtemp(prefix="secateur-mutate."))
        self.package = self.root / "secateur"
        self.package.mkdir()
        archive = subprocess.run(["git", "-C", str(self.repository), "archive", "HEAD"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(self.package)], input=archive, check=True)
        self.cache = self.root / "cache"
        self.keep = keep
        self.configs = _first_configs(self.package)
        self.baseline = self._verilog_digests(ENGINES)

    def close(self) -> None:
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def files(self) -> list[str]:
        hdl = self.package / "hdl"
        return [str(path.relative_to(self.package)) for path in
                sorted(hdl.glob("*.py")) + sorted((hdl / "engines").glob("*.py"))
                if path.name != "__init__.py"
                and str(path.relative_to(self.package)) not in NOT_IN_ENGINES]

    def _env(self) -> dict:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(self.root)
        env["SECATEUR_CACHE_DIR"] = str(self.cache)
        env.pop("SECATEUR_COVERAGE", None)
        env.setdefault("SECATEUR_VERILATOR_OPT", "-O0")
        return env

    def _verilog_digests(self, engines) -> dict:
        from ..gen.processes import run_tool
        configs = {engine: self.configs[engine][0] for engine in engines}
        result = run_tool([sys.executable, "-c", _GENERATE, json.dumps(configs)],
                          capture_output=True, env=self._env(), cwd=self.root, timeout=600)
        if result.returncode != 0:
            raise RuntimeError(result.stderr.decode(errors="replace")[-1500:])
        return json.loads(result.stdout.decode().strip().splitlines()[-1])

    def test(self, engine: str) -> str | None:
        """Run the covering tests of ``engine`` in the copy, stopping at the first failure;
        return it (or the timeout), ``None`` if all pass."""
        from ..gen.processes import run_tool
        for arguments in covering_tests(engine, self.configs[engine][1]):
            command = [sys.executable, "-m", "pytest", "-n", "0", "-x", "-q", "-m",
                       "not regress and not icarus", "-p", "no:cacheprovider", *arguments]
            try:
                result = run_tool(command, capture_output=True, env=self._env(),
                                  cwd=self.package, timeout=self.timeout)
            except subprocess.TimeoutExpired:
                return f"tests timed out after {self.timeout:.0f} s"
            if result.returncode == 5:  # nothing selected: not a kill
                continue
            if result.returncode != 0:
                failed = [line for line in result.stdout.decode(errors="replace").splitlines()
                          if line.startswith(("FAILED tests/", "ERROR tests/"))]
                return failed[0] if failed else f"pytest exit {result.returncode}"
        return None

    def run(self, mutation: Mutation, engines=None) -> Outcome:
        """Apply ``mutation`` in the copy, classify it on ``engines`` (default: every engine
        whose Verilog its file may change), and restore the file."""
        start = time.perf_counter()
        path = self.package / mutation.file
        original = path.read_text()
        engines = tuple(engines or engines_of(mutation.file))
        try:
            mutated = apply(original, mutation)
            try:
                compile(mutated, str(path), "exec")
            except SyntaxError as error:
                return Outcome(mutation, "invalid", f"syntax error: {error}", (), 0.0)
            path.write_text(mutated)
            try:
                digests = self._verilog_digests(engines)
            except RuntimeError as error:
                last = str(error).strip().splitlines()[-1:] or [""]
                return Outcome(mutation, "killed", f"the Verilog does not generate: {last[0]}",
                               engines, time.perf_counter() - start)
            changed = tuple(engine for engine in engines
                            if digests[engine] != self.baseline[engine])
            if not changed:
                return Outcome(mutation, "equivalent", "Verilog unchanged at the test "
                               "configurations", engines, time.perf_counter() - start)
            for engine in changed:
                failure = self.test(engine)
                if failure:
                    return Outcome(mutation, "killed", f"{engine}: {failure}", changed,
                                   time.perf_counter() - start)
            return Outcome(mutation, "survived", "covering tests pass", changed,
                           time.perf_counter() - start)
        finally:
            path.write_text(original)


def sample(all_mutations: list[Mutation], seed: int, limit: int | None,
           engine: str | None = None) -> list[Mutation]:
    """A seeded, replayable draw of ``limit`` mutations (all with ``None``), of the files that
    may change ``engine``'s Verilog when given, stratified by kind: the kinds take turns, so
    that constants (more than half of all mutations) do not crowd out the others."""
    rng = random.Random(seed)
    kinds: dict[str, list[Mutation]] = {}
    for mutation in all_mutations:
        if engine is None or engine in engines_of(mutation.file):
            kinds.setdefault(mutation.kind, []).append(mutation)
    for pool in kinds.values():
        rng.shuffle(pool)
    drawn, order = [], sorted(kinds)
    while any(kinds.values()) and (limit is None or len(drawn) < limit):
        for kind in order:
            if kinds[kind] and (limit is None or len(drawn) < limit):
                drawn.append(kinds[kind].pop())
    return drawn
