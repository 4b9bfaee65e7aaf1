"""``secateur export``: the integration bundle of every engine, checked by the tools that will
consume it: FuseSoC parses and runs the core, gcc compiles the header and a program that
compares its encoders with :class:`~secateur.hdl.loadmap.LoadMap`, Verilator lints the
filelist from elsewhere, and the SDC names ports the Verilog declares."""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from secateur import __version__
from secateur.gen.cli import main
from secateur.gen.export import ExportBundle, core_name, export_bundle
from secateur.gen.registry import engine_class, engine_names, make_engine
from secateur.hdl.result_path import control_word
from secateur.models.requant import RequantParams
from secateur.sim.toolchain import simulator_env, verilator_bin_dir

#: One CLI call exports every engine at a small size (a setting applies to the engines that
#: have that parameter).
ALL_SMALL = ["--pe", "2", "--set", "max_rows=8", "--set", "max_cols=16", "--set", "fan_in=4",
             "--set", "macro_rows=12", "--set", "macro_cols=24", "--set", "adcs=1",
             "--set", "rows=2", "--set", "adc_bits=2"]
#: Variants whose load maps have other regions, exported through the Python API.
VARIANTS = {"lfsr-csr": ("lfsr", dict(pe=3, index="csr", max_rows=11, max_cols=45,
                                      weight_depth=180, act_lanes=4)),
            "cim-lfsr": ("cim", dict(pe=2, macro_rows=12, macro_cols=24, adcs=1, rows=2,
                                     adc_bits=2, act_lanes=3, row_mask="lfsr"))}
CASES = engine_names() + list(VARIANTS)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict:
    """Case -> (engine, ExportBundle)."""
    out = tmp_path_factory.mktemp("export")
    assert main(["export", "--engine", "all", *ALL_SMALL, "--out", str(out / "all")]) == 0
    settings = dict(item.split("=") for item in ALL_SMALL[3::2])
    result = {}
    for name in engine_names():
        known = {param.name for param in engine_class(name).PARAMS}
        engine = make_engine(name, pe=2, **{key: value for key, value in settings.items()
                                            if key in known})
        result[name] = (engine, ExportBundle(out / "all" / name, engine.top))
    for case, (name, params) in VARIANTS.items():
        engine = make_engine(name, **params)
        result[case] = (engine, export_bundle(engine, out / case))
    return result


def _isolated_env(tmp_path) -> dict:
    """FuseSoC with its configuration, cache and data in ``tmp_path``, Verilator on PATH."""
    env = simulator_env()
    for variable in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME"):
        env[variable] = str(tmp_path / variable.lower())
    env.pop("FUSESOC_CONFIG", None)
    return env


def _fusesoc(tmp_path, *argv):
    return subprocess.run([sys.executable, "-m", "fusesoc.main", *argv], cwd=tmp_path,
                          env=_isolated_env(tmp_path), capture_output=True, text=True,
                          timeout=300)


def test_fixture_settings_reach_every_engine(bundles):
    # The fixture rebuilds each engine from ALL_SMALL; the manifest says what the CLI made.
    for case in engine_names():
        engine, bundle = bundles[case]
        assert json.loads(bundle.manifest.read_text())["params"] == engine.params, case


@pytest.mark.parametrize("case", CASES)
def test_bundle_has_every_file(bundles, case):
    engine, bundle = bundles[case]
    names = sorted(path.name for path in bundle.directory.iterdir())
    assert names == sorted(path.name for path in bundle.files())
    assert all(path.stat().st_size > 0 for path in bundle.files())
    readme = bundle.readme.read_text()
    assert all(path.name in readme for path in bundle.files())
    # Relocatable: every path the filelist and the core name is a bare name in the bundle.
    assert bundle.filelist.read_text().split() == [bundle.waivers.name, bundle.verilog.name]
    core = bundle.core.read_text()
    listed = re.findall(r'^\s*- "([^"]+)"', core, flags=re.MULTILINE)
    # The C driver, in the sw fileset, whenever the engine has its AXI wrapper.
    has_axi = "registers" in json.loads(bundle.manifest.read_text())["axi"]
    assert bundle.driver_source.exists() == bundle.driver_header.exists() == has_axi
    driver = [bundle.driver_header.name, bundle.driver_source.name] if has_axi else []
    assert sorted(listed) == sorted([bundle.verilog.name, bundle.waivers.name, bundle.sdc.name,
                                     bundle.header.name, *driver])
    assert all((bundle.directory / name).is_file() for name in listed)
    assert f'"{core_name(engine)}"' in core and core_name(engine).endswith(__version__)


def test_fusesoc_rejects_an_invalid_core(bundles, tmp_path):
    # The negative control of the validation below: a misspelt key fails FuseSoC's schema.
    _, bundle = bundles["ternary"]
    broken = tmp_path / "broken"
    shutil.copytree(bundle.directory, broken)
    core = broken / bundle.core.name
    core.write_text(core.read_text().replace("file_type: vlt", "filetype: vlt"))
    result = _fusesoc(tmp_path, "--cores-root", str(broken), "core-info",
                      "secateur:engines:ternary_engine")
    assert result.returncode != 0
    assert "Error validating" in result.stdout + result.stderr


@pytest.mark.parametrize("case", CASES)
def test_fusesoc_validates_and_lints_the_core(bundles, case, tmp_path):
    engine, bundle = bundles[case]
    # core-info parses the core against FuseSoC's CAPI2 JSON schema (a core that fails is
    # ignored by the library scan, so the lookup fails).
    result = _fusesoc(tmp_path, "--cores-root", str(bundle.directory), "core-info",
                      core_name(engine, versioned=False))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Name:        {core_name(engine)}" in result.stdout
    assert "lint" in result.stdout and "default" in result.stdout
    # The lint target through Edalize's lint flow: Verilator -Wall with the waivers.
    result = _fusesoc(tmp_path, "--cores-root", str(bundle.directory), "run", "--build-root",
                      str(tmp_path / "build"), "--target", "lint", core_name(engine))
    log = result.stdout + result.stderr
    assert result.returncode == 0 and "%Warning" not in log, log[-3000:]
    vc = next((tmp_path / "build").rglob("*.vc")).read_text().split()
    assert "--lint-only" in vc and "-Wall" in vc and vc[vc.index("--top-module") + 1] == engine.top


@pytest.mark.parametrize("case", CASES)
def test_filelist_lints_clean_from_another_directory(bundles, case, tmp_path):
    _, bundle = bundles[case]
    moved = tmp_path / "elsewhere" / "bundle"
    shutil.copytree(bundle.directory, moved)
    workdir = tmp_path / "work"
    workdir.mkdir()
    filelist = os.path.relpath(moved / bundle.filelist.name, workdir)
    result = subprocess.run([str(verilator_bin_dir() / "verilator"), "--lint-only", "-Wall",
                             "-F", filelist], cwd=workdir, capture_output=True, text=True,
                            env=simulator_env())
    assert result.returncode == 0 and "%Warning" not in result.stderr, result.stderr[-3000:]


def _top_ports(verilog: str, top: str) -> dict:
    """Name -> width of the top module's ports, from its declarations."""
    start = verilog.index(f"module {top}(")
    body = verilog[start:verilog.index("endmodule", start)]
    return {name: (int(msb) + 1 if msb else 1) for _, msb, name in
            re.findall(r"^\s*(input|output)\s+(?:\[(\d+):0\]\s*)?(\w+);", body, re.MULTILINE)}


@pytest.mark.parametrize("case", CASES)
def test_sdc_names_ports_that_exist(bundles, case):
    engine, bundle = bundles[case]
    ports = _top_ports(bundle.verilog.read_text(), engine.top)
    manifest_ports = {port["name"]: port["width"]
                      for port in json.loads(bundle.manifest.read_text())["ports"]}
    assert ports == manifest_ports
    sdc = bundle.sdc.read_text()
    named = []
    for group in re.findall(r"\[get_ports (\{[^}]*\}|\w+)\]", sdc):
        named += group.strip("{}").split()
    assert named, sdc
    for name in named:
        bare = name.removesuffix("[*]")
        assert bare in ports, f"{name} is not a port of {engine.top}"
        assert (name != bare) == (ports[bare] > 1), f"{name}: width {ports[bare]}"
    # Every port but the clock has an I/O delay; the clock is clk.
    assert sorted(name.removesuffix("[*]") for name in named) == sorted(ports)
    assert re.search(r"create_clock -name clk -period \$clk_period \[get_ports clk\]", sdc)
    assert re.search(r"^set clk_period 10\.0$", sdc, re.MULTILINE)


def _compiler():
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        pytest.skip("no C compiler")
    return compiler


def _field_values(rng, fields) -> list[dict]:
    """All-zero, all-maximum and random in-range field values."""
    cases = [{f["name"]: 0 for f in fields}, {f["name"]: f["values"] - 1 for f in fields}]
    cases += [{f["name"]: int(rng.integers(0, f["values"])) for f in fields} for _ in range(4)]
    return cases


FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]


def _header_checks(engine, manifest: dict, rng) -> list[tuple[str, int]]:
    """(C expression, value it must have): the header's encoders against LoadMap and the
    requantizer control word, and its constants against the manifest."""
    load_map, prefix, top = engine.load_map, engine.top.upper(), engine.top
    checks = []
    for region, described in manifest["load_map"]["regions"].items():
        for fields in _field_values(rng, described["fields"]):
            want = load_map.address(region, **fields)
            arguments = ", ".join(f"{fields[f['name']]}u" for f in described["fields"])
            checks.append((f"{prefix}_{region.upper()}_ADDR({arguments})", want))
            checks.append((f"{top}_{region}_addr({arguments})", want))
            if load_map.addr_width + 32 <= 64:
                checks.append((f"{top}_load_payload({top}_{region}_addr({arguments}), "
                               f"0xDEADBEEFu)", load_map.payload(want, 0xDEADBEEF)))
    for name, value in manifest["derived"].items():
        checks.append((f"{prefix}_{name.upper()}", int(value)))
    for name, value in engine.params.items():
        if isinstance(value, int):
            checks.append((f"{prefix}_PARAM_{name.upper()}", value))
    for port in manifest["ports"]:
        checks.append((f"{prefix}_PORT_{port['name'].upper()}_WIDTH", port["width"]))
    checks += [(f"{prefix}_LATENCY", engine.latency),
               (f"{prefix}_LOAD_ADDR_WIDTH", load_map.addr_width),
               (f"{prefix}_CONFIG_ADDR({prefix}_CONFIG_REG_REQUANT)",
                load_map.address("config", register=_module_constant(engine, "CONFIG_REQUANT"))),
               (f"{prefix}_REQUANT_CONTROL(0, 0, 0, 0)", control_word(None)),
               (f"{prefix}_REQUANT_CONTROL(0, 0, 1, 0)", control_word(None, bias=[0])),
               (f"{prefix}_MULT_DATA(-5)", -5 & 0xFFFF),
               (f"{prefix}_MULT_DATA(32767)", 32767),
               (f"{prefix}_BIAS_DATA(-1)", 0xFFFFFFFF),
               (f"{prefix}_BIAS_DATA(-2147483647 - 1)", 1 << 31),
               (f"{prefix}_BIAS_DATA(2147483647)", (1 << 31) - 1)]
    for shift, relu, bias in ((0, False, None), (1, True, [1]), (47, False, None),
                              (int(rng.integers(0, 48)), True, [2])):
        checks.append((f"{prefix}_REQUANT_CONTROL(1, {int(relu)}, {int(bias is not None)}, "
                       f"{shift})", control_word(RequantParams(1, shift, relu), bias)))
    return checks


def _run_checks(compiler, header, checks, tmp_path) -> subprocess.CompletedProcess:
    """Compile and run a C program that evaluates every check with ``header`` included."""
    program = ["#include <stdio.h>", f'#include "{header.name}"', "",
               "static int failures;",
               "static void check(const char *what, unsigned long long got, "
               "unsigned long long want)", "{",
               "    if (got != want) {",
               '        printf("%s = %llu, expected %llu\\n", what, got, want);',
               "        failures++;", "    }", "}", "", "int main(void)", "{"]
    for expression, want in checks:
        program.append(f"    check({json.dumps(expression)}, (unsigned long long)({expression}), "
                       f"{want}ull);")
    program += ["    return failures != 0;", "}", ""]
    source = tmp_path / "check_header.c"
    source.write_text("\n".join(program))
    binary = tmp_path / "check_header"
    result = subprocess.run([compiler, *FLAGS, "-I", str(header.parent), str(source), "-o",
                             str(binary)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return subprocess.run([str(binary)], capture_output=True, text=True)


@pytest.mark.parametrize("case", CASES)
def test_header_compiles_and_matches_the_load_map(bundles, case, tmp_path, seed):
    engine, bundle = bundles[case]
    compiler = _compiler()
    result = subprocess.run([compiler, *FLAGS, "-fsyntax-only", "-x", "c", str(bundle.header)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    if shutil.which("g++"):  # usable from C++ as well
        result = subprocess.run(["g++", "-std=c++11", "-Wall", "-Wextra", "-Werror",
                                 "-fsyntax-only", "-x", "c++", str(bundle.header)],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    manifest = json.loads(bundle.manifest.read_text())
    checks = _header_checks(engine, manifest, np.random.default_rng(seed))
    result = _run_checks(compiler, bundle.header, checks, tmp_path)
    assert result.returncode == 0, f"seed {seed}:\n{result.stdout}"


def test_header_of_wide_addresses(tmp_path, seed):
    # 2^32 tiles: 36-bit load addresses and 35-bit sizes, which the header holds in 64 bits.
    # Built from the manifest without elaborating (the Verilog would be far too large).
    from secateur.gen.export import header_text
    from secateur.gen.rtl import manifest
    engine = make_engine("dense", pe=1, fan_in=1, max_rows=65536, max_cols=65536)
    facts = manifest(engine, "", engine.component())
    assert facts["load_map"]["addr_width"] > 32 and facts["derived"]["weight_bits"] >= 1 << 32
    header = tmp_path / f"{engine.top}.h"
    header.write_text(header_text(engine, facts))
    text = header.read_text()
    assert f"typedef uint64_t {engine.top}_addr_t;" in text and "_load_payload" not in text
    result = _run_checks(_compiler(), header,
                         _header_checks(engine, facts, np.random.default_rng(seed)), tmp_path)
    assert result.returncode == 0, f"seed {seed}:\n{result.stdout}"


def _module_constant(engine, name):
    return vars(sys.modules[type(engine).__module__])[name]


def run_cli(capsys, *argv):
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


SMALL = ["--pe", "2", "--set", "fan_in=4", "--set", "max_rows=8", "--set", "max_cols=16"]


def test_export_clock_option(capsys, tmp_path):
    status, out, err = run_cli(capsys, "export", "--engine", "ternary", *SMALL, "--clock-mhz",
                               "150", "--out", str(tmp_path))
    assert status == 0, err
    assert out.startswith(f"ternary: {tmp_path / 'ternary'} (")
    sdc = (tmp_path / "ternary" / "ternary_engine.sdc").read_text()
    assert re.search(r"^set clk_period 6\.667$", sdc, re.MULTILINE)


@pytest.mark.parametrize("argv, message", [
    (["--engine", "nope"], "unknown engine 'nope'; engines are ternary"),
    (["--engine", "all", "--set", "colour=red"], "no engine has a parameter colour"),
    (["--engine", "ternary", "--pe", "0"], "ternary engine parameter pe must be an integer"),
    (["--engine", "ternary", *SMALL, "--clock-mhz", "0"], "--clock-mhz must be in [1, 5000] MHz, not 0"),
    (["--engine", "ternary", *SMALL, "--clock-mhz", "fast"],
     "--clock-mhz must be a number, not 'fast'"),
])
def test_export_usage_errors(capsys, tmp_path, argv, message):
    status, out, err = run_cli(capsys, "export", *argv, "--out", str(tmp_path / "out"))
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("secateur: error: ") and message in err
    assert not (tmp_path / "out").exists()


def test_export_unwritable_out_is_a_usage_error(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    for out in (blocker, blocker / "below"):
        status, _, err = run_cli(capsys, "export", "--engine", "ternary", *SMALL,
                                 "--out", str(out))
        assert status == 2 and err.count("\n") == 1
        assert err.startswith(f"secateur: error: cannot write --out {out}: ")
