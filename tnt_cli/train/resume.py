"""The resume check, in one place: a checkpoint is continued only by a run that would have made it.

Torch-free (it compares saved settings), so the checkpoint module stays about the checkpoint's bytes.
"""

from __future__ import annotations

from pathlib import Path

from tnt_cli.errors import SettingError
from tnt_cli.train.config import SETTINGS, TRAJECTORY, TrainConfig


def check_resumable(saved: dict, cfg: TrainConfig, world_size: int) -> None:
    """Refuse to resume a checkpoint with other trajectory settings or another number of processes: the resumed
    run would not be the interrupted one."""
    mismatch = resume_mismatch(saved["config"], cfg)
    if mismatch is not None:
        raise mismatch
    if saved["world_size"] != world_size:
        raise SettingError("{resume}: the checkpoint was made with {then} processes, this run has {now}; resume "
                           "with the same number", then=saved["world_size"], now=world_size)  # fmt: skip


# Switches that are on by default and given as the flag that turns them off (`holdout`: --no-holdout).
SWITCHED_OFF = {s.name for s in SETTINGS if s.type is bool and s.default is True}
# Settings added after checkpoints were first written, with the value those checkpoints' runs had.
IMPLIED_BEFORE = {"holdout": False, "opt": "adamw", "ema_decay": None, "anchor": False}


def resume_mismatch(saved: dict, current: TrainConfig) -> SettingError | None:
    """The first trajectory setting that differs from the checkpoint's, as the error to raise; None when all match."""
    now = current.to_dict()
    saved = {**IMPLIED_BEFORE, **saved}
    for key in TRAJECTORY:
        if key in ("model", "data") and key in saved and _same_place(saved[key], now.get(key)):
            continue
        if key in saved and saved[key] != now.get(key):
            if key in SWITCHED_OFF and isinstance(saved[key], bool):  # --no-holdout: say whether it was given
                return SettingError(f"{{resume}}: the checkpoint was made {'without' if saved[key] else 'with'} "
                                    f"{{{key}}}; resume with the original settings")  # fmt: skip
            return SettingError(
                f"{{resume}}: {{{key}}} is {{now!r}} but the checkpoint was made with {{saved!r}}; resume with the "
                "original settings",
                now=now.get(key), saved=saved[key],
            )  # fmt: skip
    return None


def _same_place(a, b) -> bool:
    """MODEL / DATA given two ways for one path (`./base` and `base`, relative and absolute) are the same."""
    if not isinstance(a, str) or not isinstance(b, str):
        return False
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def check_same_classes(saved: dict, classes: list[str]) -> None:
    """Refuse to resume when DATA's classes are not the checkpoint's (a class folder added, removed or renamed):
    the classifier and the label order were built for the old ones. Checkpoints that predate the record pass
    (the trainer then reports a model that does not fit)."""
    before = saved.get("data_classes")
    if before is None or list(before) == list(classes):
        return
    added = [c for c in classes if c not in before]
    removed = [c for c in before if c not in classes]
    change = "; ".join(part for part in (
        f"added {', '.join(added)}" if added else "", f"removed {', '.join(removed)}" if removed else "",
    ) if part) or "the same classes in another order"  # fmt: skip
    raise SettingError("{resume}: DATA's classes changed since the checkpoint ({change}): resume with the data the run "
                       "started with, or start a new run", change=change)  # fmt: skip
