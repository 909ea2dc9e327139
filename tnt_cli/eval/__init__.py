"""Evaluation: one evaluation of MODEL, methods side by side, and schedule sweeps (the methods are `tnt_cli.methods`).

- `evaluation`: `evaluate(model, data, ...)`, one evaluation of a MODEL as the report `tnt evaluate` prints.
- `calibrate`: `Calibration` (the settings) and `calibrate(model, data, out, settings)`; `sweep`, `cached`,
  `pareto` and `grid` are its parts; `schedule_file` writes and reads the `tnt-schedule/1` file it leaves.
- `prune`: `prune(model, out, schedule=... | schedule_file=...)`, the deployable model directory.
- `compare`: methods side by side at matched GMACs.

The loop that measures a method (`evaluate_model`) and `apply_method` are in `tnt_cli.methods`, below training,
which uses them too. Names are loaded lazily so importing this package (the CLI does) stays free of torch.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "METHODS": "tnt_cli.methods.registry",
    "apply_method": "tnt_cli.methods.apply",
    "method_gmacs": "tnt_cli.methods.apply",
    "evaluate_model": "tnt_cli.methods.accuracy",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tnt_cli.eval' has no attribute {name!r}")
