"""One distribution, ``secateur``: its subpackages import from an editable install and from a
built wheel, and nothing generic (``models``, ``sim``, ...) lands at the top of site-packages."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SUBPACKAGES = ["hdl", "gen", "models", "sim", "verif"]


def test_editable_install_imports_every_subpackage():
    import secateur
    assert Path(secateur.__file__).parent == REPO
    for name in SUBPACKAGES:
        __import__(f"secateur.{name}")


def test_wheel_contents_and_import(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(tmp_path), str(REPO)],
                   check=True, capture_output=True)
    wheel, = tmp_path.glob("secateur-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"secateur", wheel.name.split("-py")[0].replace("-", "-") + ".dist-info"} or \
        tops - {"secateur"} == {next(t for t in tops if t.endswith(".dist-info"))}
    for required in ["secateur/__init__.py", "secateur/sim/harness/stream_harness.v",
                     "secateur/sim/secateur.vlt", "secateur/gen/cli.py",
                     "secateur/docs/engines/permdiag.md"]:
        assert required in names
    assert not any(name.startswith("secateur/tests/") for name in names)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                    str(site), str(wheel)], check=True, capture_output=True)
    probe = ("import secateur, secateur.hdl.engines.ternary, secateur.gen.cli, secateur.models.ternary, "
             "secateur.sim.runner, secateur.verif.launch; print(secateur.__file__)")
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True,
                            text=True, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(str(site))


def test_make_engine_is_exported_from_the_package():
    import secateur
    from secateur.gen.registry import engine_names, make_engine
    assert secateur.make_engine is make_engine and secateur.engine_names is engine_names
    with pytest.raises(AttributeError, match="^module 'secateur' has no attribute 'nothing'$"):
        secateur.nothing
