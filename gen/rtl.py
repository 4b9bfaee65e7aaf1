"""Parameters -> Verilog, a filelist and a manifest, for one engine.

``DIR/<engine>/`` receives:

* ``<top>.v``: the whole design in one file, emitted by Amaranth's built-in Yosys (no source
  locations, so the text depends on the parameters only);
* ``<top>.f``: a filelist for ``verilator -F`` (paths relative to the filelist), listing the
  Verilog and the waiver file;
* ``secateur.vlt``: Verilator waivers for Amaranth's output, each documented in the file;
* ``manifest.json``: every generator parameter, the derived widths, the ports, the latency,
  the load address map and the ``format`` (:mod:`secateur.gen.formats`: beats per vector,
  lane maps, config registers and every encoding, as formulas), so that host software
  always matches the hardware; and ``axi``, the AXI4 wrapper's ports and register map
  (:meth:`secateur.hdl.axi.AXIWrapper.describe`);
* ``<top>_axi.v``: the AXI4 wrapper :class:`~secateur.hdl.axi.AXIWrapper` (module
  ``<top>_axi``, which instantiates ``<top>``), and ``<top>_axi.f``, its filelist (the
  waivers, the engine's Verilog, the wrapper's).
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from pathlib import Path

from amaranth.hdl import Value

from .. import __version__
from ..hdl import axi
from ..hdl.engines.base import Engine
from .formats import describe as describe_format
from .safeio import write_text

__all__ = ["WAIVER_FILE", "MAX_WEIGHT_BITS", "check_size", "source_digest", "generator_key", "verilog_text", "shared_modules_verilog", "macro_models_verilog", "ports", "manifest", "write_rtl", "axi_key", "RTLBundle"]

WAIVER_FILE = "secateur.vlt"


#: The most weight storage a generated engine may hold: 8 Mbit (1 MiB of int8), twice the
#: block RAM of the largest ECP5. Elaboration time grows with it (measured on 2 cores: a
#: 1024 x 1024 int8 dense engine, 8 Mbit, in about 40 s; a 4096 x 4096 ternary engine, 32 Mbit,
#: in 102 s and a 4096 x 4096 dense engine in over 300 s). Larger layers are cut into tiles.
MAX_WEIGHT_BITS = 1 << 23


def check_size(engine: Engine) -> None:
    """Refuse an engine whose weight storage exceeds :data:`MAX_WEIGHT_BITS`, before anything
    is elaborated.

    Raises
    ------
    ValueError
        Naming the engine's storage, its parameters and the bound.
    """
    bits = engine.derived().get("weight_bits")
    if bits is not None and bits > MAX_WEIGHT_BITS:
        sizes = ", ".join(f"{key}={engine.params[key]}" for key in ("pe", "max_rows", "max_cols")
                          if key in engine.params)
        raise ValueError(f"the {engine.name} engine at {sizes} holds {bits} weight bits; the "
                         f"generator elaborates at most {MAX_WEIGHT_BITS} (8 Mbit): lower "
                         f"max_rows or max_cols")


def verilog_text(engine: Engine, component=None) -> str:
    """The engine's Verilog, deterministic for its parameters: the engine's module, then its
    shared modules (:meth:`Engine.shared_modules`, such as the PE every ``pe<i>`` instantiates)
    and one module per behavioral macro model it instantiates (:meth:`Engine.macro_models`).

    Raises
    ------
    ValueError
        From :func:`check_size`.
    """
    check_size(engine)
    # The built-in (WebAssembly) Yosys gives the same text on every machine.
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")
    from amaranth.back import verilog
    component = engine.component() if component is None else component
    return (verilog.convert(component, name=engine.top, emit_src=False)
            + shared_modules_verilog(engine) + macro_models_verilog(engine))


def _modules_verilog(builds: dict) -> str:
    """One Verilog module per ``name: build`` (``build()`` returns the component)."""
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")
    from amaranth.back import verilog
    # Amaranth marks every converted module as a design top; only the engine is one.
    return "".join(verilog.convert(build(), name=name, emit_src=False)
                   .replace("(* top =  1  *)\n", "") for name, build in builds.items())


def shared_modules_verilog(engine: Engine) -> str:
    """The Verilog modules of the engine's shared modules ("" if it has none)."""
    return _modules_verilog({module.name: module.component
                             for module in engine.shared_modules().values()})


def macro_models_verilog(engine: Engine) -> str:
    """The Verilog modules of the engine's behavioral macro models ("" if it has none)."""
    return _modules_verilog(engine.macro_models())


def ports(component) -> list[dict]:
    """The top-level ports of an engine component as Verilog sees them, ``clk`` and ``rst``
    first."""
    result = [{"name": "clk", "direction": "input", "width": 1},
              {"name": "rst", "direction": "input", "width": 1,
               "doc": "synchronous, active high"}]
    for path, member, value in component.signature.flatten(component):
        result.append({"name": "__".join(str(part) for part in path),
                       "direction": "input" if member.flow.name == "In" else "output",
                       "width": Value.cast(value).shape().width})
    return result


def manifest(engine: Engine, verilog: str, component) -> dict:
    from amaranth import __version__ as amaranth_version
    return {
        "engine": engine.name,
        "top": engine.top,
        "generator": {"secateur": __version__, "amaranth": amaranth_version},
        "params": engine.params,
        "param_docs": {param.name: param.doc for param in engine.PARAMS},
        "derived": engine.derived(),
        "latency": engine.latency,
        "latency_doc": "the least number of clock edges from the edge that accepts a vector's "
                       "last act beat to the edge that accepts its first res beat, engine idle "
                       "and no stalls; the exact count for a layer and vector is the formula "
                       "format.formulas.first_result_latency (format.latency)",
        "ports": ports(component),
        "clock": {"name": "clk", "edge": "rising"},
        "reset": {"name": "rst", "kind": "synchronous", "active": "high"},
        "load_map": engine.load_map.describe(),
        "format": describe_format(engine),
        "macro_models": {name: "behavioral model emitted in the Verilog beside the engine; a real "
                               "macro with the same ports replaces it"
                         for name in engine.macro_models()},
        "verilog_sha256": hashlib.sha256(verilog.encode()).hexdigest(),
    }


class RTLBundle:
    """The files written for one engine."""

    def __init__(self, directory: Path, top: str):
        self.directory = directory
        self.verilog = directory / f"{top}.v"
        self.filelist = directory / f"{top}.f"
        self.waivers = directory / WAIVER_FILE
        self.manifest = directory / "manifest.json"
        self.axi_verilog = directory / f"{top}_axi.v"
        self.axi_filelist = directory / f"{top}_axi.f"
        self.reused = False

    def sources(self) -> list[Path]:
        return [self.verilog]


def source_digest() -> str:
    """Digest of everything generated Verilog depends on besides the parameters: the HDL
    sources, the models (which define constants baked into the RTL, such as LFSR
    polynomials), this writer, the waivers and the Amaranth version."""
    from amaranth import __version__ as amaranth_version
    digest = hashlib.sha256(amaranth_version.encode())
    package = Path(__file__).resolve().parent.parent
    # The AXI wrapper is not the engine's: the manifest's axi section records its own digest.
    sources = sorted(path for path in (package / "hdl").rglob("*.py")
                     if path != package / "hdl" / "axi.py") + \
        sorted((package / "models").glob("*.py"))
    for path in sources + [Path(__file__).resolve(), package / "sim" / WAIVER_FILE]:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def generator_key(engine: Engine) -> str:
    """What determines an engine's generated files: its name, parameters and the sources."""
    return hashlib.sha256(json.dumps([engine.name, engine.params, source_digest()],
                                     sort_keys=True).encode()).hexdigest()


def _up_to_date(bundle: "RTLBundle", key: str, engine: Engine) -> bool:
    try:
        recorded = json.loads(bundle.manifest.read_text())
        verilog = bundle.verilog.read_bytes()
    except (OSError, ValueError):
        return False
    return (recorded.get("generator_key") == key and bundle.filelist.exists()
            and bundle.waivers.exists()
            and recorded.get("verilog_sha256") == hashlib.sha256(verilog).hexdigest()
            # The format is not in the source digest (it does not change the Verilog).
            and recorded.get("format") == json.loads(json.dumps(describe_format(engine))))


def axi_key(key: str) -> int:
    """The AXI wrapper's KEY register: bits 31:0 of a :func:`generator_key`."""
    return int(key, 16) & 0xFFFFFFFF


def _axi_wrapper(engine: Engine, key: str):
    """The engine's AXI wrapper and the manifest's ``axi`` section; an engine that the wrapper
    refuses (a GEOMETRY field too narrow for it) gets none, and the section says why."""
    try:
        wrapper = axi.AXIWrapper(engine, key=axi_key(key))
    except ValueError as error:
        return None, {"unavailable": str(error)}
    return wrapper, json.loads(json.dumps(wrapper.describe()))


def _write_axi(bundle: RTLBundle, wrapper) -> None:
    if wrapper is None:
        bundle.axi_verilog.unlink(missing_ok=True)
        bundle.axi_filelist.unlink(missing_ok=True)
        return
    write_text(bundle.axi_verilog, axi.verilog_text(wrapper))
    write_text(bundle.axi_filelist, f"{bundle.waivers.name}\n{bundle.verilog.name}\n"
                                    f"{bundle.axi_verilog.name}\n")


def write_rtl(engine: Engine, out_dir: Path, reuse: bool = False) -> RTLBundle:
    """Write the Verilog, filelist, waivers and manifest of ``engine`` and its AXI4 wrapper
    to ``out_dir/<name>/``.

    With ``reuse``, files already there from the same parameters and sources (their manifest
    records :func:`generator_key`, and the Verilog still has the recorded digest) are kept
    as they are: elaborating a large engine takes seconds, checking takes milliseconds.
    :attr:`RTLBundle.reused` tells which happened. An up-to-date engine whose wrapper is not
    (:mod:`secateur.hdl.axi` changed) keeps its Verilog; the wrapper is written again.
    """
    bundle = RTLBundle(Path(out_dir) / engine.name, engine.top)
    key = generator_key(engine)
    wrapper, axi_section = _axi_wrapper(engine, key)
    if reuse and _up_to_date(bundle, key, engine):
        recorded = json.loads(bundle.manifest.read_text())
        if recorded.get("axi") == axi_section and (wrapper is None or (
                bundle.axi_verilog.exists() and bundle.axi_filelist.exists())):
            bundle.reused = True
            return bundle
        bundle.manifest.unlink()
        _write_axi(bundle, wrapper)
        write_text(bundle.manifest, json.dumps(dict(recorded, axi=axi_section), indent=2) + "\n")
        return bundle
    component = engine.component()
    verilog = verilog_text(engine, component)
    bundle.directory.mkdir(parents=True, exist_ok=True)
    # The manifest (with the generator key) goes last, so an interrupted run is regenerated.
    bundle.manifest.unlink(missing_ok=True)
    write_text(bundle.verilog, verilog)
    write_text(bundle.waivers, resources.files("secateur.sim").joinpath(WAIVER_FILE).read_text())
    write_text(bundle.filelist, f"{bundle.waivers.name}\n{bundle.verilog.name}\n")
    _write_axi(bundle, wrapper)
    write_text(bundle.manifest, json.dumps(dict(manifest(engine, verilog, component),
                                               axi=axi_section, generator_key=key),
                                          indent=2) + "\n")
    return bundle
