"""The one JSON writer for machine output (`--json`, report.json, schedule.json, metrics.jsonl, config.json), and
the one reader of JSON a user hands tnt.

`json.dumps` writes NaN / Infinity for non-finite floats (not JSON) and never calls `default` for floats, so
values are cleaned first: non-finite floats become null, tensors / numpy values become lists or numbers,
objects with `to_dict` become dicts, paths and anything else become strings. `allow_nan=False` proves it.

Reading, any malformed document is one `TntError` naming the file: broken syntax, text that is not UTF-8, nesting
deep enough to exhaust Python's recursion (`[[[[...`, a RecursionError otherwise), a FIFO or device where a file
should be (reading it would never end), or a file far larger than any config or schedule.
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path, PurePath
from typing import Any

from tnt_cli.errors import TntError

# config.json, schedules and reports are kilobytes; a file this large is not one of them
MAX_JSON_BYTES = 64 * 1024 * 1024


def jsonable(value: Any) -> Any:
    """`value` as plain JSON types (dict / list / str / int / finite float / bool / None)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, str) else k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "to_dict"):
        return jsonable(value.to_dict())
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return jsonable(value.tolist())
    if hasattr(value, "__float__") and not hasattr(value, "__len__"):
        try:
            return jsonable(float(value))
        except (TypeError, ValueError):
            pass
    return str(value)


def dumps(data: Any, *, indent: int | None = 2) -> str:
    """Valid JSON text of `data` (see `jsonable`)."""
    return json.dumps(jsonable(data), indent=indent, allow_nan=False)


def dumps_line(data: Any) -> str:
    """One compact JSON line (for .jsonl logs)."""
    return json.dumps(jsonable(data), allow_nan=False, separators=(", ", ": "))


def loads(text: str | bytes, where: str | Path) -> Any:
    """JSON text read from WHERE (a file, a metadata field), or one line saying why it is not JSON."""
    try:
        return json.loads(text)
    except RecursionError:
        raise TntError(f"{where} is not valid JSON: nested too deeply") from None
    except UnicodeDecodeError:
        raise TntError(f"{where} is not valid JSON: not UTF-8 text") from None
    except ValueError as exc:
        raise TntError(f"{where} is not valid JSON: {exc}") from None


def read_json(path: str | Path) -> Any:
    """The JSON document in the regular file PATH (see the module docstring for what is refused)."""
    path = Path(path)
    try:
        with open(path, "rb", opener=_open_nonblocking) as fh:
            info = os.fstat(fh.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise TntError(f"{path} is not a regular file")
            if info.st_size > MAX_JSON_BYTES:
                raise TntError(f"{path} is {info.st_size} bytes: too large for a JSON config or schedule")
            data = fh.read(MAX_JSON_BYTES + 1)
    except OSError as exc:
        raise TntError(f"cannot read {path}: {exc.strerror or exc}") from None
    return loads(data, path)


def _open_nonblocking(path: str, flags: int) -> int:
    """Opening a FIFO for reading waits for a writer: O_NONBLOCK returns at once (regular files ignore it)."""
    return os.open(path, flags | os.O_NONBLOCK)
