"""`tnt info`: what a model is, and what a schedule would cost and save on it."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from tnt_cli.cli import options as o
from tnt_cli.cli.output import print_json, stdout
from tnt_cli.cli.schedule_flags import ScheduleFlags, takes_schedule_flags


@takes_schedule_flags
def info(
    model: o.ModelArg,
    schedule_flags: ScheduleFlags = ScheduleFlags(),
    random_weights: Annotated[
        bool, typer.Option("--random-weights", hidden=True, help="No effect: info never loads weights.")
    ] = False,
    offline: o.Offline = False,
    json_out: o.JsonOut = False,
) -> None:
    """Architecture, parameters, prefix tokens, tokens per block and GMACs dense vs pruned.

    A timm name is built from its shapes alone (no weights are downloaded: the numbers do not depend on them).

    Examples:

      tnt info deit_small_patch16_224 --prune-layers 2 --keep-rates 0.6

      tnt info runs/deit_s --json
    """
    o.apply_offline(offline)
    from tnt_cli.api import describe

    data = describe(model, schedule=schedule_flags.schedule())
    if json_out:
        print_json(data)
        return
    render(data)


def render(data: dict) -> None:
    from tnt_cli.bench.report import gmacs_text  # 4.63, 0.000959: small models keep their digits

    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    rows = [
        ("model", f"{data['source']} ({data['architecture']})"),
        ("input", f"{data['input_size']} patch {data['patch_size']} -> {data['patch_tokens']} patch tokens"),
        ("width / depth / heads", f"{data['embed_dim']} / {data['depth']} / {data['num_heads']}"),
        ("parameters", f"{data['params'] / 1e6:.2f} M (+{data['tnt_head_params']} in TNT heads)"),
        ("prefix tokens", str(data["prefix_tokens"])),
        ("relevance heads", ", ".join(map(str, data["head_blocks"])) or "none"),
        ("schedule", data["schedule_text"]),
        ("GMACs dense", gmacs_text(data["gmacs_dense"])),
        ("GMACs pruned", gmacs_text(data["gmacs_pruned"])),
        ("ratio", f"{data['gmacs_ratio']:.3f} ({1 / data['gmacs_ratio']:.2f}x fewer MACs)"),
    ]
    for key, value in rows:
        summary.add_row(key, value)
    stdout.print(summary)
    table = Table(title="tokens per block", show_lines=False)
    for col in ("block", "tokens", "patch tokens", "GMACs", "dense GMACs"):
        table.add_column(col, justify="right")
    for row in data["blocks"]:
        table.add_row(
            str(row["block"]),
            str(row["tokens"]),
            str(row["patch_tokens"]),
            gmacs_text(row["gmacs"]),
            gmacs_text(row["dense_gmacs"]),
        )
    stdout.print(table)
