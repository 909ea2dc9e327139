"""`tnt calibrate`: sweep schedules on a calibration subset, find the Pareto front, pick one for a budget."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from tnt_cli.cli import options as o
from tnt_cli.cli.output import print_json, stderr, stdout
from tnt_cli.eval.grid import DEFAULT_KEEP_GRID, DEFAULT_METHODS, DEFAULT_SIM_GRID
from tnt_cli.parsing import list_parts

GRID = "Grid"
TARGET = "Target (one of)"


def calibrate(
    model: o.ModelArg,
    data: o.DataOpt,
    out: Annotated[str, typer.Option("--out", "-o", help="Directory for sweep.csv, pareto.png, schedule.json.")],
    split: Annotated[
        str,
        typer.Option(
            "--split",
            help="Where the schedule is chosen: holdout is the slice of the train split `tnt finetune` holds out "
            "(images the fine-tune never saw), so the test split plays no part in the choice.",
        ),
    ] = "holdout",
    limit: Annotated[int, typer.Option("--limit", help="Calibration subset: a seeded draw of N images.")] = 2000,
    eval_split: Annotated[
        str, typer.Option("--eval-split", help="Where the chosen schedule and dense are then measured.")
    ] = "val",
    eval_limit: Annotated[
        int | None,
        typer.Option(
            "--eval-limit",
            help="Measure the choice on a seeded subset of N images (0: not at all).",
            show_default="the whole split",
        ),
    ] = None,
    grid_layers: Annotated[
        str | None,
        typer.Option(
            "--grid-layers",
            help="Prune layers to try: 2,3 tries each; 2+4 is one multi-layer schedule. Default: every head block "
            "but the last block.",
            rich_help_panel=GRID,
        ),
    ] = None,
    grid_keep: Annotated[
        str, typer.Option("--grid-keep", help="Keep rates to try (the same rate at every layer).", rich_help_panel=GRID)
    ] = ",".join(f"{k:g}" for k in DEFAULT_KEEP_GRID),
    grid_sim: Annotated[
        str,
        typer.Option(
            "--grid-sim", help="Similarity-prune counts r to try; 'auto' is 1/8 of the patches.", rich_help_panel=GRID
        ),
    ] = ",".join(map(str, DEFAULT_SIM_GRID)),
    sim_seed: o.SimSeed = 0,
    reducer: o.Reducer = None,
    methods: Annotated[
        str | None,
        typer.Option(
            "--methods",
            help="Methods to sweep: tnt plus baselines at matched GMACs (tnt, random, evit, evit-fuse, tome). "
            f"Default: {','.join(DEFAULT_METHODS)} (evit only with a class token).",
            rich_help_panel=GRID,
        ),
    ] = None,
    target_gmacs: Annotated[
        float | None,
        typer.Option("--target-gmacs", help="Most accurate schedule within G GMACs.", rich_help_panel=TARGET),
    ] = None,
    target_speedup: Annotated[
        float | None,
        typer.Option(
            "--target-speedup",
            help="Most accurate schedule at least S times faster than dense (measured with --measure-speed, "
            "else the GMACs ratio).",
            rich_help_panel=TARGET,
        ),
    ] = None,
    max_drop: Annotated[
        float | None,
        typer.Option(
            "--max-drop",
            help="Cheapest schedule within D top-1 points of dense (the default, with D = 1).",
            rich_help_panel=TARGET,
        ),
    ] = None,
    measure_speed: Annotated[
        bool, typer.Option("--measure-speed", help="Time every point against dense, alternating, on this machine.")
    ] = False,
    speed_batch: Annotated[int, typer.Option("--speed-batch", help="Batch size for --measure-speed.")] = 32,
    speed_rounds: Annotated[
        int, typer.Option("--speed-rounds", help="Alternating dense/pruned timing rounds per point (median kept).")
    ] = 5,
    batch_size: o.BatchSizeOpt = 64,
    workers: o.WorkersOpt = 0,
    device: o.DeviceOpt = "auto",
    seed: o.SeedOpt = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out directory.")] = False,
    random_weights: o.RandomWeights = False,
    offline: o.Offline = False,
    json_out: o.JsonOut = False,
) -> None:
    """Sweep prune layers x keep rates x similarity-prune counts (and the baselines at matched compute) on a
    calibration subset, then choose the best TNT schedule under one target.

    Writes sweep.csv (every point), pareto.png (top-1 vs GMACs, the choice marked) and schedule.json (the
    chosen schedule, its accuracy and GMACs, and the images they were measured on) into --out, atomically.
    The dense forward up to each first pruning block is computed once per batch and shared by the schedules.
    The choice is made on the held-out slice of the train split (--split), then measured with dense on the
    evaluation split (--eval-split: Fashion-MNIST's test split); a baseline of the sweep that is as cheap and at
    least as accurate as the choice is named in a warning.

    Examples:

      tnt calibrate runs/deit_s_tnt --data /data/imagenet --target-gmacs 3.2 --out runs/deit_s_tnt/calib

      tnt calibrate runs/vit_fm --data fashion-mnist --max-drop 0.5 --grid-layers 2,3 --out calib --measure-speed
    """
    o.apply_offline(offline)
    from tnt_cli.devices import resolve_device
    from tnt_cli.eval.calibrate import Calibration
    from tnt_cli.eval.calibrate import calibrate as sweep_and_choose
    from tnt_cli.eval.grid import parse_layer_grid, parse_sim_grid
    from tnt_cli.eval.pareto import make_target

    settings = Calibration(
        target=make_target(target_gmacs, target_speedup, max_drop),
        split=split,
        limit=limit,
        eval_split=eval_split,
        eval_limit=eval_limit,
        grid_layers=tuple(parse_layer_grid(grid_layers)) if grid_layers is not None else None,
        grid_keep=o.parse_float_list(grid_keep, "--grid-keep") if grid_keep.strip() else (),
        grid_sim=parse_sim_grid(grid_sim),
        sim_seed=sim_seed,
        reducer=o.check_reducer(reducer or o.DEFAULT_REDUCER),
        methods=tuple(list_parts(methods)) if methods is not None else None,
        measure_speed=measure_speed,
        speed_batch=speed_batch,
        speed_rounds=speed_rounds,
        batch_size=batch_size,
        workers=workers,
        seed=seed,
    )
    dev = resolve_device(device)
    # --out is checked (and locked) before the sweep, not after it; progress on stderr also under --json: a
    # sweep takes minutes, and stdout carries only the JSON
    result = sweep_and_choose(
        model, data, out, settings, device=dev, overwrite=overwrite, random_weights=random_weights,
        on_note=lambda text: stderr.print(f"note: {text}"),
    )  # fmt: skip
    if settings.target.kind == "speedup" and not measure_speed:  # after: a refusal stays one line
        stderr.print("note: without --measure-speed, speedup is estimated as the GMACs ratio")
    for warning in result.summary["warnings"]:
        stderr.print(f"warning: {escape(warning)}")
    if json_out:
        print_json(result.summary)
        return
    render(result.summary, result.points)


def summary_line(chosen: dict) -> str:
    """The choice in one line: accuracy with its signed change against dense, compute, and speed if measured."""
    c = chosen
    line = (
        f"chosen ({c['target']['text']}): [bold]{c['schedule_text']}[/bold]  top-1 {100 * c['top1']:.2f}% "
        f"(dense {100 * c['dense_top1']:.2f}%, {0.0 - c['drop_points']:+.2f} pts)  {c['gmacs']:.4g} GMACs "
        f"({c['gmacs_ratio']:.3f}x dense, {1 / c['gmacs_ratio']:.2f}x fewer MACs)"
    )
    if c["speedup_source"] == "measured":
        line += f"  speedup {c['speedup']:.2f}x (measured)"
    return line


def evaluation_line(chosen: dict) -> str | None:
    """The choice measured on the evaluation split, against dense on the same images."""
    e = chosen.get("evaluation")
    if not e:
        return None
    subset = f", seeded subset of the split, seed {e['seed']}" if e.get("limit") else ""
    return (
        f"on {escape(str(e['split']))} ({e['images']} images{subset}): top-1 {100 * e['top1']:.2f}% "
        f"(dense {100 * e['dense_top1']:.2f}%, {100 * (e['top1'] - e['dense_top1']):+.2f} pts)"
    )


def render(summary: dict, points) -> None:
    c = summary["chosen"]
    stdout.print(summary_line(c))
    measured = evaluation_line(c)
    if measured:
        stdout.print(measured)
    where = c["measured_on"].get("split")
    split = f" of {escape(str(where))}" if where else ""
    table = Table(title=f"Pareto front ({summary['points']} points measured on {c['measured_on']['images']} "
                        f"images{split})")  # fmt: skip
    measured = any(p.speedup is not None for p in points)
    for col in ("method", "schedule", "GMACs", "top-1") + (("speedup",) if measured else ()):
        table.add_column(col, justify="right")
    for p in sorted((p for p in points if p.pareto), key=lambda p: (p.group, p.gmacs)):
        mark = " *" if p.chosen else ""
        row = [p.method, p.describe() + mark, f"{p.gmacs:.4g}", f"{100 * p.top1:.2f}%"]
        if measured:
            row.append(f"{p.speedup:.2f}x" if p.speedup is not None else "")
        table.add_row(*row)
    stdout.print(table)
    stdout.print(f"wrote {summary['out']}/sweep.csv, pareto.png, schedule.json")
