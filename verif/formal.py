"""Formal proofs, with Yosys' SAT solver, that the adder tree and the requantizer equal their
specification for *every* input at small widths.

Each proof wraps the generated Verilog in a miter that computes the specification in plain
Verilog (wide signed arithmetic, the formula of :mod:`secateur.models.requant` for the
requantizer), delays it by the DUT's latency, and asserts equality. ``sat -seq N
-set-init-zero -prove-asserts`` then checks all input sequences of ``N`` cycles from reset.
Both DUTs are pure pipelines (their state is only the last ``latency`` beats), so ``N =
latency + 2`` cycles cover every input value at every pipeline position.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import unsigned

from ..gen.synth import run_yosys
from ..hdl.adder_tree import AdderTree
from ..hdl.requant import Requantizer
from ..models.requant import MULT_BITS, SHIFT_MAX

__all__ = ["prove", "prove_adder_tree", "adder_tree_miter", "prove_requantizer", "requantizer_miter"]


def prove(dut_verilog: str, miter: str, cycles: int) -> str:
    """Prove every assertion of ``miter`` (module ``miter``) around ``dut_verilog``."""
    return _prove(dut_verilog, miter, cycles)


def _prove(dut_verilog: str, miter: str, cycles: int) -> str:
    with tempfile.TemporaryDirectory(prefix="secateur-formal.") as work:
        work = Path(work)
        (work / "miter.sv").write_text(miter)
        design = work / "dut.v"
        design.write_text(dut_verilog)
        return run_yosys("read_verilog -formal miter.sv\nread_verilog design.v\n"
                         "prep -top miter\nflatten\nopt\nchformal -lower\n"
                         f"sat -verify -prove-asserts -set-init-zero -seq {cycles} -timeout 600\n",
                         work, design)


_DELAY_AND_ASSERT = """
  reg [7:0] cycle = 0;
  reg [{width}-1:0] expected_q [0:{latency}];
  integer k;
  always @(posedge clk) begin
    cycle <= cycle + 1;
    expected_q[0] <= expected;
    for (k = 1; k <= {latency}; k = k + 1) expected_q[k] <= expected_q[k - 1];
  end
  wire [{width}-1:0] expected_now = {latency} == 0 ? expected : expected_q[{latency} - 1];
  always @* if (cycle >= {first_check}) assert (actual == expected_now);
"""


def prove_adder_tree(fan_in: int, input_width: int, stages: int) -> str:
    """Prove ``sum == operands[0] + ... + operands[fan_in - 1]`` for all operands.

    Raises
    ------
    YosysError
        If the proof fails (with the counterexample in the log).
    """
    return _prove(*adder_tree_miter(fan_in, input_width, stages))


def adder_tree_miter(fan_in: int, input_width: int, stages: int) -> tuple[str, str, int]:
    """The DUT's Verilog, the miter and the proof depth of :func:`prove_adder_tree`."""
    tree = AdderTree(fan_in=fan_in, input_width=input_width, stages=stages, tag_shape=unsigned(1))
    width, out = input_width * fan_in, tree.output_width
    terms = " + ".join(f"$signed({{{{{out - input_width}{{operands[{(k + 1) * input_width - 1}]}}}}, "
                       f"operands[{(k + 1) * input_width - 1}:{k * input_width}]}})"
                       for k in range(fan_in))
    clocked = stages > 0
    miter = f"""
module miter(input clk, input [{width}-1:0] operands);
  wire [{out}:0] payload;
  adder_tree dut ({".clk(clk), .rst(1'b0), " if clocked else ""}.i__payload({{1'b0, operands}}),
                  .i__valid(1'b1), .o__ready(1'b1), .o__payload(payload));
  wire [{out}-1:0] actual = payload[{out}-1:0];
  wire [{out}-1:0] expected = {terms};
{_DELAY_AND_ASSERT.format(width=out, latency=stages, first_check=stages)}
endmodule
"""
    return verilog.convert(tree, name="adder_tree", emit_src=False), miter, stages + 2


def prove_requantizer(acc_width: int = 8, chunk_width: int = 17) -> str:
    """Prove the requantizer equal to ``y = sat8(relu?((acc*mult + 2^(shift-1)) >> shift))``
    (or ``acc`` when disabled) for every accumulator, multiplier, shift, relu and enable;
    a ``chunk_width`` below ``acc_width`` proves the multiply cut into partial products.

    Raises
    ------
    YosysError
        If the proof fails (with the counterexample in the log).
    """
    return _prove(*requantizer_miter(acc_width, chunk_width))


def requantizer_miter(acc_width: int = 8, chunk_width: int = 17) -> tuple[str, str, int]:
    """The DUT's Verilog, the miter and the proof depth of :func:`prove_requantizer`."""
    requantizer = Requantizer(lanes=1, acc_width=acc_width, chunk_width=chunk_width)
    latency = requantizer.latency
    # Wide enough for the exact product and the rounding term; no wider, since every cycle
    # of the proof holds a multiplier of this width.
    spec_width = max(acc_width + MULT_BITS, SHIFT_MAX) + 2
    miter = f"""
module miter(input clk, input [{acc_width}-1:0] acc, input [{MULT_BITS}-1:0] mult,
             input [5:0] shift_in, input relu_in, input enable_in);
  // Settings are held while beats flow (the requantizer's contract): latch them once.
  // Every register has an initial value: `opt` may otherwise replace a register without one
  // by a constant (its initial value is free), which makes a proof vacuous.
  reg started = 0;
  reg [5:0] shift = 0;
  reg relu = 0, enable = 0;
  always @(posedge clk) begin
    started <= 1'b1;
    if (!started) begin shift <= shift_in > {SHIFT_MAX} ? {SHIFT_MAX} : shift_in; relu <= relu_in; enable <= enable_in; end
  end
  wire [{acc_width}-1:0] actual;
  requantizer dut (.clk(clk), .rst(1'b0), .i__payload({{mult, acc}}), .i__valid(started),
                   .o__ready(1'b1), .o__payload(actual), .enable(enable), .relu(relu), .shift(shift));
  // The operands are registered as the DUT's first stage registers them, and the exact
  // product has the width of the DUT's partial product (one piece at these widths): `opt`
  // then merges the register copies and the two multipliers into one cell, so the multiply
  // is equal by construction, and SAT proves everything around it. Two different multiplier
  // circuits are beyond it (the proof ran for over 10 minutes).
  reg [{acc_width}-1:0] acc_q = 0;
  reg [{MULT_BITS}-1:0] mult_q = 0;
  always @(posedge clk) begin acc_q <= acc; mult_q <= mult; end
  wire signed [{acc_width + MULT_BITS}-1:0] exact_product = $signed(acc_q) * $signed(mult_q);
  wire signed [{spec_width}-1:0] product = exact_product;
  wire signed [{spec_width}-1:0] rounding = shift == 0 ? {spec_width}'sd0 : ({spec_width}'sd1 <<< (shift - 1));
  wire signed [{spec_width}-1:0] shifted = (product + rounding) >>> shift;
  wire signed [{spec_width}-1:0] rectified = (relu && shifted < 0) ? {spec_width}'sd0 : shifted;
  wire signed [{spec_width}-1:0] saturated = rectified > 127 ? {spec_width}'sd127 : (rectified < -128 ? -{spec_width}'sd128 : rectified);
  wire [{acc_width}-1:0] expected = enable ? saturated[{acc_width}-1:0] : acc_q;
{_DELAY_AND_ASSERT.format(width=acc_width, latency=latency - 1, first_check=latency + 1)}
endmodule
"""
    return verilog.convert(requantizer, name="requantizer", emit_src=False), miter, latency + 3
