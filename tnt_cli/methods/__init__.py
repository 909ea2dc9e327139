"""The token-reduction methods: one module each, one record each in `registry`, all run through `apply_method`.

- `registry`: every method's record (name, aliases, where its implementation is, how reports describe it, what it
  can do). The only module that writes a method's name; torch-free, so the CLI and the settings can use it.
- `apply`: `apply_method(model, method, schedule)` runs any method at TNT's GMACs for `schedule`;
  `method_gmacs` is its cost alone. `base` holds what every implementation returns (`Configured`) and the budget.
- the implementations: `tnt` (the relevance heads, and dense), `random`, `evit` (and its fused variant), `tome`;
  `blocks` is what ToMe and EViT share (timm's block split open between attention and MLP).
- `loading`: MODEL loaded for a method (`auto`: a directory's own); `accuracy`: the loop that measures a configured
  method on data; `timing`: alternating timing of configured methods (benchmark and calibrate).

Adding a method: a module with `configure(model, schedule, method, *, seed, own) -> Configured`, and one line in
`registry.REGISTRY`. Names are loaded lazily so importing this package (the CLI does) stays free of torch.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "MethodSetup": "tnt_cli.methods.apply",
    "apply_method": "tnt_cli.methods.apply",
    "method_gmacs": "tnt_cli.methods.apply",
    "evaluate_model": "tnt_cli.methods.accuracy",
    "METHODS": "tnt_cli.methods.registry",
    "lookup": "tnt_cli.methods.registry",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tnt_cli.methods' has no attribute {name!r}")
