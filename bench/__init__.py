"""Benchmarks: each module prints a table and writes its results under bench/results/."""
