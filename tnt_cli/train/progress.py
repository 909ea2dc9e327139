"""Training progress: a rich progress bar on stderr and a JSONL metrics log (rank 0 only)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

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
    """Progress bar (loss, lr, img/s, ETA) on stderr; a no-op when disabled or on ranks other than 0."""

    def __init__(self, console: Console, total: int, done: int, *, enabled: bool) -> None:
        self.enabled = enabled
        self.progress = None
        if not enabled:
            return
        self.progress = Progress(
            TextColumn("[bold]finetune"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[ips]} img/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task("finetune", total=total, completed=done, loss="-", lr="-", ips="-")

    def __enter__(self) -> TrainProgress:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()

    def update(self, step: int, loss: float, lr: float, images_per_s: float) -> None:
        if self.progress is not None:
            self.progress.update(
                self.task, completed=step, loss=f"{loss:.4f}", lr=f"{lr:.2e}", ips=f"{images_per_s:,.0f}"
            )


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
