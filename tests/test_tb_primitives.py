"""The shared primitives' cocotb testbenches, swept over their parameters under Verilator."""

import pytest
from conftest import in_make_test
from amaranth.back import verilog
from amaranth.hdl import unsigned

from secateur.hdl.adder_tree import AdderTree
from secateur.hdl.requant import Requantizer
from secateur.hdl.stream import StreamRegister
from secateur.verif.launch import run_testbench


def _verilog(component, name):
    return verilog.convert(component, name=name, emit_src=False)


@pytest.mark.sim
@pytest.mark.parametrize("fan_in, input_width, stages, tag_width, pause", in_make_test([
    (1, 4, 1, 3, 0.3), (2, 9, 1, 0, 0.0), (5, 9, 2, 2, 0.4),
    (7, 3, 3, 1, 0.5), (64, 9, 6, 4, 0.3), (33, 16, 3, 0, 0.2),
], {2}, unpack=True))
def test_adder_tree(fan_in, input_width, stages, tag_width, pause, seed):
    tree = AdderTree(fan_in=fan_in, input_width=input_width, stages=stages,
                     tag_shape=unsigned(tag_width))
    run_testbench(verilog=_verilog(tree, "adder_tree"), toplevel="adder_tree",
                  test_module="secateur.verif.tb_adder_tree",
                  config=dict(fan_in=fan_in, input_width=input_width, stages=stages,
                              tag_width=tag_width, output_width=tree.output_width, seed=seed,
                              pause=pause), seed=seed)


@pytest.mark.sim
@pytest.mark.parametrize("lanes, acc_width, pause",
                         in_make_test([(1, 8, 0.0), (3, 21, 0.4), (2, 40, 0.2)], {1}, unpack=True))
def test_requantizer(lanes, acc_width, pause, seed):
    run_testbench(verilog=_verilog(Requantizer(lanes=lanes, acc_width=acc_width), "requantizer"),
                  toplevel="requantizer", test_module="secateur.verif.tb_requant",
                  config=dict(lanes=lanes, acc_width=acc_width, seed=seed, pause=pause),
                  seed=seed)


@pytest.mark.sim
@pytest.mark.parametrize("width, pause", in_make_test([(1, 0.5), (37, 0.3)], {1}, unpack=True))
def test_stream_register(width, pause, seed):
    run_testbench(verilog=_verilog(StreamRegister(unsigned(width)), "stream_register"),
                  toplevel="stream_register", test_module="secateur.verif.tb_stream_register",
                  config=dict(width=width, seed=seed, pause=pause), seed=seed)
