"""Output targets, one mechanism for every command: validate -> lock -> write a temporary sibling -> swap -> unlock.

- `check_target`: refuse what must never be replaced (the working directory or a parent of it, an input, a
  directory tnt did not write) before any work starts;
- `OutputLock`: an exclusive `fcntl.flock` on a hidden lock file beside the target (`.NAME.lock`), so a second
  run into the same target is refused at once; the kernel drops it when the process dies;
- `output_dir`: yields a temporary sibling (`.NAME.partial-PID-*`); on success it replaces the target with two
  renames (old -> `.NAME.old-PID`, new -> NAME), so the old output stays whole until the new one is complete;
- `clean_stale`: siblings left by killed runs are removed (or, for an `.old-PID` whose swap was cut short,
  renamed back) once their owner process is dead.

Around them, what a hostile or unlucky file system cannot change:
- tnt never writes through a link it finds where its own files go (the lock, a side directory, a log): such a
  link is refused, and removing tnt's leftovers removes the link, never what it points to (`remove_own`);
- a directory is replaced only when every entry in it is one tnt writes (`foreign_entries`);
- the hidden siblings' names stay within the file system's name limit however long NAME is (`sibling_stem`);
- parent folders created for a target are removed again when the command leaves nothing in them.

Errors here are typed and name no CLI flag: the CLI's error table adds the hint (`--overwrite`).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tnt_cli.errors import TntError
from tnt_cli.io.names import CHECKPOINT, CONFIG, METRICS, STAGING, SWEEP, WRITTEN

# What only a tnt output holds (besides a config.json with a "tnt" object): a README.md or report.json alone may
# be the user's.
TNT_SIGNATURES = frozenset({METRICS, CHECKPOINT, SWEEP, STAGING})
# What a killed tnt process can leave inside its own output (a temporary file, a lock): tnt's, not the user's.
TNT_LEFTOVER = re.compile(r"^\..+\.(lock|partial-\d+-.*|old-\d+)$")
# Room kept for the longest suffix tnt puts after `.NAME` (`.partial-PID-XXXXXXXX.tmp`).
_SIBLING_ROOM = 40


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


def _tnt_config(path: Path) -> dict | None:
    """The "tnt" object of PATH/config.json; None when there is none (or the file is not one tnt wrote)."""
    from tnt_cli.io.jsonio import read_json

    config = path / CONFIG
    if config.is_symlink() or not config.is_file():
        return None
    try:
        tnt = read_json(config).get("tnt")
    except (TntError, AttributeError):
        return None
    return tnt if isinstance(tnt, dict) else None


def foreign_entries(path: str | Path) -> list[str]:
    """The entries of directory PATH that tnt did not write (hidden ones too: a clone's .git is the user's), in
    name order. Empty for an empty directory and for one tnt wrote: a tnt model directory (config.json with
    "tnt"), a fine-tune run, a calibrate output. A README.md or report.json alone is not enough to be tnt's."""
    path = Path(path)
    entries = sorted(p.name for p in path.iterdir())
    if not entries:
        return []
    tnt = _tnt_config(path)
    extra = tnt.get("extra_files") if tnt is not None else None
    own = WRITTEN | {str(name) for name in extra} if isinstance(extra, list) else WRITTEN
    foreign = [name for name in entries if name not in own and not TNT_LEFTOVER.match(name)]
    if foreign:
        return foreign
    if CONFIG in entries and tnt is None:
        return [CONFIG]  # a timm or other model's config: not tnt's
    if tnt is None and not TNT_SIGNATURES & set(entries):
        return entries  # nothing only tnt writes: these files may be the user's
    return []


def is_tnt_output(path: str | Path) -> bool:
    """True for an empty directory or one tnt wrote and nothing else (see `foreign_entries`)."""
    return not foreign_entries(path)


def sibling_stem(target: str | Path) -> str:
    """`.NAME`: how every hidden sibling tnt keeps beside TARGET starts (`.NAME.lock`, `.NAME.partial-...`).

    A NAME so long that tnt's suffix would push a sibling over the file system's name limit (a valid name of 250
    bytes) is cut and marked with a hash of the whole name: the same stem for every run into TARGET.
    """
    target = Path(target)
    stem = f".{target.name}"
    limit = _name_max(target.parent) - _SIBLING_ROOM
    if len(os.fsencode(stem)) <= limit:
        return stem
    digest = hashlib.sha256(os.fsencode(target.name)).hexdigest()[:12]
    cut = stem
    while len(os.fsencode(cut)) > limit - len(digest) - 1:
        cut = cut[:-1]
    return f"{cut}~{digest}"


def _name_max(folder: Path) -> int:
    """The longest file name the file system holding FOLDER (or its nearest existing parent) accepts."""
    existing = nearest_existing(folder)
    try:
        return int(os.pathconf(existing, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255


def nearest_existing(path: Path) -> Path:
    """PATH, or its nearest parent that exists."""
    path = Path(os.path.abspath(path))
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def remove_own(path: str | Path) -> None:
    """Remove one of tnt's own files or directories: a link found there is removed itself, never followed."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def refuse_link(path: str | Path, what: str) -> None:
    """Refuse a symbolic link where tnt keeps WHAT (its side directory, checkpoint, staging directory): writing
    through it would change files elsewhere."""
    path = Path(path)
    if path.is_symlink():
        raise OutputError(f"{path} is a symbolic link where tnt keeps {what}: tnt never writes through a link; "
                          "remove it")  # fmt: skip


def open_own(path: str | Path, flags: int) -> int:
    """`os.open` of one of tnt's own files (its lock, a log) that never follows a link and opens only a regular
    file with one name: a planted link or FIFO is refused, and no file elsewhere is ever truncated."""
    path = Path(path)
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666 & ~current_umask())
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            refuse_link(path, "its own files")
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        os.close(fd)
        kind = "not a regular file" if not stat.S_ISREG(info.st_mode) else "a hard link to another file"
        raise OutputError(f"{path} is {kind}, where tnt keeps its own file: remove it")
    return fd


REPLACE, INTO, FILE = "replace", "into", "file"


def check_safe(target: str | Path, inputs: Iterable[str | Path] = ()) -> Path:
    """The checks that need no lock: TARGET is not the working directory (or a parent of it), nor an input (or a
    directory holding one)."""
    target = Path(target)
    if str(target).strip() == "":
        raise OutputError("the output path is empty")
    above = nearest_existing(target.expanduser().parent)
    if not above.is_dir():
        raise OutputError(f"{target} cannot be created: {above} is a file, not a directory")
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
    foreign = foreign_entries(target)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise OutputError(f"{target} is not a tnt output directory (it holds files tnt did not write: {shown}): "
                          "not replaced; move them out or write elsewhere")  # fmt: skip
    return target


# ----------------------------------------------------------------------------- lock
_HELD: dict[str, list] = {}  # lock path -> [fd, count, parent folders it created]: re-entrant per process


def lock_path(target: str | Path) -> Path:
    target = Path(target)
    return target.parent / f"{sibling_stem(target)}.lock"


def make_parents(folder: Path) -> list[Path]:
    """Create FOLDER and its missing parents; returns those it created, outermost first."""
    missing = []
    folder = Path(os.path.abspath(folder))
    while not os.path.lexists(folder) and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    created = []
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:  # made meanwhile by someone else: theirs, not ours to remove
            continue
        created.append(path)
    return created


def remove_empty(folders: list[Path]) -> None:
    """Remove the folders a refused or failed command created, innermost first, while they are empty."""
    for path in reversed(folders):
        try:
            path.rmdir()
        except OSError:
            return


class OutputLock:
    """Exclusive flock on `.NAME.lock` beside the target; released on `release()` or process death.

    The lock file is removed on release; a process that locked a file just removed checks the inode and retries,
    so two processes never both hold the lock for one name. The lock file is opened with `open_own` (never
    through a link). Parent folders created for it are removed on release when nothing was written into them.
    """

    def __init__(self, target: str | Path) -> None:
        self.target = Path(target)
        self.path = lock_path(self.target)
        self.key = str(self.path.absolute())

    def acquire(self) -> OutputLock:
        if self.key in _HELD:
            _HELD[self.key][1] += 1
            return self
        created = make_parents(self.path.parent)
        try:
            fd = self._lock()
        except BaseException:
            remove_empty(created)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _HELD[self.key] = [fd, 1, created]
        return self

    def _lock(self) -> int:
        import fcntl

        while True:
            fd = open_own(self.path, os.O_RDWR | os.O_CREAT)
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
                return fd
            os.close(fd)  # locked a file another process just removed: try again on the new one

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
            remove_empty(held[2])

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
    tmp = Path(tempfile.mkdtemp(prefix=f"{sibling_stem(target)}.partial-{os.getpid()}-", dir=target.parent))
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
    pattern = re.compile(rf"^{re.escape(sibling_stem(target))}\.(partial|old)-(\d+)(-.*)?$")
    removed = []
    for entry in sorted(parent.iterdir()):
        match = pattern.match(entry.name)
        if not match or _pid_alive(int(match.group(2))):
            continue
        if match.group(1) == "old" and not os.path.lexists(target) and entry.is_dir() and not entry.is_symlink():
            os.replace(entry, target)
            continue
        try:
            remove_own(entry)
        except OSError:
            continue
        removed.append(entry)
    return removed


def swap_in(new: str | Path, target: str | Path) -> Path:
    """Replace `target` by the complete directory `new`: old -> `.NAME.old-PID`, new -> NAME, then drop the old."""
    new, target = Path(new), Path(target)
    if not target.exists():
        os.replace(new, target)
        return target
    old = target.with_name(f"{sibling_stem(target)}.old-{os.getpid()}")
    remove_own(old)
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
