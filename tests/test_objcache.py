"""sim/objcache.py: Verilator's runtime objects are compiled once and shared, and nothing that
depends on a design is."""

import os
import shutil
import subprocess
import sys

import pytest

from secateur.sim import objcache

pytestmark = pytest.mark.skipif(shutil.which("c++") is None, reason="needs a C++ compiler")


def _compile(build, cache, source, env_path=None):
    env = dict(os.environ, SECATEUR_OBJCACHE_DIR=str(cache))
    if env_path is not None:
        env["PATH"] = env_path
    return subprocess.run([sys.executable, "-S", objcache.__file__, "c++", "-MMD", "-I.", "-c",
                           "-o", "runtime.o", str(source)], cwd=build, env=env,
                          capture_output=True, text=True)


@pytest.fixture
def tree(tmp_path):
    include = tmp_path / "verilator" / "include"
    include.mkdir(parents=True)
    (include / "runtime.h").write_text("int twice(int x);\n")
    (include / "runtime.cpp").write_text('#include "runtime.h"\nint twice(int x) { return 2 * x; }\n')
    cache, build = tmp_path / "cache", tmp_path / "build"
    cache.mkdir(), build.mkdir()
    return include, cache, build


def test_a_runtime_object_is_compiled_once_then_reused(tree):
    include, cache, build = tree
    assert _compile(build, cache, include / "runtime.cpp").returncode == 0
    compiled = (build / "runtime.o").read_bytes()
    assert len(list(cache.iterdir())) == 1
    (build / "runtime.o").unlink()
    (build / "runtime.d").unlink()
    # No compiler on PATH: only the cache can produce the object.
    result = _compile(build, cache, include / "runtime.cpp", env_path="/nonexistent")
    assert result.returncode == 0, result.stderr
    assert (build / "runtime.o").read_bytes() == compiled
    assert (build / "runtime.d").read_text().startswith("runtime.o:")


def test_another_command_line_or_source_is_another_entry(tree):
    include, cache, build = tree
    _compile(build, cache, include / "runtime.cpp")
    (include / "runtime.cpp").write_text('#include "runtime.h"\nint twice(int x) { return x + x; }\n')
    _compile(build, cache, include / "runtime.cpp")
    assert len(list(cache.iterdir())) == 2


def test_an_object_that_depends_on_the_build_directory_is_not_stored(tree):
    include, cache, build = tree
    (build / "design.h").write_text("#define SCALE 3\n")
    (include / "runtime.cpp").write_text('#include "design.h"\nint scale() { return SCALE; }\n')
    assert _compile(build, cache, include / "runtime.cpp").returncode == 0
    assert list(cache.iterdir()) == []


def test_other_commands_run_unchanged(tmp_path):
    result = subprocess.run([sys.executable, "-S", objcache.__file__, "sh", "-c", "echo ran"],
                            env=dict(os.environ, SECATEUR_OBJCACHE_DIR=str(tmp_path)),
                            capture_output=True, text=True)
    assert (result.returncode, result.stdout) == (0, "ran\n") and list(tmp_path.iterdir()) == []
