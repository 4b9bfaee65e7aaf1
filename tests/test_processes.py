"""Children die with the command: tools and everything they start, and pool workers, are gone
soon after their parent is killed or interrupted."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import alive, wait_until

from secateur.gen.processes import run_tool

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

WAIT_SECONDS = 10


def _pids(path: Path, count: int) -> list[int]:
    assert wait_until(lambda: path.exists() and len(path.read_text().split()) >= count,
                      WAIT_SECONDS), \
        "the children never started"
    return [int(pid) for pid in path.read_text().split()]


def _parent(tmp_path: Path, body: str) -> subprocess.Popen:
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(body))
    return subprocess.Popen([sys.executable, str(script), str(tmp_path / "pids")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


# A tool that starts a grandchild, as Verilator starts make and make starts g++.
TOOL_PARENT = """
    import sys
    from secateur.gen.processes import run_tool
    run_tool(["sh", "-c", f"sleep 60 & echo $$ $! > {sys.argv[1]}.tmp; "
                          f"mv {sys.argv[1]}.tmp {sys.argv[1]}; wait"])
"""


def test_a_tool_runs_and_reports_its_status():
    result = run_tool(["sh", "-c", "echo out; echo err >&2; exit 3"], capture_output=True,
                      text=True)
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert run_tool(["sh", "-c", "kill -TERM $$"]).returncode == -signal.SIGTERM


def test_a_tool_past_its_timeout_is_killed_with_its_children(tmp_path):
    pids = tmp_path / "pids"
    with pytest.raises(subprocess.TimeoutExpired):
        run_tool(["sh", "-c", f"sleep 60 & echo $$ $! > {pids}; wait"], timeout=1)
    assert wait_until(lambda: not any(alive(pid) for pid in _pids(pids, 2)), WAIT_SECONDS)


def test_a_missing_tool_is_exit_127():
    result = run_tool(["secateur-no-such-tool"], capture_output=True, text=True)
    assert result.returncode == 127 and "cannot run secateur-no-such-tool" in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_a_tool_and_its_children_die_with_the_parent(tmp_path, sig):
    parent = _parent(tmp_path, TOOL_PARENT)
    try:
        children = _pids(tmp_path / "pids", 2)
        assert all(alive(pid) for pid in children)
        os.kill(parent.pid, sig)
        parent.wait(timeout=WAIT_SECONDS)
        assert wait_until(lambda: not any(alive(pid) for pid in children), WAIT_SECONDS), children
    finally:
        parent.kill()
        parent.communicate()


def test_pool_workers_die_with_the_parent(tmp_path):
    parent = _parent(tmp_path, """
        import os, sys, time
        from secateur.gen.processes import process_pool

        def work(path):
            with open(path, "a") as stream:
                stream.write(f"{os.getpid()} ")
            time.sleep(60)

        if __name__ == "__main__":
            with process_pool(2) as pool:
                list(pool.map(work, [sys.argv[1]] * 2))
    """)
    try:
        workers = _pids(tmp_path / "pids", 2)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=WAIT_SECONDS)
        assert wait_until(lambda: not any(alive(pid) for pid in workers), WAIT_SECONDS), workers
    finally:
        parent.kill()
        parent.communicate()


# Progress of a long step ------------------------------------------------------------------

def test_heartbeat_reports_start_beats_with_detail_and_end():
    import time

    from secateur.gen.processes import heartbeat
    lines = []
    with heartbeat(lines.append, "building x", every=0.05, detail=lambda: "3/7 files"):
        time.sleep(0.3)
    assert lines[0] == "building x ..."
    beats = lines[1:-1]
    assert len(beats) >= 2 and all(
        line.startswith("building x: running for ") and line.endswith(" s, 3/7 files")
        for line in beats), lines
    assert lines[-1].startswith("building x: done in ") and lines[-1].endswith(", 3/7 files")


def test_heartbeat_without_a_reporter_is_silent_and_passes_exceptions():
    from secateur.gen.processes import heartbeat
    with heartbeat(None, "x"):
        pass
    lines = []
    with pytest.raises(KeyError):
        with heartbeat(lines.append, "failing step", every=10):
            raise KeyError("boom")
    assert lines[0] == "failing step ..." and lines[-1].startswith("failing step: failed after ")
    lines = []
    with pytest.raises(KeyboardInterrupt):
        with heartbeat(lines.append, "interrupted step", every=10):
            raise KeyboardInterrupt
    assert lines == ["interrupted step ..."]


def test_cxx_progress_counts_the_model_files_compiled(tmp_path):
    from secateur.sim.runner import _cxx_progress
    obj = tmp_path / "obj"
    assert _cxx_progress(obj) is None
    obj.mkdir()
    assert _cxx_progress(obj) == "verilating"
    for name in ("Vharness", "Vharness__1", "Vharness__2"):
        (obj / f"{name}.cpp").write_text("")
    (obj / "Vharness.o").write_text("")
    (obj / "verilated.o").write_text("")  # the runtime library: not one of the model's files
    assert _cxx_progress(obj) == "C++ 1/3 files compiled"
    (obj / "Vharness__ALL.cpp").write_text("")  # a small model, built as one unity file
    assert _cxx_progress(obj) == "compiling the C++ model as one unit"
