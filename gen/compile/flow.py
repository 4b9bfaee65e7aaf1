"""``secateur compile`` and ``secateur run-net``: a user's float model -> engine layers and host
ops, proved on the RTL.

Flow (:func:`compile_model`)
    1. Import (:func:`load_model`): ``.onnx`` (:mod:`.onnx_import`; with QONNX ``Quant``
       nodes :mod:`.qonnx_import`), ``.pt2`` or an ``nn.Module`` (:mod:`.pt2_import`) -> IR,
       with the float reference (onnxruntime on the original model, qonnx's executor on a
       QONNX model, or the torch module).
    2. Inputs checked against the model's input shape (:func:`check_array`) before any work.
    3. Graph passes and lowering to steps (:mod:`.lower`).
    4. Calibration: the float IR on CALIB (:func:`~.ir.evaluate`); the IR is first checked
       against the float reference on the first calibration inputs, so a misread graph is
       refused, not compiled.
    5. Quantization (:mod:`.ptq`, rules in :mod:`secateur.models.quantize`); engine settings
       chosen from the layer shapes, ``--set`` overriding; every layer checked by the engine
       (structure, sizes, bias range) before the RTL.
    6. ``--compress qat`` (:func:`finetune`): the lowered graph becomes a trainable module
       (:class:`~.trainable.GraphModule`), the engine's compression hook
       (:data:`secateur.models.network.HOOKS`) fine-tunes it on TRAIN with knowledge
       distillation from the float graph, and the trained network is quantized by step 5's
       path with the structure its training fixed.
    7. Outputs: ``network.json`` and ``layer{i}.npz``; with test inputs, the golden model and
       the RTL on every test input (one engine build for all layers), ``inputs.npy``,
       ``golden_logits.npy``, ``rtl_logits.npy`` and the report.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np

from ...models import hostops
from ...models.quantize import check_bias_range, quantize_activations
from ..netrun import energy_totals, layer_record, progress_bar, progress_lines
from ..tiling import tile_layer
from ..safeio import UsageError, save_npy, save_npz, write_text
from .ir import Graph, evaluate
from .lower import lower, to_steps
from .ptq import IntNetwork, quantize_steps

__all__ = ["COMPILE_OPTIONS", "COMPRESS_METHODS", "QAT_OPTIONS", "CompileMismatch", "Model",
           "load_model", "check_array", "check_compress", "check_finetune", "qat_options", "finetune",
           "compile_model", "run_network", "output_files"]

#: Per engine, the weight rule's ``--set`` options: (type, default).
COMPILE_OPTIONS = {
    "dense": {}, "cim": {},
    "ternary": {"delta": (float, None)},
    "lfsr": {"density": (float, 0.5)},
    "permdiag": {"p": (int, 4)},
}
COMPRESS_METHODS = ("none", "qat")
#: ``--compress qat``: per engine, the training options that differ from the hook's (``secateur
#: net``'s) defaults: permuted-diagonal layers start from the projection of the user's trained
#: weights instead of from scratch, ternary layers get an ``alpha`` per row
#: (:class:`secateur.models.network.RowScaled`; a folded batch norm leaves rows of very
#: different magnitudes), and int8 weights are fake-quantized in the last (QAT) phase, as the
#: export rounds them. A user's pretrained network moves further than ``secateur net``'s own
#: to reach a sparse form, so the sparse engines train longer (measured on the digits CNN of
#: benchmarks/bench_compile.py: lfsr 0.89 -> 0.95 from 6 to 30 epochs per stage, permdiag
#: 0.88 -> 0.93 from 60 epochs at 1e-2 to 150 at 3e-2, ternary 0.91 -> 0.93 from 30 to 60). ``density``, ``p`` and ``delta`` come from
#: :data:`COMPILE_OPTIONS` (``delta``: the hook's when not set).
QAT_OPTIONS = {
    "dense": {"fq_weights": 1}, "cim": {"fq_weights": 1},
    "lfsr": {"fq_weights": 1, "epochs": 30, "qat_epochs": 10},
    "permdiag": {"fq_weights": 1, "init": "project", "epochs": 150, "lr": 3e-2,
                 "qat_epochs": 10},
    "ternary": {"row_scales": 1, "epochs": 60, "qat_epochs": 10},
}
#: The seed of fine-tuning unless ``--set seed=S``.
QAT_SEED = 0
#: Largest |IR - reference| on calibration inputs, relative to the reference's largest |y|.
IMPORT_TOLERANCE = 1e-3
IMPORT_CHECK_INPUTS = 16
#: The quantile of the per-input differences a QONNX model's import check holds
#: (:func:`_check_import`): 4 of the 16 inputs may differ by a quantization step.
QONNX_CHECK_QUANTILE = 0.75
NETWORK_FORMAT = "secateur-network"
NETWORK_VERSION = 1


class CompileMismatch(Exception):
    """The RTL differed from the golden model (exit status 1); ``report`` is attached."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


@dataclass
class Model:
    """An imported model: its IR and its float reference ``reference(x) -> outputs``."""
    graph: Graph
    reference: Callable
    kind: str


def load_model(model, example_inputs=None) -> Model:
    """Import ``model``: a path to an ``.onnx`` or ``.pt2`` file, or an ``nn.Module`` (with
    ``example_inputs``, a float array or tensor of the input shape, batch first).

    Raises
    ------
    UsageError
        For an unknown file type or an unreadable, malformed model file.
    UnsupportedModel
        Naming the first node the compiler does not accept.
    """
    if not isinstance(model, (str, Path)):
        from .pt2_import import load_module
        return load_module(model, example_inputs)
    suffix = Path(model).suffix.lower()
    if suffix == ".onnx":
        from .onnx_import import load_onnx, onnx_reference, read_onnx
        from .qonnx_import import is_qonnx, load_qonnx, qonnx_reference
        proto = read_onnx(model)
        if is_qonnx(proto):  # Quant nodes: their quantization, qonnx's executor as reference
            graph = load_qonnx(proto, model)
            return Model(graph, qonnx_reference(proto), "qonnx")
        graph = load_onnx(model, proto)
        return Model(graph, onnx_reference(model, graph.batch), "onnx")
    if suffix == ".pt2":
        from .pt2_import import load_pt2
        return load_pt2(model)
    raise UsageError(f"model file {model} has an unknown type {suffix or '(no extension)'!r}; "
                     f"give an .onnx file (torch.onnx.export) or a .pt2 file (torch.export.save)")


def check_array(shape, dtype, graph: Graph, what: str) -> None:
    """Check a float model input array's declared ``shape`` and ``dtype`` against the model.

    Raises
    ------
    UsageError
        If it is not floating point, or not ``(B, *input_shape)`` with ``B >= 1``.
    """
    expected = tuple(graph.input_shape)
    if np.dtype(dtype).kind != "f":
        raise UsageError(f"{what} must be float32 model inputs, not {np.dtype(dtype)}")
    if len(shape) != len(expected) + 1 or tuple(shape[1:]) != expected or shape[0] < 1:
        raise UsageError(f"{what} has shape {tuple(shape)}; the model takes (B, "
                         f"{', '.join(map(str, expected))})")


def qat_options(engine: str) -> dict:
    """The default training options of ``--compress qat`` on ``engine`` (hook options,
    :data:`QAT_OPTIONS`, and the seed)."""
    from ...models.network import HOOKS
    return dict(HOOKS[engine].options, **QAT_OPTIONS[engine], seed=QAT_SEED)


def _split_settings(engine: str, settings: dict,
                    compress: str = "none") -> tuple[dict, dict, dict | None]:
    """``--set`` values -> the weight rule's options, engine parameters and, for ``qat``,
    the training options."""
    from ..net import _parse
    from ..registry import engine_class
    known = COMPILE_OPTIONS[engine]
    options = {key: default for key, (_, default) in known.items()}
    training = qat_options(engine) if compress == "qat" else None
    params = [param.name for param in engine_class(engine).PARAMS]
    user = {}
    for key, value in settings.items():
        if key in known:
            options[key] = _parse(key, known[key][0], value)
        elif training is not None and key in training:
            training[key] = _parse(key, type(training[key]), value)
        elif key in params:
            user[key] = value
        else:
            names = list(known) + [key for key in training or () if key not in known]
            raise ValueError(f"secateur compile has no setting {key} for the {engine} engine; "
                             f"options: {', '.join(names) or 'none'}; engine parameters: "
                             f"{', '.join(params)}")
    if "density" in options and not 0 < options["density"] <= 1:
        raise ValueError(f"--set density must be in (0, 1], not {options['density']}")
    if "p" in options and options["p"] < 1:
        raise ValueError(f"--set p must be an integer >= 1, not {options['p']}")
    if options.get("delta") is not None and not 0 <= options["delta"] <= 1:
        raise ValueError(f"--set delta must be in [0, 1], not {options['delta']}")
    if training is not None:
        if training.get("init", "project") not in ("project", "scratch"):
            raise ValueError(f"--set init must be project or scratch, not {training['init']!r}")
        for key, value in training.items():
            if isinstance(value, (int, float)) and value < 0:
                raise ValueError(f"--set {key} must be >= 0, not {value}")
        training.update({key: value for key, value in options.items() if value is not None})
    return options, user, training


def _cim_macros(shapes, macro_rows: int, macro_cols: int) -> int:
    slots = macro_cols // 8
    return max(math.ceil(cols / macro_rows) * math.ceil(rows / slots) for rows, cols in shapes)


def _engine_settings(engine: str, layers: list, user: dict, pe) -> dict:
    """Legal defaults for these layers (``max_rows``/``max_cols`` from the largest, the
    engine hook's defaults of ``secateur net``), then ``--set`` and ``--pe``."""
    from ..net import _engine_settings as net_settings
    shapes = [tuple(layer["w"].shape) for layer in layers]
    settings = net_settings(engine, shapes, {}, None)
    if engine == "cim":
        settings.pop("adc_bits")  # the engine's default ADC is lossless: W @ x exactly
        while _cim_macros(shapes, settings["macro_rows"], settings["macro_cols"]) > 64 and \
                settings["macro_rows"] < 1024:
            settings["macro_rows"] *= 2
            settings["macro_cols"] *= 2
        settings["pe"] = _cim_macros(shapes, settings["macro_rows"], settings["macro_cols"])
    if engine == "permdiag":
        p = int(layers[0]["p"])
        settings["min_p"], settings["max_p"] = min(settings["min_p"], p), max(settings["max_p"], p)
    settings.update(user)
    if pe is not None:
        settings["pe"] = pe
    if engine == "lfsr" and "weight_depth" not in user:
        # The engine's default depth holds k = N / 2; a denser mask needs more.
        pe_ = int(settings["pe"])
        needed = max(math.ceil(rows / pe_) * int(layer["k"])
                     for layer, (rows, _) in zip(layers, shapes))
        default = math.ceil(settings["max_rows"] / pe_) * math.ceil(settings["max_cols"] / 2)
        if needed > default:
            settings["weight_depth"] = needed
    return settings


def _records(engine) -> dict:
    """Engine parameters a layer's npz records (``secateur run`` refuses another value): the
    CIM engine's ADC, which changes its arithmetic."""
    if engine.name != "cim":
        return {}
    return {key: np.asarray(engine.params[key], dtype=np.int64)
            for key in ("rows", "adc_bits", "adc_shift")}


def _check_import(model: Model, calib: np.ndarray) -> float:
    """The imported graph, as read (before any pass), against the float reference on the
    first calibration inputs: their largest difference relative to the reference's largest
    magnitude. On a QONNX model, the :data:`QONNX_CHECK_QUANTILE` quantile over the inputs of
    each input's largest difference: its quantizers turn a float32 (qonnx) against float64
    (the IR) difference at a rounding boundary into a whole quantization step, on an input or
    two, while a misread graph differs on every input.

    Raises
    ------
    UsageError
        If that exceeds :data:`IMPORT_TOLERANCE`.
    """
    inputs = calib[:IMPORT_CHECK_INPUTS]
    expected = np.asarray(model.reference(inputs), dtype=np.float64)
    ours = evaluate(model.graph, inputs)[model.graph.output].reshape(expected.shape)
    per_input = np.abs(ours - expected).reshape(len(inputs), -1).max(axis=1)
    worst = (np.quantile(per_input, QONNX_CHECK_QUANTILE, method="lower")
             if model.kind == "qonnx" else per_input.max())
    error = float(worst / max(np.abs(expected).max(), 1e-12))
    if not error <= IMPORT_TOLERANCE:
        raise UsageError(f"the imported graph disagrees with the {model.kind} reference by "
                         f"{error:.2g} (relative) on the calibration inputs; refusing to "
                         f"compile a graph that was not read exactly")
    return error


def _engine_layers(engine, net: IntNetwork) -> list:
    """Every layer checked by the engine (structure, sizes, bias range), before any RTL, and
    cut into tiles where it exceeds the engine instance (:mod:`secateur.gen.tiling`)."""
    bias_bits = engine.bias_width
    layers = []
    for step in (step for step in net.steps if step["op"] == "engine"):
        weights = net.layers[step["layer"]]
        where = f"layer {step['layer']} ({', '.join(step['source'])})"
        if "bias" in weights:
            check_bias_range(weights["bias"], bias_bits, where)
        try:
            layers.append(tile_layer(engine, weights))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where} does not fit the {engine.name} engine: {error}") from None
    return layers


def _float_logits(model: Model, x: np.ndarray) -> np.ndarray:
    return np.asarray(model.reference(x), dtype=np.float64).reshape(x.shape[0], -1)


def _golden(net: IntNetwork, layers: list, x_int8: np.ndarray):
    tensors, trace = hostops.run_steps(net.steps, net.input, x_int8,
                                       lambda index, vectors: layers[index].reference(vectors))
    return hostops.flatten(tensors[net.output]), trace


def _prove(net: IntNetwork, engine, layers: list, x_int8: np.ndarray, simulator: str,
           progress: bool) -> dict:
    """The golden model and the RTL (one build, every layer in turn, each layer's RTL outputs
    compared with the golden layer on the same inputs) on every input."""
    from ...sim.runner import BatchSimulator
    golden, trace = _golden(net, layers, x_int8)
    sim = BatchSimulator(engine, simulator, progress=progress_lines(progress))
    start = time.perf_counter()
    sim.build()
    build_seconds = time.perf_counter() - start
    records, first = [], []
    bar = progress_bar(len(layers), f"rtl {engine.name}", progress, unit="layer")

    golden_layers = {index: (vectors, out) for index, vectors, out in trace}

    def run(index, vectors):
        result = layers[index].run(sim, vectors)
        seen, expected = golden_layers[index]
        if not np.array_equal(seen, vectors):  # after a mismatch upstream: the same inputs
            expected = layers[index].reference(vectors)
        differ = np.argwhere(result.y != expected)
        if differ.size and not first:
            row, col = (int(value) for value in differ[0])
            first.append(f"layer {index}, vector {row}, output {col}: RTL "
                         f"{int(result.y[row, col])}, golden {int(expected[row, col])}")
        records.append(layer_record(index, layers[index], engine, result, vectors,
                                    x_int8.shape[0], len(differ)))
        bar.update(1)
        return result.y

    tensors, _ = hostops.run_steps(net.steps, net.input, x_int8, run)
    bar.close()
    rtl = hostops.flatten(tensors[net.output])
    images = x_int8.shape[0]
    cycles = sum(layer["cycles"] for layer in records)
    mismatches = int(np.count_nonzero(rtl != golden)) + sum(layer["mismatches"]
                                                            for layer in records)
    return {"golden": golden, "rtl": rtl, "first_layer_inputs": trace[0][1],
            "report": {"images": images, "mismatches": mismatches,
                       "first_mismatch": first[0] if first else None, "cycles": cycles,
                       "cycles_per_inference": cycles / images,
                       **energy_totals(records, images), "layers": records,
                       "rtl_wall_seconds": {"build": round(build_seconds, 2),
                                            "run": round(time.perf_counter() - start
                                                         - build_seconds, 2)}}}


def _compression(engine, net: IntNetwork) -> dict:
    from ...models.network import model_bits
    engine_steps = [step for step in net.steps if step["op"] == "engine"]
    qnet = SimpleNamespace(
        engine=engine.name, params=engine.params,
        specs=[SimpleNamespace(cout=step["model_rows"], cols=step["model_cols"])
               for step in engine_steps],
        layers=[SimpleNamespace(weights=net.layers[step["layer"]]) for step in engine_steps])
    bits = model_bits(qnet)
    for layer, step in zip(bits["layers"], engine_steps):
        layer["bias_bits"] = engine.bias_width * step["rows"] if step["bias"] else 0
        layer["bits"] += layer["bias_bits"]
    total = sum(layer["bits"] for layer in bits["layers"])
    return {"ratio": bits["float32_bits"] / total, "bits": total,
            "float32_bits": bits["float32_bits"], "layers": bits["layers"]}


def output_files(directory, layers: int, test: bool) -> list[Path]:
    """The files ``secateur compile`` writes in ``directory``."""
    directory = Path(directory)
    names = ["network.json"] + [f"layer{index}.npz" for index in range(layers)]
    if test:
        names += ["inputs.npy", "golden_logits.npy", "rtl_logits.npy"]
    return [directory / name for name in names]


def _replay(engine, index: int, inputs: str) -> str:
    settings = " ".join(f"--set {key}={value}" for key, value in engine.params.items()
                        if key != "pe")
    return (f"secateur run --engine {engine.name} --pe {engine.params['pe']} {settings} "
            f"--weights layer{index}.npz --inputs {inputs} --out y{index}.npy")


def _network_json(graph: Graph, net: IntNetwork, engine, options: dict, calib_count: int,
                  import_error: float) -> dict:
    shapes = {name: list(shape) for name, shape in graph.shapes().items()}
    steps = []
    for step in net.steps:
        step = dict(step)
        if step["op"] == "engine":
            inputs = "inputs.npy" if step["layer"] == 0 else f"<layer {step['layer']} inputs>"
            step["replay"] = _replay(engine, step["layer"], inputs)
        steps.append(step)
    return {
        "format": NETWORK_FORMAT, "version": NETWORK_VERSION,
        "source": dict(graph.source, input=graph.input, output=graph.output),
        "engine": {"name": engine.name, "params": engine.params},
        "input": {"tensor": net.input, "shape": list(graph.input_shape),
                  "scale": net.input_scale, "quantize": "x_int = sat8(rint(x / scale))"},
        "output": {"tensor": net.output, "scale": net.scales[net.output],
                   "meaning": "raw acc + bias of the last engine layer; logits ~= scale * "
                              "value"},
        "tensors": {name: {"scale": scale, "shape": shapes.get(name),
                           "scale_from": net.scale_sources.get(name)}
                    for name, scale in net.scales.items()},
        "steps": steps,
        "lowerings": list(graph.lowerings),
        "calibration": {"inputs": calib_count, "rule": "scale = max(percentile(|x|, 99.99), "
                        "1e-8) / 127 per tensor, on the calibration inputs run through the "
                        "compressed network, layer by layer (models/quantize.py)",
                        "options": options,
                        "import_check_relative_error": import_error},
        **({"quantization": _quantization(net)} if graph.source.get("format") == "qonnx"
           else {}),
    }


def _quantization(net: IntNetwork) -> dict:
    """A QONNX model's quantization, per engine layer (where its weights and scales came
    from) and per tensor (which scales its Quant nodes gave, which were still calibrated)."""
    from .ptq import CALIBRATED
    return {"layers": [dict(step["quantization"], layer=step["layer"], source=step["source"])
                       for step in net.steps if step["op"] == "engine"],
            "from_quant": {name: source for name, source in net.scale_sources.items()
                           if source != CALIBRATED and not source.startswith(("as ", "raw "))},
            "calibrated": [name for name, source in net.scale_sources.items()
                           if source == CALIBRATED]}


def _write_network(directory: Path, document: dict, net: IntNetwork) -> None:
    write_text(directory / "network.json", json.dumps(document, indent=2, default=_json) + "\n")
    for index, weights in enumerate(net.layers):
        save_npz(directory / f"layer{index}.npz", weights)


def _json(value):
    return np.asarray(value).tolist()


def _quantized(model: Model, calib: np.ndarray, engine_name: str, options: dict,
               progress: bool) -> tuple[Graph, IntNetwork, float]:
    error = _check_import(model, calib)
    graph = lower(copy.deepcopy(model.graph))
    return graph, _quantize_graph(graph, calib, engine_name, options, progress), error


def _quantize_graph(graph: Graph, calib: np.ndarray, engine_name: str, options: dict,
                    progress: bool, trained: bool = False) -> IntNetwork:
    """Steps 4 and 5: the float graph on CALIB, then the compressed network quantized layer
    by layer; a ``trained`` graph (``--compress qat``) keeps the weights, biases and structure
    of its training: no reconstruction, no bias correction."""
    steps = to_steps(graph)
    bar = progress_bar(calib.shape[0], "calibrate", progress, unit="input")
    values = evaluate(graph, calib, progress=bar.update)
    bar.close()
    bar = progress_bar(len(steps), "quantize", progress, unit="step")
    net = quantize_steps(graph.input, graph.output, steps, values, engine_name, options,
                         refit=not trained, correct_bias=not trained, progress=bar.update,
                         input_quant=graph.input_quant)
    bar.close()
    return net


def check_compress(compress: str, finetune: bool) -> None:
    """``--compress`` is a method of :data:`COMPRESS_METHODS`, and ``--finetune`` is given
    exactly with ``qat``.

    Raises
    ------
    UsageError
        Otherwise.
    """
    if compress not in COMPRESS_METHODS:
        raise UsageError(f"--compress must be one of {', '.join(COMPRESS_METHODS)}, not "
                         f"{compress!r}")
    if compress == "qat" and not finetune:
        raise UsageError("--compress qat needs --finetune TRAIN.npz (keys x and y: training "
                         "inputs and their integer labels)")
    if compress != "qat" and finetune:
        raise UsageError("--finetune goes with --compress qat")


def check_finetune(data, graph: Graph) -> tuple[np.ndarray, np.ndarray]:
    """The ``--finetune`` data: a mapping (an ``.npz``) with ``x``, float model inputs
    ``(B, *input_shape)``, and ``y``, ``B`` integer labels.

    Raises
    ------
    UsageError
        If a key is missing or unknown, or an array does not fit the model.
    """
    keys = sorted(data)
    if keys != ["x", "y"]:
        raise UsageError(f"--finetune data has keys {keys}; it must hold exactly x (float32 "
                         f"model inputs) and y (their integer labels)")
    x, y = np.asarray(data["x"]), np.asarray(data["y"])
    check_array(x.shape, x.dtype, graph, "--finetune x")
    _check_labels(y, x.shape[0], "--finetune y")
    return x, y


def finetune(graph: Graph, data: tuple, engine, options: dict, *, progress: bool,
             test=None) -> tuple[Graph, dict]:
    """``--compress qat`` (module docstring, step 6): fine-tune the lowered float ``graph``
    with ``engine``'s compression hook on ``data = (x, y)``, distilling from the float graph
    (:func:`secateur.models.network.kd_loss`, in float64, ``options["seed"]``).

    Returns
    -------
    graph : Graph
        The trained graph (:func:`~.trainable.trained_graph`).
    report : dict
        Seconds, epochs, the options and, with ``test = (x, y)``, the trained float
        network's test accuracy (``finetuned_accuracy``).
    """
    import torch

    from ...models import network as nw
    from .trainable import GraphModule, trained_graph
    torch.set_num_threads(1)  # small models: threads only contend with the simulator
    start = time.perf_counter()
    hook = nw.HOOKS[engine.name]
    teacher = GraphModule(graph).eval()
    student = copy.deepcopy(teacher)
    inputs = torch.from_numpy(np.asarray(data[0], dtype=np.float64))
    targets = nw.kd_targets(teacher, inputs, torch.from_numpy(np.asarray(data[1],
                                                                          dtype=np.int64)))
    epochs = hook.epochs(options)
    bar = progress_bar(epochs, f"finetune {engine.name}", progress)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options["seed"])
        info = hook.train(student, (inputs, targets), engine.params, options,
                          loss_fn=nw.kd_loss(), seed=options["seed"], progress=bar.update)
    bar.close()
    student.eval()
    report = {"seconds": round(time.perf_counter() - start, 2), "epochs": epochs,
              "images": int(inputs.shape[0]), "options": dict(options),
              "info": json.loads(json.dumps(info, default=_json))}
    if test is not None:
        with torch.no_grad():
            logits = student(torch.from_numpy(np.asarray(test[0], dtype=np.float64)))
        report["finetuned_accuracy"] = nw.accuracy(logits, torch.from_numpy(
            np.asarray(test[1], dtype=np.int64)))
    return trained_graph(student), report


def compile_model(model: Model, calib: np.ndarray, engine_name: str, *, pe=None,
                  settings: dict | None = None, out=None, test=None, labels=None,
                  compress: str = "none", finetune_data=None, simulator: str = "verilator",
                  progress: bool = True, log=print) -> dict:
    """Compile an imported model; returns the report (module docstring).

    Parameters
    ----------
    model : Model
        From :func:`load_model`.
    calib : numpy.ndarray
        Float calibration inputs ``(B, *input_shape)``.
    engine_name : str
        The engine.
    pe : int, optional
        Processing elements (else the default for the network).
    settings : dict, optional
        ``--set`` values: the weight rule's options (:data:`COMPILE_OPTIONS`), with ``qat``
        the training options (:func:`qat_options`), or engine parameters.
    out : path, optional
        Directory for ``network.json``, the layers and, with ``test``, the logits.
    test, labels : numpy.ndarray, optional
        Float test inputs and their integer labels: run the golden model and the RTL.
    compress : str
        ``none`` (post-training quantization) or ``qat`` (fine-tuning, then the same
        quantization: :func:`finetune`).
    finetune_data : mapping, optional
        With ``qat`` (and only then): ``x`` and ``y``, the training inputs and labels
        (:func:`check_finetune`).

    Raises
    ------
    ValueError, TypeError, UsageError
        User errors, before any long work where they can be known then.
    UnsupportedModel
        From the passes.
    CompileMismatch
        If the RTL differs from the golden model (the report is attached).
    """
    from ..registry import engine_class, make_engine
    start = time.perf_counter()
    engine_class(engine_name)
    check_compress(compress, finetune_data is not None)
    check_array(calib.shape, calib.dtype, model.graph, "calibration inputs")
    if test is not None:
        check_array(test.shape, test.dtype, model.graph, "test inputs")
        _check_labels(labels, test.shape[0])
    if finetune_data is not None:
        finetune_data = check_finetune(finetune_data, model.graph)
    if compress == "qat" and model.kind == "qonnx":
        raise UsageError("--compress qat fine-tunes a float model; a QONNX model brings its "
                         "own quantization, compiled as it is (use --compress none)")
    options, user, training = _split_settings(engine_name, dict(settings or {}), compress)
    calib = np.asarray(calib, dtype=np.float32)
    graph, net, import_error = _quantized(model, calib, engine_name, options, progress)
    engine = make_engine(engine_name, **_engine_settings(engine_name, net.layers, user, pe))
    stages, tuning = {}, None
    if compress == "qat":
        if test is not None:  # after compression, before fine-tuning: the PTQ network
            stages["compressed"] = _golden_accuracy(net, engine, test, labels)
        graph, tuning = finetune(graph, finetune_data, engine, training, progress=progress,
                                 test=None if test is None else (test, labels))
        net = _quantize_graph(graph, calib, engine_name, options, progress, trained=True)
    for weights in net.layers:
        weights.update(_records(engine))
    layers = _engine_layers(engine, net)
    document = _network_json(graph, net, engine, options, calib.shape[0], import_error)
    directory = None if out is None else Path(out)
    if directory is not None:
        _write_network(directory, document, net)
    report = {"engine": engine_name, "params": engine.params, "model": model.graph.source,
              "compress": compress, "options": options, "layers_compiled": len(layers),
              "lowerings": list(graph.lowerings),
              "compression": _compression(engine, net),
              **({"quantization": document["quantization"]} if "quantization" in document
                 else {}),
              "wall_seconds": {"compile": round(time.perf_counter() - start, 2)}}
    if tuning is not None:
        report["finetune"] = tuning
        report["wall_seconds"]["finetune"] = tuning["seconds"]
    if test is not None:
        report.update(_verify(model, net, engine, layers, test, labels, directory, simulator,
                              progress))
        stages = {"float": report["float_accuracy"], **stages}
        if tuning is not None:
            stages["finetuned"] = tuning["finetuned_accuracy"]
        report["stages"] = dict(stages, golden=report["golden_accuracy"],
                                rtl=report["rtl_accuracy"])
    report["wall_seconds"]["total"] = round(time.perf_counter() - start, 2)
    if report.get("mismatches"):
        raise CompileMismatch(f"{engine_name}: the RTL differs from the golden model at "
                              f"{report['first_mismatch'] or 'the logits'}", report)
    return report


def _golden_accuracy(net: IntNetwork, engine, x, labels) -> float:
    """The golden model's test accuracy of a quantized network (no RTL)."""
    from ...models.network import accuracy
    arrays = [dict(weights, **_records(engine)) for weights in net.layers]
    layers = _engine_layers(engine, IntNetwork(net.input, net.output, net.steps, arrays,
                                               net.scales))
    logits, _ = _golden(net, layers, quantize_activations(np.asarray(x, np.float32),
                                                          net.input_scale))
    return accuracy(logits, labels)


def _check_labels(labels, count: int, what: str = "labels") -> None:
    if labels is None:
        raise UsageError("--test needs --labels")
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu" or labels.shape != (count,):
        raise UsageError(f"{what} must be {count} integers, shape ({count},), not "
                         f"{labels.dtype} {labels.shape}")


def _verify(model, net, engine, layers, test, labels, directory, simulator, progress) -> dict:
    from ...models.network import accuracy
    test = np.asarray(test, dtype=np.float32)
    float_logits = _float_logits(model, test)
    proof = _prove(net, engine, layers, quantize_activations(test, net.input_scale), simulator,
                   progress)
    golden, rtl = proof["golden"], proof["rtl"]
    if directory is not None:
        save_npy(directory / "inputs.npy", proof["first_layer_inputs"])
        save_npy(directory / "golden_logits.npy", golden.astype(np.int64))
        save_npy(directory / "rtl_logits.npy", rtl.astype(np.int64))
    return {
        "float_accuracy": accuracy(float_logits, labels),
        "golden_accuracy": accuracy(golden, labels),
        "rtl_accuracy": accuracy(rtl, labels),
        "agreement": float(np.mean(golden.argmax(axis=1) == float_logits.argmax(axis=1))),
        **proof["report"],
    }


def run_network(directory, x: np.ndarray, *, simulator: str = "verilator",
                progress: bool = True) -> tuple[np.ndarray, dict]:
    """Replay a compiled directory on float inputs: quantize with the recorded input scale,
    run the golden model and the RTL, return the RTL's raw logits and a report.

    Raises
    ------
    UsageError, ValueError
        If the directory is not a compiled network or ``x`` does not fit it.
    CompileMismatch
        If the RTL differs from the golden model.
    """
    from ..registry import make_engine
    from ..safeio import read_npz
    directory = Path(directory)
    document = _read_network(directory)
    shape = tuple(document["input"]["shape"])
    if np.asarray(x).dtype.kind != "f" or tuple(x.shape[1:]) != shape or x.shape[0] < 1:
        raise UsageError(f"inputs have shape {tuple(x.shape)} ({x.dtype}); the network takes "
                         f"float (B, {', '.join(map(str, shape))})")
    engine = make_engine(document["engine"]["name"], **document["engine"]["params"])
    engine_steps = [step for step in document["steps"] if step["op"] == "engine"]
    weights = [read_npz(directory / step["file"], "weights file") for step in engine_steps]
    for arrays in weights:
        engine.check_weight_keys(arrays, arrays)
    net = IntNetwork(document["input"]["tensor"], document["output"]["tensor"],
                     document["steps"], weights, {document["input"]["tensor"]:
                                                  document["input"]["scale"]})
    layers = [tile_layer(engine, arrays) for arrays in weights]
    proof = _prove(net, engine, layers, quantize_activations(x, net.input_scale), simulator,
                   progress)
    report = {"engine": engine.name, "params": engine.params, **proof["report"]}
    if report["mismatches"]:
        raise CompileMismatch(f"the RTL differs from the golden model at "
                              f"{report['first_mismatch'] or 'the logits'}", report)
    return proof["rtl"], report


def _read_network(directory: Path) -> dict:
    from ..safeio import read_bytes
    path = directory / "network.json"
    try:
        document = json.loads(read_bytes(path, "network file", 1 << 28))
    except (ValueError, UnicodeDecodeError) as error:
        raise UsageError(f"network file {path} is not JSON: {error}") from None
    if not isinstance(document, dict) or document.get("format") != NETWORK_FORMAT or \
            document.get("version") != NETWORK_VERSION:
        raise UsageError(f"{path} is not a network.json written by secateur compile (format "
                         f"{NETWORK_FORMAT} version {NETWORK_VERSION})")
    return document
