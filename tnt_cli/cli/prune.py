"""`tnt prune`: write the deployable model directory with a schedule baked in."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tnt_cli.cli import options as o
from tnt_cli.cli.output import print_json, stderr, stdout
from tnt_cli.cli.schedule_flags import ScheduleFlags, takes_schedule_flags

ScheduleFile = Annotated[
    Path | None,
    typer.Option(
        "--schedule",
        help="schedule.json from `tnt calibrate` (or a bare {prune_layers, keep_rates, sim_prune} object).",
        show_default=False,
        rich_help_panel="Schedule",
    ),
]


@takes_schedule_flags
def prune(
    model: o.ModelArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write.", show_default=False)],
    schedule_file: ScheduleFile = None,
    schedule_flags: ScheduleFlags = ScheduleFlags(),
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out directory.")] = False,
    push_to_hub: o.PushToHub = None,
    private: Annotated[bool, typer.Option("--private", help="With --push-to-hub: create a private repo.")] = False,
    random_weights: o.RandomWeights = o.default("random_weights"),
    offline: o.Offline = False,
    json_out: o.JsonOut = False,
) -> None:
    """Write MODEL as a Hub-ready directory that runs a pruning schedule: from calibrate's schedule.json or
    the schedule flags. The card records the schedule, its GMACs and, from schedule.json, the accuracy
    calibrate measured (and on which images).

    Examples:

      tnt prune runs/deit_s --schedule calib/schedule.json -o models/deit_s_3.2g

      tnt prune runs/fm --prune-layers 2 --keep-rates 0.5 --sim-prune 2 -o fm_p50

      tnt prune runs/fm --schedule calib/schedule.json -o fm --push-to-hub me/fm
    """
    o.apply_offline(offline)
    from tnt_cli.cli.targets import claim_output
    from tnt_cli.eval.prune import check_schedule_source
    from tnt_cli.eval.prune import prune as write_pruned

    flags = schedule_flags.schedule()
    check_schedule_source(flags, schedule_file)
    claim_output(out, overwrite=overwrite, inputs=[model])  # before loading anything
    if push_to_hub:
        from tnt_cli.io.push import check_push_target

        check_push_target(push_to_hub)
    report = write_pruned(
        model, out, schedule=flags, schedule_file=schedule_file, overwrite=overwrite, random_weights=random_weights
    )
    if push_to_hub:
        from tnt_cli.io.push import push_folder

        report["pushed_to"] = push_folder(out, push_to_hub, private=private)
    if json_out:
        print_json(report)
        return
    render(report)
    if push_to_hub:
        stderr.print(f"pushed to {report['pushed_to']}")


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
