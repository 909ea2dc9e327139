"""What a model expects as input: size, channels, normalisation, resize policy.

timm's `resolve_data_config` reads the model's `pretrained_cfg`, which describes the checkpoint the config was
written for (e.g. 3x224x224), not necessarily the model as built (e.g. `img_size=28, in_chans=1`). The size and
channel count therefore come from the patch embedding itself; mean/std are fitted to the channel count.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import nn

from tnt_cli.errors import TntError


@dataclass(frozen=True)
class DataConfig:
    """Input contract of one model."""

    in_chans: int
    size: tuple[int, int]  # (height, width)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bicubic"
    crop_pct: float = 1.0
    crop_mode: str = "center"

    @property
    def input_size(self) -> tuple[int, int, int]:
        return (self.in_chans, *self.size)

    @property
    def pil_mode(self) -> str:
        return "L" if self.in_chans == 1 else "RGB"

    def with_crop_pct(self, crop_pct: float | None) -> DataConfig:
        return self if crop_pct is None else replace(self, crop_pct=float(crop_pct))

    def to_dict(self) -> dict:
        return {
            "input_size": list(self.input_size),
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
            "crop_mode": self.crop_mode,
        }


def unwrap(model: nn.Module) -> nn.Module:
    """The timm model inside DDP / torch.compile / TNTModel wrappers."""
    for attr in ("module", "_orig_mod", "vit"):
        while hasattr(model, attr) and isinstance(getattr(model, attr), nn.Module):
            model = getattr(model, attr)
    return model


def resolve_config(model: nn.Module) -> DataConfig:
    """The DataConfig of a timm ViT (or a wrapper around one)."""
    from timm.data import resolve_data_config

    vit = unwrap(model)
    cfg = resolve_data_config(model=vit)
    in_chans, height, width = cfg["input_size"]
    embed = getattr(vit, "patch_embed", None)
    proj = getattr(embed, "proj", None)
    if isinstance(proj, nn.Conv2d):
        in_chans = proj.in_channels
    img_size = getattr(embed, "img_size", None)
    if img_size is not None:
        height, width = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    if in_chans not in (1, 3):
        raise TntError(f"models with {in_chans} input channels are not supported (images are grayscale or RGB)")
    return DataConfig(
        in_chans=int(in_chans),
        size=(int(height), int(width)),
        mean=fit_channels(cfg["mean"], in_chans, "mean"),
        std=fit_channels(cfg["std"], in_chans, "std"),
        interpolation=str(cfg.get("interpolation") or "bicubic"),
        crop_pct=float(cfg.get("crop_pct") or 1.0),
        crop_mode=str(cfg.get("crop_mode") or "center"),
    )


def fit_channels(values, in_chans: int, what: str) -> tuple[float, ...]:
    """Per-channel statistics for `in_chans` channels: RGB stats are averaged for a 1-channel model."""
    values = tuple(float(v) for v in (values if isinstance(values, (tuple, list)) else (values,)))
    if len(values) == in_chans:
        return values
    if len(values) == 1:
        return values * in_chans
    if in_chans == 1:
        return (sum(values) / len(values),)
    raise TntError(f"the model's {what} has {len(values)} values but the model takes {in_chans} channels")
