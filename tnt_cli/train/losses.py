"""The fine-tuning loss: task loss (label smoothing, or soft targets under mixup/cutmix), optional
distillation to the frozen dense model's logits, plus sigmoid relevance's rate penalty."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def build_criterion(smoothing: float, soft_targets: bool) -> nn.Module:
    if soft_targets:
        from timm.loss import SoftTargetCrossEntropy

        return SoftTargetCrossEntropy()
    return nn.CrossEntropyLoss(label_smoothing=smoothing)


def build_mixup(mixup: float, cutmix: float, smoothing: float, num_classes: int):
    """timm's Mixup (mixes images and makes smoothed soft targets), or None when both alphas are 0."""
    if mixup <= 0 and cutmix <= 0:
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=smoothing, num_classes=num_classes)


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) at a temperature, scaled by T^2 (Hinton et al.) so gradients keep their size."""
    t = temperature
    log_p = F.log_softmax(student.float() / t, dim=-1)
    log_q = F.log_softmax(teacher.float() / t, dim=-1)
    return F.kl_div(log_p, log_q, reduction="batchmean", log_target=True) * (t * t)
