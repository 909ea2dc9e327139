"""One fine-tuning step for every method: its forward passes and its loss, in one module.

This is the only place a training loss is computed (timm's `timm/task/` idea): `tnt finetune`'s trainer, the
Python API and the Fashion-MNIST study all train through `PruningTask`, so every method gets the same recipe.

- `tnt`, anchored step (`anchor`, the default recipe): a clean dense pass and the hard-pruning pass train the
  backbone, exactly as the baselines' two passes do; the relevance heads train on a third, cheap pass: the dense
  pass's own tokens after the pruning block (a `heads_fraction` of the batch, detached), noised by the heads at
  the keep rate the pruning pass drew, then the rest of the blocks with the backbone's parameters detached, so the
  noise's gradient reaches the heads only.
- `tnt`, noisy step (`anchor` off, the paper's form): the noisy pass (relevance noise after the noise blocks; the
  sigmoid's rate term) trains heads and backbone, plus the hard-pruning pass.
- `random` / `evit` / `evit-fuse` / `tome` (the baselines, fine-tuned as their papers fine-tune them): a plain
  dense pass, plus the hard-pruning pass with the method's own reducer, configured at the GMACs TNT has at the
  drawn schedule (`tnt_cli.methods.apply.apply_method`, the same matching rule evaluation uses).

Every pass gets the task loss and, with distillation, `distill_weight * KL(teacher || student)` (added).
`forward` returns the total and its parts (`LOSS_PARTS`), as timm's tasks return their outputs, so the trainer
can log each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from tnt_cli.engine import Schedule, TNTModel
from tnt_cli.methods.registry import REDUCING_METHODS as TRAIN_METHODS
from tnt_cli.methods.registry import lookup
from tnt_cli.train.losses import distill_loss

# The parts of a step's loss, as `PruningTask.forward` names them (a part a step does not have is left out):
# the first pass's task loss and distillation term, the hard-pruning pass (weighted), sigmoid relevance's rate
# term (weighted) and the heads' noisy pass of the anchored step.
LOSS_PARTS = ("task", "distill", "pruned", "rate", "heads")


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
    noise_trains_backbone: bool  # noisy step only; False: the noisy pass's loss reaches the heads only
    anchor: bool = False  # the anchored step (see the module docstring)
    heads_fraction: float = 0.25  # anchored step: the share of the batch the heads' noisy pass runs on
    target_rate: float = 0.3  # anchored step without a pruning pass: the keep rate the heads' noise is cut at
    noise_blocks: tuple[int, ...] = ()  # anchored step without a pruning pass: where the heads' noise goes


def drop_keep(keeps: tuple[float, ...], seed: int, step: int, micro: int) -> float:
    """The keep rate of the hard-pruning pass at (step, micro-batch): a function of (seed, step, micro) alone, from
    its own generator, so a resumed run draws the same rates and the global RNG streams are untouched."""
    key = ((seed * 1_000_003 + step) * 1_009 + micro) & 0x7FFF_FFFF_FFFF_FFFF
    generator = torch.Generator().manual_seed(key)
    return keeps[int(torch.randint(len(keeps), (1,), generator=generator))]


class PruningPass:
    """The hard-pruning pass: after each of `blocks`, at a keep rate drawn per (step, micro-batch) from `keeps`,
    reducing the tokens TNT does not keep with `reducer` (the baselines use their own reducer instead). With
    several blocks the drawn rate is the fraction left after the last one, in equal steps (`progressive`)."""

    def __init__(
        self,
        blocks: int | tuple[int, ...],
        keeps: tuple[float, ...],
        reducer: str = "drop",
        merge_threshold: float | None = None,
    ) -> None:
        self.blocks = (blocks,) if isinstance(blocks, int) else tuple(blocks)
        self.keeps = keeps
        self._schedules = {k: progressive(self.blocks, k, reducer, merge_threshold) for k in keeps}

    @property
    def block(self) -> int:
        """The first pruning block."""
        return self.blocks[0]

    def schedule(self, seed: int, step: int, micro: int) -> Schedule:
        """The schedule of optimizer step `step` (1-based), micro-batch `micro`."""
        return self._schedules[drop_keep(self.keeps, seed, step, micro)]


def progressive(
    blocks: tuple[int, ...], keep: float, reducer: str = "drop", merge_threshold: float | None = None
) -> Schedule:
    """A schedule that keeps `keep` of the patch tokens in the end, in equal steps: keep^(1/m) after each of the m
    blocks (one block: `keep` there)."""
    step = round(keep ** (1.0 / len(blocks)), 6)
    return Schedule(prune_layers=blocks, keep_rates=(keep,) if len(blocks) == 1 else (step,) * len(blocks),
                    reducer=reducer, merge_threshold=merge_threshold)  # fmt: skip


def heads_batch(batch: int, fraction: float) -> int:
    """How many images of a micro-batch the heads' noisy pass runs on (at least one)."""
    return max(1, min(batch, math.ceil(batch * fraction)))


class _NoisyFrom(nn.Module):
    """`TNTModel.forward_noisy_from` as a module call, so `torch.func.functional_call` can run it with the
    backbone's parameters swapped for detached ones (kept out of the task's module tree: made per step)."""

    def __init__(self, model: TNTModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, start: int, keeps: dict[int, float]) -> torch.Tensor:
        return self.model.forward_noisy_from(x, start, keeps)


class PruningTask(nn.Module):
    """A training step's forward and loss in ONE module call, so DDP sees one forward per backward.

    `forward(images, targets, schedule, batch_start)` returns `{"loss": total, part: value, ...}` (the parts, from
    `LOSS_PARTS`, detached); `schedule` is the hard-pruning pass's schedule for this step (None: no pruning pass)
    and `batch_start` the position of this micro-batch in the run's image stream (the random baseline's scores are
    a function of it, so a resumed run draws the same). The model's scorer and schedule are restored after every
    step.
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
    ) -> dict[str, torch.Tensor]:
        s, model = self.settings, self.model
        parts: dict[str, torch.Tensor] = {}
        uses_heads = lookup(s.method).uses_heads  # tnt: its relevance heads rank the tokens, the noise trains them
        anchored = uses_heads and s.anchor
        model.noise_enabled = uses_heads and not anchored  # baselines: a plain dense pass (no heads)
        if anchored:
            keeps = self._noise_keeps(schedule)
            start = min(keeps)
            logits, tapped = model.forward_dense(images, taps=(start,))
        elif uses_heads and not s.noise_trains_backbone:
            frozen = {f"vit.{k}": v.detach() for k, v in model.vit.named_parameters()}
            logits = torch.func.functional_call(model, frozen, (images,))  # gradients reach the heads only
        else:
            logits = model(images)
        teacher_logits = self._teacher_logits(images) if s.distill else None
        task, distill = self._task_loss(logits, targets, teacher_logits)
        loss = task if distill is None else task + distill
        parts["task"], parts["distill"] = task, distill
        if anchored:
            m = heads_batch(images.shape[0], s.heads_fraction)
            noisy = self._heads_pass(tapped[start][:m].detach(), start, keeps)
            heads = self._total(*self._task_loss(noisy, targets[:m], _first(teacher_logits, m)))
        if uses_heads and s.rate_weight:
            rate = s.rate_weight * model.rate_loss()  # from the noisy pass (the pruned one sets none)
            if isinstance(rate, torch.Tensor):
                loss = loss + rate
                parts["rate"] = rate
        if schedule is not None and s.drop_weight > 0:
            pruned = self.pruned_logits(images, schedule, batch_start)
            pruned_loss = s.drop_weight * self._total(*self._task_loss(pruned, targets, teacher_logits))
            loss = loss + pruned_loss
            parts["pruned"] = pruned_loss
        if anchored:
            loss = loss + heads
            parts["heads"] = heads
        return {"loss": loss, **{k: v.detach() for k, v in parts.items() if v is not None}}

    def pruned_logits(self, images: torch.Tensor, schedule: Schedule, batch_start: int = 0) -> torch.Tensor:
        """Logits of the hard-pruned pass with the method's reducer, gradients into the backbone."""
        from tnt_cli.methods.apply import apply_method

        with apply_method(self.model, self.settings.method, schedule) as setup:
            setup.begin_batch(batch_start)
            return setup.module(images)  # every method's module prunes in train mode too

    def _noise_keeps(self, schedule: Schedule | None) -> dict[int, float]:
        """Anchored step: block -> keep rate of the heads' noise: the pruning pass's stages (the heads it deploys),
        each at the share of all patch tokens left after it (rates compound: nothing is dropped in the noisy pass,
        so a later head's cut counts every token); without a pruning pass, every noise block at the target rate."""
        if schedule is not None and schedule.prune_layers:
            keeps, left = {}, 1.0
            for block, keep in zip(schedule.prune_layers, schedule.keep_rates):
                left *= keep
                keeps[block] = left
            return keeps
        return {b: self.settings.target_rate for b in self.settings.noise_blocks}

    def _heads_pass(self, tokens: torch.Tensor, start: int, keeps: dict[int, float]) -> torch.Tensor:
        """The heads' noisy pass from the dense pass's tokens after `start`, the backbone's parameters detached."""
        frozen = {f"model.vit.{k}": v.detach() for k, v in self.model.vit.named_parameters()}
        return torch.func.functional_call(_NoisyFrom(self.model), frozen, (tokens, start, keeps))

    def _teacher_logits(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher = self.teacher if self.teacher is not None else self.model.vit  # heads only: the frozen backbone
            return teacher(images)

    def _task_loss(
        self, logits: torch.Tensor, targets: torch.Tensor, teacher_logits: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(the criterion's loss, the weighted distillation term or None)."""
        task = self.criterion(logits.float(), targets)
        if teacher_logits is None:
            return task, None
        return task, self.settings.distill_weight * distill_loss(logits, teacher_logits, self.settings.distill_temp)

    @staticmethod
    def _total(task: torch.Tensor, distill: torch.Tensor | None) -> torch.Tensor:
        return task if distill is None else task + distill


def _first(tensor: torch.Tensor | None, m: int) -> torch.Tensor | None:
    return None if tensor is None else tensor[:m]
