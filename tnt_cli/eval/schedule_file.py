"""The `tnt-schedule/1` file (schedule.json): the schedule calibrate chose, with what it measured and on which images.

`tnt calibrate` writes it (`schedule_record`); `tnt prune` reads it back (`read_schedule_file`) and keeps what was
measured for the model card (`calibration_metrics`). A bare `{prune_layers, keep_rates, sim_prune}` object is read
too, without measurements.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tnt_cli.errors import TntError
from tnt_cli.io.names import SCHEDULE
from tnt_cli.methods.registry import REFERENCE

if TYPE_CHECKING:
    from tnt_cli.engine import Schedule
    from tnt_cli.eval.pareto import Target
    from tnt_cli.eval.sweep import SweepPoint

FORMAT = "tnt-schedule/1"
FILE_NAME = SCHEDULE
# what the card keeps of a calibration, and of the images it was measured on
METRIC_KEYS = ("top1", "top5", "loss", "gmacs", "gmacs_dense", "dense_top1", "drop_points", "speedup", "speedup_source")
MEASURED_ON_KEYS = ("data", "split", "images", "limit", "seed", "batch_size", "device")
EVALUATION_KEYS = ("split", "images", "limit", "seed", "top1", "top5", "dense_top1", "dense_top5")


def schedule_record(chosen: SweepPoint, dense: SweepPoint, target: Target, measured_on: dict) -> dict[str, Any]:
    """The file's content for the chosen point: schedule, accuracy and compute against dense, and the images."""
    from tnt_cli.eval.pareto import speedup_of

    return {
        "format": FORMAT,
        "schedule": chosen.schedule.to_dict(),
        "schedule_text": chosen.describe(),
        "method": REFERENCE,
        "target": {"kind": target.kind, "value": target.value, "text": target.describe()},
        "top1": chosen.top1,
        "top5": chosen.top5,
        "loss": chosen.loss,
        "gmacs": chosen.gmacs,
        "gmacs_dense": dense.gmacs,
        "gmacs_ratio": chosen.gmacs / dense.gmacs,
        "dense_top1": dense.top1,
        "drop_points": 100 * (dense.top1 - chosen.top1),
        "speedup": speedup_of(chosen, dense),
        "speedup_source": "measured" if chosen.speedup is not None else "gmacs ratio",
        "images_per_s": chosen.images_per_s,
        "measured_on": {**measured_on, "images": chosen.images},
    }


def read_schedule_file(path: str | Path) -> tuple[Schedule, dict | None]:
    """(Schedule, the calibration record or None) from a schedule.json or a bare schedule object."""
    from tnt_cli.engine import Schedule
    from tnt_cli.io.jsonio import read_json

    if not Path(path).exists():
        raise TntError(f"schedule file {path} does not exist")
    try:
        data = read_json(path)
    except TntError as exc:
        raise TntError(f"schedule file {exc}") from None
    if not isinstance(data, dict):
        raise TntError(f"schedule file {path} must hold a JSON object")
    written_as = data.get("format", FORMAT)
    if written_as != FORMAT:
        raise TntError(f"schedule file {path} is {written_as!r}; this tnt reads {FORMAT!r}")
    if isinstance(data.get("schedule"), dict):
        return Schedule.from_dict(data["schedule"]), data
    if "prune_layers" in data or "sim_prune" in data:
        return Schedule.from_dict(data), None
    raise TntError(f"schedule file {path} has no schedule (expected calibrate's schedule.json)")


def calibration_metrics(record: dict) -> dict | None:
    """What calibrate measured for this schedule, for the card's metrics (None when it measured nothing)."""
    if record.get("top1") is None:
        return None
    measured = record.get("measured_on") or {}
    calibration = {k: record.get(k) for k in METRIC_KEYS if record.get(k) is not None}
    calibration["target"] = (record.get("target") or {}).get("text")
    calibration["measured_on"] = {k: measured.get(k) for k in MEASURED_ON_KEYS}
    if isinstance(record.get("evaluation"), dict):  # the choice measured on the evaluation split
        calibration["evaluation"] = {k: v for k, v in record["evaluation"].items() if k in EVALUATION_KEYS}
    return {"data": measured.get("data"), "calibration": calibration}
