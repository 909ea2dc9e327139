"""`tnt calibrate`: sweep schedules on a calibration subset, find the Pareto front, pick one for a budget.

The sweep's options are derived from `tnt_cli.eval.grid.Calibration`'s declarations (MODEL, --data and --device
from the shared ones); this module adds the flags that say how to run, calls `calibrate` and prints the choice.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from tnt_cli.cli import options as o
from tnt_cli.cli.declared import settings_from, signature
from tnt_cli.cli.output import print_json, stderr, stdout
from tnt_cli.eval.grid import Calibration
from tnt_cli.settings import declarations, declared
from tnt_cli.terminal import printable, styled

INPUTS = (declared("model"), declared("data"))
SETTINGS = declarations(Calibration)
DEVICE = (declared("device"),)
OUT = {"out": (Annotated[str, typer.Option("--out", "-o", help="Directory for sweep.csv, pareto.png, schedule.json.",
                                           show_default=False)], ...)}  # fmt: skip
RUN_FLAGS: dict[str, tuple[Any, Any]] = {
    "overwrite": (Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out directory.")], False),
    "random_weights": (o.option("random_weights"), o.default("random_weights")),
    "offline": (o.Offline, False),
    "json_out": (o.JsonOut, False),
}


def calibrate(**values: Any) -> None:
    """Sweep prune layers x keep rates x similarity-prune counts (and the baselines at matched compute) on a
    calibration subset, then choose the best TNT schedule under one target.

    Writes sweep.csv (every point), pareto.png (top-1 vs GMACs, the choice marked) and schedule.json (the
    chosen schedule, its accuracy and GMACs, and the images they were measured on) into --out, atomically.
    The dense forward up to each first pruning block is computed once per batch and shared by the schedules.
    The choice is made on the held-out slice of the train split (--split), then measured with dense on the
    evaluation split (--eval-split: Fashion-MNIST's test split); a baseline of the sweep that is as cheap and at
    least as accurate as the choice is named in a warning.

    Examples:

      tnt calibrate runs/deit_s --data /data/imagenet --target-gmacs 3.2 -o calib

      tnt calibrate runs/vit_fm --data fashion-mnist --max-drop 0.5 -o calib

      tnt calibrate runs/vit_fm --data fashion-mnist --grid-layers 2,3 -o calib
    """
    o.apply_offline(values.pop("offline"))
    from tnt_cli.devices import resolve_device
    from tnt_cli.eval.calibrate import calibrate as sweep_and_choose

    model, data, out = values.pop("model"), values.pop("data"), values.pop("out")
    overwrite, random_weights, json_out = values.pop("overwrite"), values.pop("random_weights"), values.pop("json_out")
    device = values.pop("device")
    settings = Calibration(**settings_from(SETTINGS, values))
    dev = resolve_device(device)
    # --out is checked (and locked) before the sweep, not after it; progress on stderr also under --json: a
    # sweep takes minutes, and stdout carries only the JSON
    result = sweep_and_choose(
        model, data, out, settings, device=dev, overwrite=overwrite, random_weights=random_weights,
        on_note=lambda text: stderr.print(f"note: {text}"),
    )  # fmt: skip
    if settings.target.kind == "speedup" and not settings.measure_speed:  # after: a refusal stays one line
        stderr.print("note: without --measure-speed, speedup is estimated as the GMACs ratio")
    for warning in result.summary["warnings"]:
        stderr.print(styled("warning:", "yellow"), warning)
    if json_out:
        print_json(result.summary)
        return
    render(result.summary, result.points)


calibrate.__signature__ = signature(INPUTS, OUT, SETTINGS, DEVICE, RUN_FLAGS)  # type: ignore[attr-defined]


def summary_line(chosen: dict) -> Text:
    """The choice in one line: accuracy with its signed change against dense, compute, and speed if measured."""
    c = chosen
    line = Text(printable(f"chosen ({c['target']['text']}): "))
    line.append_text(styled(c["schedule_text"], "bold"))
    line.append(
        f"  top-1 {100 * c['top1']:.2f}% (dense {100 * c['dense_top1']:.2f}%, {0.0 - c['drop_points']:+.2f} pts)  "
        f"{c['gmacs']:.4g} GMACs ({c['gmacs_ratio']:.3f}x dense, {1 / c['gmacs_ratio']:.2f}x fewer MACs)"
    )
    if c["speedup_source"] == "measured":
        line.append(f"  speedup {c['speedup']:.2f}x (measured)")
    return line


def evaluation_line(chosen: dict) -> str | None:
    """The choice measured on the evaluation split, against dense on the same images."""
    e = chosen.get("evaluation")
    if not e:
        return None
    subset = f", seeded subset of the split, seed {e['seed']}" if e.get("limit") else ""
    return (
        f"on {e['split']} ({e['images']} images{subset}): top-1 {100 * e['top1']:.2f}% "
        f"(dense {100 * e['dense_top1']:.2f}%, {100 * (e['top1'] - e['dense_top1']):+.2f} pts)"
    )


def render(summary: dict, points) -> None:
    c = summary["chosen"]
    stdout.print(summary_line(c))
    measured = evaluation_line(c)
    if measured:
        stdout.print(measured)
    where = c["measured_on"].get("split")
    split = f" of {where}" if where else ""
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
