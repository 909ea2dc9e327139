"""`tnt compare`: TNT and the baselines side by side on your data, at matched GMACs."""

from __future__ import annotations

from typing import Annotated

import typer

from tnt_cli.cli import options as o
from tnt_cli.eval.compare import BATCH_SIZE, BLOCK, KEEPS
from tnt_cli.methods.registry import METHODS, metavar
from tnt_cli.terminal import styled


def compare(
    models: Annotated[
        list[str],
        typer.Argument(
            help="Model directories written by `tnt finetune --method ...` (each runs its own method), or one "
            "model with --methods.",
            show_default=False,
            metavar="MODELS",
        ),
    ],
    data: o.DataOpt,
    split: o.SplitOpt = o.default("split"),
    methods: Annotated[
        str | None,
        typer.Option(
            "--methods",
            help="Run these methods on every MODEL instead of each one's own (training-free comparison).",
            metavar=metavar(METHODS).replace("|", ","),
        ),
    ] = None,
    keeps: Annotated[
        str,
        typer.Option(
            "--keeps", help="Keep rates to compare at, one single-stage schedule each.", rich_help_panel="Schedule"
        ),
    ] = ",".join(f"{k:g}" for k in KEEPS),
    block: Annotated[
        int,
        typer.Option(
            "--block", help="Block after (or, for EViT, inside) which tokens are reduced.", rich_help_panel="Schedule"
        ),
    ] = BLOCK,
    limit: o.LimitOpt = o.default("limit"),
    batch_size: o.option("batch_size", default=BATCH_SIZE) = BATCH_SIZE,
    workers: o.WorkersOpt = o.default("workers"),
    device: o.DeviceOpt = o.default("device"),
    seed: o.SeedOpt = o.default("seed"),
    offline: o.Offline = False,
    json_out: o.JsonOut = False,
) -> None:
    """Top-1 of each model (with its method) at every keep rate, all at the GMACs TNT has at that keep rate.

    The fair question on your own data: fine-tune TNT and each baseline with the same recipe and budget (`tnt
    finetune --method` each), then compare them here. Each baseline runs at the setting whose GMACs are closest
    to TNT's (ToMe: its merge count r; EViT: its kept-token count); the table shows the largest GMACs gap.

    Examples:

      tnt compare runs/tnt runs/tome runs/evit --data /data/imagenet --keeps 0.5

      tnt compare runs/tnt --methods tnt,random,tome --data fashion-mnist --json
    """
    o.apply_offline(offline)
    from tnt_cli.cli.output import print_json, stderr
    from tnt_cli.eval.compare import compare_models, largest_gmacs_gap

    rows = compare_models(
        models, data, split=split, methods=o.parse_str_list(methods, "--methods") if methods else None,
        keeps=o.parse_float_list(keeps, "--keeps"), block=block, limit=limit, batch_size=batch_size,
        workers=workers, device=device, seed=seed, on_note=None if json_out else stderr.print,
        on_row=lambda r: stderr.print(f"  {r['label']} {r['schedule_text']}: {100 * r['top1']:.2f}%"),
    )  # fmt: skip
    gap = largest_gmacs_gap(rows)
    if json_out:
        print_json({"data": str(data), "split": split, "limit": limit, "rows": rows, "largest_gmacs_gap": gap})
        return
    render(rows, gap)


def render(rows: list[dict], gap: float) -> None:
    from rich.table import Table

    from tnt_cli.cli.output import stdout

    labels = list(dict.fromkeys(r["label"] for r in rows))
    schedules = list(dict.fromkeys(r["schedule_text"] for r in rows))
    table = Table(title=f"top-1 at matched GMACs (largest GMACs gap {100 * gap:.1f}%)")
    table.add_column("schedule")
    table.add_column("GMACs", justify="right")
    for label in labels:
        table.add_column(label, justify="right")
    for name in schedules:
        cells = {r["label"]: r for r in rows if r["schedule_text"] == name}
        best = max(c["top1"] for c in cells.values())
        ref = next(iter(cells.values()))
        values = []
        for label in labels:
            c = cells.get(label)
            text = "" if c is None else f"{100 * c['top1']:.2f}%"
            values.append(styled(text, "bold") if c is not None and c["top1"] == best and len(cells) > 1 else text)
        table.add_row(name, f"{ref['gmacs_tnt']:.4g}", *values)
    stdout.print(table)
