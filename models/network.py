"""Whole networks on real data: the digits data set, MLP/CNN definitions, float training,
knowledge distillation, the per-engine compression hooks, activation-scale calibration and
the integer golden model of a whole compressed network.

Data
    :func:`load_digits_split`: scikit-learn's ``load_digits`` (1797 8x8 images, 10 classes),
    a fixed stratified split (``SPLIT_SEED``, 20 % = 360 test images). Pixels ``0..16`` become
    floats ``x / 16`` in ``[0, 1]``; the int8 input of layer 0 is ``round(127 * x / 16)``
    (input scale ``1 / 127``).

Networks (:data:`ARCHS`)
    Every weight layer is a matrix ``(M, N)`` without bias (no engine has a bias input).
    A convolution is lowered by im2col: its ``k x k`` patches (zero padding ``k // 2``,
    stride 1) are the rows of a ``(B * H * W, C * k * k)`` matrix, in ``F.unfold``'s order
    (channel-major, then kernel row, then kernel column), so the conv layer *is* a linear
    layer of ``C * k * k`` columns. Max pooling and flattening happen on the host between
    layers, on int8 values (pooling commutes with the monotonic requantizer).

Integer arithmetic
    Layer ``i`` gets int8 ``x_i`` with scale ``s_i`` (``x ~= s_i * x_i``); its weights are
    ``W ~= s_w * W_int``; the engine's accumulator ``acc = W_int @ x_i`` (or the CIM formula)
    times ``s_w * s_i`` is the float output, so hidden layers carry the requantizer
    ``mult / 2**shift ~= s_w * s_i / s_{i+1}`` with ReLU, and the last layer returns the raw
    accumulators as logits (one scale per tensor, so their argmax is the class).

Engine hooks (:data:`HOOKS`)
    One entry per engine: default engine settings chosen from the network's layer shapes,
    default options, and ``compress(teacher, data, engine_params, options, ...)`` returning
    a :class:`Compressed` (the trained student and its exported engine weights dicts). An
    engine without an entry is reported as unsupported.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .common import minibatches
from .requant import RequantParams, requant_for_scale, requantize_torch

__all__ = [
    "SPLIT_SEED", "INPUT_SCALE", "ARCHS", "LayerSpec", "load_digits_split", "quantize_inputs",
    "Net", "build_float", "train_float", "accuracy", "kd_targets", "kd_loss",
    "QLayer", "QNet", "Compressed", "HOOKS", "supported_engines", "layer_shapes",
    "calibrate", "requant_for_scale", "network_forward", "golden_forward", "golden_layer",
    "im2col", "model_bits",
]

#: The train/test split is fixed, whatever the training seed.
SPLIT_SEED = 0
TEST_FRACTION = 0.2
CLASSES = 10
#: int8 input of layer 0 = round(INPUT_SCALE^-1 * x / 16).
INPUT_SCALE = 1.0 / 127.0


# --------------------------------------------------------------------------- data

def load_digits_split(seed: int = SPLIT_SEED):
    """``(x_train, y_train, x_test, y_test)``: float32 ``(B, 64)`` in ``[0, 1]`` and int64
    labels; 1437 training and 360 test images, stratified, fixed by ``seed``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    x = digits.data.astype(np.float32) / 16.0
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_FRACTION, random_state=seed, stratify=y)
    return (torch.from_numpy(x_train), torch.from_numpy(y_train),
            torch.from_numpy(x_test), torch.from_numpy(y_test))


def quantize_inputs(x: torch.Tensor) -> np.ndarray:
    """Float images in ``[0, 1]`` -> the int8 inputs of layer 0 (scale :data:`INPUT_SCALE`)."""
    return np.clip(np.round(x.numpy().astype(np.float64) / INPUT_SCALE), -128, 127).astype(np.int8)


# --------------------------------------------------------------------------- networks

@dataclass(frozen=True)
class LayerSpec:
    """One weight layer. ``kind`` is ``fc`` (``cin -> cout``) or ``conv`` (``cin`` channels
    of ``size x size`` images -> ``cout`` channels, ``k x k`` kernel, padding ``k // 2``),
    followed by ReLU (all but the last layer) and, for conv, an optional ``pool x pool`` max
    pool."""
    kind: str
    cin: int
    cout: int
    k: int = 1
    size: int = 1
    pool: int = 1

    @property
    def cols(self) -> int:
        return self.cin * self.k * self.k if self.kind == "conv" else self.cin

    @property
    def vectors_per_image(self) -> int:
        return self.size * self.size if self.kind == "conv" else 1


ARCHS: dict[str, tuple[LayerSpec, ...]] = {
    "mlp": (LayerSpec("fc", 64, 128), LayerSpec("fc", 128, 64), LayerSpec("fc", 64, CLASSES)),
    "cnn": (LayerSpec("conv", 1, 16, k=3, size=8, pool=2),
            LayerSpec("conv", 16, 32, k=3, size=4, pool=2),
            LayerSpec("fc", 128, CLASSES)),
    # The smoke-test network: small enough to train in a second and simulate in a blink.
    "tiny": (LayerSpec("fc", 64, 16), LayerSpec("fc", 16, CLASSES)),
}


def layer_shapes(arch: str, pad_rows: int = 1) -> list[tuple[int, int]]:
    """``(M, N)`` of each weight layer; the last layer's ``M`` rounded up to ``pad_rows``."""
    specs = ARCHS[arch]
    shapes = [(spec.cout, spec.cols) for spec in specs]
    rows, cols = shapes[-1]
    shapes[-1] = (-(-rows // pad_rows) * pad_rows, cols)
    return shapes


class Net(nn.Module):
    """A network of :data:`ARCHS` whose weight layers are any modules mapping
    ``(R, N) -> (R, M)`` (``nn.Linear``, ``TernaryLinear``, ``PermutedDiagonalLinear``,
    pruned ``nn.Linear``...). Conv layers call them on im2col patches.

    ``act_scales`` (one per hidden layer), when set, fake-quantizes the hidden activations
    to the int8 grid (straight-through), as the integer pipeline does. Only the first
    :data:`CLASSES` outputs of the last layer are logits (the rest is padding).
    """

    def __init__(self, arch: str, layers: list[nn.Module]):
        super().__init__()
        self.arch = arch
        self.specs = ARCHS[arch]
        self.layers = nn.ModuleList(layers)
        self.act_scales: list[float] | None = None

    def forward(self, x: torch.Tensor, record: list | None = None) -> torch.Tensor:
        batch = x.shape[0]
        h = x
        last = len(self.specs) - 1
        for index, (spec, layer) in enumerate(zip(self.specs, self.layers)):
            if spec.kind == "conv":
                image = h.reshape(batch, spec.cin, spec.size, spec.size)
                cols = F.unfold(image, spec.k, padding=spec.k // 2).transpose(1, 2)
                out = layer(cols.reshape(-1, spec.cols))
                out = out.reshape(batch, spec.size, spec.size, -1).permute(0, 3, 1, 2)
            else:
                out = layer(h.reshape(batch, -1))
            if index < last:
                out = F.relu(out)
                if record is not None:
                    record.append(out.detach())
                if self.act_scales is not None:
                    out = _fake_quant(out, self.act_scales[index])
                if spec.kind == "conv" and spec.pool > 1:
                    out = F.max_pool2d(out, spec.pool)
            h = out
        return h[:, :CLASSES]


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, value):
        return torch.round(value)

    @staticmethod
    def backward(ctx, grad):
        return grad


def _fake_quant(value: torch.Tensor, scale: float) -> torch.Tensor:
    return torch.clamp(_RoundSTE.apply(value / scale), 0, 127) * scale


def build_float(arch: str, seed: int) -> Net:
    """The float network of ``arch`` (bias-free ``nn.Linear`` layers), seeded."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Net(arch, [nn.Linear(spec.cols, spec.cout, bias=False) for spec in ARCHS[arch]])


def train_float(model: nn.Module, data, *, epochs: int = 40, lr: float = 3e-3,
                batch_size: int = 64, seed: int = 0, progress: Callable | None = None) -> list:
    """Adam with cosine decay and cross-entropy; returns the epoch losses."""
    inputs, labels = data
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, epochs))
    losses = []
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(epochs):
            total = 0.0
            for index in minibatches(inputs.shape[0], batch_size, generator):
                optimizer.zero_grad(set_to_none=True)
                loss = F.cross_entropy(model(inputs[index]), labels[index])
                loss.backward()
                optimizer.step()
                total += loss.item() * index.numel()
            schedule.step()
            losses.append(total / inputs.shape[0])
            if progress:
                progress(1)
    model.eval()
    return losses


def accuracy(logits, labels) -> float:
    logits = torch.as_tensor(np.asarray(logits)) if not isinstance(logits, torch.Tensor) else logits
    labels = torch.as_tensor(np.asarray(labels)) if not isinstance(labels, torch.Tensor) else labels
    return float((logits.argmax(dim=1) == labels).double().mean())


# --------------------------------------------------------------------------- distillation

def kd_targets(teacher: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Float targets ``(B, 1 + CLASSES)``: the label, then the teacher's logits; what
    :func:`kd_loss` unpacks (the compression trainers take one target tensor)."""
    with torch.no_grad():
        logits = teacher(inputs)
    return torch.cat([labels.to(logits.dtype)[:, None], logits], dim=1)


def kd_loss(weight: float = 0.7, temperature: float = 4.0) -> Callable:
    """``(1 - weight) * CE(label) + weight * T^2 * KL(teacher_T || student_T)`` on
    :func:`kd_targets`; ``weight = 0`` is plain cross-entropy (training without KD)."""
    def loss(outputs, targets):
        labels = targets[:, 0].long()
        hard = F.cross_entropy(outputs, labels)
        if weight == 0:
            return hard
        soft = F.kl_div(F.log_softmax(outputs / temperature, dim=1),
                        F.softmax(targets[:, 1:] / temperature, dim=1),
                        reduction="batchmean") * temperature ** 2
        return (1 - weight) * hard + weight * soft
    return loss


def train_student(model: nn.Module, data, loss_fn: Callable, *, epochs: int, lr: float = 2e-3,
                  batch_size: int = 64, seed: int = 0, after_step: Callable | None = None,
                  progress: Callable | None = None) -> None:
    """Generic fine-tuning loop (Adam, cosine decay) on packed :func:`kd_targets`."""
    inputs, targets = data
    generator = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params or epochs <= 0:
        return
    optimizer = torch.optim.Adam(params, lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, epochs))
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(epochs):
            for index in minibatches(inputs.shape[0], batch_size, generator):
                optimizer.zero_grad(set_to_none=True)
                loss_fn(model(inputs[index]), targets[index]).backward()
                optimizer.step()
                if after_step:
                    after_step()
            schedule.step()
            if progress:
                progress(1)
    model.eval()


# --------------------------------------------------------------------------- integer network

@dataclass
class QLayer:
    """One exported layer: the engine's weights dict (what ``engine.layer`` takes, requant
    keys included on hidden layers) and extra facts saved beside it in ``layer{i}.npz``."""
    weights: dict
    extra: dict = field(default_factory=dict)


@dataclass
class QNet:
    """A compressed integer network: its architecture, the engine and engine parameters it
    was exported for, and one :class:`QLayer` per weight layer."""
    arch: str
    engine: str
    params: dict
    layers: list
    act_scales: list

    @property
    def specs(self) -> tuple[LayerSpec, ...]:
        return ARCHS[self.arch]


def im2col(x: np.ndarray, spec: LayerSpec) -> np.ndarray:
    """Integer ``(B, C, S, S)`` images -> ``(B * S * S, C * k * k)`` patches, in
    ``F.unfold``'s column order and row order ``(b, y, x)``; zero padding ``k // 2``."""
    batch, size, k, pad = x.shape[0], spec.size, spec.k, spec.k // 2
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    patches = np.empty((batch, spec.cin, k, k, size, size), dtype=x.dtype)
    for row in range(k):
        for col in range(k):
            patches[:, :, row, col] = padded[:, :, row:row + size, col:col + size]
    return patches.transpose(0, 4, 5, 1, 2, 3).reshape(batch * size * size, spec.cols)


def _maxpool(x: np.ndarray, pool: int) -> np.ndarray:
    batch, channels, size, _ = x.shape
    out = size // pool
    x = x[:, :, :out * pool, :out * pool].reshape(batch, channels, out, pool, out, pool)
    return x.max(axis=(3, 5))


def network_forward(qnet: QNet, x_int8: np.ndarray, layer_fn: Callable) -> tuple[np.ndarray, list]:
    """Run int8 inputs ``(B, 64)`` through the network, one weight layer at a time.

    ``layer_fn(index, qlayer, vectors)`` computes one layer on int8 ``(R, N)`` vectors and
    returns int64 ``(R, M)`` (int8-range values for hidden layers, accumulators for the
    last). The host glue between layers (im2col, max pooling, flattening) is here, so the
    golden model and the RTL run see the same glue. Returns the logits ``(B, CLASSES)`` and
    each layer's ``(inputs, outputs)``.
    """
    batch = x_int8.shape[0]
    h = x_int8
    trace = []
    for index, (spec, qlayer) in enumerate(zip(qnet.specs, qnet.layers)):
        if spec.kind == "conv":
            vectors = im2col(h.reshape(batch, spec.cin, spec.size, spec.size), spec)
        else:
            vectors = h.reshape(batch, -1)
        vectors = np.ascontiguousarray(vectors, dtype=np.int8)
        out = np.asarray(layer_fn(index, qlayer, vectors), dtype=np.int64)
        trace.append((vectors, out))
        if index < len(qnet.specs) - 1:
            if out.min() < -128 or out.max() > 127:
                raise ValueError(f"layer {index} produced values outside int8")
            out = out.astype(np.int8)
            if spec.kind == "conv":
                out = out.reshape(batch, spec.size, spec.size, -1).transpose(0, 3, 1, 2)
                if spec.pool > 1:
                    out = _maxpool(out, spec.pool)
        h = out
    return h.reshape(batch, -1)[:, :CLASSES], trace


def golden_layer(qnet: QNet, qlayer: QLayer, vectors: np.ndarray) -> np.ndarray:
    """The torch integer golden model of one layer: exact int64 accumulators (the CIM
    engine's ADC formula for ``cim``), then the shared requantizer if the layer has one."""
    x = torch.from_numpy(vectors.astype(np.int64))
    w = torch.from_numpy(np.asarray(qlayer.weights["w"]).astype(np.int64))
    if qnet.engine == "cim":
        from .cim import cim_matvec
        acc = cim_matvec(w, x, qnet.params["rows"], qnet.params["adc_bits"],
                         qnet.params["adc_shift"])
    else:
        acc = x @ w.T
    params = RequantParams.from_npz(qlayer.weights)
    if params is not None:
        mult = torch.from_numpy(params.mult_per_channel(acc.shape[1]))
        acc = requantize_torch(acc, mult, params.shift, params.relu)
    return acc.numpy()


def golden_forward(qnet: QNet, x_int8: np.ndarray) -> tuple[np.ndarray, list]:
    """Logits of the whole integer network (the golden model) and its per-layer trace."""
    return network_forward(qnet, x_int8, lambda index, qlayer, vectors:
                           golden_layer(qnet, qlayer, vectors))


# --------------------------------------------------------------------------- calibration

def calibrate(model: Net, inputs: torch.Tensor, percentile: float = 99.99) -> list[float]:
    """Activation scales of the hidden layers: the ``percentile`` of each post-ReLU
    activation over ``inputs``, divided by 127."""
    record: list = []
    saved, model.act_scales = model.act_scales, None
    model.eval()
    with torch.no_grad():
        model(inputs, record=record)
    model.act_scales = saved
    scales = []
    for values in record:
        top = float(np.percentile(values.reshape(-1).numpy(), percentile))
        scales.append(max(top, 1e-6) / 127.0)
    return scales


def int8_tensor(weight: torch.Tensor) -> tuple[np.ndarray, float]:
    """Symmetric per-tensor int8 ``(w_int, scale)``, ``w ~= scale * w_int``, |w_int| <= 127."""
    weight = weight.detach().to(torch.float64)
    scale = float(weight.abs().max()) / 127.0 or 1.0
    return np.clip(np.round(weight.numpy() / scale), -127, 127).astype(np.int8), scale


def _export(student: Net, matrices: list[tuple[dict, float]], act_scales: list[float],
            engine: str, params: dict, extra: Callable | None = None) -> QNet:
    """Turn per-layer ``(weights dict without requant, weight scale)`` into a :class:`QNet`."""
    layers = []
    scales = [INPUT_SCALE] + list(act_scales)
    last = len(matrices) - 1
    for index, (weights, w_scale) in enumerate(matrices):
        weights = dict(weights)
        if index < last:
            weights.update(requant_for_scale(
                w_scale * scales[index] / scales[index + 1], True).to_npz())
        layers.append(QLayer(weights, extra(index) if extra else {}))
    return QNet(student.arch, engine, dict(params), layers, list(act_scales))


# --------------------------------------------------------------------------- compression hooks

@dataclass
class Compressed:
    """A compression hook's result: the student (float, with compressed weights), the
    exported integer network and facts for the report."""
    student: Net
    qnet: QNet
    info: dict = field(default_factory=dict)


def _student_loss(kd: bool) -> Callable:
    return kd_loss(0.7 if kd else 0.0)


def _qat(student: Net, data, loss_fn, act_scales, *, epochs, seed, lr=1e-3, after_step=None,
         progress=None):
    """Gradual quantization, last step: fine-tune with the hidden activations fake-quantized
    to the calibrated int8 grid, then recalibrate."""
    student.act_scales = act_scales
    train_student(student, data, loss_fn, epochs=epochs, lr=lr, seed=seed,
                  after_step=after_step, progress=progress)
    student.act_scales = None


# ternary ----------------------------------------------------------------------------------

def _ternary_defaults(shapes):
    return {"pe": 8, "fan_in": 16}


def _ternary_compress(teacher: Net, data, params: dict, options: dict, *, kd: bool, seed: int,
                      progress=None) -> Compressed:
    from . import ternary as tm
    pe, fan_in = params["pe"], params["fan_in"]
    student = copy.deepcopy(teacher)
    student.layers = nn.ModuleList([tm.TernaryLinear.from_linear(layer, delta=options["delta"])
                                    for layer in teacher.layers])
    loss_fn = _student_loss(kd)
    epochs = options["epochs"]
    # 1. ternary-aware training with group lasso + WPC (after a float warm-up); prune later,
    #    per layer, so small layers keep all their few tiles.
    tm.train_ternary_pruned(student, data, pe=pe, fan_in=fan_in,
                            lambda_group=options["lambda_group"], target_zero_groups=0.0,
                            epochs=epochs, warmup_epochs=options["warmup"], finetune_epochs=0,
                            seed=seed, lr=options["lr"], loss_fn=loss_fn)
    if progress:
        progress(epochs + options["warmup"])
    # 2. PE-wise structured pruning of whole tiles, per layer.
    for index, layer in enumerate(student.layers):
        groups = np.prod(tm.group_grid(tuple(layer.weight.shape), pe, fan_in))
        # The classifier (few, partly padded tiles) and tiny layers keep every tile.
        if groups >= 4 and (index < len(student.layers) - 1 or options["prune_last"]):
            tm.prune_layer_groups(layer, pe, fan_in, zero_fraction=options["zero_groups"])
    # 3. fine-tune with the tile masks frozen.
    tm.train_ternary_pruned(student, data, pe=pe, fan_in=fan_in, lambda_group=0.0,
                            target_zero_groups=0.0, epochs=0, warmup_epochs=0,
                            finetune_epochs=epochs, seed=seed + 1, lr=options["lr"] / 2,
                            loss_fn=loss_fn)
    if progress:
        progress(epochs)
    for layer in student.layers:
        layer.ternary = True
    act_scales = calibrate(student, data[0])

    def reapply():
        with torch.no_grad():
            for layer in student.layers:
                layer.weight.mul_(layer.mask)
    _qat(student, data, loss_fn, act_scales, epochs=options["qat_epochs"], seed=seed + 2,
         after_step=reapply, progress=progress)
    act_scales = calibrate(student, data[0])
    matrices = []
    for layer in student.layers:
        codes, alpha = layer.ternary_codes()
        matrices.append(({"w": codes.numpy().astype(np.int8)}, float(alpha)))
    qnet = _export(student, matrices, act_scales, "ternary", params)
    zero = [tm.zero_group_fraction(q.weights["w"], pe, fan_in) for q in qnet.layers]
    return Compressed(student, qnet, {"zero_group_fraction": zero})


# dense int8 (the baseline) ------------------------------------------------------------------

def _int8_matrices(student: Net, weight_of: Callable) -> list[tuple[dict, float]]:
    out = []
    for layer in student.layers:
        w_int, scale = int8_tensor(weight_of(layer))
        out.append(({"w": w_int}, scale))
    return out


def _dense_defaults(shapes):
    return {"pe": 8, "fan_in": 16}


def _dense_compress(teacher: Net, data, params, options, *, kd, seed, progress=None):
    student = copy.deepcopy(teacher)
    loss_fn = _student_loss(kd)
    act_scales = calibrate(student, data[0])
    _qat(student, data, loss_fn, act_scales, epochs=options["qat_epochs"], seed=seed,
         progress=progress)
    act_scales = calibrate(student, data[0])
    return Compressed(student, _export(student, _int8_matrices(student, lambda l: l.weight),
                                       act_scales, "dense", params))


# lfsr ---------------------------------------------------------------------------------------

def _lfsr_defaults(shapes):
    return {"pe": 8}


def _pruned_weight(layer: nn.Module) -> torch.Tensor:
    if hasattr(layer, "weight_orig"):
        return (layer.weight_orig * layer.weight_mask).detach()
    return layer.weight.detach()


def _lfsr_compress(teacher: Net, data, params, options, *, kd, seed, progress=None):
    from . import lfsr as lm
    student = copy.deepcopy(teacher)
    loss_fn = _student_loss(kd)
    report = lm.train_lfsr_pruned(student, data, density=options["density"],
                                  stages=options["stages"], epochs_per_stage=options["epochs"],
                                  final_epochs=options["epochs"], lr=options["lr"],
                                  loss_fn=loss_fn, seed=seed)
    if progress:
        progress(options["stages"] * options["epochs"] + options["epochs"])
    names = [f"layers.{index}" for index in range(len(student.layers))]
    act_scales = calibrate(student, data[0])

    def remask():
        pass  # the prune re-parametrization keeps pruned weights at zero
    _qat(student, data, loss_fn, act_scales, epochs=options["qat_epochs"], seed=seed + 1,
         after_step=remask, progress=progress)
    act_scales = calibrate(student, data[0])
    matrices = []
    for name, layer in zip(names, student.layers):
        w_int, scale = int8_tensor(_pruned_weight(layer))
        method = lm.lfsr_pruning_of(layer)
        matrices.append(({"w": w_int, "seeds": np.asarray(method.seeds, dtype=np.int64),
                          "k": np.asarray(method.k, dtype=np.int64)}, scale))
    qnet = _export(student, matrices, act_scales, "lfsr", params)
    density = [int(q.weights["k"]) / q.weights["w"].shape[1] for q in qnet.layers]
    return Compressed(student, qnet, {"density": density, "ks": report.ks})


# permdiag -----------------------------------------------------------------------------------

def _permdiag_defaults(shapes):
    # 8 PEs in 4 slots: a build a few times cheaper than the default 32 PEs, same schedule.
    return {"pe": 8, "min_p": 2, "max_p": 16}


def _permdiag_compress(teacher: Net, data, params, options, *, kd, seed, progress=None):
    from . import permdiag as pm
    p = options["p"]
    specs = teacher.specs
    shapes = layer_shapes(teacher.arch, pad_rows=p)
    for rows, cols in shapes:
        if rows % p or cols % p:
            raise ValueError(f"permdiag block size p = {p} must divide every layer shape; "
                             f"{teacher.arch} has a {rows}x{cols} layer")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers = [pm.PermutedDiagonalLinear(cols, rows, p, seed=seed + index)
                  for index, (rows, cols) in enumerate(shapes)]
    student = Net(teacher.arch, layers)
    del specs
    loss_fn = _student_loss(kd)
    train_student(student, data, loss_fn, epochs=options["epochs"], lr=options["lr"], seed=seed,
                  progress=progress)
    act_scales = calibrate(student, data[0])
    _qat(student, data, loss_fn, act_scales, epochs=options["qat_epochs"], seed=seed + 1,
         progress=progress)
    act_scales = calibrate(student, data[0])
    matrices = []
    for layer in student.layers:
        w_int, scale = int8_tensor(layer.dense_weight())
        matrices.append(({"w": w_int, "p": np.asarray(p, dtype=np.int64)}, scale))
    return Compressed(student, _export(student, matrices, act_scales, "permdiag", params),
                      {"p": p})


# cim ----------------------------------------------------------------------------------------

def _cim_defaults(shapes):
    macro_rows, macro_cols = 64, 128
    slots = macro_cols // 8
    macros = max(math.ceil(cols / macro_rows) * math.ceil(rows / slots) for rows, cols in shapes)
    # rows = 8 needs a 4-bit ADC to be lossless; 3 bits saturate on dense bit columns.
    return {"pe": macros, "macro_rows": macro_rows, "macro_cols": macro_cols, "rows": 8,
            "adc_bits": 3}


def _cim_compress(teacher: Net, data, params, options, *, kd, seed, progress=None):
    from . import cim as cm
    student = copy.deepcopy(teacher)
    loss_fn = _student_loss(kd)
    strength = options["bits_strength"]

    def penalty():
        # BitS-Net: fewer ones in the int8 weights -> fewer live bit columns, less saturation.
        total = 0.0
        for layer in student.layers:
            scale = layer.weight.detach().abs().max() / 127.0
            total = total + cm.bits_penalty(layer.weight, scale)
        return total

    def regularized(outputs, targets):
        return loss_fn(outputs, targets) + strength * penalty()
    train_student(student, data, regularized if strength else loss_fn,
                  epochs=options["epochs"], lr=options["lr"], seed=seed, progress=progress)
    act_scales = calibrate(student, data[0])
    _qat(student, data, loss_fn, act_scales, epochs=options["qat_epochs"], seed=seed + 1,
         progress=progress)
    act_scales = calibrate(student, data[0])
    matrices = _int8_matrices(student, lambda layer: layer.weight)
    extra = {"rows": params["rows"], "adc_bits": params["adc_bits"],
             "adc_shift": params["adc_shift"]}
    qnet = _export(student, matrices, act_scales, "cim", params,
                   extra=lambda index: {key: np.asarray(value, dtype=np.int64)
                                        for key, value in extra.items()})
    density = [cm.bit_density(q.weights["w"]) for q in qnet.layers]
    return Compressed(student, qnet, {"bit_density": density,
                                      "lossless": cm.is_lossless(params["rows"],
                                                                 params["adc_bits"],
                                                                 params["adc_shift"])})


@dataclass(frozen=True)
class Hook:
    """How one engine plugs into ``secateur net``."""
    defaults: Callable          # layer shapes -> default engine settings
    compress: Callable          # see _ternary_compress
    options: dict               # default training/compression options (``--set`` overrides)
    archs: tuple = ("mlp", "cnn", "tiny")
    pad_rows: Callable = lambda options: 1   # last layer's rows rounded up to this


_COMMON = {"epochs": 30, "qat_epochs": 5, "lr": 1e-2}

HOOKS: dict[str, Hook] = {
    "ternary": Hook(_ternary_defaults, _ternary_compress,
                    dict(_COMMON, delta=0.05, lambda_group=1e-3, zero_groups=0.5, warmup=5, prune_last=0,
                         lr=5e-3)),
    "dense": Hook(_dense_defaults, _dense_compress, dict(_COMMON, lr=1e-3)),
    "lfsr": Hook(_lfsr_defaults, _lfsr_compress,
                 dict(_COMMON, density=0.25, stages=4, epochs=6, lr=1e-2)),
    "permdiag": Hook(_permdiag_defaults, _permdiag_compress,
                     dict(_COMMON, p=8, epochs=60, lr=1e-2), archs=("mlp", "tiny"),
                     pad_rows=lambda options: options["p"]),
    "cim": Hook(_cim_defaults, _cim_compress,
                dict(_COMMON, bits_strength=1e-4, epochs=10, lr=1e-3)),
}


def supported_engines() -> list[str]:
    return list(HOOKS)


# --------------------------------------------------------------------------- model size

def model_bits(qnet: QNet) -> dict:
    """Bits of the compressed model as the engine stores it, and of the float32 original.

    Counted per layer: weight values (ternary: 2 bits per position of every stored tile;
    int8 engines: 8 bits per stored value), indices (the ternary engine's tile bitmap; LFSR
    seeds; permdiag offsets, ``log2 p`` bits per block), the per-layer requantizer
    (16-bit ``mult`` per value, 6-bit ``shift``, 1-bit ``relu``). The float32 reference
    counts ``32 * M * N`` per layer (the unpadded network).
    """
    params = qnet.params
    specs = qnet.specs
    total, layers = 0, []
    for spec, qlayer in zip(specs, qnet.layers):
        w = np.asarray(qlayer.weights["w"])
        rows, cols = w.shape
        values = index = 0
        if qnet.engine == "ternary":
            pe, fan_in = params["pe"], params["fan_in"]
            rb, cb = math.ceil(rows / pe), math.ceil(cols / fan_in)
            padded = np.zeros((rb * pe, cb * fan_in), dtype=bool)
            padded[:rows, :cols] = w != 0
            nonzero = padded.reshape(rb, pe, cb, fan_in).any(axis=(1, 3))
            values = int(nonzero.sum()) * pe * fan_in * 2
            index = rb * cb
        elif qnet.engine == "lfsr":
            from .lfsr import lfsr_width
            values = rows * int(qlayer.weights["k"]) * 8
            index = rows * lfsr_width(cols) + 32
        elif qnet.engine == "permdiag":
            p = int(qlayer.weights["p"])
            values = rows * cols // p * 8
            index = (rows // p) * (cols // p) * max(1, math.ceil(math.log2(p)))
        else:
            values = rows * cols * 8
        scales = 0
        if "mult" in qlayer.weights:
            scales = 16 * np.asarray(qlayer.weights["mult"]).size + 6 + 1
        bits = values + index + scales
        layers.append({"value_bits": values, "index_bits": index, "scale_bits": scales,
                       "bits": bits, "float32_bits": 32 * spec.cout * spec.cols})
        total += bits
    float_bits = sum(layer["float32_bits"] for layer in layers)
    return {"bits": total, "float32_bits": float_bits, "ratio": float_bits / total,
            "layers": layers}
