"""The Python API: load a model ready to run with its schedule, save one as a Hub-ready directory.

import tnt_cli
model = tnt_cli.load("runs/deit_s_tnt")                      # TNTModel, eval mode, its saved schedule
model.set_schedule(tnt_cli.Schedule(prune_layers=(2,), keep_rates=(0.5,)))
tnt_cli.save(model, "models/deit_s_tnt_0.5")                 # config.json, weights, heads, model card
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tnt_cli.engine import Schedule, TNTModel
    from tnt_cli.io.builder import Provenance

# where each model `load` returned came from, so `save` writes the same base_model / heads_trained back
_PROVENANCE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def load(
    model: str | os.PathLike,
    *,
    schedule: Schedule | None = None,
    random_weights: bool = False,
    offline: bool = False,
    arch: str | None = None,
    require_trained_heads: bool = True,
) -> TNTModel:
    """MODEL (timm name, hf-hub:org/name[@rev], directory, .safetensors, .pth) as a TNTModel in eval mode.

    The model runs with `schedule` if given, else with the schedule saved in its directory (dense for plain
    timm models). Change it any time with `model.set_schedule(tnt_cli.Schedule(...))`.
    """
    from tnt_cli.io.sources import load_model

    loaded = load_model(
        model,
        schedule=schedule,
        random_weights=random_weights,
        offline=offline,
        arch=arch,
        require_trained_heads=require_trained_heads,
    )
    if loaded.provenance is not None:
        _PROVENANCE[loaded.model] = loaded.provenance
    return loaded.model


def save(
    model: TNTModel,
    out_dir: str | os.PathLike,
    *,
    base_model: str | None = None,
    metrics: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    overwrite: bool = False,
    provenance: Provenance | None = None,
) -> Path:
    """Write MODEL (with its current schedule) as a tnt model directory; returns the directory.

    A model from `load` keeps where it came from (its Hub `base_model`, whether its heads are trained)
    unless `base_model` / `provenance` say otherwise.
    """
    from tnt_cli.io.model_dir import save_model_dir

    return save_model_dir(
        out_dir,
        model,
        base_model=base_model,
        training=training,
        metrics=metrics,
        overwrite=overwrite,
        provenance=provenance or _PROVENANCE.get(model),
    )


def describe(
    model: str | os.PathLike | Any, *, schedule: Schedule | None = None, offline: bool = False
) -> dict[str, Any]:
    """What `tnt info` reports for MODEL: architecture, sizes, tokens per block and GMACs dense vs pruned.

    MODEL is a MODEL string or a model object: a TNTModel (from `load`) or a plain timm VisionTransformer.
    Counting needs shapes only: a timm name is built without weights (never a download), and heads need not be
    trained to say what `schedule` (default: the model's own) would cost. A model object is left as it was.
    """
    from torch import nn

    from tnt_cli.analysis import describe_model

    if isinstance(model, nn.Module):
        return {**_describe_object(model, schedule), "source": type(model).__name__}
    from tnt_cli.io.sources import classify, load_model

    shapes_only = classify(str(model))[0] == "timm"
    loaded = load_model(model, random_weights=shapes_only, schedule=schedule, offline=offline,
                        require_trained_heads=False)  # fmt: skip
    return {**describe_model(loaded.model), "source": loaded.source}


def _describe_object(model: Any, schedule: Schedule | None) -> dict[str, Any]:
    """`describe_model` of a TNTModel at `schedule` (its own schedule is put back), or of a plain timm ViT
    wrapped with heads wherever `schedule` prunes (heads only count here, they never run)."""
    from tnt_cli.analysis import describe_model
    from tnt_cli.engine import TNTModel, attach_tnt
    from tnt_cli.engine.model import check_supported
    from tnt_cli.io.builder import default_head_blocks

    if not isinstance(model, TNTModel):
        check_supported(model)
        return describe_model(attach_tnt(model, default_head_blocks(len(model.blocks), schedule), schedule=schedule))
    own = model.schedule
    try:
        if schedule is not None:
            model.set_schedule(schedule)
        return describe_model(model)
    finally:
        model.set_schedule(own)
