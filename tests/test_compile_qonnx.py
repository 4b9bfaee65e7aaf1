"""``secateur compile`` on QONNX models (gen/compile/qonnx_import.py): QONNX graphs built here
with onnx.helper exactly as Brevitas' QONNX export lays them out (a weight ``Quant`` on an
initializer feeding Gemm or Conv, an activation ``Quant`` after the input and after each Relu,
a bias as a float or as an int32 ``Quant``), compiled with their own quantization and checked
against qonnx's executor (``qonnx.core.onnx_exec.execute_onnx``), the float reference; one
RTL run; every refusal through the CLI.

Brevitas itself is not pinned (it needs setuptools < 81; requirements.lock has 84), so the
graphs are built by hand, and a Brevitas-trained model is not among the tests.

What the layer checks assert, and why: a layer's integer output is
``requant(acc + bias)`` with ``acc = q_in @ w_int.T`` exact, while the QONNX model computes
``rint(relu?(s_in s_w acc + b) / s_out)`` in float32. The two agree unless the exact value
``r = (acc + bias) * s_in s_w / s_out`` lies within the requantizer's error of a rounding
boundary (a half-integer): ``mult / 2**shift`` approximates the ratio of scales (16-bit
multiplier) and rounds halves up where ``rint`` rounds them to even. So, fed QONNX's own
integer inputs, every element farther than that error (plus float32's) from a half-integer
must be equal, the others may differ by at most 1, and those exempt elements must be rare
(under 2 %), so the check cannot pass vacuously.
"""

import json
import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import in_make_test
from secateur.gen.cli import main
from secateur.gen.compile import flow
from secateur.gen.compile.flow import compile_model, load_model
from secateur.gen.registry import make_engine
from secateur.models import hostops, quantize as q

DOMAIN = "qonnx.custom_op.general"
SUPPORTED = re.escape("; supported: Gemm, MatMul (constant weight), Add (constant bias or "
                      "residual), Conv (2-D, groups 1, dilation 1), BatchNormalization, Relu, "
                      "MaxPool, AveragePool, GlobalAveragePool, Flatten, Reshape to (B, -1), "
                      "Identity, Dropout, and a trailing Softmax")
CALIB, TEST = 128, 256


class QonnxBuilder:
    """A QONNX graph as Brevitas exports it: ``Quant`` nodes in qonnx's domain with inputs
    (x, scale, zeropt, bitwidth) and attributes signed, narrow, rounding_mode."""

    def __init__(self, shape):
        self.shape, self.nodes, self.inits = tuple(shape), [], []

    def const(self, name, value, dtype=np.float32):
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def quant(self, name, x, scale, bits, signed=1, narrow=0, zero=0.0, rounding="ROUND",
              op="Quant"):
        inputs = [x, scale if isinstance(scale, str) else self.const(name + "_scale", scale),
                  self.const(name + "_zeropt", zero), self.const(name + "_bitwidth", bits)]
        attrs = {"signed": signed, "narrow": narrow, "rounding_mode": rounding}
        if op == "BipolarQuant":
            inputs, attrs = inputs[:2], {}
        elif op == "Trunc":
            attrs = {"rounding_mode": rounding}
            inputs.insert(3, self.const(name + "_inbits", 16.0))
        self.nodes.append(helper.make_node(op, inputs, [name + "_out"], name=name,
                                           domain=DOMAIN, **attrs))
        return name + "_out"

    def weight(self, name, value, bits=8, per_channel=True, narrow=1, **kwargs):
        """``value`` quantized by a weight Quant of ``bits`` bits, its scale per output
        channel (axis 0) or per tensor; returns the Quant's output and its integers."""
        value = np.asarray(value, np.float64)
        axes = tuple(range(1, value.ndim))
        top = (1 << (bits - 1)) - 1
        scale = (np.abs(value).max(axis=axes, keepdims=True) if per_channel else
                 np.abs(value).max()) / top
        scale = np.asarray(scale, np.float32)
        out = self.quant(f"q_{name}", self.const(name, value), scale, bits, narrow=narrow,
                         **kwargs)
        return out, scale

    def node(self, op, inputs, name, **attrs):
        self.nodes.append(helper.make_node(op, inputs, [name + "_out"], name=name, **attrs))
        return name + "_out"

    def save(self, path, output, classes, batch="B"):
        graph = helper.make_graph(
            self.nodes, "qonnx",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, *self.shape])],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, [batch, classes])],
            self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                        helper.make_opsetid(DOMAIN, 1)])
        onnx.save(model, str(path))
        return path


def _bias(b, name, rng, rows, s_in=None, s_w=None):
    """A float bias, or with ``s_in`` Brevitas' Int32Bias: a 32-bit Quant at ``s_in * s_w``."""
    bias = b.const(name, rng.normal(0, 0.2, rows))
    if s_in is None:
        return bias
    return b.quant(f"q_{name}", bias, np.asarray(s_in * s_w, np.float32).reshape(-1), 32)


def qonnx_mlp(path, rng, bits=8, sizes=(64, 16, 10), int32_bias=True, last_per_channel=False,
              hidden_int32_bias=False):
    """Quant(x) -> Gemm(Quant(W1) per channel, b1) -> Relu -> Quant(unsigned 7) ->
    Gemm(Quant(W2) per tensor, b2); b1 float unless ``hidden_int32_bias``, b2 an int32 Quant
    at ``s_a1 * s_w2`` unless not ``int32_bias``."""
    b = QonnxBuilder((sizes[0],))
    x = b.quant("q_in", "x", 1 / 40, 8)
    w1, s1 = b.weight("w1", rng.normal(0, 1 / np.sqrt(sizes[0]), (sizes[1], sizes[0])), bits)
    bias = _bias(b, "b1", rng, sizes[1], *((1 / 40, s1) if hidden_int32_bias else ()))
    x = b.node("Gemm", [x, w1, bias], "fc1", transB=1)
    x = b.quant("q_a1", b.node("Relu", [x], "relu1"), 1 / 48, 7, signed=0)
    w2, s2 = b.weight("w2", rng.normal(0, 1 / np.sqrt(sizes[1]), (sizes[2], sizes[1])), bits,
                      per_channel=last_per_channel)
    bias = _bias(b, "b2", rng, sizes[2], *((1 / 48, s2) if int32_bias else ()))
    return b.save(path, b.node("Gemm", [x, w2, bias], "fc2", transB=1), sizes[2])


def qonnx_cnn(path, rng, bits=8, hidden_int32_bias=False):
    """Quant(x) -> Conv 3x3 -> Relu -> Quant(unsigned 7) -> MaxPool 2 -> Conv 3x3 -> Relu ->
    Quant(signed 8) -> Flatten -> Gemm, weight Quants per channel (the Gemm's per tensor);
    the convs' biases float unless ``hidden_int32_bias``, the Gemm's float."""
    b = QonnxBuilder((1, 8, 8))
    x = b.quant("q_in", "x", 1 / 40, 8)
    w, s = b.weight("w1", rng.normal(0, 1 / 3, (4, 1, 3, 3)), bits)
    bias = _bias(b, "b1", rng, 4, *((1 / 40, s) if hidden_int32_bias else ()))
    x = b.node("Conv", [x, w, bias], "conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    x = b.quant("q_a1", b.node("Relu", [x], "relu1"), 1 / 48, 7, signed=0)
    x = b.node("MaxPool", [x], "pool", kernel_shape=[2, 2], strides=[2, 2])
    w, s = b.weight("w2", rng.normal(0, 1 / 6, (8, 4, 3, 3)), bits)
    bias = _bias(b, "b2", rng, 8, *((1 / 48, s) if hidden_int32_bias else ()))
    x = b.node("Conv", [x, w, bias], "conv2", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    x = b.quant("q_a2", b.node("Relu", [x], "relu2"), 1 / 40, 8)
    x = b.node("Flatten", [x], "flat", axis=1)
    w, _ = b.weight("w3", rng.normal(0, 1 / 11, (10, 128)), bits, per_channel=False)
    return b.save(path, b.node("Gemm", [x, w, _bias(b, "b3", rng, 10)], "fc", transB=1), 10)


#: Per model: the engine steps' source node -> the Quant node whose integers are its output.
OUTPUT_QUANTS = {"mlp": {"Gemm fc1": "q_a1"},
                 "cnn": {"Conv conv1": "q_a1", "Conv conv2": "q_a2"}}
BUILD = {"mlp": qonnx_mlp, "cnn": qonnx_cnn}


def _inputs(rng, shape, count):
    return rng.normal(0, 1, (count, *shape)).astype(np.float32)


def _qonnx_context(path, x):
    """Every tensor of qonnx's float execution of ``path`` on ``x`` (one batch)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.change_batchsize import ChangeBatchSize
    from qonnx.transformation.infer_shapes import InferShapes
    model = ModelWrapper(str(path)).transform(ChangeBatchSize(x.shape[0]))
    model = model.transform(InferShapes())
    return execute_onnx(model, {"x": x}, return_full_exec_context=True)


def _integers(values):
    """QONNX's fake-quant values over their scale: integers, but for float32's rounding."""
    ints = np.rint(values)
    np.testing.assert_allclose(values, ints, rtol=0, atol=1e-4)
    return ints


def _compiled(path, engine, calib):
    """The quantized network and its engine layers (the golden model), no RTL."""
    model = load_model(path)
    options, user, _ = flow._split_settings(engine, {})
    _, net, _ = flow._quantized(model, calib, engine, options, False)
    built = make_engine(engine, **flow._engine_settings(engine, net.layers, user, 4))
    return model, net, flow._engine_layers(built, net)


def _golden_logits(net, layers, x):
    logits, _ = flow._golden(net, layers, q.quantize_activations(x, net.input_scale))
    return logits


def _check_layer(step, weights, layer, q_in, q_out, float_bias):
    """One engine layer on QONNX's integer input against QONNX's integer output (module
    docstring); returns the fraction of elements exempt as near a rounding boundary."""
    rows = step["model_rows"]
    vectors = q_in.astype(np.int8)
    ours = layer.reference(np.pad(vectors, ((0, 0), (0, step["cols"] - vectors.shape[1]))))
    ours = ours[:, :rows]
    s_in, s_out = step["scales"]["input"], step["scales"]["output"]
    s_w = np.asarray(step["scales"]["weight"][:rows])
    acc = vectors.astype(np.int64) @ weights["w"][:rows].astype(np.int64).T
    # what the requantizer rounds, and what QONNX rounds (in float64; float32 is in the margin)
    mult = np.broadcast_to(np.asarray(weights["mult"], np.float64), (step["rows"],))[:rows]
    theirs = (acc * (s_in * s_w) + float_bias) / s_out
    ours_exact = (acc + weights["bias"][:rows]) * mult / 2.0 ** int(weights["shift"])
    margin = np.abs(ours_exact - theirs) + 1e-5 * (1 + np.abs(theirs))
    near = np.abs(theirs - np.floor(theirs) - 0.5) <= margin
    assert np.abs(ours - q_out).max() <= 1
    np.testing.assert_array_equal(ours[~near], q_out[~near])
    return float(near.mean())


@pytest.mark.parametrize("kind, engine, bits", [("mlp", "dense", 8), ("cnn", "dense", 8),
                                                ("mlp", "ternary", 2), ("cnn", "ternary", 2)])
def test_the_integer_network_is_the_qonnx_models(kind, engine, bits, tmp_path, seed):
    """The engine weights are the Quants' integers, the scales the Quants' scales, every
    layer's integers equal QONNX's away from the requantizer's rounding, the logits equal
    QONNX's fed the same integers, and the argmax agrees with qonnx's float execution."""
    rng = np.random.default_rng(seed)
    # A float bias is rounded to the accumulator's scale s_in * s_w: exact enough beside int8
    # weights, but beside ternary ones (s_w = max|w|) it moves r by up to 0.4, so that most
    # elements are near a boundary; there the biases are Brevitas' Int32Bias, as exact.
    path = BUILD[kind](tmp_path / f"{kind}.onnx", rng, bits=bits, hidden_int32_bias=bits == 2)
    shape = (64,) if kind == "mlp" else (1, 8, 8)
    calib, x = _inputs(rng, shape, CALIB), _inputs(rng, shape, TEST)
    model, net, layers = _compiled(path, engine, calib)
    context = _qonnx_context(path, x)
    onnx_model = onnx.load(str(path))
    inits = {init.name: numpy_helper.to_array(init) for init in onnx_model.graph.initializer}

    assert net.input_scale == float(np.float32(1 / 40)) and net.scale_sources["x"] == "Quant q_in"
    # the input: quantize_activations is the input Quant, exactly
    np.testing.assert_array_equal(q.quantize_activations(x, net.input_scale),
                                  np.rint(context["q_in_out"] / net.input_scale))
    engine_steps = [step for step in net.steps if step["op"] == "engine"]
    exempt = []
    for step, weights, layer in zip(engine_steps, net.layers, layers):
        name = step["source"][0].split()[1]
        index = {"fc1": 1, "fc2": 2, "conv1": 1, "conv2": 2, "fc": 3}[name]
        w_name = f"w{index}"
        quant = next(node for node in onnx_model.graph.node if node.name == f"q_{w_name}")
        w_scale = inits[quant.input[1]].astype(np.float64)
        ints = np.rint(context[quant.output[0]] / w_scale).reshape(weights["w"].shape[0], -1)
        np.testing.assert_array_equal(weights["w"], ints)  # the Quant's integers, not re-rounded
        np.testing.assert_array_equal(step["scales"]["weight"],
                                      np.broadcast_to(w_scale.reshape(-1), (ints.shape[0],)))
        assert step["quantization"]["weights"] == (
            f"the integers and scales of Quant q_{w_name}" if engine == "dense" else
            f"the ternary codes of Quant q_{w_name}, alpha = its scales")
        # QONNX's integer input to this layer, as the engine sees it
        producer = next(node for node in onnx_model.graph.node if node.name == name)
        s_in = step["scales"]["input"]
        q_in = context[producer.input[0]] / s_in
        if "patches" in step["inputs"][0]:
            im2col = next(s for s in net.steps if s["output"] == step["inputs"][0])
            q_in = hostops.im2col(q_in, im2col["kernel"], im2col["stride"], im2col["pads"])
        q_in = _integers(q_in)
        if step["raw"]:  # the logits: acc + bias, at s_in * s_w, equal to QONNX's float logits
            raw = layer.reference(q_in.astype(np.int8))[:, :step["model_rows"]]
            expected = context[producer.output[0]]
            np.testing.assert_allclose(raw * (s_in * w_scale.reshape(-1)), expected,
                                       rtol=0, atol=s_in * float(w_scale.max()) * 0.5 + 1e-4)
            continue
        out_quant = OUTPUT_QUANTS[kind][step["source"][0]]
        s_out = step["scales"]["output"]
        assert step["quantization"]["output_scale"] == f"Quant {out_quant}"
        q_out = _integers(context[f"{out_quant}_out"] / s_out)
        if q_out.ndim == 4:  # (B, O, H, W) -> the engine's rows
            q_out = q_out.transpose(0, 2, 3, 1).reshape(-1, q_out.shape[1])
        node = next(node for node in model.graph.nodes if node.name == name)
        exempt.append(_check_layer(step, weights, layer, q_in, q_out, node.attrs["bias"]))
    assert max(exempt) < 0.02, exempt
    assert net.scale_sources and not [name for name, source in net.scale_sources.items()
                                      if source == "calibrated"]
    agreement = np.mean(_golden_logits(net, layers, x).argmax(1) ==
                        model.reference(x).reshape(TEST, -1).argmax(1))
    print(f"{kind} {engine}: argmax agreement {agreement:.3f}, exempt {exempt}")
    assert agreement >= 0.97, agreement


def test_batchnorm_a_residual_add_and_a_batch_of_one(tmp_path, seed):
    """Brevitas' layout of a residual block, exported with a batch of 1: QuantConv ->
    BatchNormalization (one negative gamma) -> QuantReLU, a second branch, Add -> QuantReLU,
    GlobalAveragePool, Gemm. The folded BN scales the Quant's integers by sign(gamma) and its
    scales by |gamma| / sqrt(var + eps); the add takes its Quant's scale; the integer network
    agrees with qonnx."""
    rng = np.random.default_rng(seed)
    b = QonnxBuilder((2, 6, 6))
    x = b.quant("q_in", "x", 1 / 40, 8)
    w, s1 = b.weight("w1", rng.normal(0, 1 / 4, (4, 2, 3, 3)))
    x = b.node("Conv", [x, w], "conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    gamma = np.array([1.5, -0.7, 0.9, 1.1])
    x = b.node("BatchNormalization", [x, b.const("g", gamma), b.const("beta", rng.normal(0, .1, 4)),
                                      b.const("mean", rng.normal(0, .1, 4)),
                                      b.const("var", np.full(4, 0.8))], "bn1")
    # scales as training leaves them, not simple fractions: 1/48 + 1/32 sums divided by 1/40
    # would be exact ties, which float32 and float64 break differently
    a = b.quant("q_a1", b.node("Relu", [x], "relu1"), 0.0213, 7, signed=0)
    w, _ = b.weight("w2", rng.normal(0, 1 / 2, (4, 4, 1, 1)))
    branch = b.quant("q_a2", b.node("Conv", [a, w], "conv2", kernel_shape=[1, 1]), 0.0297, 8)
    x = b.quant("q_add", b.node("Relu", [b.node("Add", [a, branch], "add")], "relu_add"),
                0.0251, 7, signed=0)
    x = b.node("Flatten", [b.node("GlobalAveragePool", [x], "gap")], "flat", axis=1)
    w, _ = b.weight("w3", rng.normal(0, 1, (10, 4)), per_channel=False)
    path = b.save(tmp_path / "res.onnx", b.node("Gemm", [x, w], "fc", transB=1), 10, batch=1)
    calib, x = _inputs(rng, (2, 6, 6), CALIB), _inputs(rng, (2, 6, 6), TEST)
    model, net, layers = _compiled(path, "dense", calib)
    assert model.graph.batch == 1
    first = net.layers[0]
    bn = gamma / np.sqrt(0.8 + 1e-5)
    ints = np.rint(_qonnx_context(path, x[:1])["q_w1_out"] / s1).reshape(4, -1)
    np.testing.assert_array_equal(first["w"], ints * np.sign(bn)[:, None])
    np.testing.assert_allclose(net.steps[1]["scales"]["weight"], s1.reshape(-1) * np.abs(bn),
                               rtol=1e-6)  # gamma, var and eps are float32 in the file
    add = next(step for step in net.steps if step["op"] == "residual_add")
    assert add["relu"] and net.scale_sources[add["output"]] == "Quant q_add"
    assert net.scales[add["output"]] == float(np.float32(0.0251))
    # the add fed QONNX's integer operands: within one step (its multipliers approximate
    # the ratios of scales, and it rounds halves up), and rarely off
    context = _qonnx_context(path, x)
    operands = [_integers(context[name] / np.float32(scale)).astype(np.int8)
                for name, scale in (("q_a1_out", 0.0213), ("q_a2_out", 0.0297))]
    ours = hostops.run_host_op(add, operands).astype(np.int64)
    expected = _integers(context["q_add_out"] / np.float32(0.0251))
    assert np.abs(ours - expected).max() <= 1 and np.mean(ours != expected) < 0.02
    agreement = np.mean(_golden_logits(net, layers, x).argmax(1) ==
                        model.reference(x).reshape(TEST, -1).argmax(1))
    assert agreement >= 0.97, agreement


def test_a_tensor_without_a_quant_is_calibrated_and_reported(tmp_path, seed):
    """The MLP without its hidden activation Quant: that tensor's scale is calibrated, and
    network.json and the report say which scale came from where."""
    rng = np.random.default_rng(seed)
    path = qonnx_mlp(tmp_path / "m.onnx", rng)
    model = onnx.load(str(path))
    quant = next(node for node in model.graph.node if node.name == "q_a1")
    for node in model.graph.node:  # fc2 reads the Relu directly
        node.input[:] = ["relu1_out" if name == "q_a1_out" else name for name in node.input]
    model.graph.node.remove(quant)
    onnx.save(model, str(path))
    calib = _inputs(rng, (64,), CALIB)
    report = compile_model(load_model(path), calib, "dense", pe=4, out=tmp_path / "out",
                           progress=False)
    network = json.loads((tmp_path / "out" / "network.json").read_text())
    assert network["quantization"] == report["quantization"]
    assert report["quantization"]["calibrated"] == ["relu1_out"]
    assert report["quantization"]["from_quant"] == {"x": "Quant q_in"}
    layers = report["quantization"]["layers"]
    assert [layer["source"] for layer in layers] == [["Gemm fc1"], ["Gemm fc2"]]
    assert layers[0]["output_scale"] == "calibrated" and layers[1]["input_scale"] == "calibrated"
    assert layers[0]["weights"] == "the integers and scales of Quant q_w1"
    assert network["tensors"]["x"]["scale_from"] == "Quant q_in"
    assert network["tensors"]["relu1_out"]["scale_from"] == "calibrated"
    # with a calibrated input scale, the int32 bias Quant no longer sits at s_in x s_w
    assert layers[1]["bias"] == ("Quant q_b2's values rounded to the accumulator scale "
                                 "s_in x s_w (its own scale differs)")


def test_a_last_layer_with_per_channel_scales_is_requantized_saying_so(tmp_path, seed):
    rng = np.random.default_rng(seed)
    path = qonnx_mlp(tmp_path / "m.onnx", rng, last_per_channel=True, int32_bias=False)
    _, net, _ = _compiled(path, "dense", _inputs(rng, (64,), CALIB))
    step = [step for step in net.steps if step["op"] == "engine"][-1]
    assert step["quantization"]["weights"] == (
        "Quant q_w2's per-channel weights re-quantized to one scale by the dense rule: the "
        "last layer's raw outputs (the logits) share one scale")
    assert len(set(step["scales"]["weight"])) == 1


def test_a_quant_on_the_logits_is_dropped_saying_so(tmp_path, seed):
    path = _mlp_with(tmp_path / "m.onnx", _output_quant)
    report = compile_model(load_model(path), _inputs(np.random.default_rng(seed), (64,), CALIB),
                           "dense", pe=4, progress=False)
    assert "Quant q_out on the logits dropped: the last layer returns raw acc + bias (argmax " \
           "unchanged but for ties)" in report["lowerings"]


def _output_quant(model):
    """An 8-bit Quant on fc2's output (Brevitas' output_quant on the last layer)."""
    model.graph.initializer.extend([numpy_helper.from_array(np.float32(value), name) for
                                    name, value in (("so", 0.05), ("zo", 0.0), ("bo", 8.0))])
    model.graph.node.append(helper.make_node("Quant", ["fc2_out", "so", "zo", "bo"], ["y"],
                                             name="q_out", domain=DOMAIN, signed=1, narrow=0,
                                             rounding_mode="ROUND"))
    model.graph.output[0].name = "y"


def test_narrower_activation_ranges_are_host_clips(tmp_path, seed):
    """A 4-bit signed input Quant and a 5-bit unsigned hidden one: their ranges are clips on
    the host, and the integer tensors equal QONNX's where the rounding is not involved."""
    rng = np.random.default_rng(seed)
    b = QonnxBuilder((64,))
    x = b.quant("q_in", "x", 1 / 4, 4)
    w1, _ = b.weight("w1", rng.normal(0, 1 / 8, (16, 64)))
    x = b.node("Gemm", [x, w1, b.const("b1", np.zeros(16))], "fc1", transB=1)
    x = b.quant("q_a1", b.node("Relu", [x], "relu1"), 1 / 8, 5, signed=0)
    w2, _ = b.weight("w2", rng.normal(0, 1 / 4, (10, 16)), per_channel=False)
    path = b.save(tmp_path / "m.onnx", b.node("Gemm", [x, w2], "fc2", transB=1), 10)
    x = _inputs(rng, (64,), TEST)
    _, net, layers = _compiled(path, "dense", x[:CALIB])
    clips = [step for step in net.steps if step["op"] == "clip"]
    assert [(step["low"], step["high"]) for step in clips] == [(-8, 7), (0, 31)]
    context = _qonnx_context(path, x)
    tensors, _ = hostops.run_steps(net.steps, net.input,
                                   q.quantize_activations(x, net.input_scale),
                                   lambda index, vectors: layers[index].reference(vectors))
    np.testing.assert_array_equal(tensors[clips[0]["output"]], context["q_in_out"] * 4)
    hidden = tensors[clips[1]["output"]].astype(np.int64)
    expected = _integers(context["q_a1_out"] * 8)
    assert np.abs(hidden - expected).max() <= 1 and np.mean(hidden != expected) < 0.02


# --------------------------------------------------------------------------- the RTL

@pytest.mark.sim
@pytest.mark.parametrize("engine", in_make_test(["dense", "ternary"], {0}))
def test_cli_compiles_a_qonnx_mlp_and_run_net_is_bit_exact(engine, capsys, tmp_path, seed):
    """compile (no --test) then run-net: the RTL on a pe-4 engine (the 64-16-10 builds of
    tests/test_compile.py; ternary with 2-bit weight Quants) equals the golden model, and its
    argmax agrees with qonnx."""
    rng = np.random.default_rng(seed)
    bits = 2 if engine == "ternary" else 8
    path = qonnx_mlp(tmp_path / "mlp.onnx", rng, bits=bits, hidden_int32_bias=bits == 2)
    calib, x = _inputs(rng, (64,), CALIB), _inputs(rng, (64,), 96)
    np.save(tmp_path / "calib.npy", calib)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out"
    status, stdout, err = _cli(capsys, "compile", path, "--engine", engine, "--pe", 4,
                               "--calib", tmp_path / "calib.npy", "--out", out, "--quiet")
    assert status == 0, err
    assert stdout.startswith(f"{engine}: 2 engine layers in ")
    assert "; 2 scales from QONNX Quant nodes, 0 calibrated, " in stdout
    status, stdout, err = _cli(capsys, "run-net", out, "--inputs", tmp_path / "x.npy", "--out",
                               tmp_path / "logits.npy", "--report", tmp_path / "r.json",
                               "--quiet")
    assert status == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["mismatches"] == 0 and report["images"] == 96
    _, net, layers = _compiled(path, engine, calib)
    logits = np.load(tmp_path / "logits.npy")
    np.testing.assert_array_equal(logits, _golden_logits(net, layers, x))
    agreement = np.mean(logits.argmax(1) == load_model(path).reference(x).argmax(1))
    print(f"RTL: 0 mismatches on 96 inputs, argmax agreement with qonnx {agreement:.3f}")
    assert agreement >= 0.97


# --------------------------------------------------------------------------- refusals

def _cli(capsys, *argv):
    status = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _mlp_with(path, change):
    """The QONNX MLP with one node changed by ``change(builder-free model)``."""
    qonnx_mlp(path, np.random.default_rng(0))
    model = onnx.load(str(path))
    change(model)
    onnx.save(model, str(path))
    return path


def _set_attr(name, key, value):
    def change(model):
        node = next(node for node in model.graph.node if node.name == name)
        for attribute in node.attribute:
            if attribute.name == key:
                node.attribute.remove(attribute)
        node.attribute.append(helper.make_attribute(key, value))
    return change


def _set_init(name, value):
    def change(model):
        init = next(init for init in model.graph.initializer if init.name == name)
        init.CopyFrom(numpy_helper.from_array(np.asarray(value, np.float32), name))
    return change


def _scale_from_input(model):
    """q_in's scale computed from the input (not a constant)."""
    model.graph.node.insert(0, helper.make_node("Relu", ["x"], ["dyn"], name="dyn"))
    node = next(node for node in model.graph.node if node.name == "q_in")
    node.input[1] = "dyn"


def _bipolar(model):
    node = next(node for node in model.graph.node if node.name == "q_a1")
    node.op_type = "BipolarQuant"
    del node.input[2:]
    del node.attribute[:]


def _trunc(model):
    node = next(node for node in model.graph.node if node.name == "q_a1")
    node.op_type = "Trunc"
    model.graph.initializer.append(numpy_helper.from_array(np.float32(16), "in_bits"))
    node.input.insert(3, "in_bits")
    for attribute in list(node.attribute):
        if attribute.name != "rounding_mode":
            node.attribute.remove(attribute)


def _second_scale(model):
    """A second activation Quant after q_a1, of another scale."""
    model.graph.initializer.extend([numpy_helper.from_array(np.float32(value), name) for
                                    name, value in (("s2", 0.03), ("z2", 0.0), ("b2bits", 7.0))])
    model.graph.node.append(helper.make_node("Quant", ["q_a1_out", "s2", "z2", "b2bits"],
                                             ["again"], name="q_again", domain=DOMAIN,
                                             signed=0, narrow=0, rounding_mode="ROUND"))
    fc2 = next(node for node in model.graph.node if node.name == "fc2")
    fc2.input[0] = "again"
    model.graph.node.remove(fc2)  # after the new Quant, in topological order
    model.graph.node.append(fc2)


def _cnn_with_avgpool(path):
    b = QonnxBuilder((1, 4, 4))
    x = b.quant("q_in", "x", 1 / 40, 8)
    x = b.node("AveragePool", [x], "avg", kernel_shape=[2, 2], strides=[2, 2])
    x = b.quant("q_avg", x, 1 / 64, 8)
    w, _ = b.weight("w", np.ones((2, 4)), per_channel=False)
    x = b.node("Flatten", [x], "flat", axis=1)
    return b.save(path, b.node("Gemm", [x, w], "fc", transB=1), 2)


REFUSALS = {
    "zero_point": (_set_init("q_a1_zeropt", 3.0),
                   r"Quant node 'q_a1' has a zero point of 3.0; only zero point 0 \(symmetric "
                   r"quantization\) is supported"),
    "weight_bits": (_set_init("q_w1_bitwidth", 12.0),
                    r"Quant node 'q_w1' quantizes the weight of Gemm fc1 to 12 bits \(signed\); "
                    r"weights take at most 8 bits signed or 7 unsigned \(the engines' int8 "
                    r"lanes\)"),
    "activation_bits": (_set_init("q_in_bitwidth", 16.0),
                        r"Quant node 'q_in' quantizes an activation to 16 bits \(signed\); "
                        r"activations take at most 8 bits signed or 7 unsigned \(the engines' "
                        r"int8 lanes\)"),
    "unsigned_8": (_set_init("q_a1_bitwidth", 8.0),
                   r"Quant node 'q_a1' quantizes an activation to unsigned 8 bits \(0..255\), "
                   r"which needs 9 bits of the engines' int8 lanes; use bit_width 7 for "
                   r"unsigned activations"),
    "rounding": (_set_attr("q_a1", "rounding_mode", "FLOOR"),
                 r"Quant node 'q_a1' rounds with rounding_mode FLOOR; only ROUND \(half to "
                 r"even, as the engines' quantization\) is supported"),
    "bipolar": (_bipolar,
                r"BipolarQuant node 'q_a1' is a bipolar \(1-bit, \+-scale\) quantizer; the "
                r"engines take int8 activations and int8 or ternary weights \(use a Quant of 2 "
                r"to 8 bits\)"),
    "trunc": (_trunc,
              r"Trunc node 'q_a1' truncates low bits \(QONNX Trunc, as Brevitas' "
              r"TruncAvgPool2d exports it\); the engines' host ops round \(use an AveragePool "
              r"without truncation\)"),
    "non_constant_scale": (_scale_from_input,
                           r"Quant node 'q_in' has a non-constant scale \(dyn\)"),
    "per_channel_activation": (_set_init("q_a1_scale", np.full((1, 16), 1 / 48)),
                               r"Quant node 'q_a1' has 16 scales \(shape \(1, 16\)\) on an "
                               r"activation; an activation has one scale per tensor "
                               r"\(per-channel activation scales are not supported\)"),
    "per_input_channel_weight": (_set_init("q_w1_scale", np.linspace(0.01, 0.02, 64)[None]),
                                 r"Quant node 'q_w1' scales the weight of Gemm fc1 along an "
                                 r"axis other than the output channels; weight scales are per "
                                 r"tensor or per output channel"),
    "float_path_refusal": (lambda model: setattr(
        next(node for node in model.graph.node if node.name == "relu1"), "op_type", "Sigmoid"),
                           r"Sigmoid node 'relu1' is not supported"),
    "second_scale": (_second_scale,
                     r"Quant node 'q_again' gives Gemm fc1's output the scale 0.03, but Quant "
                     r"q_a1 gave it 0.0208333; a tensor has one scale"),
    "after_avg_pool": (None,
                       r"Quant node 'q_avg' follows AveragePool avg; an activation Quant must "
                       r"follow the model input, a Gemm, MatMul or Conv \(with its Relu\), or a "
                       r"residual Add \(MaxPool, Flatten and Relu may come between\)"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_every_qonnx_refusal_is_one_line_and_exit_2(case, capsys, tmp_path):
    change, message = REFUSALS[case]
    if change is None:
        path, shape = _cnn_with_avgpool(tmp_path / "m.onnx"), (1, 4, 4)
    else:
        path, shape = _mlp_with(tmp_path / "m.onnx", change), (64,)
    np.save(tmp_path / "calib.npy", np.zeros((2, *shape), np.float32))
    status, _, err = _cli(capsys, "compile", path, "--engine", "dense", "--calib",
                          tmp_path / "calib.npy", "--out", tmp_path / "out", "--quiet")
    assert status == 2
    assert re.match(r"^secateur: error: " + message + SUPPORTED + r"\n$", err), err


def test_qat_is_refused_on_a_qonnx_model(capsys, tmp_path):
    path = qonnx_mlp(tmp_path / "m.onnx", np.random.default_rng(0))
    np.save(tmp_path / "calib.npy", np.zeros((2, 64), np.float32))
    np.savez(tmp_path / "train.npz", x=np.zeros((2, 64), np.float32), y=np.zeros(2, int))
    status, _, err = _cli(capsys, "compile", path, "--engine", "dense", "--calib",
                          tmp_path / "calib.npy", "--out", tmp_path / "out", "--compress", "qat",
                          "--finetune", tmp_path / "train.npz", "--quiet")
    assert status == 2
    assert re.match(r"^secateur: error: --compress qat fine-tunes a float model; a QONNX model "
                    r"brings its own quantization, compiled as it is \(use --compress none\)\n$",
                    err), err


def test_int_range_is_qonnx_s():
    from qonnx.custom_op.general.intquant import max_int, min_int
    for bits in range(2, 9):
        for signed in (0, 1):
            for narrow in (0, 1):
                assert q.int_range(bits, signed, narrow) == (
                    min_int(signed, narrow, bits), max_int(signed, narrow, bits))
    with pytest.raises(ValueError, match=r"^a quantizer's bit width must be an integer >= 2, "
                                         r"not 1$"):
        q.int_range(1, True, False)


def test_given_integers_are_qonnx_s_quant(seed):
    """models/quantize.given_integers (in float32, as the importer calls it on float32
    constants) times the scale is qonnx's own Quant, ties included."""
    from qonnx.custom_op.general.intquant import int_quant
    rng = np.random.default_rng(seed)
    scale = np.float32(0.037)
    x = np.concatenate([rng.normal(0, 3, 1000), (np.arange(-20, 20) + 0.5) * 0.037])
    x = x.astype(np.float32)
    for bits, signed, narrow in ((8, 1, 1), (8, 1, 0), (4, 1, 0), (7, 0, 0), (2, 1, 1)):
        low, high = q.int_range(bits, signed, narrow)
        ours = q.given_integers(x, scale, low, high, np.float32) * scale
        theirs = int_quant(x, scale, np.float32(0), np.float32(bits), signed, narrow, "ROUND")
        np.testing.assert_array_equal(ours.astype(np.float32), theirs)
    with pytest.raises(ValueError, match=r"^a quantizer's scales must be finite and > 0$"):
        q.given_integers(x, 0.0, -8, 7)


def test_the_host_clip_checks_its_operands():
    x = np.array([-128, -9, 0, 8, 127], np.int8)
    np.testing.assert_array_equal(hostops.clip(x, -8, 7), [-8, -8, 0, 7, 7])
    with pytest.raises(TypeError, match=r"^clip takes int8 values, not int64$"):
        hostops.clip(x.astype(np.int64), -8, 7)
    with pytest.raises(ValueError, match=r"^clip range \[0, 200\] must be a non-empty range "
                                         r"inside \[-128, 127\]$"):
        hostops.clip(x, 0, 200)
