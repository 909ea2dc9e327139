"""One table from exceptions to what the CLI prints and the exit code (as huggingface_hub's CLI does).

Exit codes: 0 success, 1 a user error (bad input, environment), 2 a usage error (unknown option, missing
argument), 3 an internal error (a bug: report it; TNT_DEBUG=1 shows the traceback), 130 interrupted.
Library errors name no CLI flags; the hints that do live here.
"""

from __future__ import annotations

import errno

from tnt_cli.bench.config import BenchConfig
from tnt_cli.errors import ClassMismatch, Interrupted, SettingError, SettingText, TntError
from tnt_cli.eval.grid import Calibration
from tnt_cli.settings import SHARED, declarations
from tnt_cli.train.config import SETTINGS

EXIT_USER = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130

# OSErrors that are about the user's machine, not a bug in tnt
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EACCES, errno.EPERM, errno.EROFS, errno.EDQUOT, errno.EMFILE, errno.EIO}


# How the CLI spells each declared setting (`scale` is --crop-scale, `model` the MODEL argument), and the library
# parameters whose flag differs from their name; others are `--` + the Python name with dashes.
DECLARED = (*SHARED.values(), *SETTINGS, *declarations(Calibration), *declarations(BenchConfig))
FLAG_SPELLING = {
    **{s.name: s.flag for s in DECLARED},
    "out_dir": "--out",  # visualize_files / visualize
    "schedule": "--prune-layers and --keep-rates",  # a Schedule is given as the schedule flags
    "schedule_file": "--schedule",  # prune(schedule_file=...) is `tnt prune --schedule FILE`
}


def flag(setting: str) -> str:
    """How the CLI spells a library setting name: `drop_weight` -> `--drop-weight`."""
    return FLAG_SPELLING.get(setting, "--" + setting.replace("_", "-"))


def spelled(text: str) -> str:
    """A library message as the CLI shows it: settings named in a SettingText spelled as flags."""
    return text.render(flag) if isinstance(text, SettingText) else str(text)


def one_line(text: str) -> str:
    """Any text as one line: what an `error:` line may hold."""
    return " ".join(str(text).split())


def _output_exists(exc) -> str:
    hint = "pass --overwrite to replace it"
    if getattr(exc, "resumable", False):
        hint += ", or --resume to continue its checkpoint"
    return f"{exc}: {hint}"


def _interrupted(exc) -> str:
    if getattr(exc, "checkpoint", None) is None:  # stopped with nothing to continue from
        return str(exc)
    return f"{exc}; continue with the same command plus --resume"


def _class_mismatch(exc) -> str:
    return f"{exc} (tnt finetune --new-classes trains a new classifier for the data's classes)"


def _not_verified(exc) -> str:
    return f"{exc.reason}; nothing written (try another --opset, or --no-verify to keep it anyway)"


def _os_error(exc: OSError) -> str:
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or type(exc).__name__}{where}"


def describe(exc: BaseException) -> tuple[str, int]:
    """(the `error:` line without its prefix, exit code) for any exception a command raised."""
    from tnt_cli.export.onnx import VerificationFailed
    from tnt_cli.io.outdir import OutputExists

    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", EXIT_INTERRUPTED
    if isinstance(exc, Interrupted):
        return one_line(_interrupted(exc)), EXIT_INTERRUPTED
    if isinstance(exc, OutputExists):
        return one_line(_output_exists(exc)), EXIT_USER
    if isinstance(exc, ClassMismatch):
        return one_line(_class_mismatch(exc)), EXIT_USER
    if isinstance(exc, VerificationFailed):
        return one_line(_not_verified(exc)), EXIT_USER
    if isinstance(exc, SettingError):
        return one_line(exc.render(flag)), EXIT_USER
    if isinstance(exc, TntError):
        return one_line(str(exc)), EXIT_USER
    if isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS:
        return one_line(_os_error(exc)), EXIT_USER
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        first = (str(exc).strip().splitlines() or [""])[0]
        return one_line(f"out of memory ({first[:200]}): try a smaller --batch-size"), EXIT_USER
    text = one_line(f"{type(exc).__name__}: {exc}")
    if len(text) > 300:
        text = text[:297] + "..."
    return f"internal error: {text} (a bug in tnt; run again with TNT_DEBUG=1 to see the traceback)", EXIT_INTERNAL
