"""Image transforms for a model: timm's PIL pipelines, plus a batched tensor path for small fixed-size images.

The PIL path (`eval_transform`, `train_transform`) is timm's `create_transform` fed with the model's
`DataConfig`, after converting the image to the model's channel mode (grayscale widened to RGB, or RGB reduced
to L for a 1-channel model). The tensor path (`TensorBatchTransform`) does the same resize / crop / normalise on
uint8 tensors a whole batch at a time, so 28x28 Fashion-MNIST is not bottlenecked by PIL on a small CPU.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tnt_cli.data.config import DataConfig, resolve_config

# Train augmentation defaults (also the CLI's): timm's ImageNet recipe minus colour jitter, which means little on
# grayscale data. RandAugment, random erasing, mixup and cutmix are opt-in.
DEFAULT_SCALE = (0.08, 1.0)
DEFAULT_RATIO = (3 / 4, 4 / 3)
DEFAULT_HFLIP = 0.5


class ConvertMode:
    """PIL image -> the model's channel mode ('L' or 'RGB'); picklable for DataLoader workers."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, img):
        return img if img.mode == self.mode else img.convert(self.mode)

    def __repr__(self) -> str:
        return f"ConvertMode({self.mode!r})"


def _config(model_or_cfg: nn.Module | DataConfig) -> DataConfig:
    return model_or_cfg if isinstance(model_or_cfg, DataConfig) else resolve_config(model_or_cfg)


def eval_transform(model: nn.Module | DataConfig, *, crop_pct: float | None = None) -> Callable:
    """PIL image -> normalised float tensor (C, H, W) for evaluation (timm: resize, center crop, normalise)."""
    from timm.data import create_transform
    from torchvision import transforms

    cfg = _config(model).with_crop_pct(crop_pct)
    tf = create_transform(
        input_size=cfg.input_size,
        is_training=False,
        interpolation=cfg.interpolation,
        mean=cfg.mean,
        std=cfg.std,
        crop_pct=cfg.crop_pct,
        crop_mode=cfg.crop_mode,
    )
    return transforms.Compose([ConvertMode(cfg.pil_mode), tf])


def train_transform(
    model: nn.Module | DataConfig,
    *,
    scale: Sequence[float] = DEFAULT_SCALE,
    ratio: Sequence[float] = DEFAULT_RATIO,
    hflip: float = DEFAULT_HFLIP,
    vflip: float = 0.0,
    color_jitter: float = 0.0,
    auto_augment: str | None = None,
    re_prob: float = 0.0,
) -> Callable:
    """PIL image -> augmented normalised tensor: random resized crop, flips, optional RandAugment
    (`auto_augment="rand-m9-mstd0.5-inc1"`), colour jitter and random erasing, all via timm."""
    from timm.data import create_transform
    from torchvision import transforms

    cfg = _config(model)
    tf = create_transform(
        input_size=cfg.input_size,
        is_training=True,
        scale=tuple(scale),
        ratio=tuple(ratio),
        hflip=hflip,
        vflip=vflip,
        color_jitter=color_jitter or None,
        auto_augment=auto_augment or None,
        interpolation=cfg.interpolation if cfg.interpolation != "random" else "bicubic",
        mean=cfg.mean,
        std=cfg.std,
        re_prob=re_prob,
    )
    return transforms.Compose([ConvertMode(cfg.pil_mode), tf])


def _interp_mode(name: str) -> str:
    return name if name in ("bilinear", "bicubic", "nearest") else "bilinear"


def _resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize float images (B, C, h, w) in [0, 1]; antialiased like PIL when shrinking."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=True).clamp_(0.0, 1.0)


def _center_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    h, w = x.shape[-2:]
    th, tw = size
    if (h, w) == (th, tw):
        return x
    top, left = max(0, round((h - th) / 2)), max(0, round((w - tw) / 2))
    return x[..., top : top + th, left : left + tw]


def rrc_params(h: int, w: int, scale: Sequence[float], ratio: Sequence[float], rng: random.Random):
    """torchvision's RandomResizedCrop.get_params, drawn from `rng` so a sample's crop is reproducible."""
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        cw = round(math.sqrt(target_area * aspect))
        ch = round(math.sqrt(target_area / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            return rng.randint(0, h - ch), rng.randint(0, w - cw), ch, cw
    in_ratio = w / h
    if in_ratio < min(ratio):
        cw, ch = w, round(w / min(ratio))
    elif in_ratio > max(ratio):
        ch, cw = h, round(h * max(ratio))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


class TensorBatchTransform:
    """Collate (uint8 image (H, W) or (C, H, W), label, sample seed | None) items into a normalised batch.

    Evaluation: resize (to size / crop_pct) + center crop, like timm's eval transform. Training: per-sample
    random resized crop and horizontal flip drawn from a `random.Random(sample seed)`, so a sample's
    augmentation depends only on (seed, epoch, index): the same on resume and with any number of workers.
    """

    def __init__(
        self,
        cfg: DataConfig,
        *,
        train: bool = False,
        scale: Sequence[float] = DEFAULT_SCALE,
        ratio: Sequence[float] = DEFAULT_RATIO,
        hflip: float = DEFAULT_HFLIP,
        vflip: float = 0.0,
    ) -> None:
        self.cfg = cfg
        self.train = train
        self.scale, self.ratio = tuple(scale), tuple(ratio)
        self.hflip, self.vflip = hflip, vflip
        self.mode = _interp_mode(cfg.interpolation)
        self.mean = torch.tensor(cfg.mean).view(1, -1, 1, 1)
        self.std = torch.tensor(cfg.std).view(1, -1, 1, 1)

    def __call__(self, items: Sequence[tuple[Any, ...]]) -> tuple[torch.Tensor, torch.Tensor]:
        images = [torch.as_tensor(item[0]) for item in items]
        labels = torch.tensor([int(item[1]) for item in items], dtype=torch.int64)
        images = [img.unsqueeze(0) if img.ndim == 2 else img for img in images]
        if self.train:
            x = torch.cat([self._augment(img, item[2] if len(item) > 2 else None) for img, item in zip(images, items)])
        else:
            x = self._eval(torch.stack(images).float().div_(255.0))
        return self._normalise(x), labels

    def _eval(self, x: torch.Tensor) -> torch.Tensor:
        size = self.cfg.size
        crop_pct = self.cfg.crop_pct
        if crop_pct < 1.0:
            scale = (math.floor(size[0] / crop_pct), math.floor(size[1] / crop_pct))
            if scale[0] == scale[1]:  # timm: resize the shorter edge, keep the aspect ratio
                h, w = x.shape[-2:]
                short = scale[0]
                scale = (short, round(w * short / h)) if h <= w else (round(h * short / w), short)
            return _center_crop(_resize(x, scale, self.mode), size)
        if self.cfg.crop_mode == "center" and x.shape[-1] != x.shape[-2] and size[0] == size[1]:
            h, w = x.shape[-2:]
            short = min(h, w)
            x = _center_crop(x, (short, short))
        return _resize(x, size, self.mode)

    def _augment(self, img: torch.Tensor, seed: int | None) -> torch.Tensor:
        rng = random.Random(seed) if seed is not None else random.Random()
        h, w = img.shape[-2:]
        top, left, ch, cw = rrc_params(h, w, self.scale, self.ratio, rng)
        x = img[:, top : top + ch, left : left + cw].unsqueeze(0).float().div_(255.0)
        x = _resize(x, self.cfg.size, self.mode)
        if rng.random() < self.hflip:
            x = x.flip(-1)
        if self.vflip and rng.random() < self.vflip:
            x = x.flip(-2)
        return x

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        c = self.cfg.in_chans
        if x.shape[1] != c:
            if x.shape[1] == 1:
                x = x.expand(-1, c, -1, -1)
            elif c == 1:  # RGB source, grayscale model: ITU-R 601 luma, like PIL's convert('L')
                x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
            else:
                raise ValueError(f"cannot map {x.shape[1]}-channel images to {c} channels")
        return ((x - self.mean) / self.std).contiguous()
