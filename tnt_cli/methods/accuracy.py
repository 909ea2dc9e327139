"""The evaluation loop: top-1, top-5, mean loss and model throughput over a loader."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from tnt_cli.devices import synchronize
from tnt_cli.progress import Progress


class Accumulator:
    """Running top-1 / top-5 / loss sums (and per-class counts) over batches of logits."""

    def __init__(self, per_class: bool = False) -> None:
        self.per_class = per_class
        self.images = 0
        self.correct1 = 0
        self.correct5 = 0
        self.loss_sum = 0.0
        self.class_total: dict[int, int] = {}
        self.class_correct: dict[int, int] = {}

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        logits, labels = logits.float(), labels.to(logits.device)
        self.loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hit1 = top[:, 0] == labels
        self.correct1 += int(hit1.sum())
        self.correct5 += int((top == labels[:, None]).any(dim=1).sum())
        self.images += int(labels.shape[0])
        if self.per_class:
            for label, hit in zip(labels.tolist(), hit1.tolist()):
                self.class_total[label] = self.class_total.get(label, 0) + 1
                self.class_correct[label] = self.class_correct.get(label, 0) + int(hit)

    def result(self) -> dict:
        n = max(self.images, 1)
        out = {
            "images": self.images,
            "top1": self.correct1 / n,
            "top5": self.correct5 / n,
            "loss": self.loss_sum / n,
        }
        if self.per_class:
            out["per_class"] = {
                str(c): {"images": self.class_total[c], "top1": self.class_correct[c] / self.class_total[c]}
                for c in sorted(self.class_total)
            }
        return out


def evaluate_model(
    model: nn.Module,
    loader: Iterable,
    *,
    device: str | torch.device = "cpu",
    limit: int | None = None,
    progress: bool = True,
    description: str = "evaluating",
    per_class: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> dict:
    """Accuracy, loss and throughput of `model` over `loader` (eval mode, inference mode).

    `images_per_s` counts model time only (device-synchronised), not data loading. `on_batch(start)` is
    called before each batch with the index of its first image (seeded scorers use it); by default a scorer
    with `begin_batch` on the model gets it. `progress` shows `description` and the images done on stderr.
    """
    device = torch.device(device) if isinstance(device, str) else device
    model.eval().to(device)
    if on_batch is None:
        scorer = getattr(model, "scorer", None)
        on_batch = getattr(scorer, "begin_batch", None)
    acc = Accumulator(per_class)
    seconds = 0.0
    total = _total(loader, limit)
    with Progress(description, total=total, unit="img", enabled=progress) as bar, torch.inference_mode():
        for images, labels in loader:
            if limit is not None and acc.images >= limit:
                break
            if limit is not None and acc.images + len(labels) > limit:
                images, labels = images[: limit - acc.images], labels[: limit - acc.images]
            images = images.to(device, non_blocking=True)
            if on_batch is not None:
                on_batch(acc.images)
            synchronize(device)
            start = time.perf_counter()
            logits = model(images)
            synchronize(device)
            seconds += time.perf_counter() - start
            acc.add(logits, labels)
            bar.advance(len(labels))
    out = acc.result()
    out["seconds"] = seconds
    out["images_per_s"] = acc.images / seconds if seconds > 0 else None
    return out


def _total(loader: Iterable, limit: int | None) -> int | None:
    source = getattr(loader, "sampler", None) or getattr(loader, "dataset", None)
    try:
        n = len(source) if source is not None else None
    except TypeError:
        n = None
    if limit is not None:
        return limit if n is None else min(n, limit)
    return n
