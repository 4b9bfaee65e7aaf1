"""``secateur report`` (``make report PE=32``): one self-contained HTML page comparing every
engine with the dense baseline.

What the page holds, and where each figure comes from
    1. *Cycles, utilization and energy against sparsity*, measured now: every engine at the
       requested ``pe`` on one ``rows x cols`` layer (default 128 x 128), through its RTL
       with :func:`secateur.gen.sweep.sweep_engine` (weight sparsity in each engine's own
       structure; activation sparsity on the dense-weight layer). Engines are configured by
       :func:`secateur.gen.sweep.engine_settings`, sized to the layer.
    2. *Resources and Fmax*, read from ``build/synth/<engine>/stat.json`` and
       ``timing.json`` when ``make synth`` wrote them (the report never synthesizes:
       that takes many minutes); otherwise "not run: make synth PE=<pe>".
    3. *Energy*: ``energy_pj`` of the sweep's runs (:mod:`secateur.models.energy`) and of the
       network reports; "n/a" where an action has no sourced figure (``null``).
    4. *Networks*: ``build/net/<engine>-report.json`` of ``make net ENGINE=<engine>``.
    5. *Design-space exploration*: ``build/explore/explore.json`` of ``secateur explore``,
       re-plotted here.

The page (``index.html``) uses inline CSS only, no script and no external URL; its plots are
PNG files beside it, and ``report.json`` holds every number on it.
"""

from __future__ import annotations

import html
import json
import math
import time
from pathlib import Path

from .processes import thread_pool
from .safeio import write_text

__all__ = ["DEFAULT_LAYER", "ACTIVATION_ZEROS", "collect_synth", "collect_net",
           "collect_explore", "build_report", "write_html"]

#: The sweep layer. At ``pe = 32`` the permdiag and cim harnesses take minutes to build
#: whatever the layer; the cim engine's macros grow with it (``macro_rows = 32`` here, 128 and
#: a far longer build at 256 x 256), and 128 x 128 still gives every engine several row and
#: column blocks.
DEFAULT_LAYER = (128, 128)
DEFAULT_BATCH = 8
ACTIVATION_ZEROS = (0.0, 0.5, 0.75, 0.9)
BASELINE = "dense"
SLOW_BUILDS = ("permdiag", "cim")


# --------------------------------------------------------------------------- inputs

def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def collect_synth(synth_dir: Path, engines: list[str]) -> dict:
    """Engine -> ``{"stat": ..., "timing": ...}`` for the engines with both files."""
    found = {}
    for name in engines:
        stat = _read_json(Path(synth_dir) / name / "stat.json")
        timing = _read_json(Path(synth_dir) / name / "timing.json")
        if stat is not None and timing is not None:
            found[name] = {"stat": stat, "timing": timing}
    return found


def collect_net(net_dir: Path) -> dict:
    """``<name>`` -> the ``secateur net`` report of ``<net_dir>/<name>-report.json``
    (``make net ENGINE=<engine>`` names it after the engine; other names, such as
    ``lfsr-cnn``, are other runs)."""
    found = {}
    for path in sorted(Path(net_dir).glob("*-report.json")):
        report = _read_json(path)
        if isinstance(report, dict) and "engine" in report:
            found[path.name[:-len("-report.json")]] = report
    return found


def collect_explore(explore_dir: Path):
    """The ``secateur explore`` results, or ``None``."""
    results = _read_json(Path(explore_dir) / "explore.json")
    return results if isinstance(results, dict) and results.get("points") else None


def collect_workloads(path: Path):
    """The workload table of ``benchmarks/bench_workloads.py`` (``make bench``), or ``None``."""
    results = _read_json(path)
    return results if isinstance(results, dict) and isinstance(results.get("model"), dict) \
        else None


# --------------------------------------------------------------------------- the report

def build_report(pe: int, out: str | Path, *, layer: tuple[int, int] = DEFAULT_LAYER,
                 batch: int = DEFAULT_BATCH, engines: list[str] | None = None,
                 synth_dir: str | Path = "build/synth", net_dir: str | Path = "build/net",
                 explore_dir: str | Path = "build/explore",
                 workloads_file: str | Path = "build/bench/workloads.json", jobs: int = 2,
                 seed: int = 2026, log=print) -> dict:
    """Measure the sweeps, read the other reports, write ``index.html``, the plots and
    ``report.json`` into ``out``; return the data.

    Raises
    ------
    ValueError, TypeError
        If ``pe``, ``layer`` or ``batch`` is illegal for an engine, or ``out`` cannot be
        written.
    """
    from . import sweep
    from .registry import engine_names, make_engine

    rows, cols = layer
    for name, value in (("--pe", pe), ("--batch", batch), ("--layer rows", rows),
                        ("--layer cols", cols)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, not {value!r}")
    engines = list(engines or engine_names())
    if BASELINE in engines:
        engines = [BASELINE] + [name for name in engines if name != BASELINE]
    skipped = {}
    for name in engines:  # every parameter error before any build
        try:
            make_engine(name, **sweep.engine_settings(name, pe, rows, cols))
        except ValueError as error:
            if name == BASELINE:
                raise
            skipped[name] = " ".join(str(error).split())
    engines = [name for name in engines if name not in skipped]
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / ".secateur-write-test").write_bytes(b"")
        (out / ".secateur-write-test").unlink()
    except OSError as error:
        raise ValueError(f"cannot write the report directory {out}: "
                         f"{error.strerror or error}") from None

    start = time.perf_counter()

    def measure(name):
        begin = time.perf_counter()
        result = sweep.sweep_engine(name, pe, rows, cols, batch=batch, seed=seed,
                                    input_zeros=ACTIVATION_ZEROS, progress=log)
        log(f"{name}: {len(result['weight']) + len(result['activation'])} runs "
            f"(harness {result['build_seconds']:.0f} s, total "
            f"{time.perf_counter() - begin:.0f} s)")
        return result
    # Builds and runs are subprocesses: threads keep both cores busy. The slowest harness
    # builds (permdiag, cim: minutes at pe = 32) start first.
    order = sorted(engines, key=lambda name: name not in SLOW_BUILDS)
    with thread_pool(max(1, jobs)) as pool:
        measured = dict(zip(order, pool.map(measure, order)))
    sweeps = {name: measured[name] for name in engines}
    data = {
        "pe": pe, "layer": {"rows": rows, "cols": cols}, "batch": batch, "seed": seed,
        "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
        "sweeps": sweeps, "skipped": skipped,
        "synth": collect_synth(Path(synth_dir), engines),
        "synth_dir": str(synth_dir),
        "net": collect_net(Path(net_dir)),
        "net_dir": str(net_dir),
        "explore": collect_explore(Path(explore_dir)),
        "explore_dir": str(explore_dir),
        "workloads": collect_workloads(Path(workloads_file)),
        "workloads_file": str(workloads_file),
    }
    data["sweep_seconds"] = round(time.perf_counter() - start, 1)
    try:
        data["plots"] = _plots(data, out)
        write_text(out / "report.json", json.dumps(data, indent=2, default=str) + "\n")
        write_text(out / "index.html", write_html(data))
    except OSError as error:
        raise ValueError(f"cannot write the report directory {out}: "
                         f"{error.strerror or error}") from None
    return data


# --------------------------------------------------------------------------- plots

def _plots(data: dict, out: Path) -> dict:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plots = {}
    sweeps = data["sweeps"]

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(out / name, metadata={"Software": None})
        plt.close(fig)
        return name

    for key, ylabel, fname, log_scale in (
            ("cycles_per_vector", "cycles per vector", "cycles_vs_sparsity.png", True),
            ("utilization", "utilization (engine's definition)", "utilization_vs_sparsity.png",
             False),
            ("energy_pj_per_vector", "energy per vector (pJ)", "energy_vs_sparsity.png", True)):
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
        drawn = False
        for name, result in sweeps.items():
            points = [(p["sparsity"], p[key]) for p in result["weight"] if p[key] is not None]
            if points:
                ax.plot(*zip(*points), marker="o", label=name,
                        linestyle="--" if name == BASELINE else "-")
                drawn = True
        if not drawn:
            plt.close(fig)
            continue
        ax.set_xlabel("weight sparsity (each engine's structure)")
        ax.set_ylabel(ylabel)
        if log_scale:
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"{data['layer']['rows']}x{data['layer']['cols']} layer, PE={data['pe']}",
                     fontsize=10)
        plots[key] = save(fig, fname)

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for name, result in sweeps.items():
        points = [(p["sparsity"], p["cycles_per_vector"]) for p in result["activation"]]
        if points:
            ax.plot(*zip(*points), marker="o", label=name,
                    linestyle="--" if name == BASELINE else "-")
    ax.set_xlabel("activation sparsity (fraction of zero inputs)")
    ax.set_ylabel("cycles per vector")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("dense-weight layer, sparse inputs", fontsize=10)
    plots["activation"] = save(fig, "cycles_vs_activation_sparsity.png")

    synth = data["synth"]
    ok = {name: entry["stat"]["ice40"]["resources"] for name, entry in synth.items()
          if entry["stat"].get("status") == "ok"}
    if ok:
        from .synth import RESOURCES
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
        width = 0.8 / len(ok)
        for index, (name, resources) in enumerate(ok.items()):
            ax.bar([r + index * width for r in range(len(RESOURCES))],
                   [max(resources[r], 0.5) for r in RESOURCES], width, label=name)
        ax.set_xticks([r + 0.4 - width / 2 for r in range(len(RESOURCES))], RESOURCES)
        ax.set_yscale("log")
        ax.set_ylabel("iCE40 cells (LUT fabric, no DSP)")
        ax.legend(fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
        plots["resources"] = save(fig, "resources.png")

    if data["explore"] is not None:
        from .explore import plot_explore
        names = plot_explore(data["explore"], out)
        plots["explore_memory"], plots["explore_cycles"] = names
    return plots


# --------------------------------------------------------------------------- HTML

CSS = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .9em; }
th, td { border: 1px solid #bbb; padding: .25em .6em; text-align: right; }
th { background: #eee; } td.l, th.l { text-align: left; }
.missing { color: #a33; font-style: italic; }
.note { color: #555; font-size: .9em; }
img { max-width: 100%; border: 1px solid #ddd; margin: .4em 0; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; }
.plots img { width: 520px; }
tr.pareto td { background: #fff3d6; }
"""


def _e(value) -> str:
    return html.escape(str(value))


def _num(value, fmt="{:,.0f}") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return fmt.format(value)


def _table(headers: list[str], rows: list[list[str]], left: int = 1, cls=None) -> str:
    head = "".join(f'<th{" class=l" if i < left else ""}>{_e(h)}</th>'
                   for i, h in enumerate(headers))
    body = []
    for index, row in enumerate(rows):
        klass = f' class="{cls[index]}"' if cls and cls[index] else ""
        body.append(f"<tr{klass}>" + "".join(
            f'<td{" class=l" if i < left else ""}>{cell}</td>' for i, cell in enumerate(row))
            + "</tr>")
    return f"<table>\n<tr>{head}</tr>\n" + "\n".join(body) + "\n</table>\n"


def _img(data: dict, key: str, alt: str) -> str:
    name = data.get("plots", {}).get(key)
    return f'<img src="{_e(name)}" alt="{_e(alt)}">' if name else ""


def _missing(text: str) -> str:
    return f'<p class="missing">{_e(text)}</p>\n'


def _ratio(value, base) -> str:
    if value is None or not base:
        return "n/a"
    return f"{value / base:.2f}x"


def _fmax(result: dict | None) -> str:
    """A family's Fmax in ``timing.json``: ``min/median`` over its nextpnr seeds, with how
    many completed when not all did (a file of one seed, written before the seeds, has only
    ``fmax_mhz``), or its status."""
    if not result:
        return "n/a"
    if result.get("status") != "ok" or not result.get("fmax_mhz"):
        return _e(result.get("status", "failed"))
    if "fmax_min_mhz" not in result:
        return f"{result['fmax_mhz']:.1f}"
    figure = f"{result['fmax_min_mhz']:.1f}/{result['fmax_median_mhz']:.1f}"
    completed, asked = result["seeds_completed"], len(result["seeds"])
    return figure if completed == asked else f"{figure} ({completed} of {asked} seeds)"


def _section_summary(data: dict) -> str:
    """Per engine against the dense baseline: cycles and energy measured now, then resources
    and Fmax from ``make synth``."""
    sweeps, synth = data["sweeps"], data["synth"]
    base = sweeps.get(BASELINE)
    base_point = base["weight"][0] if base and base["weight"] else None
    base_cycles = base_point and base_point["cycles_per_vector"]
    base_energy = base_point and base_point["energy_pj_per_vector"]
    parts = ["<h2>Engines against the dense baseline</h2>\n"]
    parts.append(f'<p class="note">Measured now on the RTL: one {data["layer"]["rows"]}x'
                 f'{data["layer"]["cols"]} layer at PE={data["pe"]}, batch {data["batch"]}, '
                 f'at each engine\'s densest and sparsest point of the sweep below; "x dense" '
                 f'divides by the dense engine on the same layer (lower is better).</p>\n')
    rows = []
    for name, result in sweeps.items():
        cells = [f"<b>{_e(name)}</b>", _e(result["lanes"])]
        for point in (result["weight"][:1] or [None]) + (result["weight"][-1:] or [None]):
            if point is None:
                cells += ["n/a"] * 5
                continue
            cells += [f"{point['sparsity']:.1%}", _num(point["cycles_per_vector"], "{:,.1f}"),
                      _ratio(point["cycles_per_vector"], base_cycles),
                      _num(point["energy_pj_per_vector"], "{:,.0f}"),
                      _ratio(point["energy_pj_per_vector"], base_energy)]
        rows.append(cells)
    for name, reason in data.get("skipped", {}).items():
        rows.append([f"<b>{_e(name)}</b>", "", f'<span class="missing">not measured: '
                     f'{_e(reason)}</span>'] + [""] * 9)
    parts.append(_table(["engine", "lanes", "sparsity", "cycles/vector", "x dense",
                         "pJ/vector", "x dense", "sparsity", "cycles/vector", "x dense",
                         "pJ/vector", "x dense"], rows))

    parts.append("<h3>Resources and Fmax</h3>\n")
    if not synth:
        parts.append(_missing(f"not run: make synth PE={data['pe']} (no "
                              f"{data['synth_dir']}/<engine>/stat.json and timing.json)"))
        return "".join(parts)
    base_stat = synth.get(BASELINE, {}).get("stat")
    base_res = (base_stat["ice40"]["resources"]
                if base_stat and base_stat.get("status") == "ok" else None)
    rows = []
    for name in sweeps:
        entry = synth.get(name)
        if entry is None:
            rows.append([f"<b>{_e(name)}</b>", f'<span class="missing">not run: make synth '
                         f'PE={data["pe"]}</span>'] + [""] * 10)
            continue
        stat, timing = entry["stat"], entry["timing"]
        cells = [f"<b>{_e(name)}</b>", _e(stat.get("params", {}).get("pe", ""))]
        if stat.get("status") == "ok":
            res = stat["ice40"]["resources"]
            array = (stat["ice40"].get("pe_array") or {}).get("resources", {})
            base_array = ((base_stat or {}).get("ice40", {}).get("pe_array") or {}).get(
                "resources", {})
            cells += [f"{res[key]:,} ({_ratio(res[key], base_res and base_res[key])})"
                      for key in ("lut4", "ff")]
            cells.append(f"{array['lut4']:,} ({_ratio(array['lut4'], base_array.get('lut4'))})"
                         if array.get("lut4") else "")
            cells += [f"{res[key]:,}" for key in ("carry", "bram", "dsp")]
            cells.append("yes" if stat["ice40"].get("fits") else "no")
        else:
            cells += [_e(stat.get("status", "failed"))] + [""] * 6
        cells += [_e(timing.get("params", {}).get("pe", "")), _fmax(timing.get("ice40")),
                  _fmax(timing.get("ecp5"))]
        rows.append(cells)
    parts.append(_table(["engine", "pe", "LUT4 (x dense)", "FF (x dense)",
                         "PE array LUT4 (x dense)", "carry", "BRAM",
                         "DSP", "fits UP5K", "timing pe", "iCE40 MHz", "ECP5 MHz"], rows))
    pes = {entry["stat"].get("params", {}).get("pe") for entry in synth.values()}
    if pes != {data["pe"]}:
        parts.append(f'<p class="note">The synthesis files were made at pe = '
                     f'{_e(", ".join(str(pe) for pe in sorted(pes, key=str)))}, not at the '
                     f'report\'s PE={data["pe"]}: run <code>make synth PE={data["pe"]}</code> '
                     f'to match.</p>\n')
    commands = sorted({entry["stat"]["ice40"].get("command", "") for entry in synth.values()
                       if entry["stat"].get("status") == "ok"})
    parts.append('<p class="note">From <code>make synth</code> (read, not run): iCE40 cell '
                 'counts at each engine\'s default configuration for that pe, multipliers in '
                 'LUT fabric (no DSP), from '
                 + ", ".join(f"<code>{_e(command)}</code>" for command in commands)
                 + '; "PE array" counts the <code>pe&lt;i&gt;</code> submodules only (the '
                 'sweep above uses smaller memories). MHz: post-route Fmax of the timing '
                 'shell at the timing pe, min/median over the nextpnr seeds that completed '
                 '(see <code>gen/synth.py</code>).</p>\n')
    parts.append(_img(data, "resources", "iCE40 resources per engine"))
    return "".join(parts)


def _section_sweep(data: dict) -> str:
    from .sweep import SPARSITY_KINDS
    parts = ["<h2>Cycles and utilization against sparsity</h2>\n"]
    rows, cols = data["layer"]["rows"], data["layer"]["cols"]
    parts.append(f'<p class="note">Measured with <code>BatchSimulator</code> (Verilator) on one '
                 f'{rows}x{cols} layer (M x N), batch {data["batch"]} random int8 vectors, '
                 f'every engine at PE={data["pe"]}, its memories sized to that layer; every run '
                 f'checked against the golden model ("exact"). The layer size is chosen so that '
                 f'the harness builds (once per configuration, cached in ~/.cache/secateur) stay '
                 f'within minutes at PE=32 while every engine still has several row and column '
                 f'blocks. Utilization is each engine\'s own '
                 f'(<code>useful_ops / (cycles x lanes)</code>; useful ops differ by engine). '
                 f'Energy per vector: <code>energy_pj</code> of the run '
                 f'(<code>models/energy.json</code>), n/a where an action has no sourced '
                 f'figure. Sweep: {data["sweep_seconds"]:.0f} s.</p>\n')
    parts.append('<div class="plots">' + _img(data, "cycles_per_vector", "cycles vs sparsity")
                 + _img(data, "utilization", "utilization vs sparsity")
                 + _img(data, "energy_pj_per_vector", "energy vs sparsity")
                 + _img(data, "activation", "cycles vs activation sparsity") + "</div>\n")
    base = data["sweeps"].get(BASELINE)
    base_cycles = base["weight"][0]["cycles_per_vector"] if base and base["weight"] else None
    for name, result in data["sweeps"].items():
        settings = ", ".join(f"{key}={value}" for key, value in result["params"].items())
        parts.append(f"<h3>{_e(name)}</h3>\n<p class=note>weight sparsity: "
                     f"{_e(SPARSITY_KINDS.get(name, ''))}; parameters: {_e(settings)}; "
                     f"{result['lanes']} lanes; harness build {result['build_seconds']:.0f} s "
                     f"(0 if cached)</p>\n")
        table = []
        for kind, points in (("weights", result["weight"]), ("inputs", result["activation"])):
            for p in points:
                table.append([kind, f"{p['sparsity']:.2%}", f"{p['cycles']:,}",
                              _num(p["cycles_per_vector"], "{:,.1f}"),
                              _ratio(base_cycles, p["cycles_per_vector"]),
                              _num(p["ideal_cycles"], "{:,}"), f"{p['utilization']:.3f}",
                              _num(p["energy_pj_per_vector"], "{:,.0f}"),
                              "yes" if p["exact"] else "<b>NO</b>"])
        parts.append(_table(["sparse", "sparsity", "cycles", "cyc/vec", "speed-up vs dense",
                             "ideal", "util", "pJ/vec", "exact"], table))
    return "".join(parts)


def _section_net(data: dict) -> str:
    parts = ["<h2>Networks (secateur net)</h2>\n"]
    nets = data["net"]
    if not nets:
        parts.append(_missing(f"not run: make net ENGINE=<engine> (no "
                              f"{data['net_dir']}/<engine>-report.json)"))
        return "".join(parts)
    rows = []
    for name, report in sorted(nets.items(),
                               key=lambda item: (item[1]["engine"] != BASELINE, item[0])):
        compression = report.get("compression") or {}
        energy = report.get("energy_pj_per_inference")
        rows.append([f"<b>{_e(report['engine'])}</b>", _e(report.get("arch", "")),
                     _e(report.get("images", "")),
                     _num(report.get("float_accuracy"), "{:.4f}"),
                     _num(report.get("golden_accuracy"), "{:.4f}"),
                     _num(report.get("rtl_accuracy"), "{:.4f}"),
                     _e(report.get("mismatches", "n/a")),
                     _num(compression.get("ratio"), "{:.1f}x"),
                     _num(report.get("cycles_per_inference"), "{:,.1f}"),
                     _num(energy, "{:,.0f}"), _e(report.get("params", {}).get("pe", ""))])
    parts.append(_table(["engine", "net", "images", "float acc", "golden acc", "RTL acc",
                         "mismatches", "compression", "cycles/inference", "pJ/inference",
                         "pe"], rows))
    reported = {report["engine"] for report in nets.values()}
    missing = [name for name in data["sweeps"] if name not in reported]
    if missing:
        parts.append(_missing("not run: " + ", ".join(f"make net ENGINE={name}"
                                                      for name in missing)))
    parts.append(f'<p class="note">From <code>{_e(data["net_dir"])}/*-report.json</code> '
                 f'(<code>secateur net</code>): each engine runs its own network '
                 f'configuration (see its report), so cycles compare techniques at their '
                 f'<code>net</code> defaults, not at equal hardware.</p>\n')
    return "".join(parts)


def _section_explore(data: dict) -> str:
    parts = ["<h2>Design-space exploration: weight precision x structured sparsity</h2>\n"]
    results = data["explore"]
    if results is None:
        parts.append(_missing(f"not run: make explore (secateur explore; no "
                              f"{data['explore_dir']}/explore.json)"))
        return "".join(parts)
    parts.append(f'<p class="note">digits {_e(results["network"])}, '
                 f'{results["images"]} test images, tiles of {results["tile"]["pe"]} x '
                 f'{results["tile"]["fan_in"]} pruned in the hidden layers; float teacher '
                 f'{results["float_accuracy"]:.4f}. Memory: {_e(results["memory"])}. Cycles: '
                 f'{_e(results["cycles_source"])}. Highlighted rows are Pareto-optimal in '
                 f'memory, cycles and accuracy together.</p>\n')
    parts.append('<div class="plots">' + _img(data, "explore_memory", "accuracy vs memory")
                 + _img(data, "explore_cycles", "accuracy vs cycles") + "</div>\n")
    rows, classes = [], []
    for p in results["points"]:
        zero = " / ".join(f"{z:.0%}" for z in p.get("zero_tiles", [])[:-1])
        rows.append([f"{p['bits']}", f"{p['sparsity']:.0%}", _e(zero), f"{p['accuracy']:.4f}",
                     f"{p['total_bits']:,}", f"{p['weight_bits']:,}",
                     f"{p['index_bits'] + p['scale_bits']:,}", f"{p['activation_bits']:,}",
                     _num(p.get("cycles_per_inference"), "{:,.1f}"),
                     "yes" if p.get("pareto_memory") else "",
                     "yes" if p.get("pareto_cycles") else "",
                     "yes" if p.get("pareto_all") else ""])
        classes.append("pareto" if p.get("pareto_all") else "")
    parts.append(_table(["weight bits", "zero tiles", "zero tiles per hidden layer",
                         "accuracy", "memory bits", "weights",
                         "index + scales", "activations", "cycles/inference",
                         "Pareto (memory)", "Pareto (cycles)", "Pareto (all)"], rows,
                        left=0, cls=classes))
    return "".join(parts)


def _section_workloads(data: dict) -> str:
    parts = ["<h2>The papers' workloads at PE = 32 (exact performance model)</h2>\n"]
    results = data.get("workloads")
    if results is None:
        parts.append(_missing(f"not run: make bench (benchmarks/bench_workloads.py; no "
                              f"{data.get('workloads_file', 'build/bench/workloads.json')})"))
        return "".join(parts)
    parts.append('<p class="note">EIE\'s FC layers at its published densities; VGG-16 and '
                 'ResNet-18 at 224 x 224 (im2col) at 12.5 % weights and 50 % activations, each '
                 'engine imposing its own structure. Convolutions are estimated on sampled '
                 'vectors and scaled (benchmarks/bench_workloads.py documents every '
                 'choice).</p>\n')
    for workload, per_engine in results["model"].items():
        rows = [[_e(workload), _e(name), f"{total['cycles']:,.0f}",
                 f"{total['macs_per_cycle_per_pe']:.2f}", f"{total['storage_bits'] / 1e6:,.1f}",
                 _num(None if total["energy_pj"] is None else total["energy_pj"] / 1e6,
                      "{:,.1f}")]
                for name, total in per_engine.items()]
        parts.append(_table(["workload", "engine", "cycles", "useful MACs / cycle / PE",
                             "storage Mbit", "energy uJ"], rows, left=2))
    checks = results.get("rtl_spot_check") or {}
    if checks:
        rows = [[_e(name), _e(check.get("skipped", "")) or
                 f"{check['mismatches']} mismatches, {check['tiles']} tiles, cycles "
                 f"{check['rtl_cycles']:,} (model {check['model_cycles']:,})"]
                for name, check in checks.items()]
        parts.append(_table(["engine", "Alex-7 through the RTL"], rows, left=2))
    return "".join(parts)


def write_html(data: dict) -> str:
    """The page: inline CSS, tables, ``<img>`` of the PNG files beside it; no script and no
    external reference."""
    title = f"secateur report, PE={data['pe']}"
    body = "".join([
        f"<h1>{_e(title)}</h1>\n",
        f'<p class="note">Generated {_e(data["generated"])} by <code>secateur report --pe '
        f'{data["pe"]}</code> (<code>make report PE={data["pe"]}</code>). Every number on '
        f'this page is in <code>report.json</code> beside it.</p>\n',
        _section_summary(data), _section_sweep(data), _section_net(data),
        _section_explore(data), _section_workloads(data)])
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}"
            f"</body>\n</html>\n")
