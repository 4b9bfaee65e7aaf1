"""``secateur net``: train (or load from the cache) a network on the digits data, compress it
with one engine's technique, run every test image through the generated RTL one layer at a
time, and prove the RTL's logits equal to the integer golden model of the whole network.

Flow
    1. Settings: ``--set`` keys that name a network option (:data:`NET_OPTIONS`, or one of the
       engine hook's options in :data:`secateur.models.network.HOOKS`) go to training;
       every other key is an engine parameter. Engine parameters not given are chosen from
       the network (``max_rows``/``max_cols`` from its largest layer, the hook's defaults).
    2. The float teacher is cached under ``<cache>/teacher-...pt`` (shared by all engines),
       the compressed network under ``<cache>/<engine>-...pt``, keyed by everything that
       changes them, so a second run skips training.
    3. Knowledge distillation: the student is trained with and without it; the integer
       network deployed is the one with the better *training-set* accuracy (the test split
       never selects anything); both test accuracies are reported.
    4. RTL: one simulator build per engine parameter set (:class:`BatchSimulator`); each
       layer is loaded and the whole test split streamed through it; the host does im2col,
       pooling and flattening on int8 values between layers, exactly as the golden model.
       Every layer's RTL outputs are checked against the golden layer on the same inputs,
       and the RTL logits against the golden model of the whole network.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from .netrun import energy_totals, layer_record, progress_bar as _progress
from .netrun import progress_lines as _lines
from .tiling import tile_layer
from .safeio import save_npy, save_npz, write_text

__all__ = ["NET_OPTIONS", "NetMismatch", "run_net"]

#: Network options every engine accepts through ``--set`` (value type, default).
NET_OPTIONS = {
    "arch": (str, "mlp"),            # mlp | cnn | tiny
    "images": (int, 0),              # test images through the RTL; 0 = the whole split
    "kd": (str, "both"),             # both | on | off
    "teacher_epochs": (int, 40),
}
CACHE_VERSION = 1
KD_TOLERANCE = 0.005


class NetMismatch(Exception):
    """The RTL disagreed with the golden model (exit status 1)."""


def _parse(key: str, kind, value):
    if not isinstance(value, str):
        return value
    try:
        if kind is int:
            return int(value, 0)
        if kind is float:
            return float(value)
    except ValueError:
        raise ValueError(f"--set {key} must be {'an integer' if kind is int else 'a number'}, "
                         f"not {value!r}") from None
    return value


def _split_settings(engine: str, settings: dict):
    from ..models import network as nw
    from .registry import engine_class
    hook = nw.HOOKS[engine]
    net = {key: default for key, (kind, default) in NET_OPTIONS.items()}
    options = dict(hook.options)
    engine_settings = {}
    engine_params = [param.name for param in engine_class(engine).PARAMS]
    for key, value in settings.items():
        if key in NET_OPTIONS:
            net[key] = _parse(key, NET_OPTIONS[key][0], value)
        elif key in options:
            options[key] = _parse(key, type(options[key]), value)
        elif key in engine_params:
            engine_settings[key] = value
        else:
            raise ValueError(
                f"secateur net has no setting {key}; network options: "
                f"{', '.join(list(NET_OPTIONS) + list(options))}; {engine} engine parameters: "
                f"{', '.join(engine_params)}")
    if net["arch"] not in nw.ARCHS:
        raise ValueError(f"--set arch must be one of {', '.join(nw.ARCHS)}, not {net['arch']!r}")
    if net["arch"] not in hook.archs:
        raise ValueError(f"the {engine} engine runs the networks {', '.join(hook.archs)}, "
                         f"not {net['arch']}")
    if net["kd"] not in ("both", "on", "off"):
        raise ValueError(f"--set kd must be both, on or off, not {net['kd']!r}")
    if net["images"] < 0 or net["teacher_epochs"] < 1:
        raise ValueError("--set images must be >= 0 and teacher_epochs >= 1")
    for key, value in options.items():
        if isinstance(value, (int, float)) and value < 0:
            raise ValueError(f"--set {key} must be >= 0, not {value}")
    return net, options, engine_settings


def _engine_settings(engine: str, shapes, user: dict, pe) -> dict:
    from ..models import network as nw
    from .registry import engine_class
    known = {param.name for param in engine_class(engine).PARAMS}
    settings = dict(nw.HOOKS[engine].defaults(shapes))
    if "max_rows" in known:
        settings["max_rows"] = max(rows for rows, _ in shapes)
    if "max_cols" in known:
        settings["max_cols"] = max(cols for _, cols in shapes)
    settings.update(user)
    if pe is not None:
        settings["pe"] = pe
    return settings


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _check_export(path: Path):
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".secateur-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ValueError(f"cannot write the export directory {path}: "
                         f"{error.strerror or error}") from None


def _save(path: Path, payload):
    import torch
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def _load(path: Path):
    import torch
    if not path.exists():
        return None
    try:
        return torch.load(path, weights_only=False)
    except Exception:  # a corrupt cache entry is retrained, not fatal
        return None


def _teacher(arch: str, seed: int, epochs: int, data, cache: Path, progress: bool):
    from ..models import network as nw
    path = cache / f"teacher-{arch}-s{seed}-e{epochs}-v{CACHE_VERSION}.pt"
    teacher = nw.build_float(arch, seed)
    state = _load(path)
    if state is not None:
        teacher.load_state_dict(state)
        teacher.eval()
        return teacher, path, False
    bar = _progress(epochs, f"train float {arch}", progress)
    nw.train_float(teacher, data, epochs=epochs, seed=seed, progress=bar.update)
    bar.close()
    _save(path, teacher.state_dict())
    return teacher, path, True


def _compress(engine, arch, teacher, data, params, options, kd_mode, seed, cache, progress):
    """The deployed QNet plus the KD comparison, from the cache or trained now."""
    from ..models import network as nw
    hook = nw.HOOKS[engine]
    key = _digest([engine, arch, seed, params, options, kd_mode, CACHE_VERSION])
    path = cache / f"{engine}-{arch}-s{seed}-{key}.pt"
    cached = _load(path)
    if cached is not None:
        return cached, path, False
    x_train, y_train = data[0], data[1]
    targets = nw.kd_targets(teacher, x_train, y_train)
    modes = {"both": (True, False), "on": (True,), "off": (False,)}[kd_mode]
    x_train_int = nw.quantize_inputs(x_train)
    runs = {}
    for kd in modes:
        bar = _progress(hook.epochs(options), f"compress {engine} kd={'on' if kd else 'off'}",
                        progress)
        result = hook.compress(teacher, (x_train, targets), params, dict(options), kd=kd,
                               seed=seed, progress=bar.update)
        bar.close()
        train_logits, _ = nw.golden_forward(result.qnet, x_train_int)
        runs[kd] = (result, nw.accuracy(train_logits, y_train))
    payload = {"variants": {("on" if kd else "off"): run[0].qnet for kd, run in runs.items()},
               "infos": {("on" if kd else "off"): run[0].info for kd, run in runs.items()},
               "train_accuracy": {("on" if kd else "off"): run[1] for kd, run in runs.items()}}
    _save(path, payload)
    return payload, path, True


def run_net(engine_name: str, *, pe: int | None = None, settings: dict | None = None,
            export: str | None = None, seed: int = 0, cache: str = "build/net",
            simulator: str = "verilator", progress: bool = True, log=print) -> dict:
    """The whole flow; returns the report dict.

    Raises
    ------
    ValueError, TypeError
        User errors: unknown engine or network, illegal setting, unwritable export directory.
    NetMismatch
        If the RTL differs from the golden model anywhere (the report is attached as
        ``error.report`` and was written first).
    """
    from ..models import network as nw
    from .registry import engine_class, make_engine

    engine_class(engine_name)  # unknown engine -> ValueError
    if engine_name not in nw.HOOKS:
        raise ValueError(f"secateur net has no compression hook for the {engine_name} engine; "
                         f"it supports {', '.join(nw.HOOKS)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"--seed must be an integer >= 0, not {seed!r}")
    net, options, user = _split_settings(engine_name, dict(settings or {}))
    hook = nw.HOOKS[engine_name]
    arch = net["arch"]
    shapes = nw.layer_shapes(arch, hook.pad_rows(options))
    engine = make_engine(engine_name, **_engine_settings(engine_name, shapes, user, pe))
    params = engine.params
    export_dir = Path(export) if export else None
    if export_dir is not None:
        _check_export(export_dir)

    import torch
    torch.set_num_threads(1)  # tiny models: threads only contend with the simulator
    start = time.perf_counter()
    cache_dir = Path(cache)
    x_train, y_train, x_test, y_test = nw.load_digits_split()
    teacher, _, trained_teacher = _teacher(arch, seed, net["teacher_epochs"], (x_train, y_train),
                                           cache_dir, progress)
    with torch.no_grad():
        float_accuracy = nw.accuracy(teacher(x_test), y_test)
    payload, model_path, trained = _compress(engine_name, arch, teacher, (x_train, y_train),
                                             params, options, net["kd"], seed, cache_dir,
                                             progress)
    train_seconds = time.perf_counter() - start
    # KD regularizes, so its training accuracy tends to sit a hair below plain training even
    # when it generalizes better: within KD_TOLERANCE, the distilled student is deployed.
    # The test split selects nothing.
    train_accuracy = payload["train_accuracy"]
    used = max(train_accuracy, key=lambda mode: train_accuracy[mode]
               + (KD_TOLERANCE if mode == "on" else 0.0))
    qnet = payload["variants"][used]
    info = payload.get("infos", {}).get(used, payload.get("info", {}))

    images = x_test.shape[0] if net["images"] == 0 else min(net["images"], x_test.shape[0])
    x_int = nw.quantize_inputs(x_test)[:images]
    labels = y_test.numpy()[:images]
    golden_logits, golden_trace = nw.golden_forward(qnet, x_int)
    kd_accuracy = {mode: nw.accuracy(nw.golden_forward(variant, x_int)[0], labels)
                   for mode, variant in payload["variants"].items()}

    # RTL, one layer at a time --------------------------------------------------------------
    from ..sim.runner import BatchSimulator
    simulator_ = BatchSimulator(engine, simulator, progress=_lines(progress))
    build_start = time.perf_counter()
    simulator_.build()
    build_seconds = time.perf_counter() - build_start
    per_layer = []
    bar = _progress(len(qnet.layers), f"rtl {engine_name}", progress)
    sim_start = time.perf_counter()

    def rtl_layer(index, qlayer, vectors):
        layer = tile_layer(engine, qlayer.weights)
        result = layer.run(simulator_, vectors)
        golden = nw.golden_layer(qnet, qlayer, vectors)
        per_layer.append(layer_record(index, layer, engine, result, vectors, images,
                                      int(np.count_nonzero(result.y != golden))))
        bar.update(1)
        return result.y

    rtl_logits, rtl_trace = nw.network_forward(qnet, x_int, rtl_layer)
    bar.close()
    sim_seconds = time.perf_counter() - sim_start
    mismatches = int(np.count_nonzero(rtl_logits != golden_logits))
    layer_mismatches = sum(layer["mismatches"] for layer in per_layer)

    bits = nw.model_bits(qnet)
    cycles = sum(layer["cycles"] for layer in per_layer)
    report = {
        "engine": engine_name, "arch": arch, "seed": seed, "images": images,
        "params": params, "options": options,
        "float_accuracy": float_accuracy,
        "golden_accuracy": nw.accuracy(golden_logits, labels),
        "rtl_accuracy": nw.accuracy(rtl_logits, labels),
        "mismatches": mismatches, "layer_mismatches": layer_mismatches,
        "kd": {"used": used, "golden_accuracy": kd_accuracy, "train_accuracy": train_accuracy},
        "compression": {"ratio": bits["ratio"], "bits": bits["bits"],
                        "float32_bits": bits["float32_bits"], "layers": bits["layers"]},
        "compression_info": _jsonable(info),
        "cycles_per_inference": cycles / images,
        "cycles": cycles,
        **energy_totals(per_layer, images),
        "layers": per_layer,
        "cached": {"teacher": not trained_teacher, "model": not trained,
                   "model_path": str(model_path)},
        "wall_seconds": {"train": round(train_seconds, 2), "build": round(build_seconds, 2),
                         "rtl": round(sim_seconds, 2),
                         "total": round(time.perf_counter() - start, 2)},
    }
    if export_dir is not None:
        _export(export_dir, qnet, engine, x_int, labels, rtl_logits,
                [trace[0] for trace in rtl_trace], report)
    if mismatches or layer_mismatches:
        error = NetMismatch(f"{engine_name}: the RTL differs from the golden model in "
                            f"{mismatches} logits ({layer_mismatches} outputs over all layers)")
        error.report = report
        raise error
    return report


def _jsonable(value):
    return json.loads(json.dumps(value, default=lambda item: np.asarray(item).tolist()))


def _export(directory: Path, qnet, engine, x_int, labels, rtl_logits, layer_inputs, report):
    try:
        for index, qlayer in enumerate(qnet.layers):
            arrays = {key: np.asarray(value) for key, value in qlayer.weights.items()}
            arrays.update({key: np.asarray(value) for key, value in qlayer.extra.items()})
            save_npz(directory / f"layer{index}.npz", arrays)
            save_npy(directory / f"layer{index}_inputs.npy", layer_inputs[index])
        save_npy(directory / "inputs.npy", x_int.astype(np.int8))
        save_npy(directory / "labels.npy", np.asarray(labels, dtype=np.int64))
        save_npy(directory / "rtl_logits.npy", np.asarray(rtl_logits, dtype=np.int64))
        settings = " ".join(f"--set {key}={value}" for key, value in engine.params.items()
                            if key != "pe")
        write_text(directory / "engine.json", json.dumps({
            "engine": engine.name, "params": engine.params,
            "replay": f"secateur run --engine {engine.name} --pe {engine.params['pe']} "
                      f"{settings} --weights layer0.npz --inputs layer0_inputs.npy "
                      f"--out y0.npy"}, indent=2) + "\n")
    except OSError as error:
        raise ValueError(f"cannot write the export directory {directory}: "
                         f"{error.strerror or error}") from None
