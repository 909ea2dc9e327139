"""Progress a person can see, always on stderr: a live bar on a terminal, plain periodic lines otherwise.

A rich bar redraws itself in place, which is right for a terminal and useless in a log: piped to a file it
wrote nothing at all. When stderr is not a terminal, tqdm formats one plain line at the start, one every
`interval` seconds (TNT_PROGRESS_INTERVAL, default 10) and one at the end, so `tnt calibrate ... 2>log` and CI
logs show how far a long command got. stdout is never touched (`--json` output stays clean).
"""

from __future__ import annotations

import os
import sys
from typing import IO, TYPE_CHECKING, Any

from tnt_cli.terminal import printable

if TYPE_CHECKING:
    from rich.console import Console

INTERVAL_ENV = "TNT_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 10.0


def line_interval() -> float:
    """Seconds between two plain progress lines (TNT_PROGRESS_INTERVAL; a bad value means the default)."""
    try:
        value = float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL))
    except ValueError:
        return DEFAULT_INTERVAL
    return value if value >= 0 else DEFAULT_INTERVAL


class Progress:
    """One task's progress: `with Progress("evaluating", total=n, unit="img") as p: p.advance(len(batch))`.

    `update(completed=..., description=..., **fields)` sets the count, the label and extra `name value` pairs
    (loss, lr, ...). Disabled, every call is a no-op. `transient` bars vanish when done (terminal only; the
    plain lines always stay, they are the log).
    """

    def __init__(
        self,
        description: str,
        total: float | None = None,
        *,
        completed: float = 0,
        unit: str = "it",
        enabled: bool = True,
        transient: bool = True,
        console: Console | None = None,
        stream: IO[str] | None = None,
        interval: float | None = None,
    ) -> None:
        self.description = printable(description)  # may name a model or a file
        self.total = total
        self.completed = completed
        self.unit = unit
        self.enabled = enabled
        self.transient = transient
        self.console = console
        self.stream = stream
        self.interval = line_interval() if interval is None else interval
        self._rich: Any = None
        self._task: Any = None
        self._lines: Any = None

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> Progress:
        if not self.enabled:
            return self
        if self.stream is None and self._console().is_terminal:
            self._start_bar()
        else:
            self._start_lines()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None
        if self._lines is not None:
            self._lines.close()
            self._lines = None

    def _console(self) -> Console:
        if self.console is None:
            from tnt_cli.terminal import console

            self.console = console(stderr=True)
        return self.console

    def _start_bar(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import (
            Progress as RichProgress,
        )

        self._rich = RichProgress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}", markup=False),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self._console(),
            transient=self.transient,
        )
        self._rich.start()
        self._task = self._rich.add_task(self.description, total=self.total, completed=self.completed, info="")

    def _start_lines(self) -> None:
        from tqdm import tqdm

        class _Plain(tqdm):
            monitor_interval = 0  # no monitor thread: lines come from update() and close() only

        counts = "{n_fmt}/{total_fmt} " + self.unit + " ({percentage:.0f}%)" if self.total else "{n_fmt} " + self.unit
        left = ", {remaining} left" if self.total else ""
        self._lines = _Plain(
            total=self.total,
            initial=self.completed,
            desc=self.description,
            unit=" " + self.unit,  # tqdm glues the unit to the rate: "12.50 img/s"
            file=_LineStream(self.stream if self.stream is not None else sys.stderr),
            mininterval=self.interval,
            miniters=1,
            ascii=True,
            leave=True,
            bar_format="{desc}: " + counts + ", {elapsed} elapsed" + left + ", {rate_noinv_fmt}{postfix}",
        )

    # ------------------------------------------------------------------ updates
    def advance(self, n: float = 1) -> None:
        if self._rich is not None:
            self._rich.advance(self._task, n)
        elif self._lines is not None:
            self._lines.update(n)

    def update(self, *, completed: float | None = None, description: str | None = None, **fields: Any) -> None:
        if description is not None:
            description = printable(description)
        info = printable("  ".join(f"{k} {v}" for k, v in fields.items()))
        if self._rich is not None:
            kw: dict[str, Any] = {"info": info} if fields else {}
            if description is not None:
                kw["description"] = description
            self._rich.update(self._task, completed=completed, **kw)
        elif self._lines is not None:
            if description is not None:
                self._lines.set_description_str(description, refresh=False)
            if fields:
                self._lines.set_postfix_str(", ".join(f"{k} {v}" for k, v in fields.items()), refresh=False)
            if completed is not None:
                self._lines.update(completed - self._lines.n)


class _LineStream:
    """A file for tqdm that turns each in-place redraw ('\\r' + line + padding) into one plain line."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        line = printable(text.replace("\r", "")).rstrip()
        if line:
            self.stream.write(line + "\n")
            self.stream.flush()
        return len(text)

    def flush(self) -> None:
        self.stream.flush()
