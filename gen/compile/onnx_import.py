"""ONNX front end: a float ``.onnx`` model (opset 13 or later, as ``torch.onnx.export`` writes
it) -> the compiler's :class:`~secateur.gen.compile.ir.Graph`.

Constants (initializers, ``Constant`` nodes, and every node whose inputs are all constants,
evaluated by ONNX's reference evaluator) are folded as the graph is read; ``Shape`` of an
activation is its known shape, with the batch dimension as the model declares it or as a
marker when it is dynamic, so the ``Shape -> Gather -> Concat -> Reshape`` chains of a
``view(x.size(0), -1)`` fold into a constant target shape. Every other node becomes one IR node
or is refused (:class:`~secateur.gen.compile.ir.UnsupportedModel`, naming its op type and
name).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..safeio import UsageError, read_bytes
from .ir import Graph, Node, refuse

__all__ = ["MIN_OPSET", "MAX_MODEL_BYTES", "load_onnx", "read_onnx"]

MIN_OPSET = 13
#: The largest model file read (protobuf's own limit is 2 GiB).
MAX_MODEL_BYTES = 1 << 31
#: The batch dimension of a dynamic-batch model, while shapes are folded.
BATCH_MARKER = 1_000_003
_ONNX_DOMAINS = ("", "ai.onnx")


def read_onnx(path):
    """Parse and check an ONNX file: an ``onnx.ModelProto``.

    Raises
    ------
    UsageError
        If the file cannot be read, is larger than :data:`MAX_MODEL_BYTES`, is not a
        well-formed ONNX model (a truncated or foreign file), or fails ONNX's checker.
    """
    import onnx
    data = read_bytes(path, "model file", MAX_MODEL_BYTES)
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as error:  # google.protobuf.message.DecodeError and kin
        raise UsageError(f"model file {path} is not a valid ONNX model (truncated or not "
                         f"ONNX: {' '.join(str(error).split()) or type(error).__name__})") \
            from None
    if not model.graph.node and not model.graph.input:
        raise UsageError(f"model file {path} is not a valid ONNX model (it holds no graph)")
    _load_external_data(model, path)
    try:
        onnx.checker.check_model(model)
    except Exception as error:
        raise UsageError(f"model file {path} is not a valid ONNX model: "
                         f"{' '.join(str(error).split())[:300]}") from None
    return model


def _load_external_data(model, path) -> None:
    """Weights the exporter stored beside the model (``<model>.data``), read from the model's
    folder; ONNX's loader refuses a location outside it."""
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data
    if not any(uses_external_data(tensor) for tensor in model.graph.initializer):
        return
    try:
        load_external_data_for_model(model, str(Path(path).resolve().parent))
    except Exception as error:
        raise UsageError(f"model file {path}: its external weights cannot be read: "
                         f"{' '.join(str(error).split())[:200]}") from None


def _opset(model) -> int:
    versions = [entry.version for entry in model.opset_import if entry.domain in _ONNX_DOMAINS]
    if not versions:
        raise UsageError("the ONNX model imports no default-domain opset")
    if versions[0] < MIN_OPSET:
        raise UsageError(f"the ONNX model uses opset {versions[0]}; secateur compile reads "
                         f"opset {MIN_OPSET} or later (re-export with opset_version={MIN_OPSET}+)")
    return versions[0]


def _attrs(node) -> dict:
    from onnx import helper
    values = {}
    for attribute in node.attribute:
        value = helper.get_attribute_value(attribute)
        values[attribute.name] = value.decode() if isinstance(value, bytes) else value
    return values


class _Importer:
    def __init__(self, model, path):
        from onnx import numpy_helper
        self.model = model
        self.opset = _opset(model)
        graph = model.graph
        self.constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        inputs = [value for value in graph.input if value.name not in self.constants]
        if len(inputs) != 1 or len(graph.output) != 1:
            raise UsageError(f"the ONNX model has {len(inputs)} inputs and {len(graph.output)} "
                             f"outputs; secateur compile takes one of each")
        self.input = inputs[0].name
        dims = [dim.dim_value if dim.HasField("dim_value") else None
                for dim in inputs[0].type.tensor_type.shape.dim]
        if len(dims) < 2 or None in dims[1:]:
            raise UsageError(f"the ONNX model's input {self.input} has shape {dims}; it must be "
                             f"(B, features) or (B, C, H, W) with every dimension but B fixed")
        self.batch = dims[0] if dims[0] else None
        self.shapes = {self.input: (self.batch or BATCH_MARKER,) + tuple(dims[1:])}
        self.nodes: list[Node] = []
        self.lowerings: list[str] = []
        self.source = {"format": "onnx", "path": str(path), "opset": self.opset,
                       "producer": f"{model.producer_name} {model.producer_version}".strip()}
        self.output = graph.output[0].name

    # helpers --------------------------------------------------------------------------------

    def const(self, node, index: int, what: str) -> np.ndarray | None:
        """Input ``index`` of ``node`` as a constant, None if absent; refused if it is an
        activation."""
        if index >= len(node.input) or node.input[index] == "":
            return None
        name = node.input[index]
        if name not in self.constants:
            raise refuse(node.op_type, node.name, f"has a non-constant {what} ({name})")
        return np.asarray(self.constants[name])

    def activation(self, node, index: int = 0) -> str:
        name = node.input[index]
        if name in self.constants:
            raise refuse(node.op_type, node.name, f"has a constant where an activation is "
                         f"expected ({name})")
        if name not in self.shapes:
            raise refuse(node.op_type, node.name, f"reads {name}, which no supported node "
                         f"produces")
        return name

    def emit(self, node, op: str, inputs: list, **attrs) -> None:
        from .ir import output_shape
        ir_node = Node(op, node.name or node.output[0], node.op_type, inputs, node.output[0],
                       attrs)
        shape = output_shape(ir_node, [self.shapes[name][1:] for name in inputs])
        self.shapes[ir_node.output] = (self.shapes[inputs[0]][0],) + tuple(shape)
        self.nodes.append(ir_node)

    def only_first_output(self, node) -> None:
        used = {name for other in self.model.graph.node for name in other.input}
        used |= {value.name for value in self.model.graph.output}
        if any(name and name in used for name in node.output[1:]):
            raise refuse(node.op_type, node.name, "has a second output in use (training-mode "
                         "outputs or pooling indices)")

    def fold(self, node) -> None:
        from onnx import helper
        from onnx.reference import ReferenceEvaluator
        names = [name for name in node.input if name]
        graph = helper.make_graph(
            [node], "fold", [helper.make_tensor_value_info(name, 0, None) for name in names],
            [helper.make_tensor_value_info(name, 0, None) for name in node.output])
        model = helper.make_model(graph, opset_imports=list(self.model.opset_import))
        try:
            values = ReferenceEvaluator(model).run(None, {name: self.constants[name]
                                                          for name in names})
        except Exception as error:
            raise refuse(node.op_type, node.name, f"could not be folded as a constant "
                         f"({' '.join(str(error).split())[:120]})") from None
        for name, value in zip(node.output, values):
            self.constants[name] = np.asarray(value)

    # the walk -------------------------------------------------------------------------------

    def run(self) -> Graph:
        for node in self.model.graph.node:
            if node.domain not in _ONNX_DOMAINS:
                self.foreign(node)
            elif node.op_type == "Constant":
                self.constant(node)
            elif node.op_type == "Shape" and node.input[0] in self.shapes:
                self.shape(node)
            elif all(not name or name in self.constants for name in node.input):
                self.fold(node)
            else:
                handler = _HANDLERS.get(node.op_type)
                if handler is None:
                    raise refuse(node.op_type, node.name)
                handler(self, node, _attrs(node))
        if self.output not in self.shapes or self.output == self.input:
            raise UsageError(f"the ONNX model's output {self.output} is not computed from its "
                             f"input by supported nodes")
        shape = self.shapes[self.input][1:]
        return Graph(self.input, shape, self.output, self.nodes, self.source, self.batch,
                     self.lowerings)

    def foreign(self, node) -> None:
        if node.op_type in ("Quant", "BipolarQuant", "Trunc", "IntQuant"):
            raise refuse(node.op_type, node.name, f"is a QONNX quantizer (domain {node.domain}): "
                         f"a QONNX model is read by gen/compile/qonnx_import.py")
        raise refuse(node.op_type, node.name, f"is in the custom domain {node.domain!r}")

    def constant(self, node) -> None:
        from onnx import numpy_helper
        (key, value), = _attrs(node).items()
        self.constants[node.output[0]] = (numpy_helper.to_array(value) if key == "value"
                                          else np.asarray(value))

    def shape(self, node) -> None:
        attrs = _attrs(node)
        full = np.asarray(self.shapes[node.input[0]], dtype=np.int64)
        start, end = attrs.get("start", 0), attrs.get("end", None)
        self.constants[node.output[0]] = full[start:end]


def _bias_vector(node, value: np.ndarray | None, rows: int, what: str) -> np.ndarray | None:
    if value is None:
        return None
    value = np.asarray(value, dtype=np.float64)
    if value.size == 1:
        return np.full(rows, float(value.reshape(())))
    if value.size != rows or max(value.shape) != rows:
        raise refuse(node.op_type, node.name, f"has a {what} of shape {value.shape}; it must "
                     f"hold one value per output ({rows})")
    return value.reshape(rows)


def _gemm(imp: _Importer, node, attrs) -> None:
    if attrs.get("transA", 0):
        raise refuse(node.op_type, node.name, "has transA = 1 (a transposed activation)")
    x = imp.activation(node)
    weight = imp.const(node, 1, "weight")
    if weight.ndim != 2:
        raise refuse(node.op_type, node.name, f"has a weight of shape {weight.shape}")
    weight = weight.astype(np.float64) * float(attrs.get("alpha", 1.0))
    weight = weight if attrs.get("transB", 0) else weight.T
    bias = _bias_vector(node, imp.const(node, 2, "bias"), weight.shape[0], "bias C")
    if bias is not None:
        bias = bias * float(attrs.get("beta", 1.0))
    imp.emit(node, "linear", [x], weight=weight, bias=bias)


def _matmul(imp: _Importer, node, attrs) -> None:
    x = imp.activation(node)
    weight = imp.const(node, 1, "weight")
    if weight.ndim != 2 or len(imp.shapes[x]) != 2:
        raise refuse(node.op_type, node.name, f"multiplies a {len(imp.shapes[x])}-D activation "
                     f"by a {weight.ndim}-D weight; only (B, N) @ (N, M) is supported")
    imp.emit(node, "linear", [x], weight=weight.astype(np.float64).T, bias=None)


def _channel_values(value: np.ndarray, shape: tuple) -> np.ndarray | None:
    """A constant that broadcasts to one value per channel (axis 1) of a ``shape`` tensor, as
    a ``(C,)`` vector; None if it varies along another axis."""
    if value.ndim > len(shape):
        return None
    padded = (1,) * (len(shape) - value.ndim) + value.shape
    if any(size != 1 for axis, size in enumerate(padded) if axis != 1) or \
            padded[1] not in (1, shape[1]):
        return None
    return np.broadcast_to(value.reshape(-1), (shape[1],)).astype(np.float64)


def _add(imp: _Importer, node, attrs) -> None:
    constant = [index for index, name in enumerate(node.input) if name in imp.constants]
    if not constant:
        imp.emit(node, "add", [imp.activation(node, 0), imp.activation(node, 1)])
        return
    x = imp.activation(node, 1 - constant[0])
    value = np.asarray(imp.constants[node.input[constant[0]]])
    bias = _channel_values(value, imp.shapes[x])
    if bias is None:
        raise refuse(node.op_type, node.name, f"adds a constant of shape {value.shape} to a "
                     f"tensor of shape {_shown(imp.shapes[x])}; only one value per channel "
                     f"(a bias) is supported")
    imp.emit(node, "bias_add", [x], bias=bias)


def _auto_pads(node, attrs, shape, kernel, stride) -> list:
    mode = attrs.get("auto_pad", "NOTSET")
    if mode in ("NOTSET", ""):
        return [int(value) for value in attrs.get("pads", [0, 0, 0, 0])]
    if mode == "VALID":
        return [0, 0, 0, 0]
    pads_begin, pads_end = [], []
    for size, k, s in zip(shape[2:], kernel, stride):
        total = max(0, (-(-size // s) - 1) * s + k - size)
        small, large = total // 2, total - total // 2
        pads_begin.append(small if mode == "SAME_UPPER" else large)
        pads_end.append(large if mode == "SAME_UPPER" else small)
    return pads_begin + pads_end


def _window_attrs(imp: _Importer, node, attrs, kernel) -> dict:
    if len(kernel) != 2:
        raise refuse(node.op_type, node.name, f"is {len(kernel)}-D; only 2-D windows are "
                     f"supported")
    if any(value != 1 for value in attrs.get("dilations", [1, 1])):
        raise refuse(node.op_type, node.name, f"has dilations {list(attrs['dilations'])}; only "
                     f"dilation 1 is supported")
    if attrs.get("ceil_mode", 0):
        raise refuse(node.op_type, node.name, "has ceil_mode = 1; only floor is supported")
    stride = [int(value) for value in attrs.get("strides", [1, 1])]
    pads = _auto_pads(node, attrs, imp.shapes[node.input[0]], kernel, stride)
    return {"stride": tuple(stride), "pads": tuple(pads)}


def _conv(imp: _Importer, node, attrs) -> None:
    x = imp.activation(node)
    weight = imp.const(node, 1, "weight").astype(np.float64)
    if attrs.get("group", 1) != 1:
        raise refuse(node.op_type, node.name, f"has groups = {attrs['group']}; only groups = 1 "
                     f"is supported")
    window = _window_attrs(imp, node, attrs, list(weight.shape[2:]))
    bias = _bias_vector(node, imp.const(node, 2, "bias"), weight.shape[0], "bias")
    imp.emit(node, "conv", [x], weight=weight, bias=bias, **window)


def _batchnorm(imp: _Importer, node, attrs) -> None:
    if attrs.get("training_mode", 0):
        raise refuse(node.op_type, node.name, "is in training mode")
    imp.only_first_output(node)
    x = imp.activation(node)
    gamma, beta, mean, var = (imp.const(node, index, what).astype(np.float64)
                              for index, what in ((1, "scale"), (2, "bias"), (3, "mean"),
                                                  (4, "variance")))
    scale = gamma / np.sqrt(var + float(attrs.get("epsilon", 1e-5)))
    imp.emit(node, "batchnorm", [x], scale=scale, shift=beta - mean * scale)


def _pool(op: str):
    def handler(imp: _Importer, node, attrs) -> None:
        imp.only_first_output(node)
        x = imp.activation(node)
        kernel = [int(value) for value in attrs["kernel_shape"]]
        window = _window_attrs(imp, node, attrs, kernel)
        extra = ({"count_include_pad": bool(attrs.get("count_include_pad", 0))}
                 if op == "avg_pool" else {})
        imp.emit(node, op, [x], kernel=tuple(kernel), **window, **extra)
    return handler


def _reduce_mean(imp: _Importer, node, attrs) -> None:
    x = imp.activation(node)
    rank = len(imp.shapes[x])
    axes = attrs.get("axes")
    if axes is None:
        axes = imp.const(node, 1, "axes")
    axes = sorted(int(axis) % rank for axis in (axes if axes is not None else []))
    if rank != 4 or axes != [2, 3]:
        raise refuse(node.op_type, node.name, f"averages over axes {axes} of a rank-{rank} "
                     f"tensor; only the spatial mean (a global average pool) is supported")
    imp.emit(node, "global_avg_pool", [x])
    imp.lowerings.append(f"ReduceMean {node.name} over H, W lowered as a GlobalAveragePool")
    if not attrs.get("keepdims", 1):
        imp.nodes[-1].output = node.output[0] + "/pooled"
        imp.shapes[node.output[0] + "/pooled"] = imp.shapes.pop(node.output[0])
        imp.emit(node, "flatten", [node.output[0] + "/pooled"])


def _flatten(imp: _Importer, node, attrs) -> None:
    x = imp.activation(node)
    if attrs.get("axis", 1) % len(imp.shapes[x]) != 1:
        raise refuse(node.op_type, node.name, f"flattens from axis {attrs['axis']}; only axis "
                     f"1 (to (B, -1)) is supported")
    imp.emit(node, "flatten", [x])


def _reshape(imp: _Importer, node, attrs) -> None:
    x = imp.activation(node)
    target = [int(value) for value in imp.const(node, 1, "shape").reshape(-1)]
    shape = imp.shapes[x]
    features = int(np.prod(shape[1:]))
    batch_ok = len(target) == 2 and (target[0] in (-1, shape[0]) or
                                     (target[0] == 0 and not attrs.get("allowzero", 0)))
    if not batch_ok or target[1] not in (-1, features) or target == [-1, -1] or \
            (target[0] == -1 and target[1] != features):
        raise refuse(node.op_type, node.name, f"reshapes {list(_shown(shape))} to "
                     f"{list(_shown(target))}; only Reshape to (B, -1) is supported")
    imp.emit(node, "flatten", [x])
    imp.lowerings.append(f"Reshape {node.name} to (B, -1) lowered as a Flatten")


def _shown(shape):
    return ["B" if value == BATCH_MARKER else value for value in shape]


def _softmax(imp: _Importer, node, attrs) -> None:
    x = imp.activation(node)
    rank = len(imp.shapes[x])
    if rank != 2 or attrs.get("axis", -1) % rank != 1:
        raise refuse(node.op_type, node.name, "is not over the classes of (B, classes) logits")
    imp.emit(node, "softmax", [x])


def _dropout(imp: _Importer, node, attrs) -> None:
    imp.only_first_output(node)
    training = imp.const(node, 2, "training_mode")
    if training is not None and bool(training):
        raise refuse(node.op_type, node.name, "is in training mode")
    imp.emit(node, "identity", [imp.activation(node)])


def _simple(op: str):
    def handler(imp: _Importer, node, attrs) -> None:
        imp.emit(node, op, [imp.activation(node)])
    return handler


_HANDLERS = {
    "Gemm": _gemm, "MatMul": _matmul, "Add": _add, "Conv": _conv,
    "BatchNormalization": _batchnorm, "Relu": _simple("relu"),
    "MaxPool": _pool("max_pool"), "AveragePool": _pool("avg_pool"),
    "GlobalAveragePool": _simple("global_avg_pool"), "ReduceMean": _reduce_mean,
    "Flatten": _flatten, "Reshape": _reshape, "Identity": _simple("identity"),
    "Dropout": _dropout, "Softmax": _softmax,
}


def load_onnx(path, model=None) -> Graph:
    """Read an ONNX file into the IR (``model``: its ``onnx.ModelProto``, already read by
    :func:`read_onnx`).

    Raises
    ------
    UsageError
        If the file is not a readable, well-formed ONNX model of opset 13 or later with one
        input and one output.
    UnsupportedModel
        Naming the first node that is not accepted, and why.
    """
    return _Importer(read_onnx(path) if model is None else model, path).run()


def in_batches(function, x: np.ndarray, fixed_batch: int | None, size: int = 256) -> np.ndarray:
    """``function`` over ``x`` in chunks: of ``fixed_batch`` inputs when the model was exported
    with a fixed batch (the last chunk zero padded, its padding dropped), else of ``size``."""
    step = fixed_batch or size
    outputs = []
    for start in range(0, x.shape[0], step):
        chunk = x[start:start + step]
        count = chunk.shape[0]
        if fixed_batch and count < fixed_batch:
            chunk = np.concatenate([chunk, np.zeros((fixed_batch - count,) + chunk.shape[1:],
                                                    dtype=chunk.dtype)])
        outputs.append(np.asarray(function(chunk))[:count])
    return np.concatenate(outputs)


def onnx_reference(path, fixed_batch: int | None):
    """The float reference: onnxruntime on the original model file, ``x -> outputs``."""
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    # The path, not the bytes: onnxruntime finds external weights beside it.
    session = onnxruntime.InferenceSession(str(path), options,
                                           providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x):
        return in_batches(lambda chunk: session.run(None, {name: chunk.astype(np.float32)})[0],
                          np.asarray(x), fixed_batch)
    return run
