"""Text from outside tnt (paths, file and class names, labels) shown as what it is, on a terminal and in files.

Such text is data, never instructions:
- rich would read `[...]` as markup (`out[x]` printed as `out`) and `:name:` as an emoji code: tnt's consoles
  (`console`) turn both off, so nothing a user names is ever styled, dropped or replaced;
- a file name may hold terminal control sequences (ESC, bell, backspace, bidi overrides) that recolour, retitle
  or rewrite the screen: `printable` shows them as escapes (`\\x1b`) instead;
- a name that is not valid UTF-8 arrives from the OS as lone surrogates (Python's surrogateescape): it cannot be
  encoded, so printing or saving it raised UnicodeEncodeError. `readable` writes each such byte as `\\xNN`.

tnt's own styling (a bold cell, a coloured warning) goes through `styled`, which escapes the text it styles.
Figures follow the same rule: matplotlib reads `$...$` as mathtext, so a path or class name holding `$` was drawn
wrongly or raised after all the work was done: text from outside goes into a figure `printable` (matplotlib's
and Pillow's fonts cannot encode an undecodable byte's stand-in) and with mathtext off (`LITERAL`).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

# C0 controls except tab and newline, DEL, C1 controls, and the bidirectional overrides and isolates that reorder
# what a terminal shows (the "Trojan Source" characters).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_SURROGATE = re.compile("[\udc80-\udcff]")  # surrogateescape's stand-ins for undecodable bytes
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape(match: re.Match) -> str:
    char = match.group()
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def readable(text: Any) -> str:
    """`text` as a str that encodes as UTF-8: each byte of a name that is not valid UTF-8 shown as `\\xNN`."""
    text = str(text)
    if not _LONE_SURROGATE.search(text):
        return text
    text = _SURROGATE.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", text)
    return _LONE_SURROGATE.sub(_escape, text)


def printable(text: Any) -> str:
    """`text` safe to write to a terminal: `readable`, and control characters shown as escapes (tab and newline
    kept: they are tnt's own layout)."""
    return _CONTROL.sub(_escape, readable(text))


def styled(text: Any, style: str) -> Text:
    """tnt's own emphasis around untrusted text: the text escaped (`printable`), then styled; never markup."""
    from rich.text import Text

    return Text(printable(text), style=style)


def console(*, stderr: bool = False, **options: Any) -> Console:
    """A rich Console for tnt's output: no markup, no emoji codes, no highlighting, every string `printable`."""
    return _safe_console_class()(stderr=stderr, markup=False, emoji=False, highlight=False, **options)


@lru_cache(maxsize=1)
def _safe_console_class() -> type[Console]:
    """Defined on first use: rich is imported only by commands that print through it."""
    from rich.console import Console

    class SafeConsole(Console):
        """Every string it renders (printed, or a table's cell, header or title) is `printable` and never markup."""

        def render_str(self, text: str, **kwargs: Any) -> Text:
            kwargs.update(markup=False, emoji=False)
            return super().render_str(printable(text), **kwargs)

    return SafeConsole


# matplotlib Text keywords that draw a string as written (no `$...$` mathtext): `ax.set_title(t, **LITERAL)`
LITERAL = {"parse_math": False}
