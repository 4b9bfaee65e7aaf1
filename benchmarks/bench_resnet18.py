"""Benchmark of issue 14 section 4: a whole ResNet-18 through ``secateur compile`` and the RTL.

What it does
    1. Builds ResNet-18 in plain torch (He et al. 2016, the ImageNet variant): a 7x7 stride-2
       stem conv 3->64 (no bias) + BatchNorm + ReLU, a 3x3 stride-2 max pool (padding 1), four
       stages of two BasicBlocks (3x3 conv, BN, ReLU, 3x3 conv, BN, residual add, ReLU) at
       64/128/256/512 channels, the first block of stages 2-4 with stride 2 and a 1x1 stride-2
       conv + BN shortcut, a global average pool and an FC 512->1000. torchvision is not used:
       its wheel fails to import against the locked CPU torch (``operator torchvision::nms
       does not exist``).
    2. Weights are random (``torch.manual_seed(SEED)``, torch's default init); every BatchNorm
       gets random affine parameters and non-trivial running statistics (mean ~ N(0, 0.1),
       var ~ U(0.5, 1.5)) and is in eval mode, so the compiler's BN folding is exercised.
    3. Exports it to ONNX with ``torch.onnx.export(..., dynamo=False)`` as tests/test_compile.py
       does, with a dynamic batch axis.
    4. Compiles it with :func:`secateur.gen.compile.flow.compile_model` on each engine (default:
       dense and ternary) at ``pe=32`` with ``settings={"max_rows": 512, "max_cols": 512}``
       (the engines' own defaults): without them ``_engine_settings`` sizes the instance to
       the largest layer (4608 im2col columns, 1000 rows), and with them every larger layer is
       cut into tiles by gen/tiling.py. The other parameters are what ``compile`` picks (the
       engine hook's ``fan_in=16``, its weight rule's defaults, e.g. ternary's ``delta``).
    5. Calibrates on ``CALIB`` random images (N(0, 1) per pixel, the scale of a normalized
       ImageNet image; seed ``SEED``), and runs ONE test image (another random image, seed
       ``SEED + 1``) through the golden model and the RTL (``test=`` one image, its label the
       float model's argmax: the weights are random, so accuracy means nothing).
    6. Prints compile time, RTL build and run wall time, cycles per inference, per layer the
       RTL's cycles beside the performance model's (:func:`secateur.gen.estimate.estimate_layer`
       on the very int8 vectors the golden model feeds that layer), load beats, energy and
       tiles, and ``uptime`` beside every absolute time (the machine is shared).

Options: ``--size S`` (input S x S; default 224), ``--calib N`` (default 4), ``--profile``
(cProfile the compile and print the top functions by cumulative time: where the time goes,
simulation vs load-beat generation vs golden model vs calibration), engines as positional
arguments. Run with ``.venv/bin/python benchmarks/bench_resnet18.py [--size 224] [dense]
[ternary]``. Figures only, no assertions of speed; the run exits 1 if the RTL mismatches.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from secateur.gen.compile.flow import CompileMismatch, compile_model, load_model
from secateur.gen.compile.ptq import IntNetwork
from secateur.gen.estimate import estimate_layer
from secateur.gen.registry import make_engine
from secateur.gen.safeio import read_npz
from secateur.gen.tiling import tile_layer
from secateur.models import hostops
from secateur.models.quantize import quantize_activations

SEED = 0
PE = 32
SETTINGS = {"max_rows": 512, "max_cols": 512}
ENGINES = ("dense", "ternary")


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, classes: int = 1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        blocks, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        return self.fc(self.pool(self.blocks(self.stem(x))).flatten(1))


def resnet18() -> ResNet18:
    torch.manual_seed(SEED)
    model = ResNet18()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def stamp(what: str) -> None:
    print(f"[{time.strftime('%H:%M:%S', time.gmtime())} UTC] {what} | {uptime()}", flush=True)


def export(model: nn.Module, size: int, path: Path) -> None:
    example = torch.zeros(2, 3, size, size)
    torch.onnx.export(model, (example,), str(path), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "batch"}})


def model_estimates(directory: Path, engine, test: np.ndarray) -> list[dict]:
    """Per engine layer, the performance model's figures on the int8 vectors the golden model
    feeds it (read back from the compiled directory)."""
    document = json.loads((directory / "network.json").read_text())
    steps = [step for step in document["steps"] if step["op"] == "engine"]
    weights = [read_npz(directory / step["file"], "weights file") for step in steps]
    net = IntNetwork(document["input"]["tensor"], document["output"]["tensor"],
                     document["steps"], weights,
                     {document["input"]["tensor"]: document["input"]["scale"]})
    layers = [tile_layer(engine, arrays) for arrays in weights]
    estimates = {}

    def run(index, vectors):
        estimates[index] = estimate_layer(engine, weights[index], vectors)
        return layers[index].reference(vectors)

    hostops.run_steps(net.steps, net.input, quantize_activations(test, net.input_scale), run)
    return [estimates[index] for index in sorted(estimates)]


def bench(engine_name: str, onnx_path: Path, calib, test, label, profile: bool) -> bool:
    stamp(f"{engine_name}: compile + RTL start")
    with tempfile.TemporaryDirectory() as out:
        profiler = cProfile.Profile() if profile else None
        start = time.perf_counter()
        if profiler:
            profiler.enable()
        try:
            report = compile_model(load_model(onnx_path), calib, engine_name, pe=PE,
                                   settings=SETTINGS, out=out, test=test, labels=label,
                                   progress=False)
        except CompileMismatch as error:
            report = error.report
        finally:
            if profiler:
                profiler.disable()
        total = time.perf_counter() - start
        stamp(f"{engine_name}: compile + RTL done in {total:.1f} s")
        engine = make_engine(engine_name, **report["params"])
        model = model_estimates(Path(out), engine, test)
    wall = report["wall_seconds"]
    rtl = report["rtl_wall_seconds"]
    print(f"\n== {engine_name} pe={PE} params={report['params']}")
    print(f"compile (import, calibration, quantization, tiling) {wall['compile']:.1f} s; RTL "
          f"build {rtl['build']:.1f} s, RTL run of one image {rtl['run']:.1f} s; total "
          f"{wall['total']:.1f} s")
    print(f"mismatches {report['mismatches']}  first {report['first_mismatch']}")
    print(f"{'layer':>5} {'rows':>5} {'cols':>5} {'vectors':>7} {'tiles':>5} {'load_beats':>10} "
          f"{'rtl cycles':>11} {'model cycles':>12} {'eq':>3} {'sim s':>7} {'energy uJ':>9}")
    equal = True
    for record, estimate in zip(report["layers"], model):
        same = record["cycles"] == estimate["cycles"]
        equal &= same
        energy = record["energy_pj"]
        print(f"{record['layer']:5d} {record['rows']:5d} {record['cols']:5d} "
              f"{record['vectors']:7d} {record['tiles']:5d} {record['load_beats']:10d} "
              f"{record['cycles']:11d} {estimate['cycles']:12d} {'yes' if same else 'NO':>3} "
              f"{record['sim_seconds']:7.1f} "
              f"{'-' if energy is None else f'{energy / 1e6:9.2f}'}")
    beats = sum(record["load_beats"] for record in report["layers"])
    model_cycles = sum(estimate["cycles"] for estimate in model)
    energy = report["energy_pj_per_inference"]
    print(f"cycles per inference: RTL {report['cycles_per_inference']:.0f}, model "
          f"{model_cycles} ({'equal' if equal and model_cycles == report['cycles'] else 'DIFFER'})"
          f"; load beats {beats}; energy per inference "
          f"{'n/a' if energy is None else f'{energy / 1e6:.2f} uJ'}"
          f"{' (missing: ' + ', '.join(report['energy_missing']) + ')' if report['energy_missing'] else ''}")
    print(f"tiles per layer: {[record['tiles'] for record in report['layers']]}")
    print(f"lowerings: {len(report['lowerings'])}; float argmax {int(label[0])}, golden "
          f"accuracy {report['golden_accuracy']}, rtl accuracy {report['rtl_accuracy']}")
    if profiler:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(40)
        print(text.getvalue())
    return report["mismatches"] == 0


def main(argv) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("engines", nargs="*", default=list(ENGINES))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--calib", type=int, default=4)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the machine's second core belongs to the simulator
    stamp(f"ResNet-18 at {args.size}x{args.size}, engines {', '.join(args.engines)}")
    model = resnet18()
    rng = np.random.default_rng(SEED)
    calib = rng.standard_normal((args.calib, 3, args.size, args.size)).astype(np.float32)
    test = np.random.default_rng(SEED + 1).standard_normal(
        (1, 3, args.size, args.size)).astype(np.float32)
    with torch.no_grad():
        label = model(torch.from_numpy(test)).argmax(1).numpy().astype(np.int64)
    ok = True
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "resnet18.onnx"
        export(model, args.size, path)
        stamp(f"exported {path.stat().st_size / 1e6:.1f} MB of ONNX")
        for engine in args.engines:
            ok &= bench(engine, path, calib, test, label, args.profile)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
