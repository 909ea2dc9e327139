"""`tnt benchmark`: images/s and latency of dense vs pruned, measured alternately in one run.

The measurement's options are derived from `tnt_cli.bench.config.BenchConfig`'s declarations (MODEL and the schedule
flags from the shared ones); this module adds the flags that say where the report goes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tnt_cli.bench.config import BenchConfig
from tnt_cli.cli import options as o
from tnt_cli.cli._errors import spelled
from tnt_cli.cli.declared import settings_from, signature
from tnt_cli.cli.output import print_json, stderr, stdout
from tnt_cli.cli.schedule_flags import ScheduleFlags, takes_schedule_flags
from tnt_cli.settings import declarations, declared
from tnt_cli.terminal import styled

INPUTS = (declared("model"),)
SETTINGS = declarations(BenchConfig)
RUN_FLAGS: dict[str, tuple[Any, Any]] = {
    "random_weights": (o.option("random_weights"), o.default("random_weights")),
    "out": (Annotated[Path | None, typer.Option("--out", "-o", help="Write report.json and report.md here (a model "
                                                "directory: its card).", show_default=False)], None),
    "overwrite": (Annotated[bool, typer.Option("--overwrite", help="Replace a report already in --out.")], False),
    "update_card": (Annotated[bool, typer.Option("--update-card", help="MODEL is a model directory: add the numbers "
                                                 "to its card.")], False),
    "offline": (o.Offline, False),
    "json_out": (o.JsonOut, False),
}  # fmt: skip


def benchmark(schedule_flags: ScheduleFlags = ScheduleFlags(), **values: Any) -> None:
    """Measure whether pruning pays on this machine: dense and pruned timed alternately, explained by GMACs.

    With --methods, ToMe / EViT / random run at the GMACs closest to TNT's in the same alternating rounds.

    The dense baseline is the plain timm model (what you would deploy without TNT); TNT at keep 1.0 is timed
    too, to show the cost of TNT's forward itself. Efficiency = measured speedup / GMACs ratio. Without schedule
    flags the model's own schedule is used, else block 2 / keep 0.6 / r 25.

    Examples:

      tnt benchmark deit_small_patch16_224 --random-weights --batch-sizes 1,32

      tnt benchmark runs/deit_s --dtype bf16 --compile --device cuda:0 -o bench

      tnt benchmark deit_small_patch16_224 --random-weights --methods tnt,tome

      tnt benchmark runs/deit_s --prune-layers 2,3 --keep-rates 0.8,0.8 --json
    """
    o.apply_offline(values.pop("offline"))
    from tnt_cli.bench.env import resolve_device, set_threads
    from tnt_cli.bench.report import benchmark_card_dir, report_paths, update_model_card, write_reports
    from tnt_cli.bench.runner import benchmark_model

    model, random_weights, json_out = values.pop("model"), values.pop("random_weights"), values.pop("json_out")
    out, overwrite, update_card = values.pop("out"), values.pop("overwrite"), values.pop("update_card")
    config = BenchConfig(**settings_from(SETTINGS, values))
    schedule = schedule_flags.schedule()
    card = benchmark_card_dir(model, out, update_card)
    if out is not None:  # before timing: a bad --out must not cost a benchmark
        from tnt_cli.cli.targets import claim_output

        claim_output(out, overwrite=overwrite, kind="into")
        report_paths(out, overwrite=overwrite)
    # resolving first fails on --device cuda without a GPU before anything is loaded
    set_threads(resolve_device(config.device), config.threads)
    # progress goes to stderr, also with --json
    report = benchmark_model(model, config, schedule=schedule, random_weights=random_weights, on_note=stderr.print)
    for warning in report["warnings"]:
        stderr.print(styled("warning:", "yellow"), spelled(warning))
    if out is not None:
        paths = write_reports(out, report, overwrite=overwrite)
        stderr.print(f"wrote {paths[0]} and {paths[1]}")
    if card is not None:
        update_model_card(card, report)
        stderr.print(f"updated the model card in {card}")
    if json_out:
        print_json(report)
    else:
        stdout.print(to_table(report))


benchmark.__signature__ = signature(INPUTS, {"schedule_flags": (ScheduleFlags, ScheduleFlags())}, SETTINGS, RUN_FLAGS)
benchmark = takes_schedule_flags(benchmark)


def to_table(report: dict):
    """Every variant at every batch size, speedups coloured by whether pruning paid."""
    from rich.table import Table

    from tnt_cli.bench.report import gmacs_text, headline, memory_text
    from tnt_cli.bench.variants import DENSE, LABELS, PRUNED, TNT_DENSE

    g = report["gmacs"]
    table = Table(
        title=headline(report),
        caption=f"GMACs dense {gmacs_text(g['dense'])} / pruned {gmacs_text(g['pruned'])} = {g['ratio']:.2f}x; "
        "efficiency = speedup / GMACs ratio",
    )
    for col in ("batch", "variant", "img/s", "p50 ms", "p90 ms", "peak MiB", "speedup", "efficiency"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for row in report["results"]:
        for name, stats in row["variants"].items():
            speed, eff = "", ""
            peer = row.get("methods", {}).get(name)
            if peer is not None:
                speed, eff = f"{peer['speedup']:.2f}x", f"{peer['efficiency']:.2f}"
            if name == PRUNED:
                style = "green" if row["speedup"] >= 1 else "red"
                speed, eff = styled(f"{row['speedup']:.2f}x", style), f"{row['efficiency']:.2f}"
            elif name == TNT_DENSE:
                speed = f"{stats['images_per_s'] / row['variants'][DENSE]['images_per_s']:.3f}x"
            table.add_row(
                str(row["batch_size"]) if name == DENSE else "",
                LABELS.get(name, name),
                f"{stats['images_per_s']:.1f}",
                f"{stats['latency_ms_p50']:.1f}",
                f"{stats['latency_ms_p90']:.1f}",
                memory_text(row, name),
                speed,
                eff,
            )
        table.add_section()
    return table
