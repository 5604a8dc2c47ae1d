"""Benchmarks: one module per benchmark, each with its runner and its renderer."""
