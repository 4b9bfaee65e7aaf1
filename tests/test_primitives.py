"""Unit tests of the shared primitives that need no HDL simulator: parameter validation
(messages asserted), derived widths, and combinational adder trees in Amaranth's simulator."""

import itertools
import random

import pytest
from amaranth.hdl import unsigned
from amaranth.sim import Simulator

from secateur.hdl.adder_tree import AdderTree, adder_tree_output_width
from secateur.hdl.loadmap import LoadMap, Region
from secateur.hdl.requant import Requantizer
from secateur.hdl.stream import StreamRegister


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(fan_in=0, input_width=8), ValueError, "AdderTree fan_in must be >= 1, not 0"),
    (dict(fan_in=4, input_width=0), ValueError, "AdderTree input_width must be >= 1, not 0"),
    (dict(fan_in=4, input_width=8, stages=3), ValueError,
     r"AdderTree stages must be in \[0, 2\] for fan_in 4, not 3"),
    (dict(fan_in=4.0, input_width=8), TypeError, "AdderTree fan_in must be an integer, not 4.0"),
    (dict(fan_in=4, input_width=8, tag_shape="x"), TypeError, "AdderTree tag_shape must be shape-castable"),
])
def test_adder_tree_validation(kwargs, error, message):
    with pytest.raises(error, match=message):
        AdderTree(**kwargs)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(lanes=0, acc_width=16), ValueError, "Requantizer lanes must be >= 1, not 0"),
    (dict(lanes=1, acc_width=7), ValueError, r"Requantizer acc_width must be in \[8, 64\], not 7"),
    (dict(lanes=True, acc_width=16), TypeError, "Requantizer lanes must be an integer"),
])
def test_requantizer_validation(kwargs, error, message):
    with pytest.raises(error, match=message):
        Requantizer(**kwargs)


def test_stream_register_validation():
    with pytest.raises(TypeError, match="StreamRegister payload_shape must be shape-castable"):
        StreamRegister("wide")


@pytest.mark.parametrize("fan_in, width", [(1, 1), (2, 8), (3, 9), (64, 9), (65, 4)])
def test_adder_tree_width_cannot_overflow(fan_in, width):
    output = adder_tree_output_width(fan_in, width)
    low, high = -(1 << (width - 1)), (1 << (width - 1)) - 1
    assert -(1 << (output - 1)) <= fan_in * low and fan_in * high <= (1 << (output - 1)) - 1


def test_register_placement_spreads_stages():
    tree = AdderTree(fan_in=64, input_width=9, stages=3)
    assert tree.register_after_levels() == [2, 4, 6]
    assert AdderTree(fan_in=5, input_width=9, stages=2).register_after_levels() == [2, 3]


@pytest.mark.parametrize("fan_in, width", [(1, 8), (2, 9), (5, 3), (7, 4)])
def test_combinational_adder_tree_is_exact(fan_in, width, seed):
    tree = AdderTree(fan_in=fan_in, input_width=width, stages=0, tag_shape=unsigned(2))
    rng = random.Random(seed)
    low, high = -(1 << (width - 1)), (1 << (width - 1)) - 1
    vectors = [[low] * fan_in, [high] * fan_in] + \
        [[rng.randint(low, high) for _ in range(fan_in)] for _ in range(100)]

    async def bench(ctx):
        for vector in vectors:
            for lane, value in enumerate(vector):
                ctx.set(tree.i.payload.operands[lane], value)
            ctx.set(tree.i.payload.tag, 2)
            ctx.set(tree.i.valid, 1)
            ctx.set(tree.o.ready, 0)
            assert ctx.get(tree.o.payload.sum) == sum(vector), f"seed {seed}: {vector}"
            assert ctx.get(tree.o.payload.tag) == 2 and ctx.get(tree.o.valid) == 1
            assert ctx.get(tree.i.ready) == 0

    simulator = Simulator(tree)
    simulator.add_testbench(bench)
    simulator.run()


def test_load_map_encodes_fields_and_rejects_out_of_range():
    load_map = LoadMap([Region("config", [("register", 3)]),
                        Region("weights", [("tile", 5), ("pe", 3), ("chunk", 1)])])
    assert load_map.addr_width == 1 + 3 + 2 + 1
    assert load_map.address("weights", tile=4, pe=2, chunk=0) == (1 << 6) | (4 << 3) | (2 << 1)
    with pytest.raises(ValueError, match=r"Region weights field pe must be in \[0, 2\], not 3"):
        load_map.address("weights", tile=0, pe=3, chunk=0)
    with pytest.raises(ValueError, match="Region config needs field register"):
        load_map.address("config")
    with pytest.raises(ValueError, match="unique names"):
        LoadMap([Region("a", []), Region("a", [])])
