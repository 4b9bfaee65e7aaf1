"""Submodules that are written once as a Verilog module and instantiated many times.

Amaranth elaborates every instance of a component on its own and writes each as a module of
its own (``\\dense_engine.pe0`` ... ``\\dense_engine.pe31``), even when all are the same
hardware. The PE array of a PE=32 engine was therefore elaborated, converted and written 32
times: most of ``secateur rtl``'s time, and 32 copies of one text for every tool after it to
parse (4 of the dense engine's 4.0 MB of Verilog were PE copies).

A :class:`SharedModule` names a component that the generator builds once and writes once, as
the Verilog module :attr:`~SharedModule.name`; the engine places it with
:meth:`SharedModule.instantiate`, an ``Instance`` whose ports are the component's signature
flattened as Amaranth names a converted component's ports (``i__payload``, ``write``). The
instance returns an interface with the component's members, so the code around it reads as
if the component itself were a submodule.

:func:`instantiate` is the same for any Verilog module whose ports follow a signature: the CIM
engine places its macro black box with it.
"""

from __future__ import annotations

from collections.abc import Callable

from amaranth.hdl import ClockSignal, Instance, Module, ResetSignal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In

__all__ = ["SharedModule", "instantiate"]


def instantiate(m: Module, *, name: str, module: str, signature: wiring.Signature):
    """Add an instance of the Verilog module ``module`` to ``m`` as submodule ``name``, in the
    ``sync`` domain, with the ports of ``signature`` (seen from the module: an ``In`` member
    is an input of ``module``).

    Returns
    -------
    The other side of the ports: an interface with ``signature``'s members, whose signals
    the parent drives (``In`` members) and reads (``Out`` members).
    """
    port = signature.create(path=(name,))
    connections = {}
    for path, member, value in signature.flatten(port):
        direction = "i" if member.flow == In else "o"
        connections[f"{direction}_{'__'.join(map(str, path))}"] = Value.cast(value)
    m.submodules[name] = Instance(module, i_clk=ClockSignal(), i_rst=ResetSignal(),
                                  **connections)
    return port


class SharedModule:
    """A component written once as the Verilog module ``name`` and instantiated by name.

    Parameters
    ----------
    name : str
        The Verilog module's name: ``<top>_<role>``, unique in the engine's Verilog.
    build : callable
        Returns the component (a ``wiring.Component``) with the ``sync`` domain only; every
        call builds the same hardware.

    Raises
    ------
    TypeError
        If ``name`` is not a string or ``build`` does not return a ``wiring.Component``.
    """

    def __init__(self, name: str, build: Callable[[], wiring.Component]):
        if not isinstance(name, str):
            raise TypeError(f"SharedModule name must be a string, not {name!r}")
        prototype = build()
        if not isinstance(prototype, wiring.Component):
            raise TypeError(f"SharedModule build must return a wiring.Component, not "
                            f"{prototype!r}")
        # Built for its signature only: tell Amaranth's unused-elaboratable check so.
        prototype._MustUse__used = True
        self._name = name
        self._build = build
        self._signature = prototype.signature

    @property
    def name(self) -> str:
        return self._name

    @property
    def signature(self) -> wiring.Signature:
        return self._signature

    def component(self) -> wiring.Component:
        """A new copy of the component: what the generator converts into the module."""
        return self._build()

    def instantiate(self, m: Module, name: str):
        """Add an instance named ``name`` to ``m``; returns its members (see
        :func:`instantiate`)."""
        return instantiate(m, name=name, module=self._name, signature=self._signature)
