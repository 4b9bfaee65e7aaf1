"""Launch a cocotb testbench on generated Verilog from pytest.

:func:`run_testbench` writes the DUT's Verilog into a build directory keyed by its text,
builds it once with cocotb's runner (Verilator by default), runs the testbench module with the
configuration in the environment variable ``SECATEUR_TB_CONFIG`` (JSON), and fails with the
seed in the message if any cocotb test failed, so that every failure can be replayed with
``SECATEUR_TB_SEED=<seed>``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from xml.etree import ElementTree

from ..sim.toolchain import (COVERAGE_ARGS, coverage_dir, cxx_optimization, require_icarus,
                             save_coverage, simulator_env)

__all__ = ["CONFIG_ENV", "run_testbench", "tb_config"]

CONFIG_ENV = "SECATEUR_TB_CONFIG"
#: Amaranth's Verilog has no `timescale; the testbenches' 10 ns clock needs 1 ns or finer.
TIMESCALE = ("1ns", "1ps")


def tb_config() -> dict:
    """Inside a testbench: the configuration pytest passed."""
    return json.loads(os.environ[CONFIG_ENV])


def _waiver_file() -> Path:
    return Path(__file__).resolve().parent.parent / "sim" / "secateur.vlt"


def run_testbench(*, verilog: str, toplevel: str, test_module: str, config: dict,
                  seed: int, simulator: str = "verilator", waves: bool = False) -> list[dict]:
    """Build ``verilog`` (cached) and run the cocotb ``test_module`` against ``toplevel``.

    Returns, per cocotb test, its ``name``, simulated ``sim_time_ns`` and ``wall_seconds``.

    Raises
    ------
    AssertionError
        If no test ran or any failed; the message names the seed and the log.
    """
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import VerilatorControlFile, get_runner

    # Here, not at the top: a testbench imports this module for tb_config, inside the
    # simulator, where torch (which sim.runner pulls in) takes seconds to import.
    from ..sim.runner import cache_dir

    if simulator == "icarus":
        require_icarus()
    # A cocotb build links the simulator to this environment's cocotb libraries by absolute
    # path: a build made from another checkout or venv must not be reused.
    import cocotb
    coverage = simulator == "verilator" and coverage_dir() is not None
    key = [verilog, simulator, TIMESCALE, sys.prefix, cocotb.__version__, cxx_optimization()]
    if coverage:  # a build with coverage counters is another build
        key.append(list(COVERAGE_ARGS))
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]
    build_dir = cache_dir() / "cocotb" / f"{toplevel}-{digest}"
    build_dir.mkdir(parents=True, exist_ok=True)
    source = build_dir / f"{toplevel}.v"
    if not source.exists() or source.read_text() != verilog:
        source.write_text(verilog)

    env = simulator_env()
    saved = dict(os.environ)
    os.environ.update(env)  # the runner spawns make and the simulator from os.environ
    try:
        runner = get_runner(simulator)
        sources = [source]
        build_args = []
        if simulator == "verilator":
            sources = [VerilatorControlFile(_waiver_file()), source]
            build_args = ["-Wno-fatal", "-j", str(os.cpu_count() or 1)]
            if coverage:
                build_args += COVERAGE_ARGS
        runner.build(sources=sources, hdl_toplevel=toplevel, build_dir=build_dir,
                     build_args=build_args, waves=waves, timescale=TIMESCALE,
                     log_file=build_dir / "build.log")
        test_dir = build_dir / f"run-{os.getpid()}"
        test_dir.mkdir(exist_ok=True)
        (test_dir / "coverage.dat").unlink(missing_ok=True)  # left by this process's last run
        try:
            results = runner.test(
                test_module=test_module, hdl_toplevel=toplevel, build_dir=build_dir,
                results_xml=str(test_dir / "results.xml"),
                test_dir=test_dir, seed=seed, waves=waves, timescale=TIMESCALE,
                extra_env={CONFIG_ENV: json.dumps(config), "SECATEUR_TB_SEED": str(seed),
                           "COCOTB_LOG_LEVEL": os.environ.get("COCOTB_LOG_LEVEL", "WARNING")},
                log_file=test_dir / "sim.log")
        except SystemExit:  # the runner exits when a test fails; report it with the seed below
            results = test_dir / "results.xml"
        if coverage:  # cocotb's Verilator main writes coverage.dat into the test directory
            save_coverage(test_dir / "coverage.dat", source, toplevel,
                          {key: config[key] for key in ("engine", "params") if key in config})
    finally:
        os.environ.clear()
        os.environ.update(saved)
    tests, failed = get_results(Path(results)) if Path(results).exists() else (0, 0)
    if tests == 0 or failed:
        log = (test_dir / "sim.log").read_text() if (test_dir / "sim.log").exists() else ""
        failures = [line for line in log.splitlines() if "Error" in line or "assert" in line]
        log = "\n".join(failures[-20:]) or log[-4000:]
        raise AssertionError(f"{test_module} on {toplevel}: {failed} of {tests} cocotb tests "
                             f"failed (seed {seed}, config {json.dumps(config)}); log tail:\n{log}")
    cases = []
    for case in ElementTree.parse(results).iter("testcase"):
        properties = {prop.get("name"): prop.get("value") for prop in case.iter("property")}
        cases.append({"name": case.get("name"),
                      "sim_time_ns": float(properties.get("sim_time_duration", 0)),
                      "wall_seconds": float(case.get("time", 0))})
    return cases
