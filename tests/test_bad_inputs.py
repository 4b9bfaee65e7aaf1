"""Bad inputs never cost the user a file: outputs onto inputs are refused, paths are exact,
headers are checked before data is allocated (issue 16)."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import alive, wait_until

from secateur.gen.cli import main

SMALL = ["--pe", "2", "--set", "fan_in=4", "--set", "max_rows=8", "--set", "max_cols=16"]


@pytest.fixture
def files(tmp_path):
    np.savez(tmp_path / "w.npz", w=np.zeros((5, 9), dtype=np.int8))
    np.save(tmp_path / "x.npy", np.zeros((2, 9), dtype=np.int8))
    return tmp_path


def _run(capsys, files, **paths):
    argv = {"--weights": files / "w.npz", "--inputs": files / "x.npy", "--out": files / "y.npy"}
    argv.update(paths)
    flat = [item for key, value in argv.items() for item in (key, str(value))]
    status = main(["run", "--engine", "ternary", *SMALL, *flat])
    return status, capsys.readouterr().err


@pytest.mark.parametrize("paths, message", [
    ({"--out": "x.npy"}, "--out {d}/x.npy is the same file as --inputs"),
    ({"--out": "w.npz"}, "--out {d}/w.npz is the same file as --weights"),
    ({"--report": "w.npz"}, "--report {d}/w.npz is the same file as --weights"),
    ({"--report": "y.npy"}, "--out and --report are the same file {d}/y.npy"),
    ({"--report": "."}, "cannot write --report {d}: it is a directory"),
])
def test_outputs_onto_inputs_are_refused(capsys, files, paths, message):
    before = {path.name: path.read_bytes() for path in files.iterdir()}
    status, err = _run(capsys, files, **{key: files / value for key, value in paths.items()})
    assert status == 2 and err.count("\n") == 1
    assert message.format(d=files) in err
    assert {path.name: path.read_bytes() for path in files.iterdir()} == before


def test_huge_header_is_refused_before_allocation(capsys, files):
    with open(files / "huge.npy", "wb") as stream:
        np.lib.format.write_array_header_1_0(
            stream, {"descr": "|i1", "fortran_order": False, "shape": (100000, 100000)})
    status, err = _run(capsys, files, **{"--inputs": files / "huge.npy"})
    assert status == 2 and "declares shape (100000, 100000)" in err


def test_named_pipe_is_refused(capsys, files):
    import os
    os.mkfifo(files / "pipe.npy")
    status, err = _run(capsys, files, **{"--inputs": files / "pipe.npy"})
    assert status == 2 and "not a regular file" in err


def test_mask_bounds_n(capsys):
    assert main(["mask", "--n", "4294967295", "--k", "4294967295", "--seed", "1"]) == 2
    assert "--n must be in [1, 65535]" in capsys.readouterr().err


# Interrupts and kills, in a subprocess with a bounded wait: a cold build (Verilator, make,
# g++) is under way when the signal arrives.

def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if text.encode() in (entry / "cmdline").read_bytes() and alive(int(entry.name)):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_a_signal_during_a_cold_build_leaves_nothing_running_or_stale(files, tmp_path, sig):
    cache = tmp_path / "cache"
    (files / "y.npy").write_bytes(b"an earlier run's result")
    (files / "r.json").write_text("{}")
    inputs = {path.name: path.read_bytes() for path in files.iterdir()}
    command = [sys.executable, "-m", "secateur.gen.cli", "run", "--engine", "ternary", *SMALL,
               "--weights", str(files / "w.npz"), "--inputs", str(files / "x.npy"),
               "--out", str(files / "y.npy"), "--report", str(files / "r.json")]
    process = subprocess.Popen(command, env=dict(os.environ, SECATEUR_CACHE_DIR=str(cache)),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: any((cache / "sim").glob("*.*/.building"))
                           and _processes_mentioning(str(cache)), 60), "no build started"
        process.send_signal(sig)
        _, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert wait_until(lambda: not _processes_mentioning(str(cache)), 10), \
        _processes_mentioning(str(cache))
    # The earlier run's outputs were superseded before the work; the inputs are untouched.
    assert not (files / "y.npy").exists() and not (files / "r.json").exists()
    assert all((files / name).read_bytes() == data for name, data in inputs.items()
               if name.startswith(("w", "x")))
    from secateur.sim.runner import remove_stale_staging
    if sig == signal.SIGINT:
        # The build's progress line as it started, then the interrupt's one line.
        assert (process.returncode, err.splitlines()[-1]) == (130, "secateur: interrupted")
        assert all(line.startswith("secateur: building the ternary harness")
                   for line in err.splitlines()[:-1]), err
        assert not list((cache / "sim").glob("*.*"))
    else:
        assert process.returncode == -signal.SIGKILL
        left = list((cache / "sim").glob("*.*"))
        assert left and remove_stale_staging(cache / "sim") == left
        assert not list((cache / "sim").glob("*.*"))


def test_a_live_builds_staging_is_kept(tmp_path):
    from secateur.sim.runner import _lock_staging, remove_stale_staging
    live, dead = tmp_path / "ternary-1.abc", tmp_path / "ternary-1.def"
    live.mkdir(), dead.mkdir()
    lock = _lock_staging(live)
    _lock_staging(dead).close()
    try:
        assert remove_stale_staging(tmp_path) == [dead]
        assert live.is_dir()
    finally:
        lock.close()


def test_a_staging_lock_is_never_seen_unlocked(tmp_path, monkeypatch):
    """The lock file appears under its name only once it is locked: another build's
    clean-up, which removes a staging directory whose lock it can take, cannot take it in
    the instant between its creation and its lock."""
    from secateur.sim import runner
    staging = tmp_path / "ternary-1.abc"
    staging.mkdir()
    flock = runner.fcntl.flock
    seen = []

    def checked_flock(file, operation):
        seen.append((staging / runner._STAGING_LOCK).exists())
        return flock(file, operation)

    monkeypatch.setattr(runner.fcntl, "flock", checked_flock)
    lock = runner._lock_staging(staging)
    monkeypatch.setattr(runner.fcntl, "flock", flock)
    try:
        assert seen == [False] and (staging / runner._STAGING_LOCK).is_file()
        assert runner.remove_stale_staging(tmp_path) == [] and staging.is_dir()
    finally:
        lock.close()


@pytest.mark.parametrize("arrays, message", [
    ({"scale": np.zeros(5, dtype=np.float32)},
     "weights npz has a key 'scale' that the ternary engine does not read; it reads bias, mult, "
     "relu, shift, w (and records of its parameters)"),
    ({"bias": np.asarray([0, 0, 1 << 31, 0, 0])},
     "bias must be in [-2147483648, 2147483647] (32 bits), not 2147483648 (row 2)"),
    ({"fan_in": np.asarray(8)}, "weights npz records fan_in = 8; this ternary engine has fan_in = 4"),
    ({"mult": np.zeros(0, dtype=np.int64), "shift": np.asarray(0), "relu": np.asarray(False)},
     "Requantizer mult is empty; give one multiplier per layer or one per output channel"),
    ({"mult": np.asarray([1, 2, 40000, 3, 4]), "shift": np.asarray(0), "relu": np.asarray(False)},
     "Requantizer mult must be in [-32768, 32767], not 40000 (channel 2)"),
])
def test_weights_keys_and_values_are_checked(capsys, files, arrays, message):
    np.savez(files / "w.npz", w=np.zeros((5, 9), dtype=np.int8), **arrays)
    status, err = _run(capsys, files)
    assert status == 2 and err == f"secateur: error: {message}\n"
    assert not (files / "y.npy").exists()


def test_a_record_equal_to_the_engine_and_relu_as_an_integer_are_accepted(capsys, files):
    np.savez(files / "w.npz", w=np.ones((5, 9), dtype=np.int8), fan_in=np.asarray(4),
             mult=np.asarray(3), shift=np.asarray(1), relu=np.asarray(1))
    status, err = _run(capsys, files)
    assert status == 0, err
    assert np.load(files / "y.npy").shape == (2, 5)


@pytest.mark.parametrize("argv, message", [
    (["rtl", "--engine", "ternary", "--set", "max_rows=65536", "--set", "max_cols=65536",
      "--out", "{d}/rtl"],
     "the ternary engine at pe=32, max_rows=65536, max_cols=65536 holds 8589934592 weight bits; "
     "the generator elaborates at most 8388608 (8 Mbit): lower max_rows or max_cols"),
    (["rtl", "--engine", "ternary", "--pe", "2", "--set", "pe=0", "--out", "{d}/rtl"],
     "--pe 2 and --set pe=0 both set pe; give one"),
    (["export", "--engine", "ternary", "--clock-mhz", "1e-300", "--out", "{d}/x"],
     "--clock-mhz must be in [1, 5000] MHz, not 1e-300"),
    (["synth", "--engine", "ternary", "--pe", "2", "--timing-pe", "100000", "--out", "{d}/s"],
     "--timing-pe 100000 exceeds the ternary engine's pe 2: the timing configuration is a "
     "slice of the engine"),
    (["report", "--pe", "2", "--batch", str(10 ** 12), "--out", "{d}/r"],
     "--batch must be in [1, 4096], not 1000000000000"),
    (["net", "--engine", "ternary", "--report", "", "--cache", "{d}/c"],
     "--report must name a path, not ''"),
    (["net", "--engine", "ternary", "--cache", "{d}/x.npy"],
     "cannot write --cache {d}/x.npy: not a directory"),
    (["mask", "--n", "100000000", "--k", "100000000", "--seed", "1"],
     "--n must be in [1, 65535] (the lfsr engine's max_cols), not 100000000"),
])
def test_bounds_and_ambiguities_are_refused_before_work(capsys, files, argv, message):
    status = main([item.format(d=files) for item in argv])
    err = capsys.readouterr().err
    assert status == 2 and err == f"secateur: error: {message.format(d=files)}\n"
    assert sorted(path.name for path in files.iterdir()) == ["w.npz", "x.npy"]


def test_the_exact_path_is_written(capsys, files):
    status, err = _run(capsys, files, **{"--out": files / "result.bin"})
    assert status == 0, err
    assert np.load(files / "result.bin").shape == (2, 5)
    assert sorted(path.name for path in files.iterdir()) == ["result.bin", "w.npz", "x.npy"]


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    from secateur.gen.safeio import atomic_write

    def fail(stream):
        stream.write(b"half")
        raise OSError(28, "No space left on device")
    target = tmp_path / "y.npy"
    target.write_bytes(b"previous")
    with pytest.raises(Exception, match="^cannot write .*y.npy: No space left on device$"):
        atomic_write(target, fail)
    assert target.read_bytes() == b"previous" and [p.name for p in tmp_path.iterdir()] == ["y.npy"]


def test_requantized_outputs_are_int8_and_feed_the_next_layer(capsys, files):
    np.savez(files / "w.npz", w=np.ones((5, 9), dtype=np.int8), mult=np.asarray(1),
             shift=np.asarray(0), relu=np.asarray(False))
    status, err = _run(capsys, files)
    assert status == 0, err
    y = np.load(files / "y.npy")
    assert y.dtype == np.int8 and y.tolist() == [[0] * 5] * 2


def _corrupt_member(directory):
    np.savez_compressed(directory / "packed.npz", w=np.zeros((5, 9), dtype=np.int8))
    data = bytearray((directory / "packed.npz").read_bytes())
    start = data.find(b"w.npy") + 45
    data[start:start + 20] = bytes(byte ^ 0xFF for byte in data[start:start + 20])
    (directory / "corrupt.npz").write_bytes(bytes(data))
    return {"--weights": directory / "corrupt.npz"}


def _malformed_header(directory):
    header = (directory / "x.npy").read_bytes()
    (directory / "bad.npy").write_bytes(header.replace(b"'descr'", b"'descr' (((", 1))
    return {"--inputs": directory / "bad.npy"}


def _text(directory):
    (directory / "notes.npy").write_text("hello world\n")
    return {"--inputs": directory / "notes.npy"}


def _renamed(directory, source, target, option):
    (directory / target).write_bytes((directory / source).read_bytes())
    return {option: directory / target}


def _truncated(directory):
    (directory / "short.npy").write_bytes((directory / "x.npy").read_bytes()[:-5])
    return {"--inputs": directory / "short.npy"}


def _objects(directory):
    np.save(directory / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return {"--inputs": directory / "objects.npy"}


@pytest.mark.parametrize("make, message", [
    (_corrupt_member, "weights file {d}/corrupt.npz, member 'w' is corrupt: Bad CRC-32 for file "
                      "'w.npy'"),
    (_malformed_header, "inputs file {d}/bad.npy has a malformed .npy header: "),
    (_text, "inputs file {d}/notes.npy is not a .npy array (no NumPy magic at its start)"),
    (lambda d: {"--inputs": Path("/dev/zero")},
     "cannot read inputs file /dev/zero: not a regular file"),
    (lambda d: _renamed(d, "x.npy", "renamed.npz", "--weights"),
     "weights file {d}/renamed.npz is a .npy array; it must be an .npz archive"),
    (lambda d: _renamed(d, "w.npz", "archive.npy", "--inputs"),
     "inputs file {d}/archive.npy is an .npz archive; it must be a .npy array"),
    (_truncated, "inputs file {d}/short.npy is truncated: its header declares 18 bytes of data, "
                 "the file holds 13"),
    (_objects, "inputs file {d}/objects.npy holds Python objects (dtype object); secateur reads "
               "numeric arrays only"),
], ids=["corrupt-member", "malformed-header", "text", "dev-zero", "npy-as-npz", "npz-as-npy",
        "truncated", "objects"])
def test_corrupt_files_are_one_true_line(capsys, files, make, message):
    paths = make(files)
    before = {path.name: path.read_bytes() for path in files.iterdir()}
    status, err = _run(capsys, files, **paths)
    assert status == 2 and err.count("\n") == 1
    assert err.startswith(f"secateur: error: {message.format(d=files)}"), err
    assert {path.name: path.read_bytes() for path in files.iterdir()} == before


def test_concurrent_cold_builds_of_one_engine_are_safe(files, tmp_path):
    cache = tmp_path / "cache"
    runs = [subprocess.Popen(
        [sys.executable, "-m", "secateur.gen.cli", "run", "--engine", "ternary", *SMALL,
         "--weights", str(files / "w.npz"), "--inputs", str(files / "x.npy"),
         "--out", str(files / f"y{index}.npy")],
        env=dict(os.environ, SECATEUR_CACHE_DIR=str(cache)), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for index in range(2)]
    for run in runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
    assert np.array_equal(np.load(files / "y0.npy"), np.load(files / "y1.npy"))
    builds = [path for path in (cache / "sim").iterdir()]
    assert len(builds) == 1 and "." not in builds[0].name, builds


def test_a_huge_weights_member_is_refused_from_its_header(capsys, files):
    import io
    import zipfile
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|i1", "fortran_order": False, "shape": (100000, 100000)})
    with zipfile.ZipFile(files / "huge.npz", "w") as archive:
        archive.writestr("w.npy", header.getvalue() + b"\0" * 64)
    status, err = _run(capsys, files, **{"--weights": files / "huge.npz"})
    assert status == 2 and err == (
        f"secateur: error: weights file {files}/huge.npz, member 'w' declares shape "
        f"(100000, 100000) (10000000000 elements); the most this command accepts is 268435456\n")
