"""Atomic writes: a crash or Ctrl-C never leaves a half-written file or a directory that looks complete."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tnt_cli.io.outdir import current_umask, output_dir, sibling_stem


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file beside `path` to write; on success it replaces `path`, on any error it is removed.

    The temporary name carries this process's id (`.NAME.partial-PID-*.tmp`), so `tnt_cli.io.outdir.clean_stale`
    can tell one left by a killed run. The file gets the mode a plain write would give (mkstemp's is owner-only).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f"{sibling_stem(path)}.partial-{os.getpid()}-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write to a temporary file beside `path`, fsync, then rename over it."""
    path = Path(path)
    with atomic_file(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """UTF-8 text; a name that was not valid UTF-8 (a class folder, a path) is written with its bytes as `\\xNN`
    (`tnt_cli.terminal.readable`), so it never stops a finished run from being saved."""
    from tnt_cli.terminal import readable

    return atomic_write_bytes(path, readable(text).encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any) -> Path:
    from tnt_cli.io.jsonio import dumps

    return atomic_write_text(path, dumps(data) + "\n")


@contextmanager
def atomic_directory(
    target: str | Path, *, overwrite: bool = False, inputs: Iterable[str | Path] = ()
) -> Iterator[Path]:
    """Yield a temporary directory beside `target`; on success it replaces `target` (see `tnt_cli.io.outdir`).

    An existing target is refused unless `overwrite`, and even then when it is not a tnt output, the working
    directory or an input. The target is locked meanwhile; on any error (or Ctrl-C) the temporary directory is
    removed and the target is left as it was.
    """
    with output_dir(target, overwrite=overwrite, inputs=inputs) as tmp:
        yield tmp
