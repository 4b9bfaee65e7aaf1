"""``secateur compile``: bring your own model. A float ONNX model (``torch.onnx.export``), a
``torch.export`` program (``.pt2``) or an ``nn.Module`` becomes engine layers and integer host
ops, quantized after training, and is proved bit-exact on the RTL. A QONNX model (``Quant``
nodes, as Brevitas exports it) brings its own quantization: its weight integers and scales
and its activation scales are compiled as given, and only the tensors without a ``Quant`` are
calibrated.

Modules, in the order a model goes through them: :mod:`.onnx_import`, :mod:`.qonnx_import`
(read with the ``qonnx`` package, which is also its float reference) and :mod:`.pt2_import`
(front ends -> :mod:`.ir`), :mod:`.lower` (graph passes, lowering to steps), :mod:`.ptq`
(quantization, rules in :mod:`secateur.models.quantize`), :mod:`.flow` (engine settings,
outputs, the golden model and the RTL; host ops in :mod:`secateur.models.hostops`).
"""

from __future__ import annotations

import os

from .ir import UnsupportedModel

__all__ = ["UnsupportedModel", "CompileMismatch", "compile"]


def __getattr__(name):
    if name == "CompileMismatch":
        from .flow import CompileMismatch
        return CompileMismatch
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def compile(model, calib, *, engine: str, pe: int | None = None, settings: dict | None = None,
            out=None, test=None, labels=None, compress: str = "none", finetune=None,
            example_inputs=None, simulator: str = "verilator", progress: bool = False) -> dict:
    """Compile a float model onto an engine; the Python face of ``secateur compile``.

    Parameters
    ----------
    model : str, os.PathLike or torch.nn.Module
        An ``.onnx`` (float, or QONNX with ``Quant`` nodes) or ``.pt2`` file, or a module
        (exported with ``torch.export`` on ``example_inputs``, by default the first
        calibration input).
    calib : array-like
        Float calibration inputs ``(B, *input_shape)``.
    engine : str
        The engine (``secateur.engine_names()``).
    pe, settings
        As ``--pe`` and ``--set KEY=VALUE`` (a dict).
    out : path, optional
        Output directory (``network.json``, ``layer{i}.npz``, with ``test`` the logits).
    test, labels : array-like, optional
        Float test inputs and integer labels: run the golden model and the RTL on them.
    compress : str
        ``"none"`` (post-training quantization) or ``"qat"`` (fine-tuning with the engine's
        compression algorithm, then the same quantization).
    finetune : mapping or path, optional
        With ``"qat"``: the training data, ``x`` (float inputs) and ``y`` (integer labels),
        as a dict, a loaded ``.npz`` or the path of one.

    Returns
    -------
    dict
        The report (accuracies, mismatches, cycles, energy, compression with ``test``).

    Raises
    ------
    UnsupportedModel, ValueError, TypeError
        Refusals and user errors.
    CompileMismatch
        If the RTL differs from the golden model (``error.report`` holds the report).
    """
    import numpy as np

    from .flow import compile_model, load_model
    calib = np.asarray(calib.detach() if hasattr(calib, "detach") else calib)
    if example_inputs is None:
        example_inputs = calib[:1]
    loaded = load_model(model, example_inputs)
    as_array = (lambda value: None if value is None else
                np.asarray(value.detach() if hasattr(value, "detach") else value))
    if isinstance(finetune, (str, os.PathLike)):
        from ..safeio import read_npz
        finetune = read_npz(finetune, "finetune file")
    if finetune is not None:
        finetune = {key: as_array(value) for key, value in finetune.items()}
    return compile_model(loaded, calib, engine, pe=pe, settings=settings, out=out,
                         test=as_array(test), labels=as_array(labels), compress=compress,
                         finetune_data=finetune, simulator=simulator, progress=progress)
