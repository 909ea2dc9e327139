"""Which patches survive each pruning stage, per image, as plain data (the pictures are drawn from this).

Runs the configured method's `forward_traced` (tnt, the random baseline on TNT's schedule and top-k, or EViT at
the GMACs matched to the schedule) and turns each stage's original patch positions into boolean masks on the patch grid,
plus the scores the stage ranked tokens by, as a relevance map.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tnt_cli.errors import TntError
from tnt_cli.method_names import ALIASES

if TYPE_CHECKING:
    from PIL import Image

    from tnt_cli.engine import Schedule, TNTModel

METHODS = ("tnt", "random", "evit")  # cls-attn is an alias of evit

BATCH = 16


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
    method: str = "tnt"
    schedule: str = "dense"
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


@contextmanager
def method_context(model: TNTModel, method: str, schedule: Schedule | None, seed: int = 0) -> Iterator[Any]:
    """Run `model` as `method` at `schedule` (default: its own), restoring scorer and schedule afterwards."""
    method = ALIASES.get(method, method)
    if method not in METHODS:
        raise TntError(f"unknown method {method!r} for visualize: choose one of {', '.join(METHODS)}")
    try:
        from tnt_cli.eval.baselines import apply_method
    except ImportError:
        apply_method = None
    if apply_method is not None:
        with apply_method(model, method, schedule, seed=seed) as setup:
            yield setup
        return
    if method != "tnt":
        raise TntError(f"method {method!r} needs tnt_cli.eval.baselines, which is not available")
    saved = model.schedule
    try:
        if schedule is not None:
            model.set_schedule(schedule)
        yield None
    finally:
        model.set_schedule(saved)


def trace_images(
    model: TNTModel,
    images: Sequence[Image.Image],
    *,
    sources: Sequence[str] | None = None,
    method: str = "tnt",
    schedule: Schedule | None = None,
    class_names: list[str] | None = None,
    transform=None,
    seed: int = 0,
    top_k: int = 5,
) -> list[ImageResult]:
    """Per image: the kept-patch masks and relevance maps of every stage, and the top predictions."""
    import torch

    from tnt_cli.viz.images import display_image, find_normalize, model_transform

    if model.training:
        raise TntError("visualize needs the model in eval mode (pruning only happens in eval mode)")
    transform = transform or model_transform(model.vit)
    norm = find_normalize(transform)
    sources = list(sources) if sources is not None else [f"image {i}" for i in range(len(images))]
    grid = tuple(int(g) for g in model.vit.patch_embed.grid_size)
    patch = tuple(int(p) for p in model.vit.patch_embed.patch_size)
    device = next(model.parameters()).device
    results: list[ImageResult] = []
    with method_context(model, method, schedule, seed) as setup, torch.no_grad():
        described = setup.describe() if setup is not None else model.schedule.describe()
        traced = setup.module if setup is not None else model
        for start in range(0, len(images), BATCH):
            x = torch.stack([transform(img) for img in images[start : start + BATCH]]).to(device)
            if setup is not None and hasattr(setup, "begin_batch"):
                setup.begin_batch(start)
            logits, traces = traced.forward_traced(x)
            probs = logits.float().softmax(dim=-1)
            top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
            for i in range(x.shape[0]):
                results.append(
                    ImageResult(
                        source=sources[start + i],
                        image=display_image(x[i], norm),
                        grid=grid,  # type: ignore[arg-type]
                        patch_size=patch,  # type: ignore[arg-type]
                        stages=[_stage_view(t, i, grid) for t in traces],
                        top=[(int(c), float(p)) for c, p in zip(top.indices[i], top.values[i])],
                        class_names=class_names,
                        method=method,
                        schedule=described,
                    )
                )
    return results


def _stage_view(trace, i: int, grid: tuple[int, int]) -> StageView:
    n = grid[0] * grid[1]
    kept_pos = trace.kept_positions[i].cpu().numpy()
    in_pos = trace.positions_in[i].cpu().numpy()
    if kept_pos.max(initial=-1) >= n or in_pos.max(initial=-1) >= n:
        raise TntError(f"stage at block {trace.block} reports patch positions beyond the {grid[0]}x{grid[1]} grid")
    on_grid_kept, on_grid_in = kept_pos >= 0, in_pos >= 0  # -1: a fused token (fuse reducer), on no patch
    kept = np.zeros(n, dtype=bool)
    kept[kept_pos[on_grid_kept]] = True
    present = np.zeros(n, dtype=bool)
    present[in_pos[on_grid_in]] = True
    relevance = None
    if trace.scores is not None:
        relevance = np.full(n, np.nan, dtype=np.float32)
        relevance[in_pos[on_grid_in]] = trace.scores[i].float().cpu().numpy()[on_grid_in]
        relevance = relevance.reshape(grid)
    return StageView(
        block=int(trace.block),
        n_in=int(in_pos.shape[0]),
        n_out=int(kept_pos.shape[0]),
        kept=kept.reshape(grid),
        present=present.reshape(grid),
        relevance=relevance,
        kept_positions=[int(p) for p in kept_pos[on_grid_kept]],
    )


def output_names(paths: Sequence[str | Path]) -> list[str]:
    """One PNG name per input: its stem, else (stems clash) its file name, else that plus its position."""
    stems = [Path(p).stem or "image" for p in paths]
    names = [f"{s}.png" if stems.count(s) == 1 else f"{Path(p).name}.png" for s, p in zip(stems, paths)]
    return [n if names.count(n) == 1 else f"{n[:-4]}-{i}.png" for i, n in enumerate(names)]


def visualize_files(
    model: TNTModel,
    paths: Sequence[str | Path],
    out_dir: str | Path,
    *,
    method: str = "tnt",
    schedule: Schedule | None = None,
    class_names: list[str] | None = None,
    renderer: str = "auto",
    overwrite: bool = False,
    seed: int = 0,
) -> list[ImageResult]:
    """Read `paths`, trace them, and write one PNG per image into `out_dir` (each written atomically).

    Every image is read and every target checked before anything is computed or written, so a bad input
    leaves `out_dir` untouched.
    """
    from tnt_cli.io.atomic import atomic_write_bytes
    from tnt_cli.viz.images import read_image
    from tnt_cli.viz.render import render_png, resolve_renderer

    if not paths:
        raise TntError("give at least one image")
    renderer = resolve_renderer(renderer)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise TntError(f"--out {out_dir} exists and is not a directory")
    images = [read_image(p) for p in paths]
    targets = [out_dir / name for name in output_names(paths)]
    clash = [t for t in targets if t.exists()]
    if clash and not overwrite:
        from tnt_cli.io.outdir import OutputExists

        raise OutputExists(clash[0])
    results = trace_images(
        model,
        images,
        sources=[str(p) for p in paths],
        method=method,
        schedule=schedule,
        class_names=class_names,
        seed=seed,
    )
    for result, target in zip(results, targets):
        atomic_write_bytes(target, render_png(result, renderer=renderer))
        result.output = target
    return results
