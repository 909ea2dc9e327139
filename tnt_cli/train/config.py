"""Fine-tuning settings and their defaults, in one place (the CLI reads its defaults from here).

Noise defaults come from the engine's `NoiseConfig()` (fields left None here are filled from it), so the recipe
the study picks is changed in one spot. This module does not import torch, so `tnt --help` stays instant.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING

from tnt_cli.errors import TntError

if TYPE_CHECKING:
    from tnt_cli.engine.noise import NoiseConfig

NOISE_FIELDS = {"noise_blocks": "blocks", "sigma0": "sigma0", "noise_variant": "variant", "relevance": "form",
                "target_rate": "target_rate"}  # fmt: skip

TRAIN_MODES = ("heads", "full")
AMP_MODES = ("auto", "bf16", "fp16", "off")
# Reference batch for lr scaling: lr = base lr * global batch / 512.
LR_REFERENCE_BATCH = 512
# Base lr per mode (at global batch 512): the heads are new linear layers trained from scratch and tolerate
# a large rate; full training uses DeiT's 5e-4.
DEFAULT_LR = {"heads": 2e-3, "full": 5e-4}
DEFAULT_RATE_WEIGHT = 1.0


@dataclass
class TrainConfig:
    """Everything that shapes a fine-tuning run. Fields in TRAJECTORY must match on --resume."""

    model: str
    data: str
    out: str
    train: str = "heads"
    # noise (None: the engine's NoiseConfig default)
    noise_blocks: tuple[int, ...] | None = None
    sigma0: float | None = None
    noise_variant: str | None = None
    relevance: str | None = None
    target_rate: float | None = None
    rate_weight: float = DEFAULT_RATE_WEIGHT
    # distillation to the frozen dense model
    distill: bool = False
    distill_weight: float = 0.5
    distill_temp: float = 1.0
    # optimisation
    epochs: int = 10
    max_steps: int | None = None
    batch_size: int = 64
    accum: int = 1
    lr: float | None = None  # base lr at global batch 512; None: DEFAULT_LR[train]
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
        from tnt_cli.engine.noise import NoiseConfig

        engine = NoiseConfig()
        for name, attr in NOISE_FIELDS.items():
            if getattr(self, name) is None:
                setattr(self, name, getattr(engine, attr))
        self.noise_blocks = tuple(sorted({int(b) for b in self.noise_blocks}))
        self.scale = tuple(float(s) for s in self.scale)  # type: ignore[assignment]
        if self.train not in TRAIN_MODES:
            raise TntError(f"--train must be one of {', '.join(TRAIN_MODES)}, got {self.train!r}")
        if self.amp not in AMP_MODES:
            raise TntError(f"--amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}")
        checks = [
            (self.epochs >= 1, "--epochs must be at least 1"),
            (self.max_steps is None or self.max_steps >= 1, "--max-steps must be at least 1"),
            (self.batch_size >= 1, "--batch-size must be at least 1"),
            (self.accum >= 1, "--accum must be at least 1"),
            (self.lr is None or self.lr > 0, "--lr must be positive"),
            (self.weight_decay >= 0, "--weight-decay must be >= 0"),
            (self.warmup_epochs >= 0, "--warmup-epochs must be >= 0"),
            (self.clip_grad is None or self.clip_grad > 0, "--clip-grad must be positive"),
            (0.0 <= self.smoothing < 1.0, "--smoothing must be in [0, 1)"),
            (self.mixup >= 0 and self.cutmix >= 0, "--mixup and --cutmix must be >= 0"),
            (0.0 <= self.distill_weight <= 1.0, "--distill-weight must be in [0, 1]"),
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

    @property
    def base_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.train]

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


# What must be equal for --resume to reproduce the uninterrupted run.
TRAJECTORY = (
    "model", "data", "train", "noise_blocks", "sigma0", "noise_variant", "relevance", "target_rate",
    "rate_weight", "distill", "distill_weight", "distill_temp", "epochs", "max_steps", "batch_size", "accum",
    "lr", "min_lr", "weight_decay", "warmup_epochs", "clip_grad", "amp", "seed", "split", "limit", "scale",
    "hflip", "auto_augment", "re_prob", "mixup", "cutmix", "smoothing",
)  # fmt: skip


def resume_mismatch(saved: dict, current: TrainConfig) -> str | None:
    """The first trajectory setting that differs from the checkpoint's, as a message; None when all match."""
    now = current.to_dict()
    for key in TRAJECTORY:
        if key in saved and saved[key] != now.get(key):
            flag = "MODEL" if key == "model" else f"--{key.replace('_', '-')}"
            return f"{flag} is {now.get(key)!r} but the checkpoint was made with {saved[key]!r}"
    return None
