"""tnt: Training Noise Token pruning for timm Vision Transformers.

Importing this package is cheap: torch and timm load only when a model is touched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from tnt_cli.engine import TNTModel


def load(model: str, **kwargs: Any) -> TNTModel:
    """Load MODEL (timm name, hf-hub:, directory, .safetensors, .pth) as a TNT model in eval mode."""
    from tnt_cli.io.sources import load_model

    return load_model(model, **kwargs).model


__all__ = ["__version__", "load"]
