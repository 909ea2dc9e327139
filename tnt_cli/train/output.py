"""Where a fine-tune writes: OUT checked and locked before any work, the working directory chosen (OUT itself, or
a side directory when replacing an existing output), and at the end the model directory written there and
published: swapped into OUT, then pushed to the Hub if asked."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from tnt_cli.errors import SettingError
from tnt_cli.io.names import STAGING
from tnt_cli.methods.registry import REFERENCE, lookup
from tnt_cli.train.checkpoint import CHECKPOINT_DIR, checkpoint_path

if TYPE_CHECKING:
    from tnt_cli.engine import TNTModel


def run_dir(out: Path) -> Path:
    """The side directory a run that replaces an existing OUT trains in (checkpoint and log), then swaps in."""
    from tnt_cli.io.outdir import sibling_stem

    return out.with_name(f"{sibling_stem(out)}.run")


class RunOutput:
    """OUT of one run and the directory the run works in (`work`: checkpoints, the log, then the model).

    A new OUT (or an empty one) is trained in directly. Replacing an existing output (`overwrite`) trains in the
    side directory `.OUT.run` and swaps the finished result in at the end, so a killed, failed or diverged run
    leaves the previous output exactly as it was; `resume` continues whichever holds the checkpoint.
    """

    def __init__(
        self, out: str | Path, *, resume: bool = False, overwrite: bool = False, push_to_hub: str | None = None
    ) -> None:
        self.out = Path(out)
        self.work = self.out
        self.resume = resume
        self.overwrite = overwrite
        self.push_to_hub = push_to_hub
        self._lock = None

    @property
    def replacing(self) -> bool:
        """True while the run works beside an existing output (which stays as it was until `publish`)."""
        return self.work != self.out

    def open(self, inputs: Iterable[str | Path], *, is_main: bool) -> Path:
        """Validate OUT (and the push target) before any work, lock it (rank 0), and choose `work`.

        The lock is held until `release`, also when this raises: call `release` in a `finally`.
        """
        from tnt_cli.io.outdir import (
            OutputExists,
            OutputLock,
            check_safe,
            check_target,
            clean_stale,
            refuse_link,
            remove_own,
        )

        out, inputs = self.out, tuple(inputs)
        check_safe(out, inputs)
        side = run_dir(out)
        refuse_link(side, "a run's working directory")
        if self.push_to_hub:
            from tnt_cli.io.push import check_push_target

            check_push_target(self.push_to_hub)
        if is_main:  # first: a run in progress is reported as such
            self._lock = OutputLock(out).acquire()
            clean_stale(out)
        if self.resume:
            work = next((d for d in (out, side) if checkpoint_path(d).exists()), None)
            if work is None:
                raise SettingError("{resume}: {where} has no checkpoint ({path} is missing)",
                                   where=out, path=checkpoint_path(out))  # fmt: skip
        else:
            try:
                check_target(out, overwrite=self.overwrite, inputs=inputs)
            except OutputExists as exc:
                exc.resumable = checkpoint_path(out).exists() or checkpoint_path(side).exists()
                raise
            if side.exists() and not self.overwrite:
                raise OutputExists(side, " (an unfinished run into OUT)", resumable=checkpoint_path(side).exists())
            work = side if out.exists() and any(out.iterdir()) else out
        self.work = work
        for name in (CHECKPOINT_DIR, STAGING):  # written into, so never through a link planted there
            refuse_link(work / name, "a run's " + ("checkpoint" if name == CHECKPOINT_DIR else "staging directory"))
        if is_main and not self.resume and work == side and side.exists():
            remove_own(side)  # an earlier run's leftovers: this run replaces them
        return work

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def publish(
        self,
        model: TNTModel,
        *,
        base_model: str | None,
        training: dict,
        metrics: dict | None,
        provenance=None,
        keep_checkpoint: bool = False,
    ) -> str | None:
        """Write the model directory into `work`, drop the checkpoint (unless kept), swap `work` into OUT and
        push OUT if asked; returns the pushed repo's URL (None: not pushed)."""
        save_final(self.work, model, base_model=base_model, training=training, metrics=metrics, provenance=provenance)
        if not keep_checkpoint:
            shutil.rmtree(self.work / CHECKPOINT_DIR, ignore_errors=True)  # never a link: refused by `open`
        if self.replacing:
            from tnt_cli.io.outdir import swap_in

            swap_in(self.work, self.out)  # the previous output is replaced only now, in two renames
            self.work = self.out
        if not self.push_to_hub:
            return None
        from tnt_cli.io.push import push_folder

        return push_folder(self.out, self.push_to_hub)


def save_final(
    out: Path, model: TNTModel, *, base_model: str | None, training: dict, metrics: dict | None, provenance=None
) -> Path:
    """Write the tnt model directory into OUT, which already holds the run's log and checkpoint.

    The directory is written complete into OUT/.final-model by `save_model_dir`, then its files are moved
    into OUT one rename each, config.json last: until then OUT does not look like a model directory.
    """
    from tnt_cli.io.model_dir import save_model_dir
    from tnt_cli.io.outdir import remove_own

    staging = out / STAGING
    remove_own(staging)
    heads_trained = lookup(training.get("method", REFERENCE)).uses_heads  # a baseline's directory: untrained heads
    save_model_dir(staging, model, base_model=base_model, training=training, metrics=metrics, overwrite=True,
                   heads_trained=heads_trained, provenance=provenance)  # fmt: skip
    names = sorted(p.name for p in staging.iterdir())
    names.sort(key=lambda name: name == "config.json")
    for name in names:
        target = out / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(staging / name, target)  # a link found at `target` is replaced, not followed
    shutil.rmtree(staging, ignore_errors=True)
    return out
