"""How a setting is declared: once, as a field of a command's settings dataclass whose metadata says the rest.

A declaration carries the default (or "the recipe's"), the help text and panel, how the CLI spells it, its choices
(shown on the help screen; the library checks them), how the CLI parses a list value, whether it must match on
`--resume`, and whether it belongs to the run's recipe summary. From it are derived every command's options
(`tnt_cli.cli.declared`), the resume check, the summary `Trainer.settings` records and the flag names in error
messages; nothing restates a setting. `TrainConfig` (finetune), `Calibration` (calibrate) and `BenchConfig`
(benchmark) are made of them. Settings many commands take (MODEL, --data, --device, --seed, ...) are declared once
in `SHARED`; a command's dataclass takes one with `shared(name)`, a command whose settings are plain parameters
with `tnt_cli.cli.declared.option(name)`. Torch-free, so `tnt --help` stays instant.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, get_type_hints

from tnt_cli.recipes import DEFAULT_RECIPE, RECIPES

# Help panels of `tnt finetune`, in the order the help screen shows them.
RUN, NOISE, OPTIM, AUG, EVAL, SCHEDULE = "Run", "Noise", "Optimisation", "Augmentation", "Evaluation", "Schedule"


@dataclass(frozen=True)
class Setting:
    """One setting as declared (`setting(...)`), with its name and the CLI spelling resolved."""

    name: str
    type: Any  # the field's type, e.g. tuple[int, ...] | None
    default: Any  # dataclasses.MISSING: required
    help: str
    panel: str | None  # the help screen's panel (None: the command's plain "Options")
    flag: str  # how the CLI spells it: "--crop-scale", "MODEL" for the positional argument
    short: str | None = None  # a short alias, e.g. "-b"
    parse: Callable[[str, str], Any] | None = None  # (CLI text, setting name) -> value, for list values
    resume: bool = True  # must be equal for --resume to reproduce the uninterrupted run
    from_recipe: bool = False  # None (the default) means the recipe's value: a Recipe field of the same name
    summary: bool = False  # part of the run's recipe summary (Trainer.settings, the model directory)
    choices: tuple[str, ...] | None = None  # shown as [a|b|c] (the library checks the value, with its own words)
    metavar: str | None = None  # what the help screen shows for the value (default: the choices, or the type)

    @property
    def argument(self) -> bool:
        return not self.flag.startswith("-")

    @property
    def required(self) -> bool:
        return self.default is MISSING

    def help_text(self) -> str:
        """The help with the recipe's default spelled out for settings that take it."""
        return f"{self.help} {recipe_default(self.name)}" if self.from_recipe else self.help


def setting(
    default: Any = MISSING,
    *,
    help: str,
    panel: str | None = None,
    flag: str | None = None,
    short: str | None = None,
    parse: Callable[[str, str], Any] | None = None,
    resume: bool = True,
    from_recipe: bool = False,
    summary: bool = False,
    choices: tuple[str, ...] | None = None,
    metavar: str | None = None,
):
    """A dataclass field declaring one setting; `flag` defaults to `--` + the name with dashes.

    `from_recipe=True`: the default is None, read as "the recipe's" (a Recipe field of the same name).
    """
    if from_recipe:
        if default is not MISSING:
            raise ValueError("a setting that takes the recipe's value has no default of its own")
        default = None
    spec = {"help": help, "panel": panel, "flag": flag, "short": short, "parse": parse, "resume": resume,
            "from_recipe": from_recipe, "summary": summary, "choices": choices, "metavar": metavar}  # fmt: skip
    return field(default=default, metadata={"setting": spec})


def declarations(cls: type) -> tuple[Setting, ...]:
    """The settings `cls` declares, in field order (fields without a declaration are not settings)."""
    types = get_type_hints(cls)
    out = []
    for f in fields(cls):
        if "setting" not in f.metadata:
            continue
        spec = dict(f.metadata["setting"])
        spec["flag"] = spec["flag"] or "--" + f.name.replace("_", "-")
        out.append(Setting(name=f.name, type=types[f.name], default=f.default, **spec))
    return tuple(out)


# --------------------------------------------------------------------------- settings many commands take
DATA_HELP = (
    "fashion-mnist, cluttered-fashion-mnist, textured-fashion-mnist, a folder (train/ and val/ class folders, or "
    "class folders directly: imagenet/val), a .tar of class folders, or a timm source: hfds/ORG/NAME, wds/..., tfds/..."
)
DEVICES = ("auto", "cpu", "cuda", "cuda:N")

SHARED: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting("model", str, MISSING, "A timm name, hf-hub:org/name (or org/name@revision), a model directory, a "
                ".safetensors file or a .pth checkpoint.", None, "MODEL"),
        Setting("data", str, MISSING, DATA_HELP, None, "--data"),
        Setting("split", str, "val", "Dataset split to evaluate on.", None, "--split"),
        Setting("limit", int | None, None, "Evaluate a seeded subset of N images.", None, "--limit"),
        Setting("batch_size", int, 64, "Images per batch.", None, "--batch-size", "-b"),
        Setting("workers", int, 0, "Data-loading worker processes.", None, "--workers", "-w"),
        Setting("device", str, "auto", "auto (CUDA when available), cpu, cuda or cuda:N (the Nth GPU).", None,
                "--device"),
        Setting("seed", int, 0, "Seed of the --limit subset and of the random baseline's scores.", None, "--seed"),
        Setting("random_weights", bool, False, "Random backbone and heads, no download: for speed and compute work "
                "only.", None, "--random-weights"),
    )
}  # fmt: skip


def declared(name: str, **changes: Any) -> Setting:
    """The shared declaration `name`, with a command's own default, help or panel where it differs."""
    from dataclasses import replace

    return replace(SHARED[name], **changes)


def default_of(name: str) -> Any:
    """The shared setting's default (library functions take it as theirs, so it is written once)."""
    return SHARED[name].default


def shared(name: str, **changes: Any):
    """The dataclass field of the shared setting `name` (see `declared`)."""
    s = declared(name, **changes)
    return setting(s.default, help=s.help, panel=s.panel, flag=s.flag, short=s.short, parse=s.parse,
                   resume=s.resume, choices=s.choices, metavar=s.metavar)  # fmt: skip


def check_device(device: str) -> str:
    """auto, cpu, cuda or cuda:N, checked without torch (so bad input fails before anything loads)."""
    import re

    from tnt_cli.errors import SettingError

    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(device)):
        raise SettingError("{device} must be one of {choices}, got {value!r}", choices=", ".join(DEVICES), value=device)
    return str(device)


def check_positive(value: int | None, setting: str) -> None:
    """Refuse a count that must be positive (`setting` is its Python name: `limit`, `batch_size`)."""
    from tnt_cli.errors import SettingError

    if value is not None and value <= 0:
        raise SettingError(f"{{{setting}}} must be positive, got {{value}}", value=value)


def recipe_default(name: str) -> str:
    """'Default: the recipe's (1; official: 0.02).': the default recipe's value, and where other recipes differ."""
    default = getattr(RECIPES[DEFAULT_RECIPE], name)
    others = [f"{key}: {shown(getattr(r, name))}" for key, r in RECIPES.items()
              if key != DEFAULT_RECIPE and getattr(r, name) != default]  # fmt: skip
    return f"Default: the recipe's ({'; '.join([shown(default), *others])})."


def shown(value: Any) -> str:
    """A setting's value as the help screen and the CLI write it: 0.3, 0,1,2,3, on, heads 0.012."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple | list):
        return ",".join(shown(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{key} {shown(v)}" for key, v in value.items())
    return str(value)
