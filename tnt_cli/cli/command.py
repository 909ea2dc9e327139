"""Every `tnt` command's click class: help screens for people (on/off flags shown as flags, `--json`, not as
options taking a `<bool>`), and whole numbers that fit in 64 bits (click reads any size)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from typer.core import TyperCommand

# The click that runs typer's commands, with its own exceptions and context stack. typer >= 0.2x vendors a
# copy (typer._click); the older typers that pyproject still allows (>= 0.12) run on click itself.
try:
    from typer import _click as running_click
except ImportError:  # pragma: no cover - typer < 0.2x
    import click as running_click  # noqa: F401 - used by app.py and targets.py


def hide_flag_types(params: Iterable[Any]) -> None:
    """A flag takes no value, so typer's rich help showing `<bool>` after it reads as if it needed one."""
    for param in params:
        if getattr(param, "is_flag", False) and not getattr(param, "count", False):
            param.metavar = ""  # typer prints the metavar, when set, instead of the type


class TntCommand(TyperCommand):
    """Every `tnt` command: typer's command with flag-aware help and bounded whole numbers."""

    def format_help(self, ctx, formatter) -> None:
        hide_flag_types(self.get_params(ctx))
        super().format_help(ctx, formatter)

    def invoke(self, ctx):
        check_whole_numbers(self.get_params(ctx), ctx.params)
        return super().invoke(ctx)


# Options that take a seed: checked by their own callback (`tnt_cli.parsing.check_seed`, up to 2**64 - 1).
SEED_OPTIONS = frozenset({"seed", "sim_seed"})


def check_whole_numbers(params: Iterable[Any], values: dict[str, Any]) -> None:
    """A whole number given to any option must fit in a signed 64-bit integer (what Python's sizes, slices and
    torch take): 10**30 is one `error:` line naming the flag, not an OverflowError deep inside the run."""
    from tnt_cli.errors import TntError

    limit = (1 << 63) - 1
    for param in params:
        value = values.get(param.name)
        if param.name in SEED_OPTIONS or not isinstance(value, int) or isinstance(value, bool):
            continue
        if not -limit - 1 <= value <= limit:
            name = param.opts[0] if getattr(param, "opts", None) else param.name
            raise TntError(f"{name} must be a whole number that fits in 64 bits (at most {limit}), got {value}")
