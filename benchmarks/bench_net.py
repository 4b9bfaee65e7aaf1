"""Benchmark of ``secateur net`` (issue 6): for every engine with a compression hook, the
digits network trained (or loaded from build/net/), compressed, and every test image run
through the RTL layer by layer. Prints the table a paper would carry: float, golden and RTL
accuracy, mismatches, compression against float32, cycles per inference and wall times.
Figures, not assertions: tests/test_net.py asserts behaviour.

Run with ``make bench`` or ``.venv/bin/python benchmarks/bench_net.py [engine[:arch] ...]``
(default: every engine on the MLP, and ternary/lfsr on the CNN too).
"""

import sys
import time

from secateur.gen.net import NetMismatch, run_net
from secateur.gen.registry import engine_names
from secateur.models.network import HOOKS

PE = {"permdiag": 8}


def main(argv):
    runs = [item.split(":") for item in argv] or \
        [[name, "mlp"] for name in engine_names() if name in HOOKS] + \
        [["ternary", "cnn"], ["lfsr", "cnn"]]
    header = (f"{'engine':9} {'net':4} {'float':>6} {'golden':>6} {'rtl':>6} {'kd on/off':>11} "
              f"{'mism':>4} {'compr':>6} {'cyc/inf':>8} {'train s':>7} {'build s':>7} "
              f"{'rtl s':>6}")
    print(header)
    for engine, *arch in runs:
        arch = arch[0] if arch else "mlp"
        start = time.perf_counter()
        try:
            report = run_net(engine, pe=PE.get(engine), settings={"arch": arch}, progress=False)
        except NetMismatch as error:
            report = error.report
        kd = report["kd"]["golden_accuracy"]
        kd_text = "/".join(f"{kd[mode]:.3f}" if mode in kd else "-" for mode in ("on", "off"))
        wall = report["wall_seconds"]
        print(f"{engine:9} {arch:4} {report['float_accuracy']:6.3f} "
              f"{report['golden_accuracy']:6.3f} {report['rtl_accuracy']:6.3f} {kd_text:>11} "
              f"{report['mismatches']:4d} {report['compression']['ratio']:5.1f}x "
              f"{report['cycles_per_inference']:8.1f} {wall['train']:7.1f} {wall['build']:7.1f} "
              f"{wall['rtl']:6.2f}   ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
