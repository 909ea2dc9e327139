"""Honest speed measurement: dense vs pruned in the same run, alternating, explained by GMACs.

`run_benchmark` is loaded lazily, so the settings (`BenchConfig`, which the CLI builds its options from) come
without torch.
"""

from __future__ import annotations

from typing import Any

from tnt_cli.bench.config import BenchConfig, parse_batch_sizes

__all__ = ["BenchConfig", "parse_batch_sizes", "run_benchmark"]


def __getattr__(name: str) -> Any:
    if name == "run_benchmark":
        from tnt_cli.bench.runner import run_benchmark

        return run_benchmark
    raise AttributeError(f"module 'tnt_cli.bench' has no attribute {name!r}")
