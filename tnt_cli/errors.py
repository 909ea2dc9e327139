"""Errors users can act on. The CLI prints their message as one line and exits non-zero.

Library errors say what is wrong in neutral words (they are raised to Python API users too); the CLI's error
table (`tnt_cli.cli._errors`) adds the flag that fixes it and picks the exit code.
"""

from __future__ import annotations

import string
from collections.abc import Callable


class TntError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class SettingText(str):
    """Text naming settings as `{name}` placeholders (Python names), for messages that are not errors (warnings).

    As a str (what Python API users and JSON reports see) each setting is spelled as its parameter name; `render`
    spells it for another audience (the CLI: the flag, `--iters`). Other values are passed as keywords.
    """

    template: str
    values: dict[str, object]
    settings: tuple[str, ...]

    def __new__(cls, template: str, **values: object) -> SettingText:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
        settings = tuple(sorted(fields - set(values)))
        text = super().__new__(cls, template.format(**{name: name for name in settings}, **values))
        text.template, text.values, text.settings = template, values, settings
        return text

    def render(self, spell: Callable[[str], str]) -> str:
        """The text with each setting spelled by `spell` (a Python name -> how this audience writes it)."""
        return self.template.format(**{name: spell(name) for name in self.settings}, **self.values)


class SettingError(TntError):
    """A bad value for a named setting, worded so each audience sees its own spelling of the setting.

    The template names settings as `{name}` placeholders (Python names: `drop_weight`, `train`); other values are
    passed as keywords. `str()` (what Python API users see) spells a setting as its parameter name; the CLI's error
    table spells it as the flag (`--drop-weight`) via `render`. Example:
    `SettingError("{drop_weight} needs {train} full, got {value}", value="heads")`.
    """

    def __init__(self, template: str, **values: object) -> None:
        self.text = SettingText(template, **values)
        self.template, self.values, self.settings = template, values, self.text.settings
        super().__init__(str(self.text))

    def render(self, spell: Callable[[str], str]) -> str:
        """The message with each setting spelled by `spell` (a Python name -> how this audience writes it)."""
        return self.text.render(spell)


class ScheduleError(TntError):
    """A pruning schedule that cannot run on the given model."""


class Interrupted(TntError):
    """The user stopped the run (Ctrl-C / SIGTERM); whatever could be saved was saved. `signum` says which
    (the exit code follows it: 130 for Ctrl-C, 143 for SIGTERM)."""

    signum: int | None = None


class ClassMismatch(TntError):
    """The data's classes do not map onto the model's classes."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none): the reason, in one line."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
