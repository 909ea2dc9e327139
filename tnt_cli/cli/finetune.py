"""`tnt finetune`: train TNT relevance heads (or the whole ViT) with relevance noise, and write a model directory.

The command's options are derived from the settings' declarations (`tnt_cli.train.config.TrainConfig`, via
`tnt_cli.cli.declared`); this module only adds the flags that say how to run (resume, overwrite, push, offline,
JSON), calls the trainer and prints its summary.
"""

from __future__ import annotations

import inspect
from typing import Annotated, Any

import typer

from tnt_cli.cli import options as o
from tnt_cli.cli.declared import parameter, settings_from
from tnt_cli.methods.registry import REFERENCE
from tnt_cli.settings import RUN
from tnt_cli.train.config import SETTINGS, TrainConfig
from tnt_cli.train.plan import LR_REFERENCE_BATCH

# Flags of the command that are not training settings (they say how to run, not what is trained).
RUN_FLAGS: dict[str, tuple[Any, Any]] = {
    "resume": (Annotated[bool, typer.Option("--resume", help="Continue OUT's checkpoint (same settings).",
                                            rich_help_panel=RUN)], False),
    "overwrite": (Annotated[bool, typer.Option("--overwrite", help="Replace an existing OUT.", rich_help_panel=RUN)],
                  False),
    "push_to_hub": (Annotated[str | None, typer.Option("--push-to-hub", help="Upload OUT to this Hub repo when done.",
                                                       rich_help_panel=RUN)], None),
    "offline": (o.Offline, False),
    "json_out": (o.JsonOut, False),
}  # fmt: skip


def finetune(**values: Any) -> None:
    """Fine-tune MODEL with Training Noise Tokens and write a tnt model directory to OUT.

    The default recipe (the study's pick) is the anchored step: a clean dense pass and a hard-pruning pass at
    random keep rates train the whole model, distilled to the frozen dense model, while rank relevance noise
    trains only the heads (after blocks 1 and 3); left-out tokens are merged into their nearest kept token.
    --recipe official reproduces the paper: softmax relevance, sigma0 0.02, relevance heads only (backbone
    frozen, bit-identical), no distillation, no pruning pass, tokens dropped. Any explicit flag overrides the
    recipe; the resolved settings are recorded in OUT/config.json. The lr is scaled by global batch / 512; a
    checkpoint is written every epoch and on Ctrl-C; metrics go to OUT/metrics.jsonl. OUT runs the schedule it
    was trained for (the pruning pass's blocks at keep 0.5 in all; or --prune-layers/--keep-rates); at the end
    the dense and the pruned model are evaluated on the val split. A tenth of the train split (at most 5000
    images) is held out for `tnt calibrate` (--no-holdout trains on all of it).

    Examples:

      tnt finetune models/fm_vit --data fashion-mnist -o runs/fm --max-steps 300

      tnt finetune models/fm_vit --data fashion-mnist -o runs/p --recipe official

      tnt finetune models/fm_vit --data fashion-mnist -o runs/x --drop-weight 0

      tnt finetune deit_small_patch16_224 --data /data/imagenet -o runs/deit_s

      tnt finetune runs/base --data fashion-mnist -o runs/heads --train heads

      torchrun --nproc_per_node 8 -m tnt_cli finetune runs/base --data /in1k -o x

      tnt finetune models/fm_vit --data fashion-mnist -o runs/fm --resume
    """
    o.apply_offline(values.pop("offline"))
    from tnt_cli.cli.output import print_json, stderr
    from tnt_cli.train.trainer import finetune as run_finetune

    json_out = values.pop("json_out")
    run = {name: values.pop(name) for name in ("resume", "overwrite", "push_to_hub")}
    summary = run_finetune(TrainConfig(**settings_from(SETTINGS, values)), **run, console=stderr)
    if summary is None:  # DDP ranks other than 0
        return
    if json_out:
        print_json(summary)
    else:
        render(summary)


finetune.__signature__ = inspect.Signature(
    [*map(parameter, SETTINGS)]
    + [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
       for name, (annotation, default) in RUN_FLAGS.items()]
)  # fmt: skip


def _describe_recipe(summary: dict) -> str:
    s = summary.get("settings", {})
    parts = [
        f"{s.get('method', REFERENCE)}",
        f"{summary.get('recipe')}",
        f"train {s.get('train')}",
        f"{s.get('relevance')} sigma0 {s.get('sigma0'):g}",
    ]
    if s.get("distill"):
        parts.append(f"distill x{s.get('distill_weight'):g}")
    if s.get("drop_block") is not None:
        blocks = s.get("pruning_blocks") or [s.get("drop_block")]
        parts.append(f"pruning pass x{s.get('drop_weight'):g} after block{'s' * (len(blocks) > 1)} "
                     f"{' and '.join(map(str, blocks))}")  # fmt: skip
    return ", ".join(parts)


def render(summary: dict) -> None:
    from rich.table import Table

    from tnt_cli.cli.output import stdout

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    rows = [
        ("output", summary["out"]),
        ("recipe", _describe_recipe(summary)),
        ("steps", f"{summary['steps']} ({summary['epochs']} epochs of {summary['steps_per_epoch']} steps)"),
        (
            "global batch",
            f"{summary['global_batch']} ({summary['batch_size']} x {summary['world_size']} proc x "
            f"{summary['accum']} accum)",
        ),
        ("lr", f"{summary['lr']:.3g} (= {summary['base_lr']:g} x {summary['global_batch']}/{LR_REFERENCE_BATCH})"),
        ("final loss", f"{summary['final_loss']:.4f}"),
    ]
    if summary.get("url"):
        rows.append(("pushed", summary["url"]))
    for key, value in rows:
        grid.add_row(key, value)
    stdout.print(grid)
    evaluation = summary.get("evaluation")
    if not evaluation:
        return
    table = Table(title=f"{evaluation['split']} ({evaluation['images']} images)")
    for col in ("model", "top-1", "top-5", "loss"):
        table.add_column(col, justify="right" if col != "model" else "left")
    for name, key in (("dense", "dense"), (f"pruned ({evaluation['schedule']})", "pruned")):
        r = evaluation[key]
        table.add_row(name, f"{100 * r['top1']:.2f}", f"{100 * r['top5']:.2f}", f"{r['loss']:.4f}")
    stdout.print(table)
