"""Resolve MODEL strings to a TNT model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tnt_cli.errors import TntError

if TYPE_CHECKING:
    from tnt_cli.engine import Schedule, TNTModel

DEFAULT_HEAD_BLOCKS = (0, 1, 2, 3, 4)


@dataclass
class LoadedModel:
    """A TNT model plus what we know about where it came from."""

    model: TNTModel
    source: str
    architecture: str
    base_model: str | None = None
    heads_trained: bool = False
    tnt_config: dict = field(default_factory=dict)


def create_timm_model(name: str, *, pretrained: bool, **kwargs):
    """timm.create_model with timm's errors turned into one-line messages."""
    import timm

    if "/" not in name and ":" not in name and not timm.is_model(name):
        raise TntError(f"unknown timm model {name!r} (see `timm.list_models()` for names)")
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except TntError:
        raise
    except Exception as exc:  # timm and the Hub raise many types; the user needs the reason, not a trace
        raise TntError(f"could not create {name!r}: {type(exc).__name__}: {first_line(exc)}") from exc


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_model(
    spec: str,
    *,
    random_weights: bool = False,
    schedule: Schedule | None = None,
    require_trained_heads: bool = True,
) -> LoadedModel:
    """Build the model MODEL names, in eval mode, with `schedule` installed when given.

    With `random_weights` the backbone and the heads are random (for speed and compute work only); heads are
    then created on blocks 0-4 and every scheduled block.
    """
    from tnt_cli.engine import attach_tnt

    vit = create_timm_model(spec, pretrained=not random_weights)
    vit.eval()
    depth = len(getattr(vit, "blocks", ()))
    blocks = {b for b in DEFAULT_HEAD_BLOCKS if b < depth}
    if schedule is not None:
        blocks |= {b for b in schedule.prune_layers if 0 <= b < depth}
    model = attach_tnt(vit, sorted(blocks))
    loaded = LoadedModel(model=model, source=spec, architecture=spec, heads_trained=random_weights)
    if schedule is not None:
        install_schedule(loaded, schedule, require_trained_heads=require_trained_heads)
    model.eval()
    return loaded


def install_schedule(loaded: LoadedModel, schedule: Schedule, *, require_trained_heads: bool = True) -> None:
    """Set the schedule, refusing relevance pruning with heads that were never trained."""
    if require_trained_heads and schedule.prune_layers and not schedule.is_dense and not loaded.heads_trained:
        raise TntError(
            f"{loaded.source} has no trained relevance heads: fine-tune it first (`tnt finetune`), "
            "use a baseline method, or pass --random-weights for speed work"
        )
    loaded.model.set_schedule(schedule)
