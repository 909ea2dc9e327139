"""`tnt calibrate`: sweep schedules on a calibration subset, find the Pareto front, pick one for a budget."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from tnt_cli.cli import options as o
from tnt_cli.cli.output import print_json, stderr, stdout
from tnt_cli.errors import TntError
from tnt_cli.eval.common import BatchSizeOpt, DataOpt, DeviceOpt, SeedOpt, SplitOpt, WorkersOpt, check_positive

GRID = "Grid"
TARGET = "Target (one of)"


def calibrate(
    model: o.ModelArg,
    data: DataOpt,
    out: Annotated[str, typer.Option("--out", "-o", help="Directory for sweep.csv, pareto.png, schedule.json.")],
    split: SplitOpt = "val",
    limit: Annotated[int, typer.Option("--limit", help="Calibration subset: a seeded draw of N images.")] = 2000,
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
    ] = "0.9,0.8,0.7,0.6,0.5,0.4,0.3,0.2",
    grid_sim: Annotated[
        str,
        typer.Option(
            "--grid-sim", help="Similarity-prune counts r to try; 'auto' is 1/8 of the patches.", rich_help_panel=GRID
        ),
    ] = "0,auto",
    sim_seed: o.SimSeed = 0,
    reducer: o.Reducer = None,
    methods: Annotated[
        str | None,
        typer.Option(
            "--methods",
            help="Methods to sweep: tnt plus baselines at matched GMACs (tnt, random, evit, evit-fuse, tome). "
            "Default: tnt,random,evit,tome (evit only with a class token).",
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
    batch_size: BatchSizeOpt = 64,
    workers: WorkersOpt = 0,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
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
    Note: calibrating on the split you report final accuracy on selects on it; with a subset the bias is small.

    Examples:

      tnt calibrate runs/deit_s_tnt --data /data/imagenet --target-gmacs 3.2 --out runs/deit_s_tnt/calib

      tnt calibrate runs/vit_fm --data fashion-mnist --max-drop 0.5 --grid-layers 2,3 --out calib --measure-speed
    """
    o.apply_offline(offline)
    from tnt_cli.cli.targets import claim_output
    from tnt_cli.data import build_loader
    from tnt_cli.data.classes import data_label_map
    from tnt_cli.devices import resolve_device
    from tnt_cli.eval import sweep as sw
    from tnt_cli.eval.pareto import check_reachable, make_target
    from tnt_cli.io.sources import load_model

    check_positive(limit, "--limit")
    check_positive(batch_size, "--batch-size")
    check_positive(speed_batch, "--speed-batch")
    check_positive(speed_rounds, "--speed-rounds")
    target = make_target(target_gmacs, target_speedup, max_drop)
    default_methods = methods is None
    reducer = o.check_reducer(reducer or o.DEFAULT_REDUCER)
    method_list = [m.strip() for m in (methods or "tnt,random,evit,tome").split(",") if m.strip()]
    if not method_list:
        raise TntError("--methods is empty: give at least one of tnt, random, evit, evit-fuse, tome")
    dev = resolve_device(device)
    claim_output(out, overwrite=overwrite, inputs=[model, data])  # before the sweep, not after it
    loaded = load_model(model, random_weights=random_weights, require_trained_heads=False)
    tnt_model = loaded.model
    if default_methods and getattr(tnt_model.vit, "cls_token", None) is None:
        method_list.remove("evit")
        stderr.print("note: this model has no class token, so the evit baseline is skipped")
    layers = sw.parse_layer_grid(grid_layers) if grid_layers is not None else sw.default_layer_grid(tnt_model)
    keeps = o.parse_float_list(grid_keep, "--grid-keep") if grid_keep.strip() else ()
    sims = _parse_sims(grid_sim, sw.auto_sim_prune(tnt_model))
    schedules, invalid = sw.build_grid(tnt_model, layers, keeps, sims, sim_seed=sim_seed, reducer=reducer)
    if not schedules:
        raise TntError(
            "the schedule grid is empty: every combination is dense or cannot run on this model "
            f"({tnt_model.num_patches} patch tokens, blocks 0-{tnt_model.depth - 1})"
        )
    if invalid:
        stderr.print(f"note: skipped {invalid} grid combination(s) that cannot run on this model")
    points = sw.build_points(tnt_model, schedules, method_list, heads_trained=loaded.heads_trained)
    check_reachable(points, target, speed_measured=measure_speed)  # fail before the sweep when compute decides
    label_map = data_label_map(data, tnt_model.vit, loaded.tnt_config, model=loaded.source, split=split)
    loader = build_loader(
        data, split, tnt_model.vit, batch_size=batch_size, workers=workers, limit=limit, seed=seed, label_map=label_map
    )

    from tnt_cli.progress import Progress

    # progress on stderr also under --json: a sweep takes minutes, and stdout carries only the JSON
    with Progress(f"sweeping {len(points)} points", total=_loader_images(loader, limit), unit="img") as bar:
        sw.run_sweep(tnt_model, points, loader, device=dev, limit=limit, seed=seed, on_batch=bar.advance)
    if measure_speed:
        with Progress(f"timing at batch {speed_batch}", total=len(points), unit="point") as bar:
            sw.measure_speed(
                tnt_model, points, device=dev, batch_size=speed_batch, rounds=speed_rounds, seed=seed,
                on_point=bar.advance,
            )  # fmt: skip
    elif target.kind == "speedup":
        stderr.print("note: without --measure-speed, speedup is estimated as the GMACs ratio")

    summary = write_results(
        out, points, target, overwrite=overwrite, inputs=(model, data),
        context={
            "model": loaded.source, "data": str(data), "split": split, "limit": limit, "seed": seed,
            "batch_size": batch_size, "device": str(dev), "speed_measured": measure_speed,
            "speed_batch": speed_batch if measure_speed else None,
            "speed_rounds": speed_rounds if measure_speed else None,
        },
    )  # fmt: skip
    if json_out:
        print_json(summary)
        return
    render(summary, points)


def write_results(out: str, points, target, *, overwrite: bool, context: dict, inputs=()) -> dict:
    """Mark the Pareto fronts, choose, and write sweep.csv, pareto.png and schedule.json in one atomic step.

    When no schedule meets the target, the finished sweep is still written (sweep.csv, pareto.png; no
    schedule.json), then NoScheduleMeetsTarget says why.
    """
    from tnt_cli.eval.pareto import choose, mark_pareto, plot_pareto, speedup_of
    from tnt_cli.io.atomic import atomic_directory, atomic_write_json, atomic_write_text

    mark_pareto(points)
    try:
        chosen = choose(points, target)
    except TntError as exc:
        chosen, failure = None, exc
    else:
        chosen.chosen, failure = True, None
    dense = next(p for p in points if p.method == "dense")
    title = f"{context['model']} on {context['data']} ({context['split']}, {dense.images} images)"
    if chosen is None:
        with atomic_directory(out, overwrite=overwrite, inputs=inputs) as tmp:
            atomic_write_text(tmp / "sweep.csv", _csv(points))
            plot_pareto(points, None, tmp / "pareto.png", title=title, target=target)
        raise NoScheduleMeetsTarget(f"{failure}; the sweep was written to {out}/sweep.csv and pareto.png")
    schedule_doc = {
        "format": "tnt-schedule/1",
        "schedule": chosen.schedule.to_dict(),
        "schedule_text": chosen.describe(),
        "method": "tnt",
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
        "measured_on": {**context, "images": chosen.images},
    }
    with atomic_directory(out, overwrite=overwrite, inputs=inputs) as tmp:
        atomic_write_text(tmp / "sweep.csv", _csv(points))
        plot_pareto(points, chosen, tmp / "pareto.png", title=title, target=target)
        atomic_write_json(tmp / "schedule.json", schedule_doc)
    return {
        "out": str(out),
        "files": ["sweep.csv", "pareto.png", "schedule.json"],
        "points": len(points),
        "chosen": schedule_doc,
    }


class NoScheduleMeetsTarget(TntError):
    """The sweep ran (and was written), but no schedule meets the target."""


def _csv(points) -> str:
    import csv
    import io

    buffer = io.StringIO()
    rows = [p.row() for p in points]
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _parse_sims(text: str, auto: int) -> tuple[int, ...]:
    parts = [p.strip() for p in text.replace(" ", ",").split(",") if p.strip()]
    try:
        values = tuple(auto if p == "auto" else int(p) for p in parts)
    except ValueError:
        raise TntError(f"--grid-sim takes whole numbers or 'auto', got {text!r}") from None
    if any(v < 0 for v in values):
        raise TntError(f"--grid-sim counts must be >= 0, got {text!r}")
    return tuple(dict.fromkeys(values))


def _loader_images(loader, limit: int | None) -> int | None:
    try:
        n = len(loader.sampler)
    except (TypeError, AttributeError):
        return limit
    return n if limit is None else min(n, limit)


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


def render(summary: dict, points) -> None:
    c = summary["chosen"]
    stdout.print(summary_line(c))
    table = Table(title=f"Pareto front ({summary['points']} points measured on {c['measured_on']['images']} images)")
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
