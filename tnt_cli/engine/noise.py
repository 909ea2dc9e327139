"""Relevance scores and the training noise they control (DESIGN.md section 2)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

RELEVANCE_FORMS = ("softmax", "sigmoid")
NOISE_VARIANTS = ("std", "var")


@dataclass(frozen=True)
class NoiseConfig:
    """How training noise is applied.

    `form`: alpha = softmax over patch tokens (the paper) or an independent sigmoid per token whose mean is
    pulled to `target_rate` by a penalty (so about that fraction of tokens can stay clean).
    `variant`: noise std sigma0 * (1 - alpha) ("std") or sigma0 * sqrt(1 - alpha) ("var": variance 1 - alpha).
    """

    blocks: tuple[int, ...] = (0, 1, 2, 3, 4)
    sigma0: float = 1.0
    variant: str = "std"
    form: str = "sigmoid"
    target_rate: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(sorted({int(b) for b in self.blocks})))
        if self.variant not in NOISE_VARIANTS:
            raise ValueError(f"noise variant must be one of {NOISE_VARIANTS}, got {self.variant!r}")
        if self.form not in RELEVANCE_FORMS:
            raise ValueError(f"relevance form must be one of {RELEVANCE_FORMS}, got {self.form!r}")
        if self.sigma0 < 0:
            raise ValueError(f"sigma0 must be >= 0, got {self.sigma0}")
        if not 0.0 < self.target_rate <= 1.0:
            raise ValueError(f"target rate must be in (0, 1], got {self.target_rate}")

    def to_dict(self) -> dict:
        return {
            "blocks": list(self.blocks),
            "sigma0": self.sigma0,
            "variant": self.variant,
            "form": self.form,
            "target_rate": self.target_rate,
        }

    @classmethod
    def from_dict(cls, data: dict) -> NoiseConfig:
        known = {k: data[k] for k in ("blocks", "sigma0", "variant", "form", "target_rate") if k in data}
        return cls(**known)


def relevance_alpha(scores: torch.Tensor, form: str) -> torch.Tensor:
    """Scores (B, N) -> alpha (B, N): softmax over tokens, or independent sigmoids."""
    if form == "softmax":
        return scores.softmax(dim=-1)
    return torch.sigmoid(scores)


def noise_scale(alpha: torch.Tensor, variant: str) -> torch.Tensor:
    """Per-token noise multiplier: 1 - alpha, or its square root for the variance form."""
    one_minus = (1.0 - alpha).clamp_min(0.0)
    if variant == "var":
        return (one_minus + 1e-8).sqrt()
    return one_minus


def add_relevance_noise(patches: torch.Tensor, alpha: torch.Tensor, sigma0: float, variant: str) -> torch.Tensor:
    """x_i + sigma0 * rms(x_i) * g(alpha_i) * eps_i, with rms not back-propagated so sigma0 is unit-free."""
    rms = patches.detach().float().pow(2).mean(dim=-1, keepdim=True).sqrt().to(patches.dtype)
    eps = torch.randn_like(patches)
    return patches + sigma0 * rms * noise_scale(alpha, variant).unsqueeze(-1).to(patches.dtype) * eps


def rate_penalty(alpha: torch.Tensor, target_rate: float) -> torch.Tensor:
    """(mean over tokens of alpha - target)^2, averaged over the batch: the sigmoid form's rate term."""
    return (alpha.float().mean(dim=-1) - target_rate).pow(2).mean()


@dataclass
class TrainingStats:
    """What the last training forward produced besides logits (for the loss and the logs)."""

    rate_penalties: list[torch.Tensor] = field(default_factory=list)
    mean_alpha: dict[int, torch.Tensor] = field(default_factory=dict)
