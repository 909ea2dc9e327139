"""The fine-tune's final products: the model directory in OUT (beside metrics.jsonl and the checkpoint) and
the end-of-run accuracy of the dense and the pruned model."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from tnt_cli.engine import Schedule, TNTModel

STAGING = ".final-model"


def save_final(
    out: Path, model: TNTModel, *, base_model: str | None, training: dict, metrics: dict | None, provenance=None
) -> Path:
    """Write the tnt model directory into OUT, which already holds the run's log and checkpoint.

    The directory is written complete into OUT/.final-model by `save_model_dir`, then its files are moved
    into OUT one rename each, config.json last: until then OUT does not look like a model directory.
    """
    from tnt_cli.io.model_dir import save_model_dir

    staging = out / STAGING
    if staging.exists():
        shutil.rmtree(staging)
    heads_trained = training.get("method", "tnt") == "tnt"  # a baseline's directory has untrained heads
    save_model_dir(staging, model, base_model=base_model, training=training, metrics=metrics, overwrite=True,
                   heads_trained=heads_trained, provenance=provenance)  # fmt: skip
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
    model: TNTModel, loader, device: torch.device, schedule: Schedule, method: str = "tnt", *, progress: bool = False
) -> dict:
    """top-1 / top-5 / loss of `method` at `schedule`'s compute (eval mode), via the eval module's loop."""
    from tnt_cli.eval.baselines import apply_method
    from tnt_cli.eval.evaluate import evaluate_model

    model.eval()
    what = "dense" if schedule.is_dense else schedule.describe()
    with apply_method(model, "dense" if schedule.is_dense else method, schedule) as setup:
        return evaluate_model(setup.module, loader, device=device, progress=progress, description=f"evaluating {what}")
