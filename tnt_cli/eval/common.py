"""Pieces the evaluate / calibrate / prune commands share: options and model loading per method."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from tnt_cli.engine import Schedule
    from tnt_cli.io.builder import LoadedModel

DataOpt = Annotated[
    str,
    typer.Option(
        "--data",
        help="fashion-mnist, cluttered-fashion-mnist, a folder (train/ and val/ class folders, or class folders "
        "directly: imagenet/val), a .tar of class folders, or a timm source: hfds/ORG/NAME, wds/..., tfds/...",
        show_default=False,
    ),
]
SplitOpt = Annotated[str, typer.Option("--split", help="Dataset split to evaluate on.")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", "-b", help="Images per batch.")]
WorkersOpt = Annotated[int, typer.Option("--workers", "-w", help="Data-loading worker processes.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda (auto: CUDA when available).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the --limit subset and of the random baseline's scores.")]
TomeR = Annotated[
    int | None,
    typer.Option(
        "--tome-r",
        help="ToMe: tokens merged after every block (default: the r whose GMACs match the schedule's).",
        rich_help_panel="Schedule",
    ),
]


AUTO_METHOD = "auto"


def own_method(loaded: LoadedModel) -> str:
    """The method a model directory was fine-tuned with (`tnt finetune --method`); "tnt" for anything else."""
    return str((loaded.tnt_config or {}).get("method") or "tnt")


def load_for_method(
    spec: str, method: str, schedule: Schedule | None, *, random_weights: bool = False
) -> tuple[LoadedModel, Schedule, str]:
    """Load MODEL for `method`; returns it, the schedule to run (flags, else the model's own) and the method.

    `auto` is the directory's own method (what `tnt finetune --method` trained it for). Only `tnt` needs trained
    relevance heads; the baselines score tokens their own way.
    """
    from tnt_cli.eval.baselines import check_method
    from tnt_cli.io.sources import install_schedule, load_model

    loaded = load_model(spec, random_weights=random_weights, require_trained_heads=False)
    method = own_method(loaded) if method == AUTO_METHOD else check_method(method)
    schedule = loaded.model.schedule if schedule is None else schedule
    if method == "tnt":
        install_schedule(loaded, schedule)  # refuses heads that were never trained
    return loaded, schedule, method


def check_positive(value: int | None, flag: str) -> None:
    from tnt_cli.errors import TntError

    if value is not None and value <= 0:
        raise TntError(f"{flag} must be positive, got {value}")
