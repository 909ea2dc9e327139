"""Fine-tuning settings and their defaults, in one place (the CLI reads its defaults from here).

Fields left None are filled from the named recipe (`tnt_cli.recipes`, `--recipe`), then from the engine's
`NoiseConfig()`; anything given explicitly wins. After `__post_init__` every such field holds its resolved value,
so the saved config says exactly what ran. This module does not import torch, so `tnt --help` stays instant.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING

from tnt_cli.errors import TntError
from tnt_cli.method_names import REDUCING_METHODS, canonical
from tnt_cli.recipes import DEFAULT_RECIPE, get_recipe

if TYPE_CHECKING:
    from tnt_cli.engine.noise import NoiseConfig

NOISE_FIELDS = {"noise_blocks": "blocks", "sigma0": "sigma0", "noise_variant": "variant", "relevance": "form",
                "target_rate": "target_rate"}  # fmt: skip

TRAIN_MODES = ("heads", "full")
# Methods `tnt finetune --method` trains (the order the CLI lists them); `cls-attn` is accepted for `evit`.
METHODS = REDUCING_METHODS
REDUCERS = ("drop", "merge", "fuse")
NOISE_TRAINS = ("all", "heads")
AMP_MODES = ("auto", "bf16", "fp16", "off")
# Reference batch for lr scaling: lr = base lr * global batch / 512.
LR_REFERENCE_BATCH = 512
# Distillation weight when --distill is given but the recipe has none. The distillation term is ADDED to the
# task loss (loss = task + w * KL), as in the study, not mixed (1 - w) * task + w * KL.
DEFAULT_DISTILL_WEIGHT = 1.0


@dataclass
class TrainConfig:
    """Everything that shapes a fine-tuning run. Fields in TRAJECTORY must match on --resume."""

    model: str
    data: str
    out: str
    recipe: str = DEFAULT_RECIPE
    # what is fine-tuned: TNT, or a baseline fine-tuned the same way with its own reducer in the pruning pass
    method: str = "tnt"
    reducer: str = "drop"  # tnt: what happens to the tokens TNT does not keep (drop | merge | fuse)
    # tnt: what the noisy pass trains: "all" (heads and backbone) or "heads" (the backbone learns only from the
    # clean passes, so it is never fitted to noise it will not see when deployed)
    noise_trains: str = "all"
    train: str | None = None  # None: the recipe's
    # noise (None: the recipe's, else the engine's NoiseConfig default)
    noise_blocks: tuple[int, ...] | None = None
    sigma0: float | None = None
    noise_variant: str | None = None
    relevance: str | None = None
    target_rate: float | None = None
    rate_weight: float | None = None
    # distillation to the frozen dense model: loss = task + distill_weight * KL (None: the recipe's)
    distill: bool | None = None
    distill_weight: float | None = None
    distill_temp: float = 1.0
    # hard-pruning pass (None: the recipe's): loss += drop_weight * loss of the pruned logits at a keep rate drawn
    # from drop_keeps after block drop_block (None: chosen by the trainer from the model, see default_drop_block)
    drop_weight: float | None = None
    drop_keeps: tuple[float, ...] | None = None
    drop_block: int | None = None
    head_lr_scale: float | None = None  # full training: heads lr = lr * this (None: the recipe's)
    # optimisation
    epochs: int = 10
    max_steps: int | None = None
    batch_size: int = 64
    accum: int = 1
    lr: float | None = None  # base lr at global batch 512; None: the recipe's for the train mode
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    clip_grad: float | None = None
    amp: str = "auto"
    compile: bool = False
    seed: int = 0
    # data and augmentation
    split: str = "train"
    val_split: str = "val"
    limit: int | None = None
    scale: tuple[float, float] = (0.08, 1.0)
    hflip: float = 0.5
    auto_augment: str | None = None
    re_prob: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    smoothing: float = 0.1
    new_classes: bool = False  # replace the classifier by one for the data's classes (else: map them by name)
    # not part of the trajectory
    workers: int = 0
    device: str = "auto"
    eval_limit: int | None = None
    eval_batch_size: int | None = None
    eval_prune_layers: tuple[int, ...] | None = None
    eval_keep_rates: tuple[float, ...] | None = None
    log_every: int = 10
    progress: bool = True
    keep_checkpoint: bool = False
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.notes: list[str] = []  # resolution remarks for the run's log (not a field: not saved)
        self.method = canonical(self.method)
        self._resolve()
        self.noise_blocks = tuple(sorted({int(b) for b in self.noise_blocks}))
        self.drop_keeps = tuple(float(k) for k in self.drop_keeps)
        self.scale = tuple(float(s) for s in self.scale)  # type: ignore[assignment]
        if self.drop_weight > 0 and self.train == "heads":
            raise TntError(
                "--drop-weight needs --train full: the hard-pruning pass trains only the backbone (top-k gives the "
                "heads no gradient), which heads-only training freezes; use --drop-weight 0"
            )
        if self.method not in METHODS:
            raise TntError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.method != "tnt" and self.train != "full":
            raise TntError(
                f"--method {self.method} fine-tunes the backbone (its reducer has no heads): use --train full"
            )
        if self.method != "tnt" and self.drop_weight <= 0:
            raise TntError(f"--method {self.method} trains through its pruning pass: --drop-weight must be > 0")
        if self.noise_trains not in NOISE_TRAINS:
            raise TntError(f"--noise-trains must be one of {', '.join(NOISE_TRAINS)}, got {self.noise_trains!r}")
        if self.reducer not in REDUCERS:
            raise TntError(f"--reducer must be one of {', '.join(REDUCERS)}, got {self.reducer!r}")
        if self.reducer != "drop" and self.method != "tnt":
            raise TntError(f"--reducer {self.reducer} is TNT's; --method {self.method} has its own reducer")
        if self.amp not in AMP_MODES:
            raise TntError(f"--amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}")
        _check_finite_numbers(self)
        checks = [
            (self.epochs >= 1, "--epochs must be at least 1"),
            (self.max_steps is None or self.max_steps >= 1, "--max-steps must be at least 1"),
            (self.batch_size >= 1, "--batch-size must be at least 1"),
            (self.accum >= 1, "--accum must be at least 1"),
            (self.lr is None or self.lr > 0, "--lr must be positive"),
            (self.min_lr >= 0, "--min-lr must be >= 0"),
            (self.weight_decay >= 0, "--weight-decay must be >= 0"),
            (self.warmup_epochs >= 0, "--warmup-epochs must be >= 0"),
            (self.clip_grad is None or self.clip_grad > 0, "--clip-grad must be positive"),
            (0.0 <= self.smoothing < 1.0, "--smoothing must be in [0, 1)"),
            (self.mixup >= 0 and self.cutmix >= 0, "--mixup and --cutmix must be >= 0"),
            (0.0 <= self.hflip <= 1.0, f"--hflip is a probability in [0, 1], got {self.hflip:g}"),
            (0.0 <= self.re_prob <= 1.0, f"--re-prob is a probability in [0, 1], got {self.re_prob:g}"),
            (self.distill_weight >= 0, "--distill-weight must be >= 0"),
            (self.drop_weight >= 0, "--drop-weight must be >= 0"),
            (all(0 < k <= 1 for k in self.drop_keeps), "--drop-keeps must be keep rates in (0, 1]"),
            (self.drop_weight == 0 or bool(self.drop_keeps), "--drop-keeps needs at least one keep rate"),
            (self.drop_block is None or self.drop_block >= 0, "--drop-block must be >= 0"),
            (self.head_lr_scale > 0, "--head-lr-scale must be positive"),
            (self.distill_temp > 0, "--distill-temp must be positive"),
            (self.rate_weight >= 0, "--rate-weight must be >= 0"),
            (0 < self.scale[0] <= self.scale[1] <= 1, "--crop-scale must be two numbers 0 < min <= max <= 1"),
            (bool(self.noise_blocks), "--noise-blocks needs at least one block"),
        ]
        for ok, message in checks:
            if not ok:
                raise TntError(message)
        try:
            self.noise()
        except ValueError as exc:
            raise TntError(str(exc)) from None

    def _resolve(self) -> None:
        """Fill every None field from the recipe (then the engine); explicit values are kept."""
        from tnt_cli.engine.noise import NoiseConfig

        recipe = get_recipe(self.recipe)
        if self.train is None:
            self.train = recipe.train
        if self.train not in TRAIN_MODES:
            raise TntError(f"--train must be one of {', '.join(TRAIN_MODES)}, got {self.train!r}")
        engine = NoiseConfig()
        from_recipe = {"noise_blocks": recipe.noise_blocks, "sigma0": recipe.sigma0, "noise_variant": recipe.variant,
                       "relevance": recipe.relevance, "target_rate": recipe.target_rate}  # fmt: skip
        for name, attr in NOISE_FIELDS.items():
            if getattr(self, name) is None:
                value = from_recipe[name]
                setattr(self, name, value if value is not None else getattr(engine, attr))
        if self.rate_weight is None:
            self.rate_weight = recipe.rate_weight
        if self.distill is None:
            self.distill = recipe.distill > 0
        if self.distill_weight is None:
            self.distill_weight = recipe.distill if recipe.distill > 0 else DEFAULT_DISTILL_WEIGHT
        if self.drop_keeps is None:
            self.drop_keeps = recipe.drop_keeps
        if self.drop_weight is None:
            # heads-only training asked for explicitly: the recipe's pruning pass would train nothing, so it is off
            self.drop_weight = recipe.drop_weight if self.train == "full" else 0.0
            if recipe.drop_weight > 0 and self.train != "full":
                self.notes.append(f"--train heads: the {self.recipe} recipe's hard-pruning pass is off (it trains "
                                  "only the backbone)")  # fmt: skip
        if self.head_lr_scale is None:
            self.head_lr_scale = recipe.head_lr_scale
        if self.lr is None:
            self.lr = recipe.lr[self.train]

    @property
    def base_lr(self) -> float:
        return self.lr

    @property
    def heads_lr_scale(self) -> float:
        """The multiplier the heads' lr gets: only with full training (heads-only: --lr is the heads' lr)."""
        return self.head_lr_scale if self.train == "full" else 1.0

    def noise(self) -> NoiseConfig:
        from tnt_cli.engine.noise import NoiseConfig

        return NoiseConfig(
            blocks=self.noise_blocks,
            sigma0=self.sigma0,
            variant=self.noise_variant,
            form=self.relevance,
            target_rate=self.target_rate,
        )

    def to_dict(self) -> dict:
        data = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names})


def _check_finite_numbers(cfg: TrainConfig) -> None:
    """NaN and inf pass every `>=` check the wrong way (or raise OverflowError later): refuse them up front."""
    import math

    for f in fields(cfg):
        value = getattr(cfg, f.name)
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                flag = {"scale": "crop-scale", "auto_augment": "randaugment"}.get(f.name, f.name.replace("_", "-"))
                raise TntError(f"--{flag} must be a finite number, got {v}")


# What must be equal for --resume to reproduce the uninterrupted run.
TRAJECTORY = (
    "model", "data", "recipe", "method", "reducer", "noise_trains", "train", "noise_blocks", "sigma0", "noise_variant",
    "relevance",
    "target_rate",
    "rate_weight", "distill", "distill_weight", "distill_temp", "drop_weight", "drop_keeps", "drop_block",
    "head_lr_scale", "epochs", "max_steps", "batch_size", "accum",
    "lr", "min_lr", "weight_decay", "warmup_epochs", "clip_grad", "amp", "seed", "split", "limit", "scale",
    "hflip", "auto_augment", "re_prob", "mixup", "cutmix", "smoothing", "new_classes",
)  # fmt: skip


def resume_mismatch(saved: dict, current: TrainConfig) -> str | None:
    """The first trajectory setting that differs from the checkpoint's, as a message; None when all match."""
    now = current.to_dict()
    for key in TRAJECTORY:
        if key in ("model", "data") and key in saved and _same_place(saved[key], now.get(key)):
            continue
        if key in saved and saved[key] != now.get(key):
            flag = "MODEL" if key == "model" else f"--{key.replace('_', '-')}"
            return f"{flag} is {now.get(key)!r} but the checkpoint was made with {saved[key]!r}"
    return None


def _same_place(a, b) -> bool:
    """MODEL / DATA given two ways for one path (`./base` and `base`, relative and absolute) are the same."""
    from pathlib import Path

    if not isinstance(a, str) or not isinstance(b, str):
        return False
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()
