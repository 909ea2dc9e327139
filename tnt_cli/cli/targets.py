"""Claiming a command's output target up front: validated and locked before any work, for the whole command."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def claim_output(
    target: str | Path, *, overwrite: bool, inputs: Iterable[str | Path] = (), kind: str = "replace"
) -> Path:
    """Validate TARGET (`tnt_cli.io.outdir.check_target`) and lock it until the command ends (or the process
    dies), so bad outputs fail before the expensive work and a second run into it is refused at once."""
    from tnt_cli.cli.command import running_click
    from tnt_cli.io.outdir import OutputLock, check_safe, check_target, clean_stale

    inputs = tuple(inputs)
    target = check_safe(target, inputs)
    lock = OutputLock(target).acquire()  # first: a run in progress is reported as such, not as "exists"
    ctx = running_click.globals.get_current_context(silent=True)
    if ctx is not None:
        ctx.call_on_close(lock.release)
    clean_stale(target)
    return check_target(target, overwrite=overwrite, inputs=inputs, kind=kind)
