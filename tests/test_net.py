"""``secateur net``: the whole-network flow.

* Unit tests of the host glue (im2col against ``F.unfold``, the requantizer search, the
  integer network against its fake-quantized float twin).
* A smoke test per registered engine: a tiny network (64-16-10), trained for a few epochs,
  through the RTL under Verilator on a few test images, logits bit-exact to the golden model,
  the export replayed with ``secateur run``.
* User errors: exit status 2 and one line on stderr, before any training.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import in_make_test
import torch
import torch.nn.functional as F

from secateur.gen import registry
from secateur.gen.cli import main
from secateur.models import network as nw

TINY = ["--set", "arch=tiny", "--set", "images=24", "--set", "teacher_epochs=4",
        "--set", "epochs=1", "--set", "qat_epochs=1", "--set", "kd=on", "--set", "stages=1"]


#: Small engines keep the one harness build per engine short.
SMOKE_PE = {"ternary": 4, "dense": 4, "lfsr": 4, "permdiag": 4, "cim": 1}


def _tiny_args(engine: str) -> list[str]:
    args = list(TINY)
    if engine != "lfsr":  # `stages` is an LFSR option only
        args = args[:-2]
    if engine == "ternary":
        args += ["--set", "warmup=1"]
    return args + ["--pe", str(SMOKE_PE.get(engine, 4))]


# --------------------------------------------------------------------------- host glue

@pytest.mark.parametrize("spec", [nw.ARCHS["cnn"][0], nw.ARCHS["cnn"][1]])
def test_im2col_matches_unfold(spec):
    generator = np.random.default_rng(1)
    x = generator.integers(-128, 128, size=(3, spec.cin, spec.size, spec.size)).astype(np.int8)
    ours = nw.im2col(x, spec)
    theirs = F.unfold(torch.from_numpy(x.astype(np.float64)), spec.k, padding=spec.k // 2)
    theirs = theirs.transpose(1, 2).reshape(-1, spec.cols).numpy().astype(np.int64)
    np.testing.assert_array_equal(ours.astype(np.int64), theirs)


@pytest.mark.parametrize("scale", [1e-6, 0.003, 0.37, 1.0, 5.5, 1000.0])
def test_requant_for_scale_is_close(scale):
    params = nw.requant_for_scale(scale, True)
    assert abs(int(params.mult)) <= 2 ** 15 - 1
    assert abs(int(params.mult) / 2 ** params.shift - scale) <= scale * 1e-3


def test_golden_network_tracks_fake_quantized_float():
    """The integer golden model of an int8 network agrees with the float model run on the
    same int8 grid (a check of the scale bookkeeping of every layer, conv included)."""
    x_train, y_train, x_test, _ = nw.load_digits_split()
    for arch in ("tiny", "cnn"):
        teacher = nw.build_float(arch, 0)
        nw.train_float(teacher, (x_train[:256], y_train[:256]), epochs=2, seed=0)
        hook = nw.HOOKS["dense"]
        options = dict(hook.options, qat_epochs=0)
        result = hook.compress(teacher, (x_train[:256], nw.kd_targets(teacher, x_train[:256],
                                                                      y_train[:256])),
                               {"pe": 8, "fan_in": 16}, options, kd=False, seed=0)
        logits, trace = nw.golden_forward(result.qnet, nw.quantize_inputs(x_test[:64]))
        assert logits.shape == (64, nw.CLASSES) and len(trace) == len(nw.ARCHS[arch])
        with torch.no_grad():
            result.student.act_scales = result.qnet.act_scales
            float_logits = result.student(x_test[:64])
        agree = float((float_logits.argmax(1).numpy() == logits.argmax(1)).mean())
        assert agree >= 0.9, (arch, agree)


def test_model_bits_counts_ternary_tiles():
    w = np.zeros((16, 32), dtype=np.int8)
    w[0, 0] = 1  # one non-zero tile of 8 x 16
    qnet = nw.QNet("tiny", "ternary", {"pe": 8, "fan_in": 16},
                   [nw.QLayer({"w": w}), nw.QLayer({"w": np.ones((10, 16), dtype=np.int8)})], [])
    bits = nw.model_bits(qnet)
    assert bits["layers"][0]["value_bits"] == 8 * 16 * 2
    assert bits["layers"][0]["index_bits"] == 2 * 2


# --------------------------------------------------------------------------- smoke, per engine

SMOKE_ENGINES = [name for name in registry.engine_names() if name in nw.HOOKS]


def test_every_registered_engine_has_a_hook():
    assert set(registry.engine_names()) <= set(nw.HOOKS)


@pytest.mark.sim
@pytest.mark.parametrize("engine", in_make_test(SMOKE_ENGINES, {SMOKE_ENGINES.index("ternary")}))
def test_smoke_tiny_network_through_rtl(engine, tmp_path, capsys):
    cache, export, report_path = tmp_path / "cache", tmp_path / "export", tmp_path / "r.json"
    argv = ["net", "--engine", engine, "--quiet", "--cache", str(cache), "--export",
            str(export), "--report", str(report_path), *_tiny_args(engine)]
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads(report_path.read_text())
    assert report["mismatches"] == 0 and report["layer_mismatches"] == 0
    assert report["rtl_accuracy"] == report["golden_accuracy"]
    assert report["images"] == 24 and report["cycles_per_inference"] > 0
    assert report["compression"]["ratio"] > 1
    for key in ("float_accuracy", "golden_accuracy", "rtl_accuracy", "wall_seconds", "layers"):
        assert key in report
    logits = np.load(export / "rtl_logits.npy")
    assert logits.shape == (24, 10) and logits.dtype == np.int64
    assert np.load(export / "inputs.npy").dtype == np.int8
    assert np.load(export / "labels.npy").shape == (24,)

    # Any layer replays with `secateur run` from the export, on the same engine build.
    params = report["params"]
    sets = [item for key, value in params.items() if key != "pe"
            for item in ("--set", f"{key}={value}")]
    out = tmp_path / "y0.npy"
    assert main(["run", "--engine", engine, "--pe", str(params["pe"]), *sets, "--weights",
                 str(export / "layer0.npz"), "--inputs", str(export / "layer0_inputs.npy"),
                 "--out", str(out)]) == 0
    np.testing.assert_array_equal(np.load(out), np.load(export / "layer1_inputs.npy"))

    if engine == "ternary":  # a second run is served from the cache and is identical
        assert main(argv) == 0
        again = json.loads(report_path.read_text())
        assert again["cached"] == {**again["cached"], "teacher": True, "model": True}
        np.testing.assert_array_equal(np.load(export / "rtl_logits.npy"), logits)


# --------------------------------------------------------------------------- user errors

def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "secateur.gen.cli", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.mark.parametrize("args", [
    ["--engine", "nonesuch"],
    ["--engine", "ternary", "--set", "bogus=1"],
    ["--engine", "ternary", "--set", "fan_in=0"],
    ["--engine", "ternary", "--set", "arch=resnet"],
    ["--engine", "ternary", "--set", "epochs=many"],
    ["--engine", "ternary", "--set", "novalue"],
    ["--engine", "permdiag", "--set", "arch=cnn"],
])
def test_bad_input_is_one_line_and_exit_2(args, tmp_path):
    result = _cli("net", *args, "--cache", str(tmp_path / "cache"), "--quiet")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("secateur: error: "), result.stderr
    assert not (tmp_path / "cache").exists()  # rejected before any training


def test_unwritable_export_directory_is_exit_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    for target in (blocker, blocker / "sub"):
        result = _cli("net", "--engine", "ternary", "--export", str(target), "--quiet",
                      "--cache", str(tmp_path / "cache"))
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and f"cannot write --export {target}: " in lines[0], result.stderr


def test_an_unknown_setting_lists_every_network_option_and_engine_parameter(capsys, tmp_path):
    from secateur.gen.cli import main
    assert main(["net", "--engine", "ternary", "--set", "bogus=1", "--cache",
                 str(tmp_path / "cache"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("secateur: error: secateur net has no setting bogus; network options: "
                          "arch, images, kd, teacher_epochs, epochs,")
    assert err.endswith("; ternary engine parameters: pe, fan_in, max_rows, max_cols, "
                        "tree_stages, max_groups\n")


def test_row_scaled_ternary_layers_export_one_alpha_per_row():
    from torch import nn
    torch.manual_seed(0)
    linear = nn.Linear(8, 4, dtype=torch.float64)
    with torch.no_grad():
        linear.weight[1] *= 50  # the rows of a folded batch norm
    layer = nw.RowScaled.from_linear(linear, delta=0.05)
    layer.inner.ternary = False  # before ternarization: the same function
    x = torch.randn(3, 8, dtype=torch.float64)
    torch.testing.assert_close(layer(x), linear(x))
    layer.inner.ternary = True
    with torch.no_grad():
        layer.scale[2] = -layer.scale[2]
    weight, bias, structure = nw.trained_form(layer)
    assert structure["alpha"].shape == (4,) and (structure["alpha"] > 0).all()
    np.testing.assert_allclose(weight, structure["alpha"][:, None] * structure["codes"])
    torch.testing.assert_close(layer(x), x @ torch.from_numpy(weight).T + torch.from_numpy(bias))
