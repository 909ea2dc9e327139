"""Training progress: progress on stderr (tnt_cli.progress) and a JSONL metrics log (rank 0 only)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tnt_cli.progress import Progress

if TYPE_CHECKING:
    from rich.console import Console

from tnt_cli.io.jsonio import dumps_line

METRICS_FILE = "metrics.jsonl"


class MetricsLog:
    """Appends one JSON object per line to OUT/metrics.jsonl; flushed per line so a crash loses nothing."""

    def __init__(self, path: Path, *, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled

    def truncate_after(self, step: int) -> None:
        """On resume: drop lines the interrupted run wrote after the checkpoint's step (they will be redone)."""
        if not self.enabled or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except json.JSONDecodeError:
                continue
        self.path.write_text("".join(f"{line}\n" for line in kept))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            fh.write(dumps_line(record) + "\n")


class TrainProgress:
    """Steps done, loss, lr, img/s and ETA on stderr (a bar on a terminal, plain lines in a log); a no-op when
    disabled or on ranks other than 0."""

    def __init__(self, console: Console | None, total: int, done: int, *, enabled: bool) -> None:
        self.progress = Progress(
            "finetune", total=total, completed=done, unit="step", enabled=enabled, transient=False, console=console
        )

    def __enter__(self) -> TrainProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def update(self, step: int, loss: float, lr: float, images_per_s: float) -> None:
        self.progress.update(completed=step, loss=f"{loss:.4f}", lr=f"{lr:.2e}", img_s=f"{images_per_s:,.0f}")


class Throughput:
    """Images per second between two log points."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.start = time.perf_counter()
        self.images = 0

    def add(self, images: int) -> None:
        self.images += images

    def rate(self) -> float:
        elapsed = time.perf_counter() - self.start
        return self.images / elapsed if elapsed > 0 else 0.0
