"""The end of a fine-tune (rank 0): refuse a diverged model, evaluate the dense and the pruned model on the val
split, write down what ran (the summary `run()` returns, the training record OUT/config.json keeps), and hand the
model to `tnt_cli.train.output` to write and publish."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from tnt_cli.engine import Schedule, TNTModel
from tnt_cli.errors import TntError
from tnt_cli.methods.registry import DENSE, REFERENCE
from tnt_cli.train.config import TrainConfig
from tnt_cli.train.plan import Plan

if TYPE_CHECKING:
    from tnt_cli.train.output import RunOutput
    from tnt_cli.train.setup import TrainingModel


class Diverged(TntError):
    """Training ended with non-finite weights or outputs: nothing is written, the previous output stays."""


def finish_run(
    cfg: TrainConfig,
    built: TrainingModel,
    output: RunOutput,
    plan: Plan,
    *,
    device: torch.device,
    settings: dict,
    steps: int,
    final_loss: float,
    note: Callable[[str], None],
) -> dict:
    """Check, evaluate, write and publish the trained model (rank 0); returns the run's summary."""
    model, schedule = built.model, built.eval_schedule
    model.eval()

    def check(when: str, evaluation: dict | None = None) -> None:
        check_finite(model, device, when=when, step=steps, last_loss=final_loss, replacing=output.replacing,
                     evaluation=evaluation)  # fmt: skip

    check("after the last update")
    evaluation = final_evaluation(cfg, model, device, schedule, label_map=built.label_map, note=note,
                                  progress=cfg.progress)  # fmt: skip
    model.set_schedule(schedule)
    check("after the final evaluation", evaluation)
    summary = run_summary(cfg, output.out, plan, settings=settings, steps=steps, final_loss=final_loss,
                          schedule=schedule, evaluation=evaluation)  # fmt: skip
    url = output.publish(
        model.cpu(), base_model=built.loaded.base_model or cfg.model,
        training=training_record(cfg, summary, built.model_classes),
        metrics={"finetune": evaluation} if evaluation else None, provenance=built.loaded.provenance,
        keep_checkpoint=cfg.keep_checkpoint,
    )  # fmt: skip
    if url is not None:
        summary["url"] = url
    return summary


def check_finite(
    model: TNTModel,
    device: torch.device,
    *,
    when: str,
    step: int,
    last_loss: float,
    replacing: bool,
    evaluation: dict | None = None,
) -> None:
    """Refuse to write a model whose weights (or evaluated outputs) are not finite: the run diverged.
    `replacing`: the run works beside an existing output (which the message then says is unchanged)."""
    bad = next((n for n, p in model.named_parameters() if not torch.isfinite(p).all()), None)
    if bad is None:
        with torch.no_grad():  # a fixed probe input: finite weights can still overflow to inf logits
            probe = torch.randn((2, *model_input_shape(model)), generator=torch.Generator().manual_seed(0))
            logits = model(probe.to(device))
        if not torch.isfinite(logits).all():
            bad = "the logits"
    if bad is None and evaluation:
        losses = [evaluation[k].get("loss") for k in ("dense", "pruned") if isinstance(evaluation.get(k), dict)]
        if any(v is not None and not math.isfinite(v) for v in losses):
            bad = "the evaluation loss"
    if bad is not None:
        kept = "the previous output is unchanged" if replacing else "no model was written"
        raise Diverged(
            f"training diverged: {bad} not finite {when} (step {step}, last loss {last_loss:.4g}); "
            f"{kept}; try a lower learning rate or gradient clipping"
        )


def model_input_shape(model: TNTModel) -> tuple[int, ...]:
    from tnt_cli.data.config import resolve_config

    return tuple(resolve_config(model.vit).input_size)


def final_evaluation(
    cfg: TrainConfig,
    model: TNTModel,
    device: torch.device,
    schedule: Schedule,
    *,
    label_map: list[int] | None,
    note: Callable[[str], None],
    progress: bool,
) -> dict | None:
    """Accuracy of the dense model and of `method` at `schedule` on the val split (None: no evaluation asked
    for, or the data has no such split)."""
    if cfg.eval_limit == 0:
        return None
    from tnt_cli.data import build_loader

    try:
        loader = build_loader(
            cfg.data, cfg.val_split, model, batch_size=cfg.eval_batch_size or cfg.batch_size * 2,
            workers=cfg.workers, limit=cfg.eval_limit, seed=cfg.seed, label_map=label_map,
        )  # fmt: skip
    except TntError as exc:
        note(f"note: no evaluation ({exc})")
        return None
    from tnt_cli.data.datasets import split_label

    dense = evaluate_accuracy(model, loader, device, Schedule(), progress=progress)
    pruned = evaluate_accuracy(model, loader, device, schedule, method=cfg.method, progress=progress)
    subset = cfg.eval_limit is not None and cfg.eval_limit < len(loader.dataset)
    return {"split": split_label(cfg.data, cfg.val_split), "images": dense.get("images"),
            **({"limit": cfg.eval_limit, "seed": cfg.seed} if subset else {}), "schedule": schedule.describe(),
            "dense": _slim(dense), "pruned": _slim(pruned)}  # fmt: skip


@torch.no_grad()
def evaluate_accuracy(
    model: TNTModel, loader, device: torch.device, schedule: Schedule, method: str = REFERENCE, *, progress=False
) -> dict:
    """top-1 / top-5 / loss of `method` at `schedule`'s compute (eval mode), via the methods' evaluation loop."""
    from tnt_cli.methods.accuracy import evaluate_model
    from tnt_cli.methods.apply import apply_method

    model.eval()
    what = "dense" if schedule.is_dense else schedule.describe()
    with apply_method(model, DENSE if schedule.is_dense else method, schedule) as setup:
        return evaluate_model(setup.module, loader, device=device, progress=progress, description=f"evaluating {what}",
                              on_batch=setup.begin_batch)  # fmt: skip


def _slim(result: dict) -> dict:
    return {k: result[k] for k in ("top1", "top5", "loss", "images_per_s") if k in result}


def run_summary(
    cfg: TrainConfig,
    out: Path,
    plan: Plan,
    *,
    settings: dict,
    steps: int,
    final_loss: float,
    schedule: Schedule,
    evaluation: dict | None,
) -> dict:
    """What `Trainer.run()` returns (and `tnt finetune --json` prints)."""
    return {
        "out": str(out),
        "model": cfg.model,
        "data": cfg.data,
        "recipe": cfg.recipe,
        "settings": settings,
        "steps": steps,
        "final_loss": final_loss,
        **{k: v for k, v in plan.to_dict().items() if k != "amp"},
        "amp": plan.amp,
        "eval_schedule": schedule.to_dict(),
        "eval_schedule_text": schedule.describe(),
        "evaluation": evaluation,
    }


def training_record(cfg: TrainConfig, summary: dict, classes: list[str]) -> dict:
    """The `training` section of OUT/config.json: how the model was made."""
    return {
        "method": cfg.method,
        "recipe": f"tnt finetune --recipe {cfg.recipe}",
        "settings": summary["settings"],
        "config": cfg.to_dict(),
        "dataset": cfg.data,
        "classes": classes,
        **{k: summary[k] for k in ("steps", "global_batch", "lr", "world_size", "final_loss")},
    }
