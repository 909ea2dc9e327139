"""Atomic writes: a crash or Ctrl-C never leaves a half-written file or a directory that looks complete."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write to a temporary file beside `path`, fsync, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes owner-only files; give the usual permissions
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


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
    from tnt_cli.io.outdir import output_dir

    with output_dir(target, overwrite=overwrite, inputs=inputs) as tmp:
        yield tmp
