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
    default options, ``train(student, data, engine_params, options, ...)``, which compresses
    and trains any student of the :class:`Net` protocol in place (``secateur net``'s
    :class:`Net` and ``secateur compile --compress qat``'s trainable graph both go through
    it), ``export`` (``secateur net``'s :class:`QNet`), and ``compress(teacher, ...)``, the two
    for ``secateur net``, returning a :class:`Compressed` (the trained student and its
    exported engine weights dicts). An engine without an entry is reported as unsupported.
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
from .quantize import activation_scale, fake_int8, fake_quant, int8_weights
from .requant import RequantParams, requant_for_scale, requantize_torch

__all__ = [
    "SPLIT_SEED", "INPUT_SCALE", "ARCHS", "LayerSpec", "load_digits_split", "quantize_inputs",
    "Net", "RowScaled", "ternary_layer", "layer_weight", "apply_layer", "trained_form", "build_float", "train_float",
    "accuracy", "kd_targets", "kd_loss", "train_student",
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
    to the int8 grid (straight-through), as the integer pipeline does; ``weight_quant``, when
    set, the weights (:func:`apply_layer`). Only the first :data:`CLASSES` outputs of the
    last layer are logits (the rest is padding).

    This is the *student protocol* the compression hooks (:data:`HOOKS`) train: weight
    layers in ``layers``, ``forward(x, record)`` appending every activation that the integer
    network quantizes (before fake quantization) to ``record``, ``act_scales`` and
    ``weight_quant`` as here, and ``row_scales`` (per layer, whether its export has one
    weight scale per row). ``secateur compile``'s trainable IR
    (:class:`secateur.gen.compile.trainable.GraphModule`) follows it too.
    """

    def __init__(self, arch: str, layers: list[nn.Module]):
        super().__init__()
        self.arch = arch
        self.specs = ARCHS[arch]
        self.layers = nn.ModuleList(layers)
        self.act_scales: list[float] | None = None
        self.weight_quant: list[bool] | None = None

    @property
    def row_scales(self) -> list[bool]:
        """``secateur net`` exports one weight scale per layer (:func:`int8_tensor`)."""
        return [False] * len(self.layers)

    def forward(self, x: torch.Tensor, record: list | None = None) -> torch.Tensor:
        batch = x.shape[0]
        h = x
        last = len(self.specs) - 1
        for index, spec in enumerate(self.specs):
            if spec.kind == "conv":
                image = h.reshape(batch, spec.cin, spec.size, spec.size)
                cols = F.unfold(image, spec.k, padding=spec.k // 2).transpose(1, 2)
                out = apply_layer(self, index, cols.reshape(-1, spec.cols))
                out = out.reshape(batch, spec.size, spec.size, -1).permute(0, 3, 1, 2)
            else:
                out = apply_layer(self, index, h.reshape(batch, -1))
            if index < last:
                out = F.relu(out)
                if record is not None:
                    record.append(out.detach())
                if self.act_scales is not None:
                    out = fake_quant(out, self.act_scales[index])
                if spec.kind == "conv" and spec.pool > 1:
                    out = F.max_pool2d(out, spec.pool)
            h = out
        return h[:, :CLASSES]


class RowScaled(nn.Module):
    """A ternary layer with a trainable scale per output row: ``y = scale * T(x) + bias``,
    ``T`` a bias-free :class:`~secateur.models.ternary.TernaryLinear` (``inner``).

    A folded batch norm leaves the rows of a user's layer at very different magnitudes,
    which one threshold and one ``alpha`` per layer (``TernaryLinear``'s) cannot follow;
    the engines' requantizer has a multiplier per row, so each row's ternary codes may have
    their own magnitude ``alpha * scale[m]`` at no cost (:func:`trained_form`).
    :meth:`from_linear` starts ``inner`` from the rows normalised to ``max|w| = 1`` and
    ``scale`` from their maxima, so the layer computes the same function before
    ternarization.
    """

    def __init__(self, inner: nn.Module, scale: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.inner = inner
        self.in_features, self.out_features = inner.in_features, inner.out_features
        self.scale = nn.Parameter(scale.detach().clone())
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())

    @classmethod
    def from_linear(cls, linear: nn.Linear, delta: float) -> "RowScaled":
        from .ternary import TernaryLinear
        weight = linear.weight.detach()
        peak = weight.abs().amax(dim=1)
        peak = torch.where(peak > 0, peak, torch.ones_like(peak))
        normalised = nn.Linear(linear.in_features, linear.out_features, bias=False,
                               dtype=weight.dtype)
        with torch.no_grad():
            normalised.weight.copy_(weight / peak[:, None])
        return cls(TernaryLinear.from_linear(normalised, delta=delta), peak, linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x) * self.scale
        return out if self.bias is None else out + self.bias


def ternary_layer(layer: nn.Module):
    """The :class:`~secateur.models.ternary.TernaryLinear` of a weight layer (itself, or a
    :class:`RowScaled`'s ``inner``), or None."""
    from .ternary import TernaryLinear
    layer = layer.inner if isinstance(layer, RowScaled) else layer
    return layer if isinstance(layer, TernaryLinear) else None


def layer_weight(layer: nn.Module) -> torch.Tensor:
    """The ``(M, N)`` weight a trained layer computes with, differentiable: ternarized
    (:class:`~secateur.models.ternary.TernaryLinear` in ternary mode, its pruned tiles
    zeroed; times its row scales in a :class:`RowScaled`), expanded
    (:class:`~secateur.models.permdiag.PermutedDiagonalLinear`), masked (a
    ``torch.nn.utils.prune`` re-parametrization, as LFSR pruning), or ``layer.weight``."""
    from .permdiag import PermutedDiagonalLinear
    from .ternary import TernaryLinear, ternarize
    if isinstance(layer, RowScaled):
        return layer.scale[:, None] * layer_weight(layer.inner)
    if isinstance(layer, TernaryLinear):
        weight = layer.masked_weight()
        return ternarize(weight, layer.delta) if layer.ternary else weight
    if isinstance(layer, PermutedDiagonalLinear):
        return layer.dense_weight()
    if hasattr(layer, "weight_orig"):
        return layer.weight_orig * layer.weight_mask
    return layer.weight


def apply_layer(model: nn.Module, index: int, x: torch.Tensor,
                rows: int | None = None) -> torch.Tensor:
    """Weight layer ``index`` of a student (:class:`Net` protocol) on ``(R, N)`` vectors.

    Vectors narrower than the layer (a permuted-diagonal layer padded to whole blocks) are
    zero padded; with ``rows``, only the first ``rows`` outputs are kept. With
    ``model.weight_quant`` set (per layer, the export's per-row flag), the weight is
    fake-quantized to int8 by the export's rule (:func:`secateur.models.quantize.fake_int8`),
    except a ternary layer's, whose ternary codes already are its integer form.
    """
    layer = model.layers[index]
    width = getattr(layer, "in_features", x.shape[1])
    if width > x.shape[1]:
        x = F.pad(x, (0, width - x.shape[1]))
    flags = getattr(model, "weight_quant", None)
    if flags is None or ternary_layer(layer) is not None:
        out = layer(x)
    else:
        out = F.linear(x, fake_int8(layer_weight(layer), flags[index]), layer.bias)
    return out if rows is None else out[:, :rows]


def trained_form(layer: nn.Module) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """A trained layer as ``secateur compile`` quantizes it: its float weight
    (:func:`layer_weight`, float64 ``(M, N)``), its bias (or None) and the structure its
    training fixed (:class:`secateur.models.quantize.WeightForm`): a ternary layer's codes
    and ``alpha`` (per row for a :class:`RowScaled` one: ``alpha * |scale[m]|``, the codes of
    a row of negative scale negated), an LFSR-pruned layer's seeds and ``k``, a
    permuted-diagonal layer's offsets; none for a plain layer."""
    from .lfsr_pruning import lfsr_pruning_of
    from .permdiag import PermutedDiagonalLinear
    structure: dict = {}
    with torch.no_grad():
        weight = layer_weight(layer).detach().to(torch.float64).numpy()
        bias = None if layer.bias is None else layer.bias.detach().to(torch.float64).numpy()
    ternary = ternary_layer(layer)
    if ternary is not None:
        codes, alpha = ternary.ternary_codes()
        codes = codes.numpy().astype(np.int64)
        alpha = np.full(codes.shape[0], alpha)
        if ternary is not layer:
            scale = layer.scale.detach().to(torch.float64).numpy()
            codes, alpha = codes * np.sign(scale)[:, None], alpha * np.abs(scale)
        codes[alpha == 0] = 0
        structure = {"codes": codes.astype(np.int8), "alpha": alpha}
        weight = alpha[:, None] * codes
    elif isinstance(layer, PermutedDiagonalLinear):
        structure = {"offsets": layer.offsets.cpu().numpy().astype(np.int64)}
    elif hasattr(layer, "weight_orig"):
        method = lfsr_pruning_of(layer)
        structure = {"seeds": np.asarray(method.seeds, dtype=np.int64),
                     "k": np.asarray(method.k, dtype=np.int64)}
    return weight, bias, structure


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

def calibrate(model: nn.Module, inputs: torch.Tensor,
              percentile: float = 99.99) -> list[float]:
    """Activation scales of a student (:class:`Net` protocol): every activation it records,
    over ``inputs``, by the rule of :func:`secateur.models.quantize.activation_scale` (the
    ``percentile`` of ``|x|``, divided by 127); for :class:`Net`, its post-ReLU hidden
    activations."""
    record: list = []
    saved, model.act_scales = model.act_scales, None
    model.eval()
    with torch.no_grad():
        model(inputs, record=record)
    model.act_scales = saved
    return [activation_scale(values.numpy(), percentile) for values in record]


def int8_tensor(weight: torch.Tensor) -> tuple[np.ndarray, float]:
    """Symmetric per-tensor int8 ``(w_int, scale)``, ``w ~= scale * w_int``, |w_int| <= 127:
    :func:`secateur.models.quantize.int8_weights` with one scale for the matrix."""
    codes, scales = int8_weights(weight.detach().to(torch.float64).numpy(), per_channel=False)
    return codes, float(scales[0])


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


def _qat(student: nn.Module, data, loss_fn, options: dict, *, seed: int, after_step=None,
         progress=None) -> None:
    """Gradual quantization, last step: calibrate, then fine-tune ``options["qat_epochs"]``
    with the activations fake-quantized to that int8 grid (and, with
    ``options["fq_weights"]``, the weights to int8 by the export's rule: :func:`apply_layer`)."""
    student.act_scales = calibrate(student, data[0])
    if options.get("fq_weights"):
        student.weight_quant = list(student.row_scales)
    train_student(student, data, loss_fn, epochs=options["qat_epochs"], lr=1e-3, seed=seed,
                  after_step=after_step, progress=progress)
    student.act_scales = None
    student.weight_quant = None


def _progress(progress, steps: int) -> None:
    if progress:
        progress(steps)


# The train functions below work on any student of the Net protocol (secateur net's Net,
# secateur compile's GraphModule): they replace its weight layers and train it in place,
# with ``loss_fn(outputs, targets)`` (knowledge distillation: kd_loss on kd_targets), and
# return facts for the report. ``progress(n)`` is told of every n epochs done.

# ternary ----------------------------------------------------------------------------------

def _ternary_defaults(shapes):
    return {"pe": 8, "fan_in": 16}


def _ternary_train(student, data, params: dict, options: dict, *, loss_fn, seed: int,
                   progress=None) -> dict:
    """Ternary + PE-wise structured pruning + WPC (:mod:`secateur.models.ternary`); with
    ``options["row_scales"]``, every layer a :class:`RowScaled` (an ``alpha`` per row)."""
    from . import ternary as tm
    pe, fan_in = params["pe"], params["fan_in"]
    make = RowScaled.from_linear if options.get("row_scales") else tm.TernaryLinear.from_linear
    student.layers = nn.ModuleList([make(layer, delta=options["delta"])
                                    for layer in student.layers])
    ternary = [ternary_layer(layer) for layer in student.layers]
    epochs = options["epochs"]
    # 1. ternary-aware training with group lasso + WPC (after a float warm-up); prune later,
    #    per layer, so small layers keep all their few tiles.
    tm.train_ternary_pruned(student, data, pe=pe, fan_in=fan_in,
                            lambda_group=options["lambda_group"], target_zero_groups=0.0,
                            epochs=epochs, warmup_epochs=options["warmup"], finetune_epochs=0,
                            seed=seed, lr=options["lr"], loss_fn=loss_fn, progress=progress)
    # 2. PE-wise structured pruning of whole tiles, per layer.
    for index, layer in enumerate(ternary):
        groups = np.prod(tm.group_grid(tuple(layer.weight.shape), pe, fan_in))
        # The classifier (few, partly padded tiles) and tiny layers keep every tile.
        if groups >= 4 and (index < len(ternary) - 1 or options["prune_last"]):
            tm.prune_layer_groups(layer, pe, fan_in, zero_fraction=options["zero_groups"])
    # 3. fine-tune with the tile masks frozen.
    tm.train_ternary_pruned(student, data, pe=pe, fan_in=fan_in, lambda_group=0.0,
                            target_zero_groups=0.0, epochs=0, warmup_epochs=0,
                            finetune_epochs=epochs, seed=seed + 1, lr=options["lr"] / 2,
                            loss_fn=loss_fn, progress=progress)
    for layer in ternary:
        layer.ternary = True

    def reapply():
        with torch.no_grad():
            for layer in ternary:
                layer.weight.mul_(layer.mask)
    _qat(student, data, loss_fn, options, seed=seed + 2, after_step=reapply,
         progress=progress)
    return {"zero_group_fraction": [tm.zero_group_fraction(layer.ternary_codes()[0], pe, fan_in)
                                    for layer in ternary]}


def _ternary_export(student: Net, params: dict, act_scales, info: dict):
    matrices = []
    for layer in student.layers:
        codes, alpha = layer.ternary_codes()
        matrices.append(({"w": codes.numpy().astype(np.int8)}, float(alpha)))
    return _export(student, matrices, act_scales, "ternary", params), info


# dense int8 (the baseline) ------------------------------------------------------------------

def _int8_matrices(student: Net) -> list[tuple[dict, float]]:
    out = []
    for layer in student.layers:
        w_int, scale = int8_tensor(layer_weight(layer))
        out.append(({"w": w_int}, scale))
    return out


def _dense_defaults(shapes):
    return {"pe": 8, "fan_in": 16}


def _dense_train(student, data, params, options, *, loss_fn, seed, progress=None) -> dict:
    """Quantization-aware fine-tuning of the int8 network (:func:`_qat`)."""
    _qat(student, data, loss_fn, options, seed=seed, progress=progress)
    return {}


def _dense_export(student, params, act_scales, info):
    return _export(student, _int8_matrices(student), act_scales, "dense", params), info


# lfsr ---------------------------------------------------------------------------------------

def _lfsr_defaults(shapes):
    return {"pe": 8}


def _lfsr_train(student, data, params, options, *, loss_fn, seed, progress=None) -> dict:
    """Gradual LFSR pruning (:func:`secateur.models.lfsr_pruning.train_lfsr_pruned`), then QAT;
    the prune re-parametrization keeps pruned weights at zero throughout."""
    from . import lfsr_pruning as lm
    report = lm.train_lfsr_pruned(student, data, density=options["density"],
                                  stages=options["stages"], epochs_per_stage=options["epochs"],
                                  final_epochs=options["epochs"], lr=options["lr"],
                                  loss_fn=loss_fn, seed=seed, progress=progress)
    _qat(student, data, loss_fn, options, seed=seed + 1, progress=progress)
    return {"ks": report.ks}


def _lfsr_export(student, params, act_scales, info):
    from . import lfsr_pruning as lm
    matrices = []
    for layer in student.layers:
        w_int, scale = int8_tensor(layer_weight(layer))
        method = lm.lfsr_pruning_of(layer)
        matrices.append(({"w": w_int, "seeds": np.asarray(method.seeds, dtype=np.int64),
                          "k": np.asarray(method.k, dtype=np.int64)}, scale))
    qnet = _export(student, matrices, act_scales, "lfsr", params)
    density = [int(q.weights["k"]) / q.weights["w"].shape[1] for q in qnet.layers]
    return qnet, {"density": density, "ks": info["ks"]}


# permdiag -----------------------------------------------------------------------------------

def _permdiag_defaults(shapes):
    # 8 PEs in 4 slots: a build a few times cheaper than the default 32 PEs, same schedule.
    return {"pe": 8, "min_p": 2, "max_p": 16}


def _permdiag_check(teacher: Net, options: dict) -> None:
    p = options["p"]
    for rows, cols in layer_shapes(teacher.arch, pad_rows=p):
        if rows % p or cols % p:
            raise ValueError(f"permdiag block size p = {p} must divide every layer shape; "
                             f"{teacher.arch} has a {rows}x{cols} layer")


def _permdiag_train(student, data, params, options, *, loss_fn, seed, progress=None) -> dict:
    """Permuted-diagonal layers (:class:`secateur.models.permdiag.PermutedDiagonalLinear`,
    zero padded to whole ``p x p`` blocks), trained from scratch at offsets drawn from
    ``seed`` (``options["init"] == "scratch"``, PermDNN's recipe) or initialised by the
    projection of the trained weights (``"project"``, :func:`secateur.models.permdiag.
    project`), then fine-tuned and QAT."""
    from . import permdiag as pm
    p = options["p"]
    old = list(student.layers)
    dtype = old[0].weight.dtype
    if options.get("init", "scratch") == "scratch":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            layers = [pm.PermutedDiagonalLinear(-(-layer.in_features // p) * p,
                                                -(-layer.out_features // p) * p, p,
                                                seed=seed + index)
                      for index, layer in enumerate(old)]
    else:
        layers = [pm.PermutedDiagonalLinear.from_dense(
            pm.pad_to_blocks(layer_weight(layer).detach(), p), p, project_weight=True,
            bias=None if layer.bias is None else pm.pad_to_blocks(layer.bias.detach(), p))
            for layer in old]
    student.layers = nn.ModuleList(layers).to(dtype)
    train_student(student, data, loss_fn, epochs=options["epochs"], lr=options["lr"], seed=seed,
                  progress=progress)
    _qat(student, data, loss_fn, options, seed=seed + 1, progress=progress)
    return {"p": p}


def _permdiag_export(student, params, act_scales, info):
    matrices = []
    for layer in student.layers:
        w_int, scale = int8_tensor(layer.dense_weight())
        matrices.append(({"w": w_int, "p": np.asarray(info["p"], dtype=np.int64)}, scale))
    return _export(student, matrices, act_scales, "permdiag", params), info


# cim ----------------------------------------------------------------------------------------

def _cim_defaults(shapes):
    macro_rows, macro_cols = 64, 128
    slots = macro_cols // 8
    macros = max(math.ceil(cols / macro_rows) * math.ceil(rows / slots) for rows, cols in shapes)
    # rows = 8 needs a 4-bit ADC to be lossless; 3 bits saturate on dense bit columns.
    return {"pe": macros, "macro_rows": macro_rows, "macro_cols": macro_cols, "rows": 8,
            "adc_bits": 3}


def _cim_train(student, data, params, options, *, loss_fn, seed, progress=None) -> dict:
    """Training with the BitS-Net penalty (:func:`secateur.models.cim.bits_penalty`), then
    QAT."""
    from . import cim as cm
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
    _qat(student, data, loss_fn, options, seed=seed + 1, progress=progress)
    return {}


def _cim_export(student, params, act_scales, info):
    from . import cim as cm
    extra = {"rows": params["rows"], "adc_bits": params["adc_bits"],
             "adc_shift": params["adc_shift"]}
    qnet = _export(student, _int8_matrices(student), act_scales, "cim", params,
                   extra=lambda index: {key: np.asarray(value, dtype=np.int64)
                                        for key, value in extra.items()})
    density = [cm.bit_density(q.weights["w"]) for q in qnet.layers]
    return qnet, {"bit_density": density,
                  "lossless": cm.is_lossless(params["rows"], params["adc_bits"],
                                             params["adc_shift"])}


@dataclass(frozen=True)
class Hook:
    """How one engine's compression is trained: ``train`` (any student of the :class:`Net`
    protocol, in place; ``secateur net`` and ``secateur compile --compress qat`` both call
    it), ``export`` (``secateur net``'s :class:`QNet`), the default settings and options."""
    defaults: Callable          # layer shapes -> default engine settings
    train: Callable             # see _ternary_train
    export: Callable            # (student, params, act_scales, info) -> (QNet, info)
    options: dict               # default training/compression options (``--set`` overrides)
    epochs: Callable            # options -> the epochs train reports to ``progress``
    archs: tuple = ("mlp", "cnn", "tiny")
    pad_rows: Callable = lambda options: 1   # last layer's rows rounded up to this
    check: Callable = lambda teacher, options: None   # secateur net's refusals, before training

    def compress(self, teacher: Net, data, params: dict, options: dict, *, kd: bool,
                 seed: int, progress=None) -> Compressed:
        """``secateur net``: train a copy of ``teacher`` and export it."""
        self.check(teacher, options)
        student = copy.deepcopy(teacher)
        info = self.train(student, data, params, options, loss_fn=_student_loss(kd),
                          seed=seed, progress=progress)
        qnet, info = self.export(student, params, calibrate(student, data[0]), info)
        return Compressed(student, qnet, info)


_COMMON = {"epochs": 30, "qat_epochs": 5, "lr": 1e-2}

HOOKS: dict[str, Hook] = {
    "ternary": Hook(_ternary_defaults, _ternary_train, _ternary_export,
                    dict(_COMMON, delta=0.05, lambda_group=1e-3, zero_groups=0.5, warmup=5,
                         prune_last=0, lr=5e-3),
                    lambda options: options["warmup"] + 2 * options["epochs"]
                    + options["qat_epochs"]),
    "dense": Hook(_dense_defaults, _dense_train, _dense_export, dict(_COMMON, lr=1e-3),
                  lambda options: options["qat_epochs"]),
    "lfsr": Hook(_lfsr_defaults, _lfsr_train, _lfsr_export,
                 dict(_COMMON, density=0.25, stages=4, epochs=6, lr=1e-2),
                 lambda options: (options["stages"] + 1) * options["epochs"]
                 + options["qat_epochs"]),
    "permdiag": Hook(_permdiag_defaults, _permdiag_train, _permdiag_export,
                     dict(_COMMON, p=8, epochs=60, lr=1e-2),
                     lambda options: options["epochs"] + options["qat_epochs"],
                     archs=("mlp", "tiny"), pad_rows=lambda options: options["p"],
                     check=_permdiag_check),
    "cim": Hook(_cim_defaults, _cim_train, _cim_export,
                dict(_COMMON, bits_strength=1e-4, epochs=10, lr=1e-3),
                lambda options: options["epochs"] + options["qat_epochs"]),
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
