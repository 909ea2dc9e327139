"""A run's derived numbers (steps per epoch, total steps, warmup, the scaled lr): a pure function of the settings,
the number of training images and the number of processes, so the arithmetic is testable without training."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tnt_cli.errors import SettingError, TntError
from tnt_cli.train.config import TrainConfig

if TYPE_CHECKING:
    import torch

# Reference batch for lr scaling: lr = base lr * global batch / 512.
LR_REFERENCE_BATCH = 512


@dataclass
class Plan:
    """Derived numbers of a run, reported at the start and in the summary."""

    world_size: int
    batch_size: int
    accum: int
    steps_per_epoch: int
    total_steps: int
    epochs: int
    warmup_steps: int
    base_lr: float
    lr: float
    train_images: int
    amp: str

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size * self.accum

    def to_dict(self) -> dict:
        return {**self.__dict__, "global_batch": self.global_batch}


def make_plan(cfg: TrainConfig, *, train_images: int, world_size: int, amp: str = "off") -> Plan:
    """The plan of `cfg` over `train_images` images on `world_size` processes; `amp` is the resolved precision
    (`resolve_amp`). The lr is scaled by global batch / 512 and the warmup is capped at half the steps."""
    from tnt_cli.data.sampler import images_per_rank  # the sampler's own count (lazy: torch)

    per_rank = images_per_rank(train_images, world_size)
    steps_per_epoch = per_rank // cfg.batch_size // cfg.accum  # an epoch's last partial step is dropped
    if steps_per_epoch < 1:
        raise TntError(
            f"{cfg.data} {cfg.split}: {per_rank} images per process make fewer than one step of "
            f"{cfg.batch_size} x {cfg.accum} (batch x accumulation)"
        )
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    global_batch = cfg.batch_size * world_size * cfg.accum
    return Plan(
        world_size=world_size,
        batch_size=cfg.batch_size,
        accum=cfg.accum,
        steps_per_epoch=steps_per_epoch,
        total_steps=total,
        epochs=math.ceil(total / steps_per_epoch),
        warmup_steps=min(round(cfg.warmup_epochs * steps_per_epoch), total // 2),
        base_lr=cfg.lr,
        lr=cfg.lr * global_batch / LR_REFERENCE_BATCH,
        train_images=train_images,
        amp=amp,
    )


def resolve_amp(requested: str, device: torch.device) -> str:
    """The autocast precision a run uses: off on the CPU (slower than fp32 there, and it changes numerics); on CUDA
    'auto' is bf16 where the GPU computes it natively (Ampere on), else fp16; bf16 asked of an older GPU is refused."""
    if device.type != "cuda":
        return "off"
    from tnt_cli.devices import native_bf16

    bf16 = native_bf16(device)
    if requested == "auto":
        return "bf16" if bf16 else "fp16"
    if requested == "bf16" and not bf16:  # refused here rather than emulated slowly
        raise SettingError("{amp} bf16: this GPU does not compute in bfloat16 (it needs compute capability 8.0, "
                           "Ampere, or newer): use {amp} fp16 or auto")  # fmt: skip
    return requested
