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
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...models import hostops, quantize as q
from ...models.requant import requantize

__all__ = ["IntNetwork", "quantize_steps"]

#: Host ops whose output has its input's scale (they move, pick or average int8 values).
_SAME_SCALE = ("im2col", "rows_to_image", "max_pool", "avg_pool", "global_avg_pool",
               "flatten", "relu")


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

    @property
    def input_scale(self) -> float:
        return self.scales[self.input]


def _padded(x: np.ndarray, cols: int) -> np.ndarray:
    return x if x.shape[1] == cols else np.pad(x, ((0, 0), (0, cols - x.shape[1])))


def _engine_step(step: dict, index: int, state: dict, engine: str, options: dict,
                 refit: bool, correct_bias: bool) -> tuple[dict, dict]:
    scales, ints, floats = state["scales"], state["ints"], state["floats"]
    weight, bias = step["weight"], step["bias"]
    rows, cols = weight.shape
    s_in = scales[step["inputs"][0]]
    per_channel = not step["raw"]
    form = q.engine_weights(engine, weight, per_channel, options, step.get("structure"))
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
    # acc + bias as the result path adds them; the bias range is the engine's, checked later
    raw = acc + weights.get("bias", 0)
    if step["raw"]:
        s_out = s_in * float(w_scales[0])
        out = raw[:, :rows]
    else:
        # the output scale from this layer's own outputs in the compressed network
        values = raw[:, :rows] * (s_in * w_scales[:rows])
        s_out = q.activation_scale(hostops.relu(values) if step["relu"] else values)
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
    return described, weights


def quantize_steps(input_name: str, output_name: str, steps: list, calib: dict, engine: str,
                   options: dict, *, refit: bool = True, correct_bias: bool = True,
                   progress=None) -> IntNetwork:
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

    Raises
    ------
    ValueError
        If a weight rule's option is illegal, or a requantizer ratio cannot be realised. (The
        bias range is the engine's, checked against it later:
        :func:`secateur.models.quantize.check_bias_range`.)
    """
    scales = {input_name: q.activation_scale(calib[input_name])}
    state = {"scales": scales, "floats": dict(calib),
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
            scales[step["output"]] = q.activation_scale(hostops.relu(total) if step["relu"]
                                                         else total)
            step = dict(step, **q.residual_add_params(scales[name_a], scales[name_b],
                                                      scales[step["output"]]))
            ints[step["output"]] = hostops.run_host_op(step, inputs)
        elif step["op"] in _SAME_SCALE:
            scales[step["output"]] = scales[step["inputs"][0]]
            ints[step["output"]] = hostops.run_host_op(step, inputs)
            if step["op"] == "im2col":  # the patches of the float reference too
                floats[step["output"]] = hostops.run_host_op(
                    step, [floats[name] for name in step["inputs"]])
        else:
            raise ValueError(f"no quantization rule for the step {step['op']}")
        described.append(step)
        if progress is not None:
            progress(1)
    return IntNetwork(input_name, output_name, described, layers, scales, dict(options))
