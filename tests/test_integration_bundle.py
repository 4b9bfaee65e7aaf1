"""The export bundle alone drives every engine (issue 18, sections 1 and 6).

* The manifest's ``format`` against the engine's Python ``Layer``, which is the definition,
  over random legal layers of several configurations per engine: beats per vector, the lane
  maps of ``act`` and ``res`` in both directions, and every load beat, as
  :class:`~secateur.verif.bundle_host.BundleHost` builds them from the manifest's formulas and
  the element rules of the guide.
* The C header's format functions against the manifest's formulas, and its LFSR against
  :mod:`secateur.models.lfsr` (gcc ``-std=c99 -Wall -Wextra -Werror -pedantic``).
* The exported Verilog under Verilator, driven by ``verif/tb_bundle.py`` from the bundle alone
  (load beats shuffled, pauses on every stream, layers one after the other), bit-exact against
  numpy.
"""

import json

import numpy as np
import pytest
from test_export import _compiler, _run_checks  # the header checks of test_export.py

from secateur.gen.export import export_bundle, header_text
from secateur.gen.formats import guide_path
from secateur.gen.registry import make_engine
from secateur.gen.rtl import manifest
from secateur.hdl.engines.base import pack_lanes
from secateur.models import lfsr as lfsr_model
from secateur.verif.bundle_host import BundleHost
from secateur.verif.launch import run_testbench
from secateur.verif.random_params import describe, draw_engine, draw_layer

#: Configurations whose formats are checked without elaborating: odd sizes, several chunks
#: per word (dense fan_in 9, ternary fan_in 20), both LFSR index sources, permdiag with one,
#: two and three slots and packed drains, CIM with and without the twofold row mask.
SWEEP = [
    ("dense", dict(pe=2, fan_in=5, max_rows=5, max_cols=12)),
    ("dense", dict(pe=3, fan_in=9, max_rows=11, max_cols=40)),
    ("ternary", dict(pe=2, fan_in=3, max_rows=5, max_cols=10)),
    ("ternary", dict(pe=3, fan_in=20, max_rows=10, max_cols=70)),
    ("lfsr", dict(pe=2, max_rows=5, max_cols=13, act_lanes=2)),
    ("lfsr", dict(pe=3, index="csr", max_rows=11, max_cols=45, weight_depth=180, act_lanes=4)),
    ("permdiag", dict(pe=4, max_rows=48, max_cols=64)),
    ("permdiag", dict(pe=3, mults=2, slots=3, max_rows=24, max_cols=36, min_p=2, max_p=12,
                      drain_pack=2)),
    ("permdiag", dict(pe=4, mults=3, slots=2, max_rows=32, max_cols=64, min_p=2, max_p=32,
                      act_per_slot=2, drain_pack=4)),
    ("cim", dict(pe=2, macro_rows=12, macro_cols=24, adcs=1, rows=2, adc_bits=2, act_lanes=3)),
    ("cim", dict(pe=3, macro_rows=16, macro_cols=16, adcs=4, rows=4, adc_bits=2,
                 act_lanes=4, row_mask="lfsr")),
]

#: The simulated configurations: tiny, and each with more than one of everything its format
#: maps (PEs, slots, drain words, macros), so that a wrong rule shows.
SIM = {
    "dense": dict(pe=2, fan_in=5, max_rows=5, max_cols=12),
    "ternary": dict(pe=2, fan_in=3, max_rows=5, max_cols=10),
    "lfsr": dict(pe=2, max_rows=5, max_cols=13, act_lanes=2),
    "permdiag": dict(pe=2, mults=2, slots=2, max_rows=8, max_cols=16, min_p=2, max_p=4,
                     act_per_slot=2, drain_pack=2),
    "cim": dict(pe=2, macro_rows=8, macro_cols=16, adcs=2, rows=2, adc_bits=2, act_lanes=4,
                row_mask="lfsr"),
}


#: And, per engine, parameter sets drawn from the test's seed (verif/random_params.py).
DRAWN = [(name, None) for name in SIM for _ in range(3)]
CASES = SWEEP + DRAWN


def _id(name: str, params: dict) -> str:
    return name + "-" + "-".join(f"{key}{value}" for key, value in params.items())


IDS = [_id(*case) for case in SWEEP] + [f"{name}-drawn{index % 3}"
                                        for index, (name, _) in enumerate(DRAWN)]


def _engine(case, seed: int):
    """The engine of a case and what a failure message says of it."""
    name, params = case
    if params is None:
        return draw_engine(name, seed), describe(name, seed)
    return make_engine(name, **params), f"{name} {params}"


# Random legal layers: the arrays a user has ----------------------------------------------

def _result_keys(rng, rows: int, requant: bool, bias: bool) -> dict:
    keys = {}
    if requant:
        mult = rng.integers(-2**15, 2**15, size=rows) if rng.random() < 0.7 else \
            np.int64(rng.integers(1, 2**15))
        keys.update(mult=mult, shift=np.int64(rng.integers(0, 24)),
                    relu=np.bool_(rng.random() < 0.5))
    if bias:
        keys["bias"] = rng.integers(-2**31, 2**31, size=rows)
    return keys


def random_weights(rng, engine, requant: bool | None = None, bias: bool | None = None) -> dict:
    """A random legal weights dict of ``engine`` (:func:`~secateur.verif.random_params.
    draw_layer`, then some weights set to zero, and for permdiag some whole blocks, whose
    offset is then 0) with, at random unless given, a requantizer and a bias."""
    weights = draw_layer(engine, rng)
    w = weights["w"].copy()
    w[rng.random(w.shape) < 0.2] = 0
    if engine.name == "permdiag":
        p = int(weights["p"])
        blocks = np.repeat(np.repeat(rng.random((w.shape[0] // p, w.shape[1] // p)) < 0.3, p,
                                     axis=0), p, axis=1)
        w[blocks] = 0
    requant = rng.random() < 0.6 if requant is None else requant
    bias = rng.random() < 0.5 if bias is None else bias
    return dict(weights, w=w, **_result_keys(rng, w.shape[0], requant, bias))


def numpy_outputs(weights: dict, x: np.ndarray) -> np.ndarray:
    """What the README says every (lossless) engine computes: ``acc = w @ x`` in int64,
    ``raw = acc + bias``, then ``sat8(relu?((raw * mult + 2^(shift-1)) >> shift))``."""
    y = x.astype(np.int64) @ weights["w"].astype(np.int64).T
    y = y + np.asarray(weights.get("bias", 0), dtype=np.int64)
    if "mult" not in weights:
        return y
    shift = int(weights["shift"])
    y = (y * np.asarray(weights["mult"], dtype=np.int64) + (1 << shift >> 1)) >> shift
    if weights["relu"]:
        y = np.maximum(y, 0)
    return np.clip(y, -128, 127)


def _layer_variables(host: BundleHost, weights: dict) -> list[int]:
    """The values of the format's layer variables (``M``, ``N``, then ``p`` or ``k``)."""
    rows, cols = weights["w"].shape
    return [{"M": rows, "N": cols}[name] if name in ("M", "N") else int(np.asarray(weights[name]))
            for name in host.layer_names]


def _manifest(engine) -> dict:
    """The manifest of ``engine``, as JSON would carry it, without elaborating."""
    return json.loads(json.dumps(manifest(engine, "", engine.component())))


# The manifest's formats against the Layer ------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_manifest_formats_match_the_layer(case, seed):
    engine, config = _engine(case, seed)
    host = BundleHost(_manifest(engine))
    rng = np.random.default_rng(seed)
    for trial in range(6):
        weights = random_weights(rng, engine)
        layer = engine.layer(weights)
        what = f"{config}: seed {seed}, trial {trial}, layer {layer.rows}x{layer.cols}"
        variables = _layer_variables(host, weights)
        assert host.formula("input_beats_per_vector", *variables) == \
            layer.input_beats_per_vector, what
        assert host.formula("result_beats_per_vector", *variables) == \
            layer.result_beats_per_vector, what
        # Every load beat, as a set: the order is free (the simulation loads them shuffled).
        want = layer.load_beats()
        assert len({addr for addr, _ in want}) == len(want), what
        assert dict(host.load_beats(weights)) == dict(want), what
        # act: the column in every lane of every beat.
        x = rng.integers(-128, 128, size=(3, layer.cols)).astype(np.int8)
        assert host.act_payloads(weights, x) == layer.input_beats(x), what
        # res: random lanes read back into rows, as the Layer decodes them.
        width, lanes = engine.res_width, engine.res_lanes
        beats = [pack_lanes(rng.integers(-2**(width - 1), 2**(width - 1), size=lanes), width)
                 for _ in range(3 * layer.result_beats_per_vector)]
        assert np.array_equal(host.results(weights, beats, 3),
                              layer.decode_results(beats, 3)), what
        # The inverse maps: column n and row r go to a beat and lane that hold them.
        for kind, count, beats_per_vector, lane_count, index in (
                ("input", layer.cols, layer.input_beats_per_vector, engine.act_lanes, "column"),
                ("result", layer.rows, layer.result_beats_per_vector, engine.res_lanes, "row")):
            for item in range(count):
                beat = host.formula(f"{kind}_beat", *variables, item)
                lane = host.formula(f"{kind}_lane", *variables, item)
                assert 0 <= beat < beats_per_vector and 0 <= lane < lane_count, what
                assert host.formula(f"{kind}_{index}", *variables, beat, lane) == item, what
        if engine.name == "lfsr":
            assert host.formula("layer_lfsr_width", *variables) == \
                lfsr_model.lfsr_width(layer.cols), what


def _samples(rng, host: BundleHost, variables: list[int], args: list[str]) -> list[int]:
    """Arguments for a formula: the layer's, then random ones of the right kind."""
    extra = []
    for arg in args[len(variables):]:
        if arg == "w":
            extra.append(int(rng.integers(-128, 128)))
        elif arg in ("enable", "relu", "has_bias"):
            extra.append(int(rng.integers(0, 2)))
        elif arg in ("mult", "bias"):
            extra.append(int(rng.integers(-2**15, 2**15)))
        else:
            extra.append(int(rng.integers(0, 2 * max(variables[:2]) + 8)))
    return variables + extra


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_header_formats_match_the_manifest(case, tmp_path, seed):
    engine, config = _engine(case, seed)
    facts = _manifest(engine)
    header = tmp_path / f"{engine.top}.h"
    header.write_text(header_text(engine, facts))
    host = BundleHost(facts)
    rng = np.random.default_rng(seed)
    checks = []
    for _ in range(4):
        variables = _layer_variables(host, random_weights(rng, engine))
        for formula, described in facts["format"]["formulas"].items():
            for _ in range(3):
                arguments = _samples(rng, host, variables, described["args"])
                checks.append((f"{engine.top}_{formula}({', '.join(map(str, arguments))})",
                               host.formula(formula, *arguments)))
    for constant, described in facts["format"]["constants"].items():
        checks.append((f"{engine.top.upper()}_{constant.upper()}", described["value"]))
    lfsr = facts["format"].get("lfsr")
    if lfsr is not None:
        for width in map(int, lfsr["tap_masks"]):
            for state in rng.integers(1, 2**width, size=8):
                checks.append((f"{engine.top}_lfsr_step({state}u, {width}u)",
                               int(lfsr_model.lfsr_step(int(state), width))))
            n = int(rng.integers(2**(width - 1), 2**width)) if width > 2 else 3
            seed_, k = int(rng.integers(1, n + 1)), min(n, 6)
            state = f"{seed_}u"
            for column in lfsr_model.mask_indices(n, k, seed_)[0][1:]:
                state = f"{engine.top}_lfsr_next_accepted({state}, {width}u, {n}u)"
                checks.append((state, int(column) + 1))
    result = _run_checks(_compiler(), header, checks, tmp_path)
    assert result.returncode == 0, f"{config}, seed {seed}:\n{result.stdout[:3000]}"


@pytest.mark.parametrize("case", SWEEP, ids=IDS[:len(SWEEP)])
def test_guides_name_every_formula_and_placement(case):
    engine = make_engine(case[0], **case[1])
    fmt = _manifest(engine)["format"]
    guide = guide_path(engine).read_text()
    placed = {f"{name}_{part}" for name, placement in fmt["placements"].items()
              for part in [*placement["fields"], "lsb", "value"]}
    for name in [*fmt["placements"], *fmt["constants"], *(set(fmt["formulas"]) - placed)]:
        assert name in guide, f"{guide_path(engine).name} does not name {name}"
    for register in fmt["config"]:
        assert f"`{register['register']}`" in guide, register


# The exported Verilog, driven from the bundle ----------------------------------------------

@pytest.mark.sim
@pytest.mark.parametrize("bus", ["native", "axi"])
@pytest.mark.parametrize("name", list(SIM))
def test_bundle_drives_the_exported_verilog(name, bus, tmp_path, seed):
    """native: the engine's own streams; axi: its AXI4 wrapper under cocotbext-axi, with the
    register map of the manifest's axi section."""
    engine = make_engine(name, **SIM[name])
    bundle = export_bundle(engine, tmp_path / "export")
    rng = np.random.default_rng(seed)
    cases = []
    # Requantized with a bias and loaded shuffled; raw and in order; requantized without a
    # bias, shuffled: each layer finds the previous one's words in the memories.
    for index, (requant, bias, shuffle) in enumerate(((True, True, True), (False, False, False),
                                                      (True, False, True))):
        weights = random_weights(rng, engine, requant=requant, bias=bias)
        x = rng.integers(-128, 128, size=(int(rng.integers(1, 4)), weights["w"].shape[1]))
        x[rng.random(x.shape) < 0.3] = 0
        x = x.astype(np.int8)
        files = {key: tmp_path / f"case{index}-{key}.{'npz' if key == 'weights' else 'npy'}"
                 for key in ("weights", "inputs", "expected")}
        np.savez(files["weights"], **weights)
        np.save(files["inputs"], x)
        np.save(files["expected"], numpy_outputs(weights, x))
        cases.append({**{key: str(path) for key, path in files.items()}, "shuffle": shuffle})
    verilog = bundle.verilog.read_text()
    if bus == "axi":
        verilog += bundle.axi_verilog.read_text()
    run_testbench(verilog=verilog, toplevel=engine.top + ("_axi" if bus == "axi" else ""),
                  test_module="secateur.verif.tb_bundle",
                  config={"bundle": str(bundle.directory), "bus": bus, "cases": cases,
                          "seed": seed, "pause": 0.3},
                  seed=seed)
