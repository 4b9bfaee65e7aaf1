"""The latency the manifest promises (``format.latency``, the formula
``first_result_latency``) against the performance model, which ``tests/test_perf.py`` and every
engine testbench (:meth:`~secateur.verif.engine_bench.EngineBench.check_time`) hold to the RTL.

The formula is evaluated as an integrator would, from the manifest alone
(:class:`~secateur.verif.bundle_host.BundleHost`), on random engine configurations of every
engine (:mod:`secateur.verif.random_params`), random layers and single vectors, with the
first input offered at once after the load and after a gap.
"""

import numpy as np
import pytest

from secateur.gen.formats import LATENCY_DOC, describe, latency_variables
from secateur.gen.registry import engine_names
from secateur.gen.rtl import manifest
from secateur.models import perf
from secateur.verif.bundle_host import BundleHost
from secateur.verif.random_params import draw_engine, draw_layer

#: Random engine configurations per engine, and layers per configuration.
ENGINES, LAYERS = 6, 8
#: Gaps between the last load beat and the first act beat: at once, inside lfsr's settling,
#: and long after.
GAPS = (0, 1, 2, 3, 7, 40)


def _host(engine) -> BundleHost:
    return BundleHost({"format": describe(engine), "load_map": engine.load_map.describe(),
                       "params": engine.params, "derived": engine.derived()})


@pytest.mark.parametrize("name", engine_names())
def test_first_result_latency_formula_equals_the_model(name, seed):
    rng = np.random.default_rng(seed)
    for draw in range(ENGINES):
        engine = draw_engine(name, seed + draw)
        host = _host(engine)
        for _ in range(LAYERS):
            layer = engine.layer(draw_layer(engine, rng))
            zeros = rng.random((1, layer.cols)) < rng.choice([0.0, 0.5, 1.0])
            x = np.where(zeros, 0, rng.integers(-128, 128, (1, layer.cols))).astype(np.int8)
            for gap in GAPS:
                model = perf.timeline(layer, x, gap=gap).first_result_latency
                variables = latency_variables(layer, x, gap)
                formula = host.formula("first_result_latency", *variables.values())
                assert formula == model, (
                    f"{name} {engine.params}, layer {layer.rows}x{layer.cols}, {variables}: "
                    f"the manifest's formula says {formula}, the model {model} (seed {seed})")
                assert formula >= engine.latency


@pytest.mark.parametrize("name", engine_names())
def test_the_manifest_documents_the_latency(name):
    engine = draw_engine(name, 0)
    described = manifest(engine, "", engine.component())
    latency = described["format"]["latency"]
    assert latency["formula"] == "first_result_latency"
    assert latency["doc"] == LATENCY_DOC
    formula = described["format"]["formulas"]["first_result_latency"]
    assert formula["args"] == list(described["format"]["layer"]) + list(latency["variables"])
    assert described["format"]["constants"]["latency"]["value"] == described["latency"]
    assert "first_result_latency" in described["latency_doc"]


def test_a_negative_gap_is_refused():
    engine = draw_engine("dense", 0)
    layer = engine.layer(draw_layer(engine, np.random.default_rng(0)))
    with pytest.raises(ValueError, match=r"^gap must be an integer >= 0, not -1$"):
        perf.timeline(layer, np.zeros((1, layer.cols), dtype=np.int8), gap=-1)
