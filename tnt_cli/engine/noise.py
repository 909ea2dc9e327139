"""Relevance scores and the training noise they control (the paper's Training Noise Tokens; `NoiseConfig` says how)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from tnt_cli.recipes import DEFAULT_RECIPE, NOISE_VARIANTS, RECIPES, RELEVANCES

# `NoiseConfig()` is the default recipe's noise: one declaration, so `attach_tnt(vit)` trains as `tnt finetune` does.
_DEFAULT = RECIPES[DEFAULT_RECIPE]
# Keys of saved directories written before the fields took the settings' names (read, never written).
_OLD_KEYS = {"form": "relevance", "variant": "noise_variant"}


@dataclass(frozen=True)
class NoiseConfig:
    """How training noise is applied (field names are the fine-tuning settings' names).

    `relevance`: alpha = softmax over patch tokens (the paper), an independent sigmoid per token whose mean is
    pulled to `target_rate` by a penalty (so about that fraction of tokens can stay clean), or "rank": a sigmoid of
    the standardised score's distance to the cut a keep rate makes (see `rank_alpha`), so exactly the tokens the
    pruning would drop are noised and the order around that cut is what the heads learn.
    `noise_variant`: noise std sigma0 * (1 - alpha) ("std") or sigma0 * sqrt(1 - alpha) ("var": variance 1 - alpha).
    """

    blocks: tuple[int, ...] = _DEFAULT.noise_blocks
    sigma0: float = _DEFAULT.sigma0
    noise_variant: str = _DEFAULT.noise_variant
    relevance: str = _DEFAULT.relevance
    target_rate: float = _DEFAULT.target_rate

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(sorted({int(b) for b in self.blocks})))
        if self.noise_variant not in NOISE_VARIANTS:
            raise ValueError(f"noise_variant must be one of {NOISE_VARIANTS}, got {self.noise_variant!r}")
        if self.relevance not in RELEVANCES:
            raise ValueError(f"relevance must be one of {RELEVANCES}, got {self.relevance!r}")
        if self.sigma0 < 0:
            raise ValueError(f"sigma0 must be >= 0, got {self.sigma0}")
        if not 0.0 < self.target_rate <= 1.0:
            raise ValueError(f"target_rate must be in (0, 1], got {self.target_rate}")

    @classmethod
    def from_settings(cls, settings: Any, blocks: Iterable[int] | None = None) -> NoiseConfig:
        """The noise a `Recipe` or a `TrainConfig` names (both spell the settings alike: `noise_blocks`, `sigma0`,
        `noise_variant`, `relevance`, `target_rate`); `blocks` replaces its noise blocks. The one place settings
        become a `NoiseConfig`, so no caller can leave one out and get another recipe's value."""
        return cls(blocks=tuple(settings.noise_blocks if blocks is None else blocks), sigma0=settings.sigma0,
                   noise_variant=settings.noise_variant, relevance=settings.relevance,
                   target_rate=settings.target_rate)  # fmt: skip

    def to_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["blocks"] = list(self.blocks)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> NoiseConfig:
        """Also reads directories saved by tnt 0.1 (keys `form`, `variant`)."""
        data = {_OLD_KEYS.get(k, k): v for k, v in data.items()}
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


# "rank" relevance: the sigmoid's temperature on standardised scores. At 0.5 a token one standard deviation below
# the cut keeps 12% of its signal (alpha 0.12) and one above keeps 88%, so training noise looks like the drop it
# stands for, while tokens within about one standard deviation of the cut still get gradient.
RANK_TEMPERATURE = 0.5


def relevance_alpha(scores: torch.Tensor, relevance: str, keep: float | None = None) -> torch.Tensor:
    """Scores (B, N) -> alpha (B, N): softmax over tokens, independent sigmoids, or `rank_alpha` at `keep`."""
    if relevance == "softmax":
        return scores.softmax(dim=-1)
    if relevance == "rank":
        if keep is None:
            raise ValueError("rank relevance needs the keep rate its cut is at")
        return rank_alpha(scores, keep)
    return torch.sigmoid(scores)


def rank_alpha(scores: torch.Tensor, keep: float) -> torch.Tensor:
    """alpha_i = sigmoid((z_i - cut) / RANK_TEMPERATURE): z is each image's scores standardised (so the heads
    cannot saturate the sigmoid by growing their scale), cut lies halfway between the k-th and (k+1)-th largest z
    (k = floor(n * keep), the tokens top-k keeps) and is not back-propagated. About k tokens stay clean, the
    others are noised, and the gradient concentrates on the tokens near the cut: the ranking deployment uses.
    With k = n the cut sits one temperature below the lowest token (nothing is dropped, little noise)."""
    from tnt_cli.engine.schedule import keep_count

    z = scores.float()
    if z.shape[-1] < 2:
        return torch.ones_like(z)
    z = (z - z.mean(dim=-1, keepdim=True)) / (z.std(dim=-1, keepdim=True) + 1e-6)
    n = z.shape[-1]
    k = min(max(keep_count(n, keep), 1), n)
    ordered = z.detach().topk(min(k + 1, n), dim=-1).values
    top_k, next_one = ordered[:, k - 1 : k], ordered[:, min(k, n - 1) : min(k, n - 1) + 1]
    cut = 0.5 * (top_k + next_one) if k < n else next_one - RANK_TEMPERATURE
    return torch.sigmoid((z - cut) / RANK_TEMPERATURE)


def noise_scale(alpha: torch.Tensor, noise_variant: str) -> torch.Tensor:
    """Per-token noise multiplier: 1 - alpha ("std"), or its square root ("var": variance 1 - alpha)."""
    one_minus = (1.0 - alpha).clamp_min(0.0)
    if noise_variant == "var":
        return (one_minus + 1e-8).sqrt()
    return one_minus


def add_relevance_noise(
    patches: torch.Tensor, alpha: torch.Tensor, sigma0: float, noise_variant: str
) -> torch.Tensor:
    """x_i + sigma0 * rms(x_i) * g(alpha_i) * eps_i, with rms not back-propagated so sigma0 is unit-free."""
    rms = patches.detach().float().pow(2).mean(dim=-1, keepdim=True).sqrt().to(patches.dtype)
    eps = torch.randn_like(patches)
    return patches + sigma0 * rms * noise_scale(alpha, noise_variant).unsqueeze(-1).to(patches.dtype) * eps


def rate_penalty(alpha: torch.Tensor, target_rate: float) -> torch.Tensor:
    """(mean over tokens of alpha - target)^2, averaged over the batch: sigmoid relevance's rate term."""
    return (alpha.float().mean(dim=-1) - target_rate).pow(2).mean()


@dataclass
class TrainingStats:
    """What the last training forward produced besides logits (for the loss and the logs)."""

    rate_penalties: list[torch.Tensor] = field(default_factory=list)
    mean_alpha: dict[int, torch.Tensor] = field(default_factory=dict)
