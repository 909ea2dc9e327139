"""One rule for matching a dataset's classes to a model's classifier, by name.

The model's class names are timm's `pretrained_cfg['label_names']` (what timm and tnt write into config.json),
else the class list a tnt fine-tune recorded (`config.json` "tnt" -> "training" -> "classes"), else unknown
(read by `tnt_cli.io.labels`).
Data classes are mapped to the model's classifier indices by name: a subset of the model's classes gets the
model's indices (not shifted to 0..k-1). Data classes the model lacks, or a class-count mismatch when the
model's names are unknown, are refused with one line naming the difference. With unknown names and equal
counts, labels are taken to be in the model's order (the only information there is).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tnt_cli.errors import ClassMismatch
from tnt_cli.io.labels import model_class_names


def _listing(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def map_classes(
    data_classes: Sequence[str], model_names: list[str] | None, num_model_classes: int, *, data: str, model: str
) -> list[int] | None:
    """The model's classifier index for each data label, or None when they are the same (identity).

    Raises ClassMismatch when the data has classes the model lacks, or the counts differ and names are unknown.
    """
    data_classes = [str(c) for c in data_classes]
    if model_names is None:
        if len(data_classes) != num_model_classes:
            raise ClassMismatch(
                f"{data} has {len(data_classes)} classes but {model} predicts {num_model_classes} (and does not "
                "record its class names, so they cannot be matched by name)"
            )
        return None
    index = {name: i for i, name in enumerate(model_names)}
    missing = [c for c in data_classes if c not in index]
    if missing:
        raise ClassMismatch(
            f"{data} has classes {model} does not predict: {_listing(missing)} (the model's classes: "
            f"{_listing(model_names)})"
        )
    mapping = [index[c] for c in data_classes]
    return None if mapping == list(range(num_model_classes)) else mapping


def mapped_names(model_names: list[str] | None, data_classes: Sequence[str]) -> list[str]:
    """Names of the labels a loader yields after mapping: the model's when known, else the data's."""
    return list(model_names) if model_names is not None else [str(c) for c in data_classes]


def data_label_map(
    data: str, vit: Any, tnt_config: dict | None, *, model: str, split: str = "train"
) -> list[int] | None:
    """`map_classes` for DATA (an ImageFolder root or a named dataset) against the model's classifier; `split` is
    the one the command reads (sources opened through timm list their classes per split)."""
    from tnt_cli.data.datasets import dataset_classes

    return map_classes(
        dataset_classes(data, split), model_class_names(vit, tnt_config), int(vit.num_classes), data=str(data),
        model=model,
    )  # fmt: skip
