"""Named fine-tuning recipes: the study's default and the paper's formulation, as plain data.

`Recipe()`'s field defaults ARE the default recipe (the study's "tnt-rank-prog-merge"), and the engine's `NoiseConfig()`
takes its defaults from it, so `attach_tnt(vit)` trains with the noise `tnt finetune` uses; other recipes name only
what they change. `tnt finetune --recipe NAME` fills every setting left unset from the recipe (the resolution is
in `tnt_cli.train.config.TrainConfig`); field names are the settings' names. The numbers come from the
Fashion-MNIST study (examples/fashion_mnist/study.py); what each noise field means is in `tnt_cli.engine.noise`.
This module does not import torch, so `tnt --help` stays instant.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tnt_cli.errors import TntError

DEFAULT_RECIPE = "default"

# Learning rates follow the trainer's convention: a base lr at global batch 512, scaled by global batch / 512.
# The study trained at batch 128 with heads 3e-3 and backbone 2e-4 (AdamW), i.e. 1.2e-2 and 8e-4 per 512.
# With --train full, `lr` is the backbone's and the heads get lr * head_lr_scale (3e-3 / 2e-4 = 15): the heads
# are fresh linear layers trained from scratch, the backbone is pretrained and only needs nudging, so one lr
# for both would either leave the heads barely trained or wreck the backbone. With --train heads only the
# heads train and `lr` is theirs (no scale).
STUDY_LR = {"heads": 1.2e-2, "full": 8e-4}
# The choices of two noise settings (`tnt_cli.engine.noise`), here so the torch-free settings can check them.
RELEVANCES = ("softmax", "sigmoid", "rank")
NOISE_VARIANTS = ("std", "var")
# What a pruning stage does with the tokens the relevance top-k does not keep (`tnt_cli.engine.reducers`): drop
# them (the paper), merge each into its most similar kept token, or fuse them all into one token. Here, torch-free,
# so the settings can check it; the engine's schedules check the same tuple.
REDUCERS = ("drop", "merge", "fuse")


@dataclass(frozen=True)
class Recipe:
    """Defaults for one fine-tuning formulation; the field defaults are the default recipe's."""

    # noise (`tnt_cli.engine.noise.NoiseConfig`)
    noise_blocks: tuple[int, ...] = (1, 3)  # blocks after which noise is added (and heads trained)
    sigma0: float = 1.0
    noise_variant: str = "std"  # std | var
    relevance: str = "rank"  # softmax | sigmoid | rank
    target_rate: float = 0.3  # sigmoid relevance: mean alpha is pulled here
    rate_weight: float = 1.0  # sigmoid relevance: weight of the rate penalty
    # the step (tnt_cli/train/task.py): anchored = a clean dense pass trains the backbone, the noise the heads only
    anchor: bool = True
    heads_fraction: float = 0.25  # anchored step: share of the batch the heads' noisy pass runs on
    # training
    train: str = "full"  # heads | full
    distill: bool = True  # KL(dense teacher || student), added to the task loss with weight distill_weight
    distill_weight: float = 1.0
    drop_weight: float = 1.0  # weight of the hard-pruning pass (0 = off); needs train "full"
    drop_keeps: tuple[float, ...] = (0.7, 0.5, 0.3, 0.15)  # keep rates the hard-pruning pass draws from
    reducer: str = "merge"  # tnt: what the pruning pass and the saved schedule do with the left-out tokens (REDUCERS)
    lr: dict[str, float] = field(default_factory=lambda: dict(STUDY_LR))  # per train mode, at global batch 512
    head_lr_scale: float = 15.0  # full training: heads lr = lr * this
    summary: str = ""


RECIPES: dict[str, Recipe] = {
    # The study's pick ("tnt-rank-prog-merge", examples/fashion_mnist/results/study/STUDY.md): the anchored step (a
    # clean dense pass and a hard-pruning pass train the backbone, distilled to the dense model; the noise trains
    # only the relevance heads), rank relevance (informative at every keep rate), heads after blocks 1 and 3 with
    # the pruning pass pruning at both, and the left-out tokens merged into their most similar kept token.
    DEFAULT_RECIPE: Recipe(summary="anchored step, rank relevance, heads after blocks 1 and 3, merging"),
    # Rao et al. 2024 as published: softmax relevance, the official code's sigma0, heads only on a frozen
    # backbone, no distillation, no hard-pruning pass, noise after blocks 0-4, the noisy step, tokens dropped.
    "official": Recipe(
        anchor=False,
        reducer="drop",
        noise_blocks=(0, 1, 2, 3, 4),
        sigma0=0.02,
        relevance="softmax",
        target_rate=0.5,
        train="heads",
        distill=False,
        drop_weight=0.0,
        summary="the paper: softmax relevance, sigma0 0.02, heads only",
    ),
}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise TntError(f"unknown recipe {name!r}: choose one of {', '.join(RECIPES)}") from None
