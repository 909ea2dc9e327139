"""One table from exceptions to what the CLI prints and the exit code (as huggingface_hub's CLI does).

Exit codes: 0 success, 1 a user error (bad input, environment), 2 a usage error (unknown option, missing
argument), 3 an internal error (a bug: report it; TNT_DEBUG=1 shows the traceback), 130 interrupted (Ctrl-C),
143 terminated (SIGTERM, after the same cleanup as Ctrl-C; `tnt_cli.stopping`), 141 stdout closed by its reader
(`| head`, quietly: `tnt_cli.cli.app`). Library errors name no CLI flags; the hints that do live here.
"""

from __future__ import annotations

import errno
import re
import signal
import sys

from tnt_cli.bench.config import BenchConfig
from tnt_cli.errors import ClassMismatch, Interrupted, SettingError, SettingText, TntError
from tnt_cli.eval.grid import Calibration
from tnt_cli.settings import SHARED, declarations
from tnt_cli.stopping import EXIT_INTERRUPTED, Terminated, exit_code
from tnt_cli.terminal import printable
from tnt_cli.train.config import SETTINGS

EXIT_USER = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3

# OSErrors that are about the user's machine or files, not a bug in tnt
ENVIRONMENT_ERRNOS = {
    errno.ENOSPC, errno.EACCES, errno.EPERM, errno.EROFS, errno.EDQUOT, errno.EMFILE, errno.ENFILE, errno.EIO,
    errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.ELOOP, errno.EEXIST, errno.ENOTEMPTY,
    errno.EXDEV, errno.EBUSY, errno.ETXTBSY, errno.EFBIG, errno.ENXIO, errno.ENODEV, errno.ESTALE, errno.ENOMEM,
}  # fmt: skip

# Allocation failures that are not MemoryError: torch's CPU allocator, CUDA, cuBLAS, MPS, and the OS.
OUT_OF_MEMORY = re.compile(
    r"out of memory|can't allocate memory|cannot allocate memory|DefaultCPUAllocator|CUBLAS_STATUS_ALLOC_FAILED|"
    r"CUDNN_STATUS_ALLOC_FAILED|std::bad_alloc",
    re.IGNORECASE,
)
# The setting that lowers each command's memory, for the out-of-memory line.
MEMORY_SETTING = {
    "finetune": "--batch-size (--accum keeps the global batch; --eval-batch-size for the final evaluation)",
    "evaluate": "--batch-size",
    "compare": "--batch-size",
    "calibrate": "--batch-size (or --speed-batch for --measure-speed)",
    "benchmark": "--batch-sizes",
    "export": "--batch-size",
    "visualize": "the number of images",
}
DEFAULT_MEMORY_SETTING = "--batch-size"
# torch's message when a DataLoader worker process died (killed by the OOM killer, a signal, a crash)
WORKER_DIED = re.compile(
    r"DataLoader worker \(pids?\(?s?\)? ?[\d, ]+\)? (exited unexpectedly|is killed by signal[^.]*)"
)


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
    """Any text as one line: what an `error:` line may hold (control characters and undecodable bytes of the
    names in it escaped, `tnt_cli.terminal.printable`)."""
    return printable(" ".join(str(text).split()))


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
    return f"{exc.strerror or type(exc).__name__}{where}{_hub_home_hint(exc)}"


def _hub_home_hint(exc: OSError) -> str:
    """Where an unusable file belongs to the Hugging Face cache or token, say which variable points there."""
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is None or not exc.filename:
        return ""
    name = str(exc.filename)
    for variable, place in (("HF_TOKEN_PATH", "HF_TOKEN_PATH"), ("HF_HUB_CACHE", "HF_HOME"), ("HF_HOME", "HF_HOME")):
        root = str(getattr(constants, variable, "") or "")
        if root and (name == root or name.startswith(root.rstrip("/") + "/")):
            return f" (the Hugging Face {'token file' if variable == 'HF_TOKEN_PATH' else 'cache'}: check {place})"
    return ""


def out_of_memory(exc: BaseException) -> bool:
    """MemoryError, torch's OutOfMemoryError, or an allocator's RuntimeError (CPU, CUDA, cuBLAS, MPS)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and OUT_OF_MEMORY.search(str(exc)) is not None


def _out_of_memory(exc: BaseException, command: str | None) -> str:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    setting = MEMORY_SETTING.get(command or "", DEFAULT_MEMORY_SETTING)
    return f"out of memory ({first[:200]}): lower {setting}"


def _worker_died(exc: BaseException) -> str | None:
    match = WORKER_DIED.search(str(exc)) if isinstance(exc, RuntimeError) else None
    if match is None:
        return None
    return (f"a data-loading worker process died ({match.group(0)}), often because the system ran out of memory: "
            "use fewer --workers (0 loads in the main process) or a smaller --batch-size")  # fmt: skip


def _signal_inside(exc: BaseException) -> KeyboardInterrupt | None:
    """Ctrl-C or SIGTERM that arrived while Python or a library was doing something that re-raises what it caught
    wrapped in another error (an import caught mid-way: Python 3.11 turns an exception inside `__set_name__` into a
    RuntimeError from it). The stop is what happened, so it is what the user is told."""
    if isinstance(exc, KeyboardInterrupt | TntError):
        return None
    cause = exc.__cause__
    while cause is not None and not isinstance(cause, KeyboardInterrupt):
        cause = cause.__cause__
    return cause


def describe(exc: BaseException, command: str | None = None) -> tuple[str, int]:
    """(the `error:` line without its prefix, exit code) for any exception a command raised; `command` (its name)
    picks the setting an out-of-memory line tells the user to lower."""
    from tnt_cli.export.onnx import VerificationFailed
    from tnt_cli.io.outdir import OutputExists

    exc = _signal_inside(exc) or exc
    if isinstance(exc, Terminated):
        return "terminated (SIGTERM): stopped and cleaned up", exit_code(signal.SIGTERM)
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", EXIT_INTERRUPTED
    if isinstance(exc, Interrupted):
        return one_line(_interrupted(exc)), exit_code(exc.signum)
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
    if out_of_memory(exc):
        return one_line(_out_of_memory(exc, command)), EXIT_USER
    if isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS:
        return one_line(_os_error(exc)), EXIT_USER
    died = _worker_died(exc)
    if died is not None:
        return one_line(died), EXIT_USER
    text = one_line(f"{type(exc).__name__}: {exc}")
    if len(text) > 300:
        text = text[:297] + "..."
    return f"internal error: {text} (a bug in tnt; run again with TNT_DEBUG=1 to see the traceback)", EXIT_INTERNAL
