"""Post-training quantization of lowered steps: calibrated scales for every tensor, engine
weights in each engine's native form, quantized biases and the requantizers, by the rules of
:mod:`secateur.models.quantize`; the result is an :class:`IntNetwork`, whose steps
:func:`secateur.models.hostops.run_steps` runs.

The network is quantized in step order, on the calibration inputs, as the compressed network
computes them (:func:`quantize_steps`): every layer's output scale, its reconstructed weights
(lfsr, permdiag) and its corrected bias come from what the layers already quantized give it,
so later layers see, and compensate, what earlier ones lost. ``--compress qat`` goes through
the same path, with the structure its training fixed in each engine step (``structure``), its
trained weights and its own float model as the reference.

A QONNX model brings its own quantization (:mod:`.qonnx_import`): an engine step with a
``weight_quant`` takes its integers and scales as given (:func:`given_form`: no
reconstruction, no bias correction), and a tensor with a ``Quant`` (the input's
``input_quant``, a step's ``output_quant``) takes its scale instead of a calibrated one.
``IntNetwork.scale_sources`` says which is which.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...models import hostops, quantize as q
from ...models.requant import requantize

__all__ = ["IntNetwork", "given_form", "quantize_steps"]

#: Host ops whose output has its input's scale (they move, pick or average int8 values).
_SAME_SCALE = ("im2col", "rows_to_image", "max_pool", "avg_pool", "global_avg_pool",
               "flatten", "relu", "clip")
CALIBRATED = "calibrated"


@dataclass
class IntNetwork:
    """The integer network: JSON-ready ``steps``, one weights dict per engine layer, and the
    scale of every tensor (``x ~= scales[name] * x_int``; the logits' scale is that of the
    last layer's accumulator, ``s_in * s_w``)."""
    input: str
    output: str
    steps: list
    layers: list
    scales: dict
    options: dict = field(default_factory=dict)
    #: Per tensor, where its scale comes from: a QONNX ``Quant`` node, :data:`CALIBRATED`,
    #: the tensor it is computed from (host ops that keep a scale) or the raw logits.
    scale_sources: dict = field(default_factory=dict)

    @property
    def input_scale(self) -> float:
        return self.scales[self.input]


def _padded(x: np.ndarray, cols: int) -> np.ndarray:
    return x if x.shape[1] == cols else np.pad(x, ((0, 0), (0, cols - x.shape[1])))


def given_form(engine: str, weight: np.ndarray, given: dict, per_channel: bool,
               options: dict) -> tuple[q.WeightForm, str, bool]:
    """The weight form of a layer whose weight a QONNX ``Quant`` quantized (``given``:
    ``ints`` (M, N), ``scales`` (M,), ``source``): its integers and scales where the engine
    holds them, else the engine's rule on the dequantized ``weight``.

    Returns
    -------
    form : WeightForm
    note : str
        What was done, for ``network.json``.
    exact : bool
        True when the engine's weights are the ``Quant``'s integers.
    """
    ints, scales, source = given["ints"], np.asarray(given["scales"], np.float64), given["source"]
    if not per_channel and not np.all(scales == scales[0]):
        form = q.engine_weights(engine, weight, False, options)
        return form, (f"{source}'s per-channel weights re-quantized to one scale by the "
                      f"{engine} rule: the last layer's raw outputs (the logits) share one "
                      f"scale"), False
    if engine in ("dense", "cim"):
        return q.WeightForm({"w": ints.astype(np.int8)}, scales.copy()), \
            f"the integers and scales of {source}", True
    if engine == "ternary" and np.isin(ints, (-1, 0, 1)).all():
        form = q.engine_weights(engine, weight, per_channel, options,
                                {"codes": ints.astype(np.int8), "alpha": scales})
        return form, f"the ternary codes of {source}, alpha = its scales", True
    why = ("its integers exceed {-1, 0, 1}" if engine == "ternary" else
           "the engine chooses its own sparse structure")
    form = q.engine_weights(engine, weight, per_channel, options)
    return form, (f"the {engine} rule on the dequantized weights of {source} ({why})"), False


def _engine_step(step: dict, index: int, state: dict, engine: str, options: dict,
                 refit: bool, correct_bias: bool) -> tuple[dict, dict]:
    scales, ints, floats = state["scales"], state["ints"], state["floats"]
    weight, bias = step["weight"], step["bias"]
    rows, cols = weight.shape
    s_in = scales[step["inputs"][0]]
    per_channel = not step["raw"]
    quantization = {"input_scale": state["sources"][step["inputs"][0]]}
    if step.get("weight_quant") is not None:
        form, quantization["weights"], exact = given_form(engine, weight, step["weight_quant"],
                                                          per_channel, options)
        # the model's own weights: nothing to refit, its bias is its own
        refit = refit and not exact
        correct_bias = correct_bias and not exact
    else:
        form = q.engine_weights(engine, weight, per_channel, options, step.get("structure"))
        quantization["weights"] = f"the {engine} rule (post-training)"
    x = _padded(ints[step["inputs"][0]], form.weights["w"].shape[1])
    target = None
    if correct_bias or (refit and form.mask is not None):
        target = floats[step["inputs"][0]] @ weight.T + (0.0 if bias is None else bias)
    reconstructed = refit and form.mask is not None
    if reconstructed:
        refitted, fitted_bias = q.reconstruct(x * s_in, target, form.mask)
        form = q.engine_weights(engine, refitted[:rows, :cols], per_channel, options,
                                form.structure)
        bias = fitted_bias[:rows]
    weights, w_scales = dict(form.weights), form.scales
    acc = x.astype(np.int64) @ weights["w"].astype(np.int64).T
    if correct_bias:
        bias = q.corrected_bias(target, acc[:, :rows] * (s_in * w_scales[:rows]))
    if bias is not None:
        weights["bias"] = q.quantize_bias(bias, s_in, w_scales)
        quantization["bias"] = _bias_note(step.get("bias_quant"), s_in, w_scales[:rows],
                                          correct_bias)
    # acc + bias as the result path adds them; the bias range is the engine's, checked later
    raw = acc + weights.get("bias", 0)
    if step["raw"]:
        s_out = s_in * float(w_scales[0])
        out = raw[:, :rows]
        state["sources"][step["output"]] = "raw logits: input scale x weight scale"
    else:
        # the output scale from this layer's own outputs in the compressed network
        values = raw[:, :rows] * (s_in * w_scales[:rows])
        s_out = _output_scale(step, hostops.relu(values) if step["relu"] else values, state)
        requant = q.layer_requant(s_in, w_scales, s_out, step["relu"])
        weights.update(requant.to_npz())
        out = requantize(raw, requant)[:, :rows].astype(np.int8)
    scales[step["output"]] = s_out
    ints[step["output"]] = out
    layer_rows, layer_cols = weights["w"].shape
    described = {key: value for key, value in step.items()
                 if key not in ("weight", "bias", "structure")}
    described.update(layer=index, file=f"layer{index}.npz", rows=int(layer_rows),
                     cols=int(layer_cols), model_rows=int(rows), model_cols=int(cols),
                     bias="bias" in weights, bias_corrected=bool(correct_bias),
                     reconstructed=bool(reconstructed),
                     scales={"input": s_in, "weight": [float(value) for value in w_scales],
                             "output": s_out})
    for key in ("weight_quant", "bias_quant", "output_quant"):
        described.pop(key, None)
    if state["qonnx"]:
        quantization["output_scale"] = state["sources"][step["output"]]
        described["quantization"] = quantization
    return described, weights


def _output_scale(step: dict, values, state: dict) -> float:
    """A step's output scale: its ``Quant``'s, else calibrated on ``values``."""
    given = step.get("output_quant")
    if given is not None:
        state["sources"][step["output"]] = given["source"]
        return float(given["scale"])
    state["sources"][step["output"]] = CALIBRATED
    return q.activation_scale(values)


def _bias_note(given, s_in: float, w_scales, corrected: bool) -> str:
    if corrected:
        return "corrected (post-training) and rounded to the accumulator scale"
    if given is not None:
        if np.allclose(given["scales"], s_in * w_scales, rtol=1e-6, atol=0):
            return f"the int32 integers of {given['source']} (its scale is s_in x s_w)"
        return (f"{given['source']}'s values rounded to the accumulator scale s_in x s_w "
                f"(its own scale differs)")
    return "float, rounded to the accumulator scale s_in x s_w"


def quantize_steps(input_name: str, output_name: str, steps: list, calib: dict, engine: str,
                   options: dict, *, refit: bool = True, correct_bias: bool = True,
                   progress=None, input_quant: dict | None = None) -> IntNetwork:
    """Quantize lowered steps (:func:`~secateur.gen.compile.lower.to_steps`) in order, on
    the calibration inputs run through the compressed network (module docstring).

    Parameters
    ----------
    input_name, output_name : str
        The network's input and output tensors.
    steps : list of dict
        Lowered steps; engine steps hold float ``weight`` (M, N), ``bias`` and optionally a
        ``structure`` (:class:`secateur.models.quantize.WeightForm`) to keep.
    calib : dict
        Float values of every model tensor on the calibration inputs
        (:func:`~secateur.gen.compile.ir.evaluate`); ``calib[input_name]`` are the inputs.
        They are the reference of reconstruction and bias correction.
    engine : str
        The engine whose native weight form is used.
    options : dict
        The weight rule's options (``density``, ``p``, ``delta``).
    refit : bool
        Reconstruct the kept weights of pruned forms (:func:`secateur.models.quantize.
        reconstruct`).
    correct_bias : bool
        Correct every layer's bias (:func:`secateur.models.quantize.corrected_bias`).
    progress : callable, optional
        Called with 1 after every step.
    input_quant : dict, optional
        The input's ``Quant`` (``scale``, ``source``): its scale instead of a calibrated one.

    Raises
    ------
    ValueError
        If a weight rule's option is illegal, or a requantizer ratio cannot be realised. (The
        bias range is the engine's, checked against it later:
        :func:`secateur.models.quantize.check_bias_range`.)
    """
    qonnx = input_quant is not None or any(
        any(key in step for key in ("weight_quant", "output_quant")) for step in steps)
    if input_quant is not None:
        scales, sources = {input_name: float(input_quant["scale"])}, \
            {input_name: input_quant["source"]}
    else:
        scales, sources = {input_name: q.activation_scale(calib[input_name])}, \
            {input_name: CALIBRATED}
    state = {"scales": scales, "floats": dict(calib), "sources": sources, "qonnx": qonnx,
             "ints": {input_name: q.quantize_activations(calib[input_name],
                                                          scales[input_name])}}
    ints, floats = state["ints"], state["floats"]
    described, layers = [], []
    for step in steps:
        inputs = [ints[name] for name in step["inputs"]]
        if step["op"] == "engine":
            step, weights = _engine_step(step, len(layers), state, engine, options, refit,
                                         correct_bias)
            layers.append(weights)
        elif step["op"] == "residual_add":
            (name_a, name_b), (a, b) = step["inputs"], inputs
            total = a * scales[name_a] + b * scales[name_b]
            scales[step["output"]] = _output_scale(step, hostops.relu(total) if step["relu"]
                                                   else total, state)
            step = {key: value for key, value in step.items() if key != "output_quant"}
            step = dict(step, **q.residual_add_params(scales[name_a], scales[name_b],
                                                      scales[step["output"]]))
            ints[step["output"]] = hostops.run_host_op(step, inputs)
        elif step["op"] in _SAME_SCALE:
            scales[step["output"]] = scales[step["inputs"][0]]
            sources[step["output"]] = f"as {step['inputs'][0]}"
            ints[step["output"]] = hostops.run_host_op(step, inputs)
            if step["op"] == "im2col":  # the patches of the float reference too
                floats[step["output"]] = hostops.run_host_op(
                    step, [floats[name] for name in step["inputs"]])
        else:
            raise ValueError(f"no quantization rule for the step {step['op']}")
        described.append(step)
        if progress is not None:
            progress(1)
    return IntNetwork(input_name, output_name, described, layers, scales, dict(options),
                      sources)
