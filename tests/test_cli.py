"""The command-line contract: user errors are one line on stderr with exit status 2."""

import subprocess
import sys

import numpy as np
import pytest

from secateur.gen.cli import main


def run_cli(capsys, *argv):
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture
def layer_files(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.integers(-1, 2, (5, 9)).astype(np.int8)
    np.savez(tmp_path / "w.npz", w=w)
    np.save(tmp_path / "x.npy", rng.integers(-128, 128, (2, 9)).astype(np.int8))
    return tmp_path


SMALL = ["--pe", "2", "--set", "fan_in=4", "--set", "max_rows=8", "--set", "max_cols=16"]


@pytest.mark.parametrize("argv, message", [
    (["rtl", "--engine", "nope", "--out", "x"], "unknown engine 'nope'; engines are ternary"),
    (["rtl", "--engine", "ternary", "--pe", "0", "--out", "x"],
     r"ternary engine parameter pe must be an integer in [1, 1024], not 0"),
    (["rtl", "--engine", "ternary", "--pe", "two", "--out", "x"], "--pe must be an integer, not 'two'"),
    (["rtl", "--engine", "ternary", "--set", "fan_in=abc", "--out", "x"],
     "ternary engine parameter fan_in must be an integer in [1, 256], not 'abc'"),
    (["rtl", "--engine", "ternary", "--set", "colour=red", "--out", "x"],
     "ternary engine has no parameter colour; its parameters are pe, fan_in"),
    (["rtl", "--engine", "ternary", "--set", "fan_in", "--out", "x"], "--set takes KEY=VALUE, not 'fan_in'"),
    (["rtl", "--engine", "ternary", "--set", "tree_stages=9", "--out", "x"],
     "ternary engine parameter tree_stages must be an integer in [0, 6], not 9"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["rtl", "--engine", "ternary"], "the following arguments are required: --out"),
])
def test_usage_errors_are_one_line_with_status_2(capsys, argv, message):
    status, out, err = run_cli(capsys, *argv)
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("secateur: error: ")
    assert message in err


def _write(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize("weights, message", [
    (dict(w=np.array([[0, 2, 1]], dtype=np.int8)), "w[0, 1] = 2"),
    (dict(w=np.zeros((2, 3), dtype=np.int16)), "w must be int8 ternary codes, not int16"),
    (dict(w=np.zeros(3, dtype=np.int8)), "w must be a 2-D (M, N) matrix"),
    (dict(v=np.zeros((2, 3), dtype=np.int8)), "weights npz has no key 'w'"),
    (dict(w=np.zeros((2, 3), dtype=np.int8), mult=np.int64(3)), "lacks ['relu', 'shift']"),
    (dict(w=np.zeros((2, 3), dtype=np.int8), mult=np.int64(1 << 20), shift=np.int64(1),
          relu=np.bool_(False)), "Requantizer mult must be in [-32768, 32767]"),
    (dict(w=np.zeros((2, 3), dtype=np.int8), mult=np.int64(1), shift=np.int64(60),
          relu=np.bool_(False)), "Requantizer shift must be in [0, 47], not 60"),
    (dict(w=np.zeros((2, 3), dtype=np.int8), mult=np.ones(3, dtype=np.int64), shift=np.int64(1),
          relu=np.bool_(False)), "mult has 3 entries; the layer has 2 output channels"),
])
def test_bad_weights_are_user_errors(capsys, tmp_path, weights, message):
    np.save(tmp_path / "x.npy", np.zeros((1, 3), dtype=np.int8))
    status, _, err = run_cli(capsys, "run", "--engine", "ternary", *SMALL,
                             "--weights", _write(tmp_path / "w.npz", **weights),
                             "--inputs", str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npy"))
    assert status == 2 and err.count("\n") == 1
    assert message in err


@pytest.mark.parametrize("inputs, message", [
    (np.zeros((2, 9), dtype=np.int16), "inputs must be an int8 array, not int16"),
    (np.zeros((2, 8), dtype=np.int8), "inputs must have shape (B, 9) for this layer (5x9)"),
    (np.zeros(9, dtype=np.int8), "inputs must have shape (B, 9)"),
])
def test_bad_inputs_are_user_errors(capsys, layer_files, inputs, message):
    np.save(layer_files / "bad.npy", inputs)
    status, _, err = run_cli(capsys, "run", "--engine", "ternary", *SMALL,
                             "--weights", str(layer_files / "w.npz"),
                             "--inputs", str(layer_files / "bad.npy"), "--out", str(layer_files / "y.npy"))
    assert status == 2 and err.count("\n") == 1
    assert message in err


def test_unreadable_files_are_user_errors(capsys, layer_files):
    (layer_files / "garbage.npz").write_bytes(b"not a zip")
    for weights, inputs, message in [
        (layer_files / "missing.npz", layer_files / "x.npy", "cannot read weights file"),
        (layer_files / "garbage.npz", layer_files / "x.npy", "is not an .npz archive"),
        (layer_files / "w.npz", layer_files / "missing.npy", "cannot read inputs file"),
    ]:
        status, _, err = run_cli(capsys, "run", "--engine", "ternary", *SMALL, "--weights", str(weights),
                                 "--inputs", str(inputs), "--out", str(layer_files / "y.npy"))
        assert status == 2 and err.count("\n") == 1 and message in err


def test_console_script_reports_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "secateur.gen.cli", "rtl", "--engine", "ternary",
                             "--pe", "-3", "--out", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "secateur: error: ternary engine parameter pe must be an integer in [1, 1024], not -3"]


_CLI_WITHOUT_TORCH = """
from secateur.gen.cli import main
for argv in (["--help"], ["mask", "--help"]):
    try:
        main(argv)
    except SystemExit as exit:
        assert exit.code == 0, (argv, exit.code)
assert main(["mask", "--n", "10", "--k", "3", "--seed", "1", "7"]) == 0
"""


@pytest.mark.parametrize("code", ["import secateur.models.lfsr", _CLI_WITHOUT_TORCH],
                         ids=["models.lfsr", "help-and-mask"])
def test_lfsr_convention_help_and_mask_start_without_torch(code):
    """Importing torch takes seconds, so only the commands that train or run torch load it:
    the LFSR convention (models/lfsr.py) is torch-free (its pruning is models/lfsr_pruning.py),
    and ``secateur --help``, ``secateur mask --help`` and ``secateur mask`` import no more.
    Each runs in a fresh interpreter, which then lists the torch modules it loaded."""
    report = "import sys; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    result = subprocess.run([sys.executable, "-c", f"{code}\n{report}"], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]", \
        f"torch was imported: {result.stdout.splitlines()[-1]}"


def test_rtl_writes_verilog_filelist_and_manifest(capsys, tmp_path):
    import json
    status, out, _ = run_cli(capsys, "rtl", "--engine", "all", "--pe", "3", "--set", "fan_in=5",
                             "--set", "max_rows=10", "--set", "max_cols=12", "--out", str(tmp_path))
    assert status == 0
    manifest = json.loads((tmp_path / "ternary" / "manifest.json").read_text())
    assert manifest["params"]["pe"] == 3 and manifest["params"]["fan_in"] == 5
    assert manifest["top"] == "ternary_engine" and manifest["latency"] > 0
    names = {port["name"] for port in manifest["ports"]}
    assert {"clk", "rst", "load__payload", "act__valid", "res__ready"} <= names
    assert (tmp_path / "ternary" / "ternary_engine.f").read_text().split() == \
        ["secateur.vlt", "ternary_engine.v"]
    status, _, err = run_cli(capsys, "rtl", "--engine", "all", "--set", "colour=red",
                             "--out", str(tmp_path))
    assert status == 2 and "no engine has a parameter colour" in err


def test_rtl_keeps_up_to_date_files_and_regenerates_stale_ones(capsys, tmp_path):
    argv = ["rtl", "--engine", "ternary", "--pe", "2", "--set", "fan_in=4", "--out", str(tmp_path)]
    verilog = tmp_path / "ternary" / "ternary_engine.v"
    assert main(argv) == 0 and "up to date" not in capsys.readouterr().out
    first = verilog.stat().st_mtime_ns
    assert main(argv) == 0 and "(up to date)" in capsys.readouterr().out
    assert verilog.stat().st_mtime_ns == first
    assert main(argv + ["--force"]) == 0 and "up to date" not in capsys.readouterr().out

    verilog.write_text(verilog.read_text() + "// edited by hand\n")  # no longer what the manifest says
    assert main(argv) == 0 and "up to date" not in capsys.readouterr().out
    assert "edited by hand" not in verilog.read_text()

    other = ["rtl", "--engine", "ternary", "--pe", "3", "--set", "fan_in=4", "--out", str(tmp_path)]
    assert main(other) == 0 and "up to date" not in capsys.readouterr().out
    assert '"pe": 3' in (tmp_path / "ternary" / "manifest.json").read_text()
