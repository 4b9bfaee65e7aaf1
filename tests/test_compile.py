"""``secateur compile`` and ``run-net`` (gen/compile): models built and trained here with torch
(fixed seeds, seconds on digits), exported with ``torch.onnx.export`` (the TorchScript exporter,
``dynamo=False``, and the default dynamo exporter, which needs onnxscript) and
``torch.export.save``, compiled onto the engines and proved bit-exact on the RTL; every refusal
of issue 13 section 2 with its message; the CLI contract.

The MLP (64-16-10) and the CNN are sized so that their engines (max_rows 16, max_cols 64,
pe 4) are the builds of ``secateur net``'s smoke test, so the harness builds are shared.
"""

import json
import re

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import secateur
from conftest import in_make_test
from secateur.gen.cli import main
from secateur.gen.compile import UnsupportedModel
from secateur.gen.compile.flow import compile_model, load_model
from secateur.gen.safeio import UsageError
from secateur.models import network as nw

ENGINES = ["ternary", "dense", "lfsr", "permdiag", "cim"]
PE = {"ternary": 4, "dense": 4, "lfsr": 4, "permdiag": 4, "cim": 1}
TEST_IMAGES = 96
SUPPORTED = re.escape("; supported: Gemm, MatMul (constant weight), Add (constant bias or "
                      "residual), Conv (2-D, groups 1, dilation 1), BatchNormalization, Relu, "
                      "MaxPool, AveragePool, GlobalAveragePool, Flatten, Reshape to (B, -1), "
                      "Identity, Dropout, and a trailing Softmax")


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(),
                                  nn.Dropout(0.1), nn.Linear(16, 10))

    def forward(self, x):
        return self.body(x)


class CNN(nn.Module):
    """Conv+BN+ReLU, MaxPool, a 2x2 stride-2 conv, a residual Add, GlobalAveragePool, Linear."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 16, 2, stride=2), nn.BatchNorm2d(16)
        self.conv3 = nn.Conv2d(16, 16, 1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(x + self.conv3(x))
        return torch.softmax(self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1)), dim=1)


def _train(model, x, y, epochs, lr=1e-2):
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        for start in range(0, x.shape[0], 64):
            optimizer.zero_grad()
            out = model(x[start:start + 64])
            loss = (F.nll_loss(torch.log(out + 1e-9), y[start:start + 64])
                    if isinstance(model, CNN) else F.cross_entropy(out, y[start:start + 64]))
            loss.backward()
            optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def digits():
    x_train, y_train, x_test, y_test = nw.load_digits_split()
    return (x_train, y_train, x_test[:TEST_IMAGES], y_test[:TEST_IMAGES])


def _export_onnx(model, example, path, dynamo=False):
    kwargs = {} if dynamo else {"input_names": ["x"], "dynamic_axes": {"x": {0: "batch"}}}
    torch.onnx.export(model, (example,), str(path), dynamo=dynamo, **kwargs)
    return path


@pytest.fixture(scope="module")
def mlp(digits, tmp_path_factory):
    torch.manual_seed(0)
    model = _train(MLP(), digits[0], digits[1], epochs=8, lr=3e-3)
    return model, _export_onnx(model, digits[0][:2], tmp_path_factory.mktemp("mlp") / "mlp.onnx")


@pytest.fixture(scope="module")
def cnn(digits, tmp_path_factory):
    torch.manual_seed(0)
    images = digits[0].reshape(-1, 1, 8, 8)
    return _train(CNN(), images, digits[1], epochs=6)


def _compile(path_or_model, digits, engine, tmp_path=None, images=False, **kwargs):
    x_train, _, x_test, y_test = digits
    if images:
        x_train, x_test = x_train.reshape(-1, 1, 8, 8), x_test.reshape(-1, 1, 8, 8)
    model = path_or_model if hasattr(path_or_model, "graph") else load_model(path_or_model)
    return compile_model(model, x_train.numpy(), engine, pe=PE[engine], out=tmp_path,
                         test=x_test.numpy(), labels=y_test.numpy(), progress=False, **kwargs)


def _bit_exact(report):
    assert report["mismatches"] == 0 and report["first_mismatch"] is None
    assert all(layer["mismatches"] == 0 for layer in report["layers"])
    assert report["rtl_accuracy"] == report["golden_accuracy"]


# --------------------------------------------------------------------------- bit-exact

@pytest.mark.sim
@pytest.mark.parametrize("engine", ENGINES)
def test_mlp_with_biases_and_batchnorm_is_bit_exact_on_every_engine(mlp, digits, engine):
    report = _compile(mlp[1], digits, engine)
    _bit_exact(report)
    assert report["images"] == TEST_IMAGES and report["cycles_per_inference"] > 0
    assert any("BatchNormalization" in note and "folded into Gemm" in note
               for note in report["lowerings"])
    if engine in ("dense", "cim"):  # int8 everywhere: within a point or two of float
        assert report["golden_accuracy"] >= report["float_accuracy"] - 0.03
        assert report["agreement"] >= 0.95


@pytest.mark.sim
@pytest.mark.parametrize("engine, exporter", in_make_test(
    [("ternary", "onnx"), ("dense", "dynamo"), ("lfsr", "pt2"), ("dense", "onnx"),
     ("ternary", "pt2"), ("lfsr", "onnx")], {0, 1, 2}, unpack=True))
def test_cnn_with_residual_and_pooling_is_bit_exact(cnn, digits, engine, exporter, tmp_path):
    example = digits[0][:2].reshape(-1, 1, 8, 8)
    if exporter == "pt2":
        path = tmp_path / "cnn.pt2"
        torch.export.save(torch.export.export(cnn, (example,)), str(path))
    else:
        path = _export_onnx(cnn, example, tmp_path / "cnn.onnx", dynamo=exporter == "dynamo")
    settings = {"density": "1.0"} if engine == "lfsr" else None
    report = _compile(path, digits, engine, images=True, settings=settings)
    _bit_exact(report)
    assert any("softmax" in note.lower() and "dropped" in note for note in report["lowerings"])
    assert any("fused into" in note and "host add" in note for note in report["lowerings"])
    if engine != "ternary":  # the integer network tracks the float one
        assert report["agreement"] >= 0.9, report["agreement"]


@pytest.mark.sim
def test_python_api_takes_an_nn_module(mlp, digits):
    x_train, _, x_test, y_test = digits
    report = secateur.compile(mlp[0], x_train, engine="dense", pe=4, test=x_test,
                              labels=y_test)
    _bit_exact(report)
    assert report["model"]["format"] == "torch.nn.Module"


def test_ptq_calibrates_on_the_compressed_network_and_corrects_it(mlp, digits):
    """Layer 0's output scale comes from its own compressed outputs (reconstructed weights
    and corrected bias, as exported), not from the float model's."""
    from secateur.gen.compile import flow
    from secateur.gen.compile.ir import evaluate
    from secateur.models import quantize as q
    calib = digits[0].numpy()
    graph, net, _ = flow._quantized(load_model(mlp[1]), calib, "lfsr", {"density": 0.25}, False)
    step, weights = next(step for step in net.steps if step["op"] == "engine"), net.layers[0]
    assert step["reconstructed"] and step["bias_corrected"] and step["bias"]
    x = q.quantize_activations(calib, net.input_scale).astype(np.int64)
    acc = x @ weights["w"].astype(np.int64).T + weights["bias"]
    values = acc * step["scales"]["input"] * np.asarray(step["scales"]["weight"])
    assert step["scales"]["output"] == pytest.approx(q.activation_scale(np.maximum(values, 0)),
                                                     rel=1e-12)
    float_values = evaluate(graph, calib)[step["tensor"]]
    assert step["scales"]["output"] != q.activation_scale(float_values)


# --------------------------------------------------------------------------- refusals

def _tiny_model(path, nodes, initializers=(), input_shape=(1, 4), opset=17, domains=()):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])],
        [numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)
         for name, value in initializers])
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(domain, 1)
                                                 for domain in domains]
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))
    return path


def _gemm(name, inputs, output, rows=4):
    return helper.make_node("Gemm", inputs, [output], name=name, transB=1)


def _conv_model(path, **attrs):
    return _tiny_model(path, [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", **attrs)],
                       [("w", np.ones((2, 2 // attrs.get("group", 1), 3, 3)))],
                       input_shape=(1, 2, 8, 8))


REFUSALS = {
    "sigmoid": (lambda path: _tiny_model(path, [helper.make_node("Sigmoid", ["x"], ["y"],
                                                                 name="sig")]),
                r"^Sigmoid node 'sig' is not supported" + SUPPORTED + "$"),
    "lstm": (lambda path: _tiny_model(
        path, [helper.make_node("LSTM", ["x", "w", "r"], ["y"], name="lstm", hidden_size=2)],
        [("w", np.ones((1, 8, 4))), ("r", np.ones((1, 8, 2)))], input_shape=(3, 1, 4)),
             r"^LSTM node 'lstm' is not supported" + SUPPORTED + "$"),
    "softmax_before_end": (lambda path: _tiny_model(
        path, [_gemm("fc1", ["x", "w", "b"], "h"),
               helper.make_node("Softmax", ["h"], ["s"], name="soft", axis=1),
               _gemm("fc2", ["s", "w", "b"], "y")],
        [("w", np.eye(4)), ("b", np.zeros(4))]),
        r"^Softmax node 'soft' is not the last node \(only a trailing Softmax is supported, and "
        r"dropped\)" + SUPPORTED + "$"),
    "groups": (lambda path: _conv_model(path, group=2),
               r"^Conv node 'conv' has groups = 2; only groups = 1 is supported" + SUPPORTED
               + "$"),
    "dilation": (lambda path: _conv_model(path, dilations=[2, 2]),
                 r"^Conv node 'conv' has dilations \[2, 2\]; only dilation 1 is supported"
                 + SUPPORTED + "$"),
    "non_constant_weight": (lambda path: _tiny_model(
        path, [helper.make_node("Relu", ["x"], ["r"], name="relu"),
               helper.make_node("MatMul", ["x", "r"], ["y"], name="mm")]),
        r"^MatMul node 'mm' has a non-constant weight \(r\)" + SUPPORTED + "$"),
    "reshape": (lambda path: _tiny_model(
        path, [helper.make_node("Reshape", ["x", "shape"], ["y"], name="view")],
        [("shape", np.array([2, 2]))], input_shape=("B", 4)),
        r"^Reshape node 'view' reshapes \['B', 4\] to \[2, 2\]; only Reshape to \(B, -1\) is "
        r"supported" + SUPPORTED + "$"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_every_refusal_names_the_op_and_node(case, tmp_path):
    build, message = REFUSALS[case]
    if case == "reshape":  # a shape constant needs an int64 initializer
        path = tmp_path / "m.onnx"
        graph = helper.make_graph(
            [helper.make_node("Reshape", ["x", "shape"], ["y"], name="view")], "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])],
            [numpy_helper.from_array(np.array([2, 2], dtype=np.int64), "shape")])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    else:
        path = build(tmp_path / "m.onnx")
    with pytest.raises(UnsupportedModel, match=message):
        model = load_model(path)
        compile_model(model, np.zeros((2,) + model.graph.input_shape, np.float32), "dense")


def test_truncated_and_foreign_model_files_are_refused(mlp, tmp_path):
    data = mlp[1].read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[:len(data) // 2])
    with pytest.raises(UsageError, match=r"^model file .*cut.onnx is not a valid ONNX model"):
        load_model(tmp_path / "cut.onnx")
    (tmp_path / "text.onnx").write_text("hello")
    with pytest.raises(UsageError, match=r"^model file .*text.onnx is not a valid ONNX model"):
        load_model(tmp_path / "text.onnx")
    (tmp_path / "m.tflite").write_bytes(data)
    with pytest.raises(UsageError, match=r"^model file .*m.tflite has an unknown type "
                                         r"'.tflite'; give an .onnx file \(torch.onnx.export\) "
                                         r"or a .pt2 file \(torch.export.save\)$"):
        load_model(tmp_path / "m.tflite")
    (tmp_path / "m.pt2").write_bytes(data)
    with pytest.raises(UsageError, match=r"^model file .*m.pt2 is not a .pt2 archive"):
        load_model(tmp_path / "m.pt2")


def test_an_old_opset_is_refused(tmp_path):
    path = _tiny_model(tmp_path / "m.onnx", [helper.make_node("Relu", ["x"], ["y"])], opset=11)
    with pytest.raises(UsageError, match=r"^the ONNX model uses opset 11; secateur compile reads "
                                         r"opset 13 or later"):
        load_model(path)


def test_a_model_that_ends_in_a_host_op_is_refused(tmp_path):
    path = _tiny_model(tmp_path / "m.onnx", [_gemm("fc", ["x", "w", "b"], "h"),
                                             helper.make_node("Relu", ["h"], ["y"], name="r")],
                       [("w", np.eye(4)), ("b", np.zeros(4))])
    with pytest.raises(UnsupportedModel, match=r"^the last layer Gemm fc ends in a ReLU; the "
                                               r"last engine layer returns raw logits"):
        compile_model(load_model(path), np.zeros((2, 4), np.float32), "dense")


def test_a_bias_outside_the_engines_range_is_refused_naming_the_layer(tmp_path):
    path = _tiny_model(tmp_path / "m.onnx", [_gemm("fc", ["x", "w", "b"], "y")],
                       [("w", np.eye(4) * 1e-3), ("b", [1e9, 0, 0, 0])])
    with pytest.raises(ValueError, match=r"^layer 0 \(Gemm fc\): the quantized bias of row 0 is "
                                         r"\d+, outside the engine's 32-bit bias range "
                                         r"\[-2147483648, 2147483647\]$"):
        compile_model(load_model(path), np.ones((2, 4), np.float32), "dense")


def test_inputs_of_the_wrong_shape_or_dtype_are_refused_before_any_work(mlp):
    model = load_model(mlp[1])
    with pytest.raises(UsageError, match=r"^calibration inputs has shape \(2, 63\); the model "
                                         r"takes \(B, 64\)$"):
        compile_model(model, np.zeros((2, 63), np.float32), "dense")
    with pytest.raises(UsageError, match=r"^calibration inputs must be float32 model inputs, "
                                         r"not int8$"):
        compile_model(model, np.zeros((2, 64), np.int8), "dense")


# --------------------------------------------------------------------------- CLI

def _cli(capsys, *argv):
    status = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_cli_refusal_is_one_line_and_exit_2(capsys, tmp_path):
    path = REFUSALS["sigmoid"][0](tmp_path / "m.onnx")
    np.save(tmp_path / "calib.npy", np.zeros((2, 4), np.float32))
    status, _, err = _cli(capsys, "compile", path, "--engine", "dense", "--calib",
                          tmp_path / "calib.npy", "--out", tmp_path / "out", "--quiet")
    assert status == 2 and err.count("\n") == 1
    assert err.startswith("secateur: error: Sigmoid node 'sig' is not supported; supported: ")
    np.save(tmp_path / "bad.npy", np.zeros((2, 5), np.float32))
    path = _tiny_model(tmp_path / "fc.onnx", [_gemm("fc", ["x", "w", "b"], "y")],
                       [("w", np.eye(4)), ("b", np.zeros(4))])
    status, _, err = _cli(capsys, "compile", path, "--engine", "dense", "--calib",
                          tmp_path / "bad.npy", "--out", tmp_path / "out", "--quiet")
    assert status == 2 and "has shape (2, 5); the model takes (B, 4)" in err


@pytest.mark.sim
def test_cli_output_directory_replays_with_run_and_run_net(capsys, mlp, digits, tmp_path):
    x_train, _, x_test, y_test = digits
    for name, value in (("calib", x_train), ("x", x_test), ("y", y_test)):
        np.save(tmp_path / f"{name}.npy", value.numpy())
    out = tmp_path / "out"
    status, stdout, err = _cli(capsys, "compile", mlp[1], "--engine", "dense", "--pe", 4,
                               "--calib", tmp_path / "calib.npy", "--out", out, "--test",
                               tmp_path / "x.npy", "--labels", tmp_path / "y.npy", "--report",
                               tmp_path / "r.json", "--quiet")
    assert status == 0, err
    assert sorted(path.name for path in out.iterdir()) == [
        "golden_logits.npy", "inputs.npy", "layer0.npz", "layer1.npz", "network.json",
        "rtl_logits.npy"]
    network = json.loads((out / "network.json").read_text())
    engine_steps = [step for step in network["steps"] if step["op"] == "engine"]
    assert [step["file"] for step in engine_steps] == ["layer0.npz", "layer1.npz"]
    assert engine_steps[0]["relu"] and engine_steps[-1]["raw"]
    layer0 = np.load(out / "layer0.npz")
    assert {"w", "bias", "mult", "shift", "relu"} <= set(layer0.files)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["mismatches"] == 0 and "agreement" in report and report["layers"]
    np.testing.assert_array_equal(np.load(out / "rtl_logits.npy"),
                                  np.load(out / "golden_logits.npy"))

    replay = engine_steps[0]["replay"].split()[1:]
    replay[replay.index("--weights") + 1] = str(out / "layer0.npz")
    replay[replay.index("--inputs") + 1] = str(out / "inputs.npy")
    replay[replay.index("--out") + 1] = str(tmp_path / "y0.npy")
    status, stdout, err = _cli(capsys, *replay)
    assert status == 0 and "0 mismatches" in stdout, err

    status, stdout, err = _cli(capsys, "run-net", out, "--inputs", tmp_path / "x.npy", "--out",
                               tmp_path / "logits.npy", "--quiet")
    assert status == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "logits.npy"),
                                  np.load(out / "rtl_logits.npy"))


def test_cli_refuses_an_output_that_is_an_input(capsys, mlp, tmp_path):
    np.save(tmp_path / "calib.npy", np.zeros((2, 64), np.float32))
    status, _, err = _cli(capsys, "compile", mlp[1], "--engine", "dense", "--calib",
                          tmp_path / "calib.npy", "--out", tmp_path, "--report", mlp[1])
    assert status == 2 and "is the same file as MODEL; refusing to overwrite an input" in err
    np.save(tmp_path / "inputs.npy", np.zeros((2, 64), np.float32))
    status, _, err = _cli(capsys, "compile", mlp[1], "--engine", "dense", "--calib",
                          tmp_path / "inputs.npy", "--out", tmp_path)
    assert status == 2 and "--out file inputs.npy" in err and "same file as --calib" in err


def test_compile_is_exported_lazily_from_the_package():
    import secateur.gen.compile
    assert secateur.compile is secateur.gen.compile.compile
    assert "compile" in secateur.__all__


@pytest.mark.sim
@pytest.mark.parametrize("engine", ["dense", "ternary"])
def test_layers_larger_than_the_engine_compile_in_tiles(mlp, digits, engine):
    """The MLP's 16 x 64 and 10 x 16 layers on an instance of at most 8 x 24: every layer in
    tiles (gen/tiling.py), the first in rows and columns, still bit-exact."""
    report = _compile(mlp[1], digits, engine, settings={"max_rows": 8, "max_cols": 24})
    _bit_exact(report)
    assert report["params"]["max_rows"] == 8 and report["params"]["max_cols"] == 24
    tiles = [layer["tiles"] for layer in report["layers"]]
    assert min(tiles) >= 2 and max(tiles) >= 6, tiles


# --------------------------------------------------------------------------- --compress qat

#: A few epochs of each engine's training: seconds on the test MLP.
QAT_SETTINGS = {
    "ternary": {"epochs": "2", "warmup": "1", "qat_epochs": "1"},
    "lfsr": {"epochs": "1", "stages": "2", "qat_epochs": "1"},
    "permdiag": {"epochs": "2", "qat_epochs": "1"},
    "dense": {"qat_epochs": "2"},
    "cim": {"epochs": "1", "qat_epochs": "1"},
}
QAT_TRAIN = 512


def _finetune_data(digits):
    return {"x": digits[0][:QAT_TRAIN].numpy(), "y": digits[1][:QAT_TRAIN].numpy()}


@pytest.mark.sim
@pytest.mark.parametrize("engine", ENGINES)
def test_qat_trains_every_engine_family_and_compiles_bit_exactly(mlp, digits, engine):
    report = _compile(mlp[1], digits, engine, compress="qat", finetune_data=_finetune_data(digits),
                      settings=QAT_SETTINGS[engine])
    _bit_exact(report)
    tuning = report["finetune"]
    assert tuning["epochs"] == nw.HOOKS[engine].epochs(tuning["options"]) > 0
    assert tuning["images"] == QAT_TRAIN and tuning["options"]["seed"] == 0
    assert list(report["stages"]) == ["float", "compressed", "finetuned", "golden", "rtl"]
    assert report["stages"]["golden"] == report["golden_accuracy"]
    # The integer network is the trained one: it tracks the trained float network.
    assert abs(report["stages"]["finetuned"] - report["golden_accuracy"]) <= 0.05, report["stages"]
    if engine == "ternary":
        assert tuning["info"]["zero_group_fraction"][0] == 0.5  # PE-wise pruning happened


def _trained_and_quantized(mlp, digits, engine):
    """finetune() and the quantization of its graph, without the RTL."""
    import copy
    from secateur.gen.compile import flow
    from secateur.gen.compile.lower import lower
    from secateur.gen.registry import make_engine
    model = load_model(mlp[1])
    options, user, training = flow._split_settings(engine, QAT_SETTINGS[engine], "qat")
    graph = lower(copy.deepcopy(model.graph))
    calib = digits[0].numpy()
    ptq = flow._quantize_graph(graph, calib, engine, options, False)
    built = make_engine(engine, **flow._engine_settings(engine, ptq.layers, user, PE[engine]))
    data = _finetune_data(digits)
    trained, _ = flow.finetune(graph, (data["x"], data["y"]), built, training, progress=False)
    return trained, flow._quantize_graph(trained, calib, engine, options, False, trained=True)


@pytest.mark.parametrize("engine", ["ternary", "lfsr", "permdiag", "dense"])
def test_qat_exports_the_structure_and_weights_the_training_saw(mlp, digits, engine):
    from secateur.models import lfsr_pruning, permdiag, quantize as q
    trained, net = _trained_and_quantized(mlp, digits, engine)
    nodes = [node for node in trained.nodes if node.op == "linear"]
    for node, weights in zip(nodes, net.layers):
        structure, weight = node.attrs["structure"], node.attrs["weight"]
        if engine == "ternary":  # the trained codes, one alpha per row
            np.testing.assert_array_equal(weights["w"], structure["codes"])
            assert structure["alpha"].shape == (weight.shape[0],)
        elif engine == "lfsr":  # the trained seeds, the trained weights rounded
            np.testing.assert_array_equal(weights["seeds"], structure["seeds"])
            assert int(weights["k"]) == int(structure["k"]) < weight.shape[1]
            kept = lfsr_pruning.lfsr_mask(weight.shape[1], int(weights["k"]),
                                          weights["seeds"]).numpy()
            assert not weights["w"][~kept].any() and not weight[~kept].any()
        elif engine == "permdiag":  # on the trained offsets
            kept = permdiag.structure_mask(structure["offsets"], 4)
            assert weights["w"].shape == kept.shape and not weights["w"][~kept].any()
        else:
            assert structure == {}
        if engine in ("lfsr", "dense"):  # int8 of the trained weights, as fake_int8 saw it
            per_channel = node is not nodes[-1]
            codes, _ = q.int8_weights(weight, per_channel)
            np.testing.assert_array_equal(weights["w"], codes)


def test_qat_refusals_name_what_is_missing(mlp):
    model = load_model(mlp[1])
    calib = np.zeros((2, 64), np.float32)
    with pytest.raises(UsageError, match=r"^--compress qat needs --finetune TRAIN.npz \(keys x "
                                         r"and y: training inputs and their integer labels\)$"):
        compile_model(model, calib, "dense", compress="qat")
    with pytest.raises(UsageError, match=r"^--finetune goes with --compress qat$"):
        compile_model(model, calib, "dense", finetune_data={"x": calib, "y": np.zeros(2, int)})
    for keys in ({"x": calib}, {"x": calib, "labels": np.zeros(2, int)},
                 {"x": calib, "y": np.zeros(2, int), "z": calib}):
        with pytest.raises(UsageError, match=r"^--finetune data has keys \[.*\]; it must hold "
                                             r"exactly x \(float32 model inputs\) and y \(their "
                                             r"integer labels\)$"):
            compile_model(model, calib, "dense", compress="qat", finetune_data=keys)
    with pytest.raises(UsageError, match=r"^--finetune x has shape \(2, 63\); the model takes "
                                         r"\(B, 64\)$"):
        compile_model(model, calib, "dense", compress="qat",
                      finetune_data={"x": np.zeros((2, 63), np.float32), "y": np.zeros(2, int)})
    with pytest.raises(UsageError, match=r"^--finetune x must be float32 model inputs, not "
                                         r"int64$"):
        compile_model(model, calib, "dense", compress="qat",
                      finetune_data={"x": np.zeros((2, 64), int), "y": np.zeros(2, int)})
    with pytest.raises(UsageError, match=r"^--finetune y must be 2 integers, shape \(2,\), not "
                                         r"float64 \(2,\)$"):
        compile_model(model, calib, "dense", compress="qat",
                      finetune_data={"x": calib, "y": np.zeros(2)})
    with pytest.raises(ValueError, match=r"^secateur compile has no setting epochs for the dense "
                                         r"engine; options: none; engine parameters: "):
        compile_model(model, calib, "dense", settings={"epochs": "3"})


def test_cli_qat_refusals(capsys, mlp, tmp_path):
    np.save(tmp_path / "calib.npy", np.zeros((2, 64), np.float32))
    base = ["compile", mlp[1], "--engine", "dense", "--calib", tmp_path / "calib.npy", "--out",
            tmp_path / "out", "--quiet"]
    status, _, err = _cli(capsys, *base, "--compress", "qat")
    assert status == 2 and err == ("secateur: error: --compress qat needs --finetune TRAIN.npz "
                                   "(keys x and y: training inputs and their integer labels)\n")
    np.savez(tmp_path / "train.npz", x=np.zeros((2, 64), np.float32))
    status, _, err = _cli(capsys, *base, "--finetune", tmp_path / "train.npz")
    assert status == 2 and err == "secateur: error: --finetune goes with --compress qat\n"
    status, _, err = _cli(capsys, *base, "--compress", "qat", "--finetune",
                          tmp_path / "train.npz")
    assert status == 2 and err == ("secateur: error: --finetune data has keys ['x']; it must "
                                   "hold exactly x (float32 model inputs) and y (their integer "
                                   "labels)\n")


@pytest.mark.sim
def test_cli_compiles_with_qat(capsys, mlp, digits, tmp_path):
    x_train, y_train, x_test, y_test = digits
    np.save(tmp_path / "calib.npy", x_train.numpy())
    np.save(tmp_path / "x.npy", x_test.numpy())
    np.save(tmp_path / "y.npy", y_test.numpy())
    np.savez(tmp_path / "train.npz", **_finetune_data(digits))
    status, stdout, err = _cli(capsys, "compile", mlp[1], "--engine", "dense", "--pe", 4,
                               "--calib", tmp_path / "calib.npy", "--out", tmp_path / "out",
                               "--test", tmp_path / "x.npy", "--labels", tmp_path / "y.npy",
                               "--compress", "qat", "--finetune", tmp_path / "train.npz",
                               "--set", "qat_epochs=1", "--report", tmp_path / "r.json",
                               "--quiet")
    assert status == 0, err
    assert "0 mismatches" in stdout and "; fine-tuned 1 epochs in " in stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["compress"] == "qat" and report["finetune"]["options"]["qat_epochs"] == 1


def test_the_trainable_graph_is_the_float_graph(cnn, digits, tmp_path):
    """GraphModule (conv by im2col, pools with padding, residual add) equals ir.evaluate in
    float64, and records every tensor the integer network quantizes."""
    import copy
    from secateur.gen.compile.ir import evaluate
    from secateur.gen.compile.lower import lower
    from secateur.gen.compile.trainable import GraphModule, trained_graph

    class Pools(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=(0, 1))
            self.fc = nn.Linear(4 * 3 * 5, 10)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv(x)), 3, stride=2, padding=1)
            x = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
            x = F.avg_pool2d(x, (1, 2), stride=1, padding=(0, 1), count_include_pad=True)
            return self.fc(x.flatten(1))

    torch.manual_seed(0)
    images = digits[2][:8].reshape(-1, 1, 8, 8)
    for model, quantized in ((cnn, 5), (Pools().eval(), 2)):
        path = _export_onnx(model, images[:2], tmp_path / "m.onnx")
        graph = lower(copy.deepcopy(load_model(path).graph))
        module = GraphModule(graph)
        record = []
        x = images.numpy().astype(np.float64)
        ours = module(torch.from_numpy(x), record=record).detach().numpy()
        np.testing.assert_allclose(ours, evaluate(graph, x)[graph.output].reshape(8, -1),
                                   rtol=0, atol=1e-12)
        assert len(record) == quantized
        back = trained_graph(module)
        for before, after in zip(graph.nodes, back.nodes):
            if "weight" in before.attrs:
                np.testing.assert_array_equal(before.attrs["weight"], after.attrs["weight"])
                assert after.attrs["structure"] == {}
