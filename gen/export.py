"""Parameters -> an integration bundle: everything a chip or FPGA project needs to drop one
engine in, in one relocatable directory.

``DIR/<engine>/`` receives what :func:`secateur.gen.rtl.write_rtl` writes (``<top>.v``,
``<top>.f``, ``secateur.vlt``, ``manifest.json``) and, derived from the same engine object so
that nothing can disagree with the Verilog:

* ``<top>.core``: a FuseSoC CAPI2 core, ``secateur:engines:<top>:<version>``. Filesets
  ``rtl`` (the Verilog), ``lint_waivers`` (the Verilator waivers), ``constraints`` (the SDC)
  and ``sw`` (the C header and driver); targets ``default`` (the ``rtl`` fileset, what a
  design that depends on the core gets) and ``lint`` (Edalize's lint flow: ``verilator
  --lint-only -Wall`` with the waivers).
  There is no ``sim`` target: the bundle has no testbench; ``secateur run`` simulates.
* ``<top>.h``: a C99 header (the Gemmini way: the generator writes it, so software always
  matches the hardware): every parameter and derived size, the port widths and lane packing,
  the latency, the load port's payload layout, every load region's address encoding (region
  index, field positions and widths, an encoder macro and a ``static inline`` function per
  region), the names of the ``config`` registers, the requantizer control word of
  :class:`~secateur.hdl.result_path.ResultPath`, and the format of
  :mod:`secateur.gen.formats`: every formula of the manifest's ``format`` (beats per vector,
  the lane maps of ``act`` and ``res``, config register values, where every element of a
  layer lands) as a ``static inline`` function, and the LFSR of the engines that have one;
  and the AXI4 wrapper's register map (``<TOP>_AXI_*``: offsets, field masks and LSBs, the
  constant registers' values, words per beat; from the manifest's ``axi`` section).
* ``<top>_driver.h``, ``<top>_driver.c``: the C driver of the AXI4 wrapper
  (:mod:`secateur.gen.driver`): loads a layer from the arrays a user has and runs vectors
  through the wrapper's AXI4-Lite window, with the header's formats; written when the engine
  has a wrapper.
* ``<top>.md``: the engine's guide (``docs/engines/<engine>.md``): how to drive it, with a
  worked example.
* ``<top>.sdc``: a clock-constraint template: ``clk`` at ``clock_mhz`` (default
  :data:`DEFAULT_CLOCK_MHZ`, a target, not a measurement: see ``make synth`` for Fmax), input
  and output delays on the stream ports and ``rst``; the SDC subset that Vivado's XDC and
  OpenROAD/OpenSTA both read.
* ``README.txt``: the file list and how to use them.

Every path inside the bundle is relative to the bundle, so it can be moved or copied.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from .. import __version__
from ..hdl.engines.base import Engine
from ..hdl.result_path import BIAS_BIT, ENABLE_BIT, RELU_BIT, SHIFT_LSB
from ..models.requant import BIAS_BITS, MULT_BITS, SHIFT_MAX
from .driver import driver_texts
from .formats import c_lines, config_registers, engine_format, guide_path
from .rtl import RTLBundle, write_rtl
from .safeio import write_text

__all__ = ["DEFAULT_CLOCK_MHZ", "ACT_LANE_WIDTH", "core_name", "core_text", "header_text",
           "sdc_text", "config_registers", "export_bundle", "ExportBundle"]

#: The SDC template's default clock: a target for the template, not a measured Fmax.
DEFAULT_CLOCK_MHZ = 100.0
#: ``act`` lanes are int8.
ACT_LANE_WIDTH = 8
#: Input and output delays of the SDC template, as a fraction of the clock period.
IO_DELAY_FRACTION = 0.2


class ExportBundle(RTLBundle):
    """The files written for one engine by :func:`export_bundle`."""

    def __init__(self, directory: Path, top: str):
        super().__init__(directory, top)
        self.core = directory / f"{top}.core"
        self.header = directory / f"{top}.h"
        self.sdc = directory / f"{top}.sdc"
        self.guide = directory / f"{top}.md"
        self.readme = directory / "README.txt"
        self.driver_header = directory / f"{top}_driver.h"
        self.driver_source = directory / f"{top}_driver.c"

    def files(self) -> list[Path]:
        axi_files = [self.axi_verilog, self.axi_filelist] if self.axi_verilog.exists() else []
        driver = [self.driver_header, self.driver_source] if self.driver_source.exists() else []
        return [self.verilog, self.filelist, self.waivers, self.manifest, *axi_files, self.core,
                self.header, *driver, self.sdc, self.guide, self.readme]


def core_name(engine: Engine, versioned: bool = True) -> str:
    """The core's VLNV: ``secateur:engines:<top>[:<version>]``."""
    return f"secateur:engines:{engine.top}" + (f":{__version__}" if versioned else "")


def _settings_text(engine: Engine) -> str:
    return ", ".join(f"{key}={value}" for key, value in engine.params.items())


def command_line(engine: Engine) -> str:
    """The ``secateur export`` command that regenerates this configuration."""
    settings = " ".join(f"--set {key}={value}" for key, value in engine.params.items()
                        if key != "pe")
    return f"secateur export --engine {engine.name} --pe {engine.params['pe']} {settings}".strip()


# FuseSoC CAPI2 ---------------------------------------------------------------------------------

def core_text(engine: Engine, manifest: dict, files: ExportBundle) -> str:
    """The CAPI2 core file. YAML written by hand (JSON-quoted strings are valid YAML), so the
    bundle needs no YAML library; FuseSoC itself validates it in the tests."""
    q = json.dumps
    description = (f"secateur {engine.name} engine ({_settings_text(engine)}); verilog sha256 "
                   f"{manifest['verilog_sha256'][:16]}")
    return textwrap.dedent(f"""\
        CAPI=2:
        # Generated by secateur {__version__}: {command_line(engine)}
        name: {q(core_name(engine))}
        description: {q(description)}

        filesets:
          rtl:
            files:
              - {q(files.verilog.name)}
            file_type: verilogSource
          lint_waivers:
            files:
              - {q(files.waivers.name)}
            file_type: vlt
          constraints:
            # A template for the engine as the top level (out-of-context synthesis); not in
            # the default target, because a design that instantiates the engine owns its clock.
            files:
              - {q(files.sdc.name)}
            file_type: SDC
          sw:
            files:
              - {q(files.header.name)}: {{is_include_file: true}}
{_driver_core_files(manifest, files)}            file_type: cSource

        targets:
          default:
            filesets: [rtl]
            toplevel: {q(engine.top)}
          lint:
            description: "verilator --lint-only -Wall with the shipped waivers"
            flow: lint
            flow_options:
              tool: verilator
              verilator_options: [-Wall]
            filesets: [lint_waivers, rtl]
            toplevel: {q(engine.top)}
        """)


def _has_driver(manifest: dict) -> bool:
    """Whether the bundle has the C driver: the engine has an AXI wrapper."""
    return "registers" in manifest.get("axi", {})


def _driver_core_files(manifest: dict, files: ExportBundle) -> str:
    if not _has_driver(manifest):
        return ""
    q = json.dumps
    return (f"              - {q(files.driver_header.name)}: {{is_include_file: true}}\n"
            f"              - {q(files.driver_source.name)}\n")


# C header --------------------------------------------------------------------------------------

def _c_uint(value: int) -> str:
    if value < 0:
        raise ValueError(f"C header constants are unsigned, not {value}")
    return f"{value}u" if value < 1 << 32 else f"{value}ull"


def _c_comment(text: str, indent: str = "") -> list[str]:
    """A ``/* ... */`` block comment of wrapped ``text`` (no ``*/`` inside)."""
    text = text.replace("*/", "* /")
    lines = textwrap.wrap(text, 92 - len(indent), break_on_hyphens=False) or [""]
    if len(lines) == 1:
        return [f"{indent}/* {lines[0]} */"]
    return [f"{indent}/* {lines[0]}"] + [f"{indent} * {line}" for line in lines[1:]] + \
        [f"{indent} */"]


class _Defines:
    """``#define`` lines with a check that no name is defined twice."""

    def __init__(self, prefix: str):
        self.prefix, self.lines, self._names = prefix, [], set()

    def name(self, name: str) -> str:
        full = f"{self.prefix}_{name}".upper()
        if full in self._names:
            raise ValueError(f"C header defines {full} twice")
        self._names.add(full)
        return full

    def define(self, name: str, value: str, doc: str = "", params: list[str] | None = None) -> str:
        full = self.name(name)
        signature = full if params is None else f"{full}({', '.join(params)})"
        line = f"#define {signature} {value}"
        self.lines.append(f"{line:<56} /* {doc} */" if doc else line)
        return full

    def text(self, *lines: str):
        self.lines.extend(lines)


def header_text(engine: Engine, manifest: dict) -> str:
    """The C99 header of one engine configuration (see the module documentation)."""
    top = engine.top
    d = _Defines(top)
    load_map = manifest["load_map"]
    addr_width, offset_width = load_map["addr_width"], load_map["offset_width"]
    if addr_width > 64:
        raise ValueError(f"{engine.name} engine load addresses are {addr_width} bits; the C "
                         f"header supports at most 64")
    addr_type = "uint32_t" if addr_width <= 32 else "uint64_t"
    addr_t = f"{top}_addr_t"
    guard = f"SECATEUR_{top.upper()}_H"

    d.text(f"/* {top}.h: the {engine.name} engine of secateur {__version__}, as generated.",
           f" * Generated by `{command_line(engine)}`; do not edit, regenerate.",
           " *",
           " * Every value below comes from the generator, as manifest.json does: software built",
           " * with this header matches the Verilog whose sha256 is *_VERILOG_SHA256.",
           f" * Protocol ({top}.md beside this header, and manifest.json \"format\"): after rst,",
           " * write the layer through the load port (its beats in any order), then stream act",
           " * beats and read res beats; the format functions at the end of this header compute",
           " * beats per vector, lane maps, register values and where each weight lands.",
           " */",
           f"#ifndef {guard}", f"#define {guard}", "", "#include <stdint.h>", "")
    d.define("GENERATOR_VERSION", json.dumps(__version__))
    d.define("VERILOG_SHA256", json.dumps(manifest["verilog_sha256"]))
    d.define("ENGINE_NAME", json.dumps(engine.name))
    d.define("TOP_NAME", json.dumps(top))

    d.text("", "/* Generator parameters */")
    for param in engine.PARAMS:
        value = engine.params[param.name]
        if param.choices:
            d.define(f"PARAM_{param.name}", json.dumps(value), param.doc)
            for choice in param.choices:
                d.define(f"PARAM_{param.name}_IS_{choice}", str(int(choice == value)))
        else:
            d.define(f"PARAM_{param.name}", _c_uint(value), param.doc)

    d.text("", "/* Derived sizes (the manifest's \"derived\") */")
    for name, value in manifest["derived"].items():
        if isinstance(value, bool):
            d.define(name, str(int(value)), "boolean")
        elif isinstance(value, int):
            d.define(name, _c_uint(value))
        else:
            raise TypeError(f"{engine.name} engine derived value {name} is {value!r}; the C "
                            f"header takes integers and booleans")

    d.text("", *_c_comment(manifest["latency_doc"]))
    d.define("LATENCY", _c_uint(manifest["latency"]))

    d.text("", "/* Ports: single clock clk (rising edge), rst synchronous active high. Streams "
               "<s>__payload,", " * <s>__valid, <s>__ready; a beat transfers on a rising edge "
               "with valid and ready high. */")
    for port in manifest["ports"]:
        d.define(f"PORT_{port['name']}_WIDTH", _c_uint(port["width"]), port["direction"])

    d.text("", "/* Stream lane packing: lane k of a payload is bits [k*W, k*W+W), two's "
               "complement. */")
    act_lanes, res_lanes = manifest["derived"]["act_lanes"], manifest["derived"]["res_lanes"]
    res_width = manifest["derived"]["res_width"]
    d.define("ACT_LANE_WIDTH", _c_uint(ACT_LANE_WIDTH), "int8 input lanes")
    d.define("RES_LANE_WIDTH", _c_uint(res_width), "signed result lanes")
    d.define("ACT_LANE_LSB", f"((uint32_t)(k) * {_c_uint(ACT_LANE_WIDTH)})", params=["k"])
    d.define("RES_LANE_LSB", f"((uint32_t)(k) * {_c_uint(res_width)})", params=["k"])
    if act_lanes * ACT_LANE_WIDTH != _port_width(manifest, "act__payload") or \
            res_lanes * res_width != _port_width(manifest, "res__payload"):
        raise ValueError(f"{engine.name} engine stream widths disagree with its lanes")

    d.text("", "/* Load port: payload = {data, addr}, addr in the low LOAD_ADDR_WIDTH bits.",
           " * addr = {region index, region fields}: the region index sits at "
           "LOAD_REGION_LSB, the", " * fields of a region are packed below it, most "
           "significant first; unused high bits are 0. */",
           f"typedef {addr_type} {addr_t};")
    d.define("LOAD_ADDR_WIDTH", _c_uint(addr_width))
    d.define("LOAD_DATA_WIDTH", _c_uint(load_map["data_width"]))
    d.define("LOAD_OFFSET_WIDTH", _c_uint(offset_width), "bits of the fields of any region")
    d.define("LOAD_REGION_LSB", _c_uint(offset_width))
    d.define("LOAD_REGION_BITS", _c_uint(addr_width - offset_width))
    d.define("LOAD_PAYLOAD_ADDR_LSB", "0u")
    d.define("LOAD_PAYLOAD_DATA_LSB", _c_uint(addr_width))
    d.define("LOAD_PAYLOAD_WIDTH", _c_uint(addr_width + load_map["data_width"]))
    if addr_width + load_map["data_width"] <= 64:
        d.text("/* The load__payload value of one beat. */",
               f"static inline uint64_t {top}_load_payload({addr_t} addr, uint32_t data)",
               "{",
               f"    return ((uint64_t)data << {addr_width}) | (uint64_t)addr;",
               "}")

    for region_name, region in load_map["regions"].items():
        d.text("", *_c_comment(f"Region {region_name} (index {region['index']}): "
                               f"{region['doc']}"))
        region_macro = d.define(f"REGION_{region_name}", _c_uint(region["index"]))
        low = sum(field["bits"] for field in region["fields"])
        terms = [f"(({addr_t}){region_macro} << {_c_uint(offset_width)})"]
        for field in region["fields"]:
            low -= field["bits"]
            stem = f"{region_name}_{field['name']}"
            lsb = d.define(f"{stem}_LSB", _c_uint(low))
            d.define(f"{stem}_BITS", _c_uint(field["bits"]))
            d.define(f"{stem}_COUNT", _c_uint(field["values"]), "legal values: 0 .. COUNT-1")
            mask = _c_uint((1 << field["bits"]) - 1)
            terms.append(f"((({addr_t})({field['name']}) & {mask}) << {lsb})")
        names = [field["name"] for field in region["fields"]]
        encoder = d.define(f"{region_name}_ADDR", "(" + " | ".join(terms) + ")", params=names)
        arguments = ", ".join(f"uint{32 if field['bits'] <= 32 else 64}_t {field['name']}_"
                              for field in region["fields"])
        d.text(f"static inline {addr_t} {top}_{region_name}_addr({arguments})", "{",
               f"    return {encoder}({', '.join(name + '_' for name in names)});",
               "}")

    registers = config_registers(engine)
    if registers:
        d.text("", "/* config registers: the register field of the config region */")
        for name, value in registers.items():
            d.define(f"CONFIG_REG_{name}", _c_uint(value))

    if "mult" in load_map["regions"]:
        shift_bits = SHIFT_MAX.bit_length()
        d.text("", "/* Result path (ResultPath): the control word goes to the config "
                   "register REQUANT; one", " * signed 16-bit multiplier per output row to "
                   "the mult region, in data[15:0] (only when requantizing),",
               " * one signed 32-bit bias per output row to the bias region (only when "
               "the bias bit is set).", " * raw = acc + bias (bias 0 when the bias bit is "
               "clear), exact in RES_LANE_WIDTH bits;",
               " * y = sat8(relu?((raw * mult + 2^(shift-1)) >> shift)) when enabled, "
               "else raw. */")
        d.define("REQUANT_ENABLE_BIT", _c_uint(ENABLE_BIT))
        d.define("REQUANT_RELU_BIT", _c_uint(RELU_BIT))
        d.define("REQUANT_BIAS_BIT", _c_uint(BIAS_BIT))
        d.define("REQUANT_SHIFT_LSB", _c_uint(SHIFT_LSB))
        d.define("REQUANT_SHIFT_BITS", _c_uint(shift_bits))
        d.define("REQUANT_SHIFT_MAX", _c_uint(SHIFT_MAX))
        d.define("REQUANT_MULT_BITS", _c_uint(MULT_BITS))
        d.define("REQUANT_CONTROL",
                 f"((((uint32_t)!!(enable)) << {ENABLE_BIT}) | (((uint32_t)!!(relu)) << "
                 f"{RELU_BIT}) | (((uint32_t)!!(bias)) << {BIAS_BIT}) | ((((uint32_t)(shift)) "
                 f"& {_c_uint((1 << shift_bits) - 1)}) << {SHIFT_LSB}))",
                 params=["enable", "relu", "bias", "shift"])
        d.define("MULT_DATA", f"((uint32_t)(int32_t)(mult) & {_c_uint((1 << MULT_BITS) - 1)})",
                 params=["mult"])
        d.define("BIAS_BITS", _c_uint(BIAS_BITS))
        d.define("BIAS_DATA", "((uint32_t)(int32_t)(bias))", params=["bias"])

    if "registers" in manifest.get("axi", {}):
        _axi_defines(d, manifest["axi"])

    fmt = engine_format(engine)
    d.text("", "/* Format constants (manifest.json \"format\" \"constants\") */")
    for name, constant in fmt.constants.items():
        if name == "latency":
            # format.latency's constant is the manifest's latency, LATENCY above (the
            # formulas' C reads that macro).
            if constant["value"] != manifest["latency"]:
                raise ValueError(f"format constant latency {constant['value']} differs from "
                                 f"the manifest's latency {manifest['latency']}")
            continue
        d.define(name, _c_uint(constant["value"]), constant["doc"])
    d.text(*c_lines(engine, fmt))

    d.text("", f"#endif /* {guard} */", "")
    return "\n".join(d.lines)


def _axi_defines(d: _Defines, section: dict) -> None:
    """The AXI4 wrapper's register map, from the manifest's ``axi`` section."""
    d.text("", *_c_comment(f"AXI4 wrapper {section['top']} (module {section['top']}, "
                           f"{section['top']}.v and .f): AXI4-Lite byte offsets of its "
                           f"32-bit registers (a window's word i at +4*i), the masks and "
                           f"LSBs of their fields, and the values of the constant registers. "
                           f"Clock aclk, reset aresetn (synchronous, active low)."))
    d.define("AXI_ADDR_WIDTH", _c_uint(section["addr_width"]), "AXI4-Lite address bits")
    for reg in section["registers"]:
        d.define(f"AXI_{reg['name']}", f"0x{reg['offset']:03x}u", f"{reg['access']}: "
                 f"{reg['doc']}")
        if reg["words"] > 1:
            d.define(f"AXI_{reg['name']}_WORDS_MAX", _c_uint(reg["words"]))
        for field in reg["fields"]:
            d.define(f"AXI_{reg['name']}_{field['name']}", f"0x{field['mask']:x}u", field["doc"])
            d.define(f"AXI_{reg['name']}_{field['name']}_LSB", _c_uint(field["lsb"]))
    for name, value, doc in (
            ("ACT_WORDS", section["act_words"], "ACT_DATA words of one act beat"),
            ("RES_WORDS", section["res_words"], "RES_DATA words of one res beat"),
            ("ID_VALUE", section["id"], "the ID register"),
            ("KEY_VALUE", section["key"], "the KEY register of this build"),
            ("GEOMETRY_VALUE", section["geometry"], "the GEOMETRY register"),
            ("ENGINE_CODE", section["engine_code"], "GEOMETRY's engine field"),
            ("ACT_TDATA_WIDTH", section["act_tdata_width"], "s_axis_act_tdata bits"),
            ("RES_TDATA_WIDTH", section["res_tdata_width"], "m_axis_res_tdata bits"),
            ("LOAD_TDATA_WIDTH", section["load_tdata"]["width"], "s_axis_load_tdata bits"),
            ("LOAD_TDATA_ADDR_LSB", section["load_tdata"]["addr_lsb"],
             "s_axis_load_tdata: addr from this bit, data in bits 31:0")):
        d.define(f"AXI_{name}", f"0x{value:x}u" if name.endswith("_VALUE") else _c_uint(value),
                 doc)


def _port_width(manifest: dict, name: str) -> int:
    return next(port["width"] for port in manifest["ports"] if port["name"] == name)


# SDC -------------------------------------------------------------------------------------------

def _sdc_ports(manifest: dict, direction: str) -> str:
    names = [port["name"] + ("[*]" if port["width"] > 1 else "")
             for port in manifest["ports"]
             if port["direction"] == direction and port["name"] != "clk"]
    return "{" + " ".join(names) + "}"


def sdc_text(engine: Engine, manifest: dict, clock_mhz: float = DEFAULT_CLOCK_MHZ) -> str:
    """The clock-constraint template: the SDC subset that XDC and OpenSTA accept (``set``,
    ``expr``, ``create_clock``, ``set_input_delay``, ``set_output_delay``, ``get_ports``)."""
    if not 0 < clock_mhz < float("inf"):
        raise ValueError(f"clock frequency must be > 0 MHz, not {clock_mhz}")
    clock = manifest["clock"]["name"]
    period = round(1000.0 / clock_mhz, 3)
    return textwrap.dedent(f"""\
        # {engine.top}.sdc: clock constraints for the secateur {engine.name} engine as the top
        # level. Generated by secateur {__version__}: {command_line(engine)}
        #
        # One clock, {clock} (rising edge). rst is synchronous and active high: an ordinary
        # input timed against {clock}. Every other port belongs to a valid/ready stream
        # (load, act, res) registered or decoded inside the engine.
        # The period is a target ({clock_mhz:g} MHz), not a measurement (make synth reports
        # Fmax); the I/O delays stand for the logic outside the engine. Edit both.
        # Vivado: the commands are the SDC subset XDC accepts; copy the file to {engine.top}.xdc
        # and read_xdc it (out-of-context synthesis of the engine). OpenROAD / OpenSTA:
        # read_sdc, or SDC_FILE in OpenROAD-flow-scripts. When the engine sits inside a larger
        # design, constrain your own clock instead and drop this file.

        set clk_period {period}
        set io_delay [expr {{{IO_DELAY_FRACTION} * $clk_period}}]

        create_clock -name {clock} -period $clk_period [get_ports {clock}]
        set_input_delay -clock {clock} $io_delay [get_ports {_sdc_ports(manifest, "input")}]
        set_output_delay -clock {clock} $io_delay [get_ports {_sdc_ports(manifest, "output")}]
        """)


# README ----------------------------------------------------------------------------------------

def readme_text(engine: Engine, files: ExportBundle, clock_mhz: float) -> str:
    return textwrap.dedent(f"""\
        secateur {__version__}: the {engine.name} engine, top module {engine.top}
        Parameters: {_settings_text(engine)}
        Regenerate: {command_line(engine)}

        {files.verilog.name:<20} the whole design, one Verilog-2005 file (module {engine.top})
        {files.filelist.name:<20} filelist for verilator -F (paths relative to the filelist)
        {files.waivers.name:<20} Verilator lint waivers for Amaranth's output idioms
        {files.manifest.name:<20} parameters, derived sizes, ports, latency, load address map,
        {'':<20} formats, the AXI4 wrapper's ports and register map ("axi")
{_axi_readme(engine, files)}        {files.core.name:<20} FuseSoC CAPI2 core {core_name(engine)}
        {'':<20} (targets: default = the RTL, lint = verilator -Wall)
        {files.header.name:<20} C header: parameters, widths, load address encoders
{_driver_readme(files)}        {files.sdc.name:<20} clock constraints template (clk at {clock_mhz:g} MHz, I/O delays)
        {files.guide.name:<20} how to drive the engine: formats, load order, a worked example
        {files.readme.name:<20} this file

        Clock clk (rising edge); rst synchronous, active high (clears everything but memory
        contents: write the layer again after a reset). Streams load, act, res:
        <s>__payload, <s>__valid, <s>__ready; a beat transfers on a rising edge with valid
        and ready high; once valid is high, payload and valid hold until the transfer.

        Lint:   verilator --lint-only -Wall -F {files.filelist.name}
                fusesoc --cores-root . run --target lint {core_name(engine, versioned=False)}
        Guide:  {files.guide.name}, and the "Integration guide" section of secateur's README.md.
        """)


def _driver_readme(files: ExportBundle) -> str:
    if not files.driver_source.exists():
        return ""
    return textwrap.indent(textwrap.dedent(f"""\
        {files.driver_header.name:<20} C driver of the AXI4 wrapper (C99): load a layer, run
        {files.driver_source.name:<20} vectors, read the counters through the AXI4-Lite window
        """), "        ")


def _axi_readme(engine: Engine, files: ExportBundle) -> str:
    if not files.axi_verilog.exists():
        return ""
    return textwrap.indent(textwrap.dedent(f"""\
        {files.axi_verilog.name:<20} the AXI4 wrapper, module {engine.top}_axi (instantiates
        {'':<20} {engine.top}): s_axis_act, m_axis_res, s_axis_load, s_axi_ctrl, aclk, aresetn
        {files.axi_filelist.name:<20} filelist of the wrapper and the engine (verilator -F,
        {'':<20} or the file list of a Vivado/Quartus project); register map in {files.header.name}
        """), "        ")


# The bundle ------------------------------------------------------------------------------------

def export_bundle(engine: Engine, out_dir: Path,
                  clock_mhz: float = DEFAULT_CLOCK_MHZ) -> ExportBundle:
    """Write the integration bundle of ``engine`` to ``out_dir/<name>/`` (see the module
    documentation).

    Raises
    ------
    ValueError
        If ``clock_mhz`` is not positive.
    OSError
        If the directory cannot be written.
    """
    if not 0 < clock_mhz < float("inf"):
        raise ValueError(f"clock frequency must be > 0 MHz, not {clock_mhz}")
    rtl = write_rtl(engine, out_dir)
    bundle = ExportBundle(rtl.directory, engine.top)
    manifest = json.loads(bundle.manifest.read_text())
    if _has_driver(manifest):
        for path, text in zip((bundle.driver_header, bundle.driver_source),
                              driver_texts(engine, manifest)):
            write_text(path, text)
    else:
        bundle.driver_header.unlink(missing_ok=True)
        bundle.driver_source.unlink(missing_ok=True)
    write_text(bundle.core, core_text(engine, manifest, bundle))
    write_text(bundle.header, header_text(engine, manifest))
    write_text(bundle.sdc, sdc_text(engine, manifest, clock_mhz))
    write_text(bundle.guide, guide_path(engine).read_text())
    write_text(bundle.readme, readme_text(engine, bundle, clock_mhz))
    return bundle
