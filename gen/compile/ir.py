"""The compiler's graph IR: what every front end (ONNX, ``torch.export``) produces and every
pass consumes.

A :class:`Graph` has one input and one output tensor and a list of :class:`Node` in
topological order. A node has an IR ``op`` (one of :data:`OPS`), the source's node name and op
type (for messages and ``network.json``), its activation input names (constants are never
inputs: a front end folds them into ``attrs``), one output name and ``attrs`` (weights as
float64 arrays, integers, flags). Shapes exclude the batch dimension.

IR ops (``attrs``)
    ``linear``     ``weight`` (M, N), ``bias`` (M,) or None: ``y = x @ weight.T + bias``
    ``conv``       ``weight`` (O, C, kh, kw), ``bias``, ``stride`` (2), ``pads`` (top, left,
                   bottom, right)
    ``batchnorm``  ``scale``, ``shift`` (C,): ``y = x * scale + shift`` per channel (axis 1),
                   folded from gamma, beta, mean, var, eps by the front end
    ``bias_add``   ``bias`` (C,): a constant added per channel (axis 1)
    ``relu``, ``flatten``, ``global_avg_pool``, ``identity``, ``softmax``
    ``max_pool``   ``kernel``, ``stride``, ``pads``
    ``avg_pool``   ``kernel``, ``stride``, ``pads``, ``count_include_pad``
    ``add``        two activation inputs of one shape
    ``quant``      a model's own activation quantizer (QONNX ``Quant``): ``scale``, ``low``,
                   ``high`` (its integers), ``bits``, ``signed``, ``narrow``;
                   ``y = clip(rint(x / scale), low, high) * scale``
    ``clip``       what is left of a ``quant`` once its scale is taken
                   (:func:`~secateur.gen.compile.lower.resolve_quants`): ``scale``, ``low``,
                   ``high``; ``y = clip(x, low * scale, high * scale)``

Linear and conv nodes of a QONNX model may carry ``weight_quant`` (the integers and per-row
scales of their weight's ``Quant``, ``weight = ints * scales``) and ``bias_quant``; a graph's
``input_quant`` is the ``Quant`` of its input, a layer's or add's ``output_quant`` that of its
output (set by :func:`~secateur.gen.compile.lower.resolve_quants`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...models import hostops
from ...models.quantize import given_integers

__all__ = ["OPS", "SUPPORTED", "UnsupportedModel", "Node", "Graph", "output_shape",
           "evaluate"]

OPS = ("linear", "conv", "batchnorm", "bias_add", "relu", "flatten", "global_avg_pool",
       "identity", "softmax", "max_pool", "avg_pool", "add", "quant", "clip")

#: What a model may hold, as the refusals list it.
SUPPORTED = ("Gemm, MatMul (constant weight), Add (constant bias or residual), Conv (2-D, "
             "groups 1, dilation 1), BatchNormalization, Relu, MaxPool, AveragePool, "
             "GlobalAveragePool, Flatten, Reshape to (B, -1), Identity, Dropout, and a "
             "trailing Softmax")


class UnsupportedModel(ValueError):
    """The model holds something the compiler does not accept: one line naming the op type
    and node (exit status 2 in the CLI)."""


def refuse(op_type: str, name: str, why: str = "is not supported") -> UnsupportedModel:
    """The one wording of a refused node: ``<op> node <name> <why>; supported: ...``."""
    return UnsupportedModel(f"{op_type} node {name!r} {why}; supported: {SUPPORTED}")


@dataclass
class Node:
    op: str
    name: str
    source_op: str
    inputs: list
    output: str
    attrs: dict = field(default_factory=dict)

    def describe(self) -> str:
        return f"{self.source_op} {self.name}"


@dataclass
class Graph:
    """``input_shape`` excludes the batch; ``batch`` is the source's fixed batch size, or
    None when it is dynamic; ``lowerings`` records every rewrite a front end or pass made."""
    input: str
    input_shape: tuple
    output: str
    nodes: list
    source: dict
    batch: int | None = None
    lowerings: list = field(default_factory=list)
    input_quant: dict | None = None

    def producer(self, tensor: str) -> Node | None:
        return next((node for node in self.nodes if node.output == tensor), None)

    def consumers(self, tensor: str) -> list:
        return [node for node in self.nodes if tensor in node.inputs]

    def rename(self, old: str, new: str) -> None:
        """Every use of tensor ``old`` (and the graph output) now reads ``new``."""
        for node in self.nodes:
            node.inputs = [new if name == old else name for name in node.inputs]
        if self.output == old:
            self.output = new

    def shapes(self) -> dict:
        """Every tensor's shape (without the batch), by name."""
        shapes = {self.input: tuple(self.input_shape)}
        for node in self.nodes:
            shapes[node.output] = output_shape(node, [shapes[name] for name in node.inputs])
        return shapes


def _window_shape(node: Node, shape: tuple) -> tuple:
    if len(shape) != 3:
        raise refuse(node.source_op, node.name, f"needs (C, H, W) images, not shape {shape}")
    kernel = node.attrs["kernel"] if "kernel" in node.attrs else node.attrs["weight"].shape[2:]
    top, left, bottom, right = node.attrs["pads"]
    (kh, kw), (sh, sw) = kernel, node.attrs["stride"]
    try:
        return (hostops.out_size(shape[1], kh, sh, top, bottom),
                hostops.out_size(shape[2], kw, sw, left, right))
    except ValueError as error:
        raise refuse(node.source_op, node.name, str(error)) from None


def output_shape(node: Node, shapes: list) -> tuple:
    """The output shape (no batch) of ``node`` given its inputs' shapes.

    Raises
    ------
    UnsupportedModel
        If the shapes do not fit the op (a linear layer on images, a residual add of two
        shapes, a bias of the wrong length).
    """
    shape = tuple(shapes[0])
    op, attrs = node.op, node.attrs
    if op == "linear":
        if len(shape) != 1 or shape[0] != attrs["weight"].shape[1]:
            raise refuse(node.source_op, node.name, f"takes (B, {attrs['weight'].shape[1]}) "
                         f"vectors, not (B, {', '.join(map(str, shape))})")
        return (attrs["weight"].shape[0],)
    if op == "conv":
        if len(shape) != 3 or shape[0] != attrs["weight"].shape[1]:
            raise refuse(node.source_op, node.name, f"takes {attrs['weight'].shape[1]}-channel "
                         f"images, not shape {shape}")
        return (attrs["weight"].shape[0],) + _window_shape(node, shape)
    if op in ("max_pool", "avg_pool"):
        return (shape[0],) + _window_shape(node, shape)
    if op == "global_avg_pool":
        if len(shape) != 3:
            raise refuse(node.source_op, node.name, f"needs (C, H, W) images, not {shape}")
        return (shape[0], 1, 1)
    if op == "flatten":
        return (int(np.prod(shape)),)
    if op in ("batchnorm", "bias_add"):
        key = "scale" if op == "batchnorm" else "bias"
        if not shape or attrs[key].shape != (shape[0],):
            raise refuse(node.source_op, node.name, f"has {attrs[key].size} channel values for "
                         f"a tensor of shape {shape}")
        return shape
    if op == "add" and tuple(shapes[1]) != shape:
        raise refuse(node.source_op, node.name, f"adds tensors of shapes {shape} and "
                     f"{tuple(shapes[1])}; a residual add takes two of one shape")
    return shape


def _per_channel(values: np.ndarray, ndim: int) -> np.ndarray:
    return values.reshape((1, -1) + (1,) * (ndim - 2))


def _conv(x, attrs):
    weight = attrs["weight"]
    patches = hostops.im2col(x, weight.shape[2:], attrs["stride"], attrs["pads"])
    out = patches @ weight.reshape(weight.shape[0], -1).T
    if attrs.get("bias") is not None:
        out = out + attrs["bias"]
    height, width = hostops.out_size(x.shape[2], weight.shape[2], attrs["stride"][0],
                                     attrs["pads"][0], attrs["pads"][2]), \
        hostops.out_size(x.shape[3], weight.shape[3], attrs["stride"][1], attrs["pads"][1],
                         attrs["pads"][3])
    return hostops.rows_to_image(out, height, width)


def _linear(x, attrs):
    out = x @ attrs["weight"].T
    return out if attrs.get("bias") is None else out + attrs["bias"]


def _softmax(x, attrs):
    shifted = np.exp(x - x.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


_FLOAT = {
    "linear": lambda inputs, attrs: _linear(inputs[0], attrs),
    "conv": lambda inputs, attrs: _conv(inputs[0], attrs),
    "batchnorm": lambda inputs, attrs: inputs[0] * _per_channel(attrs["scale"], inputs[0].ndim)
    + _per_channel(attrs["shift"], inputs[0].ndim),
    "bias_add": lambda inputs, attrs: inputs[0] + _per_channel(attrs["bias"], inputs[0].ndim),
    "relu": lambda inputs, attrs: hostops.relu(inputs[0]),
    "flatten": lambda inputs, attrs: hostops.flatten(inputs[0]),
    "global_avg_pool": lambda inputs, attrs: hostops.global_avg_pool(inputs[0]),
    "identity": lambda inputs, attrs: inputs[0],
    "softmax": lambda inputs, attrs: _softmax(inputs[0], attrs),
    "max_pool": lambda inputs, attrs: hostops.max_pool(inputs[0], attrs["kernel"],
                                                       attrs["stride"], attrs["pads"]),
    "avg_pool": lambda inputs, attrs: hostops.avg_pool(inputs[0], attrs["kernel"],
                                                       attrs["stride"], attrs["pads"],
                                                       attrs["count_include_pad"]),
    "add": lambda inputs, attrs: inputs[0] + inputs[1],
    "quant": lambda inputs, attrs: given_integers(inputs[0], attrs["scale"], attrs["low"],
                                                  attrs["high"]) * attrs["scale"],
    "clip": lambda inputs, attrs: np.clip(inputs[0], attrs["low"] * attrs["scale"],
                                          attrs["high"] * attrs["scale"]),
}


def evaluate(graph: Graph, x: np.ndarray, batch_size: int = 256, progress=None) -> dict:
    """The float64 model of ``graph`` on inputs ``x`` ``(B, *input_shape)``: every tensor by
    name, concatenated over batches of ``batch_size``; a node whose ``attrs`` has ``relu``
    (fused by :func:`~secateur.gen.compile.lower.fuse_relu`) applies it."""
    parts: dict = {}
    x = np.asarray(x, dtype=np.float64)
    for start in range(0, x.shape[0], batch_size):
        tensors = {graph.input: x[start:start + batch_size]}
        for node in graph.nodes:
            value = _FLOAT[node.op]([tensors[name] for name in node.inputs], node.attrs)
            tensors[node.output] = hostops.relu(value) if node.attrs.get("relu") else value
        for name, value in tensors.items():
            parts.setdefault(name, []).append(value)
        if progress is not None:
            progress(tensors[graph.input].shape[0])
    return {name: np.concatenate(values) for name, values in parts.items()}
