"""Pruning for deployment: MODEL written as a model directory that runs a schedule, with what calibrate measured.

The card records the schedule, its GMACs and, from a `tnt-schedule/1` file, the accuracy calibrate measured and
on which images.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tnt_cli.errors import SettingError

if TYPE_CHECKING:
    from tnt_cli.engine import Schedule


def check_schedule_source(schedule: Schedule | None, schedule_file: str | Path | None) -> None:
    """Exactly one of a schedule and a schedule file (calibrate's schedule.json): checked before any work."""
    if schedule is not None and schedule_file is not None:
        raise SettingError("give either {schedule_file} or {schedule}, not both")
    if schedule is None and schedule_file is None:
        raise SettingError("no schedule: give {schedule_file} (calibrate's schedule.json) or {schedule}")


def prune(
    model: str,
    out: str | Path,
    *,
    schedule: Schedule | None = None,
    schedule_file: str | Path | None = None,
    overwrite: bool = False,
    random_weights: bool = False,
) -> dict[str, Any]:
    """Write MODEL into `out` running `schedule`, or the one in `schedule_file` (calibrate's schedule.json).

    Returns the report: the schedule, GMACs dense vs pruned, tokens per block and the calibration (or None).
    A baseline's directory (fine-tuned with another method) takes the schedule as the compute it is matched to.
    """
    from tnt_cli.analysis import describe_model
    from tnt_cli.eval.schedule_file import calibration_metrics, read_schedule_file
    from tnt_cli.io.model_dir import save_model_dir
    from tnt_cli.io.sources import install_schedule, load_model
    from tnt_cli.methods.loading import own_method
    from tnt_cli.methods.registry import lookup

    check_schedule_source(schedule, schedule_file)
    calibration = None
    if schedule_file is not None:
        schedule, calibration = read_schedule_file(schedule_file)
    loaded = load_model(model, random_weights=random_weights, require_trained_heads=False)
    # relevance pruning needs trained heads; a baseline's directory does not use them
    install_schedule(loaded, schedule, require_trained_heads=lookup(own_method(loaded)).uses_heads)
    schedule = loaded.model.schedule  # with the model's own reducer where the flags chose none
    metrics = calibration_metrics(calibration) if calibration else None
    save_model_dir(
        out, loaded.model, base_model=loaded.base_model, metrics=metrics, overwrite=overwrite, inputs=(model,),
        provenance=loaded.provenance,
    )  # fmt: skip
    described = describe_model(loaded.model)
    return {
        "out": str(out),
        "model": loaded.source,
        "schedule": schedule.to_dict(),
        "schedule_text": schedule.describe(),
        "gmacs_dense": described["gmacs_dense"],
        "gmacs_pruned": described["gmacs_pruned"],
        "gmacs_ratio": described["gmacs_ratio"],
        "blocks": described["blocks"],
        "calibration": metrics["calibration"] if metrics else None,
    }
