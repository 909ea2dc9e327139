"""What the commands that run a method on MODEL share: `auto` as a directory's own method (evaluate, compare, prune,
visualize), MODEL loaded for its method (evaluate, visualize), and the check of a positive count (evaluate, compare,
calibrate)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tnt_cli.engine import Schedule
    from tnt_cli.io.builder import LoadedModel

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


def check_positive(value: int | None, setting: str) -> None:
    """Refuse a count that must be positive (`setting` is its Python name: `limit`, `batch_size`)."""
    from tnt_cli.errors import SettingError

    if value is not None and value <= 0:
        raise SettingError(f"{{{setting}}} must be positive, got {{value}}", value=value)
