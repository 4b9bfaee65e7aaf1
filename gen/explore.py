"""``secateur explore``: design-space exploration of weight precision against structured
sparsity on the digits MLP, in the spirit of the seed thesis (structured sparsity plus low
precision), with the Pareto-optimal designs marked.

Design points
    Weight precision ``bits`` in :data:`PRECISIONS` (2, 4, 8) times structured sparsity in
    :data:`SPARSITIES` (0, 50, 75, 90 %). Sparsity is PE-wise group sparsity as in
    :mod:`secateur.models.ternary`: whole ``pe x fan_in`` tiles (:data:`TILE`, 8 x 16, the
    tile of ``secateur net``'s ternary and dense engines) are zero, chosen by L2 norm
    (:func:`~secateur.models.ternary.group_mask`), in the two hidden layers; the classifier
    (8 tiles, partly padding) keeps every tile, as ``secateur net`` does.

Training (per point, a few seconds; cached under ``<out>/cache``)
    The float teacher is ``secateur net``'s (:func:`secateur.gen.net._teacher`, cached in
    ``<out>``). The student starts from it and is trained with knowledge distillation
    (:func:`~secateur.models.network.kd_loss`) and weights fake-quantized to ``bits``
    (symmetric, levels ``-(2**(bits-1)-1) .. 2**(bits-1)-1`` times one scale per layer,
    chosen to minimize the squared error; 2 bits is ternary), straight-through. Tiles are
    pruned in :data:`PRUNE_STAGES` stages of :data:`STAGE_EPOCHS` epochs each, then
    :data:`QAT_EPOCHS` epochs with the hidden activations fake-quantized to int8.

Measurements
    *accuracy*: the integer golden model (:func:`~secateur.models.network.golden_forward`:
    ``bits``-bit weights in int8, int8 activations, the shared requantizer) on the 360 test
    images. *memory*: weights as the group-skipping engine stores them (every kept tile whole,
    ``pe * fan_in * bits`` bits, padding included), a 1-bit skip bitmap per tile when the
    design prunes tiles, the requantizers (16-bit ``mult``, 6-bit ``shift``, 1-bit ``relu``
    per hidden layer), plus activations: every layer's int8 input vector (64 + 128 + 64
    values) and the 10 logits as 32-bit accumulators. *cycles* per inference: ``rtl``
    (default) runs every layer's zero-tile structure (its sign pattern) with the test images'
    real activations through the ternary engine's RTL (``pe=8, fan_in=16``, one skip-bitmap
    tile per PE row block and cycle) with :class:`~secateur.sim.runner.BatchSimulator`;
    ``model`` takes that engine's exact performance model (:mod:`secateur.models.perf`),
    which gives the RTL's cycles without simulating.
    A ``bits``-bit array with the same tile schedule and bit-parallel multipliers issues the
    same cycles, so cycles depend on the sparsity structure, not on the precision.

Pareto (:func:`pareto_optimal`)
    A design is Pareto-optimal for (memory, accuracy) when no other design has at most its
    memory and at least its accuracy, one of them strictly; likewise for (cycles, accuracy)
    and for all three objectives together.
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from .safeio import write_text

__all__ = ["PRECISIONS", "SPARSITIES", "TILE", "pareto_optimal", "quantize_weight",
           "memory_bits", "explore", "plot_explore", "results_table"]

PRECISIONS = (2, 4, 8)
SPARSITIES = (0.0, 0.5, 0.75, 0.9)
#: ``(pe, fan_in)`` of the pruned tiles and of the ternary engine that measures cycles.
TILE = (8, 16)
ARCH = "mlp"
TEACHER_EPOCHS = 40
PRUNE_STAGES = 4
STAGE_EPOCHS = 8
QAT_EPOCHS = 6
LR = 2e-3
CACHE_VERSION = 1
#: The logits leave as accumulators; counted at this width in the activation memory.
LOGIT_BITS = 32


# --------------------------------------------------------------------------- Pareto

def pareto_optimal(points: Sequence[Sequence[float]],
                   maximize: Sequence[bool] | None = None) -> list[bool]:
    """Which points no other point dominates.

    Parameters
    ----------
    points : sequence of sequences of float
        One tuple of objectives per design, all of the same length.
    maximize : sequence of bool, optional
        Per objective, ``True`` if larger is better; by default every objective is
        minimized.

    Returns
    -------
    list of bool
        ``True`` where the point is Pareto-optimal: no other point is at least as good in
        every objective and strictly better in one. Equal points do not dominate each other.

    Raises
    ------
    ValueError
        If the points do not all have as many objectives as ``maximize``, or an objective
        is not a finite number.
    """
    rows = [tuple(float(value) for value in point) for point in points]
    if not rows:
        return []
    width = len(rows[0])
    maximize = tuple(maximize) if maximize is not None else (False,) * width
    if len(maximize) != width or any(len(row) != width for row in rows):
        raise ValueError(f"every point needs {len(maximize)} objectives")
    if any(not math.isfinite(value) for row in rows for value in row):
        raise ValueError("objectives must be finite numbers")
    signed = [tuple(-v if up else v for v, up in zip(row, maximize)) for row in rows]

    def dominates(a, b):
        return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))
    return [not any(dominates(other, point) for j, other in enumerate(signed) if j != i)
            for i, point in enumerate(signed)]


# --------------------------------------------------------------------------- quantization

def _qmax(bits: int) -> int:
    return (1 << (bits - 1)) - 1


def quantize_weight(weight, bits: int):
    """Symmetric ``bits``-bit quantization of one weight matrix: ``(codes, scale)`` with
    integer codes in ``[-(2**(bits-1)-1), 2**(bits-1)-1]`` and ``weight ~= scale * codes``.
    The scale is ``clip * max|w| / qmax`` for the ``clip`` in 0.05 .. 1.0 (steps of 0.05)
    with the least squared error (zeros stay zero at any scale)."""
    import torch
    w = weight.detach().to(torch.float64)
    top = float(w.abs().max())
    qmax = _qmax(bits)
    if top == 0.0:
        return torch.zeros_like(w), 1.0
    best = None
    for clip in np.arange(1, 21) / 20:
        scale = clip * top / qmax
        codes = torch.clamp(torch.round(w / scale), -qmax, qmax)
        error = float((codes * scale - w).square().sum())
        if best is None or error < best[0]:
            best = (error, codes, scale)
    return best[1], float(best[2])


def _quant_linear(weight, mask, bits: int):
    """A bias-free linear layer with masked weights fake-quantized to ``bits``."""
    import torch
    from torch import nn

    class _STE(torch.autograd.Function):
        @staticmethod
        def forward(ctx, value):
            codes, scale = quantize_weight(value, bits)
            return (codes * scale).to(value.dtype)

        @staticmethod
        def backward(ctx, grad):
            return grad

    class QuantLinear(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(weight.detach().clone())
            self.register_buffer("mask", mask.clone())
            self.bits = bits

        def effective(self):
            return _STE.apply(self.weight * self.mask)

        def forward(self, x):
            return torch.nn.functional.linear(x, self.effective())

    return QuantLinear()


# --------------------------------------------------------------------------- memory

def memory_bits(weights: list[np.ndarray], bits: int, pruned: bool,
                tile: tuple[int, int] = TILE) -> dict:
    """Memory of one design (see the module documentation): ``weight_bits`` (kept tiles),
    ``index_bits`` (skip bitmap, when ``pruned``), ``scale_bits`` (requantizers),
    ``activation_bits`` and ``total_bits``. ``weights`` are the integer matrices."""
    pe, fan_in = tile
    weight_bits = index_bits = 0
    for w in weights:
        rows, cols = w.shape
        rb, cb = math.ceil(rows / pe), math.ceil(cols / fan_in)
        padded = np.zeros((rb * pe, cb * fan_in), dtype=bool)
        padded[:rows, :cols] = w != 0
        kept = int(padded.reshape(rb, pe, cb, fan_in).any(axis=(1, 3)).sum()) if pruned \
            else rb * cb
        weight_bits += kept * pe * fan_in * bits
        index_bits += rb * cb if pruned else 0
    scale_bits = (len(weights) - 1) * (16 + 6 + 1)
    activations = sum(w.shape[1] for w in weights) * 8 + weights[-1].shape[0] * LOGIT_BITS
    return {"weight_bits": weight_bits, "index_bits": index_bits, "scale_bits": scale_bits,
            "activation_bits": activations,
            "total_bits": weight_bits + index_bits + scale_bits + activations}


# --------------------------------------------------------------------------- training

def _digest(value) -> str:
    import hashlib
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]


def _train_point(teacher, data, bits: int, sparsity: float, seed: int, epochs: dict):
    """The compressed integer network (a ``dense``-engine QNet, ``bits``-bit codes in int8)
    and its zero-tile fractions."""
    import torch
    from ..models import network as nw
    from ..models import ternary as tm
    pe, fan_in = TILE
    x_train, y_train = data
    targets = nw.kd_targets(teacher, x_train, y_train)
    loss_fn = nw.kd_loss(0.7)
    student = copy.deepcopy(teacher)
    student.layers = torch.nn.ModuleList([
        _quant_linear(layer.weight, torch.ones_like(layer.weight), bits)
        for layer in teacher.layers])
    last = len(student.layers) - 1

    def reapply():
        with torch.no_grad():
            for layer in student.layers:
                layer.weight.mul_(layer.mask)
    stages = epochs["stages"] if sparsity > 0 else 1
    for stage in range(1, stages + 1):
        keep = 1.0 - sparsity * stage / stages
        for index, layer in enumerate(student.layers):
            if index == last or sparsity == 0:
                continue
            with torch.no_grad():
                groups = tm.group_mask(layer.weight * layer.mask, pe, fan_in,
                                       keep_fraction=keep)
                layer.mask.copy_(tm.expand_group_mask(groups, tuple(layer.weight.shape), pe,
                                                      fan_in).to(layer.mask.dtype))
        reapply()
        nw.train_student(student, (x_train, targets), loss_fn, epochs=epochs["stage"], lr=LR,
                         seed=seed + stage, after_step=reapply)
    scales = nw.calibrate(student, x_train)
    student.act_scales = scales
    nw.train_student(student, (x_train, targets), loss_fn, epochs=epochs["qat"], lr=LR / 2,
                     seed=seed + 100, after_step=reapply)
    student.act_scales = None
    scales = nw.calibrate(student, x_train)
    matrices = []
    for layer in student.layers:
        codes, scale = quantize_weight(layer.weight * layer.mask, bits)
        matrices.append(({"w": codes.numpy().astype(np.int8)}, scale))
    qnet = nw._export(student, matrices, scales, "dense", {"bits": bits, "tile": list(TILE)})
    zero = [tm.zero_group_fraction(q.weights["w"], pe, fan_in) for q in qnet.layers]
    return qnet, zero


def _cycles(qnets: dict, x_int: np.ndarray, mode: str, log) -> dict:
    """Cycles per inference of every design (see the module documentation)."""
    from ..models import network as nw
    from ..models import perf
    from .registry import make_engine
    pe, fan_in = TILE
    shapes = [q.weights["w"].shape for q in next(iter(qnets.values())).layers]
    engine = make_engine("ternary", pe=pe, fan_in=fan_in,
                         max_rows=max(rows for rows, _ in shapes),
                         max_cols=max(cols for _, cols in shapes))
    simulator = None
    if mode == "rtl":
        from ..sim.runner import BatchSimulator
        simulator = BatchSimulator(engine, progress=log)
        start = time.perf_counter()
        simulator.build()
        log(f"ternary engine {engine.params}: harness ready in "
            f"{time.perf_counter() - start:.1f} s")
    images = x_int.shape[0]
    out = {}
    for key, qnet in qnets.items():
        _, trace = nw.golden_forward(qnet, x_int)
        total, exact = 0, True
        for qlayer, (vectors, _) in zip(qnet.layers, trace):
            layer = engine.layer({"w": np.sign(qlayer.weights["w"]).astype(np.int8)})
            if simulator is None:
                total += perf.cycles(layer, vectors)
            else:
                result = simulator.run(layer, vectors)
                exact &= bool(np.array_equal(result.y, layer.reference(vectors)))
                total += int(result.cycles)
        out[key] = {"cycles_per_inference": total / images, "rtl_exact": exact
                    if simulator is not None else None}
    return out


def explore(out: str | Path = "build/explore", *, seed: int = 0, precisions=PRECISIONS,
            sparsities=SPARSITIES, cycles: str = "rtl", epochs: dict | None = None,
            images: int = 0, plots: bool = True, progress: bool = True, log=print) -> dict:
    """Run (or load from ``<out>/cache``) every design point, write ``<out>/explore.json``
    and the plots, and return the results.

    Parameters
    ----------
    out : path
        Output directory.
    seed : int
        Training seed, ``>= 0``.
    precisions : sequence of int
        Weight bits, each in ``[2, 8]``.
    sparsities : sequence of float
        Fractions of zero tiles in the hidden layers, each in ``[0, 1)``.
    cycles : str
        ``rtl`` (simulated) or ``model`` (the ternary engine's exact performance model).
    epochs : dict, optional
        ``{"teacher", "stages", "stage", "qat"}`` overrides (small values for tests).
    images : int
        Test images evaluated; 0 = all 360.

    Raises
    ------
    ValueError
        If an argument is out of range or ``out`` cannot be written.
    """
    import torch
    from ..models import network as nw
    from .net import _load, _save, _teacher

    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"--seed must be an integer >= 0, not {seed!r}")
    precisions = tuple(precisions)
    sparsities = tuple(float(s) for s in sparsities)
    if not precisions or any(isinstance(b, bool) or not isinstance(b, int) or not 2 <= b <= 8
                             for b in precisions):
        raise ValueError(f"--bits must be integers in [2, 8], not {list(precisions)}")
    if not sparsities or any(not 0.0 <= s < 1.0 for s in sparsities):
        raise ValueError(f"--sparsity must be fractions in [0, 1), not {list(sparsities)}")
    if cycles not in ("rtl", "model"):
        raise ValueError(f"--cycles must be rtl or model, not {cycles!r}")
    epochs = {"teacher": TEACHER_EPOCHS, "stages": PRUNE_STAGES, "stage": STAGE_EPOCHS,
              "qat": QAT_EPOCHS, **(epochs or {})}
    out = Path(out)
    try:
        (out / "cache").mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"cannot write the explore directory {out}: "
                         f"{error.strerror or error}") from None

    torch.set_num_threads(1)
    start = time.perf_counter()
    x_train, y_train, x_test, y_test = nw.load_digits_split()
    teacher, _, _ = _teacher(ARCH, seed, epochs["teacher"], (x_train, y_train), out,
                             progress)
    with torch.no_grad():
        float_accuracy = nw.accuracy(teacher(x_test), y_test)
    count = x_test.shape[0] if images == 0 else min(images, x_test.shape[0])
    x_int = nw.quantize_inputs(x_test)[:count]
    labels = y_test.numpy()[:count]

    qnets, points = {}, []
    for bits in precisions:
        for sparsity in sparsities:
            key = _digest([ARCH, bits, sparsity, seed, epochs, TILE, CACHE_VERSION])
            path = out / "cache" / f"point-b{bits}-s{round(sparsity * 1000):04d}-{key}.pt"
            point_start = time.perf_counter()
            payload = _load(path)
            cached = payload is not None
            if not cached:
                qnet, zero = _train_point(teacher, (x_train, y_train), bits, sparsity, seed,
                                          epochs)
                payload = {"qnet": qnet, "zero_tiles": zero}
                _save(path, payload)
            qnet = payload["qnet"]
            logits, _ = nw.golden_forward(qnet, x_int)
            weights = [np.asarray(q.weights["w"]) for q in qnet.layers]
            memory = memory_bits(weights, bits, pruned=sparsity > 0)
            points.append({"bits": bits, "sparsity": sparsity,
                           "zero_tiles": [round(z, 4) for z in payload["zero_tiles"]],
                           "accuracy": nw.accuracy(logits, labels), **memory,
                           "cached": cached,
                           "seconds": round(time.perf_counter() - point_start, 2)})
            qnets[(bits, sparsity)] = qnet
            if progress:
                log(f"  {bits}-bit, {sparsity:.0%} zero tiles: accuracy "
                    f"{points[-1]['accuracy']:.4f}, {memory['total_bits']:,} bits"
                    f"{' (cached)' if cached else ''}")
    measured = _cycles(qnets, x_int, cycles, log if progress else (lambda *a: None))
    for point in points:
        point.update(measured[(point["bits"], point["sparsity"])])
    _mark_pareto(points)
    results = {
        "network": ARCH, "seed": seed, "images": count, "float_accuracy": float_accuracy,
        "tile": {"pe": TILE[0], "fan_in": TILE[1]}, "epochs": epochs,
        "cycles_source": ("rtl: the ternary engine's RTL (BatchSimulator) on each design's "
                          "zero-tile structure" if cycles == "rtl" else
                          "model: the ternary engine's exact performance model (models/perf)"),
        "memory": "weights (kept tiles whole) + skip bitmap + requantizers + activations "
                  "(int8 layer inputs, 32-bit logits)",
        "points": points,
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    try:
        write_text(out / "explore.json", json.dumps(results, indent=2) + "\n")
        if plots:
            results["plots"] = plot_explore(results, out)
            write_text(out / "explore.json", json.dumps(results, indent=2) + "\n")
    except OSError as error:
        raise ValueError(f"cannot write the explore directory {out}: "
                         f"{error.strerror or error}") from None
    return results


def _mark_pareto(points: list[dict]) -> None:
    acc = [p["accuracy"] for p in points]
    mem = [p["total_bits"] for p in points]
    cyc = [p["cycles_per_inference"] for p in points]
    for name, objectives, maximize in (
            ("pareto_memory", list(zip(mem, acc)), (False, True)),
            ("pareto_cycles", list(zip(cyc, acc)), (False, True)),
            ("pareto_all", list(zip(mem, cyc, acc)), (False, False, True))):
        for point, flag in zip(points, pareto_optimal(objectives, maximize)):
            point[name] = flag


# --------------------------------------------------------------------------- output

def plot_explore(results: dict, out_dir: str | Path) -> list[str]:
    """``accuracy_vs_memory.png`` and ``accuracy_vs_cycles.png`` in ``out_dir``: every design
    by precision (marker) and sparsity (label), Pareto-optimal designs circled and joined.
    Returns the file names."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out_dir = Path(out_dir)
    points = results["points"]
    markers = {2: "o", 4: "s", 8: "^"}
    names = []
    for key, flag, label, fname in (
            ("total_bits", "pareto_memory", "total memory (kbit, weights + activations)",
             "accuracy_vs_memory.png"),
            ("cycles_per_inference", "pareto_cycles", "cycles per inference",
             "accuracy_vs_cycles.png")):
        fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
        scale = 1000.0 if key == "total_bits" else 1.0
        for bits in sorted({p["bits"] for p in points}):
            chosen = [p for p in points if p["bits"] == bits]
            ax.scatter([p[key] / scale for p in chosen], [p["accuracy"] for p in chosen],
                       marker=markers.get(bits, "D"), label=f"{bits}-bit weights", zorder=3)
            for p in chosen:
                ax.annotate(f"{p['sparsity']:.0%}", (p[key] / scale, p["accuracy"]),
                            textcoords="offset points", xytext=(4, 4), fontsize=7)
        front = sorted((p for p in points if p[flag]), key=lambda p: p[key])
        ax.plot([p[key] / scale for p in front], [p["accuracy"] for p in front], "k--",
                linewidth=0.8, drawstyle="steps-post", zorder=2)
        ax.scatter([p[key] / scale for p in front], [p["accuracy"] for p in front], s=160,
                   facecolors="none", edgecolors="crimson", linewidths=1.4,
                   label="Pareto-optimal", zorder=4)
        if key == "total_bits":  # an 18x range
            ax.set_xscale("log")
            label += " (log scale)"
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy (integer model)")
        ax.set_title(f"digits {results['network']}: weight precision x tile sparsity",
                     fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        fig.savefig(out_dir / fname, metadata={"Software": None})
        plt.close(fig)
        names.append(fname)
    return names


def results_table(results: dict) -> str:
    """The table ``secateur explore`` prints."""
    lines = [f"{'bits':>4} {'sparsity':>8} {'zero tiles':>11} {'accuracy':>8} "
             f"{'memory bits':>11} {'cycles/inf':>10} {'pareto mem':>10} {'pareto cyc':>10} "
             f"{'pareto all':>10}"]
    for p in results["points"]:
        zero = "/".join(f"{z:.2f}" for z in p["zero_tiles"][:-1])
        lines.append(f"{p['bits']:>4} {p['sparsity']:>8.0%} {zero:>11} {p['accuracy']:>8.4f} "
                     f"{p['total_bits']:>11,} {p['cycles_per_inference']:>10.1f} "
                     f"{'*' if p['pareto_memory'] else '':>10} "
                     f"{'*' if p['pareto_cycles'] else '':>10} "
                     f"{'*' if p['pareto_all'] else '':>10}")
    lines.append(f"float teacher {results['float_accuracy']:.4f}; cycles: "
                 f"{results['cycles_source']}; memory: {results['memory']}")
    return "\n".join(lines)
