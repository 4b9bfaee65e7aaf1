"""Benchmark of the compute-in-memory engine (issue 5): cycles, ADC conversions, row
activations and energy of the bit-sparse schedule against a dense bit-serial schedule (every
bit-plane, every group, every column converted) on the same layer, for dense random int8
weights and for BitS-regularized weights. Figures, not assertions: the tests assert behaviour.

Counts come from the schedule model (:func:`secateur.models.cim.schedule`), which the cocotb
testbench and ``tests/test_models_cim.py`` tie to the RTL; the last table re-measures cycles
on the RTL with ``secateur run``'s simulator. Energy: the engine's ``counters`` price the
counted actions with :mod:`secateur.models.energy`'s sourced table (``models/energy.json``:
ISAAC's 32 nm ADC and row-drive figures, Horowitz's 45 nm digital figures), ``energy_pj``
for the bit-sparse schedule and ``dense_energy_pj`` for the dense bit-serial one; the table
has no figure below 4 ADC bits, so those rows print ``n/a``, and the narrower-ADC table also
compares ADC energy in units of the Walden figure of merit (``conversions * 2**B``).

Run with ``.venv/bin/python benchmarks/bench_cim.py``.
"""

import time

import numpy as np
import torch

from secateur.gen.registry import make_engine
from secateur.models import cim, energy
from secateur.sim.runner import BatchSimulator

ROWS, COLS, BATCH = 64, 512, 16
MACRO = dict(pe=16, macro_rows=128, macro_cols=128, adcs=16, rows=8)
#: Weight of the BitS-Net penalty for the regularized layer.
BITS_STRENGTH = 0.2


def trained_weights(strength: float) -> np.ndarray:
    """A 64 x 512 layer fitted to a random linear teacher, with the BitS penalty at
    ``strength`` (0: plain training), exported as int8."""
    torch.manual_seed(0)
    teacher = torch.randn(ROWS, COLS) / COLS ** 0.5
    inputs = torch.randn(1024, COLS)
    torch.manual_seed(1)
    layer = torch.nn.Linear(COLS, ROWS, bias=False)
    cim.train_bits(layer, (inputs, inputs @ teacher.T), strength=strength, epochs=10)
    return cim.quantize_int8(layer.weight)[0]


def activations(rng) -> dict:
    """Inputs: uniform int8 (all bit-planes live) and ReLU-like int8 activations (half zero,
    the rest small and non-negative, as after a ReLU and requantization)."""
    relu = np.maximum(rng.normal(0, 12, (BATCH, COLS)), 0).round().clip(0, 127)
    return {"uniform": rng.integers(-128, 128, (BATCH, COLS), dtype=np.int8),
            "relu": relu.astype(np.int8)}


def _nj(pj) -> str:
    """pJ -> nJ for printing; ``n/a`` when the energy has an unsourced action."""
    return "n/a" if pj is None else f"{pj / 1000:.1f}"


def main():
    rng = np.random.default_rng(2026)
    table = energy.load_table()
    print("energy table:", table["technology"]["digital"], "|",
          table["technology"]["cim_periphery"])
    weights = {"random": rng.integers(-128, 128, (ROWS, COLS), dtype=np.int8)}
    start = time.perf_counter()
    weights["plain-trained"] = trained_weights(0.0)
    weights["BitS-trained"] = trained_weights(BITS_STRENGTH)
    print(f"(training {time.perf_counter() - start:.1f} s; BitS penalty strength {BITS_STRENGTH})")
    inputs = activations(rng)

    print(f"\n{ROWS}x{COLS} layer, batch {BATCH}, {MACRO['pe']} macros of "
          f"{MACRO['macro_rows']}x{MACRO['macro_cols']}, {MACRO['adcs']} ADCs each, "
          f"R = {MACRO['rows']}, lossless B = 4")
    print(f"{'weights':>14} {'inputs':>8} {'w bits':>6} {'x bits':>6} {'cycles':>7} "
          f"{'dense':>7} {'cyc x':>6} {'convs':>8} {'dense':>8} {'skipped':>8} {'conv x':>6} "
          f"{'row act':>8} {'nJ':>7} {'dense nJ':>8} {'E x':>5}")
    engine = make_engine("cim", **MACRO)
    for w_name, w in weights.items():
        layer = engine.layer({"w": w})
        for x_name, x in inputs.items():
            c = layer.counters(x)
            sparse_nj, dense_nj = _nj(c["energy_pj"]), _nj(c["dense_energy_pj"])
            ratio = ("n/a" if c["energy_pj"] is None
                     else f"{c['dense_energy_pj'] / c['energy_pj']:.2f}")
            print(f"{w_name:>14} {x_name:>8} {cim.bit_density(w):>6.3f} {cim.bit_density(x):>6.3f} "
                  f"{c['compute_cycles']:>7} {c['dense_compute_cycles']:>7} "
                  f"{c['dense_compute_cycles'] / max(1, c['compute_cycles']):>6.2f} "
                  f"{c['adc_conversions']:>8} {c['dense_adc_conversions']:>8} "
                  f"{c['adc_conversions_skipped']:>8} "
                  f"{c['dense_adc_conversions'] / max(1, c['adc_conversions']):>6.2f} "
                  f"{c['row_activations']:>8} {sparse_nj:>7} {dense_nj:>8} {ratio:>5}")

    print("\nNarrower ADCs (R = 8, ReLU inputs): ADC energy in Walden-FoM units "
          "(conversions * 2**B), relative to the dense schedule at lossless B = 4, and the error "
          "of the saturating result against W @ x")
    print(f"{'weights':>14} {'B':>2} {'FoM units':>10} {'vs dense B=4':>12} {'rel. error':>10} "
          f"{'nJ':>7} {'dense nJ':>8}")
    x = inputs["relu"]
    for w_name in ("plain-trained", "BitS-trained"):
        w = weights[w_name]
        exact = x.astype(np.int64) @ w.astype(np.int64).T
        dense_units = None
        for bits in (4, 3, 2):
            engine = make_engine("cim", **MACRO, adc_bits=bits)
            c = engine.layer({"w": w}).counters(x)
            dense_units = dense_units or c["dense_adc_conversions"] * 2 ** 4
            units = c["adc_conversions"] * 2 ** bits
            y = cim.reference(w, x, MACRO["rows"], bits)
            error = np.abs(y - exact).sum() / max(1, np.abs(exact).sum())
            print(f"{w_name:>14} {bits:>2} {units:>10} {dense_units / units:>11.2f}x "
                  f"{error:>10.4f} {_nj(c['energy_pj']):>7} {_nj(c['dense_energy_pj']):>8}")

    print("\nRTL check (2 macros of 32x16, 2 ADCs, R = 4, B = 3): measured cycles with "
          "`secateur run`'s simulator against the schedule model")
    small = make_engine("cim", pe=2, macro_rows=32, macro_cols=16, adcs=2, rows=4, adc_bits=3)
    simulator = BatchSimulator(small)
    print(f"{'weights':>14} {'inputs':>8} {'cycles':>7} {'compute':>7} {'dense est.':>11} "
          f"{'exact':>5}")
    for w_name, w in weights.items():
        layer = small.layer({"w": w[:2, :64].copy()})
        for x_name, x in inputs.items():
            x = x[:4, :64].copy()
            result = simulator.run(layer, x)
            dense = layer.counters(x)["dense_compute_cycles"]
            overhead = result.cycles - layer.counters(x)["compute_cycles"]
            print(f"{w_name:>14} {x_name:>8} {result.cycles:>7} "
                  f"{layer.counters(x)['compute_cycles']:>7} {dense + overhead:>11} "
                  f"{str(np.array_equal(result.y, layer.reference(x))):>5}")
    print("\nBitS-Net (Karimzadeh, Yoon, Raychowdhury, IEEE TCAS-I 69(5), 2022) reports up to 5x "
          "energy efficiency on ResNet/ImageNet; the figures above are one synthetic layer priced "
          "with published per-action figures from two technology nodes (45 nm digital, 32 nm "
          "ADC/DAC), an estimate, not a measured energy.")


if __name__ == "__main__":
    main()
