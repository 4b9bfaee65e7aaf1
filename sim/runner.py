"""Batch simulation of an engine: the simulator behind ``secateur run`` and ``secateur net``.

The engine's Verilog and :file:`harness/stream_harness.v` are compiled once per (engine,
parameters, simulator, source version) into a cache directory; each run then only writes the
stimulus files and executes the compiled simulator, which streams at full speed with no Python
in the loop. Verilator compiles the harness natively (``--binary --timing``); Icarus runs the
same harness, so both simulators see identical stimulus.

The cache lives in ``$SECATEUR_CACHE_DIR`` (default ``~/.cache/secateur``). Builds are written
to a temporary staging directory and renamed into place, so concurrent runs cannot see half a
build. A build holds a lock on its staging directory while it lives; a staging directory whose
lock is free was left by a killed build, and the next build removes it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from ..gen.processes import heartbeat, run_tool
from ..hdl.engines.base import Engine, Layer
from ..hdl.loadmap import DATA_WIDTH
from .toolchain import (COVERAGE_ARGS, ToolchainError, cache_dir, coverage_dir,
                        cxx_optimization, require_icarus, save_coverage, simulator_env,
                        verilator_bin_dir)

__all__ = ["SIMULATORS", "SimulationError", "RunResult", "BatchSimulator", "cache_dir"]

SIMULATORS = ("verilator", "icarus")
HARNESS_TOP = "secateur_harness"


class SimulationError(RuntimeError):
    """The simulator failed to build or run; the message carries its log tail."""


_STAGING_LOCK = ".building"
_UNLOCKED_STAGING_SECONDS = 3600


def _lock_staging(staging: Path):
    """Hold the lock that marks ``staging`` as in use; released when the process ends.

    The lock file is locked under another name and then renamed into place, so that
    :func:`remove_stale_staging` never finds it unlocked: a lock file opened and not yet
    locked let a concurrent build remove the whole staging directory, which this build's
    first write then created again without its lock (seen as a ``FileNotFoundError`` on the
    lock at the end of a harness build, with the report's builds running in threads)."""
    pending = staging / (_STAGING_LOCK + ".new")
    lock = open(pending, "w")
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.rename(pending, staging / _STAGING_LOCK)
    return lock


def remove_stale_staging(directory: Path) -> list[Path]:
    """Remove the staging directories in ``directory`` that no live build holds; return them.

    A staging directory is named ``<build>.<random>`` and holds :data:`_STAGING_LOCK`, locked
    by the build that made it; a killed build releases the lock with its process. One without
    a lock (made by a version before the lock, or in the instants around its creation and
    rename) is removed only when it is older than :data:`_UNLOCKED_STAGING_SECONDS`."""
    removed = []
    for staging in directory.glob("*.*"):
        lock_path = staging / _STAGING_LOCK
        if not staging.is_dir():
            continue
        if not lock_path.is_file():
            try:
                if time.time() - staging.stat().st_mtime > _UNLOCKED_STAGING_SECONDS:
                    shutil.rmtree(staging, ignore_errors=True)
                    removed.append(staging)
            except OSError:
                pass
            continue
        try:
            with open(lock_path) as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(staging, ignore_errors=True)
                removed.append(staging)
        except OSError:  # held by a running build, or already gone
            continue
    return removed


def _source_digest() -> str:
    """Digest of everything a build depends on besides the parameters: the generator's
    sources (:func:`secateur.gen.rtl.source_digest`) and the harness, so that editing any of
    them invalidates the cache."""
    from ..gen.rtl import source_digest
    digest = hashlib.sha256(source_digest().encode())
    digest.update(resources.files(__package__).joinpath("harness/stream_harness.v").read_bytes())
    return digest.hexdigest()


@dataclass
class RunResult:
    """Outputs and measurements of one batch."""
    y: np.ndarray
    cycles: int
    load_cycles: int
    wall_seconds: float
    build_seconds: float
    counters: dict = field(default_factory=dict)

    def report(self, engine: Engine, layer: Layer, simulator: str) -> dict:
        """The report of ``secateur run``: cycles, work counters, utilization, parameters, and
        the energy of the counted actions (``energy_pj`` for the batch, ``None`` when an action
        has no sourced figure; :mod:`secateur.models.energy`)."""
        useful = self.counters["useful_ops"]
        energy = self.counters.get("energy_pj")
        return {
            "engine": engine.name,
            "simulator": simulator,
            "batch": int(self.y.shape[0]),
            "cycles": self.cycles,
            "load_cycles": self.load_cycles,
            **self.counters,
            "energy_pj": energy,
            "energy_pj_per_vector": None if energy is None else energy / self.y.shape[0],
            "utilization": useful / (self.cycles * engine.lanes),
            "params": engine.params,
            "layer": layer.report_parameters(),
            "sim_wall_seconds": round(self.wall_seconds, 4),
            "sim_cycles_per_second": round((self.cycles + self.load_cycles)
                                           / max(self.wall_seconds, 1e-9)),
        }


def _cxx_progress(obj: Path) -> str | None:
    """How far Verilator's build in ``obj`` is: "verilating" until it has written the C++
    model, then the model's files compiled of those written (or one unity file, for a small
    model); None before ``obj`` exists (Icarus builds have none)."""
    sources = {path.stem for path in obj.glob("*.cpp")}
    if not sources:
        return "verilating" if obj.exists() else None
    if any(stem.endswith("__ALL") for stem in sources):  # a small model: one unity file
        return "compiling the C++ model as one unit"
    compiled = sum(1 for path in obj.glob("*.o") if path.stem in sources)
    return f"C++ {compiled}/{len(sources)} files compiled"


class BatchSimulator:
    """Builds (once, cached) and runs one engine configuration on one simulator.

    Parameters
    ----------
    engine : Engine
        The validated engine generator.
    simulator : str
        ``"verilator"`` or ``"icarus"``.
    progress : callable, optional
        Called with a line of text as a build starts, every 20 s while it runs (elapsed time
        and, for Verilator, the C++ files compiled of those it wrote) and as it ends; the
        commands pass one that prints to stderr. None (the default): silent.

    Raises
    ------
    ValueError
        If ``simulator`` is not one of :data:`SIMULATORS`.
    ToolchainError
        If that simulator is not installed.
    """

    def __init__(self, engine: Engine, simulator: str = "verilator", progress=None):
        if simulator not in SIMULATORS:
            raise ValueError(f"simulator must be one of {', '.join(SIMULATORS)}, "
                             f"not {simulator!r}")
        if simulator == "icarus":
            require_icarus()
        else:
            verilator_bin_dir()
        self._engine = engine
        self._simulator = simulator
        self._progress = progress
        # With $SECATEUR_COVERAGE, Verilator builds count coverage (another build) and every
        # run saves it (sim/toolchain.save_coverage).
        self._coverage = simulator == "verilator" and coverage_dir() is not None
        key = json.dumps([engine.name, engine.params, simulator, _source_digest(),
                          cxx_optimization()] + ([list(COVERAGE_ARGS)] if self._coverage else []),
                         sort_keys=True)
        self._build_dir = (cache_dir() / "sim" /
                           f"{engine.name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}")
        self.build_seconds = 0.0

    @property
    def build_dir(self) -> Path:
        return self._build_dir

    @property
    def executable(self) -> Path:
        return self._build_dir / ("Vharness" if self._simulator == "verilator" else "harness.vvp")

    def build(self) -> Path:
        """Compile the harness and the engine, unless the cache already has them."""
        if self.executable.exists():
            return self.executable
        from ..gen.rtl import write_rtl
        start = time.perf_counter()
        self._build_dir.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(self._build_dir.parent)
        staging = Path(tempfile.mkdtemp(prefix=self._build_dir.name + ".",
                                        dir=self._build_dir.parent))
        lock = _lock_staging(staging)
        try:
            bundle = write_rtl(self._engine, staging / "rtl")
            harness = staging / "stream_harness.v"
            harness.write_bytes(resources.files(__package__)
                                .joinpath("harness/stream_harness.v").read_bytes())
            widths = self._widths()
            if self._simulator == "verilator":
                command = [
                    str(verilator_bin_dir() / "verilator"), "--binary", "--timing",
                    "-CFLAGS", "-std=c++20 -fcoroutines", "-Wno-fatal", "-Wno-lint", "-Wno-style",
                    *(COVERAGE_ARGS if self._coverage else ()),
                    "--top-module", HARNESS_TOP, f"+define+SECATEUR_TOP={self._engine.top}",
                    *[f"-G{name}={value}" for name, value in widths.items()],
                    "--Mdir", str(staging / "obj"), "-o", str(staging / "Vharness"),
                    "-j", str(os.cpu_count() or 1),
                    str(bundle.waivers), str(harness), str(bundle.verilog),
                ]
            else:
                command = [
                    "iverilog", "-g2012", "-s", HARNESS_TOP, "-o", str(staging / "harness.vvp"),
                    f"-DSECATEUR_TOP={self._engine.top}",
                    *[f"-P{HARNESS_TOP}.{name}={value}" for name, value in widths.items()],
                    str(harness), str(bundle.verilog),
                ]
            what = (f"building the {self._engine.name} harness ({self._simulator}, cached "
                    f"in {self._build_dir})")
            with heartbeat(self._progress, what, detail=lambda: _cxx_progress(staging / "obj")):
                self._check_call(command, staging / "build.log", "build")
            shutil.rmtree(staging / "obj", ignore_errors=True)
            (staging / _STAGING_LOCK).unlink()
            try:
                staging.rename(self._build_dir)
            except OSError:
                if not self.executable.exists():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            lock.close()
        self.build_seconds = time.perf_counter() - start
        return self.executable

    def run(self, layer: Layer, x: np.ndarray, max_cycles: int | None = None) -> RunResult:
        """Load ``layer``, stream the int8 batch ``x`` through, and return the results."""
        x = layer.check_inputs(x)
        executable = self.build()
        act_beats = layer.input_beats(x)
        n_res = x.shape[0] * layer.result_beats_per_vector
        if max_cycles is None:
            max_cycles = 1000 + 64 * (len(act_beats) + n_res) + layer.counters(x)["ideal_cycles"] * 4
            max_cycles += 4 * len(layer.load_beats())
        with tempfile.TemporaryDirectory(prefix="secateur-run.") as work:
            work = Path(work)
            load_beats = layer.load_beats()
            (work / "load.hex").write_text("".join(f"{addr:x} {value:x}\n"
                                                   for addr, value in load_beats))
            (work / "act.hex").write_text("".join(f"{beat:x}\n" for beat in act_beats))
            plusargs = [f"+load={work / 'load.hex'}", f"+nload={len(load_beats)}",
                        f"+act={work / 'act.hex'}", f"+nact={len(act_beats)}",
                        f"+res={work / 'res.hex'}", f"+nres={n_res}",
                        f"+stats={work / 'stats.json'}", f"+max_cycles={max_cycles}"]
            command = ([str(executable)] if self._simulator == "verilator"
                       else ["vvp", "-n", str(executable)]) + plusargs
            start = time.perf_counter()
            self._check_call(command, work / "run.log", "run", cwd=work)
            wall = time.perf_counter() - start
            if self._coverage:  # Verilator's main wrote coverage.dat into the working directory
                save_coverage(work / "coverage.dat", self._build_dir / "rtl" / self._engine.name
                              / f"{self._engine.top}.v", self._engine.top,
                              {"engine": self._engine.name, "params": self._engine.params})
            if not (work / "stats.json").exists():
                raise SimulationError(f"{self._simulator} finished without results; log:\n"
                                      + (work / "run.log").read_text()[-2000:])
            stats = json.loads((work / "stats.json").read_text())
            beats = [int(line, 16) for line in (work / "res.hex").read_text().split()]
        y = layer.decode_results(beats, x.shape[0])
        return RunResult(y=y, cycles=stats["cycles"], load_cycles=stats["load_cycles"],
                         wall_seconds=wall, build_seconds=self.build_seconds,
                         counters=layer.counters(x))

    def _widths(self) -> dict:
        engine = self._engine
        return {"LOAD_W": engine.load_map.addr_width + DATA_WIDTH,
                "ACT_W": 8 * engine.act_lanes,
                "RES_W": engine.res_width * engine.res_lanes}

    def _check_call(self, command, log_path: Path, what: str, cwd=None):
        with open(log_path, "w") as log:
            result = run_tool(command, stdout=log, stderr=log, cwd=cwd, env=simulator_env())
        if result.returncode != 0:
            raise SimulationError(f"{self._simulator} {what} failed (exit {result.returncode}); "
                                  f"last lines of {log_path.name}:\n"
                                  + log_path.read_text()[-3000:])
