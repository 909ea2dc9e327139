"""The names of the files tnt writes, declared once: the writers use them, and `outdir` knows a tnt output by them.

A model directory holds CONFIG (timm's config.json plus a "tnt" object), WEIGHTS, HEADS, CARD and REPORT (the
metrics the card is made from); `tnt benchmark` writes BENCHMARK_JSON / BENCHMARK_MD into one (else REPORT and
REPORT_MD into its --out); a fine-tuning run adds METRICS and its CHECKPOINT directory (and STAGING while it
finishes); `tnt calibrate` writes SWEEP, PARETO and SCHEDULE.
"""

from __future__ import annotations

from pathlib import Path

from tnt_cli.errors import TntError
from tnt_cli.io.jsonio import read_json

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
HEADS = "tnt_heads.safetensors"
CARD = "README.md"
REPORT = "report.json"
REPORT_MD = "report.md"
BENCHMARK_JSON, BENCHMARK_MD = "benchmark.json", "benchmark.md"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint"
STAGING = ".final-model"  # a fine-tune's model directory while its files move into OUT
SWEEP, PARETO, SCHEDULE = "sweep.csv", "pareto.png", "schedule.json"

WRITTEN = frozenset({CONFIG, WEIGHTS, HEADS, CARD, REPORT, REPORT_MD, BENCHMARK_JSON, BENCHMARK_MD, METRICS,
                     CHECKPOINT, STAGING, SWEEP, PARETO, SCHEDULE})  # fmt: skip


def is_tnt_model_dir(path: str | Path) -> bool:
    """A tnt model directory: its config.json (valid JSON) has a "tnt" object. False for anything else."""
    config = Path(path) / CONFIG
    if not config.is_file():
        return False
    try:
        return isinstance(read_json(config).get("tnt"), dict)
    except (TntError, AttributeError):  # unreadable, not JSON (deeply nested too), or not a JSON object
        return False
