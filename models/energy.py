"""Energy estimates from counted actions: the per-action table and the arithmetic on it.

The table
---------
``energy.json`` beside this module (:data:`TABLE_FILE`) holds, per action, ``value_pj`` (a
number, ``null``, or, with ``parameter``, a mapping from that parameter's value to a number or
``null``), its ``unit``, the ``source`` it is read from and a ``note`` on how it is derived
from the cited figure. Every non-null value has a source; ``null`` means no figure could be
cited, and the note says why. The digital figures are 45 nm (Horowitz, ISSCC 2014), the
compute-in-memory periphery 32 nm (ISAAC, ISCA 2016): nothing is scaled between nodes, so a
mixed sum is an estimate.

The arithmetic
--------------
Each engine's :meth:`~secateur.hdl.engines.base.Layer.counters` counts its *actions* (a
mapping action -> count in the action's unit, e.g. bits for ``sram_bit``) and passes them to
:func:`estimate`::

    energy_pj = sum over actions a with count > 0 of count[a] * value_pj[a]

``energy_breakdown`` holds each term. If an action with a non-zero count has no sourced value
(``null``, or absent from the table), ``energy_pj`` is ``None`` and the action is listed in
``energy_missing``; the other terms stay in the breakdown.
"""

from __future__ import annotations

import json
import numbers
from collections import Counter
from importlib import resources
from typing import Mapping

from .requant import BIAS_BITS, MULT_BITS, result_width

__all__ = ["TABLE_FILE", "load_table", "action_value", "estimate", "energy_pj",
           "tree_add_bits", "Actions"]

#: The table shipped beside this module.
TABLE_FILE = "energy.json"

_DEFAULT: dict | None = None


def _check_value(action: str, value, where: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)
                              or value < 0):
        raise ValueError(f"energy table action {action} has a non-numeric or negative "
                         f"value_pj{where}: {value!r}")


def load_table(path=None) -> dict:
    """The per-action energy table (default: :data:`TABLE_FILE` beside this module, cached).

    Raises
    ------
    ValueError
        If an action lacks ``value_pj`` or ``unit``, a value is not a non-negative number or
        ``null``, a parameterized value is not a mapping, or a non-null value has no
        ``source``.
    """
    global _DEFAULT
    if path is None and _DEFAULT is not None:
        return _DEFAULT
    if path is None:
        text = resources.files(__package__).joinpath(TABLE_FILE).read_text()
    else:
        with open(path) as handle:
            text = handle.read()
    table = json.loads(text)
    for action, entry in table.get("actions", {}).items():
        if "value_pj" not in entry:
            raise ValueError(f"energy table action {action} has no value_pj")
        if not entry.get("unit"):
            raise ValueError(f"energy table action {action} has no unit")
        value = entry["value_pj"]
        if "parameter" in entry:
            if not isinstance(value, Mapping):
                raise ValueError(f"energy table action {action} is parameterized by "
                                 f"{entry['parameter']}: value_pj must map its values to pJ")
            for key, item in value.items():
                _check_value(action, item, f"[{key}]")
            sourced = any(item is not None for item in value.values())
        else:
            _check_value(action, value, "")
            sourced = value is not None
        if sourced and not entry.get("source"):
            raise ValueError(f"energy table action {action} has a value but no source")
    if path is None:
        _DEFAULT = table
    return table


def action_value(table: Mapping, action: str, params: Mapping | None = None) -> float | None:
    """The sourced pJ per unit of ``action`` (``None`` if unsourced or not in the table).

    A parameterized action reads its parameter from ``params``.

    Raises
    ------
    KeyError
        If a parameterized action's parameter is missing from ``params``.
    """
    entry = table["actions"].get(action)
    if entry is None:
        return None
    value = entry["value_pj"]
    if "parameter" in entry:
        name = entry["parameter"]
        if params is None or name not in params:
            raise KeyError(f"energy of {action} depends on {name}, which was not given")
        value = value.get(str(params[name]))
    return None if value is None else float(value)


def estimate(actions: Mapping[str, int], params: Mapping | None = None,
             table: Mapping | None = None) -> dict:
    """The energy fields of a report for counted ``actions``.

    Parameters
    ----------
    actions : mapping
        Action -> count, in the unit of the table's entry.
    params : mapping, optional
        Values of the parameters that parameterized actions depend on (e.g. ``adc_bits``).
    table : mapping, optional
        Default: :func:`load_table`.

    Returns
    -------
    dict
        ``energy_pj`` (float, or ``None`` if an action that occurred has no sourced figure),
        ``energy_breakdown`` (action -> pJ, ``None`` for the unsourced ones),
        ``energy_missing`` (the unsourced actions that occurred, sorted) and
        ``energy_actions`` (the non-zero counts).
    """
    table = load_table() if table is None else table
    breakdown, missing, counted = {}, [], {}
    for action in sorted(actions):
        count = actions[action]
        if not count:
            continue
        counted[action] = int(count) if float(count).is_integer() else float(count)
        value = action_value(table, action, params)
        if value is None:
            missing.append(action)
            breakdown[action] = None
        else:
            breakdown[action] = count * value
    total = None if missing else float(sum(breakdown.values()))
    return {"energy_pj": total, "energy_breakdown": breakdown, "energy_missing": missing,
            "energy_actions": counted}


def energy_pj(actions: Mapping[str, int], params: Mapping | None = None,
              table: Mapping | None = None) -> tuple[float | None, list]:
    """``(energy_pj, energy_missing)`` of :func:`estimate`."""
    result = estimate(actions, params, table)
    return result["energy_pj"], result["energy_missing"]


def tree_add_bits(operands: int, width: int) -> int:
    """Adder bits of one pass through a pairwise adder tree of ``operands`` signed
    ``width``-bit inputs (:class:`~secateur.hdl.adder_tree.AdderTree`): level ``l`` (1-based)
    has ``floor(n_l / 2)`` adders of ``width + l`` bits, an odd operand passing to the next
    level, so ``operands - 1`` additions in all."""
    bits, level, count = 0, 0, operands
    while count > 1:
        level += 1
        bits += (count // 2) * (width + level)
        count = count // 2 + count % 2
    return bits


class Actions(Counter):
    """Action counts with the compound actions every engine shares."""

    def accumulate(self, count: int, width: int) -> "Actions":
        """``count`` accumulator updates of ``width`` bits: an add and a register write each."""
        self["add_bit"] += count * width
        self["register_bit"] += count * width
        return self

    def requantize(self, outputs: int, acc_width: int) -> "Actions":
        """``outputs`` requantized lanes (:mod:`secateur.models.requant`): the multiplier read
        (``MULT_BITS`` SRAM bits), ``acc * mult`` (one 32-bit multiply) and the rounding add
        at the product's width."""
        self["sram_bit"] += outputs * MULT_BITS
        self["int32_mult"] += outputs
        self["add_bit"] += outputs * (acc_width + MULT_BITS)
        return self

    def result_path(self, outputs: int, acc_width: int, requant, bias) -> "Actions":
        """``outputs`` lanes through the result path (:mod:`secateur.models.requant`): with a
        bias, its read (``BIAS_BITS`` SRAM bits) and the add ``acc + bias``; with a
        requantizer, :meth:`requantize` (at the sum's width when there is a bias)."""
        width = acc_width
        if bias is not None:
            width = result_width(acc_width)
            self["sram_bit"] += outputs * BIAS_BITS
            self["add_bit"] += outputs * width
        if requant is not None:
            self.requantize(outputs, width)
        return self
