"""What one traced picture shows, as plain data: the stages on the patch grid and the prediction.

`tnt_cli.viz.core` fills it in; `tnt_cli.viz.render` draws it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tnt_cli.methods.registry import REFERENCE


@dataclass
class StageView:
    """One pruning stage on one image, on the patch grid (rows, cols)."""

    block: int  # -1: similarity pruning on the patch embeddings, before block 0
    n_in: int
    n_out: int
    kept: np.ndarray  # (rows, cols) bool: patches still present after this stage
    present: np.ndarray  # (rows, cols) bool: patches entering this stage
    relevance: np.ndarray | None  # (rows, cols) float scores the stage ranked by; NaN where no token entered
    kept_positions: list[int]  # original patch indices (row-major) kept, in the order the model holds them
    # (n_in / n_out count tokens: with the fuse reducer one of them is a fused token, on no patch of the grid)

    @property
    def label(self) -> str:
        return "before block 0" if self.block < 0 else f"after block {self.block}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "block": self.block,
            "tokens_in": self.n_in,
            "tokens_kept": self.n_out,
            "kept_positions": list(self.kept_positions),
        }


@dataclass
class ImageResult:
    """Everything one picture shows: the input as the model saw it, the stages and the prediction."""

    source: str
    image: np.ndarray  # (H, W, 3) float in [0, 1]
    grid: tuple[int, int]
    patch_size: tuple[int, int]
    stages: list[StageView]
    top: list[tuple[int, float]]  # (class index, probability), best first
    class_names: list[str] | None = None
    method: str = REFERENCE
    schedule: str = "dense"  # how the configuration is described
    output: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def prediction(self) -> int:
        return self.top[0][0]

    @property
    def probability(self) -> float:
        return self.top[0][1]

    def class_label(self, index: int) -> str:
        if self.class_names and 0 <= index < len(self.class_names):
            return self.class_names[index]
        return f"class {index}"

    @property
    def masks(self) -> list[np.ndarray]:
        """Kept-patch masks, one per stage."""
        return [s.kept for s in self.stages]

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.source,
            "output": str(self.output) if self.output else None,
            "method": self.method,
            "schedule": self.schedule,
            "grid": list(self.grid),
            "prediction": self.prediction,
            "label": self.class_label(self.prediction),
            "probability": self.probability,
            "top": [{"class": i, "label": self.class_label(i), "probability": p} for i, p in self.top],
            "stages": [s.to_dict() for s in self.stages],
        }
