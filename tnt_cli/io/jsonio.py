"""The one JSON writer for machine output (`--json`, report.json, schedule.json, metrics.jsonl, config.json).

`json.dumps` writes NaN / Infinity for non-finite floats (not JSON) and never calls `default` for floats, so
values are cleaned first: non-finite floats become null, tensors / numpy values become lists or numbers,
objects with `to_dict` become dicts, paths and anything else become strings. `allow_nan=False` proves it.
"""

from __future__ import annotations

import json
import math
from pathlib import PurePath
from typing import Any


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
