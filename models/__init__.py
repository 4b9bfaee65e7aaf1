"""Bit-exact integer references and compression algorithms (torch), one module per technique."""
