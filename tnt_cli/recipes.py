"""Named fine-tuning recipes: the study's default and the paper's formulation, as plain data.

`tnt finetune --recipe NAME` takes its defaults for these fields from the recipe; any flag given explicitly wins
(the resolution is in `tnt_cli.train.config.TrainConfig`). The numbers come from the Fashion-MNIST study
(examples/fashion_mnist/study.py, recipe "sigmoid-drop"); what each noise field means is in DESIGN.md section 2.
This module does not import torch, so `tnt --help` stays instant.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tnt_cli.errors import TntError

DEFAULT_RECIPE = "default"

# Learning rates follow the trainer's convention: a base lr at global batch 512, scaled by global batch / 512.
# The study trained at batch 128 with heads 3e-3 and backbone 2e-4 (AdamW), i.e. 1.2e-2 and 8e-4 per 512.
# With --train full, `lr` is the backbone's and the heads get lr * head_lr_scale (3e-3 / 2e-4 = 15): the heads
# are fresh linear layers trained from scratch, the backbone is pretrained and only needs nudging, so one lr
# for both would either leave the heads barely trained or wreck the backbone. With --train heads only the
# heads train and `lr` is theirs (no scale).
STUDY_LR = {"heads": 1.2e-2, "full": 8e-4}
STUDY_HEAD_LR_SCALE = 15.0


@dataclass(frozen=True)
class Recipe:
    """Defaults for one fine-tuning formulation; None for noise_blocks means the engine default (blocks 0-4)."""

    relevance: str  # softmax | sigmoid
    sigma0: float
    variant: str  # std | var
    target_rate: float  # sigmoid form: mean alpha is pulled here
    train: str  # heads | full
    distill: float  # weight of KL(dense teacher || student), added to the task loss (0 = off)
    drop_weight: float  # weight of the hard-pruning pass (0 = off); needs train "full"
    drop_keeps: tuple[float, ...]  # keep rates the hard-pruning pass draws from
    noise_blocks: tuple[int, ...] | None = None
    rate_weight: float = 1.0  # sigmoid form: weight of the rate penalty
    lr: dict[str, float] = field(default_factory=lambda: dict(STUDY_LR))  # per train mode, at global batch 512
    head_lr_scale: float = STUDY_HEAD_LR_SCALE  # full training: heads lr = lr * this
    summary: str = ""

    def to_dict(self) -> dict:
        data = asdict(self)
        data["drop_keeps"] = list(self.drop_keeps)
        if self.noise_blocks is not None:
            data["noise_blocks"] = list(self.noise_blocks)
        return data


RECIPES: dict[str, Recipe] = {
    # The study's pick ("sigmoid-drop"): sigmoid relevance with a rate term, the whole model trained with the
    # noise on, distillation to the dense model added with weight 1, plus a hard-pruning pass at random keep
    # rates (its loss added with weight 1) so the backbone learns to work from the tokens TNT keeps.
    "default": Recipe(
        relevance="sigmoid",
        sigma0=1.0,
        variant="std",
        target_rate=0.3,
        train="full",
        distill=1.0,
        drop_weight=1.0,
        drop_keeps=(0.7, 0.5, 0.3, 0.15),
        noise_blocks=(0, 1, 2, 3),
        summary="sigmoid relevance, full training, distillation, hard-pruning pass",
    ),
    # Rao et al. 2024 as published: softmax relevance, the official code's sigma0, heads only on a frozen
    # backbone, no distillation, no hard-pruning pass, noise after blocks 0-4.
    "official": Recipe(
        relevance="softmax",
        sigma0=0.02,
        variant="std",
        target_rate=0.5,
        train="heads",
        distill=0.0,
        drop_weight=0.0,
        drop_keeps=(0.7, 0.5, 0.3, 0.15),
        summary="the paper: softmax relevance, sigma0 0.02, heads only",
    ),
}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise TntError(f"unknown recipe {name!r}: choose one of {', '.join(RECIPES)}") from None
