"""The engine registry: one line per engine. Everything else finds engines here.

An engine named ``E`` is three modules: ``secateur.hdl.engines.E`` (generator and hardware),
``secateur.models.E`` (golden model) and ``secateur.verif.tb_E`` (cocotb testbench).
"""

from __future__ import annotations

import importlib

from ..hdl.engines.base import Engine

__all__ = ["ENGINES", "engine_names", "engine_class", "make_engine"]

#: Engine name -> ``module:class`` of its :class:`~secateur.hdl.engines.base.Engine`.
ENGINES = {
    "ternary": "secateur.hdl.engines.ternary:TernaryEngine",
    "permdiag": "secateur.hdl.engines.permdiag:PermDiagEngine",
    "lfsr": "secateur.hdl.engines.lfsr:LFSREngine",
    "cim": "secateur.hdl.engines.cim:CIMEngine",
    "dense": "secateur.hdl.engines.dense:DenseEngine",
}


def engine_names() -> list[str]:
    return list(ENGINES)


def engine_class(name: str) -> type[Engine]:
    """Raises
    ------
    ValueError
        If no engine has that name.
    """
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; engines are {', '.join(ENGINES)}")
    module_name, class_name = ENGINES[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def make_engine(name: str, **settings) -> Engine:
    """The engine ``name`` with validated parameters (``pe`` and any ``--set`` values)."""
    return engine_class(name)(**settings)
