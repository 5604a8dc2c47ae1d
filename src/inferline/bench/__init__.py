"""Benchmarks behind SPEC §4's targets, one module per benchmark (``inferline bench``)."""
