"""Shared modules (:mod:`secateur.hdl.shared`): written once, instantiated by name.

Every engine's regression runs its PE array through them, bit-exact; these tests pin the
mechanism: one module in the Verilog, instances whose port names the module has, and the
refusals."""

import re

import pytest
from amaranth.back import verilog
from amaranth.hdl import Module, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from secateur.gen import synth
from secateur.hdl.shared import SharedModule
from secateur.hdl.stream import Signature, StreamRegister


class _Chain(wiring.Component):
    """Two register slices in a row, both instances of one shared module."""

    def __init__(self, stage: SharedModule):
        self._stage = stage
        super().__init__({"i": In(Signature(unsigned(5))), "o": Out(Signature(unsigned(5)))})

    def elaborate(self, platform):
        m = Module()
        first, second = (self._stage.instantiate(m, f"stage{index}") for index in range(2))
        wiring.connect(m, wiring.flipped(self.i), first.i)
        wiring.connect(m, first.o, second.i)
        wiring.connect(m, second.o, wiring.flipped(self.o))
        return m


def test_instances_share_one_module_with_their_ports(tmp_path):
    stage = SharedModule("chain_stage", lambda: StreamRegister(unsigned(5)))
    text = (verilog.convert(_Chain(stage), name="chain", emit_src=False)
            + verilog.convert(stage.component(), name=stage.name, emit_src=False))
    assert re.findall(r"^module (\w+)", text, flags=re.M) == ["chain", "chain_stage"]
    assert re.findall(r"^\s*chain_stage\s+(\S+)\s*\(", text, flags=re.M) == ["stage0", "stage1"]
    path = tmp_path / "chain.v"
    path.write_text(text)
    synth.check(path, "chain")      # hierarchy -check: every connected port exists


def test_shared_module_validates():
    with pytest.raises(TypeError, match=r"^SharedModule name must be a string, not 3$"):
        SharedModule(3, lambda: StreamRegister(unsigned(5)))
    with pytest.raises(TypeError, match=r"^SharedModule build must return a wiring.Component, "
                                        r"not 'pe'$"):
        SharedModule("top_pe", lambda: "pe")
