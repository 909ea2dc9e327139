"""`tnt prune`: write the deployable model directory with a schedule baked in."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tnt_cli.cli import options as o
from tnt_cli.cli.output import print_json, stderr, stdout
from tnt_cli.errors import TntError

ScheduleFile = Annotated[
    Path | None,
    typer.Option(
        "--schedule",
        help="schedule.json from `tnt calibrate` (or a bare {prune_layers, keep_rates, sim_prune} object).",
        show_default=False,
        rich_help_panel="Schedule",
    ),
]


def prune(
    model: o.ModelArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write.", show_default=False)],
    schedule_file: ScheduleFile = None,
    prune_layers: o.PruneLayers = None,
    keep_rates: o.KeepRates = None,
    sim_prune: o.SimPrune = None,
    sim_seed: o.SimSeed = 0,
    reducer: o.Reducer = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out directory.")] = False,
    push_to_hub: o.PushToHub = None,
    private: Annotated[bool, typer.Option("--private", help="With --push-to-hub: create a private repo.")] = False,
    random_weights: o.RandomWeights = False,
    offline: o.Offline = False,
    json_out: o.JsonOut = False,
) -> None:
    """Write MODEL as a Hub-ready directory that runs a pruning schedule: from calibrate's schedule.json or
    the schedule flags. The card records the schedule, its GMACs and, from schedule.json, the accuracy
    calibrate measured (and on which images).

    Examples:

      tnt prune runs/deit_s_tnt --schedule runs/deit_s_tnt/calib/schedule.json --out models/deit_s_tnt_3.2g

      tnt prune runs/vit_fm --prune-layers 2 --keep-rates 0.5 --sim-prune 2 --out models/vit_fm_p50

      tnt prune runs/vit_fm --schedule calib/schedule.json --out models/vit_fm_calib --push-to-hub me/vit-fm-tnt
    """
    o.apply_offline(offline)
    from tnt_cli.analysis import describe_model
    from tnt_cli.eval.common import own_method
    from tnt_cli.io.model_dir import save_model_dir
    from tnt_cli.io.sources import install_schedule, load_model

    flags = o.schedule_from_flags(prune_layers, keep_rates, sim_prune, sim_seed, reducer=reducer)
    if schedule_file is not None and flags is not None:
        raise TntError("give either --schedule FILE or the schedule flags, not both")
    if schedule_file is None and flags is None:
        raise TntError("no schedule: give --schedule FILE (from `tnt calibrate`) or --prune-layers/--keep-rates")
    from tnt_cli.cli.targets import claim_output

    claim_output(out, overwrite=overwrite, inputs=[model])  # before loading anything
    if push_to_hub:
        from tnt_cli.io.push import check_push_target

        check_push_target(push_to_hub)
    calibration = None
    if schedule_file is not None:
        schedule, calibration = read_schedule_file(schedule_file)
    else:
        schedule = flags
    loaded = load_model(model, random_weights=random_weights, require_trained_heads=False)
    if own_method(loaded) == "tnt":
        install_schedule(loaded, schedule)  # relevance pruning needs trained heads
    else:  # a baseline's directory: the schedule is the compute its method is matched to
        install_schedule(loaded, schedule, require_trained_heads=False)
    metrics = calibration_metrics(calibration) if calibration else None
    save_model_dir(
        out, loaded.model, base_model=loaded.base_model, metrics=metrics, overwrite=overwrite, inputs=(model,),
        provenance=loaded.provenance,
    )  # fmt: skip
    described = describe_model(loaded.model)
    report = {
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
    if push_to_hub:
        from tnt_cli.io.push import push_folder

        report["pushed_to"] = push_folder(out, push_to_hub, private=private)
    if json_out:
        print_json(report)
        return
    render(report)
    if push_to_hub:
        stderr.print(f"pushed to {report['pushed_to']}")


def read_schedule_file(path: Path) -> tuple:
    """(Schedule, the calibration record or None) from a schedule.json or a bare schedule object."""
    import json

    from tnt_cli.engine import Schedule

    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise TntError(f"schedule file {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise TntError(f"schedule file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise TntError(f"schedule file {path} must hold a JSON object")
    if isinstance(data.get("schedule"), dict):
        return Schedule.from_dict(data["schedule"]), data
    if "prune_layers" in data or "sim_prune" in data:
        return Schedule.from_dict(data), None
    raise TntError(f"schedule file {path} has no schedule (expected calibrate's schedule.json)")


def calibration_metrics(record: dict) -> dict | None:
    """What calibrate measured for this schedule, for the card's metrics."""
    if record.get("top1") is None:
        return None
    measured = record.get("measured_on") or {}
    keys = ("top1", "top5", "loss", "gmacs", "gmacs_dense", "dense_top1", "drop_points", "speedup", "speedup_source")
    calibration = {k: record.get(k) for k in keys if record.get(k) is not None}
    calibration["target"] = (record.get("target") or {}).get("text")
    calibration["measured_on"] = {
        k: measured.get(k) for k in ("data", "split", "images", "limit", "seed", "batch_size", "device")
    }
    return {"data": measured.get("data"), "calibration": calibration}


def render(report: dict) -> None:
    stdout.print(
        f"wrote {report['out']}: {report['schedule_text']}, {report['gmacs_pruned']:.4g} GMACs "
        f"(dense {report['gmacs_dense']:.4g}, {report['gmacs_ratio']:.3f}x)"
    )
    calib = report.get("calibration")
    if calib:
        where = calib["measured_on"]
        stdout.print(
            f"calibration top-1 {100 * calib['top1']:.2f}% (dense {100 * calib.get('dense_top1', float('nan')):.2f}%)"
            f" on {where.get('images')} images of {where.get('data')} ({where.get('split')})"
        )
    table = Table(title="tokens per block")
    for col in ("block", "tokens", "patch tokens", "GMACs", "dense GMACs"):
        table.add_column(col, justify="right")
    for row in report["blocks"]:
        table.add_row(
            str(row["block"]), str(row["tokens"]), str(row["patch_tokens"]), f"{row['gmacs']:.4g}",
            f"{row['dense_gmacs']:.4g}",
        )  # fmt: skip
    stdout.print(table)
