"""QONNX front end: an ONNX model with QONNX ``Quant`` nodes, as Brevitas exports it ->
the compiler's :class:`~secateur.gen.compile.ir.Graph`, with the quantization the model defines
instead of calibration.

The file is read and checked as any ONNX model (:func:`~.onnx_import.read_onnx`), wrapped in
qonnx's ``ModelWrapper``, and walked by the ONNX front end (:mod:`.onnx_import`, which refuses
what the float path refuses); the ``Quant`` nodes (read through qonnx's own ``Quant`` op, so
their attributes have qonnx's defaults) become:

* on a constant (a weight, or a bias): the constant's integers ``q = clip(rint(w / scale), lo,
  hi)`` (:func:`secateur.models.quantize.given_integers`) and its value ``q * scale``; a Gemm,
  MatMul or Conv whose weight it is carries them as ``weight_quant`` (the integers and one
  scale per output row), its bias quantizer as ``bias_quant``;
* on an activation: an IR ``quant`` node (its scale, its integer range), whose scale
  :func:`~.lower.resolve_quants` gives the tensor it quantizes.

Refused, naming the node (exit status 2): a zero point other than 0, a rounding mode other than
``ROUND``, a scale, zero point or bit width that is not a constant, weights or activations of
more than 8 bits (unsigned: more than 7, since an unsigned 8-bit value needs 9 bits of an int8
lane), a weight scale that is not per tensor or per output channel, an activation scale that is
not per tensor, ``BipolarQuant``, ``Trunc`` and the other QONNX ops.

The float reference (:func:`qonnx_reference`) is qonnx's own executor
(``qonnx.core.onnx_exec.execute_onnx``) on the model as the file holds it.
"""

from __future__ import annotations

import copy

import numpy as np

from ...models.quantize import given_integers, int_range
from .ir import Graph, refuse
from .onnx_import import _ONNX_DOMAINS, _attrs, _Importer, in_batches

__all__ = ["QONNX_DOMAINS", "QUANTIZERS", "MAX_BITS", "BIAS_MAX_BITS", "is_qonnx",
           "load_qonnx", "qonnx_reference"]

#: The domains a QONNX quantizer is found in (qonnx's, and the older exporters' names, which
#: qonnx's cleanup renames to the first).
QONNX_DOMAINS = ("qonnx.custom_op.general", "onnx.brevitas", "finn.custom_op.general")
#: Op types that make an ONNX file a QONNX model.
QUANTIZERS = ("Quant", "IntQuant", "BipolarQuant", "Trunc", "FloatQuant")
#: The widest weight or activation quantizer (signed; unsigned: one bit less), the engines'
#: int8 lanes.
MAX_BITS = 8
#: The widest bias quantizer: the result path's 32-bit bias.
BIAS_MAX_BITS = 32
#: Inputs per call of qonnx's executor, which runs one fixed batch size.
REFERENCE_BATCH = 64
_ROUND = ("ROUND", "HALF_EVEN")
_WEIGHT_INPUT = {"Gemm": 1, "MatMul": 1, "Conv": 1}
_BIAS_INPUT = {"Gemm": 2, "Conv": 2}


def is_qonnx(model) -> bool:
    """Whether an ``onnx.ModelProto`` holds a QONNX quantizer."""
    return any(node.op_type in QUANTIZERS and node.domain not in _ONNX_DOMAINS
               for node in model.graph.node)


def _wrapped(model):
    """qonnx's ``ModelWrapper`` of a copy of ``model``, its quantizers in qonnx's domain (as
    ``qonnx.util.cleanup`` renames them), so qonnx's op registry knows them."""
    from qonnx.core.modelwrapper import ModelWrapper
    model = copy.deepcopy(model)
    for node in model.graph.node:
        if node.op_type in QUANTIZERS and node.domain in QONNX_DOMAINS:
            node.domain = QONNX_DOMAINS[0]
    return ModelWrapper(model)


class _QonnxImporter(_Importer):
    def __init__(self, model, path):
        self.wrapper = _wrapped(model)
        super().__init__(self.wrapper.model, path)
        self.source["format"] = "qonnx"
        #: Output name of a constant's Quant -> its integers, scales and node.
        self.quantized: dict = {}
        self.quantizers = 0

    def foreign(self, node) -> None:
        if node.op_type in ("Quant", "IntQuant") and node.domain in QONNX_DOMAINS:
            self.quant(node)
        elif node.op_type == "BipolarQuant":
            raise refuse(node.op_type, node.name, "is a bipolar (1-bit, +-scale) quantizer; "
                         "the engines take int8 activations and int8 or ternary weights (use a "
                         "Quant of 2 to 8 bits)")
        elif node.op_type == "Trunc":
            raise refuse(node.op_type, node.name, "truncates low bits (QONNX Trunc, as "
                         "Brevitas' TruncAvgPool2d exports it); the engines' host ops round "
                         "(use an AveragePool without truncation)")
        elif node.op_type in QUANTIZERS:
            raise refuse(node.op_type, node.name, f"is a QONNX {node.op_type}; only Quant "
                         f"(integer, zero point 0) is supported")
        else:
            super().foreign(node)

    def quant(self, node) -> None:
        from qonnx.custom_op.registry import getCustomOp
        self.quantizers += 1
        op = getCustomOp(node)
        signed, narrow = bool(op.get_nodeattr("signed")), bool(op.get_nodeattr("narrow"))
        mode = str(op.get_nodeattr("rounding_mode")).upper()
        if mode not in _ROUND:
            raise refuse(node.op_type, node.name, f"rounds with rounding_mode {mode}; only "
                         f"ROUND (half to even, as the engines' quantization) is supported")
        scale = self.const(node, 1, "scale")
        zero = self.const(node, 2, "zero point")
        bits = self.const(node, 3, "bit width")
        if scale is None or zero is None or bits is None:
            raise refuse(node.op_type, node.name, "lacks a scale, zero point or bit width input")
        if np.any(zero != 0):
            raise refuse(node.op_type, node.name, f"has a zero point of "
                         f"{_shown(zero)}; only zero point 0 (symmetric quantization) is "
                         f"supported")
        if bits.size != 1 or float(bits.reshape(())) != int(bits.reshape(())):
            raise refuse(node.op_type, node.name, f"has a bit width of {_shown(bits)}; it "
                         f"must be one integer")
        bits = int(bits.reshape(()))
        if bits < 2:
            raise refuse(node.op_type, node.name, f"has {bits} bit; 1-bit quantizers are "
                         f"bipolar, not supported")
        if not (np.isfinite(scale).all() and (scale > 0).all()):
            raise refuse(node.op_type, node.name, "has a scale that is not finite and > 0")
        low, high = int_range(bits, signed, narrow)
        info = {"node": node, "bits": bits, "signed": signed, "narrow": narrow, "low": low,
                "high": high, "source": f"{node.op_type} {node.name}"}
        x = node.input[0]
        if x in self.constants:
            value = np.asarray(self.constants[x])
            try:  # divided in the constants' own precision, as qonnx's executor divides them
                ints = given_integers(value, scale, low, high,
                                      np.result_type(value, scale, np.float32))
            except ValueError as error:
                raise refuse(node.op_type, node.name, str(error)) from None
            scale = scale.astype(np.float64)
            self.constants[node.output[0]] = ints * scale
            self.quantized[node.output[0]] = dict(
                info, ints=ints, scales=np.broadcast_to(scale, ints.shape))
            return
        scale = scale.astype(np.float64)
        self._check_width(node, info, "an activation", "activations")
        if scale.size != 1:
            raise refuse(node.op_type, node.name, f"has {scale.size} scales (shape "
                         f"{tuple(scale.shape)}) on an activation; an activation has one scale "
                         f"per tensor (per-channel activation scales are not supported)")
        self.emit(node, "quant", [self.activation(node)], scale=float(scale.reshape(())),
                  low=low, high=high, bits=bits, signed=signed, narrow=narrow)

    @staticmethod
    def _check_width(node, info: dict, what: str, plural: str) -> None:
        bits = info["bits"]
        if not info["signed"] and bits == MAX_BITS:
            raise refuse(node.op_type, node.name, f"quantizes {what} to unsigned 8 bits "
                         f"(0..255), which needs 9 bits of the engines' int8 lanes; use "
                         f"bit_width 7 for unsigned {plural}")
        if bits > MAX_BITS or (not info["signed"] and bits > MAX_BITS - 1):
            kind = "signed" if info["signed"] else "unsigned"
            raise refuse(node.op_type, node.name, f"quantizes {what} to {bits} bits ({kind}); "
                         f"{plural} take at most 8 bits signed or 7 unsigned (the engines' "
                         f"int8 lanes)")

    def emit(self, node, op: str, inputs: list, **attrs) -> None:
        if op in ("linear", "conv"):
            weight = self._given_weight(node, attrs)
            if weight is not None:
                attrs["weight_quant"] = weight
            bias = self._given_bias(node, attrs)
            if bias is not None:
                attrs["bias_quant"] = bias
        super().emit(node, op, inputs, **attrs)

    def _given_weight(self, node, attrs) -> dict | None:
        """The weight's integers ``(M, ...)`` and one scale per output row, as the layer reads
        the weight (Gemm's ``transB`` and ``alpha``, MatMul's ``(N, M)``)."""
        index = _WEIGHT_INPUT[node.op_type]
        given = self.quantized.get(node.input[index])
        if given is None:
            return None
        quantizer = given["node"]
        self._check_width(quantizer, given, f"the weight of {node.op_type} {node.name}",
                          "weights")
        ints, scales = given["ints"], np.asarray(given["scales"], dtype=np.float64)
        sign = 1
        if node.op_type == "Gemm":
            alpha = float(_attrs(node).get("alpha", 1.0))
            scales, sign = scales * abs(alpha), -1 if alpha < 0 else 1
            if not _attrs(node).get("transB", 0):
                ints, scales = ints.T, scales.T
        elif node.op_type == "MatMul":
            ints, scales = ints.T, scales.T
        rows = scales.reshape(scales.shape[0], -1)
        if not np.all(rows == rows[:, :1]):
            raise refuse(quantizer.op_type, quantizer.name, f"scales the weight of "
                         f"{node.op_type} {node.name} along an axis other than the output "
                         f"channels; weight scales are per tensor or per output channel")
        return {"ints": (ints * sign).astype(np.int64), "scales": rows[:, 0].copy(),
                "source": given["source"], "bits": given["bits"]}

    def _given_bias(self, node, attrs) -> dict | None:
        index = _BIAS_INPUT.get(node.op_type)
        if index is None or index >= len(node.input):
            return None
        given = self.quantized.get(node.input[index])
        if given is None:
            return None
        quantizer = given["node"]
        if given["bits"] > BIAS_MAX_BITS or not given["signed"]:
            raise refuse(quantizer.op_type, quantizer.name, f"quantizes the bias of "
                         f"{node.op_type} {node.name} to {given['bits']} bits "
                         f"({'signed' if given['signed'] else 'unsigned'}); a bias takes at "
                         f"most {BIAS_MAX_BITS} bits, signed")
        rows = attrs["weight"].shape[0]
        scales = np.asarray(given["scales"], np.float64).reshape(-1)
        if np.ptp(scales) == 0:  # the bias's one scale, broadcast against it
            scales = np.full(rows, scales[0])
        if scales.shape != (rows,):
            raise refuse(quantizer.op_type, quantizer.name, f"has a bias scale of "
                         f"{scales.size} values; it must be one, or one per output ({rows})")
        if node.op_type == "Gemm":
            scales = scales * abs(float(_attrs(node).get("beta", 1.0)))
        return {"scales": scales.copy(), "source": given["source"], "bits": given["bits"]}

    def run(self) -> Graph:
        graph = super().run()
        graph.lowerings.insert(0, f"QONNX model: {self.quantizers} Quant nodes read with qonnx "
                                  f"(their scales and integers taken as given)")
        return graph


def _shown(value: np.ndarray):
    value = np.asarray(value)
    return value.reshape(()).item() if value.size == 1 else value.reshape(-1).tolist()[:8]


def load_qonnx(model, path) -> Graph:
    """A checked ``onnx.ModelProto`` holding QONNX quantizers (:func:`is_qonnx`) -> the IR.

    Raises
    ------
    UnsupportedModel
        Naming the first node, quantizer or not, that is not accepted, and why.
    """
    return _QonnxImporter(model, path).run()


def qonnx_reference(model):
    """The float reference: qonnx's executor (``execute_onnx`` on a ``ModelWrapper``, its
    shapes inferred by qonnx's ``InferShapes``) on the model as the file holds it, ``x ->
    outputs``. The executor runs one fixed batch size: :data:`REFERENCE_BATCH`, set by qonnx's
    ``ChangeBatchSize`` (which also rewrites the batch of constant Reshape targets), whatever
    batch the model was exported with (Brevitas exports a batch of 1)."""
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.change_batchsize import ChangeBatchSize
    from qonnx.transformation.infer_shapes import InferShapes
    batch = REFERENCE_BATCH
    wrapper = _wrapped(model).transform(ChangeBatchSize(batch)).transform(InferShapes())
    name = next(value.name for value in wrapper.graph.input
                if wrapper.get_initializer(value.name) is None)
    output = wrapper.graph.output[0].name

    def run(x):
        return in_batches(lambda chunk: execute_onnx(
            wrapper, {name: chunk.astype(np.float32)})[output], np.asarray(x), batch)
    return run
