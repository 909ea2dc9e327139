"""Everything a fine-tune is built from before its first step: the training data, the TNT model (heads attached,
classes mapped, what trains), the frozen teacher, the evaluation schedule, the pruning pass, the loader and the
loss. The trainer calls these in a fixed order after seeding, so the RNG draws (head initialisation) are the same
on every run and every resume."""

from __future__ import annotations

import copy
import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from tnt_cli.engine import Schedule, TNTModel, attach_tnt
from tnt_cli.errors import SettingError, TntError
from tnt_cli.methods.registry import lookup
from tnt_cli.train.config import TrainConfig
from tnt_cli.train.losses import build_criterion, build_mixup
from tnt_cli.train.task import LossSettings, PruningPass, progressive

if TYPE_CHECKING:
    from torch import nn
    from torch.utils.data import DataLoader, Dataset

    from tnt_cli.io.builder import LoadedModel

# Without a pruning pass, OUT's schedule is block 2 (or the nearest earlier noise block) at this keep rate; with one,
# the pass's own block(s) at the rate it trained at nearest to this (`deployed_schedule`).
DEFAULT_EVAL_BLOCK = 2
DEFAULT_EVAL_KEEP = 0.5

Note = Callable[[str], None]  # prints a remark for the user (on rank 0 only)


def seed_everything(seed: int) -> None:
    """Seed the global RNGs a run draws from (python, numpy, torch): before building, so the heads start alike.
    Any whole number: torch's seed is taken modulo 2**64 (the same seed for every value torch accepts itself)."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed % (1 << 64))


def default_eval_schedule(noise_blocks: tuple[int, ...], depth: int) -> Schedule:
    """Without a pruning pass: block 2 at keep 0.5, moved to the nearest earlier noise block (only those get trained
    heads) and kept before the last block (pruning after the last block changes nothing the classifier sees)."""
    usable = [b for b in noise_blocks if b < depth - 1] or [min(noise_blocks)]
    earlier = [b for b in usable if b <= DEFAULT_EVAL_BLOCK]
    block = max(earlier) if earlier else min(usable)
    return Schedule(prune_layers=(block,), keep_rates=(DEFAULT_EVAL_KEEP,))


def trained_keep(keeps: tuple[float, ...]) -> float:
    """The keep rate OUT ships at: of the rates the pruning pass trained at, the one nearest 0.5 (the higher on a
    tie)."""
    return min(keeps, key=lambda k: (abs(k - DEFAULT_EVAL_KEEP), -k))


def deployed_schedule(
    cfg: TrainConfig, pruning_pass: PruningPass | None, noise_blocks: tuple[int, ...], depth: int
) -> Schedule:
    """THE schedule a run's output has by default: the one it trained for. The end-of-run evaluation, OUT's
    config.json and its model card all take it from here (`--prune-layers/--keep-rates` override it).

    With a hard-pruning pass: the pass's block(s) at `trained_keep` of its rates, spread over its blocks as the
    pass spreads it (`progressive`), reduced with the run's reducer. Without one (e.g. --recipe official): the
    heads were trained by noise only, at every noise block, so `default_eval_schedule`.
    """
    if pruning_pass is not None:
        return progressive(pruning_pass.blocks, trained_keep(pruning_pass.keeps), cfg.reducer, cfg.merge_threshold)
    return default_eval_schedule(noise_blocks, depth)


def default_drop_block(noise_blocks: tuple[int, ...], depth: int) -> int:
    """The hard-pruning pass prunes after the first noise block past block 0 (the study used block 1), before the
    last block (pruning there changes nothing the classifier sees); block 0 or the first noise block otherwise."""
    usable = [b for b in noise_blocks if 1 <= b < depth - 1]
    return min(usable) if usable else min(noise_blocks)


def pruning_pass_blocks(cfg: TrainConfig, noise_blocks: tuple[int, ...], depth: int) -> tuple[int, ...]:
    """Where the hard-pruning pass prunes: `drop_block` if given; else the anchored step prunes after every noise
    block before the last block (progressively, when there are several) and the noisy step after
    `default_drop_block`."""
    if cfg.drop_block is not None:
        return (cfg.drop_block,)
    if cfg.anchor and lookup(cfg.method).uses_heads:
        return tuple(b for b in noise_blocks if b < depth - 1) or (min(noise_blocks),)
    return (default_drop_block(noise_blocks, depth),)


def clamp_noise_blocks(blocks: tuple[int, ...], depth: int, note: Note) -> tuple[int, ...]:
    """The noise blocks that exist in a model of `depth` blocks (a recipe's blocks may outnumber a small model's)."""
    kept = tuple(b for b in blocks if 0 <= b < depth)
    if not kept:
        raise SettingError("{noise_blocks} {blocks}: this model has blocks 0-{last}",
                           blocks=",".join(map(str, blocks)), last=depth - 1)  # fmt: skip
    if kept != blocks:
        note(f"note: noise blocks {','.join(map(str, kept))} (the model has {depth} blocks)")
    return kept


@dataclass
class TrainingData:
    """The opened training split and its class names."""

    base: Dataset
    classes: list[str]


def open_training_data(cfg: TrainConfig) -> TrainingData:
    """Open the training split first: a bad DATA is reported before any model is loaded or changed."""
    from tnt_cli.data.datasets import base_dataset
    from tnt_cli.data.holdout import SOURCE_SPLIT, without_holdout

    base = base_dataset(cfg.data, cfg.split, seed=cfg.seed)
    if cfg.holdout and cfg.split == SOURCE_SPLIT:  # calibrate's images stay unseen (tnt_cli.data.holdout)
        base = without_holdout(base)
    classes = list(getattr(base, "classes", []))
    if len(base) == 0 or not classes:
        raise TntError(f"{cfg.data} {cfg.split} has no images")
    return TrainingData(base=base, classes=classes)


@dataclass
class TrainingModel:
    """The model a run trains and what was decided while building it."""

    loaded: LoadedModel  # what MODEL resolved to (its base model and provenance go into OUT)
    model: TNTModel  # on the run's device, heads attached, requires_grad set
    teacher: nn.Module | None  # the frozen dense backbone distillation learns from (full training only)
    eval_schedule: Schedule  # OUT's schedule, evaluated at the end
    pruning_pass: PruningPass | None  # None: no hard-pruning pass
    label_map: list[int] | None  # data label -> model class (None: identity, or a new classifier)
    model_classes: list[str]  # the model's class names after mapping (recorded in OUT)

    @property
    def drop_block(self) -> int | None:
        return self.pruning_pass.block if self.pruning_pass is not None else None


def build_training_model(cfg: TrainConfig, classes: list[str], device, note: Note) -> TrainingModel:
    """Load MODEL, copy the teacher (the model as loaded: distillation learns from its classifier), map the data's
    classes onto it, attach the heads the run trains and evaluates, and choose what trains (heads and/or
    backbone)."""
    from tnt_cli.io.sources import load_model

    loaded = load_model(cfg.model)
    vit = loaded.model.vit
    depth = len(vit.blocks)
    teacher = None
    if cfg.distill and cfg.train == "full":  # the model as it was, before its classifier is mapped or replaced
        teacher = copy.deepcopy(vit).eval().requires_grad_(False).to(device)
    label_map, model_classes = align_classes(cfg, loaded, classes, note)
    noise_blocks = clamp_noise_blocks(cfg.noise_blocks, depth, note)
    pass_blocks = pruning_pass_blocks(cfg, noise_blocks, depth) if cfg.drop_weight > 0 else None
    if cfg.anchor and lookup(cfg.method).uses_heads and pass_blocks is not None and pass_blocks != noise_blocks:
        note(f"note: anchored step: noise and heads at block(s) {','.join(map(str, pass_blocks))}, where the "
             "pruning pass prunes")  # fmt: skip
        noise_blocks = pass_blocks
    noise = cfg.noise(blocks=noise_blocks)
    pruning_pass = None
    if pass_blocks is not None:
        pruning_pass = PruningPass(pass_blocks, cfg.drop_keeps, cfg.reducer, cfg.merge_threshold)
    trained = set(loaded.model.head_blocks) if loaded.heads_usable else set()
    headed = sorted(set(noise_blocks) | trained)
    for block in pass_blocks or ():  # the pass prunes by a head that trains (or came trained), never a fresh one
        if block not in headed:
            raise SettingError("{drop_block} {block}: no relevance head there (heads at blocks {heads}; the "
                               "model has blocks 0-{last})", block=block, heads=",".join(map(str, headed)),
                               last=depth - 1)  # fmt: skip
    schedule = _eval_schedule(cfg, pruning_pass, noise_blocks, depth)
    model = attach_tnt(vit, sorted(set(headed) | set(schedule.prune_layers)), noise=noise,
                       head_norm=loaded.model.head_norm)  # fmt: skip
    for block in trained:  # continue from the heads a tnt directory brought
        model.heads[str(block)].load_state_dict(loaded.model.heads[str(block)].state_dict())
    for block, head in model.heads.items():  # baselines rank tokens their own way: their heads stay as they are
        head.requires_grad_(int(block) in noise_blocks and lookup(cfg.method).uses_heads)
    vit.requires_grad_(cfg.train == "full")
    model = model.to(device)
    if not any(p.requires_grad for p in model.parameters()):
        raise TntError("nothing to train: no noise block has a relevance head")
    return TrainingModel(loaded=loaded, model=model, teacher=teacher, eval_schedule=schedule,
                         pruning_pass=pruning_pass, label_map=label_map, model_classes=model_classes)  # fmt: skip


def _eval_schedule(
    cfg: TrainConfig, pruning_pass: PruningPass | None, noise_blocks: tuple[int, ...], depth: int
) -> Schedule:
    """The schedule OUT is evaluated and saved with: the one asked for, else `deployed_schedule`."""
    if not cfg.eval_prune_layers:
        return deployed_schedule(cfg, pruning_pass, noise_blocks, depth)
    schedule = Schedule(prune_layers=cfg.eval_prune_layers, keep_rates=cfg.eval_keep_rates or ())
    untrained = [b for b in schedule.prune_layers if b not in noise_blocks]
    if untrained and lookup(cfg.method).uses_heads:
        raise SettingError("{eval_prune_layers} {block}: only noise blocks get trained heads (noise blocks "
                           "{blocks})", block=untrained[0], blocks=",".join(map(str, noise_blocks)))  # fmt: skip
    if lookup(cfg.method).takes_reducer and schedule.prune_layers:
        # OUT's schedule reduces as training did
        schedule = dataclasses.replace(schedule, reducer=cfg.reducer, merge_threshold=cfg.merge_threshold)
    return schedule


def align_classes(
    cfg: TrainConfig, loaded: LoadedModel, classes: list[str], note: Note
) -> tuple[list[int] | None, list[str]]:
    """(data label -> model class, the model's class names) by name (`tnt_cli.data.classes`); with `new_classes`
    the classifier is replaced by one for the data's classes. Records the names on the backbone."""
    from tnt_cli.data.classes import map_classes, mapped_names
    from tnt_cli.io.labels import model_class_names, record_names

    vit = loaded.model.vit
    label_map: list[int] | None = None
    names = None
    if cfg.new_classes:
        if cfg.train == "heads":
            raise SettingError("a new classifier must be trained: new classes need {train} full")
        note(f"note: new {len(classes)}-class classifier (the model had {vit.num_classes})")
        vit.reset_classifier(len(classes))
    else:
        names = model_class_names(vit, loaded.tnt_config)
        label_map = map_classes(classes, names, vit.num_classes, data=cfg.data, model=cfg.model)
    model_classes = mapped_names(names, classes)
    record_names(vit, model_classes)
    return label_map, model_classes


def may_leave_unused(model: TNTModel, cfg: TrainConfig) -> bool:
    """True when a trainable head can get no gradient in a step (DDP must then look for unused parameters): noise
    after the last block does not reach a class-token classifier, so that head learns only from the sigmoid rate
    penalty, if at all."""
    vit, noise = model.vit, model.noise
    last_is_noisy = (model.depth - 1) in noise.blocks
    token_pool = getattr(vit, "global_pool", "token") == "token"
    rate_trains_it = noise.relevance == "sigmoid" and cfg.rate_weight > 0
    return last_is_noisy and token_pool and not rate_trains_it


def build_train_loader(
    cfg: TrainConfig, model: TNTModel, data: TrainingData, label_map: list[int] | None
) -> DataLoader:
    """The training loader (its sampler is an `EpochSampler`: the order is a function of (seed, epoch)); batches
    are pinned only when the model is on a GPU."""
    from tnt_cli.data import build_loader
    from tnt_cli.devices import pin_memory

    return build_loader(
        cfg.data,
        cfg.split,
        model,
        batch_size=cfg.batch_size,
        train=True,
        workers=cfg.workers,
        limit=cfg.limit,
        seed=cfg.seed,
        scale=cfg.scale,
        hflip=cfg.hflip,
        auto_augment=cfg.auto_augment,
        re_prob=cfg.re_prob,
        base=data.base,
        label_map=label_map,
        pin_memory=pin_memory(next(model.parameters()).device),
    )


def build_loss(cfg: TrainConfig, num_classes: int) -> tuple[Callable | None, nn.Module]:
    """(timm's Mixup or None, the criterion): soft-target cross-entropy under mixup/cutmix, else label smoothing."""
    if (cfg.mixup > 0 or cfg.cutmix > 0) and cfg.batch_size % 2:
        raise SettingError("{mixup} / {cutmix} need an even {batch_size}")
    mixup = build_mixup(cfg.mixup, cfg.cutmix, cfg.smoothing, num_classes)
    return mixup, build_criterion(cfg.smoothing, soft_targets=mixup is not None)


def loss_settings(cfg: TrainConfig, pruning_pass: PruningPass | None, noise_blocks: tuple[int, ...]) -> LossSettings:
    """The loss terms' weights this run uses (the rate term only with sigmoid relevance, the pruning pass's
    only when there is one)."""
    return LossSettings(method=cfg.method, rate_weight=cfg.rate_weight if cfg.relevance == "sigmoid" else 0.0,
                        distill=cfg.distill, distill_weight=cfg.distill_weight, distill_temp=cfg.distill_temp,
                        drop_weight=cfg.drop_weight if pruning_pass is not None else 0.0,
                        noise_trains_backbone=cfg.noise_trains == "all", anchor=cfg.anchor,
                        heads_fraction=cfg.heads_fraction, target_rate=cfg.target_rate,
                        noise_blocks=tuple(noise_blocks))  # fmt: skip
