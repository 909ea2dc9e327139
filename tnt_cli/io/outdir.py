"""Output targets, one mechanism for every command: validate -> lock -> write a temporary sibling -> swap -> unlock.

- `check_target`: refuse what must never be replaced (the working directory or a parent of it, an input, a
  directory tnt did not write) before any work starts;
- `OutputLock`: an exclusive `fcntl.flock` on a hidden lock file beside the target (`.NAME.lock`), so a second
  run into the same target is refused at once; the kernel drops it when the process dies;
- `output_dir`: yields a temporary sibling (`.NAME.partial-PID-*`); on success it replaces the target with two
  renames (old -> `.NAME.old-PID`, new -> NAME), so the old output stays whole until the new one is complete;
- `clean_stale`: siblings left by killed runs are removed (or, for an `.old-PID` whose swap was cut short,
  renamed back) once their owner process is dead.

Errors here are typed and name no CLI flag: the CLI's error table adds the hint (`--overwrite`).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tnt_cli.errors import TntError
from tnt_cli.io.names import CONFIG, WRITTEN, is_tnt_model_dir


class OutputError(TntError):
    """A target tnt will not write to."""


class OutputExists(OutputError):
    """The target exists and replacing it was not asked for."""

    def __init__(self, path: Path, what: str = "", *, resumable: bool = False) -> None:
        self.path = Path(path)
        self.resumable = resumable  # it holds an unfinished run's checkpoint
        super().__init__(f"{path} already exists{what}")


class OutputLocked(OutputError):
    """Another live process is writing the same target."""


def current_umask() -> int:
    """The process's umask (read by setting and restoring it): temporary files get the mode a plain write would."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _same_or_inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def is_tnt_output(path: str | Path) -> bool:
    """True for an empty directory or one tnt wrote: a tnt model directory (config.json with "tnt"), or a
    run / calibrate / benchmark directory holding only names tnt writes."""
    path = Path(path)
    entries = [p.name for p in path.iterdir() if not p.name.startswith(".")]
    if not entries:
        return True
    if (path / CONFIG).is_file():
        return is_tnt_model_dir(path)
    return set(entries) <= WRITTEN


REPLACE, INTO, FILE = "replace", "into", "file"


def check_safe(target: str | Path, inputs: Iterable[str | Path] = ()) -> Path:
    """The checks that need no lock: TARGET is not the working directory (or a parent of it), nor an input (or a
    directory holding one)."""
    target = Path(target)
    if str(target).strip() == "":
        raise OutputError("the output path is empty")
    resolved = target.expanduser().resolve()
    cwd = Path.cwd().resolve()
    if _same_or_inside(cwd, resolved):
        raise OutputError(f"{target} is the working directory or a parent of it: choose a new directory")
    for item in inputs:
        spec = str(item)
        spec = spec[len("local-dir:") :] if spec.startswith("local-dir:") else spec
        source = Path(spec).expanduser()
        if not source.exists():
            continue
        source = source.resolve()
        if _same_or_inside(source, resolved):
            raise OutputError(f"{target} is (or holds) the input {item}: write the output somewhere else")
    return target


def check_target(
    target: str | Path, *, overwrite: bool, inputs: Iterable[str | Path] = (), kind: str = REPLACE
) -> Path:
    """Refuse a target that must not be written before any work is done; returns it as a Path.

    `kind`: "replace" (the directory is replaced whole), "into" (files are added to the directory; callers check
    their own names) or "file". Never replaced, even with `overwrite`: the working directory or any parent of
    it, the filesystem root, an input (or a directory holding one), and a directory that is not a tnt output.
    """
    target = check_safe(target, inputs)
    if not target.exists() and not target.is_symlink():
        return target
    if kind == FILE:
        if target.is_dir():
            raise OutputError(f"{target} is a directory, not a file")
        if not overwrite:
            raise OutputExists(target)
        return target
    if not target.is_dir():
        raise OutputError(f"{target} exists and is not a directory")
    if kind == INTO:
        return target
    if target.is_symlink():
        raise OutputError(f"{target} is a symbolic link: give the real directory")
    if not any(target.iterdir()):
        return target
    if not overwrite:
        raise OutputExists(target)
    if not is_tnt_output(target):
        raise OutputError(f"{target} is not a tnt output directory (it holds files tnt did not write): not replaced")
    return target


# ----------------------------------------------------------------------------- lock
_HELD: dict[str, list] = {}  # lock path -> [fd, count]: one process may re-enter its own lock


def lock_path(target: str | Path) -> Path:
    target = Path(target)
    return target.parent / f".{target.name}.lock"


class OutputLock:
    """Exclusive flock on `.NAME.lock` beside the target; released on `release()` or process death.

    The lock file is removed on release; a process that locked a file just removed checks the inode and retries,
    so two processes never both hold the lock for one name.
    """

    def __init__(self, target: str | Path) -> None:
        self.target = Path(target)
        self.path = lock_path(self.target)
        self.key = str(self.path.absolute())

    def acquire(self) -> OutputLock:
        import fcntl

        if self.key in _HELD:
            _HELD[self.key][1] += 1
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~current_umask())
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise OutputLocked(
                        f"{self.target} is being written by another tnt process ({_owner(self.path)}): "
                        "wait for it to finish or choose another output"
                    ) from None
                raise
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # locked a file another process just removed: try again on the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _HELD[self.key] = [fd, 1]
        return self

    def release(self) -> None:
        held = _HELD.get(self.key)
        if held is None:
            return
        held[1] -= 1
        if held[1] > 0:
            return
        del _HELD[self.key]
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(held[0])

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _owner(path: Path) -> str:
    try:
        pid = int(path.read_text().split()[0])
        return f"pid {pid}"
    except (OSError, ValueError, IndexError):
        return "unknown pid"


# ----------------------------------------------------------------------------- siblings and the swap
def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def partial_dir(target: str | Path) -> Path:
    """A new empty temporary sibling of `target`, named after this process (so a later run can tell it is stale)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-{os.getpid()}-", dir=target.parent))
    os.chmod(tmp, 0o777 & ~current_umask())
    return tmp


def clean_stale(target: str | Path) -> list[Path]:
    """Remove `.NAME.partial-PID-*` / `.NAME.old-PID` siblings whose process is dead; returns what was removed.

    An `.old-PID` with no NAME beside it is a swap cut short between its two renames: it is the last complete
    output, so it is renamed back instead.
    """
    target = Path(target)
    parent = target.parent
    if not parent.is_dir():
        return []
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(partial|old)-(\d+)(-.*)?$")
    removed = []
    for entry in sorted(parent.iterdir()):
        match = pattern.match(entry.name)
        if not match or _pid_alive(int(match.group(2))):
            continue
        if match.group(1) == "old" and not target.exists():
            os.replace(entry, target)
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def swap_in(new: str | Path, target: str | Path) -> Path:
    """Replace `target` by the complete directory `new`: old -> `.NAME.old-PID`, new -> NAME, then drop the old."""
    new, target = Path(new), Path(target)
    if not target.exists():
        os.replace(new, target)
        return target
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if old.exists():
        shutil.rmtree(old)
    os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return target


@contextmanager
def output_dir(
    target: str | Path, *, overwrite: bool = False, inputs: Iterable[str | Path] = (), lock: bool = True
) -> Iterator[Path]:
    """Yield a temporary sibling to fill; on success it replaces `target` (see the module docstring).

    On any error (or Ctrl-C) the temporary directory is removed and the target is left exactly as it was.
    """
    inputs = tuple(inputs)
    target = check_safe(target, inputs)
    guard = OutputLock(target) if lock else None
    if guard is not None:
        guard.acquire()
    try:
        clean_stale(target)
        check_target(target, overwrite=overwrite, inputs=inputs)  # now that nobody else can change it
        tmp = partial_dir(target)
        try:
            yield tmp
            swap_in(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    finally:
        if guard is not None:
            guard.release()


@contextmanager
def locked_target(
    target: str | Path, *, overwrite: bool = False, inputs: Iterable[str | Path] = (), kind: str = INTO
) -> Iterator[Path]:
    """Validate and lock `target` for a command that writes files into it (or writes one file) itself."""
    inputs = tuple(inputs)
    target = check_safe(target, inputs)
    with OutputLock(target):
        clean_stale(target)
        check_target(target, overwrite=overwrite, inputs=inputs, kind=kind)
        yield target
