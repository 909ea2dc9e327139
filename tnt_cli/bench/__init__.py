"""Honest speed measurement: dense vs pruned in the same run, alternating, explained by GMACs."""

from tnt_cli.bench.config import BenchConfig, parse_batch_sizes
from tnt_cli.bench.runner import run_benchmark

__all__ = ["BenchConfig", "parse_batch_sizes", "run_benchmark"]
