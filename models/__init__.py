"""Bit-exact integer references and compression algorithms (torch), one module per technique;
LFSR pruning's torch half is :mod:`~secateur.models.lfsr_pruning`, so that its mask convention
(:mod:`~secateur.models.lfsr`) imports without torch."""
