"""Shared pytest fixtures: seeds that are recorded and replayable.

Every randomized test takes its seed from ``SECATEUR_TB_SEED`` if set (to replay a failure),
else derives a fixed one from the test id; the seed is always printed in failure messages.

Drawn engine parameter sets (``draw_seed``) differ from run to run instead: the session draws
a run seed (``SECATEUR_DRAW_SEED``, printed in the header; set it to repeat a run's draws),
each such test mixes it with its id, and the summary lists the sets exercised and the failed
ones with the seed that replays each. ``SECATEUR_DRAWS`` sets how many sets per engine
``make regress`` draws (``make regress N=50``).
"""

import hashlib
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import pytest

# The suite's many small configurations wait for their C++ builds, not their simulations:
# -O0 builds them fastest (sim/toolchain.py has the measurements; -O1 is the default for
# users). Set here, it reaches the CLI runs that the tests start as subprocesses too.
os.environ.setdefault("SECATEUR_VERILATOR_OPT", "-O0")

_FCOV = "SECATEUR_FCOV_DIR"
_DRAW_SEED = "SECATEUR_DRAW_SEED"
#: Drawn parameter sets per engine under make regress (make test keeps the first).
DRAWS = int(os.environ.get("SECATEUR_DRAWS", "4"))
#: (test id, outcome, the drawn set's replay line) of this session's drawn-set tests.
_DRAWN: list[tuple[str, str, str]] = []


def pytest_configure(config):
    # The functional coverage bins (verif/functional_coverage.py) that the session's cocotb
    # simulations count, in one directory that xdist workers and simulators inherit.
    if not hasattr(config, "workerinput") and _FCOV not in os.environ:
        os.environ[_FCOV] = config._secateur_fcov = tempfile.mkdtemp(prefix="secateur-fcov.")
    # Set before xdist starts its workers, which inherit it.
    if not hasattr(config, "workerinput") and _DRAW_SEED not in os.environ:
        os.environ[_DRAW_SEED] = str(random.SystemRandom().randrange(2**31))


def pytest_report_header(config):
    return (f"drawn engine parameter sets: run seed {os.environ[_DRAW_SEED]} "
            f"({_DRAW_SEED}={os.environ[_DRAW_SEED]} repeats this run's draws)")


def pytest_runtest_logreport(report):
    # On the controller, every worker's reports: the drawn sets' outcomes and replay lines.
    properties = dict(report.user_properties)
    drawn = properties.get("drawn")
    if drawn and (report.when == "call" or report.outcome != "passed"):
        replay = (f"SECATEUR_DRAWS={DRAWS} SECATEUR_TB_SEED={properties['draw_seed']} "
                  f".venv/bin/python -m pytest -m '' '{report.nodeid}'")
        _DRAWN.append((report.nodeid, report.outcome, f"{drawn}\n    replay: {replay}"))


def pytest_terminal_summary(terminalreporter, config):
    draws = _DRAWN
    if draws:
        failed = [(nodeid, drawn) for nodeid, outcome, drawn in draws if outcome == "failed"]
        engines = sorted({drawn.split()[0] for _, _, drawn in draws})
        terminalreporter.write_sep("=", "drawn engine parameter sets (verif/random_params.py)")
        terminalreporter.write_line(
            f"{len({d for _, _, d in draws})} sets exercised ({', '.join(engines)}), "
            f"{len(failed)} failed; run seed {os.environ.get(_DRAW_SEED)}")
        for nodeid, drawn in failed:
            terminalreporter.write_line(f"FAILED {nodeid}: {drawn}")
    from secateur.verif.functional_coverage import load, summary
    total = load(os.environ[_FCOV]) if os.environ.get(_FCOV) else {}
    if total:
        terminalreporter.write_sep("=", "functional coverage (verif/functional_coverage.py)")
        for line in summary(total):
            terminalreporter.write_line(line)


def pytest_unconfigure(config):
    if getattr(config, "_secateur_fcov", None):
        shutil.rmtree(config._secateur_fcov, ignore_errors=True)


def run_timed(simulator, layer, x):
    """``simulator.run(layer, x)`` (a :class:`~secateur.sim.runner.BatchSimulator`), held to
    the performance model: the harness never stalls ``res`` and offers ``act`` beats back to
    back, so its cycles and load cycles must be exactly the model's
    (:func:`secateur.models.perf.estimate`)."""
    from secateur.models import perf
    result = simulator.run(layer, x)
    model = perf.estimate(layer, x)
    assert (result.cycles, result.load_cycles) == (model.cycles, model.load_cycles), \
        (f"{layer.engine.name} {layer.engine.params}, layer {layer.rows}x{layer.cols}, batch "
         f"{x.shape[0]}: {result.cycles} cycles and {result.load_cycles} load cycles, the "
         f"performance model says {model.cycles} and {model.load_cycles}")
    return result


def wait_until(predicate, seconds: float) -> bool:
    """Poll ``predicate`` until it holds or ``seconds`` pass; return its last value."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (Linux ``/proc``)."""
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def in_make_test(cases, keep, unpack=False):
    """``cases`` as ``pytest.param`` values, the ones at the indices ``keep`` in ``make test``
    and the others marked ``regress`` (run by ``make regress``): each check stays in the gate
    on some parameter sets, inside the time budget of ``make test``. ``unpack``: each case is
    a tuple of several argument values."""
    return [case if index in keep else
            pytest.param(*(case if unpack else (case,)), marks=pytest.mark.regress)
            for index, case in enumerate(cases)]


@pytest.fixture
def seed(request) -> int:
    if "SECATEUR_TB_SEED" in os.environ:
        return int(os.environ["SECATEUR_TB_SEED"])
    return int(hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:8], 16)


@pytest.fixture
def draw_seed(request) -> int:
    """The seed of a drawn engine parameter set: ``SECATEUR_TB_SEED`` to replay one, else
    the run seed mixed with the test id, so that each run draws other sets."""
    if "SECATEUR_TB_SEED" in os.environ:
        return int(os.environ["SECATEUR_TB_SEED"])
    mixed = f"{os.environ[_DRAW_SEED]}:{request.node.nodeid}"
    return int(hashlib.sha256(mixed.encode()).hexdigest()[:8], 16)
