"""Stopping a long command cleanly: SIGTERM is handled like Ctrl-C, by every command, through one mechanism.

Python turns Ctrl-C (SIGINT) into KeyboardInterrupt, so every `finally` and `except BaseException` runs on the
way out: temporary siblings are removed, the output lock is released and its file removed. SIGTERM (what `kill`,
`timeout`, systemd, Slurm, Kubernetes and `docker stop` send) would end the process at once and leave all of that
behind. `sigterm_as_interrupt` makes SIGTERM raise `Terminated`, a KeyboardInterrupt, so the same cleanup runs;
the CLI then exits with `EXIT_TERMINATED` (143, 128 + SIGTERM, what a shell reports for a process SIGTERM
ended), Ctrl-C with 130.

`StopRequests` is the fine-tune's variant: the first SIGINT or SIGTERM asks the loop to stop at its next safe
point (it writes a checkpoint there), a second one stops at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as Ctrl-C raises KeyboardInterrupt (so the same cleanup runs)."""

    signum = signal.SIGTERM


def exit_code(signum: int | None) -> int:
    """The exit code of a command stopped by SIGNUM (Ctrl-C when unknown)."""
    return EXIT_TERMINATED if signum == signal.SIGTERM else EXIT_INTERRUPTED


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises `Terminated` (signal handlers can only be set from the main thread: elsewhere
    this does nothing)."""
    if not _main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class StopRequests:
    """`with StopRequests(on_first) as stop:` the first SIGINT / SIGTERM sets `stop.signum` (and calls `on_first`);
    the loop checks `stop.requested` at its safe points. A second signal raises at once (KeyboardInterrupt, or
    `Terminated` for SIGTERM). Outside the main thread it installs nothing."""

    def __init__(self, on_first: Callable[[int], None] | None = None) -> None:
        self.on_first = on_first
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handler(self, signum, frame) -> None:
        if self.signum is not None:
            raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
        self.signum = signum
        if self.on_first is not None:
            self.on_first(signum)

    def __enter__(self) -> StopRequests:
        if _main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
