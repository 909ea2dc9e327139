"""tnt: Training Noise Token pruning for timm Vision Transformers.

Importing this package is cheap: torch and timm load only when a model is touched.

    import tnt_cli
    model = tnt_cli.load("runs/deit_s_tnt")          # ready to run with its saved schedule
    model.set_schedule(tnt_cli.Schedule(prune_layers=(2,), keep_rates=(0.5,)))
    tnt_cli.save(model, "models/deit_s_tnt_0.5")
"""

from __future__ import annotations

from tnt_cli._version import __version__

# The real functions, with their keyword parameters (api.py imports nothing heavy: torch loads on first use).
from tnt_cli.api import describe, load, save

_LAZY = ("NoiseConfig", "Schedule", "TNTModel")  # from tnt_cli.engine, which imports torch
__all__ = ["NoiseConfig", "Schedule", "TNTModel", "__version__", "describe", "load", "save"]


def __getattr__(name: str):
    """Lazy exports, so `import tnt_cli` stays free of torch."""
    if name in _LAZY:
        import tnt_cli.engine as engine

        return getattr(engine, name)
    raise AttributeError(f"module 'tnt_cli' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public API (what `__all__` lists), not this module's imports."""
    return sorted(__all__)
