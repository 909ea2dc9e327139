"""`tnt visualize`: draw which patches each pruning stage keeps, with relevance maps and the prediction."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tnt_cli.cli import options as o
from tnt_cli.cli.output import print_json, stderr, stdout
from tnt_cli.cli.schedule_flags import ScheduleFlags, takes_schedule_flags
from tnt_cli.methods.loading import AUTO_METHOD
from tnt_cli.methods.registry import alias_note, metavar, names

TRACEABLE = names(traceable=True)  # the methods whose kept patches can be drawn


@takes_schedule_flags
def visualize(
    model: o.ModelArg,
    images: Annotated[
        list[Path],
        typer.Argument(help="Images to show (any format Pillow reads).", show_default=False, metavar="IMAGES"),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the PNGs (one per image).")],
    schedule_flags: ScheduleFlags = ScheduleFlags(),
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help=f"Who picks the tokens: auto (the directory's own method), tnt (relevance heads), random or evit"
            f"{alias_note(TRACEABLE)}.",
            metavar=metavar(TRACEABLE, first=(AUTO_METHOD,)),
        ),
    ] = AUTO_METHOD,
    seed: o.option("seed", help="Seed of the random method.") = o.default("seed"),
    data: Annotated[
        str | None,
        typer.Option("--data", help="Dataset whose class names label predictions (default: the model's label_names)."),
    ] = None,
    renderer: Annotated[
        str, typer.Option("--renderer", help="auto (matplotlib if installed), matplotlib or pillow.")
    ] = "auto",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace PNGs that already exist.")] = False,
    random_weights: o.RandomWeights = o.default("random_weights"),
    offline: o.Offline = False,
    json_out: o.JsonOut = False,
) -> None:
    """Draw, per image and per pruning stage, the patches kept (pruned ones dimmed), the relevance map and the
    predicted class with its probability. Images are resized with the model's own eval transform.

    Examples:

      tnt visualize runs/deit_s cat.jpg dog.png --out viz/

      tnt visualize runs/deit_s cat.jpg -o viz/ --method evit

      tnt visualize runs/deit_s cat.jpg -o viz/ --prune-layers 2 --keep-rates 0.7
    """
    o.apply_offline(offline)
    from tnt_cli.cli.targets import claim_output
    from tnt_cli.viz.files import check_method
    from tnt_cli.viz.files import visualize as draw

    if method != AUTO_METHOD:
        check_method(method)
    claim_output(out, overwrite=overwrite, kind="into")  # validated and locked before any work
    schedule = schedule_flags.schedule()
    drawn = draw(
        model, images, out, method=method, schedule=schedule, data=data, renderer=renderer, overwrite=overwrite,
        random_weights=random_weights, seed=seed,
        on_start=lambda chosen, source: stderr.print(f"visualizing {len(images)} image(s) with {chosen} on {source}"),
    )  # fmt: skip
    results = drawn.results
    if results and not results[0].stages:
        stderr.print("note: the schedule is dense, nothing is pruned (give --prune-layers and --keep-rates)")
    if json_out:
        print_json({"model": drawn.source, "class_names_from": drawn.class_names_from,
                    "images": [r.to_dict() for r in results]})  # fmt: skip
        return
    for r in results:
        kept = ", ".join(f"{s.n_out}/{s.n_in}" for s in r.stages) or "all tokens (dense)"
        stdout.print(f"{r.output}: {r.class_label(r.prediction)} ({r.probability:.1%}); kept {kept}")
