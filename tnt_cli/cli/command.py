"""Help screens for people: on/off flags shown as flags (`--json`, not an option taking a `<bool>`), arguments named
as the help text names them (`MODEL`, not typer's `{model}`), and prose that wraps at the terminal's width (a
docstring's line breaks are not kept; an indented paragraph, an example command, is kept as written)."""

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
    """Every `tnt` command: typer's command with flag-aware help."""

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
