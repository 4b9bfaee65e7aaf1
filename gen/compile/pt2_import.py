"""``torch.export`` front end: a ``.pt2`` file (``torch.export.save``) or an ``nn.Module`` with
example inputs -> the compiler's :class:`~secateur.gen.compile.ir.Graph`, from the exported
program's aten graph as it is saved (before decompositions).

Parameters, buffers and constant tensors are the constants; the one user input is the
activation. Accepted aten ops: ``linear``, ``conv2d``, ``batch_norm`` (and
``_native_batch_norm_legit_no_training``), ``relu``, ``max_pool2d`` (with or without
indices), ``avg_pool2d``, ``adaptive_avg_pool2d`` to 1x1 and ``mean`` over H, W, ``add``,
``flatten``, ``view``/``reshape`` to (B, -1), ``dropout`` at inference, ``softmax`` at the end,
and the identity-like ``clone``, ``contiguous``, ``alias``, ``detach``; everything else is
refused naming the op and node. The float reference is the torch module itself.
"""

from __future__ import annotations

import numpy as np

from ..safeio import UsageError, read_bytes
from .ir import Graph, Node, output_shape, refuse
from .onnx_import import BATCH_MARKER, MAX_MODEL_BYTES, in_batches

__all__ = ["load_pt2", "load_module", "from_exported"]

_IDENTITY = ("clone", "contiguous", "alias", "detach", "dropout", "lift_fresh_copy")


def _op_name(target) -> str:
    """``aten.conv2d.default`` -> ``conv2d``."""
    text = str(target)
    parts = text.split(".")
    return parts[1] if len(parts) >= 3 and parts[0] == "aten" else text


class _Importer:
    def __init__(self, program, source: dict):
        import torch
        self.program = program
        self.constants: dict = {}
        self.shapes: dict = {}
        self.nodes: list[Node] = []
        self.lowerings: list[str] = []
        self.source = source
        specs = {spec.arg.name: spec for spec in program.graph_signature.input_specs}
        user = []
        for node in program.graph.nodes:
            if node.op != "placeholder":
                continue
            spec = specs[node.name]
            if spec.kind.name == "USER_INPUT":
                user.append(node)
                continue
            table = program.state_dict if spec.target in program.state_dict else \
                program.constants
            value = table[spec.target]
            self.constants[node.name] = (value.detach().to(torch.float64).numpy()
                                         if value.is_floating_point() else value.numpy())
        if len(user) != 1:
            raise UsageError(f"the exported program has {len(user)} inputs; secateur compile "
                             f"takes one")
        self.input = user[0].name
        shape = [int(dim) if str(dim).lstrip("-").isdigit() else None
                 for dim in user[0].meta["val"].shape]
        if len(shape) < 2 or None in shape[1:]:
            raise UsageError(f"the exported program's input has shape {shape}; it must be "
                             f"(B, features) or (B, C, H, W) with every dimension but B fixed")
        self.batch = shape[0]
        self.shapes[self.input] = (self.batch or BATCH_MARKER,) + tuple(shape[1:])

    def const(self, node, value, what: str):
        if value is None:
            return None
        if getattr(value, "name", None) not in self.constants:
            raise refuse(str(node.target), node.name, f"has a non-constant {what}")
        return np.asarray(self.constants[value.name])

    def activation(self, node, value) -> str:
        name = getattr(value, "name", None)
        if name not in self.shapes:
            raise refuse(str(node.target), node.name, f"reads {value}, which is not an "
                         f"activation of a supported node")
        return name

    def emit(self, node, op: str, inputs: list, **attrs) -> None:
        ir_node = Node(op, node.name, str(node.target), inputs, node.name, attrs)
        shape = output_shape(ir_node, [self.shapes[name][1:] for name in inputs])
        self.shapes[node.name] = (self.shapes[inputs[0]][0],) + tuple(shape)
        self.nodes.append(ir_node)

    def run(self) -> Graph:
        output = None
        for node in self.program.graph.nodes:
            if node.op == "placeholder":
                continue
            if node.op == "output":
                results = node.args[0]
                if len(results) != 1:
                    raise UsageError(f"the exported program has {len(results)} outputs; "
                                     f"secateur compile takes one")
                output = self.activation(node, results[0])
                continue
            if node.op != "call_function":
                raise refuse(node.op, node.name)
            self.call(node)
        return Graph(self.input, self.shapes[self.input][1:], output, self.nodes, self.source,
                     self.batch, self.lowerings)

    def call(self, node) -> None:
        import operator
        if node.target is operator.getitem:
            if node.args[1] != 0:
                raise refuse("getitem", node.name, "takes a second result (training "
                             "statistics or pooling indices)")
            self.emit(node, "identity", [self.activation(node, node.args[0])])
            return
        if _op_name(node.target) == "sym_size" and node.args[1] == 0:
            self.constants[node.name] = np.asarray(self.shapes[node.args[0].name][0])
            return
        handler = _HANDLERS.get(_op_name(node.target))
        if handler is None:
            raise refuse(str(node.target), node.name)
        handler(self, node, _arguments(node))


def _arguments(node) -> list:
    """Positional arguments, then keyword arguments in the schema's order."""
    schema = getattr(node.target, "_schema", None)
    values = list(node.args)
    if schema is not None:
        for argument in schema.arguments[len(values):]:
            values.append(node.kwargs.get(argument.name, argument.default_value
                                          if argument.has_default_value() else None))
    return values


def _pads(padding) -> tuple:
    top, left = (padding, padding) if isinstance(padding, int) else tuple(padding)
    return (int(top), int(left), int(top), int(left))


def _pair(value, default=None) -> tuple:
    if value is None or (isinstance(value, (list, tuple)) and not value):
        return default
    return (int(value), int(value)) if isinstance(value, int) else tuple(int(v) for v in value)


def _linear(imp: _Importer, node, args) -> None:
    weight = imp.const(node, args[1], "weight")
    imp.emit(node, "linear", [imp.activation(node, args[0])], weight=weight,
             bias=imp.const(node, args[2], "bias"))


def _conv2d(imp: _Importer, node, args) -> None:
    x = imp.activation(node, args[0])
    weight = imp.const(node, args[1], "weight")
    stride, padding, dilation, groups = args[3:7]
    if groups not in (None, 1):
        raise refuse(str(node.target), node.name, f"has groups = {groups}; only groups = 1 is "
                     f"supported")
    if _pair(dilation, (1, 1)) != (1, 1):
        raise refuse(str(node.target), node.name, f"has dilation {list(dilation)}; only "
                     f"dilation 1 is supported")
    if isinstance(padding, str):
        if padding != "valid":
            raise refuse(str(node.target), node.name, f"has padding {padding!r}; give explicit "
                         f"padding")
        padding = 0
    imp.emit(node, "conv", [x], weight=weight, bias=imp.const(node, args[2], "bias"),
             stride=_pair(stride, (1, 1)), pads=_pads(padding if padding is not None else 0))


def _batch_norm(imp: _Importer, node, args) -> None:
    legit = _op_name(node.target) == "_native_batch_norm_legit_no_training"
    x = imp.activation(node, args[0])
    if not legit and args[5]:
        raise refuse(str(node.target), node.name, "is in training mode")
    eps = args[6] if legit else args[7]
    channels = imp.shapes[x][1]
    gamma, beta, mean, var = (imp.const(node, value, what) for value, what in
                              zip(args[1:5], ("weight", "bias", "running mean",
                                              "running variance")))
    gamma = np.ones(channels) if gamma is None else gamma
    beta = np.zeros(channels) if beta is None else beta
    if mean is None or var is None:
        raise refuse(str(node.target), node.name, "has no running statistics")
    scale = gamma / np.sqrt(var + float(eps))
    imp.emit(node, "batchnorm", [x], scale=scale, shift=beta - mean * scale)


def _max_pool(imp: _Importer, node, args) -> None:
    x = imp.activation(node, args[0])
    kernel = _pair(args[1])
    if _pair(args[4], (1, 1)) != (1, 1) or args[5]:
        raise refuse(str(node.target), node.name, "has dilation or ceil_mode; only dilation 1 "
                     "and floor are supported")
    imp.emit(node, "max_pool", [x], kernel=kernel, stride=_pair(args[2], kernel),
             pads=_pads(args[3] if args[3] is not None else 0))


def _avg_pool(imp: _Importer, node, args) -> None:
    x = imp.activation(node, args[0])
    kernel = _pair(args[1])
    if args[4] or args[6] is not None:
        raise refuse(str(node.target), node.name, "has ceil_mode or a divisor_override")
    imp.emit(node, "avg_pool", [x], kernel=kernel, stride=_pair(args[2], kernel),
             pads=_pads(args[3] if args[3] is not None else 0),
             count_include_pad=bool(True if args[5] is None else args[5]))


def _global_pool(imp: _Importer, node, args) -> None:
    x = imp.activation(node, args[0])
    name = _op_name(node.target)
    if name == "adaptive_avg_pool2d":
        if _pair(args[1]) != (1, 1):
            raise refuse(str(node.target), node.name, f"pools to {list(args[1])}; only 1x1 "
                         f"(a global average pool) is supported")
        keep = True
    else:
        rank = len(imp.shapes[x])
        axes = sorted(int(axis) % rank for axis in (args[1] or []))
        if rank != 4 or axes != [2, 3]:
            raise refuse(str(node.target), node.name, f"averages over {list(args[1] or [])}; "
                         f"only the spatial mean (a global average pool) is supported")
        keep = bool(args[2])
    imp.emit(node, "global_avg_pool", [x])
    if not keep:
        imp.nodes[-1].output = node.name + "/pooled"
        imp.shapes[node.name + "/pooled"] = imp.shapes.pop(node.name)
        imp.emit(node, "flatten", [node.name + "/pooled"])


def _add(imp: _Importer, node, args) -> None:
    if args[2] not in (None, 1):
        raise refuse(str(node.target), node.name, f"has alpha = {args[2]}")
    names = [getattr(value, "name", None) for value in args[:2]]
    if all(name in imp.shapes for name in names):
        imp.emit(node, "add", names)
        return
    x = next((name for name in names if name in imp.shapes), None)
    constant = next((name for name in names if name in imp.constants), None)
    if x is None or constant is None:
        raise refuse(str(node.target), node.name, "adds a Python number or an unknown value")
    from .onnx_import import _channel_values
    bias = _channel_values(np.asarray(imp.constants[constant]), imp.shapes[x])
    if bias is None:
        raise refuse(str(node.target), node.name, "adds a constant that is not one value per "
                     "channel (a bias)")
    imp.emit(node, "bias_add", [x], bias=bias)


def _flatten(imp: _Importer, node, args) -> None:
    x = imp.activation(node, args[0])
    rank = len(imp.shapes[x])
    if args[1] % rank != 1 or args[2] % rank != rank - 1:
        raise refuse(str(node.target), node.name, f"flattens dimensions {args[1]}..{args[2]}; "
                     f"only flatten(x, 1) is supported")
    imp.emit(node, "flatten", [x])


def _view(imp: _Importer, node, args) -> None:
    x = imp.activation(node, args[0])
    target = [int(imp.constants[value.name]) if hasattr(value, "name") else int(value)
              for value in args[1]]
    shape = imp.shapes[x]
    features = int(np.prod(shape[1:]))
    if len(target) != 2 or target[0] not in (-1, shape[0]) or target[1] not in (-1, features) \
            or (target[0] == -1 and target[1] != features):
        raise refuse(str(node.target), node.name, f"reshapes to {target}; only (B, -1) is "
                     f"supported")
    imp.emit(node, "flatten", [x])


def _dropout_like(imp: _Importer, node, args) -> None:
    if _op_name(node.target) == "dropout" and args[2]:
        raise refuse(str(node.target), node.name, "is in training mode")
    imp.emit(node, "identity", [imp.activation(node, args[0])])


def _softmax(imp: _Importer, node, args) -> None:
    x = imp.activation(node, args[0])
    if len(imp.shapes[x]) != 2 or args[1] % 2 != 1:
        raise refuse(str(node.target), node.name, "is not over the classes of (B, classes) "
                     "logits")
    imp.emit(node, "softmax", [x])


def _relu(imp: _Importer, node, args) -> None:
    imp.emit(node, "relu", [imp.activation(node, args[0])])


_HANDLERS = {
    "linear": _linear, "conv2d": _conv2d, "batch_norm": _batch_norm,
    "_native_batch_norm_legit_no_training": _batch_norm, "relu": _relu, "relu_": _relu,
    "max_pool2d": _max_pool, "max_pool2d_with_indices": _max_pool, "avg_pool2d": _avg_pool,
    "adaptive_avg_pool2d": _global_pool, "mean": _global_pool, "add": _add,
    "flatten": _flatten, "view": _view, "reshape": _view, "softmax": _softmax,
    "_softmax": _softmax, **{name: _dropout_like for name in _IDENTITY},
}


def _module_reference(module, fixed_batch):
    import torch

    def run(x):
        with torch.no_grad():
            return in_batches(lambda chunk: module(torch.from_numpy(
                np.ascontiguousarray(chunk, dtype=np.float32))).detach().numpy(),
                np.asarray(x), fixed_batch)
    return run


def from_exported(program, source: dict, reference_module=None):
    """An ``ExportedProgram`` -> :class:`~secateur.gen.compile.flow.Model`; the float
    reference is ``reference_module`` (any batch) or the program's own module."""
    from .flow import Model
    graph = _Importer(program, source).run()
    if reference_module is None:
        return Model(graph, _module_reference(program.module(), graph.batch), "torch")
    return Model(graph, _module_reference(reference_module, None), "torch")


def load_pt2(path):
    """Read a ``torch.export.save`` file.

    Raises
    ------
    UsageError
        If the file is unreadable, not a zip archive, or ``torch.export.load`` fails on it.
    UnsupportedModel
        Naming the first aten node that is not accepted.
    """
    import io

    import torch
    data = read_bytes(path, "model file", MAX_MODEL_BYTES)
    if not data.startswith(b"PK"):
        raise UsageError(f"model file {path} is not a .pt2 archive (torch.export.save writes a "
                         f"zip file)")
    try:
        program = torch.export.load(io.BytesIO(data))
    except Exception as error:
        raise UsageError(f"model file {path} is not a readable torch.export program: "
                         f"{' '.join(str(error).split())[:200]}") from None
    return from_exported(program, {"format": "pt2", "path": str(path),
                                   "torch": torch.__version__})


def load_module(module, example_inputs):
    """Export an ``nn.Module`` with ``torch.export.export`` on ``example_inputs`` (a float
    array or tensor, batch first) and import it.

    Raises
    ------
    TypeError
        If ``module`` is not an ``nn.Module`` or there are no example inputs.
    UsageError
        If ``torch.export`` cannot export it.
    """
    import torch
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"model must be a path to an .onnx or .pt2 file or a torch.nn.Module, "
                        f"not {type(module).__name__}")
    if example_inputs is None:
        raise TypeError("an nn.Module needs example_inputs (a batch of float model inputs)")
    example = torch.as_tensor(np.asarray(example_inputs), dtype=torch.float32)
    module = module.eval()
    try:
        program = torch.export.export(module, (example,))
    except Exception as error:
        raise UsageError(f"torch.export could not export the module: "
                         f"{' '.join(str(error).split())[:200]}") from None
    return from_exported(program, {"format": "torch.nn.Module", "class":
                                   type(module).__name__, "torch": torch.__version__}, module)
