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


def param_groups(
    model: nn.Module, weight_decay: float, lr: float | None = None, head_lr_scale: float = 1.0
) -> list[dict]:
    """Trainable parameters split into a decayed and a non-decayed group (empty groups dropped).

    With head_lr_scale != 1 the relevance heads (`heads.*`) get their own two groups at lr * head_lr_scale,
    listed after the backbone's (so group 0 carries the base lr whenever the backbone trains).
    """
    skip = no_decay_names(model)
    split_heads = head_lr_scale != 1.0
    buckets: dict[tuple[bool, bool], list] = {(h, d): [] for h in (False, True) for d in (True, False)}
    for name, param in model.named_parameters():
        if param.requires_grad:
            is_head = split_heads and name.startswith("heads.")
            buckets[(is_head, name not in skip)].append(param)
    groups = []
    for (is_head, decay), params in buckets.items():
        group = {"params": params, "weight_decay": weight_decay if decay else 0.0}
        if lr is not None:
            group["lr"] = lr * (head_lr_scale if is_head else 1.0)
        groups.append(group)
    return [g for g in groups if g["params"]]


def build_optimizer(
    model: nn.Module, lr: float, weight_decay: float, head_lr_scale: float = 1.0
) -> torch.optim.Optimizer:
    groups = param_groups(model, weight_decay, lr, head_lr_scale)
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
