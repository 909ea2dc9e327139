"""`tnt evaluate`: top-1, top-5, loss, GMACs and images/s of a model under TNT, a baseline, or dense."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from tnt_cli.cli import options as o
from tnt_cli.cli.output import print_json, stderr, stdout
from tnt_cli.cli.schedule_flags import ScheduleFlags, takes_schedule_flags
from tnt_cli.methods.loading import AUTO_METHOD
from tnt_cli.methods.registry import DENSE, METHODS, alias_note, metavar

MethodOpt = Annotated[
    str,
    typer.Option(
        "--method",
        help="auto: the directory's own (what `tnt finetune --method` trained it for; tnt otherwise); dense runs "
        f"every token{alias_note()}.",
        metavar=metavar(METHODS, first=(AUTO_METHOD,)),
    ),
]


@takes_schedule_flags
def evaluate(
    model: o.ModelArg,
    data: o.DataOpt,
    split: o.SplitOpt = o.default("split"),
    method: MethodOpt = AUTO_METHOD,
    schedule_flags: ScheduleFlags = ScheduleFlags(),
    tome_r: o.TomeR = None,
    per_class: Annotated[bool, typer.Option("--per-class", help="Also report top-1 per class.")] = False,
    limit: o.LimitOpt = o.default("limit"),
    batch_size: o.BatchSizeOpt = o.default("batch_size"),
    workers: o.WorkersOpt = o.default("workers"),
    device: o.DeviceOpt = o.default("device"),
    seed: o.SeedOpt = o.default("seed"),
    random_weights: o.RandomWeights = o.default("random_weights"),
    update_card: Annotated[
        bool,
        typer.Option(
            "--update-card",
            help="MODEL is a tnt model directory: add these numbers (data, split, images, method) to its card.",
        ),
    ] = False,
    offline: o.Offline = False,
    json_out: o.JsonOut = False,
) -> None:
    """Accuracy and cost of MODEL on DATA, pruned by its schedule (or the flags), by a baseline, or dense.

    A model directory's own schedule is the default; schedule flags override it. Baselines run at the same
    schedule (random) or at the GMACs closest to it (evit, evit-fuse, and tome unless --tome-r).

    Examples:

      tnt evaluate models/deit_s_3.2g --data /data/imagenet

      tnt evaluate runs/fm --data fashion-mnist --prune-layers 2 --keep-rates 0.5

      tnt evaluate runs/fm --data fashion-mnist --method evit --json

      tnt evaluate runs/fm --data fashion-mnist --method tome --tome-r 4

      tnt evaluate models/fm_p50 --data fashion-mnist --update-card
    """
    o.apply_offline(offline)
    from tnt_cli.eval import evaluation

    card_dir = evaluation.evaluation_card_dir(model) if update_card else None
    method, dev = evaluation.check_evaluation(method, limit=limit, batch_size=batch_size, device=device)
    schedule = schedule_flags.schedule()
    if method == DENSE and schedule is not None:  # after the checks: a refusal stays one line
        stderr.print("note: --method dense runs every token; the schedule flags are ignored")
    report = evaluation.evaluate(
        model, data, split=split, method=method, schedule=schedule, tome_r=tome_r, per_class=per_class, limit=limit,
        batch_size=batch_size, workers=workers, device=dev, seed=seed, random_weights=random_weights,
        on_note=lambda text: stderr.print(f"note: {text}"),
    )  # fmt: skip
    if card_dir is not None:
        evaluation.update_card(card_dir, report)
        stderr.print(f"updated the model card in {card_dir}")
    if json_out:
        print_json(report)
        return
    render(report)


def render(report: dict) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    ratio = report["gmacs"] / report["gmacs_dense"]
    limit = ""
    if report["limit"]:
        of = report.get("split_images")
        limit = f" (seeded subset of {of}, seed {report['seed']})" if of else f" (the first {report['limit']})"
    rows = [
        ("model", report["model"]),
        ("data", f"{report['data']} ({report['split']}): {report['images']} images{limit}"),
        ("method", f"{report['method']}: {report['schedule_text']}"),
        ("top-1", f"{100 * report['top1']:.2f}%"),
        ("top-5", f"{100 * report['top5']:.2f}%"),
        ("loss", f"{report['loss']:.4f}"),
        ("GMACs", f"{report['gmacs']:.4g} (dense {report['gmacs_dense']:.4g}, {ratio:.3f}x)"),
        ("images/s", f"{report['images_per_s']:.1f} on {report['device']}" if report["images_per_s"] else "n/a"),
    ]
    for key, value in rows:
        grid.add_row(key, value)
    stdout.print(grid)
    if "per_class" in report:
        table = Table(title="per class")
        for col in ("class", "images", "top-1"):
            table.add_column(col, justify="right")
        for name, row in report["per_class"].items():
            table.add_row(str(name), str(row["images"]), f"{100 * row['top1']:.2f}%")
        stdout.print(table)
