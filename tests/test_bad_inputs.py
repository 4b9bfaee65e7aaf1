"""Bad inputs never cost the user a file: outputs onto inputs are refused, paths are exact,
headers are checked before data is allocated (issue 16)."""

import numpy as np
import pytest

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
