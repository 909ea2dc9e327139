"""EViT (Liang et al., ICLR 2022) as published, on a TNT model's timm ViT: prune inside the block.

In each pruning block: y = norm1(x); x = x + ls1(attn(y)); the class token's attention to every token,
averaged over heads, ranks the non-prefix tokens; the top k stay (prefix tokens always do); with `fuse`, ONE
extra token = sum over the dropped tokens of (cls-attention_i * x_i) is appended after them (unnormalised, as
EViT's code does it: its weights sum to the dropped tokens' share of the attention); then the MLP runs on the
kept tokens only: x = x + ls2(mlp(norm2(x))). Later blocks run unchanged on what is left; at a later stage the
fused token is a token like the others (kept, or fused again), as in EViT.
Deviations: the class-token row is recomputed from the block's own q and k (same math, so the block keeps its
fused attention kernel) and taken before attention dropout (EViT's code takes it after; with the usual
attn_drop = 0 they agree); EViT counts keep as ceil(rate * n), here the kept counts are set directly, matched to
TNT's GMACs (`evit_keep_counts`: at the schedule's blocks, the first stage's count searched over every value,
later stages keeping TNT's counts scaled by the same factor; pruning inside the block makes EViT cheaper at equal
counts, so it keeps a few more tokens; ties go to the cheaper plan). EViT needs a class token: models without one
are refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from tnt_cli.engine import Schedule, TNTModel
from tnt_cli.engine.model import StageTrace
from tnt_cli.engine.schedule import BEFORE_BLOCKS
from tnt_cli.errors import TntError
from tnt_cli.methods.base import Configured, reference_macs, token_plan
from tnt_cli.methods.blocks import BlockCosts, attention_residual, check_blocks, cls_attention, mlp_residual
from tnt_cli.methods.registry import Method, names


@dataclass(frozen=True)
class EvitStage:
    """Inside `block`, `n_in` non-prefix tokens (the fused one included) become `keep` (+1 fused)."""

    block: int
    n_in: int
    keep: int
    fuse: bool

    @property
    def n_out(self) -> int:
        return self.keep + (1 if self.fuse and self.keep < self.n_in else 0)


def check_evit(vit: nn.Module, method: str) -> None:
    if getattr(vit, "cls_token", None) is None:
        others = names(reduces=True, needs_class_token=False)
        raise TntError(
            f"{method} ranks tokens by the class token's attention, and this model has no class token "
            f"(use {', '.join(others[:-1])} or {others[-1]})"
        )
    check_blocks(vit, method)


def configure(
    model: TNTModel, schedule: Schedule, method: Method, *, seed: int = 0, own=None, fuse: bool = False
) -> Configured:
    """EViT at the schedule's blocks, its kept counts matched to TNT's MACs at `schedule`."""
    check_evit(model.vit, method.name)
    stages = evit_keep_counts(model, schedule, fuse=fuse)
    kept = ", ".join(f"block {s.block} keep {s.keep}/{s.n_in}" for s in stages) or "dense"
    return Configured(evit_macs(model.vit, stages), schedule, f"{method.name}: {kept}",
                      lambda: EViT(model, stages, fuse=fuse), {"evit_keep": [s.keep for s in stages]},
                      reduces=bool(stages))  # fmt: skip


def configure_fused(model: TNTModel, schedule: Schedule, method: Method, *, seed: int = 0, own=None) -> Configured:
    """EViT with the dropped tokens fused into one extra token."""
    return configure(model, schedule, method, seed=seed, own=own, fuse=True)


def evit_keep_counts(model: TNTModel, schedule: Schedule, fuse: bool) -> tuple[EvitStage, ...]:
    """EViT stages at the schedule's blocks whose MACs are closest to TNT's (see the module docstring)."""
    plan = token_plan(model, schedule)
    stages = [s for s in plan.stages if s.block != BEFORE_BLOCKS]
    if not stages:
        return ()
    vit, n = model.vit, model.num_patches
    costs, target = BlockCosts(vit), reference_macs(model, schedule)
    blocks, counts = [s.block for s in stages], [s.n_out for s in stages]
    best, best_gap, best_macs = (), float("inf"), 0
    for first in range(1, n + 1):
        scale = first / counts[0]
        keeps = [first] + [max(1, round(scale * k)) for k in counts[1:]]
        candidate = evit_stages(n, blocks, keeps, fuse)
        macs = evit_macs(vit, candidate, costs)
        gap = abs(macs - target)
        if gap < best_gap or (gap == best_gap and macs < best_macs):
            best, best_gap, best_macs = candidate, gap, macs
    return best


def evit_stages(num_patches: int, blocks: Sequence[int], keeps: Sequence[int], fuse: bool) -> tuple[EvitStage, ...]:
    """Stages with token counts; a stage that keeps every token is dropped (nothing to prune, nothing fused)."""
    stages, n = [], num_patches
    for block, keep in zip(blocks, keeps):
        keep = max(1, min(int(keep), n))
        if keep < n:
            stage = EvitStage(int(block), n, keep, fuse)
            stages.append(stage)
            n = stage.n_out
    return tuple(stages)


def evit_macs(vit: nn.Module, stages: Sequence[EvitStage], costs: BlockCosts | None = None) -> int:
    """Exact MACs per image: attention on the tokens entering, the CLS row q.k^T (T x inner), the fusion
    (dropped x dim), MLP and every later block on what is kept."""
    costs = costs or BlockCosts(vit)
    p = int(vit.num_prefix_tokens)
    by_block = {s.block: s for s in stages}
    t = p + int(vit.patch_embed.num_patches)
    macs = costs.embed
    for i in range(len(vit.blocks)):
        macs += costs.attention(i, t)
        stage = by_block.get(i)
        if stage is not None:
            macs += t * costs.inner[i]
            if stage.fuse:
                macs += (stage.n_in - stage.keep) * costs.dim
            t = p + stage.n_out
        macs += costs.mlp(i, t)
    return macs + costs.head(t)


class EViT(nn.Module):
    """A TNT model's timm ViT with EViT's token reorganisation inside the pruning blocks."""

    def __init__(self, model: nn.Module, stages: Sequence[EvitStage], fuse: bool = False) -> None:
        super().__init__()
        self.model = model
        self.stages = tuple(stages)
        self.fuse = fuse
        self._by_block = {s.block: s for s in self.stages}

    @property
    def first_block(self) -> int:
        return self.stages[0].block if self.stages else self.model.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_from(self.model.embed(x), 0)

    def states_needed(self) -> set[int]:
        return {self.first_block}  # the input of its first pruning block

    def forward_from_states(self, states: dict[int, torch.Tensor]) -> torch.Tensor:
        return self.forward_from(states[self.first_block], self.first_block)

    def forward_traced(self, x: torch.Tensor) -> tuple[torch.Tensor, list[StageTrace]]:
        if self.fuse:
            raise TntError("EViT's fused token is no patch of the image: trace EViT without fusion instead")
        trace: list[StageTrace] = []
        return self.forward_from(self.model.embed(x), 0, trace), trace

    def forward_from(self, x: torch.Tensor, start: int = 0, trace: list | None = None) -> torch.Tensor:
        """Logits from the input of block `start` (at or before the first pruning block)."""
        if start > self.first_block:
            raise ValueError(f"cannot resume EViT at block {start}: it prunes inside block {self.first_block}")
        vit, p = self.model.vit, self.model.num_prefix_tokens
        positions = None
        if trace is not None:
            positions = torch.arange(x.shape[1] - p, device=x.device).expand(x.shape[0], -1)
        for i in range(start, self.model.depth):
            blk = vit.blocks[i]
            stage = self._by_block.get(i)
            if stage is None:
                x = blk(x)
                continue
            x, _, q, k = attention_residual(blk, x)
            scores = cls_attention(blk.attn, q, k)[:, p:]  # (B, n): attention the class token pays each token
            x, positions = self._reorganise(x, scores, stage, positions, trace)
            x = mlp_residual(blk, x)
        return self.model.forward_head(vit.norm(x))

    def _reorganise(self, x, scores, stage: EvitStage, positions, trace):
        p = self.model.num_prefix_tokens
        prefix, tokens = x[:, :p], x[:, p:]
        index = scores.topk(stage.keep, dim=1, sorted=True).indices  # most attended first, as EViT
        kept = torch.gather(tokens, 1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
        parts = [prefix, kept]
        if stage.fuse:
            dropped = scores.scatter(1, index, 0.0)  # cls attention of the dropped tokens, 0 for the kept
            parts.append(dropped.unsqueeze(1).to(tokens.dtype) @ tokens)  # (B, 1, D): sum_i a_i x_i
        if positions is not None:
            kept_pos = torch.gather(positions, 1, index)
            trace.append(StageTrace(stage.block, kept_pos, scores, positions))
            positions = kept_pos
        return torch.cat(parts, dim=1), positions
