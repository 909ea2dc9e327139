"""Training progress: the run's opening lines, progress on stderr (tnt_cli.progress) and a JSONL metrics log
(rank 0 only)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tnt_cli.errors import SettingError, TntError, first_line
from tnt_cli.io.atomic import atomic_write_text
from tnt_cli.io.jsonio import dumps_line, loads
from tnt_cli.io.names import METRICS
from tnt_cli.io.outdir import open_own
from tnt_cli.methods.registry import lookup
from tnt_cli.progress import Progress

if TYPE_CHECKING:
    import torch
    from rich.console import Console

    from tnt_cli.engine import TNTModel
    from tnt_cli.train.config import TrainConfig
    from tnt_cli.train.plan import Plan

METRICS_FILE = METRICS


class MetricsLog:
    """Appends one JSON object per line to OUT/metrics.jsonl; flushed per line so a crash loses nothing.

    `hooks` get every record too (e.g. `tensorboard_hook`)."""

    def __init__(self, path: Path, *, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled
        self.hooks: list[Callable[[dict], None]] = []

    def truncate_after(self, step: int) -> None:
        """On resume: drop lines the interrupted run wrote after the checkpoint's step (they will be redone)."""
        if not self.enabled or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(errors="replace").splitlines():
            try:
                if loads(line, self.path).get("step", 0) <= step:
                    kept.append(line)
            except (TntError, AttributeError):  # a line cut short by the kill, or not a record
                continue
        atomic_write_text(self.path, "".join(f"{line}\n" for line in kept))  # replaces a link, never follows it

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with os.fdopen(open_own(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "a", encoding="utf-8") as fh:
            fh.write(dumps_line(record) + "\n")
        for hook in self.hooks:
            hook(record)


TENSORBOARD_DIR = "tensorboard"


def tensorboard_hook(out: Path, *, resumed_at: int | None = None) -> Callable[[dict], None]:
    """A `MetricsLog` hook writing each record's numbers as TensorBoard scalars (`train/loss`, `train/lr`, ...) to
    OUT/tensorboard (`tensorboard --logdir OUT`). A resumed run drops the events written after its checkpoint."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # installed, but broken (a missing dependency of its own)
        raise SettingError("{tensorboard}: TensorBoard's writer does not import ({reason}): reinstall tensorboard",
                           reason=first_line(exc)) from None  # fmt: skip
    writer = SummaryWriter(str(out / TENSORBOARD_DIR), purge_step=None if resumed_at is None else resumed_at + 1)

    def write(record: dict) -> None:
        step = record.get("step")
        for key, value in record.items():
            for name, number in value.items() if isinstance(value, dict) else [(None, value)]:
                if key != "step" and isinstance(number, int | float) and not isinstance(number, bool):
                    writer.add_scalar(f"train/{key}" + (f"/{name}" if name is not None else ""), number, step)
        writer.flush()

    return write


class LossWindow:
    """The losses and their parts (`tnt_cli.train.task.LOSS_PARTS`) since the last metrics line."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.losses: list[float] = []
        self.parts: dict[str, list[float]] = {}

    def add(self, loss: float, parts: dict[str, float]) -> None:
        self.losses.append(loss)
        for name, value in parts.items():
            self.parts.setdefault(name, []).append(value)

    def mean(self) -> float:
        return sum(self.losses) / len(self.losses)

    def mean_parts(self) -> dict[str, float]:
        return {name: sum(values) / len(values) for name, values in self.parts.items()}


def step_record(
    step: int, epoch: float, plan: Plan, *, window: LossWindow, lr: float, images_per_s: float, model: TNTModel
) -> dict:
    """One metrics.jsonl line: the mean loss (and each part of it) since the last line, the lr, throughput and
    the noise statistics."""
    record = {
        "step": step,
        "epoch": round(epoch, 4),
        "loss": window.mean(),
        "loss_parts": window.mean_parts(),
        "lr": lr,
        "img_s": images_per_s,
        "global_batch": plan.global_batch,
        "world_size": plan.world_size,
    }
    return {**record, **noise_stats(model)}


def noise_stats(model: TNTModel) -> dict:
    """The last step's noise statistics for the metrics log: mean alpha per noise block, the rate penalty."""
    import torch

    stats = model.last_stats
    out = {}
    if stats.mean_alpha:
        out["mean_alpha"] = {str(b): round(float(a), 5) for b, a in stats.mean_alpha.items()}
    if stats.rate_penalties:
        out["rate_loss"] = float(torch.stack([p.detach() for p in stats.rate_penalties]).sum())
    return out


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

    def update(
        self, step: int, loss: float, lr: float, images_per_s: float, parts: dict[str, float] | None = None
    ) -> None:
        """The bar's fields: the loss with its parts (`loss 2.6 (task 0.81 pruned 0.93 heads 0.88)`), lr, img/s."""
        text = f"{loss:.4f}"
        if parts and len(parts) > 1:
            text += " (" + " ".join(f"{name} {value:.3f}" for name, value in parts.items()) + ")"
        self.progress.update(completed=step, loss=text, lr=f"{lr:.2e}", img_s=f"{images_per_s:,.0f}")


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


def describe_run(
    cfg: TrainConfig, plan: Plan, *, pruning_blocks: tuple[int, ...] | None, device: torch.device
) -> list[str]:
    """The lines a run starts with: the recipe's remarks, its loss terms, and the plan's numbers."""
    from tnt_cli.train.plan import LR_REFERENCE_BATCH

    p = plan
    lines = [f"note: {text}" for text in cfg.notes]
    extras = [f"{cfg.relevance} relevance, sigma0 {cfg.sigma0:g}"]
    if cfg.distill:
        extras.append(f"distill x{cfg.distill_weight:g}")
    if cfg.anchor and lookup(cfg.method).uses_heads:
        extras.append(f"anchored step (heads' noise on {cfg.heads_fraction:g} of the batch)")
    if pruning_blocks is not None:
        keeps = "/".join(f"{k:g}" for k in cfg.drop_keeps)
        where = " and ".join(map(str, pruning_blocks))
        extras.append(f"pruning pass x{cfg.drop_weight:g} after block{'s' * (len(pruning_blocks) > 1)} {where} "
                      f"keep {keeps}, {cfg.reducer}")  # fmt: skip
    if cfg.heads_lr_scale != 1.0:
        extras.append(f"heads lr x{cfg.heads_lr_scale:g}")
    lines.append(f"recipe {cfg.recipe}: " + ", ".join(extras))
    what = "heads only (backbone frozen)" if cfg.train == "heads" else "full model"
    lines.append(
        f"finetune {cfg.model}: {what}, {cfg.data} {cfg.split} ({p.train_images} images), "
        f"{p.steps_per_epoch} steps/epoch, {p.total_steps} steps, global batch {p.global_batch} "
        f"({p.batch_size} x {p.world_size} proc x {p.accum} accum), lr {p.lr:.3g} (= {p.base_lr:g} x "
        f"{p.global_batch}/{LR_REFERENCE_BATCH}), warmup {p.warmup_steps}, device {device}, amp {p.amp}"
    )
    return lines
