"""Building a TNT model from parts: a timm backbone, a state dict, heads, and the record of where they came from.

`tnt_cli.io.sources` resolves a MODEL string and `tnt_cli.io.model_dir` reads a directory; both build through
here (as timm's `_builder` serves its `_factory`), so neither needs the other's internals.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tnt_cli.errors import TntError, first_line
from tnt_cli.recipes import RECIPES

if TYPE_CHECKING:
    import torch

    from tnt_cli.engine import NoiseConfig, Schedule, TNTModel
    from tnt_cli.io.arch import SplitState

# Heads an untrained model (a timm name, a plain checkpoint, random weights) gets: the paper's noise blocks 0-4
# (which include the default recipe's 1 and 3), so the paper's schedules run on it and `tnt finetune` (which draws
# these heads from its seeded RNG before its own) reproduces earlier runs of models deeper than 4 blocks bit for bit.
DEFAULT_HEAD_BLOCKS = RECIPES["official"].noise_blocks
IMPORTED_FROM = {"official": "an official TNT checkpoint (github.com/mx-ethan-rao/tnt)"}


@dataclass(frozen=True)
class Provenance:
    """Where a model's weights came from: what `save_model_dir` writes into config.json and the card.

    `base_model` is a Hub id (`org/name`, never a local path) and survives any number of load/save rounds
    (finetune -> prune -> push), so the card's `base_model` names the original Hub model.
    """

    base_model: str | None = None
    heads_trained: bool = True
    random_weights: bool = False
    training: dict | None = None
    imported_from: str | None = None


@dataclass
class LoadedModel:
    """A TNT model plus what we know about where it came from.

    `heads_trained` says whether the relevance heads were trained (the same fact as `Provenance.heads_trained`
    and config.json's); `heads_usable` whether relevance pruning may run on them (trained, or random weights
    meant for speed and compute work). `provenance` holds the plain facts `save_model_dir` needs to write a
    truthful config.
    """

    model: TNTModel
    source: str
    architecture: str
    base_model: str | None = None
    heads_trained: bool = False
    tnt_config: dict = field(default_factory=dict)
    random_weights: bool = False
    notes: list[str] = field(default_factory=list)
    provenance: Provenance | None = None

    @property
    def heads_usable(self) -> bool:
        """Relevance pruning may run: the heads were trained, or every weight is random anyway (speed work)."""
        return self.heads_trained or self.random_weights

    def record_provenance(
        self, *, heads_trained: bool, training: dict | None = None, imported_from: str | None = None
    ) -> Provenance:
        """Set `provenance` from what the loader found (heads trained? from where?)."""
        from tnt_cli.io.hub import hub_model_id

        self.provenance = Provenance(
            base_model=hub_model_id(self.base_model),
            heads_trained=bool(heads_trained),
            random_weights=self.random_weights,
            training=training,
            imported_from=imported_from,
        )
        return self.provenance


def create_timm_model(name: str, *, pretrained: bool, **kwargs):
    """timm.create_model with timm's and the Hub's errors turned into one-line messages."""
    import contextlib

    import timm

    from tnt_cli.io.hub import hub_access, hub_error

    bare = "/" not in name and ":" not in name  # a timm name (its weights come from the Hub)
    if bare and not timm.is_model(name):
        raise TntError(f"unknown timm model {name!r} (see `timm.list_models()` for names)")
    try:
        with hub_access() if pretrained and not name.startswith("local-dir:") else contextlib.nullcontext():
            return timm.create_model(name, pretrained=pretrained, **kwargs)
    except TntError:
        raise
    except Exception as exc:  # timm and the Hub raise many types; the user needs the reason, not a trace
        mapped = hub_error(exc, name, timm_name=bare)
        if mapped is not None:
            raise mapped from None
        raise TntError(f"could not create {name!r}: {type(exc).__name__}: {first_line(exc)}") from exc


def build_backbone(name: str, architecture: str, *, where: str, pretrained: bool = False, **kwargs) -> Any:
    """A timm model by name (or local-dir:), refused unless it is a VisionTransformer tnt can run."""
    import timm

    from tnt_cli.engine.model import check_supported

    if name.startswith("local-dir:") and not timm.is_model(architecture):
        raise TntError(
            f"{where}: config.json names architecture {architecture!r}, which this timm does not know "
            "(tnt supports timm VisionTransformer models)"
        )
    vit = create_timm_model(name, pretrained=pretrained, **kwargs)
    try:
        check_supported(vit)
    except TntError as exc:
        raise TntError(f"{where}: {exc}") from None
    return vit.eval()


def backbone_from_config(config: dict, *, where: str) -> Any:
    """Build from a timm config dict (via a throwaway local-dir, so timm parses it exactly as it would)."""
    with tempfile.TemporaryDirectory(prefix="tnt-config-") as tmp:
        Path(tmp, "config.json").write_text(json.dumps(config))
        return build_backbone(f"local-dir:{tmp}", str(config.get("architecture")), where=where)


def default_head_blocks(depth: int, schedule: Schedule | None) -> list[int]:
    blocks = {b for b in DEFAULT_HEAD_BLOCKS if b < depth}
    if schedule is not None:
        blocks |= {b for b in schedule.prune_layers if 0 <= b < depth}
    return sorted(blocks)


def assemble(
    vit: Any,
    state: dict[str, torch.Tensor],
    *,
    where: str,
    noise: NoiseConfig | None = None,
    head_norm: bool | None = None,
    expect_heads: list[int] | None = None,
    schedule: Schedule | None = None,
) -> tuple[TNTModel, SplitState]:
    """Load a checkpoint's backbone strictly into `vit` and its heads (if any) into a new TNT wrapper."""
    from tnt_cli.engine import NoiseConfig, attach_tnt
    from tnt_cli.io.arch import check_head_widths, split_checkpoint

    split = split_checkpoint(state)
    load_backbone(vit, split.backbone, where=where)
    check_head_widths(split.heads, int(vit.embed_dim), where)
    if expect_heads is not None and sorted(split.heads) != sorted(int(b) for b in expect_heads):
        raise TntError(
            f"{where}: heads file has blocks {sorted(split.heads)} but config.json lists {sorted(expect_heads)}"
        )
    depth = len(vit.blocks)
    if any(b >= depth for b in split.heads):
        raise TntError(f"{where}: relevance head at block {max(split.heads)} but the model has {depth} blocks")
    if not split.heads:
        return attach_tnt(vit, default_head_blocks(depth, schedule)), split
    blocks = sorted(split.heads)
    if split.layout == "official":
        official = RECIPES["official"]  # the paper's code: its heads were trained with this noise
        noise = NoiseConfig.from_settings(official, blocks=blocks)
        head_norm = False  # the official heads score the raw block output at deployment
    model = attach_tnt(vit, blocks, noise=noise, head_norm=True if head_norm is None else head_norm)
    head_state = {f"{b}.{name}": t for b, tensors in split.heads.items() for name, t in tensors.items()}
    model.heads.load_state_dict(head_state)
    return model, split


def load_backbone(vit: Any, state: dict[str, torch.Tensor], *, where: str) -> None:
    """Strict load with one-line errors naming the first problem."""
    try:
        missing, unexpected = vit.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # size mismatches
        detail = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), first_line(exc))
        raise TntError(f"{where}: weights do not fit the architecture: {detail}") from None
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise TntError(f"{where}: weights do not match the architecture: {', '.join(parts)} tensors")
