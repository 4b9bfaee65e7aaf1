"""What the whole-network flows (``secateur net``, ``secateur compile``) share: progress bars
and lines, and the per-layer and per-network records of an RTL run (cycles, utilization,
energy)."""

from __future__ import annotations

__all__ = ["progress_bar", "progress_lines", "layer_record", "energy_totals"]


class _NullBar:
    def update(self, n=1):
        pass

    def close(self):
        pass


def progress_bar(total: int, desc: str, enabled: bool, unit: str = "ep"):
    """A tqdm bar of ``total`` steps, or a bar that shows nothing (``enabled`` False, or tqdm
    missing: progress bars are a convenience, never a requirement)."""
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is None or not enabled:
        return _NullBar()
    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)


def progress_lines(enabled: bool):
    """A reporter of progress lines for :func:`~secateur.gen.processes.heartbeat` (a harness
    build, say): each line goes to stderr as ``secateur: <line>``, through tqdm when it is
    there so that an open bar stays whole; None when not ``enabled``."""
    if not enabled:
        return None
    import sys
    try:
        from tqdm import tqdm
    except ImportError:
        return lambda line: print(f"secateur: {line}", file=sys.stderr, flush=True)
    return lambda line: tqdm.write(f"secateur: {line}", file=sys.stderr)


def layer_record(index: int, layer, engine, result, vectors, images: int,
                 mismatches: int) -> dict:
    """The report of one layer's RTL run (``layer`` a :class:`~secateur.gen.tiling.TiledLayer`,
    ``result`` its :class:`~secateur.gen.tiling.TiledRun` of ``vectors`` for ``images``
    network inputs)."""
    useful = result.counters["useful_ops"]
    energy = result.counters.get("energy_pj")
    return {
        "layer": index, "rows": layer.rows, "cols": layer.cols,
        "vectors": int(vectors.shape[0]), "tiles": len(layer.tiles),
        "load_beats": layer.load_beats(), "cycles": int(result.cycles),
        "load_cycles": int(result.load_cycles),
        "cycles_per_image": result.cycles / images,
        "utilization": useful / (result.cycles * engine.lanes),
        "useful_ops": int(useful), "mismatches": int(mismatches),
        "sim_seconds": round(result.wall_seconds, 3),
        "requant": None if layer.requant is None else layer.requant.as_dict(),
        "energy_pj": energy,
        "energy_pj_per_image": None if energy is None else energy / images,
        "energy_breakdown": result.counters.get("energy_breakdown", {}),
        "energy_missing": result.counters.get("energy_missing", []),
    }


def energy_totals(per_layer: list, images: int) -> dict:
    """The network's energy (:mod:`secateur.models.energy`): ``energy_pj`` over all test
    images and ``energy_pj_per_inference``, both ``None`` if a layer lacks a sourced figure
    (``energy_missing`` names the actions), and the per-inference ``energy_breakdown``."""
    missing = sorted({action for layer in per_layer for action in layer["energy_missing"]})
    breakdown: dict = {}
    for layer in per_layer:
        for action, value in layer["energy_breakdown"].items():
            if value is None or breakdown.get(action, 0.0) is None:
                breakdown[action] = None
            else:
                breakdown[action] = breakdown.get(action, 0.0) + value / images
    energies = [layer["energy_pj"] for layer in per_layer]
    total = None if None in energies else float(sum(energies))
    return {"energy_pj": total,
            "energy_pj_per_inference": None if total is None else total / images,
            "energy_breakdown": dict(sorted(breakdown.items())), "energy_missing": missing}
