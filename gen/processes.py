"""Child processes that die with the command that started them.

A killed or interrupted ``secateur`` must not leave workers compiling behind it. Two kinds of
children are started, and each is tied to its parent once, here:

* Pool workers (:func:`process_pool`): each asks the kernel for ``SIGKILL`` when its parent
  dies (``prctl(PR_SET_PDEATHSIG)`` on Linux) and ignores SIGINT, so that Ctrl-C reaches only
  the parent, which prints one line; leaving the pool by an exception cancels what has not
  started and kills the workers.
* External tools (:func:`run_tool`): Verilator runs ``make``, which runs ``g++``; a signal to
  the first process alone would orphan the rest. Each tool runs in its own process group
  under a small guard process that dies with its parent and, when it does, kills the whole
  group. An exception in the parent (an interrupt) kills the group too, and
  :func:`stop_tools` kills every running group, for the threads of :func:`thread_pool`, which
  an interrupt does not reach.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time

__all__ = ["die_with_parent", "process_pool", "thread_pool", "run_tool", "stop_tools",
           "heartbeat"]

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent exits (Linux only;
    elsewhere nothing is done)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        return


def _pool_worker_init(parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


@contextlib.contextmanager
def process_pool(max_workers: int, mp_context=None):
    """A :class:`~concurrent.futures.ProcessPoolExecutor` whose workers die with this process
    and are terminated when the block is left by an exception."""
    from concurrent.futures import ProcessPoolExecutor
    pool = ProcessPoolExecutor(max_workers=max_workers, mp_context=mp_context,
                               initializer=_pool_worker_init, initargs=(os.getpid(),))
    try:
        yield pool
    except BaseException:
        workers = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for worker in workers:
            with contextlib.suppress(Exception):
                worker.kill()
        raise
    else:
        pool.shutdown(wait=True)


@contextlib.contextmanager
def thread_pool(max_workers: int):
    """A :class:`~concurrent.futures.ThreadPoolExecutor` whose threads run tools: leaving the
    block by an exception cancels what has not started and kills the running tools, so that an
    interrupt does not wait for them."""
    from concurrent.futures import ThreadPoolExecutor
    pool = ThreadPoolExecutor(max_workers=max_workers)
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        stop_tools()
        raise
    else:
        pool.shutdown(wait=True)


_running_tools: set = set()
_running_lock = threading.Lock()


def _kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        process.kill()


def stop_tools() -> None:
    """Kill every tool that :func:`run_tool` is running, with all that each started."""
    with _running_lock:
        running = list(_running_tools)
    for process in running:
        _kill_group(process)


# The guard: leads a new process group, dies with its parent, and on any signal kills the
# group (the tool and everything it started) before exiting with the tool's status. It runs
# as `python -S -c`, without this package (which imports Amaranth and torch), so it repeats
# die_with_parent's prctl call instead of importing it.
_GUARD = r"""
import ctypes, os, signal, sys
parent = int(sys.argv[1])
os.setpgrp()
def stop(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.killpg(0, signal.SIGKILL)
for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(sig, stop)
try:
    ctypes.CDLL(None).prctl(1, int(signal.SIGTERM), 0, 0, 0)
except (OSError, AttributeError):
    pass
if os.getppid() != parent:
    stop(None, None)
child = os.fork()
if child == 0:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    except OSError as error:
        print(f"cannot run {sys.argv[2]}: {error.strerror}", file=sys.stderr)
        os._exit(127)
while True:
    try:
        _, status = os.waitpid(child, 0)
        break
    except InterruptedError:
        continue
if os.WIFSIGNALED(status):  # die of the same signal, so the caller sees the tool's end
    signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
    os.kill(os.getpid(), os.WTERMSIG(status))
sys.exit(os.WEXITSTATUS(status))
"""


def run_tool(command: list[str], timeout: float | None = None, capture_output: bool = False,
             **kwargs) -> subprocess.CompletedProcess:
    """:func:`subprocess.run` of ``command`` (arguments as there), with the tool and every
    process it starts killed if this process dies, the call is interrupted or ``timeout``
    passes (:class:`subprocess.TimeoutExpired`)."""
    if capture_output:
        kwargs.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if not sys.platform.startswith("linux"):
        return subprocess.run(command, timeout=timeout, **kwargs)
    guarded = [sys.executable, "-S", "-c", _GUARD, str(os.getpid()), *map(str, command)]
    with subprocess.Popen(guarded, **kwargs) as process:
        with _running_lock:
            _running_tools.add(process)
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except BaseException:
            _kill_group(process)
            raise
        finally:
            with _running_lock:
                _running_tools.discard(process)
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@contextlib.contextmanager
def heartbeat(report, what: str, every: float = 20.0, detail=None):
    """Around a long step: ``report(line)`` once as it starts, every ``every`` seconds while
    it runs (its elapsed time, and ``detail()`` when given: how far along it is) and once when
    it ends or fails, so that a user can tell a slow step from a hang; an interrupt
    (``KeyboardInterrupt``) adds no line. ``report`` None: nothing."""
    if report is None:
        yield
        return
    start, stopped = time.monotonic(), threading.Event()

    def line(state: str) -> str:
        extra = detail() if detail is not None else None
        return f"{what}: {state} {time.monotonic() - start:.0f} s" + (f", {extra}" if extra
                                                                       else "")

    def beat():
        while not stopped.wait(every):
            report(line("running for"))

    report(f"{what} ...")
    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    # An interrupt ends the step without a line of its own: the command prints the one
    # line an interrupt gets.
    state = None
    try:
        yield
        state = "done in"
    except Exception:
        state = "failed after"
        raise
    finally:
        stopped.set()
        thread.join()
        if state is not None:
            report(line(state))
