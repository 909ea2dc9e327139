"""Benchmark settings, validated up front so bad input fails in one line before any model is built."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tnt_cli.errors import SettingError, TntError
from tnt_cli.methods.registry import REFERENCE
from tnt_cli.parsing import list_parts

DTYPES = ("fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
MAX_BATCH = 65536
BATCH_SIZES_FORMAT = "{batch_sizes} takes whole numbers >= 1 separated by commas, got {text!r}"


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """'1,32,128' -> (1, 32, 128); order kept, duplicates dropped, each a whole number >= 1."""
    parts = list_parts(text)
    if not parts:
        raise SettingError(BATCH_SIZES_FORMAT, text=text)
    sizes: list[int] = []
    for part in parts:
        try:
            size = int(part)
        except ValueError:
            raise SettingError(BATCH_SIZES_FORMAT, text=text) from None
        if not 1 <= size <= MAX_BATCH:
            raise TntError(f"batch size {size} is out of range: use 1 to {MAX_BATCH}")
        if size not in sizes:
            sizes.append(size)
    return tuple(sizes)


@dataclass(frozen=True)
class BenchConfig:
    """How to measure. `warmup`/`iters` of None pick device defaults (CPU rounds are slow, GPU ones are not)."""

    batch_sizes: tuple[int, ...] = (1, 32, 128)
    dtype: str = "fp32"
    compile: bool = False
    channels_last: bool = False
    device: str = "auto"
    warmup: int | None = None
    iters: int | None = None
    threads: int | None = None
    tnt_dense: bool = True  # also time TNT at keep 1.0 (the heads' overhead bar)
    seed: int = 0
    methods: tuple[str, ...] = (REFERENCE,)  # and the peers timed at TNT's GMACs

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise SettingError(
                "{dtype} must be one of {choices}, got {value!r}", choices=", ".join(DTYPES), value=self.dtype
            )
        if self.device not in DEVICES:
            raise SettingError(
                "{device} must be one of {choices}, got {value!r}", choices=", ".join(DEVICES), value=self.device
            )
        if not self.batch_sizes or any(int(b) < 1 for b in self.batch_sizes):
            raise TntError(f"batch sizes must be whole numbers >= 1, got {list(self.batch_sizes)}")
        if self.warmup is not None and self.warmup < 0:
            raise SettingError("{warmup} must be >= 0, got {value}", value=self.warmup)
        if self.iters is not None and self.iters < 1:
            raise SettingError("{iters} must be >= 1, got {value}", value=self.iters)
        if self.threads is not None and self.threads < 1:
            raise SettingError("{threads} must be >= 1, got {value}", value=self.threads)

    def warmup_for(self, device: str) -> int:
        if self.warmup is not None:
            return self.warmup
        return 10 if device == "cuda" else 2

    def iters_for(self, device: str) -> int:
        if self.iters is not None:
            return self.iters
        return 50 if device == "cuda" else 10

    def to_dict(self) -> dict:
        data = asdict(self)
        data["batch_sizes"] = list(self.batch_sizes)
        data["methods"] = list(self.methods)
        return data
