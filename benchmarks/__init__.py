"""Benchmarks of capture-engine against the tools people use for the same job (DuckDB, polars, pandas).

``python -m benchmarks.run --size 1GB`` runs the end-to-end comparison; ``benchmarks/test_kernels.py`` times the
engine's hot kernels with pytest-benchmark.
"""
