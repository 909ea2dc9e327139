"""tnt: Training Noise Token pruning for timm Vision Transformers.

Importing this package is cheap: torch and timm load only when a model is touched.

    import tnt_cli
    model = tnt_cli.load("runs/deit_s_tnt")          # ready to run with its saved schedule
    model.set_schedule(tnt_cli.Schedule(prune_layers=(2,), keep_rates=(0.5,)))
    tnt_cli.save(model, "models/deit_s_tnt_0.5")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from pathlib import Path

    from tnt_cli.engine import Schedule, TNTModel


def load(model: str, **kwargs: Any) -> TNTModel:
    """Load MODEL (timm name, hf-hub:, directory, .safetensors, .pth) as a TNT model in eval mode."""
    from tnt_cli.api import load as _load

    return _load(model, **kwargs)


def save(model: TNTModel, out_dir: str, **kwargs: Any) -> Path:
    """Write a TNT model as a Hub-ready directory (config.json, model.safetensors, heads, model card)."""
    from tnt_cli.api import save as _save

    return _save(model, out_dir, **kwargs)


def __getattr__(name: str) -> Any:
    """Lazy exports, so `import tnt_cli` stays free of torch."""
    if name in ("Schedule", "TNTModel", "NoiseConfig"):
        import tnt_cli.engine as engine

        return getattr(engine, name)
    raise AttributeError(f"module 'tnt_cli' has no attribute {name!r}")


__all__ = ["NoiseConfig", "Schedule", "TNTModel", "__version__", "load", "save"]
