"""Amaranth components: shared primitives, and one module per engine under :mod:`secateur.hdl.engines`."""
