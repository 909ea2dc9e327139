"""One evaluation of MODEL on DATA, under TNT, a baseline or dense: the report `tnt evaluate` prints and carries
into model cards (`card_row`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tnt_cli.errors import SettingError
from tnt_cli.methods.loading import AUTO_METHOD
from tnt_cli.settings import default_of

if TYPE_CHECKING:
    import torch

    from tnt_cli.engine import Schedule

# what a card keeps of one evaluation: which data, how many images, which method, the accuracy
CARD_KEYS = ("data", "split", "images", "limit", "seed", "method", "schedule_text", "tome_r", "gmacs", "gmacs_dense")


def evaluate(
    model: str,
    data: str,
    *,
    split: str = default_of("split"),
    method: str = AUTO_METHOD,
    schedule: Schedule | None = None,
    tome_r: int | None = None,
    per_class: bool = False,
    limit: int | None = default_of("limit"),
    batch_size: int = default_of("batch_size"),
    workers: int = default_of("workers"),
    device: str | torch.device = default_of("device"),
    seed: int = default_of("seed"),
    random_weights: bool = default_of("random_weights"),
    on_note: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Top-1, top-5, loss, GMACs and images/s of MODEL on DATA running `method` at `schedule` (default: its own).

    `auto` is a model directory's own method. Baselines run at the same schedule (random) or at the GMACs
    closest to it (evit, evit-fuse, and tome unless `tome_r`). `limit` evaluates a seeded subset.
    """
    from tnt_cli.data import build_loader
    from tnt_cli.data.classes import data_label_map
    from tnt_cli.methods.accuracy import evaluate_model
    from tnt_cli.methods.apply import apply_method, check_own_setting, dense_gmacs
    from tnt_cli.methods.loading import load_for_method
    from tnt_cli.methods.registry import lookup

    method, dev = check_evaluation(method, limit=limit, batch_size=batch_size, device=device)
    loaded, schedule, method = load_for_method(model, method, schedule, random_weights=random_weights)
    check_own_setting(lookup(method), "tome_r", tome_r)
    tnt_model = loaded.model
    label_map = data_label_map(data, tnt_model.vit, loaded.tnt_config, model=loaded.source, split=split)  # by name
    loader = build_loader(
        data, split, tnt_model.vit, batch_size=batch_size, workers=workers, limit=limit, seed=seed, label_map=label_map
    )
    from tnt_cli.data.datasets import split_label

    split_images = _size(loader.dataset)  # None: a streamed source (its first `limit` images)
    subset = limit is not None and (split_images is None or limit < split_images)  # else the limit is all of it
    with apply_method(tnt_model, method, schedule, tome_r=tome_r, seed=seed) as setup:
        result = evaluate_model(setup.module, loader, device=dev, per_class=per_class, on_batch=setup.begin_batch)
        report = {
            "model": loaded.source,
            "data": str(data),
            "split": split_label(data, split),
            "split_images": split_images,
            "limit": limit if subset else None,
            "seed": seed,
            "method": method,
            "schedule": setup.schedule.to_dict(),
            "schedule_text": setup.describe(),
            "tome_r": None,  # these three: the method's own (its setup's details)
            "tome_r_per_block": None,
            "evit_keep": None,
            "top1": result["top1"],
            "top5": result["top5"],
            "loss": result["loss"],
            "images": result["images"],
            "images_per_s": result["images_per_s"],
            "gmacs": setup.gmacs,
            "gmacs_dense": dense_gmacs(tnt_model),
            "device": str(dev),
            "batch_size": batch_size,
        }
        report.update(setup.details)
    if per_class:
        names = _class_names(tnt_model.vit, loaded.tnt_config, loader, data, on_note)
        report["per_class"] = {
            (names[int(c)] if names and int(c) < len(names) else c): v for c, v in result["per_class"].items()
        }
    return report


def _size(dataset) -> int | None:
    try:
        return len(dataset)
    except TypeError:
        return None


def check_evaluation(
    method: str,
    *,
    limit: int | None = default_of("limit"),
    batch_size: int = default_of("batch_size"),
    device: str | torch.device = default_of("device"),
) -> tuple[str, torch.device]:
    """The checks `evaluate` makes before loading anything, in its order: the method (its canonical name, or
    `auto`), then `limit` and `batch_size`, then the device (resolved). Callers that print before evaluating
    call it first, so a refusal is the only line."""
    from tnt_cli.devices import resolve_device
    from tnt_cli.methods.registry import lookup
    from tnt_cli.settings import check_positive

    method = method if method == AUTO_METHOD else lookup(method).name
    check_positive(limit, "limit")
    check_positive(batch_size, "batch_size")
    return method, resolve_device(device) if isinstance(device, str) else device


def _class_names(vit, config: dict, loader, data: str, on_note: Callable[[str], None] | None) -> list[str] | None:
    """The model's own class names, else the loader's, else the dataset's; None (indices) when none is known."""
    from tnt_cli.data import dataset_classes
    from tnt_cli.io.labels import model_class_names

    names = model_class_names(vit, config) or list(getattr(loader, "classes", None) or [])
    if names:
        return names
    try:
        return list(dataset_classes(data))
    except Exception:  # names are a nicety; indices are still right
        if on_note is not None:
            on_note("class names unavailable, showing class indices")
        return None


def evaluation_card_dir(model: str) -> Path:
    """The local tnt model directory whose card an evaluation updates (checked before anything is evaluated)."""
    from tnt_cli.io.model_dir import read_config
    from tnt_cli.io.names import is_tnt_model_dir

    path = Path(model[len("local-dir:") :] if model.startswith("local-dir:") else model).expanduser()
    if not path.is_dir():
        raise SettingError("{update_card} needs {model} to be a local tnt model directory, not {given!r}", given=model)
    read_config(path)  # a missing or broken config.json says so
    if not is_tnt_model_dir(path):
        raise SettingError(
            '{update_card}: {path} is not a tnt model directory (config.json has no "tnt" object)', path=path
        )
    return path


def card_row(report: dict) -> dict:
    """What the card keeps of one evaluation: which data, how many images, which method, the accuracy."""
    row = {k: report.get(k) for k in CARD_KEYS}
    row.update({k: report[k] for k in ("top1", "top5", "loss")})
    return row


def update_card(directory: str | Path, report: dict) -> None:
    """Add this evaluation to the model directory's card."""
    from tnt_cli.io.model_dir import update_card as write_card

    write_card(Path(directory), {"evaluations": [card_row(report)]})
