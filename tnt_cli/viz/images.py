"""Images in, model inputs out: reading any format Pillow reads, the model's own eval transform, class names."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tnt_cli.errors import TntError, first_line

if TYPE_CHECKING:
    import torch
    from PIL import Image
    from torch import nn


def read_image(path: str | Path) -> Image.Image:
    """Decode an image fully (first frame of animations), as 'L' or 'RGB'; one clear line when it cannot."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise TntError(f"cannot read image {path}: {'no such file' if not path.exists() else 'not a file'}")
    from tnt_cli.data.folder import quiet_bomb_warning, refuse_bomb

    try:
        with quiet_bomb_warning(), Image.open(path) as img:
            refuse_bomb(img, path)
            img.seek(0)
            img.load()
            return _to_l_or_rgb(img)
    except TntError:
        raise
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        raise TntError(f"cannot read image {path}: {first_line(exc)}") from None


def _to_l_or_rgb(img: Image.Image) -> Image.Image:
    from PIL import Image

    if img.mode in ("L", "RGB"):
        return img.copy()
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # high bit depth: stretch to 8 bits, don't clip
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return Image.fromarray(scaled.astype(np.uint8), mode="L")
    if img.mode in ("1", "LA", "La"):
        return img.convert("L")
    return img.convert("RGB")


def model_transform(vit: nn.Module) -> Callable:
    """The model's own evaluation transform (PIL image -> normalised tensor), grayscale widened to its channels."""
    from tnt_cli.data import eval_transform

    return eval_transform(vit)


def find_normalize(transform: Callable) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(mean, std) of the Normalize step inside a (nested) torchvision Compose, if there is one."""
    stack = [transform]
    while stack:
        t = stack.pop()
        if hasattr(t, "mean") and hasattr(t, "std") and type(t).__name__ == "Normalize":
            return tuple(float(v) for v in np.atleast_1d(t.mean)), tuple(float(v) for v in np.atleast_1d(t.std))
        stack.extend(getattr(t, "transforms", ()))
    return None


def display_image(x: torch.Tensor, norm: tuple[tuple[float, ...], tuple[float, ...]] | None) -> np.ndarray:
    """A model input (C, H, W) back to an RGB picture (H, W, 3) in [0, 1], as the model saw it."""
    arr = x.detach().float().cpu().numpy()
    if norm is not None:
        mean, std = (np.asarray(v, dtype=np.float32).reshape(-1, 1, 1) for v in norm)
        arr = arr * std + mean
    arr = np.clip(arr, 0.0, 1.0)
    if arr.shape[0] == 1:
        arr = np.repeat(arr, 3, axis=0)
    return np.ascontiguousarray(arr[:3].transpose(1, 2, 0))


# --------------------------------------------------------------------------- class names
def class_names(
    vit: nn.Module, *, data: str | None = None, config: dict | None = None
) -> tuple[list[str] | None, str | None]:
    """Names for the model's classes and where they came from, or (None, None) to show indices.

    Looked up in order: the dataset `data` (its class list); the model's own `label_names` (timm's
    `pretrained_cfg`, which tnt writes into every model directory); the classes recorded in `config` (the
    model directory's "tnt" object) from its fine-tune; the dataset it was fine-tuned on, when readable here;
    ImageNet's names when timm says the head is an ImageNet head.
    """
    from tnt_cli.data import dataset_classes
    from tnt_cli.io.labels import model_class_names

    n = int(getattr(vit, "num_classes", 0) or 0)
    if data:  # the one rule of tnt_cli.data.classes: the model's own names win, DATA's must match them
        from tnt_cli.data.classes import map_classes, mapped_names

        names = list(dataset_classes(data))
        known = model_class_names(vit, config)
        map_classes(names, known, n, data=data, model="the model")
        return mapped_names(known, names), (data if known is None else "model config")
    names = model_class_names(vit)
    if names:  # ImageNet heads name synsets (n01440764); timm's label_descriptions say what they are
        described = (getattr(vit, "pretrained_cfg", None) or {}).get("label_descriptions")
        if isinstance(described, dict):
            names = [str(described.get(name, name)).split(",")[0].strip() for name in names]
        return names, "model config"
    training = (config or {}).get("training") or {}
    recorded = training.get("classes") if isinstance(training, dict) else None
    if isinstance(recorded, list) and len(recorded) == n and n:
        return [str(c) for c in recorded], "model config"
    trained_on = (training.get("dataset") or training.get("data")) if isinstance(training, dict) else None
    if isinstance(trained_on, str) and trained_on:
        try:
            names = list(dataset_classes(trained_on))
        except Exception:  # the training data may live on another machine: fall back to the next source
            names = []
        if len(names) == n:
            return names, trained_on
    names = _imagenet_names(vit, n)
    return names, ("imagenet" if names else None)


def _imagenet_names(vit: nn.Module, n: int) -> list[str] | None:
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(vit)
        if not subset:
            return None
        info = ImageNetInfo(subset)
        if info.num_classes() != n:
            return None
        return [info.index_to_description(i).split(",")[0].strip() for i in range(n)]
    except Exception:  # names are a nicety: indices are shown when timm cannot tell
        return None
