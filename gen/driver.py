"""The C driver of an engine's AXI wrapper: ``<top>_driver.h`` and ``<top>_driver.c``, written
into every export bundle beside ``<top>.h``.

The driver reaches ``<top>_axi`` (:mod:`secateur.hdl.axi`) through its AXI4-Lite window only,
in CPU mode: a layer's load beats go through ``LOAD_ADDR``/``LOAD_DATA``, act beats through
``ACT_DATA``, result beats come back through ``RES_DATA``. It takes a layer as the arrays a user
has (int8 ``w``, the engine's structure keys, ``mult``, ``shift``, ``relu``, ``bias``).

What it knows of the formats is what :mod:`secateur.gen.formats` writes into the header: the
generated C calls the header's placement functions (``<top>_<placement>_<field>``, ``_lsb``,
``_value``), its word ranges and config values rendered by the same :class:`~secateur.gen.
formats.Expr` trees, its region address encoders, lane maps and LFSR, and the wrapper's
register map (``<TOP>_AXI_*``, from the manifest's ``axi`` section). The only engine
knowledge here is the list of elements each placement's ``element`` rule names (as
:mod:`secateur.verif.bundle_host` has it), written once in C: ``gen/driver/rules.c``.

Layout: ``gen/driver/driver.h.in`` and ``driver.c.in`` are the static parts, with ``@name@``
fields filled here; ``rules.c`` holds one section per element rule, helper and structure check
(``/*@ rule <name> */``...), of which each engine gets those its format uses.
"""

from __future__ import annotations

import math
import re
from importlib import resources

from .. import __version__
from ..hdl.engines.base import Engine
from .formats import Format, Placement, engine_format

__all__ = ["RULES", "driver_header_name", "driver_source_name", "driver_texts",
           "scratch_words", "layer_fields"]

#: Each element rule's variables, in the order its C section passes them (``e[i]``).
RULES = {
    "row": ("m", "mult", "bias"),
    "weight": ("m", "n", "w"),
    "nonzero_weight": ("m", "n", "w"),
    "group": ("r", "c", "nonzero"),
    "stored_weight": ("m", "n", "w", "t"),
    "row_seed": ("m", "seed"),
    "kept": ("m", "j", "n", "w"),
    "block": ("bi", "bj", "offset"),
    "macro": ("q",),
    "tile": ("rt", "ct", "seed", "k"),
    "kept_cell": ("rt", "ct", "r", "col", "bit"),
    "group_column": ("rt", "ct", "g", "col", "live"),
}

#: Helper sections of rules.c each engine needs (besides its rules).
_HELPERS = {"dense": (), "ternary": ("weight", "ternary_groups"), "lfsr": ("weight",),
            "permdiag": ("weight",), "cim": ("weight", "cim_mask", "cim_cells")}

_COMMON_FIELDS = (
    ("uint32_t M;", "output rows, rows of w"),
    ("uint32_t N;", "input columns, columns of w"),
)


def driver_header_name(engine: Engine) -> str:
    return f"{engine.top}_driver.h"


def driver_source_name(engine: Engine) -> str:
    return f"{engine.top}_driver.c"


def layer_fields(engine: Engine) -> list[tuple[str, str]]:
    """``(C declaration, doc)`` of the structure members of ``struct <top>_layer`` before the
    result path's: what the engine's weights npz holds besides mult, shift, relu, bias."""
    weights = {"ternary": "M x N ternary weights in {-1, 0, +1}, row-major",
               "lfsr": "M x N weights, row-major, non-zero only at each row's k kept columns",
               "permdiag": "M x N permuted-diagonal weights, row-major",
               "cim": "M x N weights, row-major"}.get(engine.name, "M x N weights, row-major")
    fields = [*_COMMON_FIELDS, ("const int8_t *w;", weights)]
    if engine.name == "permdiag":
        fields.append(("uint32_t p;", f"block size, in [{engine.min_p}, {engine.max_p}], "
                                      "dividing M and N"))
    elif engine.name == "lfsr":
        fields += [("uint32_t k;", "kept columns per row, in [1, N]"),
                   ("const uint32_t *seeds;", "M LFSR seeds, one per row, in [1, N]")]
    elif engine.name == "cim" and engine.row_mask == "lfsr":
        fields += [("const uint32_t *seeds;", "RT x CT tile seeds (RT = row_tiles, CT = "
                    "col_tiles), row-major, each in [1, macro_rows]"),
                   ("uint32_t k;", "kept rows of every tile, in [1, macro_rows], when ks is "
                                   "NULL"),
                   ("const uint32_t *ks;", "RT x CT kept rows per tile, or NULL")]
    return fields


def _sections() -> dict[tuple[str, str], str]:
    """The sections of rules.c: (kind, name) -> text."""
    text = resources.files(__package__).joinpath("driver/rules.c").read_text()
    parts = re.split(r"^/\*@ (\w+) (\w+) \*/\n", text, flags=re.MULTILINE)
    return {(kind, name): body.rstrip() + "\n"
            for kind, name, body in zip(parts[1::3], parts[2::3], parts[3::3])}


def _region_fields(engine: Engine, region: str) -> list[dict]:
    return engine.load_map.describe()["regions"][region]["fields"]


def _region_size(engine: Engine, region: str) -> int:
    return math.prod(field["values"] for field in _region_fields(engine, region))


def _regions(fmt: Format) -> list[str]:
    """The regions the format places words in, in load-map order."""
    placed = {placement.region for placement in fmt.placements}
    return [region for region in fmt.engine.load_map.describe()["regions"] if region in placed]


def scratch_words(engine: Engine, fmt: Format | None = None) -> tuple[int, str]:
    """The scratch words that load any layer in one pass per region (the largest region's
    words and their written bits), and that region."""
    fmt = fmt or engine_format(engine)
    region = max(_regions(fmt), key=lambda name: _region_size(engine, name))
    size = _region_size(engine, region)
    return size + math.ceil(size / 32), region


def _layer_locals(fmt: Format, source: str = "l") -> list[str]:
    names = ", ".join(f"{name} = (int64_t){source}->{name}" for name in fmt.layer)
    return [f"    const int64_t {names};"]


def _voids(names) -> str:
    return " ".join(f"(void){name};" for name in names)


def _index(top: str, region: str, fields: list[dict], names: list[str]) -> str:
    """The mixed-radix index of field values ``names`` in the region's words."""
    index = names[0]
    for field, name in zip(fields[1:], names[1:]):
        index = f"({index}) * (int64_t){top.upper()}_{region.upper()}_{field['name'].upper()}" \
                f"_COUNT + {name}"
    return index


def _placement_c(fmt: Format, placement: Placement) -> list[str]:
    engine, top = fmt.engine, fmt.engine.top
    if placement.element not in RULES:
        raise ValueError(f"the driver has no element rule {placement.element} (placement "
                         f"{placement.name})")
    order = RULES[placement.element]
    fields = _region_fields(engine, placement.region)
    if [field["name"] for field in fields] != list(placement.fields):
        raise ValueError(f"placement {placement.name} does not set the fields of its region")
    names = [f"f_{field['name']}" for field in fields]
    prefix = f"{top.upper()}_{placement.region.upper()}"
    lines = [f"static int {top}_place_{placement.name}(struct {top}_loader *ld, const int64_t *e)",
             "{", f"    const struct {top}_layer *l = ld->layer;", *_layer_locals(fmt)]
    lines += [f"    const int64_t {var} = e[{order.index(var)}];" for var in placement.variables]
    lines += [f"    const int64_t {name} = {expr.c(top)};"
              for name, expr in zip(names, placement.fields.values())]
    lines += [f"    const int64_t lsb = {placement.lsb.c(top)};",
              f"    const int64_t value = {placement.value.c(top)};"]
    bounds = " || ".join(f"{name} < 0 || {name} >= (int64_t){prefix}_{field['name'].upper()}_COUNT"
                         for name, field in zip(names, fields))
    lines += [f"    if ({bounds})", f"        return {top.upper()}_DRIVER_ERR_CAPACITY;",
              f"    return {top}_or(ld, {_index(top, placement.region, fields, names)}, "
              f"((uint64_t)value & UINT64_C({(1 << placement.bits) - 1})) << lsb);", "}", ""]
    return lines


def _region_c(fmt: Format, region: str) -> list[str]:
    """``<top>_fill_<region>``: every placement of the region into the loader's window (the
    word ranges marked, each element's bits ORed in), and ``<top>_region_<region>``: the
    windows over the region, each filled and its written words sent."""
    engine, top = fmt.engine, fmt.engine.top
    TOP = top.upper()
    fields = _region_fields(engine, region)
    size = _region_size(engine, region)
    names = [f"f_{field['name']}" for field in fields]
    lines = [f"static int {top}_fill_{region}(struct {top}_loader *ld)", "{",
             f"    const struct {top}_layer *l = ld->layer;", *_layer_locals(fmt),
             f"    {_voids(fmt.layer)}"]
    for placement in (p for p in fmt.placements if p.region == region):
        condition = {"always": None, "requant": "l->requant", "bias": "l->bias != NULL"}[
            placement.when]
        indent = "    " if condition is None else "        "
        lines.append(f"    /* {placement.name}: {placement.element} */")
        if condition:
            lines.append(f"    if ({condition}) {{")
        if placement.words is not None:
            counts = [f"n_{field['name']}" for field in fields]
            lines.append(f"{indent}{{")
            lines.append(f"{indent}    int64_t {', '.join(names)};")
            lines += [f"{indent}    const int64_t {count} = "
                      f"{placement.words[field['name']].c(top)};"
                      for count, field in zip(counts, fields)]
            bounds = " || ".join(f"{count} > (int64_t){TOP}_{region.upper()}_"
                                 f"{field['name'].upper()}_COUNT"
                                 for count, field in zip(counts, fields))
            lines += [f"{indent}    if ({bounds})",
                      f"{indent}        return {TOP}_DRIVER_ERR_CAPACITY;"]
            loops = indent + "    "
            for name, count in zip(names, counts):
                lines.append(f"{loops}for ({name} = 0; {name} < {count}; {name}++)")
                loops += "    "
            lines.append(f"{loops}{top}_mark(ld, {_index(top, region, fields, names)});")
            lines.append(f"{indent}}}")
        lines.append(f"{indent}{TOP}_DRV_TRY({top}_elements_{placement.element}(ld, "
                     f"{top}_place_{placement.name}));")
        if condition:
            lines.append("    }")
    lines += [f"    return {TOP}_DRIVER_OK;", "}", ""]
    # Write the words: index -> field values (mixed radix, last field fastest).
    lines += [f"static int {top}_region_{region}(const struct {top}_bus *bus, "
              f"struct {top}_loader *ld)", "{", "    int64_t lo, index;",
              f"    for (lo = 0; lo < {size}; lo += ld->capacity) {{",
              f"        {top}_window(ld, lo, {size});",
              f"        {TOP}_DRV_TRY({top}_fill_{region}(ld));",
              "        for (index = ld->lo; index < ld->hi; index++) {",
              "            uint32_t rest = (uint32_t)index;",
              f"            uint32_t {', '.join(names)};",
              f"            if (!{top}_is_written(ld, index))", "                continue;"]
    for name, field in reversed(list(zip(names, fields))):
        count = f"{TOP}_{region.upper()}_{field['name'].upper()}_COUNT"
        lines += [f"            {name} = rest % {count};", f"            rest /= {count};"]
    lines += ["            (void)rest;",
              f"            {top}_beat(bus, (uint32_t){top}_{region}_addr({', '.join(names)}),",
              "                         ld->words[index - ld->lo]);", "        }", "    }",
              f"    return {TOP}_DRIVER_OK;", "}", ""]
    return lines


def _fill(template: str, values: dict) -> str:
    def replace(match):
        return values[match.group(1)]
    text = re.sub(r"@(\w+)@", replace, template)
    return text


def driver_texts(engine: Engine, manifest: dict) -> tuple[str, str]:
    """The texts of ``<top>_driver.h`` and ``<top>_driver.c``.

    Parameters
    ----------
    engine : Engine
    manifest : dict
        The engine's manifest; its ``axi`` section is the wrapper the driver drives (the
        header's ``<TOP>_AXI_*`` come from it).

    Raises
    ------
    ValueError
        If the engine has no AXI wrapper (the manifest's ``axi`` says why), its results are
        wider than 63 bits, or its format uses an element rule the driver lacks.
    """
    top = engine.top
    section = manifest.get("axi", {})
    if "registers" not in section:
        raise ValueError(f"the {engine.name} engine has no AXI wrapper, so no driver: "
                         f"{section.get('unavailable', 'the manifest has no axi section')}")
    if engine.res_width > 63:
        raise ValueError(f"the {engine.name} engine's results are {engine.res_width} bits; the "
                         f"driver reads at most 63")
    fmt = engine_format(engine)
    scratch, scratch_region = scratch_words(engine, fmt)
    sections = _sections()
    helpers = list(_HELPERS[engine.name])
    if "cim_mask" in helpers:
        helpers[helpers.index("cim_mask")] = f"cim_mask_{engine.row_mask}"
    rules = dict.fromkeys(p.element for p in fmt.placements)
    chosen = [text for (kind, name), text in sections.items()
              if (kind == "helper" and name in helpers) or (kind == "rule" and name in rules)]
    check = engine.name if engine.name != "cim" else f"cim_{engine.row_mask}"
    limits = "".join(f" || layer->{dim} > {top.upper()}_PARAM_{param.upper()}"
                     for dim, param in (("M", "max_rows"), ("N", "max_cols"))
                     if param in engine.params)
    config = []
    for entry in fmt.config:
        config.append(f"        {top}_beat(bus, (uint32_t){top}_config_addr({entry['index']}u), "
                      f"(uint32_t)({fmt.config_values[entry['register']].c(top)}));"
                      f"  /* {entry['register']} */")
    config = [line.replace("\n", " ") for line in config]
    fields = "\n".join(f"    {decl:<24}/* {doc} */" for decl, doc in layer_fields(engine))
    values = {
        "top": top, "TOP": top.upper(), "engine": engine.name, "version": __version__,
        "scratch_words": str(scratch), "scratch_region": scratch_region,
        "scratch_region_words": str(_region_size(engine, scratch_region)),
        "LAYER_FIELDS": fields,
        "layer_args": ", ".join(f"(int64_t)(l)->{name}" for name in fmt.layer),
        "RULES": "\n" + "\n".join(_fill(text, {"top": top, "TOP": top.upper()})
                                  for text in chosen),
        "PLACEMENTS": "\n" + "\n".join(line for p in fmt.placements
                                       for line in _placement_c(fmt, p)),
        "REGIONS": "\n" + "\n".join(line for region in _regions(fmt)
                                    for line in _region_c(fmt, region)),
        "CHECK_STRUCTURE": _fill(sections[("check", check)].rstrip("\n"),
                                 {"top": top, "TOP": top.upper()}),
        "SHAPE_LIMITS": limits,
        "CONFIG": "\n".join([f"        const int64_t {name} = (int64_t)layer->{name};"
                             for name in fmt.layer] + config
                            + [f"        {_voids(fmt.layer)}"]),
        "CHECK_REGIONS": "\n".join(f"    {top.upper()}_DRV_TRY({top}_fill_{region}(&ld));"
                                   for region in _regions(fmt)),
        "LOAD_REGIONS": "\n".join(f"    {top.upper()}_DRV_TRY({top}_region_{region}(bus, &ld));"
                                  for region in _regions(fmt)),
    }
    header = _fill(resources.files(__package__).joinpath("driver/driver.h.in").read_text(),
                   values)
    source = _fill(resources.files(__package__).joinpath("driver/driver.c.in").read_text(),
                   values)
    return header, source
