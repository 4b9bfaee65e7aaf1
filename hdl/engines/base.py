"""What every engine provides, so that the CLI, the simulators and the testbenches need no
engine-specific code.

An engine is three things, all defined in its one module under :mod:`secateur.hdl.engines`:

* an :class:`Engine`: the validated generator parameters, and the factory of its component;
* an :class:`EngineComponent`: the Amaranth design, whose ports are always the same three
  streams (``load``, ``act``, ``res``) plus ``clk`` and ``rst``;
* a :class:`Layer`: one weight matrix checked against the engine's structure and turned into
  load beats, plus the packing of inputs and results and the work counters for reports.

Stream protocol shared by all engines (see :mod:`secateur.hdl.stream` for the handshake):

1. Write the layer through ``load`` (``{addr, data}`` beats, see :mod:`secateur.hdl.loadmap`).
   ``load.ready`` is low while vectors are in flight, so a new layer waits for the old one.
2. Send each input vector on ``act`` as ``Layer.input_beats_per_vector`` beats of
   ``act_lanes`` int8 lanes (zero-padded), vectors back to back.
3. Receive ``Layer.result_beats_per_vector`` beats per vector on ``res``, in order, each
   ``res_lanes`` signed lanes of ``res_width`` bits (int8 results are sign-extended; raw
   results are ``acc + bias``, exact in ``res_width``).

``rst`` (synchronous, active high) returns the engine to its power-on state, except that
memory contents are kept; the layer's configuration registers are cleared, so the host
writes the layer again after a reset.
"""

from __future__ import annotations

import math
from abc import ABCMeta, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping

import numpy as np
from amaranth.hdl import signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ...models.requant import (BIAS_BITS, BIAS_KEY, REQUANT_KEYS, RequantParams, bias_from_npz,
                               result_width)
from ..loadmap import LoadMap, load_payload_layout
from ..result_path import control_word, result_path_load_beats
from ..stream import Signature

__all__ = ["Param", "Engine", "EngineComponent", "Layer", "pack_lanes", "unpack_lanes"]


@dataclass(frozen=True)
class Param:
    """One generator parameter: its legal values and its default.

    ``default`` may be a function of the other (already resolved) parameters, which are
    resolved in declaration order. ``choices`` makes it a string parameter.
    """
    name: str
    doc: str
    default: Any = None
    minimum: int | None = None
    maximum: int | Callable[[dict], int] | None = None
    choices: tuple[str, ...] | None = None

    def legal(self, resolved: dict) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        maximum = self.maximum(resolved) if callable(self.maximum) else self.maximum
        return f"an integer in [{self.minimum}, {maximum}]"

    def check(self, value, resolved: dict, owner: str):
        if self.choices:
            if value not in self.choices:
                raise ValueError(f"{owner} parameter {self.name} must be {self.legal(resolved)}, "
                                 f"not {value!r}")
            return value
        if isinstance(value, str):
            try:
                value = int(value, 0)
            except ValueError:
                raise TypeError(f"{owner} parameter {self.name} must be {self.legal(resolved)}, "
                                f"not {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{owner} parameter {self.name} must be {self.legal(resolved)}, "
                            f"not {value!r}")
        maximum = self.maximum(resolved) if callable(self.maximum) else self.maximum
        if (self.minimum is not None and value < self.minimum) or \
                (maximum is not None and value > maximum):
            raise ValueError(f"{owner} parameter {self.name} must be {self.legal(resolved)}, "
                             f"not {value}")
        return int(value)


def pack_lanes(values, width: int) -> int:
    """Pack signed lane values into one little-endian payload integer (lane 0 in the LSBs)."""
    mask, packed = (1 << width) - 1, 0
    for lane, value in enumerate(values):
        packed |= (int(value) & mask) << (lane * width)
    return packed


def unpack_lanes(packed: int, width: int, lanes: int) -> list[int]:
    """Inverse of :func:`pack_lanes`: signed lane values."""
    mask, sign = (1 << width) - 1, 1 << (width - 1)
    values = []
    for lane in range(lanes):
        raw = (packed >> (lane * width)) & mask
        values.append(raw - (1 << width) if raw & sign else raw)
    return values


class EngineComponent(wiring.Component):
    """Base of every engine's top-level component: the three streams of the engine protocol.

    Members
    -------
    load : ``In(Signature(StructLayout({"addr": unsigned(load_map.addr_width), "data": unsigned(32)})))``
    act : ``In(Signature(ArrayLayout(signed(8), act_lanes)))``
    res : ``Out(Signature(ArrayLayout(signed(res_width), res_lanes)))``
    """

    def __init__(self, *, load_map: LoadMap, act_lanes: int, res_lanes: int, res_width: int):
        self._load_map = load_map
        super().__init__({
            "load": In(Signature(load_payload_layout(load_map))),
            "act": In(Signature(data.ArrayLayout(signed(8), act_lanes))),
            "res": Out(Signature(data.ArrayLayout(signed(res_width), res_lanes))),
        })

    @property
    def load_map(self) -> LoadMap:
        return self._load_map


class Layer(metaclass=ABCMeta):
    """One weight matrix, validated against an engine's structure and ready to load.

    Subclasses set ``rows`` and ``cols``, call :meth:`_read_result_keys` (which sets
    ``requant`` and ``bias``) and implement the abstract methods.
    """

    rows: int
    cols: int
    requant: RequantParams | None
    #: int64 ``(rows,)``, one bias per output row, or ``None``.
    bias: np.ndarray | None

    def __init__(self, engine: "Engine"):
        self._engine = engine

    @property
    def engine(self) -> "Engine":
        return self._engine

    @property
    @abstractmethod
    def input_beats_per_vector(self) -> int:
        """``act`` beats that carry one input vector."""

    @property
    @abstractmethod
    def result_beats_per_vector(self) -> int:
        """``res`` beats that carry one result vector."""

    @abstractmethod
    def load_beats(self) -> list[tuple[int, int]]:
        """The ``(addr, data)`` beats that program this layer."""

    @abstractmethod
    def reference(self, x: np.ndarray) -> np.ndarray:
        """The golden model's output for int8 inputs ``(B, cols)``: int64 ``(B, rows)``."""

    @abstractmethod
    def counters(self, x: np.ndarray) -> dict:
        """Work counters for a report: at least ``useful_ops`` and ``lanes``."""

    @abstractmethod
    def _input_lanes(self, vector: np.ndarray) -> np.ndarray:
        """One input vector as a ``(input_beats_per_vector, act_lanes)`` array of int8."""

    @abstractmethod
    def _result_rows(self, lanes: np.ndarray) -> np.ndarray:
        """``(result_beats_per_vector, res_lanes)`` result lanes -> the ``rows`` outputs."""

    def _read_result_keys(self, weights) -> None:
        """Read the result path's keys of a weights npz: ``mult``/``shift``/``relu`` into
        ``requant`` and ``bias`` into ``bias`` (:mod:`secateur.models.requant`).

        Raises
        ------
        TypeError, ValueError
            If the requantization keys are incomplete or out of range, a per-channel ``mult``
            or the bias does not have ``rows`` entries, or a bias is outside int32.
        """
        self.requant = RequantParams.from_npz(weights)
        if self.requant is not None:
            self.requant.mult_per_channel(self.rows)
        self.bias = bias_from_npz(weights, self.rows)

    def result_path_beats(self, control_register: int, placements) -> list[tuple[int, int]]:
        """The load beats of the result path: the ``mult`` and ``bias`` words of each
        ``(row_block, lane, row)`` placement (:func:`~secateur.hdl.result_path.
        result_path_load_beats`), then the control word, register ``control_register`` of
        the region ``config``."""
        load_map = self._engine.load_map
        beats = result_path_load_beats(load_map, self.requant, self.bias, self.rows, placements)
        beats.append((load_map.address("config", register=control_register),
                      control_word(self.requant, self.bias)))
        return beats

    def check_inputs(self, x) -> np.ndarray:
        """Validate an input batch: int8, shape ``(B, cols)``.

        Raises
        ------
        TypeError
            If ``x`` is not an int8 array.
        ValueError
            If its shape is not ``(B, cols)`` with ``B >= 1``.
        """
        if not isinstance(x, np.ndarray) or x.dtype != np.int8:
            dtype = getattr(x, "dtype", type(x).__name__)
            raise TypeError(f"inputs must be an int8 array, not {dtype}")
        if x.ndim != 2 or x.shape[1] != self.cols or x.shape[0] < 1:
            raise ValueError(f"inputs must have shape (B, {self.cols}) for this layer "
                             f"({self.rows}x{self.cols}), not {x.shape}")
        return x

    def input_beats(self, x: np.ndarray) -> list[int]:
        """All ``act`` payloads for the batch ``x``, vector after vector."""
        x = self.check_inputs(x)
        return [pack_lanes(beat, 8) for vector in x for beat in self._input_lanes(vector)]

    def decode_results(self, beats: list[int], batch: int) -> np.ndarray:
        """``res`` payloads -> int64 ``(batch, rows)``."""
        engine = self._engine
        expected = batch * self.result_beats_per_vector
        if len(beats) != expected:
            raise ValueError(f"expected {expected} result beats, got {len(beats)}")
        lanes = np.array([unpack_lanes(beat, engine.res_width, engine.res_lanes)
                          for beat in beats], dtype=np.int64)
        lanes = lanes.reshape(batch, self.result_beats_per_vector, engine.res_lanes)
        return np.stack([self._result_rows(vector) for vector in lanes])

    def report_parameters(self) -> dict:
        """Layer facts that a report records beside the engine's parameters."""
        return {"rows": self.rows, "cols": self.cols,
                "requant": None if self.requant is None else self.requant.as_dict(),
                "bias": self.bias is not None}


class Engine(metaclass=ABCMeta):
    """A generator: validated parameters -> component, manifest facts and layers.

    Subclasses declare ``name``, ``top`` (the Verilog module name), ``PARAMS`` (``pe`` first)
    and implement the abstract members.

    Raises
    ------
    TypeError, ValueError
        From the constructor, naming the parameter and its legal values, if a setting is
        unknown, of the wrong type or out of range. Nothing is elaborated before that.
    """

    name: ClassVar[str]
    top: ClassVar[str]
    PARAMS: ClassVar[tuple[Param, ...]]
    #: The keys of a weights npz that :meth:`layer` reads besides the requantization keys.
    WEIGHT_KEYS: ClassVar[tuple[str, ...]] = ("w",)

    def __init__(self, **settings):
        known = {param.name for param in self.PARAMS}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ValueError(f"{self.name} engine has no parameter {unknown[0]}; its parameters "
                             f"are {', '.join(param.name for param in self.PARAMS)}")
        resolved: dict[str, Any] = {}
        for param in self.PARAMS:
            if param.name in settings:
                value = settings[param.name]
            elif callable(param.default):
                value = param.default(resolved)
            else:
                value = param.default
            resolved[param.name] = param.check(value, resolved, f"{self.name} engine")
        self._params = resolved
        self._check(resolved)

    def _check(self, params: dict) -> None:
        """Cross-parameter constraints; raise ValueError naming the parameters."""

    @property
    def params(self) -> dict:
        """Every generator parameter with its resolved value (a copy)."""
        return dict(self._params)

    def __getattr__(self, name):
        params = self.__dict__.get("_params", {})
        if name in params:
            return params[name]
        raise AttributeError(name)

    @property
    @abstractmethod
    def act_lanes(self) -> int: ...

    @property
    @abstractmethod
    def res_lanes(self) -> int: ...

    @property
    @abstractmethod
    def acc_width(self) -> int:
        """Signed bits of the exact accumulator of the largest legal layer."""

    @property
    def res_width(self) -> int:
        """Bits of a ``res`` lane: ``acc + bias`` exactly
        (:func:`~secateur.models.requant.result_width`)."""
        return result_width(self.acc_width)

    @property
    def bias_width(self) -> int:
        """Bits of a layer's per-row signed bias (:data:`~secateur.models.requant.BIAS_BITS`)."""
        return BIAS_BITS

    @property
    @abstractmethod
    def load_map(self) -> LoadMap: ...

    @property
    @abstractmethod
    def latency(self) -> int:
        """Cycles from the last ``act`` beat of a vector to its first ``res`` beat, when no
        stream stalls and the engine was idle."""

    @property
    @abstractmethod
    def lanes(self) -> int:
        """Datapath lanes that can each do one useful operation per cycle (for utilization)."""

    @abstractmethod
    def component(self) -> EngineComponent: ...

    def check_weight_keys(self, keys, values: Mapping | None = None) -> None:
        """Refuse a weights npz key that :meth:`layer` would not read, so that no array is
        ignored in silence. A key that names one of this engine's parameters is
        a record of it (``secateur net`` writes them) and must equal it, when ``values`` has it.

        Raises
        ------
        ValueError
            Naming the first unknown key and the keys this engine reads, or a recorded
            parameter that differs from the engine's.
        """
        readable = set(self.WEIGHT_KEYS) | set(REQUANT_KEYS) | {BIAS_KEY}
        for key in keys:
            if key in readable:
                continue
            if key in self._params:
                if values is not None and key in values:
                    recorded = np.asarray(values[key])
                    if recorded.shape != () or recorded.item() != self._params[key]:
                        raise ValueError(f"weights npz records {key} = {recorded.tolist()}; this "
                                         f"{self.name} engine has {key} = {self._params[key]}")
                continue
            raise ValueError(f"weights npz has a key {key!r} that the {self.name} engine does not "
                             f"read; it reads {', '.join(sorted(readable))} (and records of its "
                             f"parameters)")

    def macro_models(self) -> dict:
        """Verilog module name -> a callable that builds the behavioral model (a
        ``wiring.Component``) of each hard macro that :meth:`component` instantiates as a
        black box (``Instance``). The generator emits each model once, beside the engine; a
        real macro with the same ports replaces it. None by default."""
        return {}

    def shared_modules(self) -> dict:
        """Role -> :class:`~secateur.hdl.shared.SharedModule` of each submodule that
        :meth:`component` places many times (the PE array): the generator writes each once,
        beside the engine, and the engine instantiates it by name. None by default."""
        return {}

    @abstractmethod
    def layer(self, weights: Mapping[str, np.ndarray]) -> Layer:
        """Validate a weights npz (mapping of arrays) against this engine and its structure.

        Raises
        ------
        TypeError, ValueError
            Naming the key, the offending position and the rule it breaks.
        """

    def derived(self) -> dict:
        """Facts derived from the parameters (widths, depths), for the manifest."""
        return {"act_lanes": self.act_lanes, "res_lanes": self.res_lanes,
                "res_width": self.res_width, "acc_width": self.acc_width,
                "bias_width": self.bias_width, "lanes": self.lanes}

    @staticmethod
    def bits(count: int) -> int:
        """Bits that index ``count`` values."""
        return max(1, math.ceil(math.log2(count))) if count > 1 else 1
