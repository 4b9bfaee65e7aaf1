"""Benchmark of ``secateur compile`` (issue 13): a float MLP and a float CNN that a user trains
in plain torch on digits and exports to ONNX (``torch.onnx.export``), compiled at ``--compress
none`` and at ``--compress qat`` (fine-tuned on the training split, the engine's default
training options and seed) onto every engine, every one of the 360 test images through the
RTL. Prints, per engine and network, the float accuracy; for ``none`` golden and RTL accuracy,
agreement (integer argmax == float argmax), mismatches and the compile + RTL wall time (a
second run, after the harness build); for ``qat`` the accuracy after compression before
fine-tuning (the ``none`` network), of the fine-tuned float network, golden, RTL, agreement,
mismatches, the fine-tuning time and the whole run's time; then compression and cycles per
inference of the ``qat`` network. Figures, not assertions: tests/test_compile.py asserts
behaviour.

Run with ``make bench`` or ``.venv/bin/python benchmarks/bench_compile.py [engine[:net] ...]``
(default: every engine on both networks).
"""

import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from secateur.gen.compile.flow import CompileMismatch, compile_model, load_model
from secateur.gen.registry import engine_names
from secateur.models import network as nw

PE = {"cim": None}
EPOCHS = 30


def _mlp():
    return nn.Sequential(nn.Linear(64, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Dropout(0.1),
                         nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))


class _CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.relu(x + self.bn2(self.conv2(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def _trained(net: str, directory: Path, data):
    x_train, y_train = data[0], data[1]
    torch.manual_seed(0)
    model = _mlp() if net == "mlp" else _CNN()
    x = x_train if net == "mlp" else x_train.reshape(-1, 1, 8, 8)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, EPOCHS)
    for _ in range(EPOCHS):
        order = torch.randperm(x.shape[0])
        for start in range(0, x.shape[0], 64):
            index = order[start:start + 64]
            optimizer.zero_grad()
            F.cross_entropy(model(x[index]), y_train[index]).backward()
            optimizer.step()
        schedule.step()
    model.eval()
    path = directory / f"{net}.onnx"
    torch.onnx.export(model, (x[:2],), str(path), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "batch"}})
    return path


def _run(path, net, engine, data, compress="none"):
    x_train, y_train, x_test, y_test = data
    if net == "cnn":
        x_train, x_test = x_train.reshape(-1, 1, 8, 8), x_test.reshape(-1, 1, 8, 8)
    train = {"x": x_train.numpy(), "y": y_train.numpy()} if compress == "qat" else None
    start = time.perf_counter()
    try:
        report = compile_model(load_model(path), x_train.numpy(), engine, pe=PE.get(engine, 8),
                               test=x_test.numpy(), labels=y_test.numpy(), compress=compress,
                               finetune_data=train, progress=False)
    except CompileMismatch as error:
        report = error.report
    return report, time.perf_counter() - start


def main(argv):
    torch.set_num_threads(1)
    runs = [item.split(":") for item in argv] or \
        [[engine, net] for net in ("mlp", "cnn") for engine in engine_names()]
    data = nw.load_digits_split()
    print(f"{'':15} {'':6} | {'--compress none':^36} | {'--compress qat':^57} |")
    print(f"{'engine':9} {'net':4} {'float':>6} | {'golden':>6} {'rtl':>6} {'agree':>6} "
          f"{'mism':>4} {'first s':>7} {'warm s':>6} | {'compr.':>6} {'tuned':>6} "
          f"{'golden':>6} {'rtl':>6} {'agree':>6} {'mism':>4} {'tune s':>6} {'total s':>7} | "
          f"{'ratio':>6} {'cyc/inf':>8}")
    with tempfile.TemporaryDirectory() as directory:
        paths = {}
        for engine, *net in runs:
            net = net[0] if net else "mlp"
            if net not in paths:
                paths[net] = _trained(net, Path(directory), data)
            _, first = _run(paths[net], net, engine, data)  # builds the harness if needed
            none, warm = _run(paths[net], net, engine, data)
            qat, total = _run(paths[net], net, engine, data, "qat")
            stages = qat["stages"]
            print(f"{engine:9} {net:4} {none['float_accuracy']:6.3f} | "
                  f"{none['golden_accuracy']:6.3f} {none['rtl_accuracy']:6.3f} "
                  f"{none['agreement']:6.3f} {none['mismatches']:4d} {first:7.1f} {warm:6.1f} | "
                  f"{stages['compressed']:6.3f} {stages['finetuned']:6.3f} "
                  f"{qat['golden_accuracy']:6.3f} {qat['rtl_accuracy']:6.3f} "
                  f"{qat['agreement']:6.3f} {qat['mismatches']:4d} "
                  f"{qat['finetune']['seconds']:6.1f} {total:7.1f} | "
                  f"{qat['compression']['ratio']:6.1f} {qat['cycles_per_inference']:8.1f}",
                  flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
