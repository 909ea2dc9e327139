"""The fine-tune's final products: the model directory in OUT (beside metrics.jsonl and the checkpoint) and
the end-of-run accuracy of the dense and the pruned model."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from tnt_cli.engine import Schedule, TNTModel

STAGING = ".final-model"


def save_final(out: Path, model: TNTModel, *, base_model: str | None, training: dict, metrics: dict | None) -> Path:
    """Write the tnt model directory into OUT, which already holds the run's log and checkpoint.

    The directory is written complete into OUT/.final-model by `save_model_dir`, then its files are moved
    into OUT one rename each, config.json last: until then OUT does not look like a model directory.
    """
    from tnt_cli.io.model_dir import save_model_dir

    staging = out / STAGING
    if staging.exists():
        shutil.rmtree(staging)
    save_model_dir(staging, model, base_model=base_model, training=training, metrics=metrics, overwrite=True)
    names = sorted(p.name for p in staging.iterdir())
    names.sort(key=lambda name: name == "config.json")
    for name in names:
        target = out / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(staging / name, target)
    shutil.rmtree(staging, ignore_errors=True)
    return out


@torch.no_grad()
def evaluate_accuracy(
    model: TNTModel, loader, device: torch.device, schedule: Schedule, *, progress: bool = False
) -> dict:
    """top-1 / top-5 / loss of `model` under `schedule` (eval mode), via the eval module's loop."""
    from tnt_cli.eval.evaluate import evaluate_model

    previous = model.schedule
    model.set_schedule(schedule)
    model.eval()
    try:
        what = "dense" if schedule.is_dense else schedule.describe()
        return evaluate_model(model, loader, device=device, progress=progress, description=f"evaluating {what}")
    finally:
        model.set_schedule(previous)
