"""The graph passes, in order (:func:`lower`): remove identities -> drop a trailing Softmax ->
fold BatchNormalization and constant bias adds into the linear or conv layer before them ->
take the scales of a QONNX model's activation quantizers (:func:`resolve_quants`) -> fuse
ReLU into the layer (or residual add) before it -> check that the logits come from an engine
layer -> lower to steps (:func:`to_steps`: linear and conv layers become engine layers,
conv by im2col; pooling, flatten, residual adds and the remaining ReLUs become host ops).

Every rewrite is appended to ``graph.lowerings``, in words, for ``network.json``.
"""

from __future__ import annotations

import numpy as np

from .ir import Graph, Node, UnsupportedModel, refuse

__all__ = ["LAYER_OPS", "lower", "resolve_quants", "to_steps"]

#: The IR ops that become engine layers.
LAYER_OPS = ("linear", "conv")
#: Ops that only reshape or pass values, allowed between the last layer and the output.
_SHAPE_ONLY = ("flatten",)


def _remove(graph: Graph, node: Node, note: str) -> None:
    graph.nodes.remove(node)
    graph.rename(node.output, node.inputs[0])
    graph.lowerings.append(note)


def remove_identities(graph: Graph) -> None:
    for node in [node for node in graph.nodes if node.op == "identity"]:
        _remove(graph, node, f"{node.describe()} removed (identity at inference)")


def drop_trailing_softmax(graph: Graph) -> None:
    for node in [node for node in graph.nodes if node.op == "softmax"]:
        if node.output != graph.output:
            raise refuse(node.source_op, node.name, "is not the last node (only a trailing "
                         "Softmax is supported, and dropped)")
        _remove(graph, node, f"{node.describe()} dropped: the output is the logits before it "
                             f"(argmax is unchanged)")


def _sole_layer_before(graph: Graph, node: Node, ops=LAYER_OPS) -> Node:
    """The linear/conv node whose output only ``node`` reads, or a refusal."""
    producer = graph.producer(node.inputs[0])
    if producer is None or producer.op not in ops:
        before = "the model input" if producer is None else producer.describe()
        raise refuse(node.source_op, node.name, f"follows {before}, not a Gemm, MatMul or Conv "
                     f"it can be folded into")
    if len(graph.consumers(producer.output)) > 1 or producer.output == graph.output:
        raise refuse(node.source_op, node.name, f"cannot be folded into {producer.describe()}, "
                     f"whose output is also used elsewhere")
    return producer


def _scale_rows(layer: Node, scale: np.ndarray, shift: np.ndarray) -> None:
    weight = layer.attrs["weight"]
    layer.attrs["weight"] = weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    given = layer.attrs.get("weight_quant")
    if given is not None:  # a row scaled by c: its integers by sign(c), its scale by |c|
        sign = np.where(scale < 0, -1, 1).reshape((-1,) + (1,) * (weight.ndim - 1))
        given["ints"] = given["ints"] * sign * (scale != 0).reshape(sign.shape)
        given["scales"] = np.where(scale != 0, given["scales"] * np.abs(scale), given["scales"])
    bias = layer.attrs.get("bias")
    layer.attrs["bias"] = (np.zeros(weight.shape[0]) if bias is None else bias) * scale + shift


def fold_into_layers(graph: Graph) -> None:
    """BatchNormalization and constant bias adds, into the linear or conv layer they follow."""
    for node in [node for node in graph.nodes if node.op in ("batchnorm", "bias_add")]:
        layer = _sole_layer_before(graph, node)
        if node.op == "batchnorm":
            _scale_rows(layer, node.attrs["scale"], node.attrs["shift"])
        else:
            _scale_rows(layer, np.ones(layer.attrs["weight"].shape[0]), node.attrs["bias"])
        what = "folded into" if node.op == "batchnorm" else "folded into the bias of"
        layer.output, node.output = node.output, layer.output
        graph.nodes.remove(node)
        graph.lowerings.append(f"{node.describe()} {what} {layer.describe()}")


#: Ops a quantizer commutes with (monotonic, scale-preserving): a ``Quant`` after them is the
#: same ``Quant`` before them, so its scale is that of the tensor they read.
_COMMUTES = ("max_pool", "flatten", "relu")
_INT8 = (-128, 127)


def _logits_layer(graph: Graph) -> Node | None:
    node = graph.producer(graph.output)
    while node is not None and node.op in _SHAPE_ONLY + ("quant",):
        node = graph.producer(node.inputs[0])
    return node


def resolve_quants(graph: Graph) -> None:
    """A QONNX model's activation quantizers (IR ``quant``) become the scales of the tensors
    they quantize: through MaxPool, Flatten and Relu (which commute with a quantizer) back to
    the tensor that sets a scale, the model input (``graph.input_quant``), a linear or conv
    layer's output or a residual add's (``attrs["output_quant"]``). The node is removed when
    its range holds the int8 values the network gives there, else it becomes a ``clip`` (a host
    op). A quantizer on the logits is dropped: the last layer returns raw ``acc + bias``.

    Raises
    ------
    UnsupportedModel
        If a quantizer follows another op (a pooling average, a host op), or gives a tensor a
        second scale.
    """
    last = _logits_layer(graph)
    for node in [node for node in graph.nodes if node.op == "quant"]:
        low, high = _INT8
        producer = graph.producer(node.inputs[0])
        while producer is not None and producer.op in _COMMUTES:
            low = max(low, 0) if producer.op == "relu" else low
            producer = graph.producer(producer.inputs[0])
        attrs = node.attrs
        quant = {"scale": attrs["scale"], "source": node.describe(), "low": attrs["low"],
                 "high": attrs["high"]}
        if producer is not None and producer is last:
            _remove(graph, node, f"{node.describe()} on the logits dropped: the last layer "
                                 f"returns raw acc + bias (argmax unchanged but for ties)")
            continue
        if producer is not None and producer.op not in LAYER_OPS + ("add",):
            raise refuse(node.source_op, node.name, f"follows {producer.describe()}; an "
                         f"activation Quant must follow the model input, a Gemm, MatMul or "
                         f"Conv (with its Relu), or a residual Add (MaxPool, Flatten and Relu "
                         f"may come between)")
        where = "the model input" if producer is None else f"{producer.describe()}'s output"
        held = graph.input_quant if producer is None else producer.attrs.get("output_quant")
        if held is not None and not np.isclose(held["scale"], quant["scale"], rtol=1e-9,
                                               atol=0):
            raise refuse(node.source_op, node.name, f"gives {where} the scale "
                         f"{quant['scale']:.6g}, but {held['source']} gave it {held['scale']:.6g}; "
                         f"a tensor has one scale")
        if held is None:
            if producer is None:
                graph.input_quant = quant
            else:
                producer.attrs["output_quant"] = quant
        if attrs["low"] <= low and attrs["high"] >= high:
            _remove(graph, node, f"{node.describe()}: its scale {attrs['scale']:.6g} is that "
                                 f"of {where} (range [{attrs['low']}, {attrs['high']}] holds the "
                                 f"int8 [{low}, {high}] there)")
            continue
        clipped = (max(attrs["low"], _INT8[0]), min(attrs["high"], _INT8[1]))
        node.op, node.attrs = "clip", {"scale": attrs["scale"], "low": clipped[0],
                                       "high": clipped[1]}
        graph.lowerings.append(f"{node.describe()}: its scale {attrs['scale']:.6g} is that of "
                               f"{where}; its range [{attrs['low']}, {attrs['high']}] is a host "
                               f"clip to [{clipped[0]}, {clipped[1]}]")


def fuse_relu(graph: Graph) -> None:
    """A ReLU after a layer becomes the layer's requantizer ReLU; after a residual add, the
    add's; anywhere else it stays, as a host op."""
    for node in [node for node in graph.nodes if node.op == "relu"]:
        producer = graph.producer(node.inputs[0])
        if producer is None or producer.op not in LAYER_OPS + ("add",) or \
                len(graph.consumers(producer.output)) > 1 or producer.attrs.get("relu"):
            graph.lowerings.append(f"{node.describe()} runs on the host")
            continue
        producer.attrs["relu"] = True
        producer.output = node.output
        graph.nodes.remove(node)
        where = "requantizer" if producer.op in LAYER_OPS else "host add"
        graph.lowerings.append(f"{node.describe()} fused into {producer.describe()} ({where})")


def check_logits(graph: Graph) -> Node:
    """The engine layer whose raw ``acc + bias`` are the logits.

    Raises
    ------
    UnsupportedModel
        If the output is not an engine layer's (through Flatten at most), or that layer has a
        ReLU (the last layer returns raw accumulators).
    """
    node = graph.producer(graph.output)
    while node is not None and node.op in _SHAPE_ONLY:
        node = graph.producer(node.inputs[0])
    if node is None or node.op not in LAYER_OPS:
        what = "the input" if node is None else node.describe()
        raise UnsupportedModel(f"the model output comes from {what}; it must come from a Gemm, "
                               f"MatMul or Conv layer, whose raw accumulators are the logits")
    if node.attrs.get("relu"):
        raise UnsupportedModel(f"the last layer {node.describe()} ends in a ReLU; the last "
                               f"engine layer returns raw logits, so a final ReLU is not "
                               f"supported")
    return node


def lower(graph: Graph) -> Graph:
    """Run the graph passes in place (module docstring); returns ``graph``."""
    remove_identities(graph)
    drop_trailing_softmax(graph)
    fold_into_layers(graph)
    resolve_quants(graph)
    fuse_relu(graph)
    check_logits(graph)
    for node in graph.nodes:
        if node.op not in ("linear", "conv", "relu", "flatten", "global_avg_pool", "max_pool",
                           "avg_pool", "add", "clip"):
            raise refuse(node.source_op, node.name, "is left after lowering")
    return graph


def _window(node: Node) -> dict:
    kernel = node.attrs.get("kernel") or node.attrs["weight"].shape[2:]
    return {"kernel": [int(value) for value in kernel],
            "stride": [int(value) for value in node.attrs["stride"]],
            "pads": [int(value) for value in node.attrs["pads"]]}


def _layer_steps(node: Node, shapes: dict, last: bool) -> list[dict]:
    weight = node.attrs["weight"]
    layer = {"op": "engine", "source": [node.describe()], "relu": bool(node.attrs.get("relu")),
             "raw": last, "tensor": node.output, "weight": weight.reshape(weight.shape[0], -1),
             "bias": node.attrs.get("bias"), "structure": node.attrs.get("structure"),
             **{key: node.attrs[key] for key in ("weight_quant", "bias_quant", "output_quant")
                if node.attrs.get(key) is not None}}
    if "weight_quant" in layer:
        given = layer["weight_quant"]
        layer["weight_quant"] = dict(given, ints=given["ints"].reshape(weight.shape[0], -1))
    if node.op == "linear":
        return [dict(layer, inputs=list(node.inputs), output=node.output)]
    patches, rows = f"{node.output}/patches", f"{node.output}/rows"
    _, height, width = shapes[node.output]
    return [{"op": "im2col", "inputs": list(node.inputs), "output": patches, **_window(node)},
            dict(layer, inputs=[patches], output=rows),
            {"op": "rows_to_image", "inputs": [rows], "output": node.output,
             "image": [int(height), int(width)]}]


def to_steps(graph: Graph) -> list[dict]:
    """The lowered graph as steps (:func:`secateur.models.hostops.run_steps`), each engine
    step still holding its float ``weight`` (M, N) and ``bias``; the last one is ``raw``."""
    shapes = graph.shapes()
    last = check_logits(graph)
    steps = []
    for node in graph.nodes:
        if node.op in LAYER_OPS:
            steps += _layer_steps(node, shapes, node is last)
        elif node.op == "add":
            steps.append({"op": "residual_add", "inputs": list(node.inputs),
                          "output": node.output, "relu": bool(node.attrs.get("relu"))})
            if node.attrs.get("output_quant") is not None:
                steps[-1]["output_quant"] = node.attrs["output_quant"]
        elif node.op == "clip":
            steps.append({"op": "clip", "inputs": list(node.inputs), "output": node.output,
                          "low": int(node.attrs["low"]), "high": int(node.attrs["high"])})
        else:
            step = {"op": node.op, "inputs": list(node.inputs), "output": node.output}
            if node.op in ("max_pool", "avg_pool"):
                step.update(_window(node))
            if node.op == "avg_pool":
                step["count_include_pad"] = bool(node.attrs["count_include_pad"])
            steps.append(step)
        steps[-1]["source"] = [node.describe()]
    return steps
