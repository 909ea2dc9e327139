"""Typer parameters derived from declared settings (`tnt_cli.settings`), the settings back from them, and
the command line that gives a set of settings (`argv_from`, for printing reproducible commands).

A command built this way restates none of its settings: flag, short alias, help, panel, default, choices and the
parsing of list values all come from the declaration. `signature(...)` makes a command's whole signature from
its settings dataclass (finetune, calibrate, benchmark); `option(name)` / `default(name)` give one shared
setting to a command whose settings are plain parameters.
"""

from __future__ import annotations

import inspect
from typing import Annotated, Any

import typer

from tnt_cli.settings import SHARED, Setting, declared, shown


def parameter(s: Setting) -> inspect.Parameter:
    """The typer parameter a declared setting yields."""
    cli_type = (str if s.default is not None else str | None) if s.parse is not None else s.type
    default = inspect.Parameter.empty if s.required else s.default
    if s.parse is not None and s.default is not None:
        default = shown(s.default)  # as the user would type it: 0.08,1
    if negated(s):
        default = False
    return inspect.Parameter(parameter_name(s), inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[cli_type, _info(s)])  # fmt: skip


def _info(s: Setting):
    metavar = s.metavar or ("[" + "|".join(s.choices) + "]" if s.choices else None)
    if s.argument:
        return typer.Argument(help=s.help_text(), show_default=False, metavar=s.flag)
    # a switch whose default is the recipe's can be turned either way: --distill / --no-distill
    names = [f"{s.flag}/{off_flag(s)}"] if s.type == bool | None else [s.flag]
    names += [s.short] if s.short else []
    shows = not s.required and s.default is not None
    return typer.Option(*names, help=s.help_text(), rich_help_panel=s.panel, show_default=shows, metavar=metavar)


def option(name: str, **changes: Any) -> Any:
    """`Annotated[type, typer.Option(...)]` for the shared setting `name` (see `tnt_cli.settings.declared`)."""
    return parameter(declared(name, **changes)).annotation


def default(name: str) -> Any:
    """The shared setting's default, as the command's parameter takes it."""
    return parameter(SHARED[name]).default


def signature(*groups: tuple[Setting, ...] | dict[str, tuple[Any, Any]]) -> inspect.Signature:
    """A command's signature: its declared settings (tuples of Settings) and its run flags ({name: (annotation,
    default)}: how to run, not what runs), in the order given."""
    parameters: list[inspect.Parameter] = []
    for group in groups:
        if isinstance(group, dict):
            parameters += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=value, annotation=kind)
                           for name, (kind, value) in group.items()]  # fmt: skip
        else:
            parameters += [parameter(s) for s in group]
    return inspect.Signature(parameters)


def negated(s: Setting) -> bool:
    """A switch that is on by default is given as the flag that turns it off (`progress`: --no-progress)."""
    return s.type is bool and s.default is True


def off_flag(s: Setting) -> str:
    """The flag that turns a recipe switch off: --no-distill."""
    return "--no-" + s.flag.removeprefix("--")


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


def argv_from(settings: tuple[Setting, ...], values: dict[str, Any]) -> list[str]:
    """The reverse of `settings_from`: the command-line words that give `values` (setting name -> value), the
    argument first. None is left out (the default, or the recipe's value); a switch is its flag, or its --no- form
    where the recipe's default may be on; lists are joined with commas; numbers are written exactly."""
    declared = {s.name: s for s in settings}
    arguments: list[str] = []
    options: list[str] = []
    for name, value in values.items():
        s = declared[name]
        if value is None:
            continue
        if s.argument:
            arguments.append(_word(value))
        elif s.type is bool or s.type == bool | None:
            options += _switch(s, bool(value))
        else:
            options += [s.flag, _word(value)]
    return arguments + options


def _switch(s: Setting, on: bool) -> list[str]:
    if negated(s):  # --no-progress: given only to turn it off
        return [] if on else [s.flag]
    if s.type == bool | None:  # the recipe's default may be either: say which
        return [s.flag if on else off_flag(s)]
    return [s.flag] if on else []  # off by default: off is not giving it


def _word(value: Any) -> str:
    """A value as the CLI parses it back: 0.03, 0.6,1, and a float `shown` would round written in full."""
    if isinstance(value, tuple | list):
        return ",".join(_word(v) for v in value)
    if isinstance(value, float) and float(shown(value)) != value:
        return repr(value)
    return shown(value)
