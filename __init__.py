"""secateur: hardware generators and bit-exact RTL verification for compressed neural networks.

The repository root is this package; its folders are the subpackages:

* :mod:`secateur.hdl`    Amaranth components: shared primitives and one module per engine.
* :mod:`secateur.gen`    parameters -> Verilog, filelists, manifests; the ``secateur`` CLI.
* :mod:`secateur.models` torch compression algorithms and the bit-exact integer references.
* :mod:`secateur.sim`    simulator toolchain and runners (Verilator, Icarus).
* :mod:`secateur.verif`  cocotb testbenches, stream drivers and scoreboards.
"""

__version__ = "0.1.0"

__all__ = ["make_engine", "engine_names", "compile"]


def __getattr__(name):
    # Imported on first use: the generators pull in Amaranth and torch.
    if name == "compile":
        from .gen.compile import compile
        return compile
    if name in __all__:
        from .gen import registry
        return getattr(registry, name)
    raise AttributeError(f"module 'secateur' has no attribute {name!r}")
