"""Benchmarks of k0slab on the machine they run on (see docs/benchmarks.md)."""
