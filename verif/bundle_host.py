"""An integrator's host for one engine, written from its export bundle alone.

:class:`BundleHost` reads ``manifest.json`` (its ``format``, ``load_map`` and sizes) and
follows the engine's guide (``<top>.md``) to turn a layer, given as the arrays a user has
(``w``, the structure keys ``p``, ``k``, ``seeds``, and ``mult``, ``shift``, ``relu``,
``bias``), into load beats, to pack input vectors into ``act`` payloads and to read ``res``
payloads back into rows. It evaluates the manifest's formulas and imports nothing of secateur,
so that the integration test (``tests/test_integration_bundle.py``, ``verif/tb_bundle.py``)
proves the bundle, not the package's ``Layer`` against itself.

The only engine knowledge here is what each placement's ``element`` rule says in words (which
elements a layer has: its weights, its non-zero groups, the kept positions of an LFSR
mask, ...): one method per rule, ``_elements_<rule>``.
"""

from __future__ import annotations

import ast
import itertools
import json
from pathlib import Path

import numpy as np

__all__ = ["BundleHost", "visit_order"]

#: The expression nodes of the manifest's formula syntax (``format.syntax``).
_NODES = (ast.Expression, ast.BinOp, ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.Mod,
          ast.BitAnd, ast.BitOr, ast.LShift, ast.RShift, ast.Compare, ast.Lt, ast.LtE,
          ast.BoolOp, ast.And, ast.IfExp, ast.Call, ast.Name, ast.Load, ast.Constant,
          ast.UnaryOp, ast.USub)
_BUILTINS = {"ceil_div": lambda a, b: -(-a // b), "min": min, "max": max,
             "bit_length": lambda a: int(a).bit_length()}


def visit_order(n: int, k: int, seed: int, tap_masks: dict) -> list[int]:
    """The first ``k`` positions an LFSR sequence from ``seed`` visits over ``n`` positions
    (``format.lfsr``: width ``max(2, bit_length(n))``, Fibonacci steps, state ``s`` names
    position ``s - 1`` and is skipped when ``s > n``)."""
    width = max(2, n.bit_length())
    taps, mask = tap_masks[str(width)], (1 << width) - 1
    if not 1 <= seed <= n:
        raise ValueError(f"seed {seed} is not in [1, {n}]")
    state, order = seed, [seed - 1]
    while len(order) < k:
        state = ((state << 1) | ((state & taps).bit_count() & 1)) & mask
        if state <= n:
            order.append(state - 1)
    return order


class _Layer:
    """The user's arrays of one layer, and the values every formula takes."""

    def __init__(self, weights: dict, layer_names: list[str]):
        self.w = np.asarray(weights["w"]).astype(np.int64)
        self.rows, self.cols = self.w.shape
        self.weights = weights
        scalars = {"M": self.rows, "N": self.cols}
        for name in layer_names:
            if name not in scalars:
                scalars[name] = int(np.asarray(weights[name]))
        self.variables = {name: scalars[name] for name in layer_names}
        self.requant = "mult" in weights
        self.has_bias = "bias" in weights

    def per_row(self, key: str) -> np.ndarray:
        return np.broadcast_to(np.asarray(self.weights[key]).astype(np.int64), (self.rows,))

    def control(self) -> dict:
        return {"enable": int(self.requant),
                "relu": int(bool(self.weights["relu"])) if self.requant else 0,
                "has_bias": int(self.has_bias),
                "shift": int(self.weights["shift"]) if self.requant else 0}


class BundleHost:
    """Load beats, ``act`` payloads and results of an engine, from its ``manifest.json``.

    Parameters
    ----------
    manifest : dict
        The bundle's ``manifest.json``.

    Raises
    ------
    ValueError
        If a formula uses anything outside the manifest's syntax or names.
    """

    def __init__(self, manifest: dict):
        self.manifest = manifest
        self.format = manifest["format"]
        self.load_map = manifest["load_map"]
        self.params, self.derived = manifest["params"], manifest["derived"]
        constants = {**self.params, **self.derived,
                     **{name: c["value"] for name, c in self.format["constants"].items()}}
        self._globals = {"__builtins__": {}, **_BUILTINS,
                         **{name: value for name, value in constants.items()
                            if isinstance(value, int)}}
        self._names = set(self._globals) | set(self.format["formulas"])
        for name, formula in self.format["formulas"].items():
            self._globals[name] = self.function(formula["args"], formula["expr"])
        self.layer_names = list(self.format["layer"])

    @classmethod
    def from_bundle(cls, directory) -> "BundleHost":
        return cls(json.loads((Path(directory) / "manifest.json").read_text()))

    # Formulas ----------------------------------------------------------------------------

    def _checked(self, text: str, names) -> str:
        for node in ast.walk(ast.parse(text, mode="eval")):
            if not isinstance(node, _NODES):
                raise ValueError(f"formula {text!r} uses {type(node).__name__}, outside the "
                                 f"manifest's syntax")
            if isinstance(node, ast.Name) and node.id not in names and node.id not in self._names:
                raise ValueError(f"formula {text!r} names {node.id}, which the manifest does "
                                 f"not define")
            if isinstance(node, ast.Constant) and type(node.value) is not int:
                raise ValueError(f"formula {text!r} has a non-integer literal")
        return text

    def function(self, args, *expressions: str):
        """A Python function of ``args`` returning the value of the expression (a tuple of
        them for several)."""
        body = ", ".join(f"({self._checked(text, args)})" for text in expressions)
        if len(expressions) > 1:
            body = f"({body},)"
        return eval(f"lambda {', '.join(args)}: {body}", self._globals)  # checked above

    def formula(self, name: str, *args: int) -> int:
        """The value of formula ``name``."""
        return int(self._globals[name](*args))

    # Load beats --------------------------------------------------------------------------

    def address(self, region: str, fields: dict) -> int:
        """The load address of the word of ``region`` at ``fields`` (``load_map``)."""
        described = self.load_map["regions"][region]
        offset = 0
        for described_field in described["fields"]:
            value = int(fields[described_field["name"]])
            if not 0 <= value < described_field["values"]:
                raise ValueError(f"{region}.{described_field['name']} = {value} is outside "
                                 f"[0, {described_field['values']})")
            offset = (offset << described_field["bits"]) | value
        return (described["index"] << self.load_map["offset_width"]) | offset

    def payload(self, addr: int, data: int) -> int:
        """The ``load`` payload of one beat."""
        return (int(data) << self.load_map["addr_width"]) | int(addr)

    def load_beats(self, weights: dict) -> list[tuple[int, int]]:
        """The ``(addr, data)`` beats of a layer: its config registers, then its placements'
        words in the order they are first touched."""
        layer = _Layer(weights, self.layer_names)
        variables = layer.variables
        beats = []
        for entry in self.format["config"]:
            value = self.function(list(variables) + list(layer.control()), entry["value"])(
                **variables, **layer.control())
            beats.append((self.address("config", {"register": entry["index"]}), value))
        words: dict[int, int] = {}
        for placement in self.format["placements"].values():
            if placement["when"] == "requant" and not layer.requant or \
                    placement["when"] == "bias" and not layer.has_bias:
                continue
            self._place(layer, placement, words)
        return beats + list(words.items())

    def _place(self, layer: _Layer, placement: dict, words: dict) -> None:
        variables, names = layer.variables, placement["variables"]
        region, field_names = placement["region"], list(placement["fields"])
        args = list(variables) + names
        if "words" in placement:
            counts = self.function(list(variables), *placement["words"].values())(**variables)
            for values in itertools.product(*(range(count) for count in counts)):
                words.setdefault(self.address(region, dict(zip(placement["words"], values))), 0)
        evaluate = self.function(args, *placement["fields"].values(), placement["lsb"],
                                 placement["value"])
        mask = (1 << placement["bits"]) - 1
        for element in getattr(self, f"_elements_{placement['element']}")(layer):
            *fields, lsb, value = evaluate(**variables, **{name: element[name] for name in names})
            bits = (value & mask) << lsb
            if bits >> self.load_map["data_width"]:
                raise ValueError(f"placement bits {bits:#x} exceed the data word")
            addr = self.address(region, dict(zip(field_names, fields)))
            words[addr] = words.get(addr, 0) | bits

    # Element rules (what each placement's `element` doc says) -----------------------------

    def _elements_row(self, layer: _Layer):
        mult = layer.per_row("mult") if layer.requant else None
        bias = layer.per_row("bias") if layer.has_bias else None
        for m in range(layer.rows):
            yield {"m": m, "mult": None if mult is None else int(mult[m]),
                   "bias": None if bias is None else int(bias[m])}

    def _elements_weight(self, layer: _Layer):
        for (m, n), w in np.ndenumerate(layer.w):
            yield {"m": m, "n": n, "w": int(w)}

    def _elements_nonzero_weight(self, layer: _Layer):
        for m, n in np.argwhere(layer.w != 0):
            yield {"m": int(m), "n": int(n), "w": int(layer.w[m, n])}

    def _groups(self, layer: _Layer) -> np.ndarray:
        """ternary: whether group (r, c) holds a non-zero weight, over the layer's groups."""
        pe, fan_in = self.params["pe"], self.params["fan_in"]
        rows, cols = (self.formula(name, *layer.variables.values())
                      for name in ("row_blocks", "col_blocks"))
        padded = np.zeros((rows * pe, cols * fan_in), dtype=np.int64)
        padded[:layer.rows, :layer.cols] = layer.w
        return padded.reshape(rows, pe, cols, fan_in).any(axis=(1, 3)), padded

    def _elements_group(self, layer: _Layer):
        nonzero, _ = self._groups(layer)
        columns = 32 * self.format["constants"]["bitmap_chunks"]["value"]
        for r in range(nonzero.shape[0]):
            for c in range(columns):
                yield {"r": r, "c": c,
                       "nonzero": int(c < nonzero.shape[1] and bool(nonzero[r, c]))}

    def _elements_stored_weight(self, layer: _Layer):
        pe, fan_in = self.params["pe"], self.params["fan_in"]
        nonzero, padded = self._groups(layer)
        for t, (r, c) in enumerate(zip(*np.nonzero(nonzero))):  # row block, then column
            for m in range(r * pe, (r + 1) * pe):
                for n in range(c * fan_in, (c + 1) * fan_in):
                    yield {"m": m, "n": n, "w": int(padded[m, n]), "t": t}

    def _padded_rows(self, layer: _Layer) -> int:
        return self.formula("row_blocks", *layer.variables.values()) * self.params["pe"]

    def _elements_row_seed(self, layer: _Layer):
        seeds = np.asarray(layer.weights["seeds"])
        for m in range(self._padded_rows(layer)):
            yield {"m": m, "seed": int(seeds[m]) if m < layer.rows else 1}

    def _elements_kept(self, layer: _Layer):
        k = layer.variables["k"]
        seeds = np.asarray(layer.weights["seeds"])
        for m in range(self._padded_rows(layer)):
            order = (visit_order(layer.cols, k, int(seeds[m]), self.format["lfsr"]["tap_masks"])
                     if m < layer.rows else [0] * k)
            for j, n in enumerate(order):
                yield {"m": m, "j": j, "n": n, "w": int(layer.w[m, n]) if m < layer.rows else 0}

    def _elements_block(self, layer: _Layer):
        p = layer.variables["p"]
        seen = set()
        for m, n in np.argwhere(layer.w != 0):
            block = (int(m) // p, int(n) // p)
            if block not in seen:
                seen.add(block)
                yield {"bi": block[0], "bj": block[1],
                       "offset": self.formula("block_offset", *layer.variables.values(),
                                              int(m), int(n))}

    def _elements_macro(self, layer: _Layer):
        for q in range(self.params["pe"]):
            yield {"q": q}

    def _tiles(self, layer: _Layer):
        """cim: every tile (rt, ct) with its seed and k (None without a row mask)."""
        rows, cols = (self.formula(name, *layer.variables.values())
                      for name in ("row_tiles", "col_tiles"))
        masked = self.params["row_mask"] == "lfsr"
        seeds = np.asarray(layer.weights["seeds"]) if masked else None
        ks = np.broadcast_to(np.asarray(layer.weights["k"]), (rows, cols)) if masked else None
        for rt, ct in itertools.product(range(rows), range(cols)):
            yield rt, ct, (int(seeds[rt, ct]) if masked else None), \
                (int(ks[rt, ct]) if masked else None)

    def _elements_tile(self, layer: _Layer):
        for rt, ct, seed, k in self._tiles(layer):
            yield {"rt": rt, "ct": ct, "seed": seed, "k": k}

    def _cells(self, layer: _Layer, rt: int, ct: int, seed, k):
        """cim: the kept rows of a tile and its cell bits ``(macro_rows, macro_cols)``."""
        macro_rows, macro_cols = self.params["macro_rows"], self.params["macro_cols"]
        slots = self.derived["slots"]
        kept = (range(macro_rows) if seed is None else
                sorted(visit_order(macro_rows, k, seed, self.format["lfsr"]["tap_masks"])))
        cells = np.zeros((macro_rows, macro_cols), dtype=np.int64)
        for r, col in itertools.product(range(macro_rows), range(macro_cols)):
            out, inp = ct * slots + col // 8, rt * macro_rows + r
            if out < layer.rows and inp < layer.cols:
                cells[r, col] = ((int(layer.w[out, inp]) & 0xFF) >> (col % 8)) & 1
        return list(kept), cells

    def _elements_kept_cell(self, layer: _Layer):
        for rt, ct, seed, k in self._tiles(layer):
            kept, cells = self._cells(layer, rt, ct, seed, k)
            for r in kept:
                for col in range(cells.shape[1]):
                    yield {"rt": rt, "ct": ct, "r": r, "col": col, "bit": int(cells[r, col])}

    def _elements_group_column(self, layer: _Layer):
        rows = self.params["rows"]
        for rt, ct, seed, k in self._tiles(layer):
            kept, cells = self._cells(layer, rt, ct, seed, k)
            for g in range(self.derived["groups"]):
                members = [r for r in kept if g * rows <= r < (g + 1) * rows]
                for col in range(cells.shape[1]):
                    yield {"rt": rt, "ct": ct, "g": g, "col": col,
                           "live": int(any(cells[r, col] for r in members))}

    # Streams -----------------------------------------------------------------------------

    def _shape(self, weights: dict) -> dict:
        return _Layer(weights, self.layer_names).variables

    def act_payloads(self, weights: dict, x: np.ndarray) -> list[int]:
        """The ``act`` payloads of the int8 inputs ``x`` ``(B, N)``."""
        variables = list(self._shape(weights).values())
        lanes = self.derived["act_lanes"]
        beats = self.formula("input_beats_per_vector", *variables)
        columns = [[self.formula("input_column", *variables, beat, lane) for lane in range(lanes)]
                   for beat in range(beats)]
        payloads = []
        for vector in np.asarray(x, dtype=np.int64):
            for beat in columns:
                payloads.append(sum((int(vector[col]) & 0xFF) << (8 * lane)
                                    for lane, col in enumerate(beat) if col >= 0))
        return payloads

    def result_lanes_used(self, weights: dict) -> set[int]:
        """The ``res`` lanes that carry a row of the layer in some beat (``result_row``)."""
        variables = list(self._shape(weights).values())
        beats = self.formula("result_beats_per_vector", *variables)
        return {lane for beat in range(beats) for lane in range(self.derived["res_lanes"])
                if self.formula("result_row", *variables, beat, lane) >= 0}

    def result_beats(self, weights: dict, batch: int) -> int:
        """``res`` beats of ``batch`` vectors."""
        return batch * self.formula("result_beats_per_vector", *self._shape(weights).values())

    def results(self, weights: dict, payloads: list[int], batch: int) -> np.ndarray:
        """``res`` payloads -> int64 ``(batch, M)``."""
        variables = list(self._shape(weights).values())
        width, lanes = self.derived["res_width"], self.derived["res_lanes"]
        beats = self.formula("result_beats_per_vector", *variables)
        if len(payloads) != batch * beats:
            raise ValueError(f"expected {batch * beats} result beats, got {len(payloads)}")
        y = np.zeros((batch, variables[0]), dtype=np.int64)
        for index, payload in enumerate(payloads):
            vector, beat = divmod(index, beats)
            for lane in range(lanes):
                row = self.formula("result_row", *variables, beat, lane)
                if row >= 0:
                    raw = (payload >> (width * lane)) & ((1 << width) - 1)
                    y[vector, row] = raw - (1 << width) if raw >> (width - 1) else raw
        return y
