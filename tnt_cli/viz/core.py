"""Which patches survive each pruning stage, per image, as plain data (the pictures are drawn from this).

Runs the configured method's `forward_traced` (tnt, the random baseline on TNT's schedule and top-k, or EViT at
the GMACs matched to the schedule) and turns each stage's original patch positions into boolean masks on the patch grid,
plus the scores the stage ranked tokens by, as a relevance map.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from tnt_cli.errors import SettingError, TntError
from tnt_cli.methods.registry import REFERENCE, canonical, names
from tnt_cli.viz.result import ImageResult, StageView

if TYPE_CHECKING:
    from PIL import Image

    from tnt_cli.engine import Schedule, TNTModel

METHODS = names(traceable=True)  # the methods that select tokens (an alias is accepted for its method)

BATCH = 16


def check_method(method: str) -> str:
    """The canonical name of a method that selects tokens (cls-attn = evit), or one line naming the choices."""
    name = canonical(method)
    if name not in METHODS:
        raise SettingError(
            "unknown {method} {name!r}: choose one of {choices}", name=method, choices=", ".join(METHODS)
        )
    return name


@contextmanager
def method_context(model: TNTModel, method: str, schedule: Schedule | None, seed: int = 0) -> Iterator[Any]:
    """Run `model` as `method` at `schedule` (default: its own), restoring scorer and schedule afterwards."""
    from tnt_cli.methods.apply import apply_method

    with apply_method(model, check_method(method), schedule, seed=seed) as setup:
        yield setup


def trace_images(
    model: TNTModel,
    images: Sequence[Image.Image],
    *,
    sources: Sequence[str] | None = None,
    method: str = REFERENCE,
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
        described = setup.describe()
        for start in range(0, len(images), BATCH):
            x = torch.stack([transform(img) for img in images[start : start + BATCH]]).to(device)
            setup.begin_batch(start)
            logits, traces = setup.module.forward_traced(x)
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
