"""Fine-tuning settings, each declared once (`tnt_cli.settings`): `tnt finetune`'s options come from here.

Fields left None are filled from the named recipe (`tnt_cli.recipes`, `--recipe`); anything given explicitly
wins. After `__post_init__` every such field holds its resolved value, so the saved config says exactly what ran.
Errors are `SettingError`s: Python users read `drop_weight`, the CLI prints `--drop-weight`. This module does not
import torch, so `tnt --help` stays instant.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

from tnt_cli.errors import SettingError
from tnt_cli.methods.registry import REDUCING_METHODS, REFERENCE, canonical, lookup
from tnt_cli.parsing import check_seed, float_list, float_pair, int_list
from tnt_cli.recipes import DEFAULT_RECIPE, NOISE_VARIANTS, RECIPES, REDUCERS, RELEVANCES, get_recipe
from tnt_cli.settings import AUG, EVAL, NOISE, OPTIM, RUN, SCHEDULE, Setting, declarations, setting, shared

if TYPE_CHECKING:
    from tnt_cli.engine.noise import NoiseConfig

TRAIN_MODES = ("heads", "full")
# Methods `tnt finetune --method` trains (the order the CLI lists them); `cls-attn` is accepted for `evit`.
METHODS = REDUCING_METHODS
NOISE_TRAINS = ("all", "heads")
AMP_MODES = ("auto", "bf16", "fp16", "off")
_DEFAULT, _OFFICIAL = RECIPES[DEFAULT_RECIPE], RECIPES["official"]


@dataclass
class TrainConfig:
    """Everything that shapes a fine-tuning run; each field is one setting's only declaration."""

    # ------------------------------------------------------------------ run
    model: str = shared("model", panel=RUN)
    data: str = shared("data", panel=RUN)
    out: str = setting(
        help="Output directory (the model directory, its log and checkpoint).", panel=RUN, short="-o", resume=False
    )
    recipe: str = setting(
        DEFAULT_RECIPE,
        help=f"Defaults for noise, training mode, distillation and the pruning pass: {DEFAULT_RECIPE} (the study's "
        f"pick: {_DEFAULT.summary}) or official ({_OFFICIAL.summary}). Explicit flags override it.",
        panel=RUN, summary=True, choices=tuple(RECIPES),
    )  # fmt: skip
    # what is fine-tuned: TNT, or a baseline fine-tuned the same way with its own reducer in the pruning pass
    method: str = setting(
        REFERENCE,
        help="What to fine-tune: tnt, or a baseline trained the same way (same recipe, steps, distillation) with its "
        "own reducer in the pruning pass: random (random drop), evit (CLS-attention top-k inside the block; "
        "cls-attn is accepted), evit-fuse (EViT with the dropped tokens fused into one), tome (token merging in "
        "every block). OUT records it; evaluate, prune, calibrate and benchmark run it by default.",
        panel=RUN, summary=True, choices=REDUCING_METHODS,
    )  # fmt: skip
    reducer: str | None = setting(
        help="tnt: what happens to the tokens the heads do not keep, in the pruning pass and in OUT's schedule: "
        "drop (the paper), merge (into their most similar kept token) or fuse (into one token). Baselines: drop "
        "(they have their own reducer).",
        panel=RUN, summary=True, choices=REDUCERS, from_recipe=True,
    )  # fmt: skip
    merge_threshold: float | None = setting(
        None,
        help="tnt with --reducer merge: a left-out token merges only when its cosine similarity to its nearest kept "
        "token reaches this (gated merge); below it, it is dropped. Default: every left-out token merges.",
        panel=RUN, summary=True,
    )  # fmt: skip
    train: str | None = setting(
        help="heads: relevance heads only, backbone frozen; full: everything.", panel=RUN, from_recipe=True,
        summary=True, choices=TRAIN_MODES,
    )  # fmt: skip
    split: str = setting("train", help="Training split.", panel=RUN)
    holdout: bool = setting(
        True,
        help="Train on the whole train split: without it a fixed slice (10%, at most 5000 images) is held out, "
        "where `tnt calibrate` chooses a schedule on images the fine-tune never saw (--split holdout, its default).",
        panel=RUN, flag="--no-holdout",
    )  # fmt: skip
    new_classes: bool = setting(
        False,
        help="Train a new classifier for DATA's classes (needs --train full). Without it DATA's classes are matched "
        "to the model's by name, and classes the model lacks are refused.",
        panel=RUN,
    )
    limit: int | None = setting(None, help="Train on a seeded subset of N images.", panel=RUN)
    workers: int = shared("workers", panel=RUN, resume=False)
    device: str = shared("device", panel=RUN, resume=False)
    log_every: int = setting(10, help="Write metrics.jsonl every N steps.", panel=RUN, resume=False)
    progress: bool = setting(True, help="No progress bar.", panel=RUN, flag="--no-progress", resume=False)
    keep_checkpoint: bool = setting(
        False, help="Keep OUT/checkpoint after a finished run.", panel=RUN, resume=False
    )
    tensorboard: bool = setting(
        False, help="Also log the metrics as TensorBoard scalars in OUT/tensorboard (needs pip install tensorboard).",
        panel=RUN, resume=False,
    )  # fmt: skip
    # ------------------------------------------------------------------ noise, distillation, the pruning pass
    noise_trains: str = setting(
        "all",
        help="tnt: what the noisy pass trains: all (heads and backbone) or heads (the backbone then learns only from "
        "the pruning pass, never from noise it will not see when deployed).",
        panel=NOISE, summary=True, choices=NOISE_TRAINS,
    )  # fmt: skip
    anchor: bool | None = setting(
        help="tnt: the anchored step. The first pass is a clean dense pass that trains the backbone (as the "
        "baselines' does) and the noise trains the relevance heads only: on --heads-fraction of the batch, from the "
        "dense pass's tokens at the pruning pass's block(s), at the keep rate it drew. Off: the paper's noisy pass "
        "trains heads and backbone. With it the noise blocks are the pruning pass's blocks.",
        panel=NOISE, from_recipe=True, summary=True,
    )  # fmt: skip
    heads_fraction: float | None = setting(
        help="Anchored step: the share of each batch the heads' noisy pass runs on.",
        panel=NOISE, from_recipe=True, summary=True,
    )  # fmt: skip
    noise_blocks: tuple[int, ...] | None = setting(
        help="Blocks after which noise is added (and heads trained), e.g. 0,1,2,3,4.",
        panel=NOISE, parse=int_list, from_recipe=True, summary=True,
    )  # fmt: skip
    sigma0: float | None = setting(
        help="Noise scale relative to each token's RMS.", panel=NOISE, from_recipe=True, summary=True
    )
    noise_variant: str | None = setting(
        help="std: sigma0*(1-alpha); var: sigma0*sqrt(1-alpha).", panel=NOISE, from_recipe=True, summary=True,
        choices=NOISE_VARIANTS,
    )
    relevance: str | None = setting(
        help="softmax (the paper), sigmoid with a rate penalty, or rank (the default: a token's relevance is its "
        "rank among the patch tokens, so the ranking gets gradient at every keep rate).",
        panel=NOISE, from_recipe=True, summary=True, choices=RELEVANCES,
    )
    target_rate: float | None = setting(
        help="sigmoid relevance: mean alpha the rate penalty pulls toward.", panel=NOISE, from_recipe=True, summary=True
    )
    rate_weight: float | None = setting(
        help="Weight of the sigmoid rate penalty.", panel=NOISE, from_recipe=True, summary=True
    )
    # distillation to the frozen dense model: loss = task + distill_weight * KL (added, not mixed)
    distill: bool | None = setting(
        help="Distil to the frozen dense model's logits.", panel=NOISE, from_recipe=True, summary=True
    )
    distill_weight: float | None = setting(
        help="Weight of the KL term, ADDED to the task loss.", panel=NOISE, from_recipe=True, summary=True
    )
    distill_temp: float = setting(1.0, help="Distillation temperature.", panel=NOISE, summary=True)
    # hard-pruning pass: loss += drop_weight * loss of the pruned logits at a keep rate drawn from drop_keeps after
    # block drop_block (None: chosen by the trainer from the model, see default_drop_block)
    drop_weight: float | None = setting(
        help="Weight of the hard-pruning pass (0: off): each step also runs the model pruned by the current heads at "
        "a keep rate from --drop-keeps and adds this x its loss, so the backbone learns to work from the tokens "
        "TNT keeps. Needs --train full.",
        panel=NOISE, from_recipe=True, summary=True,
    )  # fmt: skip
    drop_keeps: tuple[float, ...] | None = setting(
        help="Keep rates the pruning pass draws from, one per step (seeded).",
        panel=NOISE, parse=float_list, from_recipe=True, summary=True,
    )  # fmt: skip
    drop_block: int | None = setting(
        None,
        help="Block after which the pruning pass prunes (needs a head). Default: the first noise block after block 0 "
        "that is not the last block (1 for the default noise blocks).",
        panel=NOISE, summary=True,
    )  # fmt: skip
    # ------------------------------------------------------------------ optimisation
    epochs: int = setting(10, help="Epochs.", panel=OPTIM)
    max_steps: int | None = setting(
        None, help="Stop after N optimizer steps (the lr schedule is fitted to N): for short runs.", panel=OPTIM
    )
    batch_size: int = setting(64, help="Images per process per micro-batch.", panel=OPTIM, short="-b")
    accum: int = setting(1, help="Gradient accumulation steps.", panel=OPTIM)
    lr: float | None = setting(
        help="Base lr at global batch 512; the lr used is scaled by global batch / 512. With --train full it is the "
        "backbone's (heads: x --head-lr-scale).",
        panel=OPTIM, from_recipe=True, summary=True,
    )  # fmt: skip
    head_lr_scale: float | None = setting(
        help="--train full: the relevance heads (fresh layers) train at lr x this.",
        panel=OPTIM, from_recipe=True, summary=True,
    )  # fmt: skip
    opt: str = setting(
        "adamw", help="Optimizer, by its timm name (timm.optim.create_optimizer_v2): adamw, lamb, sgd, adamp, ...",
        panel=OPTIM,
    )  # fmt: skip
    min_lr: float = setting(
        1e-6, help="Final lr of the cosine schedule (timm's CosineLRScheduler, per step), for every group.",
        panel=OPTIM,
    )  # fmt: skip
    weight_decay: float = setting(0.05, help="Weight decay (not on norms, biases, tokens).", panel=OPTIM)
    warmup_epochs: float = setting(1.0, help="Linear warmup length in epochs (at most half the run).", panel=OPTIM)
    ema_decay: float | None = setting(
        None, help="Keep an exponential moving average of the weights (timm's ModelEmaV3) with this decay, e.g. "
        "0.999; OUT then holds, and the final evaluation measures, the average. Default: off.", panel=OPTIM,
    )  # fmt: skip
    clip_grad: float | None = setting(None, help="Clip the gradient norm to this value.", panel=OPTIM)
    amp: str = setting("auto", help="auto (bf16, else fp16, on CUDA; off on CPU), bf16, fp16 or off.", panel=OPTIM,
                       choices=AMP_MODES)  # fmt: skip
    compile: bool = setting(False, help="torch.compile the model.", panel=OPTIM, resume=False)
    seed: int = setting(0, help="Seed for heads, data order, augmentation and noise.", panel=OPTIM)
    # ------------------------------------------------------------------ augmentation
    scale: tuple[float, float] = setting(
        (0.08, 1.0), help="Random resized crop area range, min,max.", panel=AUG, flag="--crop-scale", parse=float_pair
    )
    hflip: float = setting(0.5, help="Horizontal flip probability.", panel=AUG)
    auto_augment: str | None = setting(
        None, help="timm RandAugment policy, e.g. rand-m9-mstd0.5-inc1 (off by default).", panel=AUG,
        flag="--randaugment",
    )  # fmt: skip
    re_prob: float = setting(0.0, help="Random erasing probability.", panel=AUG)
    mixup: float = setting(0.0, help="Mixup alpha (0: off).", panel=AUG)
    cutmix: float = setting(0.0, help="CutMix alpha (0: off).", panel=AUG)
    smoothing: float = setting(0.1, help="Label smoothing.", panel=AUG)
    # ------------------------------------------------------------------ the end-of-run evaluation
    val_split: str = setting("val", help="Split for the end-of-run evaluation.", panel=EVAL, resume=False)
    eval_limit: int | None = setting(
        None, help="Evaluate on a seeded subset of N images (0: skip evaluation).", panel=EVAL, resume=False
    )
    eval_batch_size: int | None = setting(
        None, help="Evaluation batch size (default 2 x --batch-size).", panel=EVAL, resume=False
    )
    eval_prune_layers: tuple[int, ...] | None = setting(
        None, help="OUT's schedule (evaluated at the end, saved, on the card): blocks after which it prunes, e.g. 2 or "
        "2,3,4. Default: the schedule it trained for, the pruning pass's block(s) (without a pass: block 2).",
        panel=SCHEDULE, flag="--prune-layers", parse=int_list, resume=False,
    )  # fmt: skip
    eval_keep_rates: tuple[float, ...] | None = setting(
        None, help="Fraction of patch tokens kept at each prune layer, e.g. 0.6 or 0.8,0.8,0.8. Default: the "
        "pruning pass's rate nearest 0.5 (0.5 with the default --drop-keeps).",
        panel=SCHEDULE, flag="--keep-rates", parse=float_list, resume=False,
    )  # fmt: skip

    def __post_init__(self) -> None:
        self.notes: list[str] = []  # resolution remarks for the run's log (not a field: not saved)
        self.method = canonical(self.method)
        self._resolve()
        self.noise_blocks = tuple(sorted({int(b) for b in self.noise_blocks}))
        self.drop_keeps = tuple(float(k) for k in self.drop_keeps)
        self.scale = tuple(float(s) for s in self.scale)  # type: ignore[assignment]
        self._check()

    def _resolve(self) -> None:
        """Fill every None recipe setting from the recipe; explicit values are kept."""
        recipe = get_recipe(self.recipe)
        if self.train is None:
            self.train = recipe.train
        if self.train not in TRAIN_MODES:
            raise _choice("train", TRAIN_MODES, self.train)
        if self.drop_weight is None and self.train != "full":
            # heads-only training asked for explicitly: the recipe's pruning pass would train nothing, so it is off
            self.drop_weight = 0.0
            if recipe.drop_weight > 0:
                self.notes.append(f"heads-only training: the {self.recipe} recipe's hard-pruning pass is off (it "
                                  "trains only the backbone)")  # fmt: skip
        if self.new_classes and self.distill is None and recipe.distill:
            # the dense model's classifier predicts the old classes: it cannot teach the new one
            self.distill = False
            self.notes.append("new classes: distillation is off (the dense model's classifier predicts other "
                              "classes, so it cannot teach the new one)")  # fmt: skip
        if self.reducer is None and self.method in METHODS and not lookup(self.method).takes_reducer:
            self.reducer = "drop"  # a baseline's own reducer does the reducing
        if self.lr is None:
            self.lr = recipe.lr[self.train]
        for s in RECIPE_SETTINGS:
            if getattr(self, s.name) is None:
                setattr(self, s.name, getattr(recipe, s.name))

    def _check(self) -> None:
        if self.drop_weight > 0 and self.train == "heads":
            raise SettingError(
                "{drop_weight} needs {train} full: the hard-pruning pass trains only the backbone (top-k gives the "
                "heads no gradient), which heads-only training freezes; use {drop_weight} 0"
            )
        if self.new_classes and self.distill:
            raise SettingError("{distill} learns from the dense model's classifier, which predicts other classes than "
                               "the new one {new_classes} trains: turn {distill} off")  # fmt: skip
        if self.method not in METHODS:
            raise _choice("method", METHODS, self.method)
        if not lookup(self.method).uses_heads and self.train != "full":
            raise SettingError(
                "{method} {value} fine-tunes the backbone (its reducer has no heads): use {train} full",
                value=self.method,
            )
        if not lookup(self.method).uses_heads and self.drop_weight <= 0:
            raise SettingError("{method} {value} trains through its pruning pass: {drop_weight} must be > 0",
                               value=self.method)  # fmt: skip
        if self.noise_trains not in NOISE_TRAINS:
            raise _choice("noise_trains", NOISE_TRAINS, self.noise_trains)
        if self.reducer not in REDUCERS:
            raise _choice("reducer", REDUCERS, self.reducer)
        if self.merge_threshold is not None and self.reducer != "merge":
            raise SettingError("{merge_threshold} gates {reducer} merge (this run's reducer is {value})",
                               value=self.reducer)  # fmt: skip
        if self.merge_threshold is not None and not -1 <= self.merge_threshold <= 1:
            raise SettingError("{merge_threshold} is a cosine similarity in [-1, 1], got {value:g}",
                               value=self.merge_threshold)  # fmt: skip
        if self.reducer != "drop" and not lookup(self.method).takes_reducer:
            raise SettingError("{reducer} {value} is TNT's; {method} {method_value} has its own reducer",
                               value=self.reducer, method_value=self.method)  # fmt: skip
        if self.amp not in AMP_MODES:
            raise _choice("amp", AMP_MODES, self.amp)
        if self.relevance not in RELEVANCES:
            raise _choice("relevance", RELEVANCES, self.relevance)
        if self.noise_variant not in NOISE_VARIANTS:
            raise _choice("noise_variant", NOISE_VARIANTS, self.noise_variant)
        _check_finite_numbers(self)
        check_seed(self.seed)
        _check_packages(self)
        checks = [
            (self.epochs >= 1, "{epochs} must be at least 1"),
            (self.max_steps is None or self.max_steps >= 1, "{max_steps} must be at least 1"),
            (self.batch_size >= 1, "{batch_size} must be at least 1"),
            (self.accum >= 1, "{accum} must be at least 1"),
            (self.lr is None or self.lr > 0, "{lr} must be positive"),
            (self.min_lr >= 0, "{min_lr} must be >= 0"),
            (self.weight_decay >= 0, "{weight_decay} must be >= 0"),
            (self.warmup_epochs >= 0, "{warmup_epochs} must be >= 0"),
            (self.clip_grad is None or self.clip_grad > 0, "{clip_grad} must be positive"),
            (self.ema_decay is None or 0 < self.ema_decay < 1, "{ema_decay} must be in (0, 1), e.g. 0.999"),
            (0.0 <= self.smoothing < 1.0, "{smoothing} must be in [0, 1)"),
            (self.mixup >= 0 and self.cutmix >= 0, "{mixup} and {cutmix} must be >= 0"),
            (0.0 <= self.hflip <= 1.0, "{hflip} is a probability in [0, 1], got {hflip_value:g}"),
            (0.0 <= self.re_prob <= 1.0, "{re_prob} is a probability in [0, 1], got {re_prob_value:g}"),
            (self.distill_weight >= 0, "{distill_weight} must be >= 0"),
            (self.drop_weight >= 0, "{drop_weight} must be >= 0"),
            (all(0 < k <= 1 for k in self.drop_keeps), "{drop_keeps} must be keep rates in (0, 1]"),
            (self.drop_weight == 0 or bool(self.drop_keeps), "{drop_keeps} needs at least one keep rate"),
            (self.drop_block is None or self.drop_block >= 0, "{drop_block} must be >= 0"),
            (self.head_lr_scale > 0, "{head_lr_scale} must be positive"),
            (self.distill_temp > 0, "{distill_temp} must be positive"),
            (self.rate_weight >= 0, "{rate_weight} must be >= 0"),
            (0 < self.heads_fraction <= 1, "{heads_fraction} must be in (0, 1]"),
            (self.sigma0 >= 0, "{sigma0} must be >= 0, got {sigma0_value:g}"),
            (0 < self.target_rate <= 1, "{target_rate} must be in (0, 1], got {target_rate_value:g}"),
            (0 < self.scale[0] <= self.scale[1] <= 1, "{scale} must be two numbers 0 < min <= max <= 1"),
            (bool(self.noise_blocks), "{noise_blocks} needs at least one block"),
            ((self.eval_prune_layers is None) == (self.eval_keep_rates is None),
             "{eval_prune_layers} and {eval_keep_rates} go together: give both, with one keep rate per layer"),
        ]  # fmt: skip
        for ok, template in checks:
            if not ok:
                raise SettingError(template, hflip_value=self.hflip, re_prob_value=self.re_prob,
                                   sigma0_value=self.sigma0, target_rate_value=self.target_rate)  # fmt: skip

    @property
    def heads_lr_scale(self) -> float:
        """The multiplier the heads' lr gets: only with full training (heads-only: --lr is the heads' lr)."""
        return self.head_lr_scale if self.train == "full" else 1.0

    def noise(self, blocks: tuple[int, ...] | None = None) -> NoiseConfig:
        """The run's noise (`blocks`: the noise blocks the model has, when fewer than `noise_blocks`)."""
        from tnt_cli.engine.noise import NoiseConfig

        return NoiseConfig.from_settings(self, blocks=blocks)

    def to_dict(self) -> dict:
        data = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names})


SETTINGS: tuple[Setting, ...] = declarations(TrainConfig)
# Settings whose None means the recipe's value (lr is per train mode and resolved on its own).
RECIPE_SETTINGS = tuple(s for s in SETTINGS if s.from_recipe and s.name != "lr")
# What must be equal for --resume to reproduce the uninterrupted run (checked in `tnt_cli.train.resume`).
TRAJECTORY = tuple(s.name for s in SETTINGS if s.resume)


def _choice(name: str, choices: tuple[str, ...], value: str) -> SettingError:
    return SettingError(f"{{{name}}} must be one of {{choices}}, got {{value!r}}", choices=", ".join(choices),
                        value=value)  # fmt: skip


def _check_finite_numbers(cfg: TrainConfig) -> None:
    """NaN and inf pass every `>=` check the wrong way (or raise OverflowError later): refuse them up front."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        for v in value if isinstance(value, tuple) else (value,):
            if isinstance(v, float) and not math.isfinite(v):
                raise SettingError(f"{{{f.name}}} must be a finite number, got {{value}}", value=v)


def _check_packages(cfg: TrainConfig) -> None:
    """Settings that need an optional package, or timm's optimizer registry: refused before any work."""
    from importlib.util import find_spec

    if cfg.tensorboard and find_spec("tensorboard") is None:
        raise SettingError("{tensorboard} needs the tensorboard package: pip install tensorboard")
    if cfg.opt != "adamw":  # the default needs no look-up (and keeps this module free of timm)
        from timm.optim import list_optimizers

        names = list_optimizers()
        if cfg.opt.lower().split("_")[-1] not in names:  # timm accepts lookahead_NAME too
            from difflib import get_close_matches

            close = get_close_matches(cfg.opt.lower(), names, n=3)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            raise SettingError("{opt} {value!r} is not a timm optimizer ({hint}timm.optim.list_optimizers() lists "
                               "them)", value=cfg.opt, hint=hint)  # fmt: skip


def recipe_settings(cfg: TrainConfig) -> dict:
    """The run's resolved recipe settings (the summary `Trainer.settings` records), as saved."""
    data = cfg.to_dict()
    return {s.name: data[s.name] for s in SETTINGS if s.summary}
