"""Typer parameters derived from declared settings (`tnt_cli.train.settings`), and the settings back from them.

A command built this way restates none of its settings: flag, short alias, help, panel, default and the parsing
of list values all come from the declaration.
"""

from __future__ import annotations

import inspect
from typing import Annotated, Any

import typer

from tnt_cli.train.settings import Setting, shown


def parameter(s: Setting) -> inspect.Parameter:
    """The typer parameter a declared setting yields."""
    cli_type = (str if s.default is not None else str | None) if s.parse is not None else s.type
    default = inspect.Parameter.empty if s.required else s.default
    if s.parse is not None and s.default is not None:
        default = shown(s.default)  # as the user would type it: 0.08,1
    if s.argument:
        info = typer.Argument(help=s.help_text(), show_default=False)
    else:
        names = [f"{s.flag}/--no-{s.flag.removeprefix('--')}"] if s.type == bool | None else [s.flag]  # or the recipe's
        names += [s.short] if s.short else []
        if negated(s):
            default = False
        shows = not s.required and s.default is not None
        info = typer.Option(*names, help=s.help_text(), rich_help_panel=s.panel, show_default=shows)
    return inspect.Parameter(parameter_name(s), inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[cli_type, info])  # fmt: skip


def negated(s: Setting) -> bool:
    """A switch that is on by default is given as the flag that turns it off (`progress`: --no-progress)."""
    return s.type is bool and s.default is True


def parameter_name(s: Setting) -> str:
    """The command parameter a setting arrives in (`no_progress` for --no-progress)."""
    return f"no_{s.name}" if negated(s) else s.name


def settings_from(settings: tuple[Setting, ...], values: dict[str, Any]) -> dict[str, Any]:
    """Setting name -> value from the command's parsed parameters (list values given as text are parsed)."""
    out = {}
    for s in settings:
        value = values[parameter_name(s)]
        if negated(s):
            value = not value
        elif s.parse is not None and isinstance(value, str):
            value = s.parse(value, s.name)
        out[s.name] = value
    return out
