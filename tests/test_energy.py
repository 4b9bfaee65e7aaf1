"""The per-action energy table and the energy in every report: the table is sourced, the
estimate is ``sum(count * value)`` (checked against a hand count on a tiny layer), an
unsourced action makes ``energy_pj`` null and is named, every engine's counters carry the
energy fields, and ``secateur run``'s report has them."""

import copy
import json
import math

import numpy as np
import pytest

from secateur.gen.cli import main
from secateur.gen.netrun import energy_totals as _energy_totals
from secateur.gen.registry import make_engine
from secateur.models import energy
from secateur.models import lfsr_pruning
from secateur.models import permdiag as permdiag_model

#: The figures the table may hold, as read in their sources (pJ): Horowitz, ISSCC 2014,
#: Fig. 1.1.9 and Han et al., NIPS 2015 (45 nm); ISAAC via Accelergy's isaac.py (32 nm).
CITED = {
    "add_bit": 0.1 / 32,          # 32-bit add 0.1 pJ
    "int8_mult": 0.2,             # 8-bit multiply
    "int32_mult": 3.1,            # 32-bit multiply
    "sram_bit": 5 / 32,           # 32-bit SRAM cache access 5 pJ
    "register_bit": 1 / 32,       # 32-bit register file access 1 pJ
    "lfsr_step_bit": 1 / 32,      # modeled as a register-file bit
    "row_activation": 0.41667,    # IsaacDAC, 1 bit
}
ADC = {1: None, 2: None, 3: None, 4: 0.79, 5: 0.99, 6: 1.20, 7: 1.42, 8: 1.666666667}


def test_table_is_sourced_and_holds_only_cited_figures():
    table = energy.load_table()
    assert "45 nm" in table["technology"]["digital"]
    assert "32 nm" in table["technology"]["cim_periphery"]
    for action, entry in table["actions"].items():
        assert entry["unit"] and entry["note"], action
        values = entry["value_pj"].values() if "parameter" in entry else [entry["value_pj"]]
        if any(value is not None for value in values):
            assert len(entry["source"]) > 40, action  # a citation, not a word
    for action, value in CITED.items():
        assert table["actions"][action]["value_pj"] == pytest.approx(value), action
    adc = table["actions"]["adc_conversion"]
    assert adc["parameter"] == "adc_bits"
    assert {int(bits): value for bits, value in adc["value_pj"].items()} == ADC
    assert set(table["actions"]) == set(CITED) | {"adc_conversion"}


@pytest.mark.parametrize("entry, message", [
    ({"value_pj": 1.0, "unit": "pJ"}, "has a value but no source"),
    ({"unit": "pJ"}, "has no value_pj"),
    ({"value_pj": 1.0}, "has no unit"),
    ({"value_pj": -1.0, "unit": "pJ", "source": "s"}, "non-numeric or negative"),
    ({"parameter": "adc_bits", "value_pj": 1.0, "unit": "pJ", "source": "s"},
     "value_pj must map its values to pJ"),
    ({"parameter": "adc_bits", "value_pj": {"4": 1.0}, "unit": "pJ"}, "has a value but no source"),
])
def test_load_table_rejects_unsourced_or_malformed_entries(tmp_path, entry, message):
    (tmp_path / "bad.json").write_text(json.dumps({"actions": {"adc_conversion": entry}}))
    with pytest.raises(ValueError, match=message):
        energy.load_table(tmp_path / "bad.json")


def test_an_unsourced_action_makes_the_energy_null_and_is_named():
    table = copy.deepcopy(energy.load_table())
    table["actions"]["int8_mult"]["value_pj"] = None
    result = energy.estimate({"int8_mult": 3, "add_bit": 64, "sram_bit": 0}, table=table)
    assert result["energy_pj"] is None and result["energy_missing"] == ["int8_mult"]
    assert result["energy_breakdown"] == {"add_bit": pytest.approx(64 * CITED["add_bit"]),
                                          "int8_mult": None}
    # Not counted (zero) is not missing; an action the table lacks is missing.
    assert energy.estimate({"int8_mult": 0}, table=table)["energy_pj"] == 0.0
    assert energy.energy_pj({"flux_capacitor": 1}) == (None, ["flux_capacitor"])
    # Parameterized: the ADC below 4 bits has no sourced figure.
    assert energy.energy_pj({"adc_conversion": 10}, {"adc_bits": 3}) == (None, ["adc_conversion"])
    eight_bits = energy.energy_pj({"adc_conversion": 10}, {"adc_bits": 8})
    assert eight_bits == (pytest.approx(16.66666667), [])
    with pytest.raises(KeyError, match="adc_bits"):
        energy.energy_pj({"adc_conversion": 1})


def test_tree_add_bits_counts_each_level():
    assert energy.tree_add_bits(1, 9) == 0
    assert energy.tree_add_bits(2, 9) == 10
    assert energy.tree_add_bits(4, 16) == 2 * 17 + 18
    assert energy.tree_add_bits(5, 9) == 2 * 10 + 11 + 12  # the odd operand waits a level


def test_dense_energy_is_the_sum_of_hand_counted_actions():
    # 3 x 6 layer on 2 PEs of 4 multipliers, batch 2: 2 row blocks x 2 column blocks = 4 tiles
    # per vector, 8 in the batch, every one issued.
    engine = make_engine("dense", pe=2, fan_in=4, max_rows=8, max_cols=16)
    rng = np.random.default_rng(1)
    w = rng.integers(-128, 128, (3, 6)).astype(np.int8)
    x = rng.integers(-128, 128, (2, 6)).astype(np.int8)
    acc = engine.acc_width
    counts = {
        # per tile: 2 weight words of 4 int8 (64 bits) + one activation word (32 bits);
        # per vector: 2 activation words written (64 bits)
        "sram_bit": 8 * (64 + 32) + 2 * 64,
        "int8_mult": 8 * 2 * 4,
        # per tile and PE: a tree over 4 products (2 adds of 17 bits, 1 of 18) and an
        # accumulator add
        "add_bit": 8 * 2 * (2 * 17 + 18) + 8 * 2 * acc,
        "register_bit": 8 * 2 * acc,
    }
    expected = sum(count * CITED[action] for action, count in counts.items())
    c = engine.layer({"w": w}).counters(x)
    assert c["energy_actions"] == counts
    assert c["energy_pj"] == pytest.approx(expected) and c["energy_missing"] == []
    assert sum(c["energy_breakdown"].values()) == pytest.approx(c["energy_pj"])
    # Requantization adds, per output lane (2 row blocks x 2 PEs x 2 vectors), a 16-bit
    # multiplier read, a 32-bit multiply and the rounding add at acc + 16 bits.
    rq = engine.layer({"w": w, "mult": np.int64(3), "shift": np.int64(4),
                       "relu": np.bool_(False)}).counters(x)
    assert rq["energy_pj"] - c["energy_pj"] == pytest.approx(
        8 * (16 * CITED["sram_bit"] + CITED["int32_mult"] + (acc + 16) * CITED["add_bit"]))


def _layers(rng):
    """A tiny layer of every engine, with a batch."""
    x = rng.integers(-128, 128, (3, 16)).astype(np.int8)
    x[:, ::3] = 0
    w = rng.integers(-128, 128, (6, 16)).astype(np.int8)
    seeds, k = np.arange(1, 7), 5
    mask = lfsr_pruning.lfsr_mask(16, k, seeds).numpy().astype(bool)
    offsets = permdiag_model.random_offsets(2, 4, 4)
    diag = rng.integers(-128, 128, (2, 4, 4)).astype(np.int8)
    return x, {
        "dense": make_engine("dense", pe=2, fan_in=4).layer({"w": w}),
        "ternary": make_engine("ternary", pe=2, fan_in=4).layer(
            {"w": np.sign(w).astype(np.int8)}),
        "lfsr": make_engine("lfsr", pe=2).layer(
            {"w": np.where(mask, w, 0).astype(np.int8), "seeds": seeds, "k": np.int64(k)}),
        "csr": make_engine("lfsr", pe=2, index="csr").layer(
            {"w": np.where(mask, w, 0).astype(np.int8), "seeds": seeds, "k": np.int64(k)}),
        "permdiag": make_engine("permdiag", pe=4, mults=2).layer(
            {"w": np.asarray(permdiag_model.expand(diag, offsets)).astype(np.int8),
             "p": np.int64(4)}),
        "cim": make_engine("cim", pe=2, macro_rows=16, macro_cols=16, adcs=2, rows=8).layer(
            {"w": w[:2]}),
    }


def test_every_engine_reports_energy_from_its_counted_actions(seed):
    x, layers = _layers(np.random.default_rng(seed))
    for name, layer in layers.items():
        c = layer.counters(x)
        assert isinstance(c["energy_pj"], float) and c["energy_pj"] > 0, name
        assert c["energy_missing"] == [], name
        assert c["energy_pj"] == pytest.approx(sum(c["energy_breakdown"].values())), name
        params = {"adc_bits": layer.engine.adc_bits} if name == "cim" else None
        assert energy.estimate(c["energy_actions"], params) == {
            key: c[key] for key in ("energy_pj", "energy_breakdown", "energy_missing",
                                    "energy_actions")}, name
        json.dumps(c)
    actions = {name: layer.counters(x)["energy_actions"] for name, layer in layers.items()}
    assert "int8_mult" not in actions["ternary"]           # sign selects, no multiplier
    assert actions["lfsr"]["lfsr_step_bit"] > 0 and "lfsr_step_bit" not in actions["csr"]
    assert {"adc_conversion", "row_activation"} <= set(actions["cim"])
    cim = layers["cim"].counters(x)
    assert cim["energy_actions"]["adc_conversion"] == cim["adc_conversions"] > 0
    assert cim["energy_pj"] <= cim["dense_energy_pj"]       # skipping never costs energy


def test_zero_inputs_cost_permdiag_nothing_per_mac(seed):
    x, layers = _layers(np.random.default_rng(seed))
    layer = layers["permdiag"]
    busy, idle = layer.counters(x), layer.counters(np.zeros_like(x))
    assert "int8_mult" not in idle["energy_actions"] and busy["energy_actions"]["int8_mult"] > 0
    assert idle["energy_pj"] < busy["energy_pj"]


def test_net_totals_sum_layers_per_inference():
    layers = [{"energy_pj": 30.0, "energy_breakdown": {"add_bit": 10.0, "sram_bit": 20.0},
               "energy_missing": []},
              {"energy_pj": 6.0, "energy_breakdown": {"add_bit": 6.0}, "energy_missing": []}]
    totals = _energy_totals(layers, images=3)
    assert totals == {"energy_pj": 36.0, "energy_pj_per_inference": 12.0,
                      "energy_breakdown": {"add_bit": pytest.approx(16 / 3),
                                           "sram_bit": pytest.approx(20 / 3)},
                      "energy_missing": []}
    layers[1].update(energy_pj=None, energy_breakdown={"adc_conversion": None, "add_bit": 6.0},
                     energy_missing=["adc_conversion"])
    totals = _energy_totals(layers, images=3)
    assert totals["energy_pj"] is None and totals["energy_pj_per_inference"] is None
    assert totals["energy_missing"] == ["adc_conversion"]
    assert totals["energy_breakdown"]["adc_conversion"] is None


@pytest.mark.sim
def test_run_report_has_the_energy_of_the_batch(tmp_path, capsys):
    rng = np.random.default_rng(3)
    w = rng.integers(-128, 128, (3, 6)).astype(np.int8)
    x = rng.integers(-128, 128, (2, 6)).astype(np.int8)
    np.savez(tmp_path / "w.npz", w=w)
    np.save(tmp_path / "x.npy", x)
    status = main(["run", "--engine", "dense", "--pe", "2", "--set", "fan_in=4",
                   "--set", "max_rows=8", "--set", "max_cols=16",
                   "--weights", str(tmp_path / "w.npz"), "--inputs", str(tmp_path / "x.npy"),
                   "--out", str(tmp_path / "y.npy"), "--report", str(tmp_path / "r.json")])
    assert status == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "r.json").read_text())
    layer = make_engine("dense", pe=2, fan_in=4, max_rows=8, max_cols=16).layer({"w": w})
    assert report["energy_pj"] == pytest.approx(layer.counters(x)["energy_pj"])
    assert report["energy_pj"] > 0 and report["energy_missing"] == []
    assert report["energy_pj_per_vector"] == pytest.approx(report["energy_pj"] / 2)
    assert math.isclose(sum(report["energy_breakdown"].values()), report["energy_pj"])
