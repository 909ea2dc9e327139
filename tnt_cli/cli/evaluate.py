"""`tnt evaluate`: top-1, top-5, loss, GMACs and images/s of a model under TNT, a baseline, or dense."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from tnt_cli.cli import options as o
from tnt_cli.cli.output import print_json, stderr, stdout
from tnt_cli.errors import TntError
from tnt_cli.eval.common import BatchSizeOpt, DataOpt, DeviceOpt, SeedOpt, SplitOpt, TomeR, WorkersOpt, check_positive

MethodOpt = Annotated[
    str,
    typer.Option(
        "--method",
        help="auto (the directory's own: what `tnt finetune --method` trained it for; tnt otherwise), tnt, random, "
        "evit, evit-fuse, tome or dense (cls-attn = evit).",
    ),
]


def evaluate(
    model: o.ModelArg,
    data: DataOpt,
    split: SplitOpt = "val",
    method: MethodOpt = "auto",
    prune_layers: o.PruneLayers = None,
    keep_rates: o.KeepRates = None,
    sim_prune: o.SimPrune = None,
    sim_seed: o.SimSeed = 0,
    reducer: o.Reducer = None,
    tome_r: TomeR = None,
    per_class: Annotated[bool, typer.Option("--per-class", help="Also report top-1 per class.")] = False,
    limit: Annotated[int | None, typer.Option("--limit", help="Evaluate a seeded subset of N images.")] = None,
    batch_size: BatchSizeOpt = 64,
    workers: WorkersOpt = 0,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    random_weights: o.RandomWeights = False,
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

      tnt evaluate models/deit_s_tnt_3.2g --data /data/imagenet

      tnt evaluate runs/vit_fm --data fashion-mnist --method evit --prune-layers 2 --keep-rates 0.5 --json

      tnt evaluate runs/vit_fm --data fashion-mnist --method tome --tome-r 4 --limit 1000

      tnt evaluate models/vit_fm_p50 --data fashion-mnist --update-card
    """
    o.apply_offline(offline)
    card_dir = _card_dir(model) if update_card else None
    from tnt_cli.data import build_loader, dataset_classes
    from tnt_cli.data.classes import data_label_map
    from tnt_cli.devices import resolve_device
    from tnt_cli.eval.baselines import apply_method, check_method, method_gmacs
    from tnt_cli.eval.common import AUTO_METHOD, load_for_method
    from tnt_cli.eval.evaluate import evaluate_model
    from tnt_cli.io.labels import model_class_names

    method = method if method == AUTO_METHOD else check_method(method)
    check_positive(limit, "--limit")
    check_positive(batch_size, "--batch-size")
    dev = resolve_device(device)
    schedule = o.schedule_from_flags(prune_layers, keep_rates, sim_prune, sim_seed, reducer=reducer)
    if method == "dense" and schedule is not None:
        stderr.print("note: --method dense runs every token; the schedule flags are ignored")
    loaded, schedule, method = load_for_method(model, method, schedule, random_weights=random_weights)
    if tome_r is not None and method != "tome":
        raise TntError(f"--tome-r applies to --method tome only (this run uses --method {method})")
    tnt_model = loaded.model
    label_map = data_label_map(data, tnt_model.vit, loaded.tnt_config, model=loaded.source, split=split)  # by name
    loader = build_loader(
        data, split, tnt_model.vit, batch_size=batch_size, workers=workers, limit=limit, seed=seed, label_map=label_map
    )
    with apply_method(tnt_model, method, schedule, tome_r=tome_r, seed=seed) as setup:
        result = evaluate_model(setup.module, loader, device=dev, per_class=per_class, on_batch=setup.begin_batch)
        report = {
            "model": loaded.source,
            "data": str(data),
            "split": split,
            "limit": limit,
            "seed": seed,
            "method": method,
            "schedule": setup.schedule.to_dict() if method != "tome" else None,
            "schedule_text": setup.describe(),
            "tome_r": setup.tome_r if method == "tome" else None,
            "tome_r_per_block": list(setup.tome_rs) if method == "tome" else None,
            "evit_keep": [s.keep for s in setup.evit_stages] if method.startswith("evit") else None,
            "top1": result["top1"],
            "top5": result["top5"],
            "loss": result["loss"],
            "images": result["images"],
            "images_per_s": result["images_per_s"],
            "gmacs": setup.gmacs,
            "gmacs_dense": method_gmacs(tnt_model, "dense"),
            "device": str(dev),
            "batch_size": batch_size,
        }
    if per_class:
        names = (
            model_class_names(tnt_model.vit, loaded.tnt_config)
            or list(getattr(loader, "classes", None) or [])
            or _class_names(dataset_classes, data)
        )
        report["per_class"] = {
            (names[int(c)] if names and int(c) < len(names) else c): v for c, v in result["per_class"].items()
        }
    if card_dir is not None:
        from tnt_cli.io.model_dir import update_card as write_card

        write_card(card_dir, {"evaluations": [card_row(report)]})
        stderr.print(f"updated the model card in {card_dir}")
    if json_out:
        print_json(report)
        return
    render(report)


def _card_dir(model: str):
    """The local tnt model directory --update-card writes to (checked before anything is evaluated)."""
    from pathlib import Path

    from tnt_cli.io.model_dir import read_config

    path = Path(model[len("local-dir:") :] if model.startswith("local-dir:") else model).expanduser()
    if not path.is_dir():
        raise TntError(f"--update-card needs MODEL to be a local tnt model directory, not {model!r}")
    if not isinstance(read_config(path).get("tnt"), dict):
        raise TntError(f'--update-card: {path} is not a tnt model directory (config.json has no "tnt" object)')
    return path


CARD_KEYS = ("data", "split", "images", "limit", "seed", "method", "schedule_text", "tome_r", "gmacs", "gmacs_dense")


def card_row(report: dict) -> dict:
    """What the card keeps of one evaluation: which data, how many images, which method, the accuracy."""
    row = {k: report.get(k) for k in CARD_KEYS}
    row.update({k: report[k] for k in ("top1", "top5", "loss")})
    return row


def _class_names(dataset_classes, data: str) -> list[str] | None:
    try:
        return list(dataset_classes(data))
    except Exception:  # names are a nicety; indices are still right
        stderr.print("note: class names unavailable, showing class indices")
        return None


def render(report: dict) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    ratio = report["gmacs"] / report["gmacs_dense"]
    limit = f" (subset of {report['limit']}, seed {report['seed']})" if report["limit"] else ""
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
