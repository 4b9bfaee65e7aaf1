"""The cocotbext-axi drivers of an engine's AXI4 wrapper (:mod:`secateur.hdl.axi`), set up
once for the testbenches that drive one (:mod:`secateur.verif.tb_axi`,
:mod:`secateur.verif.tb_bundle`): the clock on ``aclk``, an ``AxiLiteMaster`` on
``s_axi_ctrl``, ``AxiStreamSource`` on ``s_axis_load`` and ``s_axis_act``, ``AxiStreamSink``
on ``m_axis_res`` (one beat per transfer: ``byte_lanes=1``), all reset by ``aresetn`` and
every channel pausing at random."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

import cocotb
from cocotb.clock import Clock
from cocotbext.axi import (AxiLiteBus, AxiLiteMaster, AxiStreamBus, AxiStreamSink,
                           AxiStreamSource)

from .streams import pauses

__all__ = ["AXIDrivers", "start_axi_drivers"]


@dataclass(frozen=True)
class AXIDrivers:
    ctrl: AxiLiteMaster
    load: AxiStreamSource
    act: AxiStreamSource
    res: AxiStreamSink


def start_axi_drivers(dut, pause: float, rng: random.Random) -> AXIDrivers:
    """Start ``dut``'s clock and its drivers; each channel (every AXI4-Lite channel
    included) pauses with probability ``pause`` per cycle, drawn from ``rng``."""
    for name in ("cocotb.aclk", "cocotb"):
        logging.getLogger(name).setLevel(logging.WARNING)
    cocotb.start_soon(Clock(dut.aclk, 10, unit="ns").start())
    reset = dict(reset=dut.aresetn, reset_active_level=False)
    drivers = AXIDrivers(
        ctrl=AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axi_ctrl"), dut.aclk, **reset),
        load=AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis_load"), dut.aclk,
                             byte_lanes=1, **reset),
        act=AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis_act"), dut.aclk,
                            byte_lanes=1, **reset),
        res=AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis_res"), dut.aclk,
                          byte_lanes=1, **reset))
    ctrl = drivers.ctrl
    for channel in (drivers.load, drivers.act, drivers.res, ctrl.write_if.aw_channel,
                    ctrl.write_if.w_channel, ctrl.write_if.b_channel,
                    ctrl.read_if.ar_channel, ctrl.read_if.r_channel):
        channel.set_pause_generator(pauses(rng, pause))
    return drivers
