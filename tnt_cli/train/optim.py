"""AdamW with decoupled weight decay off for norms/biases/tokens, and a per-step warmup + cosine schedule."""

from __future__ import annotations

import math

import torch
from torch import nn


def no_decay_names(model: nn.Module) -> set[str]:
    """Parameter names that skip weight decay: 1-d tensors (norms, biases incl. the heads' biases) and the
    tokens / position embeddings timm lists in `no_weight_decay()`."""
    vit = getattr(model, "vit", model)
    skip_tokens = set(vit.no_weight_decay()) if hasattr(vit, "no_weight_decay") else set()
    prefix = "vit." if vit is not model else ""
    names = set()
    for name, param in model.named_parameters():
        bare = name[len(prefix) :] if prefix and name.startswith(prefix) else name
        if param.ndim <= 1 or name.endswith(".bias") or bare in skip_tokens:
            names.add(name)
    return names


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters split into a decayed and a non-decayed group (empty groups dropped)."""
    skip = no_decay_names(model)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if name in skip else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    groups = param_groups(model, weight_decay)
    if not groups:
        raise ValueError("no trainable parameters")
    fused = all(p.is_cuda for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), fused=fused or None)


def lr_factor(step: int, *, total: int, warmup: int, min_ratio: float) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based): linear warmup, then cosine to min_ratio."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, *, total: int, warmup: int, lr: float, min_lr: float
) -> torch.optim.lr_scheduler.LambdaLR:
    min_ratio = min(1.0, min_lr / lr) if lr > 0 else 0.0
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total=total, warmup=warmup, min_ratio=min_ratio)
    )
