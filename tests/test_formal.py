"""Formal equivalence of the adder tree and the requantizer with their specifications, for all
inputs at small widths (Yosys SAT), and proof that the miters can fail."""

import re

import pytest

from secateur.gen.synth import YosysError
from secateur.verif import formal


@pytest.mark.parametrize("fan_in, input_width, stages", [(1, 4, 1), (3, 4, 0), (4, 4, 1), (5, 3, 2),
                                                         (7, 2, 3)])
def test_adder_tree_equals_its_sum_for_all_inputs(fan_in, input_width, stages):
    assert "SUCCESS" in formal.prove_adder_tree(fan_in, input_width, stages)


def test_requantizer_equals_the_formula_for_all_inputs():
    """One partial product at this width; the cut into several (accumulators wider than
    17 bits) is checked by the simulation testbench at widths 21 and 40, because SAT proofs
    of a multiply cut into pieces did not finish in 10 minutes."""
    assert "SUCCESS" in formal.prove_requantizer(acc_width=8)


def test_a_wrong_specification_is_refused():
    dut, miter, cycles = formal.adder_tree_miter(3, 4, 1)
    with pytest.raises(YosysError):
        formal.prove(dut, miter.replace(" + $signed", " - $signed", 1), cycles)
    dut, miter, cycles = formal.requantizer_miter(8)
    without_rounding = re.sub(r"\((\d+)'sd1 <<< \(shift - 1\)\)", r"\1'sd0", miter)
    assert without_rounding != miter
    with pytest.raises(YosysError):
        formal.prove(dut, without_rounding, cycles)
