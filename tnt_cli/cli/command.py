"""Help screens for people: on/off flags are shown as flags (`--json`), not as options taking a `<bool>`."""

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
    """Every `tnt` command: typer's command with flag-aware help."""

    def format_help(self, ctx, formatter) -> None:
        hide_flag_types(self.get_params(ctx))
        super().format_help(ctx, formatter)
