"""Benchmark settings, declared once (`tnt benchmark`'s options come from here) and validated up front, so bad
input fails in one line before any model is built. Torch-free."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tnt_cli.errors import SettingError, TntError
from tnt_cli.methods.registry import REFERENCE, REGISTRY, alias_note, canonical, metavar, names
from tnt_cli.parsing import list_parts
from tnt_cli.settings import check_device, setting, shared

DTYPES = ("fp32", "bf16", "fp16")
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


def _batch_sizes(text: str, name: str) -> tuple[int, ...]:
    return parse_batch_sizes(text)


def _methods(text: str, name: str) -> tuple[str, ...]:
    return parse_methods(text)


def parse_methods(text: str) -> tuple[str, ...]:
    """'tnt,tome,cls-attn' -> ('tnt', 'tome', 'evit'): tnt always first (the peers are matched to it)."""
    timed = (REFERENCE, *PEERS)
    methods = [REFERENCE]
    for part in list_parts(text):
        method = canonical(part)
        if method not in timed:
            raise SettingError("unknown method {name!r} in {methods}: choose from {choices}{aliases}", name=part,
                               choices=", ".join(timed), aliases=alias_note(timed))  # fmt: skip
        if method not in methods:
            methods.append(method)
    return tuple(methods)


PANEL = "Measurement"
PEERS = tuple(name for name in names(reduces=True) if name != REFERENCE)  # timed at TNT's GMACs
# torch.compile cannot take these (the runner times them eager and says so)
NOT_COMPILABLE = {m.name: m.compile_blocker for m in REGISTRY if m.compile_blocker}


@dataclass(frozen=True)
class BenchConfig:
    """How to measure; each field is one setting's only declaration (`tnt benchmark`'s options come from here).
    `warmup`/`iters` of None pick device defaults (CPU rounds are slow, GPU ones are not)."""

    batch_sizes: tuple[int, ...] = setting(
        (1, 32, 128), help="Batch sizes to time, e.g. 1,32,128.", panel=PANEL, parse=_batch_sizes
    )
    dtype: str = setting("fp32", help="Autocast dtype.", panel=PANEL, choices=DTYPES)
    compile: bool = setting(False, help="torch.compile every variant (checked against eager logits).", panel=PANEL)
    channels_last: bool = setting(False, help="Channels-last model and input.", panel=PANEL)
    device: str = shared("device", panel=PANEL)
    warmup: int | None = setting(None, help="Untimed rounds per batch size (default: 2 on CPU, 10 on GPU).",
                                 panel=PANEL)  # fmt: skip
    iters: int | None = setting(None, help="Timed rounds per batch size (default: 10 on CPU, 50 on GPU).", panel=PANEL)
    threads: int | None = setting(None, help="CPU threads, fixed for the run (default: torch's).", panel=PANEL)
    tnt_dense: bool = setting(
        True, help="Do not time TNT at keep 1.0 (its overhead over timm).", panel=PANEL, flag="--no-tnt-dense"
    )
    seed: int = setting(0, help="Seed of the random input images.", panel=PANEL)
    methods: tuple[str, ...] = setting(
        (REFERENCE,), help="Methods to time, each at the GMACs closest to TNT's schedule (tnt is always timed)."
        + "".join(f" {m} runs eager under --compile." for m in NOT_COMPILABLE), panel=PANEL,
        parse=_methods, metavar=metavar((REFERENCE, *PEERS)).replace("|", ","),
    )  # fmt: skip

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", str(self.dtype).lower())
        object.__setattr__(self, "device", str(self.device).lower())
        if self.dtype not in DTYPES:
            raise SettingError(
                "{dtype} must be one of {choices}, got {value!r}", choices=", ".join(DTYPES), value=self.dtype
            )
        check_device(self.device)
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
        return 10 if device.startswith("cuda") else 2

    def iters_for(self, device: str) -> int:
        if self.iters is not None:
            return self.iters
        return 50 if device.startswith("cuda") else 10

    def to_dict(self) -> dict:
        data = asdict(self)
        data["batch_sizes"] = list(self.batch_sizes)
        data["methods"] = list(self.methods)
        return data
