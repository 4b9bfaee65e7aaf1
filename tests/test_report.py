"""``secateur report`` and ``secateur explore``: the Pareto front, the exploration's pieces on a
tiny sweep, the HTML page on a tiny configuration (fake synth/net reports), the CLI errors,
and the page in a real headless browser (Debian's chromium; skipped when it is absent)."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from secateur.gen.cli import main
from secateur.gen.explore import (explore, memory_bits, pareto_optimal, quantize_weight,
                                  results_table)
from secateur.gen.report import build_report, write_html

TINY_EPOCHS = {"teacher": 3, "stages": 2, "stage": 1, "qat": 1}


# --------------------------------------------------------------------------- Pareto

def test_pareto_front_of_hand_made_points():
    # (memory, accuracy): less memory and more accuracy are better.
    points = [(10, 0.90),   # optimal: least memory
              (20, 0.95),   # optimal
              (25, 0.94),   # dominated by (20, 0.95)
              (30, 0.95),   # dominated by (20, 0.95): same accuracy, more memory
              (40, 0.97),   # optimal: best accuracy
              (40, 0.97),   # its duplicate: equal points do not dominate each other
              (50, 0.96)]   # dominated by (40, 0.97)
    assert pareto_optimal(points, maximize=(False, True)) == \
        [True, True, False, False, True, True, False]


def test_pareto_front_three_objectives_and_defaults():
    # All minimized by default.
    assert pareto_optimal([(1, 2), (2, 1), (2, 2), (3, 3)]) == [True, True, False, False]
    points = [(10, 100, 0.9), (20, 50, 0.9), (20, 100, 0.9), (5, 500, 0.5)]
    assert pareto_optimal(points, (False, False, True)) == [True, True, False, True]
    assert pareto_optimal([]) == []
    assert pareto_optimal([(1.0, 0.5)], (False, True)) == [True]


@pytest.mark.parametrize("points, maximize, message", [
    ([(1, 2), (1, 2, 3)], None, "every point needs 2 objectives"),
    ([(1, 2)], (True,), "every point needs 1 objectives"),
    ([(1, float("nan"))], None, "objectives must be finite numbers"),
])
def test_pareto_front_rejects_bad_points(points, maximize, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        pareto_optimal(points, maximize)


# --------------------------------------------------------------------------- explore pieces

@pytest.mark.parametrize("bits, qmax", [(2, 1), (4, 7), (8, 127)])
def test_quantize_weight_levels(seed, bits, qmax):
    import torch
    rng = np.random.default_rng(seed)
    w = torch.from_numpy(rng.normal(size=(16, 24)))
    w[:4] = 0.0
    codes, scale = quantize_weight(w, bits)
    assert scale > 0, f"seed {seed}"
    assert codes.abs().max() <= qmax and torch.equal(codes, codes.round()), f"seed {seed}"
    assert torch.all(codes[:4] == 0), f"zeros must stay zero (seed {seed})"
    if bits == 8:
        assert float((codes * scale - w).abs().max()) < 0.02 * float(w.abs().max())


def test_memory_bits_counts_kept_tiles_bitmap_scales_and_activations():
    w0 = np.zeros((16, 32), dtype=np.int8)   # tiles 8x16: a 2x2 grid
    w0[0, 0] = 1                             # tile (0, 0)
    w0[9, 20] = -1                           # tile (1, 1)
    w1 = np.ones((10, 16), dtype=np.int8)    # a 2x1 grid, 10 logits
    pruned = memory_bits([w0, w1], bits=4, pruned=True)
    assert pruned["weight_bits"] == (2 + 2) * 8 * 16 * 4
    assert pruned["index_bits"] == 4 + 2
    assert pruned["scale_bits"] == 16 + 6 + 1
    assert pruned["activation_bits"] == (32 + 16) * 8 + 10 * 32
    assert pruned["total_bits"] == sum(pruned[key] for key in
                                       ("weight_bits", "index_bits", "scale_bits",
                                        "activation_bits"))
    dense = memory_bits([w0, w1], bits=4, pruned=False)
    assert dense["weight_bits"] == (4 + 2) * 8 * 16 * 4 and dense["index_bits"] == 0


@pytest.fixture(scope="module")
def explored(tmp_path_factory):
    out = tmp_path_factory.mktemp("explore")
    results = explore(out, precisions=(2, 8), sparsities=(0.0, 0.5), cycles="model",
                      epochs=TINY_EPOCHS, images=90, progress=False)
    return out, results


def test_explore_tiny_sweep(explored):
    out, results = explored
    points = results["points"]
    assert [(p["bits"], p["sparsity"]) for p in points] == [(2, 0.0), (2, 0.5), (8, 0.0),
                                                            (8, 0.5)]
    saved = json.loads((out / "explore.json").read_text())
    assert saved["points"] == points and saved["plots"] == results["plots"]
    for name in results["plots"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    by_key = {(p["bits"], p["sparsity"]): p for p in points}
    for bits in (2, 8):
        # Half the tiles of both hidden layers are zero; the classifier keeps its tiles.
        assert all(zero >= 0.5 for zero in by_key[bits, 0.5]["zero_tiles"][:2])
        assert by_key[bits, 0.5]["weight_bits"] < by_key[bits, 0.0]["weight_bits"]
        assert by_key[bits, 0.5]["cycles_per_inference"] < by_key[bits, 0.0][
            "cycles_per_inference"]
    assert by_key[2, 0.0]["total_bits"] < by_key[8, 0.0]["total_bits"]
    for p in points:
        assert 0.0 <= p["accuracy"] <= 1.0
        assert {"pareto_memory", "pareto_cycles", "pareto_all"} <= set(p)
        assert not p["cached"]
    flags = pareto_optimal([(p["total_bits"], p["accuracy"]) for p in points], (False, True))
    assert [p["pareto_memory"] for p in points] == flags
    assert by_key[2, 0.5]["pareto_memory"]  # the least memory is always optimal
    assert "model" in results["cycles_source"]
    assert "pareto" in results_table(results).lower()


def test_explore_caches_trained_points(explored):
    out, first = explored
    again = explore(out, precisions=(2,), sparsities=(0.5,), cycles="model",
                    epochs=TINY_EPOCHS, images=90, plots=False, progress=False)
    point = again["points"][0]
    assert point["cached"]
    assert point["accuracy"] == next(p["accuracy"] for p in first["points"]
                                     if (p["bits"], p["sparsity"]) == (2, 0.5))


@pytest.mark.sim
def test_explore_rtl_cycles_match_the_cycle_model(tmp_path, explored):
    """The RTL cycles of each design's zero-tile structure are the performance model's,
    exactly, and the RTL equals its golden model on that structure."""
    out, _ = explored
    shutil.copytree(out / "cache", tmp_path / "cache")
    shutil.copy(next(out.glob("teacher-*.pt")), tmp_path)
    results = explore(tmp_path, precisions=(2, 8), sparsities=(0.0, 0.5), cycles="rtl",
                      epochs=TINY_EPOCHS, images=90, plots=False, progress=False)
    model = {(p["bits"], p["sparsity"]): p for p in explored[1]["points"]}
    for p in results["points"]:
        assert p["cached"] and p["rtl_exact"]
        modelled = model[p["bits"], p["sparsity"]]["cycles_per_inference"]
        assert p["cycles_per_inference"] == modelled


# --------------------------------------------------------------------------- the report

#: The iCE40 timing results of the fake ``make synth``: the dense engine's as a file written
#: before the seeds (one figure), the ternary engine's from seeds of which one was skipped.
FAKE_ICE40 = {
    "dense": {"status": "ok", "fmax_mhz": 61.25},
    "ternary": {"status": "ok", "fmax_mhz": 83.5, "fmax_min_mhz": 80.0, "fmax_median_mhz": 83.5,
                "seeds": [1, 2, 3], "seeds_completed": 2,
                "not_completed": [{"seed": 3, "status": "skipped"}]},
}


def _fake_inputs(root: Path) -> dict:
    synth = root / "synth"
    for name, lut4 in (("dense", 4000), ("ternary", 1000)):
        (synth / name).mkdir(parents=True)
        (synth / name / "stat.json").write_text(json.dumps({
            "engine": name, "params": {"pe": 2}, "status": "ok",
            "ice40": {"resources": {"lut4": lut4, "ff": 500, "carry": 70, "bram": 3, "dsp": 0},
                      "fits": True, "command": "synth_ice40 -noflatten -top x",
                      "pe_array": {"resources": {"lut4": lut4 // 2}}}}))
        (synth / name / "timing.json").write_text(json.dumps({
            "engine": name, "params": {"pe": 1},
            "ice40": FAKE_ICE40[name],
            "ecp5": {"status": "does not fit", "detail": "LUT4 90000/83640"}}))
    net = root / "net"
    net.mkdir()
    for name, energy in (("ternary", None), ("dense", 5678.9)):
        (net / f"{name}-report.json").write_text(json.dumps({
            "engine": name, "arch": "mlp", "images": 360, "float_accuracy": 0.9694,
            "golden_accuracy": 0.9611, "rtl_accuracy": 0.9611, "mismatches": 0,
            "compression": {"ratio": 12.3}, "cycles_per_inference": 123.4,
            "energy_pj_per_inference": energy, "params": {"pe": 8}}))
    workloads = root / "workloads.json"
    workloads.write_text(json.dumps({"model": {"eie": {"dense": {
        "cycles": 94250.0, "macs_per_cycle_per_pe": 53.54, "storage_bits": 1291800000,
        "energy_pj": 251900000.0}}}, "rtl_spot_check": {
        "dense": {"mismatches": 0, "tiles": 64, "rtl_cycles": 12345, "model_cycles": 12345},
        "cim": {"skipped": "too slow"}}}))
    return {"synth_dir": synth, "net_dir": net, "workloads_file": workloads}


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory, explored):
    """The report at PE=2 on a 16x32 layer for the baseline and one sparse engine."""
    root = tmp_path_factory.mktemp("report")
    inputs = _fake_inputs(root)
    out = root / "out"
    data = build_report(2, out, layer=(16, 32), batch=2, engines=["ternary", "dense"],
                        explore_dir=explored[0], log=lambda *items: None, **inputs)
    return out, data


def _images(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page)


@pytest.mark.sim
def test_report_tiny_configuration(tiny_report):
    out, data = tiny_report
    page = (out / "index.html").read_text()
    assert list(data["sweeps"]) == ["dense", "ternary"]  # the baseline first
    images = _images(page)
    assert len(images) == 7  # 4 sweep plots, resources, 2 exploration plots
    for name in images:
        assert "/" not in name and (out / name).read_bytes()[:4] == b"\x89PNG"
    assert not re.search(r"https?://", page, re.I)
    assert "<script" not in page.lower() and "<link" not in page.lower()
    # summary, synth, 2 sweeps, net, explore, workloads and their RTL spot check
    assert page.count("<table>") == 1 + 1 + 2 + 1 + 1 + 2
    # Every sweep point ran exactly on the RTL; the dense engine skips nothing.
    for result in data["sweeps"].values():
        assert result["weight"] and all(p["exact"] for p in result["weight"]
                                        + result["activation"])
    dense = {p["cycles"] for p in data["sweeps"]["dense"]["weight"]}
    assert len(dense) == 1
    ternary = data["sweeps"]["ternary"]["weight"]
    assert ternary[-1]["cycles"] < ternary[0]["cycles"]
    # The fake synthesis, network and exploration reports are on the page.
    assert "4,000 (1.00x)" in page and "1,000 (0.25x)" in page
    assert "<td>61.2</td>" in page and "<td>80.0/83.5 (2 of 3 seeds)</td>" in page
    assert "500 (0.25x)" in page and "synth_ice40 -noflatten -top x" in page  # the PE array
    assert "does not fit" in page and "made at pe = 2" not in page
    assert "0.9611" in page and "5,679" in page and "n/a" in page
    assert "not run: make net ENGINE=" not in page  # both swept engines have a report
    assert "Pareto (memory)" in page
    assert "94,250" in page and "53.54" in page and "1,291.8" in page and "251.9" in page
    assert "0 mismatches, 64 tiles, cycles 12,345 (model 12,345)" in page and "too slow" in page
    saved = json.loads((out / "report.json").read_text())
    assert saved["pe"] == 2 and saved["layer"] == {"rows": 16, "cols": 32}
    assert saved["net"]["ternary"]["energy_pj_per_inference"] is None


@pytest.mark.sim
def test_report_says_what_was_not_run(tiny_report):
    _, data = tiny_report
    page = write_html(dict(data, synth={}, net={}, explore=None, workloads=None,
                           plots={key: value for key, value in data["plots"].items()
                                  if not key.startswith(("explore", "resources"))}))
    assert "not run: make synth PE=2" in page
    assert "not run: make net ENGINE=" in page
    assert "not run: make explore" in page
    assert "not run: make bench (benchmarks/bench_workloads.py" in page
    assert len(_images(page)) == 4


# --------------------------------------------------------------------------- CLI

@pytest.mark.parametrize("argv, message", [
    (["report", "--pe", "0", "--out", "{tmp}/r"], "--pe must be an integer >= 1, not 0"),
    (["report", "--pe", "x", "--out", "{tmp}/r"], "--pe must be an integer, not 'x'"),
    (["report", "--out", "{tmp}/r"], "the following arguments are required: --pe"),
    (["report", "--pe", "2", "--out", "{tmp}/r", "--layer", "16"],
     "--layer takes ROWSxCOLS (e.g. 128x128), not '16'"),
    (["report", "--pe", "2", "--out", "{tmp}/r", "--layer", "0x16"],
     "--layer rows must be an integer >= 1, not 0"),
    (["report", "--pe", "2", "--out", "{tmp}/file"], "cannot write --out {tmp}/file: not a directory"),
    (["explore", "--out", "{tmp}/e", "--bits", "1,4"], "--bits must be integers in [2, 8]"),
    (["explore", "--out", "{tmp}/e", "--bits", "four"],
     "--bits takes a comma-separated list of numbers, not 'four'"),
    (["explore", "--out", "{tmp}/e", "--sparsity", "0,1"],
     "--sparsity must be fractions in [0, 1), not [0.0, 1.0]"),
    (["explore", "--out", "{tmp}/e", "--cycles", "guess"], "invalid choice: 'guess'"),
    (["explore", "--out", "{tmp}/e", "--seed", "-1"], "--seed must be an integer >= 0"),
    (["explore", "--out", "{tmp}/file"], "cannot write --out {tmp}/file: not a directory"),
])
def test_cli_errors_are_one_line_with_status_2(tmp_path, capsys, argv, message):
    (tmp_path / "file").write_text("")
    status = main([item.format(tmp=tmp_path) for item in argv])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("secateur: error: ")
    assert message.format(tmp=tmp_path) in err
    assert not (tmp_path / "e").exists() and not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- the browser

def _chromium() -> str:
    found = shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if found is None:
        pytest.skip("chromium not installed: apt-get install chromium")
    return found


def _browse(chromium: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([chromium, "--headless", "--disable-gpu", "--no-sandbox",
                           "--disable-dev-shm-usage", "--hide-scrollbars", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.sim
def test_report_in_headless_chromium(tiny_report, tmp_path):
    """The page as a browser renders it, offline: its tables are in the DOM, every image
    loads (a test copy of the page records each image's natural width on load; the page
    itself has no script), and the screenshot shows the plots' colours."""
    chromium = _chromium()
    out, _ = tiny_report
    page = (out / "index.html").read_text()
    dom = _browse(chromium, "--virtual-time-budget=10000", "--dump-dom",
                  (out / "index.html").as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count("<table>") == page.count("<table>")
    assert "Engines against the dense baseline" in dom.stdout
    assert _images(dom.stdout) == _images(page)

    probe = out / "browser-probe.html"
    probe.write_text(page.replace("</body>", (
        '<script>window.addEventListener("load", () => document.body.setAttribute('
        '"data-widths", Array.from(document.images).map(i => i.complete ? i.naturalWidth '
        ': -1).join(",")));</script></body>')))
    try:
        probed = _browse(chromium, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    finally:
        probe.unlink()
    widths = re.search(r'data-widths="([^"]*)"', probed.stdout)
    assert widths, probed.stderr[-2000:]
    widths = [int(value) for value in widths.group(1).split(",")]
    assert len(widths) == len(_images(page)) and min(widths) > 0, widths

    shot = tmp_path / "shot.png"
    result = _browse(chromium, "--window-size=1200,5000", f"--screenshot={shot}",
                     (out / "index.html").as_uri())
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    import matplotlib.image
    pixels = (matplotlib.image.imread(shot)[..., :3] * 255).round().astype(int)
    # matplotlib's first two line colours (dense, ternary), which only the plots contain.
    for colour in ((31, 119, 180), (255, 127, 14)):
        assert np.sum(np.all(np.abs(pixels - colour) <= 6, axis=-1)) > 500, colour
