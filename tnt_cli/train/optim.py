"""The optimizer and lr schedule, both timm's: `timm.optim.create_optimizer_v2` on tnt's parameter groups (weight
decay off for norms/biases/tokens, the heads at their own lr) and `timm.scheduler.CosineLRScheduler` stepped per
optimizer update (linear warmup, then cosine to `min_lr`).

Exact resume: timm's lr is a pure function of the update count, so a resumed run sets the same lr at every step;
the optimizer (AdamW by default: torch's own class) keeps its state in the checkpoint as before.
"""

from __future__ import annotations

import math
from typing import Any

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
    model: nn.Module, lr: float, weight_decay: float, head_lr_scale: float = 1.0, opt: str = "adamw"
) -> torch.optim.Optimizer:
    """timm's optimizer `opt` (`timm.optim.list_optimizers()`) on tnt's parameter groups."""
    from timm.optim import create_optimizer_v2

    groups = param_groups(model, weight_decay, lr, head_lr_scale)
    if not groups:
        raise ValueError("no trainable parameters")
    fused = opt == "adamw" and all(p.is_cuda for g in groups for p in g["params"])
    extra = {"fused": True} if fused else {}
    return create_optimizer_v2(groups, opt=opt, lr=lr, weight_decay=weight_decay, **extra)


def lr_factor(step: int, *, total: int, warmup: int, min_ratio: float) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based): linear warmup, then cosine to min_ratio (the
    curve `Schedule` follows, for reference and tests)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class Schedule:
    """timm's `CosineLRScheduler` per optimizer update, behind the LambdaLR-like calls the trainer makes: `step()`
    after each update, `lr_at(step)`, `state_dict()` / `load_state_dict()`.

    Update s (0-based) runs at timm's lr for t = s + 1 during warmup (so the first update is not at lr 0) and t = s
    after it: linear warmup from lr / warmup to lr, then cosine over the rest to `min_lr` (for every group).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, total: int, warmup: int, min_lr: float) -> None:
        from timm.scheduler import CosineLRScheduler

        self.warmup = warmup
        self.updates = 0
        floor = min([min_lr] + [g["lr"] for g in optimizer.param_groups])  # never an lr that rises to its "min"
        self.timm = CosineLRScheduler(optimizer, t_initial=max(1, total - warmup), lr_min=floor, warmup_t=warmup,
                                      warmup_lr_init=0.0, warmup_prefix=True, t_in_epochs=False)  # fmt: skip
        self._apply()

    def _t(self, step: int) -> int:
        return step + 1 if step < self.warmup else step

    def _apply(self) -> None:
        self.timm.step_update(num_updates=self._t(self.updates))

    def step(self) -> None:
        """One update done: set the lr of the next."""
        self.updates += 1
        self._apply()

    def lr_at(self, step: int) -> float:
        """The first group's lr at update `step` (0-based): the backbone's, or the heads' in heads-only training."""
        return self.timm._get_lr(self._t(step))[0]

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "timm": self.timm.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "timm" in state:
            self.timm.load_state_dict(state["timm"])
            self.updates = int(state["updates"])
        else:  # a checkpoint of tnt <= 0.1.0 (torch's LambdaLR): the lr is a function of the updates done alone
            self.updates = int(state["last_epoch"])
        self._apply()


def build_scheduler(optimizer: torch.optim.Optimizer, *, total: int, warmup: int, min_lr: float) -> Schedule:
    return Schedule(optimizer, total=total, warmup=warmup, min_lr=min_lr)


def build_ema(model: nn.Module, decay: float | None) -> nn.Module | None:
    """timm's `ModelEmaV3` of `model` (updated after every optimizer step), or None when `decay` is None."""
    if decay is None:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=decay)
