"""MODEL loaded for the method it runs: `auto` as a directory's own method (evaluate, compare, prune, visualize)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tnt_cli.methods.registry import REFERENCE, lookup

if TYPE_CHECKING:
    from tnt_cli.engine import Schedule
    from tnt_cli.io.builder import LoadedModel

AUTO_METHOD = "auto"


def own_method(loaded: LoadedModel) -> str:
    """The method a model directory was fine-tuned with (`tnt finetune --method`); TNT's for anything else."""
    return str((loaded.tnt_config or {}).get("method") or REFERENCE)


def load_for_method(
    spec: str, name: str, schedule: Schedule | None, *, random_weights: bool = False
) -> tuple[LoadedModel, Schedule, str]:
    """Load MODEL for method `name`; returns it, the schedule to run (flags, else the model's own) and the method.

    `auto` is the directory's own method (what `tnt finetune --method` trained it for). Only methods that rank with
    the relevance heads need them trained; the baselines score tokens their own way.
    """
    from tnt_cli.io.sources import install_schedule, load_model

    loaded = load_model(spec, random_weights=random_weights, require_trained_heads=False)
    name = own_method(loaded) if name == AUTO_METHOD else lookup(name).name
    schedule = loaded.model.schedule if schedule is None else schedule.with_reducer_of(loaded.model.schedule)
    if lookup(name).uses_heads:
        install_schedule(loaded, schedule)  # refuses heads that were never trained
    return loaded, schedule, name
