"""The compiler's IR as a trainable torch module, for ``--compress qat``.

:class:`GraphModule` runs a *lowered* graph (:func:`~secateur.gen.compile.lower.lower`: batch
norms and constant biases folded, ReLUs fused) as the engines and the host see it: every
linear or conv node is one weight layer of ``(M, N)`` in :attr:`GraphModule.layers` (a conv's
weight ``(O, C, kh, kw)`` as its im2col matrix ``(O, C * kh * kw)``), and a conv runs by
im2col (``F.unfold`` after zero padding, the column order of
:func:`secateur.models.hostops.im2col`) through that layer, so the weights trained are
exactly the engine layers' weights. Pools, flatten, ReLU and residual adds are their float
definitions (:func:`~secateur.gen.compile.ir.evaluate`, to which the module is equal in
float64).

It follows the student protocol of :class:`secateur.models.network.Net`, so the compression
hooks of :data:`secateur.models.network.HOOKS` train it: a layer may be replaced by any module
mapping ``(R, N) -> (R, M)`` (ternary, LFSR-pruned, permuted-diagonal padded to whole blocks:
:func:`secateur.models.network.apply_layer` pads its inputs and crops its outputs), ``record``
collects every tensor the integer network quantizes (the input, every hidden layer's output
after its fused ReLU, every residual add's output), and ``act_scales`` fake-quantizes them to
int8 in that order (:func:`secateur.models.quantize.fake_quant`). :func:`trained_graph` writes
the trained layers back into the graph, with the structure their training fixed, for the
quantization path of ``--compress none``.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...models.network import apply_layer, trained_form
from ...models.quantize import fake_quant
from .ir import Graph
from .lower import LAYER_OPS, check_logits

__all__ = ["GraphModule", "trained_graph"]


def _pad(x: torch.Tensor, pads, value: float = 0.0) -> torch.Tensor:
    top, left, bottom, right = (int(pad) for pad in pads)
    return F.pad(x, (left, right, top, bottom), value=value)


class GraphModule(nn.Module):
    """A lowered :class:`~secateur.gen.compile.ir.Graph` as a float64 torch module (module
    docstring); ``forward(x)`` takes ``(B, *input_shape)`` and returns the logits ``(B, K)``.

    Raises
    ------
    ValueError
        If the graph holds an op lowering leaves on the host that this module does not run
        (it runs every op :func:`~secateur.gen.compile.lower.lower` leaves).
    """

    _RUNS = LAYER_OPS + ("relu", "flatten", "global_avg_pool", "max_pool", "avg_pool", "add")

    def __init__(self, graph: Graph):
        super().__init__()
        self.graph = copy.deepcopy(graph)
        logits = check_logits(self.graph)
        self._shapes = self.graph.shapes()
        layers, self._layer_index, rows = [], {}, []
        for position, node in enumerate(self.graph.nodes):
            if node.op not in self._RUNS:
                raise ValueError(f"{node.describe()}: the trainable graph does not run "
                                 f"{node.op}")
            if node.op in LAYER_OPS:
                weight = np.asarray(node.attrs["weight"], dtype=np.float64)
                matrix = weight.reshape(weight.shape[0], -1)
                bias = node.attrs.get("bias")
                layer = nn.Linear(matrix.shape[1], matrix.shape[0], bias=bias is not None,
                                  dtype=torch.float64)
                with torch.no_grad():
                    layer.weight.copy_(torch.from_numpy(matrix))
                    if bias is not None:
                        layer.bias.copy_(torch.from_numpy(np.asarray(bias, np.float64)))
                self._layer_index[position] = len(layers)
                layers.append(layer)
                rows.append(node is not logits)
        self.layers = nn.ModuleList(layers)
        self._row_scales = rows
        self.act_scales: list[float] | None = None
        self.weight_quant: list[bool] | None = None

    @property
    def row_scales(self) -> list[bool]:
        """Per layer, whether its export has one weight scale per row: every hidden layer;
        the logits' layer has one (:mod:`secateur.models.quantize`)."""
        return list(self._row_scales)

    def _quantized(self, value: torch.Tensor, record, counter: list) -> torch.Tensor:
        if record is not None:
            record.append(value.detach())
        if self.act_scales is not None:
            value = fake_quant(value, self.act_scales[counter[0]])
        counter[0] += 1
        return value

    def _layer(self, position: int, node, x: torch.Tensor) -> torch.Tensor:
        index = self._layer_index[position]
        rows = int(np.asarray(node.attrs["weight"]).shape[0])
        if node.op == "linear":
            return apply_layer(self, index, x, rows)
        kernel = tuple(np.asarray(node.attrs["weight"]).shape[2:])
        columns = F.unfold(_pad(x, node.attrs["pads"]), kernel,
                           stride=tuple(int(value) for value in node.attrs["stride"]))
        batch, cols, positions = columns.shape
        out = apply_layer(self, index, columns.transpose(1, 2).reshape(-1, cols), rows)
        _, height, width = self._shapes[node.output]
        return out.reshape(batch, height, width, rows).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor, record: list | None = None) -> torch.Tensor:
        counter = [0]
        tensors = {self.graph.input: self._quantized(x, record, counter)}
        for position, node in enumerate(self.graph.nodes):
            inputs = [tensors[name] for name in node.inputs]
            op, attrs = node.op, node.attrs
            if op in LAYER_OPS:
                value = self._layer(position, node, inputs[0])
            elif op == "add":
                value = inputs[0] + inputs[1]
            elif op == "relu":
                value = F.relu(inputs[0])
            elif op == "flatten":
                value = inputs[0].flatten(1)
            elif op == "global_avg_pool":
                value = inputs[0].mean(dim=(2, 3), keepdim=True)
            elif op == "max_pool":
                value = F.max_pool2d(_pad(inputs[0], attrs["pads"], -float("inf")),
                                     tuple(attrs["kernel"]), tuple(attrs["stride"]))
            else:  # avg_pool: window sums over the real (or, with count_include_pad, all) cells
                kernel, stride = tuple(attrs["kernel"]), tuple(attrs["stride"])
                value = F.avg_pool2d(_pad(inputs[0], attrs["pads"]), kernel, stride)
                if not attrs["count_include_pad"]:
                    ones = torch.ones_like(inputs[0][:1, :1])
                    value = value / F.avg_pool2d(_pad(ones, attrs["pads"]), kernel, stride)
            if attrs.get("relu") and op != "relu":
                value = F.relu(value)
            if op == "add" or (op in LAYER_OPS and self._row_scales[self._layer_index[position]]):
                value = self._quantized(value, record, counter)
            tensors[node.output] = value
        return tensors[self.graph.output].reshape(x.shape[0], -1)


def trained_graph(module: GraphModule) -> Graph:
    """The graph with every layer's trained weight and bias (cropped to the model's shape:
    :func:`secateur.models.network.trained_form`) and, in ``attrs["structure"]``, the
    structure its training fixed; what :func:`~secateur.gen.compile.lower.to_steps` and
    :func:`~secateur.gen.compile.ptq.quantize_steps` take."""
    graph = copy.deepcopy(module.graph)
    for position, node in enumerate(graph.nodes):
        if node.op not in LAYER_OPS:
            continue
        shape = np.asarray(node.attrs["weight"]).shape
        weight, bias, structure = trained_form(module.layers[module._layer_index[position]])
        node.attrs["weight"] = weight[:shape[0], :int(np.prod(shape[1:]))].reshape(shape)
        node.attrs["bias"] = None if bias is None else bias[:shape[0]]
        node.attrs["structure"] = structure
    return graph
