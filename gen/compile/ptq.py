"""Post-training quantization of lowered steps (``--compress none``): calibrated scales for every
tensor, engine weights in each engine's native form, quantized biases and the requantizers,
by the rules of :mod:`secateur.models.quantize`; the result is an :class:`IntNetwork`, whose
steps :func:`secateur.models.hostops.run_steps` runs."""

from __future__ import annotations

from dataclasses import dataclass, field


from ...models import quantize as q

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


def _engine_step(step: dict, index: int, scales: dict, calib: dict, engine: str,
                 options: dict) -> tuple[dict, dict]:
    weight, bias = step["weight"], step["bias"]
    s_in = scales[step["inputs"][0]]
    weights, w_scales = q.engine_weights(engine, weight, not step["raw"], options)
    if bias is not None:
        weights["bias"] = q.quantize_bias(bias, s_in, w_scales)
    if step["raw"]:
        s_out = s_in * float(w_scales[0])
    else:
        s_out = q.activation_scale(calib[step["tensor"]])
        weights.update(q.layer_requant(s_in, w_scales, s_out, step["relu"]).to_npz())
    scales[step["output"]] = s_out
    rows, cols = weights["w"].shape
    described = {key: value for key, value in step.items() if key not in ("weight", "bias")}
    described.update(layer=index, file=f"layer{index}.npz", rows=int(rows), cols=int(cols),
                     model_rows=int(weight.shape[0]), model_cols=int(weight.shape[1]),
                     bias=bias is not None,
                     scales={"input": s_in, "weight": [float(value) for value in w_scales],
                             "output": s_out})
    return described, weights


def quantize_steps(input_name: str, output_name: str, steps: list, calib: dict, engine: str,
                   options: dict) -> IntNetwork:
    """Quantize lowered steps (:func:`~secateur.gen.compile.lower.to_steps`).

    Parameters
    ----------
    input_name, output_name : str
        The network's input and output tensors.
    steps : list of dict
        Lowered steps; engine steps hold float ``weight``, ``bias`` and their model tensor
        ``tensor`` (calibrated for hidden layers).
    calib : dict
        Float values of every model tensor on the calibration inputs
        (:func:`~secateur.gen.compile.ir.evaluate`).
    engine : str
        The engine whose native weight form is used.
    options : dict
        The weight rule's options (``density``, ``p``, ``delta``).

    Raises
    ------
    ValueError
        If a weight rule's option is illegal, or a requantizer ratio cannot be realised. (The
        bias range is the engine's, checked against it later:
        :func:`secateur.models.quantize.check_bias_range`.)
    """
    scales = {input_name: q.activation_scale(calib[input_name])}
    described, layers = [], []
    for step in steps:
        if step["op"] == "engine":
            step, weights = _engine_step(step, len(layers), scales, calib, engine, options)
            layers.append(weights)
        elif step["op"] == "residual_add":
            scale_a, scale_b = (scales[name] for name in step["inputs"])
            scales[step["output"]] = q.activation_scale(calib[step["output"]])
            step = dict(step, **q.residual_add_params(scale_a, scale_b, scales[step["output"]]))
        elif step["op"] in _SAME_SCALE:
            scales[step["output"]] = scales[step["inputs"][0]]
        else:
            raise ValueError(f"no quantization rule for the step {step['op']}")
        described.append(step)
    return IntNetwork(input_name, output_name, described, layers, scales, dict(options))
