"""The ``secateur`` command line.

Contract: every user error (a bad argument, file, dtype, shape, value, weight structure or
parameter, or an unknown engine) prints one line ``secateur: error: ...`` on stderr and exits
with status 2, never a traceback. A simulated result that differs from the golden model exits
with status 1. Set ``SECATEUR_DEBUG=1`` to get tracebacks instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from .processes import process_pool, stop_tools
from .registry import engine_class, engine_names, make_engine
from .safeio import UsageError, check_outputs, read_npy, read_npz, save_npy, write_text

__all__ = ["main"]

EXIT_MISMATCH, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130

#: The most input vectors one sweep point of ``secateur report`` simulates.
MAX_REPORT_BATCH = 4096

#: The clocks an SDC template may name, in MHz.
CLOCK_MHZ_RANGE = (1.0, 5000.0)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        raise UsageError(message)


def _settings(args) -> dict:
    settings = {}
    for item in args.set or []:
        key, separator, value = item.partition("=")
        if not separator or not key:
            raise UsageError(f"--set takes KEY=VALUE, not {item!r}")
        settings[key] = value
    if args.pe is not None:
        if "pe" in settings:
            raise UsageError(f"--pe {args.pe} and --set pe={settings['pe']} both set pe; "
                             f"give one")
        settings["pe"] = args.pe
    return settings


def _engine(args):
    return make_engine(args.engine, **_settings(args))


def _load_weights(path: str, engine) -> dict:
    """The weights npz, every member's header checked against what the tiler takes on the
    engine (:func:`~secateur.gen.tiling.max_shape`) before its data."""
    from .tiling import max_shape
    bound = max_shape(engine)

    def check_shape(key, shape):
        if len(shape) == 2 and (shape[0] > bound[0] or shape[1] > bound[1]):
            raise UsageError(f"weights file {path}: {key} has shape {shape}; the {engine.name} "
                             f"engine takes layers of at most {bound[0]} x {bound[1]}, in tiles")
    return read_npz(path, "weights file", check_shape=check_shape)


def _load_inputs(path: str) -> np.ndarray:
    return read_npy(path, "inputs file")


def _supersede(*paths):
    """Remove this invocation's previous outputs before the work, so that a failed run never
    leaves an old result that looks current."""
    for path in paths:
        if path is not None and path.is_file():
            path.unlink()


def _generate(name: str, settings: dict, out: str, reuse: bool) -> tuple[str, float, bool]:
    from .rtl import write_rtl
    start = time.perf_counter()
    bundle = write_rtl(make_engine(name, **settings), Path(out), reuse=reuse)
    return str(bundle.verilog), time.perf_counter() - start, bundle.reused


def _per_engine(args) -> dict:
    """``--engine`` (a name or ``all``) -> validated settings per engine name."""
    names = engine_names() if args.engine == "all" else [args.engine]
    settings = _settings(args)
    per_engine = {name: settings for name in names}
    if args.engine == "all":
        # A setting applies to the engines that have that parameter; it must fit at least one.
        known = {name: {param.name for param in engine_class(name).PARAMS} for name in names}
        for key in settings:
            if not any(key in params for params in known.values()):
                raise UsageError(f"no engine has a parameter {key}")
        per_engine = {name: {key: value for key, value in settings.items() if key in known[name]}
                      for name in names}
    from .rtl import check_size
    for name in names:  # every parameter error before any elaboration
        check_size(make_engine(name, **per_engine[name]))
    return per_engine


def cmd_rtl(args) -> int:
    check_outputs({"--out": args.out}, directories=("--out",))
    per_engine = _per_engine(args)
    names = list(per_engine)
    try:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        reuse = not args.force
        if len(names) == 1:
            results = [_generate(names[0], per_engine[names[0]], args.out, reuse)]
        else:
            # Elaboration is single-threaded Python: one process per engine uses every core.
            with process_pool(min(len(names), os.cpu_count() or 1)) as pool:
                results = list(pool.map(_generate, names, [per_engine[name] for name in names],
                                        [args.out] * len(names), [reuse] * len(names)))
    except OSError as error:
        raise UsageError(f"cannot write RTL to {args.out}: {error.strerror or error}") from None
    for name, (verilog, seconds, reused) in zip(names, results):
        status = "up to date" if reused else f"{seconds:.1f} s"
        print(f"{name}: {verilog} ({status})")
    return 0


def _export(name: str, settings: dict, out: str, clock_mhz: float) -> tuple[str, float]:
    from .export import export_bundle
    start = time.perf_counter()
    bundle = export_bundle(make_engine(name, **settings), Path(out), clock_mhz=clock_mhz)
    return str(bundle.directory), time.perf_counter() - start


def cmd_export(args) -> int:
    from .export import DEFAULT_CLOCK_MHZ
    check_outputs({"--out": args.out}, directories=("--out",))
    per_engine = _per_engine(args)
    names = list(per_engine)
    clock_mhz = DEFAULT_CLOCK_MHZ if args.clock_mhz is None else args.clock_mhz
    low, high = CLOCK_MHZ_RANGE
    if not low <= clock_mhz <= high:
        raise UsageError(f"--clock-mhz must be in [{low:g}, {high:g}] MHz, not {clock_mhz:g}")
    try:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        if len(names) == 1:
            results = [_export(names[0], per_engine[names[0]], args.out, clock_mhz)]
        else:
            with process_pool(min(len(names), os.cpu_count() or 1)) as pool:
                results = list(pool.map(_export, names, [per_engine[name] for name in names],
                                        [args.out] * len(names), [clock_mhz] * len(names)))
    except OSError as error:
        raise UsageError(f"cannot write the export bundle to {args.out}: "
                         f"{error.strerror or error}") from None
    for name, (directory, seconds) in zip(names, results):
        print(f"{name}: {directory} ({seconds:.1f} s)")
    return 0


def cmd_run(args) -> int:
    from ..sim.runner import BatchSimulator
    from .netrun import progress_lines
    engine = _engine(args)
    outputs = check_outputs({"--out": args.out, "--report": args.report},
                            {"--weights": args.weights, "--inputs": args.inputs})
    from .tiling import tile_layer
    weights = _load_weights(args.weights, engine)
    layer = tile_layer(engine, weights)
    engine.check_weight_keys(weights, weights)
    x = _load_inputs(args.inputs)
    layer.check_inputs(x)
    _supersede(outputs["--out"], outputs.get("--report"))
    result = layer.run(BatchSimulator(engine, args.sim, progress=progress_lines(True)), x)
    # Requantized results are int8, the next layer's input; raw accumulators are int64.
    save_npy(outputs["--out"], result.y.astype(np.int8 if layer.requant else np.int64))
    mismatches = int(np.count_nonzero(result.y != layer.reference(x)))
    report = result.report(args.sim)
    report["mismatches"] = mismatches
    if args.report:
        write_text(outputs["--report"], json.dumps(report, indent=2) + "\n")
    tiles = "" if len(layer.tiles) == 1 else f" in {len(layer.tiles)} tiles"
    print(f"{engine.name}: {x.shape[0]} vectors{tiles}, {report['cycles']} cycles, "
          f"utilization {report['utilization']:.3f}, {mismatches} mismatches against the golden "
          f"model")
    if mismatches:
        print(f"secateur: {mismatches} outputs differ from the golden model", file=sys.stderr)
        return EXIT_MISMATCH
    return 0


def cmd_estimate(args) -> int:
    from . import estimate
    engine = _engine(args)
    shape = None if args.shape is None else _layer_shape(args.shape, "--shape")
    estimate.check_options(shape=shape, density=args.density, inputs=args.inputs,
                           input_density=args.input_density, batch=args.batch)
    outputs = check_outputs({"--report": args.report},
                            {"--weights": args.weights, "--inputs": args.inputs})
    weights = None if args.weights is None else _load_weights(args.weights, engine)
    x = None if args.inputs is None else _load_inputs(args.inputs)
    _supersede(outputs.get("--report"))
    report = estimate.run(engine, weights=weights, weights_file=args.weights, shape=shape,
                          density=args.density, inputs=x, inputs_file=args.inputs,
                          input_density=args.input_density, batch=args.batch, seed=args.seed)
    if args.report:
        write_text(outputs["--report"], json.dumps(report, indent=2) + "\n")
    print(estimate.summary(report))
    return 0


def cmd_synth(args) -> int:
    check_outputs({"--out": args.out}, directories=("--out",))
    from .netrun import progress_lines
    from .synth import summary_table, synthesize
    configs = _per_engine(args)
    for name, settings in configs.items():
        engine = make_engine(name, **settings)
        if "slots" not in engine.params and args.timing_pe > engine.pe:
            raise UsageError(f"--timing-pe {args.timing_pe} exceeds the {name} engine's pe "
                             f"{engine.pe}: the timing configuration is a slice of the engine")
    start = time.perf_counter()
    try:
        reports = synthesize(configs, Path(args.out), timing_pe=args.timing_pe,
                             timeout=args.timeout, budget=args.budget, seeds=args.seeds,
                             progress=progress_lines(True))
    except OSError as error:
        raise UsageError(f"cannot write the synthesis report to {args.out}: "
                         f"{error.strerror or error}") from None
    print(summary_table(reports))
    print(f"synthesis and timing of {len(configs)} engine(s): "
          f"{time.perf_counter() - start:.0f} s")
    return 0


def cmd_mask(args) -> int:
    from ..models.lfsr import mask_indices
    limit = next(param.maximum for param in engine_class("lfsr").PARAMS
                 if param.name == "max_cols")
    if not 1 <= args.n <= limit:
        raise UsageError(f"--n must be in [1, {limit}] (the lfsr engine's max_cols), "
                         f"not {args.n}")
    if not 1 <= args.k <= args.n:
        raise UsageError(f"--k must be in [1, {args.n}] (--n), not {args.k}")
    for row in mask_indices(args.n, args.k, args.seed):
        print(json.dumps(row.tolist()))
    return 0


def cmd_net(args) -> int:
    from .net import NetMismatch, run_net
    outputs = check_outputs({"--report": args.report, "--export": args.export,
                             "--cache": args.cache}, directories=("--export", "--cache"))
    _supersede(outputs.get("--report"))
    try:
        report = run_net(args.engine, settings=_settings(args),
                         export=args.export, seed=args.seed, cache=args.cache,
                         progress=not args.quiet)
        status = 0
    except NetMismatch as error:
        report, status = error.report, EXIT_MISMATCH
        print(f"secateur: {error}", file=sys.stderr)
    if args.report:
        write_text(outputs["--report"], json.dumps(report, indent=2) + "\n")
    print(f"{report['engine']} {report['arch']}: float {report['float_accuracy']:.4f}, "
          f"golden {report['golden_accuracy']:.4f}, rtl {report['rtl_accuracy']:.4f} on "
          f"{report['images']} images, {report['mismatches']} mismatches, compression "
          f"{report['compression']['ratio']:.1f}x, {report['cycles_per_inference']:.1f} "
          f"cycles/inference, {report['wall_seconds']['total']:.1f} s")
    return status


def _compile_outputs(args) -> dict:
    """Every file ``secateur compile`` may write, checked against its inputs before any work,
    and this run's previous outputs removed."""
    inputs = {"MODEL": args.model, "--calib": args.calib, "--test": args.test,
              "--labels": args.labels, "--finetune": args.finetune}
    outputs = check_outputs({"--out": args.out, "--report": args.report}, inputs,
                            directories=("--out",))
    directory = outputs["--out"]
    previous = sorted(directory.glob("layer*.npz")) if directory.is_dir() else []
    from .compile.flow import output_files
    written = {f"--out file {path.name}": path
               for path in output_files(directory, 0, True) + previous}
    check_outputs(dict(written, **{"--report": args.report}), inputs)
    _supersede(*written.values(), outputs.get("--report"))
    return outputs


def _model_inputs(path: str, what: str, graph):
    from .compile.flow import check_array
    from .safeio import read_header
    shape, dtype = read_header(path, what)
    check_array(shape, dtype, graph, f"{what} {path}")
    return read_npy(path, what)


def cmd_compile(args) -> int:
    from .compile.flow import (CompileMismatch, check_compress, check_finetune, compile_model,
                               load_model)
    from .safeio import read_npz
    check_compress(args.compress, args.finetune is not None)
    if (args.test is None) != (args.labels is None):
        raise UsageError("--test and --labels go together")
    outputs = _compile_outputs(args)
    model = load_model(args.model)
    calib = _model_inputs(args.calib, "calibration file", model.graph)
    test = labels = train = None
    if args.test is not None:
        test = _model_inputs(args.test, "test file", model.graph)
        labels = read_npy(args.labels, "labels file")
    if args.finetune is not None:
        train = read_npz(args.finetune, "finetune file")
        check_finetune(train, model.graph)
    try:
        report, status = compile_model(
            model, calib, args.engine, settings=_settings(args), out=outputs["--out"],
            test=test, labels=labels, compress=args.compress, finetune_data=train,
            simulator=args.sim, progress=not args.quiet), 0
    except CompileMismatch as error:
        report, status = error.report, EXIT_MISMATCH
        print(f"secateur: {error}", file=sys.stderr)
    if args.report:
        write_text(outputs["--report"], json.dumps(report, indent=2) + "\n")
    summary = f"{args.engine}: {report['layers_compiled']} engine layers in {args.out}"
    if test is not None:
        summary += (f"; float {report['float_accuracy']:.4f}, golden "
                     f"{report['golden_accuracy']:.4f}, rtl {report['rtl_accuracy']:.4f}, "
                     f"agreement {report['agreement']:.4f} on {report['images']} inputs, "
                     f"{report['mismatches']} mismatches, "
                     f"{report['cycles_per_inference']:.1f} cycles/inference")
    if "quantization" in report:  # a QONNX model: which scales its Quant nodes gave
        given = report["quantization"]
        summary += (f"; {len(given['from_quant'])} scales from QONNX Quant nodes, "
                    f"{len(given['calibrated'])} calibrated")
    if "finetune" in report:
        stages = report.get("stages", {})
        summary += (f"; fine-tuned {report['finetune']['epochs']} epochs in "
                    f"{report['finetune']['seconds']:.1f} s" +
                    (f" (before {stages['compressed']:.4f}, after {stages['finetuned']:.4f})"
                     if stages else ""))
    print(summary + f", {report['wall_seconds']['total']:.1f} s")
    return status


def cmd_run_net(args) -> int:
    from .compile.flow import CompileMismatch, run_network
    directory = Path(args.directory)
    outputs = check_outputs({"--out": args.out, "--report": args.report},
                            {"--inputs": args.inputs, "DIR/network.json":
                             directory / "network.json"})
    _supersede(outputs["--out"], outputs.get("--report"))
    x = read_npy(args.inputs, "inputs file")
    try:
        logits, report = run_network(directory, x, simulator=args.sim,
                                     progress=not args.quiet)
        status = 0
    except CompileMismatch as error:
        report, status, logits = error.report, EXIT_MISMATCH, None
        print(f"secateur: {error}", file=sys.stderr)
    if logits is not None:
        save_npy(outputs["--out"], logits.astype(np.int64))
    if args.report:
        write_text(outputs["--report"], json.dumps(report, indent=2) + "\n")
    print(f"{report['engine']}: {report['images']} inputs, {report['mismatches']} mismatches, "
          f"{report['cycles_per_inference']:.1f} cycles/inference")
    return status


def _layer_shape(text: str, option: str = "--layer") -> tuple[int, int]:
    rows, separator, cols = text.lower().partition("x")
    try:
        if not separator:
            raise ValueError
        return int(rows), int(cols)
    except ValueError:
        raise UsageError(f"{option} takes ROWSxCOLS (e.g. 128x128), not {text!r}") from None


def cmd_report(args) -> int:
    from .report import build_report
    start = time.perf_counter()
    out = check_outputs({"--out": args.out}, directories=("--out",))["--out"]
    if not 1 <= args.batch <= MAX_REPORT_BATCH:
        raise UsageError(f"--batch must be in [1, {MAX_REPORT_BATCH}], not {args.batch}")
    data = build_report(args.pe, out, layer=_layer_shape(args.layer), batch=args.batch,
                        synth_dir=args.synth, net_dir=args.net, explore_dir=args.explore,
                        log=(lambda *items: None) if args.quiet else print)
    found = [name for name, present in (("synth", data["synth"]), ("net", data["net"]),
                                        ("explore", data["explore"])) if present]
    print(f"{out / 'index.html'}: {len(data['sweeps'])} engines at PE={args.pe} on a "
          f"{args.layer} layer; read {', '.join(found) or 'no other report'}; "
          f"{time.perf_counter() - start:.0f} s")
    return 0


def _number_list(text: str, name: str, kind):
    try:
        return [kind(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise UsageError(f"{name} takes a comma-separated list of numbers, not {text!r}") from None


def cmd_explore(args) -> int:
    from .explore import explore, results_table
    out = check_outputs({"--out": args.out}, directories=("--out",))["--out"]
    results = explore(out, seed=args.seed, precisions=_number_list(args.bits, "--bits", int),
                      sparsities=_number_list(args.sparsity, "--sparsity", float),
                      cycles=args.cycles, progress=not args.quiet)
    print(results_table(results))
    print(f"{out / 'explore.json'}, {', '.join(results.get('plots', []))}: "
          f"{len(results['points'])} designs, {results['wall_seconds']:.0f} s")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="secateur", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def engine_options(command, allow_all=False):
        choices = engine_names() + (["all"] if allow_all else [])
        command.add_argument("--engine", required=True, metavar="|".join(choices),
                             help="the engine to generate")
        command.add_argument("--pe", type=_integer("--pe"), help="processing elements")
        command.add_argument("--set", action="append", metavar="KEY=VALUE",
                             help="another generator parameter (repeatable; the last value of a key "
                                  "is used)")

    rtl = commands.add_parser("rtl", help="generate Verilog, a filelist and a manifest")
    engine_options(rtl, allow_all=True)
    rtl.add_argument("--out", required=True, help="output directory")
    rtl.add_argument("--force", action="store_true",
                     help="regenerate even if the files there match the parameters and sources")
    rtl.set_defaults(handler=cmd_rtl)

    export = commands.add_parser("export", help="an integration bundle: Verilog, filelist, "
                                                "FuseSoC core, C header, SDC, manifest")
    engine_options(export, allow_all=True)
    export.add_argument("--out", required=True, help="output directory (one folder per engine)")
    export.add_argument("--clock-mhz", type=_real("--clock-mhz"),
                        help=f"clock of the SDC template, in MHz, in [{CLOCK_MHZ_RANGE[0]:g}, "
                             f"{CLOCK_MHZ_RANGE[1]:g}] (default 100)")
    export.set_defaults(handler=cmd_export)

    run = commands.add_parser("run", help="simulate the RTL on a weights file and inputs")
    engine_options(run)
    run.add_argument("--weights", required=True, help="weights .npz")
    run.add_argument("--inputs", required=True, help="int8 inputs .npy of shape (B, N)")
    run.add_argument("--out", required=True, help="outputs of shape (B, M), written as .npy to "
                     "exactly this path: int8 if the weights carry mult/shift/relu, else the "
                     "int64 accumulators")
    run.add_argument("--sim", default="verilator", choices=["verilator", "icarus"])
    run.add_argument("--report", help="JSON report of cycles, work and utilization "
                     "(written to exactly this path)")
    run.set_defaults(handler=cmd_run)

    estimate = commands.add_parser("estimate", help="cycles, latency, load, utilization, "
                                   "storage and energy of a layer from the exact performance "
                                   "model, without simulating")
    engine_options(estimate)
    layer = estimate.add_mutually_exclusive_group(required=True)
    layer.add_argument("--weights", help="weights .npz (any size the tiler takes)")
    layer.add_argument("--shape", metavar="MxN", help="draw an M x N layer of the engine's "
                       "structure at --density")
    estimate.add_argument("--density", type=_real("--density"),
                          help="with --shape: the fraction of weights kept, in (0, 1]")
    estimate.add_argument("--inputs", help="int8 inputs .npy of shape (B, N); default random")
    estimate.add_argument("--input-density", type=_real("--input-density"),
                          help="fraction of non-zero random inputs, in [0, 1] (default 1)")
    estimate.add_argument("--batch", type=_integer("--batch"),
                          help="random input vectors (default 1)")
    estimate.add_argument("--seed", type=_integer("--seed"), default=0,
                          help="seed of the drawn layer and inputs")
    estimate.add_argument("--report", help="JSON report (written to exactly this path)")
    estimate.set_defaults(handler=cmd_estimate)

    net = commands.add_parser("net", help="train and compress a digits network, run every "
                                          "test image through the RTL layer by layer")
    engine_options(net)
    net.add_argument("--export", help="directory for layer{i}.npz, inputs, labels, logits")
    net.add_argument("--report", help="JSON report: accuracies, compression, cycles")
    net.add_argument("--seed", type=_integer("--seed"), default=0, help="training seed")
    net.add_argument("--cache", default="build/net", help="trained-model cache directory")
    net.add_argument("--quiet", action="store_true", help="no progress bars")
    net.set_defaults(handler=cmd_net)

    compile_ = commands.add_parser("compile", help="compile a float ONNX or torch.export model "
                                                  "onto an engine and prove it on the RTL")
    compile_.add_argument("model", metavar="MODEL", help="an .onnx file (torch.onnx.export) or a "
                          ".pt2 file (torch.export.save)")
    engine_options(compile_)
    compile_.add_argument("--calib", required=True, help="float32 calibration inputs .npy, "
                          "(B, features) or (B, C, H, W)")
    compile_.add_argument("--out", required=True, help="directory for network.json, "
                          "layer{i}.npz and, with --test, inputs and logits")
    compile_.add_argument("--test", help="float32 test inputs .npy: run golden model and RTL")
    compile_.add_argument("--labels", help="integer labels .npy of the test inputs")
    compile_.add_argument("--compress", default="none", choices=["none", "qat"],
                          help="none: post-training quantization; qat: fine-tune with the "
                          "engine's compression algorithm on --finetune, then quantize")
    compile_.add_argument("--finetune", help="training data .npz (keys x, y) for --compress qat")
    compile_.add_argument("--report", help="JSON report: accuracies, mismatches, cycles, "
                          "energy, compression")
    compile_.add_argument("--sim", default="verilator", choices=["verilator", "icarus"])
    compile_.add_argument("--quiet", action="store_true", help="no progress bars")
    compile_.set_defaults(handler=cmd_compile)

    run_net = commands.add_parser("run-net", help="run a compiled network (secateur compile's "
                                                  "DIR) on float inputs through the RTL")
    run_net.add_argument("directory", metavar="DIR", help="secateur compile's --out directory")
    run_net.add_argument("--inputs", required=True, help="float32 model inputs .npy")
    run_net.add_argument("--out", required=True, help="raw int64 logits .npy (the last layer's "
                         "acc + bias; logits ~= output scale of network.json times them)")
    run_net.add_argument("--report", help="JSON report: mismatches, cycles, energy")
    run_net.add_argument("--sim", default="verilator", choices=["verilator", "icarus"])
    run_net.add_argument("--quiet", action="store_true", help="no progress bars")
    run_net.set_defaults(handler=cmd_run_net)

    synth = commands.add_parser("synth", help="Yosys cell counts and nextpnr Fmax per engine "
                                              "(stat.json, timing.json)")
    engine_options(synth, allow_all=True)
    synth.add_argument("--out", required=True, help="output directory (build/synth)")
    synth.add_argument("--timing-pe", type=_integer("--timing-pe"), default=1,
                       help="pe of the configuration placed and routed for Fmax, at most the "
                            "engine's pe (default 1; permdiag places one slot)")
    synth.add_argument("--timeout", type=_integer("--timeout"), default=600,
                       help="time limit of each Yosys or nextpnr step, in seconds")
    synth.add_argument("--budget", type=_integer("--budget"), default=None,
                       help="wall-clock seconds for the whole run: steps that would run past it "
                            "are cut or not started (marked; the next run measures them); "
                            "default none")
    synth.add_argument("--seeds", type=_integer("--seeds"), default=3, metavar="N",
                       help="nextpnr seeds each timing shell is placed and routed with (seeds "
                            "1 to N, from one synthesized netlist); Fmax is reported as the "
                            "minimum and the median over those that completed (default 3)")
    synth.set_defaults(handler=cmd_synth)

    mask = commands.add_parser("mask", help="print LFSR masks: per seed, a JSON list of the "
                                            "k kept columns in the order the hardware visits them")
    mask.add_argument("--n", required=True, type=_integer("--n"), help="columns N")
    mask.add_argument("--k", required=True, type=_integer("--k"), help="kept columns per row")
    mask.add_argument("--seed", required=True, nargs="+", type=_integer("--seed"),
                      help="row seeds, each in [1, N]")
    mask.set_defaults(handler=cmd_mask)

    report = commands.add_parser("report", help="HTML report: every engine against the dense "
                                                "baseline (cycles, utilization, energy, "
                                                "resources, Fmax, networks, exploration)")
    report.add_argument("--pe", required=True, type=_integer("--pe"),
                        help="processing elements of every engine in the sweep")
    report.add_argument("--out", required=True, help="output directory (build/report)")
    report.add_argument("--layer", default="128x128", help="sweep layer ROWSxCOLS")
    report.add_argument("--batch", type=_integer("--batch"), default=8,
                        help="input vectors per sweep point")
    report.add_argument("--synth", default="build/synth", help="make synth's directory")
    report.add_argument("--net", default="build/net", help="make net's directory")
    report.add_argument("--explore", default="build/explore",
                        help="secateur explore's directory")
    report.add_argument("--quiet", action="store_true", help="no progress lines")
    report.set_defaults(handler=cmd_report)

    explore = commands.add_parser("explore", help="design-space exploration: weight precision "
                                                  "x structured sparsity on the digits MLP")
    explore.add_argument("--out", default="build/explore", help="output directory")
    explore.add_argument("--seed", type=_integer("--seed"), default=0, help="training seed")
    explore.add_argument("--bits", default="2,4,8", help="weight precisions (comma-separated)")
    explore.add_argument("--sparsity", default="0,0.5,0.75,0.9",
                         help="fractions of zero tiles (comma-separated)")
    explore.add_argument("--cycles", default="rtl", choices=["rtl", "model"],
                         help="cycles from the ternary engine's RTL or its cycle model")
    explore.add_argument("--quiet", action="store_true", help="no progress output")
    explore.set_defaults(handler=cmd_explore)
    return parser


def _integer(name):
    def parse(text):
        try:
            return int(text, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, not {text!r}") from None
    return parse


def _real(name):
    def parse(text):
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, not {text!r}") from None
    return parse


def main(argv=None) -> int:
    debug = os.environ.get("SECATEUR_DEBUG") == "1"
    try:
        args = _parser().parse_args(argv)
        if getattr(args, "engine", "all") != "all":
            engine_class(args.engine)
        return args.handler(args)
    except KeyboardInterrupt:
        stop_tools()
        if debug:
            raise
        print("secateur: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (UsageError, ValueError, TypeError) as error:
        if debug:
            raise
        message = " ".join(str(error).split())
        print(f"secateur: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as error:
        from ..sim.toolchain import ToolchainError
        if isinstance(error, ToolchainError) and not debug:
            print(f"secateur: error: {' '.join(str(error).split())}", file=sys.stderr)
            return EXIT_USAGE
        raise


if __name__ == "__main__":
    sys.exit(main())
