"""Benchmarks that print measured numbers: `tagtrack bench ...`."""
