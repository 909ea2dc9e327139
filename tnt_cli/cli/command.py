"""Every `tnt` command's click class: help screens for people (on/off flags shown as flags, `--json`, not an option
taking a `<bool>`; arguments named as the help text names them, `MODEL`, not typer's `{model}`; prose that wraps at
the terminal's width: a docstring's line breaks are not kept, an indented paragraph, an example command, is kept as
written), and whole numbers that fit in 64 bits (click reads any size)."""

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


def reflow(text: str | None) -> str | None:
    """Each prose paragraph of a docstring as one line (rich wraps it); indented paragraphs (examples) as written."""
    if not text:
        return text
    import inspect

    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(p if p[:1].isspace() else " ".join(p.split("\n")) for p in paragraphs)


def usage_name(param: Any) -> str:
    """An argument in the usage line: MODEL, [MODEL] when optional, MODEL... when it takes several."""
    name = param.metavar or param.name.upper()
    name = name if param.required else f"[{name}]"
    return name + ("..." if param.nargs != 1 else "")


def hide_flag_types(params: Iterable[Any]) -> None:
    """A flag takes no value, so typer's rich help showing `<bool>` after it reads as if it needed one."""
    for param in params:
        if getattr(param, "is_flag", False) and not getattr(param, "count", False):
            param.metavar = ""  # typer prints the metavar, when set, instead of the type


class TntCommand(TyperCommand):
    """Every `tnt` command: typer's command with flag-aware help and bounded whole numbers."""

    def format_help(self, ctx, formatter) -> None:
        hide_flag_types(self.get_params(ctx))
        self.help = reflow(self.help)
        super().format_help(ctx, formatter)

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            is_argument = getattr(param, "param_type_name", "") == "argument"
            pieces += [usage_name(param)] if is_argument else param.get_usage_pieces(ctx)
        return pieces

    def invoke(self, ctx):
        check_whole_numbers(self.get_params(ctx), ctx.params)
        return super().invoke(ctx)


# Parameters that take a seed (the shared --seed, --sim-seed): any whole number torch accepts, up to 2**64 - 1
# (`tnt_cli.parsing.check_seed`, which names the setting, so the error line names its flag).
SEED_PARAMETERS = frozenset({"seed", "sim_seed"})


def check_whole_numbers(params: Iterable[Any], values: dict[str, Any]) -> None:
    """A whole number given to any option must fit in a signed 64-bit integer (what Python's sizes, slices and
    torch take), a seed in torch's seed range: 10**30 is one `error:` line naming the flag, not an OverflowError
    deep inside the run. One check for every command, whichever way its options are declared."""
    from tnt_cli.errors import TntError
    from tnt_cli.parsing import check_seed

    limit = (1 << 63) - 1
    for param in params:
        value = values.get(param.name)
        if not isinstance(value, int) or isinstance(value, bool):
            continue
        if param.name in SEED_PARAMETERS:
            check_seed(value, param.name)
        elif not -limit - 1 <= value <= limit:
            name = param.opts[0] if getattr(param, "opts", None) else param.name
            raise TntError(f"{name} must be a whole number that fits in 64 bits (at most {limit}), got {value}")
