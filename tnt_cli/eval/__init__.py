"""Evaluation: the loop that measures accuracy, the baselines TNT is compared against, and schedule sweeps.

- `baselines`: random, evit, evit-fuse, tome, dense at TNT's GMACs; `apply_method(model, method, schedule)`;
  `method_gmacs`. The algorithms themselves are in `methods` (ToMe, EViT, the random scorer).
- `accuracy`: `evaluate_model(model, loader, *, device, limit, progress, per_class)`, the loop.
- `evaluation`: `evaluate(model, data, ...)`, one evaluation of a MODEL as the report `tnt evaluate` prints.
- `calibrate`: `Calibration` (the settings) and `calibrate(model, data, out, settings)`; `sweep`, `cached`,
  `pareto` and `grid` are its parts; `schedule_file` writes and reads the `tnt-schedule/1` file it leaves.
- `prune`: `prune(model, out, schedule=... | schedule_file=...)`, the deployable model directory.
- `compare`: methods side by side at matched GMACs.

Names are loaded lazily so importing this package (the CLI does) stays free of torch.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "METHODS": "tnt_cli.eval.baselines",
    "apply_method": "tnt_cli.eval.baselines",
    "method_gmacs": "tnt_cli.eval.baselines",
    "evaluate_model": "tnt_cli.eval.accuracy",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tnt_cli.eval' has no attribute {name!r}")
