"""One fine-tuning step for every method: its forward passes and its loss, in one module.

This is the only place a training loss is computed (timm's `timm/task/` idea): `tnt finetune`'s trainer, the
Python API and the Fashion-MNIST study all train through `PruningTask`, so every method gets the same recipe.

- `tnt`: the noisy pass (relevance noise after the noise blocks; sigmoid relevance's rate term), plus the
  hard-pruning pass: top-k by the current heads (with the schedule's reducer) at the drawn keep rate.
- `random` / `evit` / `evit-fuse` / `tome` (the baselines, fine-tuned as their papers fine-tune them): a plain
  dense pass, plus the hard-pruning pass with the method's own reducer, configured at the GMACs TNT has at the
  drawn keep rate (`tnt_cli.eval.baselines.apply_method`, the same matching rule evaluation uses).

Both passes get the task loss and, with distillation, `distill_weight * KL(teacher || student)` (added).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tnt_cli.engine import Schedule, TNTModel
from tnt_cli.method_names import REDUCING_METHODS as TRAIN_METHODS
from tnt_cli.train.losses import distill_loss


@dataclass(frozen=True)
class LossSettings:
    """The loss terms' weights, resolved from a run's settings by `tnt_cli.train.setup.loss_settings` (no defaults
    of their own: the recipe's are in `tnt_cli.recipes`, the rest in `tnt_cli.train.config.TrainConfig`)."""

    method: str
    rate_weight: float
    distill: bool
    distill_weight: float
    distill_temp: float
    drop_weight: float
    noise_trains_backbone: bool  # False: the noisy pass's loss reaches the heads only


def drop_keep(keeps: tuple[float, ...], seed: int, step: int, micro: int) -> float:
    """The keep rate of the hard-pruning pass at (step, micro-batch): a function of (seed, step, micro) alone, from
    its own generator, so a resumed run draws the same rates and the global RNG streams are untouched."""
    key = ((seed * 1_000_003 + step) * 1_009 + micro) & 0x7FFF_FFFF_FFFF_FFFF
    generator = torch.Generator().manual_seed(key)
    return keeps[int(torch.randint(len(keeps), (1,), generator=generator))]


class PruningPass:
    """The hard-pruning pass: one stage after `block` at a keep rate drawn per (step, micro-batch) from `keeps`,
    reducing the tokens TNT does not keep with `reducer` (the baselines use their own reducer instead)."""

    def __init__(self, block: int, keeps: tuple[float, ...], reducer: str = "drop") -> None:
        self.block = block
        self.keeps = keeps
        self._schedules = {k: Schedule(prune_layers=(block,), keep_rates=(k,), reducer=reducer) for k in keeps}

    def schedule(self, seed: int, step: int, micro: int) -> Schedule:
        """The schedule of optimizer step `step` (1-based), micro-batch `micro`."""
        return self._schedules[drop_keep(self.keeps, seed, step, micro)]


class PruningTask(nn.Module):
    """A training step's forward and loss in ONE module call, so DDP sees one forward per backward.

    `forward(images, targets, schedule, batch_start)` returns the loss; `schedule` is the hard-pruning pass's
    schedule for this step (None: no pruning pass) and `batch_start` the position of this micro-batch in the
    run's image stream (the random baseline's scores are a function of it, so a resumed run draws the same).
    The model's scorer and schedule are restored after every step.
    """

    def __init__(
        self, model: TNTModel, criterion: nn.Module, settings: LossSettings, teacher: nn.Module | None = None
    ) -> None:
        super().__init__()
        if settings.method not in TRAIN_METHODS:
            raise ValueError(f"unknown training method {settings.method!r}: one of {', '.join(TRAIN_METHODS)}")
        self.model = model
        self.criterion = criterion
        self.settings = settings
        self.teacher = teacher

    def forward(
        self, images: torch.Tensor, targets: torch.Tensor, schedule: Schedule | None = None, batch_start: int = 0
    ) -> torch.Tensor:
        s, model = self.settings, self.model
        model.noise_enabled = s.method == "tnt"  # baselines: a plain dense pass (the heads are not theirs)
        if s.method == "tnt" and not s.noise_trains_backbone:
            frozen = {f"vit.{k}": v.detach() for k, v in model.vit.named_parameters()}
            logits = torch.func.functional_call(model, frozen, (images,))  # gradients reach the heads only
        else:
            logits = model(images)
        teacher_logits = self._teacher_logits(images) if s.distill else None
        loss = self._task_loss(logits, targets, teacher_logits)
        if s.method == "tnt" and s.rate_weight:
            loss = loss + s.rate_weight * model.rate_loss()  # from the noisy pass (the pruned one sets none)
        if schedule is not None and s.drop_weight > 0:
            pruned = self.pruned_logits(images, schedule, batch_start)
            loss = loss + s.drop_weight * self._task_loss(pruned, targets, teacher_logits)
        return loss

    def pruned_logits(self, images: torch.Tensor, schedule: Schedule, batch_start: int = 0) -> torch.Tensor:
        """Logits of the hard-pruned pass with the method's reducer, gradients into the backbone."""
        from tnt_cli.eval.baselines import apply_method

        with apply_method(self.model, self.settings.method, schedule) as setup:
            setup.begin_batch(batch_start)
            return setup.module(images)  # every method's module prunes in train mode too

    def _teacher_logits(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher = self.teacher if self.teacher is not None else self.model.vit  # heads only: the frozen backbone
            return teacher(images)

    def _task_loss(self, logits: torch.Tensor, targets: torch.Tensor, teacher_logits: torch.Tensor | None):
        loss = self.criterion(logits.float(), targets)
        if teacher_logits is not None:
            loss = loss + self.settings.distill_weight * distill_loss(
                logits, teacher_logits, self.settings.distill_temp
            )
        return loss
