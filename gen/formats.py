"""Every format of an engine, as data: how a host packs a layer's load beats and its input
vectors and reads its results, without secateur.

The engine's Python ``Layer`` (``hdl/engines/<engine>.py``) is the definition; this module
restates it once, per engine, as *formulas*: small integer expressions (:class:`Expr` trees)
over the layer's shape and structure (``M``, ``N`` and ``p`` or ``k``) and the engine's
constants. The same trees are rendered

* into ``manifest.json`` (``format``, :func:`describe`), in a subset of Python that C shares
  (:data:`SYNTAX`), and
* into the C header (:func:`c_lines`), one ``static inline int64_t <top>_<name>(...)`` per
  formula,

so the two cannot disagree; the tests hold both to the ``Layer`` over random legal layers.

A format has

* ``inputs`` and ``results``: beats per vector and the lane maps of ``act`` and ``res`` in both
  directions (beat and lane -> column or row, -1 for padding; column or row -> beat, lane);
* ``config``: every register of the region ``config`` with the formula of its value;
* ``placements``: every other word the layer writes, as rules that put *elements* of the layer
  (a weight, a seed, a group, a block, a cell bit...) at a field value of a region, a bit
  position and a width (:class:`Placement`); the words are the OR of what lands in them;
* ``load_order`` and, for the engines with an LFSR, ``lfsr`` (polynomials and visit order,
  from :mod:`secateur.models.lfsr`).

The prose guide of each engine is ``docs/engines/<engine>.md``, copied into the export bundle.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np

from ..hdl.engines.base import Engine
from ..hdl.loadmap import DATA_WIDTH
from ..hdl.result_path import BIAS_BIT, ENABLE_BIT, RELU_BIT, SHIFT_LSB
from ..models import lfsr as lfsr_model
from ..models.perf import cim as perf_cim
from ..models.perf import lfsr as perf_lfsr
from ..models.requant import BIAS_BITS, MULT_BITS, SHIFT_MAX

__all__ = ["SYNTAX", "BUILTINS", "Expr", "Formula", "Placement", "Format", "ceil_div",
           "bit_length", "minimum", "maximum", "where", "both", "config_registers",
           "engine_format", "describe", "latency_variables", "guide_path", "c_lines"]

#: How the manifest writes a formula.
SYNTAX = ("Every formula is an integer expression in a subset of Python that C shares: integer "
          "literals; the formula's arguments; the engine's constants by name (its params, its "
          "derived sizes, and format.constants); + - * // % & | << >> on integers (// and % "
          "floor, as in Python; the formulas apply &, | and shifts to values >= 0, and & 255 or "
          "& 3 to two's-complement weights); comparisons < <=; 'and'; 'a if c else b'; and "
          "calls of ceil_div(a, b), min(a, b), max(a, b), bit_length(a) (the bits of a >= 0, "
          "as int.bit_length) and of the other formulas of the format by name. The C header "
          "has each formula as static inline int64_t <top>_<name>(...) with the same "
          "arguments.")

#: How the manifest's ``placements`` are read.
PLACEMENTS_DOC = (
    "Every word a layer writes besides the config registers. A placement lists elements of "
    "the layer (its element rule and doc say which, and how each variable is computed); "
    "each element adds (value & (2^bits - 1)) << lsb to the word of region `region` at the "
    "field values `fields` (the formulas are evaluated with the layer's variables and the "
    "element's). A word is the OR of what lands in it; with `words`, every word whose field "
    "f is in [0, words[f]) is written, 0 where nothing lands. `when`: always, requant (only "
    "a layer that requantizes) or bias (only a layer with a bias). Its load address is "
    "(region index << load_map.offset_width) | the fields packed most significant first, "
    "each in its load_map bits; the beat's payload is data << load_map.addr_width | addr.")

#: The functions a formula may call besides other formulas.
BUILTINS = ("ceil_div", "min", "max", "bit_length")

# The manifest's spelling of each operator; C uses the same except `//`, `%` (floor
# semantics, through helper functions) and `and`.
_OPERATORS = ("+", "-", "*", "//", "%", "&", "|", "<<", ">>", "<", "<=", "and")
_C_OPERATORS = {"and": "&&"}
_C_FLOOR = {"//": "floor_div", "%": "floor_mod"}
#: Arithmetic binds as in C and Python: * // % above + -.
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "//": 2, "%": 2}
#: ``a op (b child c)`` == ``a op b child c``.
_ASSOCIATIVE = {("+", "+"), ("+", "-"), ("*", "*")}


# Expressions ------------------------------------------------------------------------------------

class Expr:
    """An integer expression; build with Python's operators, :func:`ceil_div`,
    :func:`where`, ... and render with :meth:`text` (the manifest) or :meth:`c` (C)."""

    def __bool__(self):
        raise TypeError("an Expr has no truth value: use where() for a condition")

    def text(self) -> str:
        """The manifest's spelling (:data:`SYNTAX`)."""
        raise NotImplementedError

    def c(self, top: str) -> str:
        """The C spelling, inside the header of module ``top``."""
        raise NotImplementedError

    def variables(self) -> set[str]:
        """The names of the formula arguments this expression reads."""
        raise NotImplementedError


def _operator(op: str, swap: bool):
    """The method ``Expr.__<name>__`` (``swap``: ``__r<name>__``) that builds ``op``."""
    def method(self, other) -> Expr:
        other = _expr(other)
        return _Op(op, other, self) if swap else _Op(op, self, other)
    return method


#: Python's operator methods and the formula operator each builds (``<`` and ``<=`` have no
#: reflected form: Python reflects them into ``>`` and ``>=``, which the syntax lacks).
for _name, _op in {"add": "+", "sub": "-", "mul": "*", "floordiv": "//", "mod": "%",
                   "and": "&", "or": "|", "lshift": "<<", "rshift": ">>"}.items():
    setattr(Expr, f"__{_name}__", _operator(_op, swap=False))
    setattr(Expr, f"__r{_name}__", _operator(_op, swap=True))
Expr.__lt__, Expr.__le__ = _operator("<", swap=False), _operator("<=", swap=False)
del _name, _op


def _expr(value) -> Expr:
    if isinstance(value, Expr):
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"a formula operand must be an Expr or an int, not {value!r}")
    return _Int(value)


@dataclass(frozen=True, eq=False)
class _Int(Expr):
    value: int

    def text(self) -> str:
        return str(self.value) if self.value >= 0 else f"({self.value})"

    def c(self, top: str) -> str:
        return (f"INT64_C({self.value})" if abs(self.value) >= 1 << 31 else
                str(self.value) if self.value >= 0 else f"({self.value})")

    def variables(self) -> set[str]:
        return set()


@dataclass(frozen=True, eq=False)
class _Var(Expr):
    """A formula argument."""
    name: str

    def text(self) -> str:
        return self.name

    def c(self, top: str) -> str:
        return self.name

    def variables(self) -> set[str]:
        return {self.name}


@dataclass(frozen=True, eq=False)
class _Const(_Var):
    """An engine constant, by name in the manifest: ``macro`` is its C macro without the
    ``<TOP>_`` prefix."""
    value: int
    macro: str

    def c(self, top: str) -> str:
        return f"((int64_t){top.upper()}_{self.macro})"

    def variables(self) -> set[str]:
        return set()


@dataclass(frozen=True, eq=False)
class _Op(Expr):
    """A binary operation. Arithmetic is written with the parentheses precedence needs;
    every other operation, and arithmetic inside it, in parentheses (C and Python rank
    ``&``, shifts and comparisons differently)."""
    op: str
    left: Expr
    right: Expr

    def __post_init__(self):
        if self.op not in _OPERATORS:
            raise ValueError(f"unknown formula operator {self.op!r}")

    def _operand(self, child: Expr, text: str, right: bool) -> str:
        if not isinstance(child, _Op) or child.op not in _PRECEDENCE:
            return text
        if self.op not in _PRECEDENCE:
            return f"({text})"
        mine, theirs = _PRECEDENCE[self.op], _PRECEDENCE[child.op]
        if theirs < mine or (right and theirs == mine
                             and (self.op, child.op) not in _ASSOCIATIVE):
            return f"({text})"
        return text

    def _render(self, left: str, right: str, op: str) -> str:
        text = (f"{self._operand(self.left, left, False)} {op} "
                f"{self._operand(self.right, right, True)}")
        return text if self.op in _PRECEDENCE else f"({text})"

    def text(self) -> str:
        return self._render(self.left.text(), self.right.text(), self.op)

    def c(self, top: str) -> str:
        if self.op in _C_FLOOR:
            return f"{top}_{_C_FLOOR[self.op]}({self.left.c(top)}, {self.right.c(top)})"
        return self._render(self.left.c(top), self.right.c(top),
                            _C_OPERATORS.get(self.op, self.op))

    def variables(self) -> set[str]:
        return self.left.variables() | self.right.variables()


@dataclass(frozen=True, eq=False)
class _Call(Expr):
    """A call of a builtin (by name) or of a :class:`Formula`."""
    function: "str | Formula"
    arguments: tuple

    def _name(self) -> str:
        return self.function if isinstance(self.function, str) else self.function.name

    def text(self) -> str:
        return f"{self._name()}({', '.join(a.text() for a in self.arguments)})"

    def c(self, top: str) -> str:
        return f"{top}_{self._name()}({', '.join(a.c(top) for a in self.arguments)})"

    def variables(self) -> set[str]:
        return set().union(*(a.variables() for a in self.arguments))


@dataclass(frozen=True, eq=False)
class _Where(Expr):
    condition: Expr
    then: Expr
    otherwise: Expr

    def text(self) -> str:
        return f"({self.then.text()} if {self.condition.text()} else {self.otherwise.text()})"

    def c(self, top: str) -> str:
        return f"(({self.condition.c(top)}) ? ({self.then.c(top)}) : ({self.otherwise.c(top)}))"

    def variables(self) -> set[str]:
        return self.condition.variables() | self.then.variables() | self.otherwise.variables()


def ceil_div(a, b) -> Expr:
    """``ceil(a / b)`` for ``a >= 0``, ``b >= 1``."""
    return _Call("ceil_div", (_expr(a), _expr(b)))


def bit_length(a) -> Expr:
    """The bits of ``a >= 0`` (``int.bit_length``)."""
    return _Call("bit_length", (_expr(a),))


def minimum(a, b) -> Expr:
    return _Call("min", (_expr(a), _expr(b)))


def maximum(a, b) -> Expr:
    return _Call("max", (_expr(a), _expr(b)))


def where(condition, then, otherwise) -> Expr:
    """``then`` where ``condition`` holds, else ``otherwise``."""
    return _Where(_expr(condition), _expr(then), _expr(otherwise))


def both(a, b) -> Expr:
    """``a and b``."""
    return _Op("and", _expr(a), _expr(b))


@dataclass(frozen=True, eq=False)
class Formula:
    """A named formula: ``expr`` over ``args`` (the layer's variables first)."""
    name: str
    args: tuple[str, ...]
    expr: Expr
    doc: str

    def __call__(self, *arguments) -> Expr:
        if len(arguments) != len(self.args):
            raise TypeError(f"formula {self.name} takes {len(self.args)} arguments "
                            f"({', '.join(self.args)}), not {len(arguments)}")
        return _Call(self, tuple(_expr(a) for a in arguments))

    def describe(self) -> dict:
        return {"args": list(self.args), "expr": self.expr.text(), "doc": self.doc}


@dataclass(frozen=True)
class Placement:
    """Where the elements of one kind land in a region's words.

    Every element (a weight, a seed, a cell bit...: ``element`` names the rule that lists
    them, ``doc`` says how) binds ``variables``; it adds
    ``(value & (2**bits - 1)) << lsb`` to the word of the region at the field values
    ``fields``. With ``words``, every word whose field ``f`` is in ``[0, words[f])`` is
    written, 0 where no element lands. ``when`` is ``always``, ``requant`` (only a layer
    that requantizes) or ``bias`` (only a layer with a bias).
    """
    name: str
    region: str
    element: str
    doc: str
    variables: tuple[str, ...]
    fields: dict
    lsb: Expr
    bits: int
    value: Expr
    words: dict | None = None
    when: str = "always"

    def describe(self) -> dict:
        result = {"region": self.region, "element": self.element, "doc": self.doc,
                  "variables": list(self.variables),
                  "fields": {name: expr.text() for name, expr in self.fields.items()},
                  "lsb": self.lsb.text(), "bits": self.bits, "value": self.value.text(),
                  "when": self.when}
        if self.words is not None:
            result["words"] = {name: expr.text() for name, expr in self.words.items()}
        return result


@dataclass
class Format:
    """One engine configuration's format (see the module documentation)."""
    engine: Engine
    layer: dict
    constants: dict = field(default_factory=dict)
    formulas: dict = field(default_factory=dict)
    config: list = field(default_factory=list)
    placements: list = field(default_factory=list)
    #: register name -> the expression of its value (``config`` holds its text), for the
    #: C driver (:mod:`secateur.gen.driver`), which renders it into C.
    config_values: dict = field(default_factory=dict)
    load_order: str = ""
    lfsr: dict | None = None
    latency: dict | None = None

    @property
    def v(self) -> SimpleNamespace:
        """The layer's variables, as expressions."""
        return SimpleNamespace(**{name: _Var(name) for name in self.layer})

    def const(self, name: str, value: int | None = None, doc: str = "") -> Expr:
        """An engine constant: a parameter, a derived size, or (with ``value``) a format
        constant, which the manifest lists and the header defines."""
        engine = self.engine
        if value is not None:
            if name in engine.params or name in engine.derived():
                raise ValueError(f"format constant {name} shadows an engine parameter or size")
            self.constants[name] = {"value": int(value), "doc": doc}
            return _Const(name, int(value), name.upper())
        if name in engine.params:
            return _Const(name, engine.params[name], f"PARAM_{name.upper()}")
        if name in engine.derived():
            return _Const(name, int(engine.derived()[name]), name.upper())
        if name in self.constants:
            return _Const(name, self.constants[name]["value"], name.upper())
        raise KeyError(f"the {engine.name} engine has no constant {name}")

    def formula(self, name: str, doc: str, body: Callable, extra: tuple[str, ...] = ()
                ) -> Formula:
        """Define formula ``name`` of the layer's variables and ``extra``: ``body`` gets them
        as attributes of one namespace and returns the expression."""
        args = tuple(self.layer) + tuple(extra)
        if name in self.formulas or name in BUILTINS or name in self.constants \
                or name in self.engine.params or name in self.engine.derived():
            raise ValueError(f"formula name {name} is taken")
        expr = _expr(body(SimpleNamespace(**{arg: _Var(arg) for arg in args})))
        unknown = expr.variables() - set(args)
        if unknown:
            raise ValueError(f"formula {name} reads {sorted(unknown)}, not among {args}")
        self.formulas[name] = result = Formula(name, args, expr, doc)
        return result

    def place(self, name: str, region: str, element: str, doc: str, variables: tuple[str, ...],
              body: Callable, bits: int, words: Callable | None = None,
              when: str = "always") -> Placement:
        """Define placement ``name``: ``body(v)`` returns ``(fields, lsb, value)`` and
        ``words(v)`` the word ranges, over the layer's and the element's ``variables``. Each
        field, the position and the value become formulas ``<name>_<field>``,
        ``<name>_lsb`` and ``<name>_value``."""
        regions = self.engine.load_map.describe()["regions"]
        if region not in regions:
            raise ValueError(f"the {self.engine.name} engine has no load region {region}")
        fields, lsb, value = body(SimpleNamespace(**{v: _Var(v) for v in
                                                     tuple(self.layer) + variables}))
        if list(fields) != [f["name"] for f in regions[region]["fields"]]:
            raise ValueError(f"placement {name} sets fields {list(fields)} of region {region}")

        def named(part, expr):
            return self.formula(f"{name}_{part}", f"{part} of a {element} ({name})",
                                lambda _: expr, extra=variables)(
                *(_Var(arg) for arg in tuple(self.layer) + variables))
        placement = Placement(
            name=name, region=region, element=element, doc=doc, variables=variables,
            fields={f: named(f, expr) for f, expr in fields.items()},
            lsb=named("lsb", lsb), bits=bits, value=named("value", value),
            words=None if words is None else words(self.v), when=when)
        self.placements.append(placement)
        return placement

    def describe(self) -> dict:
        described = {
            "guide": guide_name(self.engine),
            "syntax": SYNTAX,
            "layer": dict(self.layer),
            "constants": dict(self.constants),
            "formulas": {name: f.describe() for name, f in self.formulas.items()},
            "inputs": _map_names("input", "column", _INPUTS_DOC),
            "results": _map_names("result", "row", _RESULTS_DOC),
            "config": self.config,
            "requant_control": {
                "enable_bit": ENABLE_BIT, "relu_bit": RELU_BIT, "bias_bit": BIAS_BIT,
                "shift_lsb": SHIFT_LSB, "shift_bits": SHIFT_MAX.bit_length(),
                "shift_max": SHIFT_MAX, "mult_bits": MULT_BITS, "bias_bits": BIAS_BITS,
                "doc": "raw = acc + bias (bias 0 unless the bias bit is set); with the enable "
                       "bit y = sat8(relu?((raw * mult + 2^(shift-1)) >> shift)), rounding "
                       "term 0 when shift = 0, else y = raw"},
            "placements": {p.name: p.describe() for p in self.placements},
            "placements_doc": PLACEMENTS_DOC,
            "load_order": self.load_order,
        }
        if self.lfsr is not None:
            described["lfsr"] = self.lfsr
        if self.latency is not None:
            described["latency"] = self.latency
        return described


_INPUTS_DOC = (
    "each input vector x (int8, N values) is input_beats_per_vector act beats, vectors back to "
    "back; lane l of beat b (bits [8l, 8l+8)) carries x[input_column(..., b, l)], 0 where that "
    "is -1; column n travels in lane input_lane(..., n) of beat input_beat(..., n)")
_RESULTS_DOC = (
    "each result vector is result_beats_per_vector res beats, in order; lane l of beat b (bits "
    "[res_width*l, res_width*(l+1)), two's complement) carries output row "
    "result_row(..., b, l); ignore it where that is -1. Output row r is lane "
    "result_lane(..., r) of beat result_beat(..., r)")


def _map_names(kind: str, index: str, doc: str) -> dict:
    """The manifest's names of a stream's formulas (:func:`_maps` defines them)."""
    return {"beats": f"{kind}_beats_per_vector", index: f"{kind}_{index}",
            "beat": f"{kind}_beat", "lane": f"{kind}_lane", "doc": doc}


# The engines ------------------------------------------------------------------------------------

def config_registers(engine: Engine) -> dict[str, int]:
    """Names of the ``config`` region's registers: the engine module's ``CONFIG_<NAME>``
    constants (``CONFIG_REGISTERS``, the count, excluded), by index."""
    described = engine.load_map.describe()["regions"].get("config")
    if described is None or [field["name"] for field in described["fields"]] != ["register"]:
        return {}
    count = described["fields"][0]["values"]
    module = vars(sys.modules[type(engine).__module__])
    registers = {name[len("CONFIG_"):]: value for name, value in module.items()
                 if name.startswith("CONFIG_") and name != "CONFIG_REGISTERS"
                 and isinstance(value, int) and not isinstance(value, bool)
                 and 0 <= value < count}
    return dict(sorted(registers.items(), key=lambda item: item[1]))


_LOAD_ORDER = (
    "Any order. Every load beat is one independent write of a configuration register or of "
    "one memory word; no region depends on another, so the beats of a layer may come in any "
    "order and with gaps (the tests load them shuffled). What is required: write only while "
    "load.ready is high (after rst, or once the previous layer's vectors have all left res); "
    "write every beat of the layer before its first act beat (an act beat makes load.ready "
    "drop until its vector's results are out, and a vector computes with what is loaded "
    "then); write every word this format lists, padding included, since memories keep the "
    "previous layer's words and rst clears only registers.")

_LAYER_MN = {"M": "output rows of the layer (rows of w)", "N": "input columns (columns of w)"}


def _result_path(fmt: Format, words: Callable | None = None) -> None:
    """The ``mult`` and ``bias`` placements and the ``REQUANT`` register of every engine:
    row ``m``'s words sit at the row's result beat and lane."""
    v = fmt.v
    layer = tuple(fmt.layer)
    beat, lane = fmt.formulas["result_beat"], fmt.formulas["result_lane"]
    for name, region, bits, when, what in (
            ("mult_word", "mult", MULT_BITS, "requant", "multiplier mult[m]"),
            ("bias_word", "bias", BIAS_BITS, "bias", "bias bias[m]")):
        value = region  # the element variable holding the row's multiplier or bias
        fmt.place(name, region, "row", f"every output row m < M with its {what} (signed, "
                  f"two's complement)" + ("; every other word of the ranges is written 0"
                                          if words else ""),
                  ("m", value),
                  lambda e, value=value: ({"row_block": beat(*(getattr(e, a) for a in layer),
                                                             e.m),
                                           "lane": lane(*(getattr(e, a) for a in layer), e.m)},
                                          0, getattr(e, value)),
                  bits=bits, words=words, when=when)
    control = fmt.formula(
        "requant_control", "the requantizer control word (register REQUANT): enable, relu "
        "and has_bias are 0 or 1, shift in [0, 47]; 0 gives acc without a bias",
        lambda e: (e.enable << ENABLE_BIT) | (e.relu << RELU_BIT) | (e.has_bias << BIAS_BIT)
        | (e.shift << SHIFT_LSB), extra=("enable", "relu", "has_bias", "shift"))
    registers = config_registers(fmt.engine)
    fmt.config_values["REQUANT"] = control(*(getattr(v, a) for a in layer),
                                           *(_Var(a) for a in control.args[len(layer):]))
    fmt.config.append({"register": "REQUANT", "index": registers["REQUANT"],
                       "value": fmt.config_values["REQUANT"].text(),
                       "doc": "the requantizer control word; enable = 1 when the layer "
                              "requantizes (mult, shift, relu), relu = 1 for its ReLU, "
                              "has_bias = 1 when it has a bias, shift its shift (all 0 "
                              "otherwise)"})
    if set(registers) != {entry["register"] for entry in fmt.config}:
        raise ValueError(f"the {fmt.engine.name} engine's config registers "
                         f"{sorted(registers)} are not all described")


def _set_config(fmt: Format, values: dict) -> None:
    """The ``config`` registers other than ``REQUANT``: name -> (formula, doc)."""
    registers = config_registers(fmt.engine)
    v = fmt.v
    for name, (formula, doc) in values.items():
        value = formula if isinstance(formula, Expr) else formula(*(getattr(v, a)
                                                                    for a in fmt.layer))
        fmt.config_values[name] = value
        fmt.config.append({"register": name, "index": registers[name], "value": value.text(),
                           "doc": doc})


def _maps(fmt: Format, inputs: tuple, results: tuple) -> None:
    """The lane maps: ``inputs`` and ``results`` are ``(beats, at, beat, lane)`` bodies of
    the formulas ``*_beats_per_vector``, ``input_column``/``result_row`` (of ``beat``,
    ``lane``), ``input_beat``/``result_beat`` and ``input_lane``/``result_lane`` (of
    ``col``/``row``)."""
    for kind, index, what, (beats, at, beat, lane) in (
            ("input", "col", "column", inputs), ("result", "row", "row", results)):
        stream = "act" if kind == "input" else "res"
        fmt.formula(f"{kind}_beats_per_vector", f"{stream} beats of one vector", beats)
        fmt.formula(f"{kind}_{'column' if kind == 'input' else 'row'}",
                    f"the {what} that lane `lane` of {stream} beat `beat` carries, -1 for "
                    f"padding", at, extra=("beat", "lane"))
        fmt.formula(f"{kind}_beat", f"the {stream} beat that carries {what} `{index}`", beat,
                    extra=(index,))
        fmt.formula(f"{kind}_lane", f"the lane of {stream} beat {kind}_beat that carries "
                    f"{what} `{index}`", lane, extra=(index,))


def _linear(lanes: Expr, count: Callable, index: str) -> tuple:
    """``(at, beat, lane)`` bodies of a map that puts item ``i`` (argument ``index`` of the
    inverse formulas) at lane ``i % lanes`` of beat ``i // lanes``, -1 from item
    ``count(e)`` on."""
    def at(e):
        item = e.beat * lanes + e.lane
        return where(item < count(e), item, -1)
    return (at, lambda e: getattr(e, index) // lanes, lambda e: getattr(e, index) % lanes)


#: What the manifest's ``format.latency`` means.
LATENCY_DOC = (
    "first_result_latency(...) is the exact count of clock edges from the edge that accepts a "
    "vector's last act beat to the edge that accepts its first res beat, when the engine was "
    "idle (no vector in flight) and no stream stalls: res.valid is high from the cycle after "
    "edge (last act edge + latency - 1). The manifest's `latency` is its least value, the "
    "constant `latency` here. Its arguments are the layer's and the ones in `variables`, which "
    "depend on the layer's structure or on the vector, as each one's doc says. Later vectors "
    "of a batch follow the engine's cycle formula (docs: the performance model, `secateur "
    "estimate`).")


def _latency(fmt: Format, variables: dict, body: Callable) -> None:
    """The formula ``first_result_latency`` of the layer's variables and ``variables``
    (name -> doc), the constant ``latency``, and the manifest's ``format.latency``."""
    fmt.const("latency", fmt.engine.latency, "the least first-result latency in cycles (the "
              "manifest's latency)")
    fmt.formula("first_result_latency", "cycles from a vector's last act beat to its first res "
                "beat, engine idle, no stalls (format.latency)", body, extra=tuple(variables))
    fmt.latency = {"formula": "first_result_latency", "variables": dict(variables),
                   "doc": LATENCY_DOC}


def _row_block(fmt: Format) -> None:
    """dense and ternary: ``pe`` rows per row block, ``fan_in`` columns per column block."""
    engine = fmt.engine
    pe, fan_in = fmt.const("pe"), fmt.const("fan_in")
    code_width = engine.CODE.code_width
    codes = fmt.const("codes_per_chunk", DATA_WIDTH // code_width,
                      f"{code_width}-bit weight codes per 32-bit chunk")
    chunks = fmt.const("weight_chunks", engine.weight_chunks,
                       "32-bit chunks of a PE's weight word")
    row_blocks = fmt.formula("row_blocks", "row blocks of pe rows", lambda e: ceil_div(e.M, pe))
    col_blocks = fmt.formula("col_blocks", "column blocks of fan_in columns",
                             lambda e: ceil_div(e.N, fan_in))
    _maps(fmt, (lambda e: col_blocks(e.M, e.N), *_linear(fan_in, lambda e: e.N, "col")),
          (lambda e: row_blocks(e.M, e.N), *_linear(pe, lambda e: e.M, "row")))
    _set_config(fmt, {"ROW_BLOCKS": (row_blocks, "row blocks, ceil(M / pe)"),
                      "COL_BLOCKS": (col_blocks, "column blocks, ceil(N / fan_in)")})
    _result_path(fmt)

    def word(e, tile):
        column = e.n % fan_in
        return ({"tile": tile, "pe": e.m % pe, "chunk": column // codes},
                code_width * (column % codes), e.w & ((1 << code_width) - 1))

    if engine.name == "dense":
        # The first row block's col_blocks tiles issue one per cycle (models/perf/rowblock).
        _latency(fmt, {}, lambda e: fmt.const("latency") + col_blocks(e.M, e.N) - 1)
        fmt.place("weight", "weights", "weight",
                  "every weight w[m, n] (int8, two's complement); every word of the ranges "
                  "is written, 0 where no weight lands (edge tiles are zero-padded)",
                  ("m", "n", "w"),
                  lambda e: word(e, (e.m // pe) * col_blocks(e.M, e.N) + e.n // fan_in),
                  bits=code_width,
                  words=lambda e: {"tile": row_blocks(e.M, e.N) * col_blocks(e.M, e.N),
                                   "pe": pe, "chunk": chunks})
        return
    # The first row block issues one cycle per non-zero group, one if it has none.
    _latency(fmt, {"groups": "the non-zero groups of row block 0 (the bits set in its skip "
                             "bitmap, bitmap_bit)"},
             lambda e: fmt.const("latency") + maximum(1, e.groups) - 1)
    fmt.const("bitmap_chunks", engine.bitmap_chunks,
                              "32-bit chunks of a row block's skip bitmap")
    fmt.place("bitmap_bit", "bitmap", "group",
              "every group position (r, c), r < row_blocks, c < 32 * bitmap_chunks: nonzero = 1 "
              "if group (r, c) (rows r*pe .. r*pe+pe-1, columns c*fan_in .. c*fan_in+fan_in-1) "
              "holds a non-zero weight, else 0 (so 0 for every c >= col_blocks)",
              ("r", "c", "nonzero"),
              lambda e: ({"row_block": e.r, "chunk": e.c // DATA_WIDTH}, e.c % DATA_WIDTH,
                         e.nonzero), bits=1)
    fmt.place("weight_code", "weights", "stored_weight",
              "every position (m, n) of every stored group, padding included (w = 0 beyond "
              "the matrix): t is the group's stored index, the count of non-zero groups "
              "before it in row-block-then-column order; w in {-1, 0, +1} becomes the code "
              "w & 3: 0b01 = +1, 0b11 = -1, 0b00 = 0 (0b10 is never written and reads as 0)",
              ("m", "n", "w", "t"), lambda e: word(e, e.t), bits=code_width)


def _lfsr(fmt: Format) -> None:
    engine = fmt.engine
    pe, act_lanes = fmt.const("pe"), fmt.const("act_lanes")
    row_blocks = fmt.formula("row_blocks", "row blocks of pe rows", lambda e: ceil_div(e.M, pe))
    _maps(fmt, (lambda e: ceil_div(e.N, act_lanes), *_linear(act_lanes, lambda e: e.N, "col")),
          (lambda e: row_blocks(e.M, e.N, e.k), *_linear(pe, lambda e: e.M, "row")))
    fmt.formula("layer_lfsr_width", "the width of the layer's LFSR, max(2, bit_length(N))",
                lambda e: maximum(lfsr_model.MIN_WIDTH, bit_length(e.N)))
    v = fmt.v
    _set_config(fmt, {"ROW_BLOCKS": (row_blocks, "row blocks, ceil(M / pe)"),
                      "COLS": (v.N, "columns N"), "K": (v.k, "kept columns per row k")})
    _result_path(fmt)
    kept_doc = ("every kept weight: row m < row_blocks * pe, position j < k; n is column j "
                "of row m's visit order (format.lfsr.visit_order) and w = w[m, n]; rows m >= M "
                "(padding of the last row block) have w = 0 and n = 0")
    fields = lambda e: {"tile": (e.m // pe) * e.k + e.j, "pe": e.m % pe}  # noqa: E731
    if engine.index == "lfsr":
        fmt.place("seed_word", "seeds", "row_seed",
                  "every row m < row_blocks * pe with its seed (in [1, N]); rows m >= M "
                  "(padding of the last row block) have seed 1", ("m", "seed"),
                  lambda e: ({"row_block": e.m // pe, "pe": e.m % pe}, 0, e.seed),
                  bits=engine.lfsr_width)
        fmt.place("kept_weight", "weights", "kept", kept_doc, ("m", "j", "n", "w"),
                  lambda e: (fields(e), 0, e.w & 0xFF), bits=8)
    else:
        fmt.place("kept_weight", "weights", "kept", kept_doc, ("m", "j", "n", "w"),
                  lambda e: (fields(e), 0, e.w & 0xFF), bits=8)
        fmt.place("kept_index", "indices", "kept", kept_doc, ("m", "j", "n", "w"),
                  lambda e: (fields(e), 0, e.n), bits=engine.index_width)
    fmt.lfsr = _lfsr_facts(range(lfsr_model.MIN_WIDTH, engine.lfsr_width + 1),
                           "n = N, the layer's columns; width layer_lfsr_width")
    # models/perf/lfsr: row block 0's k beats issue one per cycle plus its hunts, the first
    # hunt hidden behind the wait in the index register; after a load the index stage is
    # ready index_ready edges after the first act beat offered at once.
    ready = fmt.const("index_ready", perf_lfsr.INDEX_READY[engine.index],
                      "edges from a first act beat offered right after the last load beat to "
                      "the index stage's first beat")
    beats = fmt.formulas["input_beats_per_vector"]

    def first_result(e):
        after_load = ready - e.gap
        waits = maximum(0, beats(e.M, e.N, e.k) - 1 - after_load)
        return (fmt.const("latency") + e.k - 1 + e.hunt
                + maximum(0, after_load + 1 - beats(e.M, e.N, e.k))
                + maximum(0, e.first_hunt - waits))
    hunts = ("stall cycles of row block 0's sequencers after its kept weight j (the most of "
             "its pe rows, padding rows seed 1 included: (d - 1) // lookahead, d the LFSR "
             "states from kept column j to j + 1 in format.lfsr's visit order); all 0 when "
             "derived.stall_free")
    _latency(fmt, {"hunt": f"the sum over j = 1 .. k - 2 of the {hunts}",
                   "first_hunt": f"the same for j = 0 (0 when k = 1): the {hunts}",
                   "gap": "cycles between the edge that accepted the layer's last load beat and "
                          "the first act beat's first offer (0 when offered at once; from "
                          "index_ready + first_hunt on, the latency no longer depends on it)"},
             first_result)


def _lfsr_facts(widths, columns: str) -> dict:
    """The LFSR convention of :mod:`secateur.models.lfsr` for the manifest."""
    return {
        "form": "Fibonacci, shifting towards the MSB: state s in [1, 2^w - 1]; one step is "
                "s' = ((s << 1) | parity(s & tap_mask)) & (2^w - 1)",
        "taps": {str(w): list(lfsr_model.TAPS[w]) for w in widths},
        "tap_masks": {str(w): lfsr_model.tap_mask(w) for w in widths},
        "taps_doc": "1-based tapped stages per width (XAPP052); tap t is bit t-1 of the state",
        "columns": columns,
        "width": "w = max(2, bit_length(n))",
        "visit_order": "state s names position s - 1 and is accepted when s <= n; a sequence "
                       "starts at its seed (accepted, in [1, n]) and steps, skipping rejected "
                       "states: its first k accepted states, in that order, are the kept "
                       "positions, the j-th being position j of the visit order",
    }


def _permdiag(fmt: Format) -> None:
    engine = fmt.engine
    slots, mults, slot_lanes = fmt.const("slots"), fmt.const("mults"), fmt.const("slot_lanes")
    act_per_slot, drain_pack = fmt.const("act_per_slot"), fmt.const("drain_pack")
    offset_width = fmt.const("offset_width")
    pes_per_slot = fmt.const("pes_per_slot", engine.pes_per_slot, "PEs per slot, pe / slots")
    weights_per_chunk = fmt.const("weights_per_chunk", DATA_WIDTH // 8,
                                  "int8 weights per 32-bit chunk")
    weight_chunks = fmt.const("weight_chunks", engine.weight_chunks,
                              "32-bit chunks of a PE's weight word (mults int8)")
    offsets_per_chunk = fmt.const("offsets_per_chunk", engine.offsets_per_chunk,
                                  "offset_width-bit offsets per 32-bit chunk")
    offset_chunks = fmt.const("offset_chunks", engine.offset_chunks,
                              "32-bit chunks of a PE's offset word")
    layer = lambda e: (e.M, e.N, e.p)  # noqa: E731
    row_blocks = fmt.formula("row_blocks", "block rows M / p", lambda e: e.M // e.p)
    col_blocks = fmt.formula("col_blocks", "block columns N / p", lambda e: e.N // e.p)
    passes = fmt.formula("passes", "cycles per activation, ceil((M/p) / slot_lanes)",
                         lambda e: ceil_div(row_blocks(*layer(e)), slot_lanes))
    last_lanes = fmt.formula("last_lanes", "multipliers with a block row in the last pass",
                             lambda e: row_blocks(*layer(e))
                             - (passes(*layer(e)) - 1) * slot_lanes)
    slot_col_blocks = fmt.formula("slot_col_blocks", "block columns per slot, "
                                  "ceil((N/p) / slots); block column bj belongs to slot "
                                  "bj % slots", lambda e: ceil_div(col_blocks(*layer(e)), slots))
    slot_cols = fmt.formula("slot_cols", "local columns per slot",
                            lambda e: slot_col_blocks(*layer(e)) * e.p)
    entries = fmt.formula("acc_entries", "accumulators used per multiplier, passes * p",
                          lambda e: passes(*layer(e)) * e.p)

    def input_column(e):
        local = e.beat * act_per_slot + e.lane % act_per_slot
        block = (local // e.p) * slots + e.lane // act_per_slot
        return where(both(local < slot_cols(*layer(e)), block < col_blocks(*layer(e))),
                     block * e.p + local % e.p, -1)

    def local_column(e):
        return ((e.col // e.p) // slots) * e.p + e.col % e.p

    def result_row(e):
        index = e.beat * drain_pack + e.lane // slot_lanes
        block_row = (index // e.p) * slot_lanes + e.lane % slot_lanes
        return where(both(index < entries(*layer(e)), block_row < row_blocks(*layer(e))),
                     block_row * e.p + index % e.p, -1)

    def entry(e):
        return ((e.row // e.p) // slot_lanes) * e.p + e.row % e.p

    _maps(fmt, (lambda e: ceil_div(slot_cols(*layer(e)), act_per_slot), input_column,
                lambda e: local_column(e) // act_per_slot,
                lambda e: ((e.col // e.p) % slots) * act_per_slot
                + local_column(e) % act_per_slot),
          (lambda e: ceil_div(entries(*layer(e)), drain_pack), result_row,
           lambda e: entry(e) // drain_pack,
           lambda e: (entry(e) % drain_pack) * slot_lanes + (e.row // e.p) % slot_lanes))
    v = fmt.v
    beats, drain = fmt.formulas["input_beats_per_vector"], fmt.formulas["result_beats_per_vector"]
    _set_config(fmt, {
        "P": (v.p, "block size p"), "PASSES": (passes, "passes, ceil((M/p) / slot_lanes)"),
        "LAST_LANES": (last_lanes, "multipliers with a block row in the last pass"),
        "SLOT_COLS": (slot_cols, "local columns per slot"),
        "SLOT_COL_BLOCKS": (slot_col_blocks, "local block columns per slot"),
        "BEATS": (beats, "act beats per vector"), "DRAIN_WORDS": (drain, "res beats per vector")})
    _result_path(fmt, words=lambda e: {"row_block": drain(*layer(e)),
                                       "lane": fmt.const("res_lanes")})

    def pe_and_lane(e, bi, bj):
        lane = bi % slot_lanes
        return (bj % slots) * pes_per_slot + lane // mults, lane % mults

    def weight(e):
        bi, bj = e.m // e.p, e.n // e.p
        pe, mult = pe_and_lane(e, bi, bj)
        return ({"pe": pe, "addr": (bi // slot_lanes) * slot_cols(*layer(e))
                 + (bj // slots) * e.p + e.n % e.p, "chunk": mult // weights_per_chunk},
                8 * (mult % weights_per_chunk), e.w & 0xFF)

    def offset(e):
        pe, mult = pe_and_lane(e, e.bi, e.bj)
        return ({"pe": pe, "addr": (e.bi // slot_lanes) * slot_col_blocks(*layer(e))
                 + e.bj // slots, "chunk": mult // offsets_per_chunk},
                offset_width * (mult % offsets_per_chunk), e.offset)

    fmt.place("weight_word", "weights", "nonzero_weight",
              "every non-zero weight w[m, n] (int8): block row bi = m // p is handled by "
              "multiplier bi % slot_lanes of its slot in pass bi // slot_lanes, block column "
              "bj = n // p by slot bj % slots; every word of the ranges is written, 0 where no "
              "weight lands", ("m", "n", "w"), weight, bits=8,
              words=lambda e: {"pe": fmt.const("pe"),
                               "addr": passes(*layer(e)) * slot_cols(*layer(e)),
                               "chunk": weight_chunks})
    fmt.place("offset_word", "offsets", "block",
              "every block (bi, bj) that holds a non-zero weight w[m, n], with its offset "
              "block_offset(M, N, p, m, n) (any of its non-zeros gives the same); every word of "
              "the ranges is written, 0 where no block lands (an all-zero block has offset 0)",
              ("bi", "bj", "offset"), offset, bits=engine.offset_width,
              words=lambda e: {"pe": fmt.const("pe"),
                               "addr": passes(*layer(e)) * slot_col_blocks(*layer(e)),
                               "chunk": offset_chunks})
    fmt.formula("block_offset", "the offset k of the block of a non-zero w[m, n]: its "
                "non-zeros sit at rows bi*p + c and columns bj*p + (c + k) % p",
                lambda e: (e.n % e.p + e.p - e.m % e.p) % e.p, extra=("m", "n"))
    # models/perf/permdiag: the vector issues rounds * passes cycles, an all-zero one 1.
    _latency(fmt, {"rounds": "the vector's pick rounds (PermDiagLayer.pick_rounds, the "
                             "guide's schedule): 0 for an all-zero vector"},
             lambda e: fmt.const("latency") + where(e.rounds < 1, 0,
                                                     e.rounds * passes(*layer(e)) - 1))


def _cim(fmt: Format) -> None:
    engine = fmt.engine
    macro_rows, slots, act_lanes = fmt.const("macro_rows"), fmt.const("slots"), \
        fmt.const("act_lanes")
    col_mux = fmt.const("col_mux")
    beats_per_tile = fmt.const("beats_per_tile", engine.beats_per_tile,
                               "act beats per row tile, macro_rows / act_lanes")
    row_tiles = fmt.formula("row_tiles", "row tiles RT = ceil(N / macro_rows): tiles of "
                            "macro_rows inputs", lambda e: ceil_div(e.N, macro_rows))
    col_tiles = fmt.formula("col_tiles", "column tiles CT = ceil(M / slots): tiles of slots "
                            "outputs", lambda e: ceil_div(e.M, slots))
    _maps(fmt, (lambda e: row_tiles(e.M, e.N) * beats_per_tile,
                *_linear(act_lanes, lambda e: e.N, "col")),
          (lambda e: col_tiles(e.M, e.N), *_linear(slots, lambda e: e.M, "row")))
    _set_config(fmt, {"COL_TILES": (col_tiles, "column tiles CT"),
                      "INPUT_BEATS": (fmt.formulas["input_beats_per_vector"],
                                      "act beats per vector, RT * macro_rows / act_lanes")})
    _result_path(fmt)
    macro = fmt.formula("tile_macro", "the macro of tile (rt, ct): rt * CT + ct",
                        lambda e: e.rt * col_tiles(e.M, e.N) + e.ct, extra=("rt", "ct"))
    tiles = lambda e: row_tiles(e.M, e.N) * col_tiles(e.M, e.N)  # noqa: E731
    fmt.place("tile_word", "tile", "macro",
              "every macro q < pe (unused macros, q >= RT * CT, get 0, which switches them off)",
              ("q",), lambda e: ({"macro": e.q}, 0, where(
                  e.q < tiles(e), (1 << 31) | ((e.q % col_tiles(e.M, e.N)) << 16)
                  | (e.q // col_tiles(e.M, e.N)), 0)), bits=32)
    if engine.row_mask == "lfsr":
        fmt.place("mask_word", "mask", "tile",
                  "every tile (rt, ct) with its seed seeds[rt, ct] and kept rows k[rt, ct]",
                  ("rt", "ct", "seed", "k"),
                  lambda e: ({"macro": macro(e.M, e.N, e.rt, e.ct)}, 0, e.seed | (e.k << 16)),
                  bits=32)
        fmt.lfsr = _lfsr_facts([lfsr_model.lfsr_width(engine.macro_rows)],
                               f"n = macro_rows = {engine.macro_rows}, the rows of a macro")
    kept = ("every tile (rt, ct), every row r < macro_rows that it keeps (all rows, or with "
            "row_mask=lfsr the first k[rt, ct] of the visit order from seeds[rt, ct], "
            "format.lfsr), and every column col < macro_cols")
    fmt.place("cell_bit", "cells", "kept_cell",
              kept + ": bit = bit col % 8 of w[ct*slots + col // 8, rt*macro_rows + r] "
              "(two's complement; 0 beyond the matrix)", ("rt", "ct", "r", "col", "bit"),
              lambda e: ({"macro": macro(e.M, e.N, e.rt, e.ct), "col": e.col,
                          "chunk": e.r // 8}, e.r % 8, e.bit), bits=1)
    fmt.place("cell_write", "cells", "kept_cell",
              kept + ": the write-enable bit of the cell (only kept rows are written)",
              ("rt", "ct", "r", "col"),
              lambda e: ({"macro": macro(e.M, e.N, e.rt, e.ct), "col": e.col,
                          "chunk": e.r // 8}, 8 + e.r % 8, 1), bits=1)
    fmt.place("colmap_bit", "colmap", "group_column",
              "every tile (rt, ct), row group g < groups and column col < macro_cols: live = 1 "
              "if a kept row r of the group (g*rows <= r < (g+1)*rows) has cell bit 1 in the "
              "column (cell_bit), else 0", ("rt", "ct", "g", "col", "live"),
              lambda e: ({"macro": macro(e.M, e.N, e.rt, e.ct), "group": e.g,
                          "sel": e.col % col_mux}, e.col // col_mux, e.live), bits=1)
    # models/perf/cim.compute_edges: a vector with live steps pays a fixed start-up and
    # col_mux cycles per step over one without.
    edges = perf_cim.compute_edges(engine, np.array([0, 1]))
    startup = fmt.const("live_startup", int(edges[1] - edges[0]) - engine.col_mux,
                        "cycles a vector with a live step takes over one without, besides "
                        "col_mux per live step")
    _latency(fmt, {"steps": "the vector's live steps: input bit-planes i and row groups g with "
                            "a set bit i of an input on a kept row of group g in some tile"},
             lambda e: fmt.const("latency") + where(e.steps < 1, 0,
                                                    startup + e.steps * col_mux))


_ENGINES = {"dense": _row_block, "ternary": _row_block, "lfsr": _lfsr,
            "permdiag": _permdiag, "cim": _cim}
_LAYERS = {"lfsr": {"k": "kept columns per row"},
           "permdiag": {"p": "block size p, in [min_p, max_p], dividing M and N"}}
_LOAD_ORDER_EXTRA = {
    "cim": " A mask write keeps load.ready low for k cycles while the macro's row mask is "
           "regenerated.",
}


def engine_format(engine: Engine) -> Format:
    """The format of ``engine`` (see the module documentation).

    Raises
    ------
    ValueError
        If the engine has no format, or its format does not describe every ``config``
        register (an engine changed without this module).
    """
    if engine.name not in _ENGINES:
        raise ValueError(f"the {engine.name} engine has no format description")
    fmt = Format(engine=engine, layer=dict(_LAYER_MN, **_LAYERS.get(engine.name, {})),
                 load_order=_LOAD_ORDER + _LOAD_ORDER_EXTRA.get(engine.name, ""))
    _ENGINES[engine.name](fmt)
    return fmt


def latency_variables(layer, x, gap: int = 0) -> dict:
    """The values of ``first_result_latency``'s arguments for ``layer`` and the vector
    ``x[0]``, as the performance model (:mod:`secateur.models.perf`) counts them; the host
    computes the same from the format's docs.

    Parameters
    ----------
    layer : Layer
    x : numpy.ndarray
        int8 inputs ``(B, cols)``; only the first vector matters.
    gap : int, optional
        As :func:`secateur.models.perf.timeline`.

    Returns
    -------
    dict
        Argument name -> value, in the formula's order.
    """
    name = layer.engine.name
    values = {"M": layer.rows, "N": layer.cols}
    if name == "ternary":
        values["groups"] = int(np.count_nonzero(layer.nonzero_groups[0]))
    elif name == "lfsr":
        hunts = perf_lfsr.hunt_cycles(layer)[0]
        values.update(k=layer.k, hunt=int(hunts[1:].sum()), first_hunt=int(hunts[0]),
                      gap=int(gap))
    elif name == "permdiag":
        values.update(p=layer.p, rounds=int(layer.pick_rounds(x[:1])[0]))
    elif name == "cim":
        values["steps"] = int(perf_cim.live_steps(layer, x[:1])[0])
    return values


def describe(engine: Engine) -> dict:
    """The manifest's ``format`` of ``engine``."""
    return engine_format(engine).describe()


def guide_name(engine: Engine) -> str:
    """The guide's file name in the export bundle."""
    return f"{engine.top}.md"


def guide_path(engine: Engine) -> Path:
    """``docs/engines/<engine>.md``, the engine's guide."""
    return Path(__file__).resolve().parent.parent / "docs" / "engines" / f"{engine.name}.md"


# C -----------------------------------------------------------------------------------------------

def c_lines(engine: Engine, fmt: Format | None = None) -> list[str]:
    """The header's functions of the format (its constants are the header's own defines,
    ``<TOP>_<NAME>``): the integer helpers, every formula as a ``static inline int64_t``
    function and, with an LFSR, its taps, step and next accepted state."""
    fmt = fmt or engine_format(engine)
    top = engine.top
    lines = ["", "/* Format (manifest.json \"format\", " + guide_name(engine) + "): every "
             "formula of the manifest as a function of", " * the same arguments (the "
             "layer's M, N and structure first), int64_t throughout. */"]
    lines += [
        f"static inline int64_t {top}_floor_div(int64_t a, int64_t b)",
        "{", "    return a / b - ((a % b != 0) && ((a < 0) != (b < 0)));", "}",
        f"static inline int64_t {top}_floor_mod(int64_t a, int64_t b)",
        "{", f"    return a - b * {top}_floor_div(a, b);", "}",
        f"static inline int64_t {top}_ceil_div(int64_t a, int64_t b)",
        "{", f"    return {top}_floor_div(a + b - 1, b);", "}",
        f"static inline int64_t {top}_min(int64_t a, int64_t b)", "{",
        "    return a < b ? a : b;", "}",
        f"static inline int64_t {top}_max(int64_t a, int64_t b)", "{",
        "    return a > b ? a : b;", "}",
        f"static inline int64_t {top}_bit_length(int64_t a)", "{",
        "    int64_t bits = 0;", "    while (a > 0) {", "        bits++;", "        a >>= 1;",
        "    }", "    return bits;", "}"]
    for formula in fmt.formulas.values():
        used = formula.expr.variables()
        lines.append(f"/* {formula.name}: {formula.doc.replace('*/', '* /')} */")
        lines.append(f"static inline int64_t {top}_{formula.name}("
                     + ", ".join(f"int64_t {arg}" for arg in formula.args) + ")")
        lines.append("{")
        lines += [f"    (void){arg};" for arg in formula.args if arg not in used]
        lines.append(f"    return {formula.expr.c(top)};")
        lines.append("}")
    if fmt.lfsr is not None:
        lines += _lfsr_c(top, fmt.lfsr)
    return lines


def _lfsr_c(top: str, facts: dict) -> list[str]:
    """The LFSR of :mod:`secateur.models.lfsr` in C: tap masks, one step, the next accepted
    state."""
    lines = ["", "/* LFSR (manifest format.lfsr): tap mask of a width, one step, and the next "
             "accepted state", " * (state s names position s - 1; accepted when s <= n). */",
             f"static inline uint32_t {top}_lfsr_tap_mask(uint32_t width)", "{",
             "    switch (width) {"]
    lines += [f"    case {width}u: return {mask}u;" for width, mask in facts["tap_masks"].items()]
    lines += ["    default: return 0u;", "    }", "}",
              f"static inline uint32_t {top}_lfsr_step(uint32_t state, uint32_t width)", "{",
              f"    uint32_t taps = state & {top}_lfsr_tap_mask(width);",
              "    uint32_t parity = 0u;",
              "    while (taps != 0u) {", "        parity ^= taps & 1u;", "        taps >>= 1;",
              "    }",
              "    return (uint32_t)((((uint64_t)state << 1) | parity) & "
              "(((uint64_t)1 << width) - 1u));", "}",
              f"static inline uint32_t {top}_lfsr_next_accepted(uint32_t state, uint32_t width, "
              "uint32_t n)", "{",
              "    do {", f"        state = {top}_lfsr_step(state, width);",
              "    } while (state > n);", "    return state;", "}"]
    return lines
