"""A model's class names, where timm keeps them: `pretrained_cfg['label_names']` (config.json's `label_names`).

Reading and recording them is the model's side of class matching (`tnt_cli.data.classes` matches data to them);
tnt writes them into every model directory it saves, so `timm.create_model('local-dir:DIR',
pretrained=True).pretrained_cfg['label_names']` gives the same list.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def model_class_names(vit: Any, tnt_config: dict | None = None) -> list[str] | None:
    """The names of the classifier's outputs, in index order, or None when the model does not say."""
    n = int(getattr(vit, "num_classes", 0) or 0)
    if n <= 0:
        return None
    pretrained = getattr(vit, "pretrained_cfg", None) or {}
    names = as_class_names(pretrained.get("label_names"), n)
    if names is None:
        training = (tnt_config or {}).get("training")
        names = as_class_names(training.get("classes") if isinstance(training, dict) else None, n)
    return names


def as_class_names(value: Any, n: int) -> list[str] | None:
    """n names from a list or an {index: name} mapping (timm allows both); None for anything else."""
    if isinstance(value, dict):
        try:
            by_index = {int(k): str(v) for k, v in value.items()}
        except (TypeError, ValueError):
            return None
        value = [by_index.get(i) for i in range(n)]
        if None in value:
            return None
    if isinstance(value, (list, tuple)) and len(value) == n and all(isinstance(v, (str, int)) for v in value):
        names = [str(v) for v in value]
        return names if len(set(names)) == n else None
    return None


def record_names(vit: Any, names: Sequence[str]) -> None:
    """Put the classifier's class names where timm keeps them (`pretrained_cfg['label_names']`), so timm's
    config writer saves them into config.json."""
    names = [str(n) for n in names]
    if len(names) != int(getattr(vit, "num_classes", 0) or 0):
        return
    vit.pretrained_cfg = {**(getattr(vit, "pretrained_cfg", None) or {}), "num_classes": len(names),
                          "label_names": names}  # fmt: skip
