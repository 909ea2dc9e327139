"""`tnt compare`: TNT and the baselines side by side on your data, at matched GMACs."""

from __future__ import annotations

from typing import Annotated

import typer

from tnt_cli.cli import options as o
from tnt_cli.eval.compare import BATCH_SIZE, BLOCK, BUDGET_KEEPS, BUDGET_TOLERANCE, KEEPS
from tnt_cli.methods.registry import METHODS, metavar
from tnt_cli.terminal import styled


def _keeps(keeps: tuple[float, ...]) -> str:
    return ",".join(f"{k:g}" for k in keeps)


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
        str | None,
        typer.Option(
            "--keeps",
            help=f"Keep rates to compare at, one single-stage schedule each. Default: {_keeps(KEEPS)}; with "
            f"--budget, {_keeps(BUDGET_KEEPS)}.",
            rich_help_panel="Schedule", show_default=False,
        ),
    ] = None,
    block: Annotated[
        int,
        typer.Option(
            "--block", help="Block after (or, for EViT, inside) which tokens are reduced.", rich_help_panel="Schedule"
        ),
    ] = BLOCK,
    budget: Annotated[
        float | None,
        typer.Option(
            "--budget",
            help="GMACs per image: report each model at its most accurate schedule costing at most this "
            f"(+{BUDGET_TOLERANCE:.0%}), searched over --keeps (and --progressive).",
            rich_help_panel="Schedule", show_default=False,
        ),
    ] = None,
    progressive: Annotated[
        str | None,
        typer.Option(
            "--progressive",
            help="Blocks, e.g. 1,3: also compare multi-stage schedules, each keep rate after every one of these "
            "blocks (TNT needs a head after each: the default recipe trains them after 1 and 3).",
            rich_help_panel="Schedule", show_default=False,
        ),
    ] = None,
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
    to TNT's (ToMe: its merge count r; EViT: its kept-token count); the table shows the largest GMACs gap. With
    --budget, a second table gives each model at its most accurate schedule costing at most that many GMACs.

    Examples:

      tnt compare runs/tnt runs/tome runs/evit --data /data/imagenet --keeps 0.5

      tnt compare runs/tnt --methods tnt,random,tome --data fashion-mnist --json

      tnt compare runs/tnt runs/tome --data /in1k --budget 3.2 --progressive 1,3
    """
    o.apply_offline(offline)
    from tnt_cli.cli.output import print_json, stderr
    from tnt_cli.eval.compare import best_within_budget, compare_models, largest_gmacs_gap

    rows = compare_models(
        models, data, split=split, methods=o.parse_str_list(methods, "--methods") if methods else None,
        keeps=o.parse_float_list(keeps, "--keeps") if keeps is not None else None, block=block, budget=budget,
        progressive=o.parse_int_list(progressive, "--progressive") if progressive else (), limit=limit,
        batch_size=batch_size, workers=workers, device=device, seed=seed,
        on_note=None if json_out else stderr.print,
        on_row=lambda r: stderr.print(f"  {r['label']} {r['schedule_text']}: {100 * r['top1']:.2f}%"),
    )  # fmt: skip
    gap = largest_gmacs_gap(rows)
    best = best_within_budget(rows, budget) if budget is not None else None
    if json_out:
        doc = {"data": str(data), "split": split, "limit": limit, "rows": rows, "largest_gmacs_gap": gap}
        if best is not None:
            doc.update(budget=budget, budget_tolerance=BUDGET_TOLERANCE, best=best)
        print_json(doc)
        return
    render(rows, gap)
    if best is not None:
        render_best(best, budget)


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


def render_best(best: list[dict], budget: float) -> None:
    """Each model at its most accurate schedule within the budget."""
    from rich.table import Table

    from tnt_cli.cli.output import stdout

    table = Table(title=f"best schedule within {budget:.4g} GMACs (+{BUDGET_TOLERANCE:.0%})")
    for name, justify in (("model", "left"), ("schedule", "left"), ("GMACs", "right"), ("top-1", "right")):
        table.add_column(name, justify=justify)
    for r in best:
        if r["schedule_text"] is None:
            table.add_row(r["label"], "none within the budget", "", "")
        else:
            table.add_row(r["label"], r["schedule_text"], f"{r['gmacs']:.4g}", f"{100 * r['top1']:.2f}%")
    stdout.print(table)
