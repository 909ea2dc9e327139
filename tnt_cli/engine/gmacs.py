"""Analytic multiply-accumulate count of a ViT under a token plan.

Counted like fvcore (what ViT papers call "GFLOPs"): every Linear and convolution, the two attention matmuls,
LayerNorms (5 MACs per element with affine weights, 4 without), TNT's relevance heads at pruning stages and the
similarity matrix of similarity pruning. The merge/fuse reducers add their weighted sums (one MAC per element of
every token that enters a merged or fused token, and per element of the size-weighted average pooling) and, for
merge, the similarity matrix of left-out against kept tokens; a fused token is just one more token in every later
block. Activations, softmax, residual adds, gathers, normalising vectors, the divisions of a mean and the
log(size) attention bias are free, as in fvcore.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from torch import nn

from tnt_cli.engine.schedule import Stage, TokenPlan


@dataclass
class MacsReport:
    """MACs of one forward pass for one image, split by where they are spent."""

    embed: int = 0
    blocks: list[int] = field(default_factory=list)
    tokens_per_block: list[int] = field(default_factory=list)
    pruning: int = 0
    head: int = 0

    @property
    def total(self) -> int:
        return self.embed + sum(self.blocks) + self.pruning + self.head

    @property
    def gmacs(self) -> float:
        return self.total / 1e9


def norm_macs(module: nn.Module, elements: int) -> int:
    if isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
        return elements * (5 if getattr(module, "weight", None) is not None else 4)
    if type(module).__name__ in ("RmsNorm", "RMSNorm", "SimpleNorm"):
        return elements * 4
    return 0


def layer_macs(parts: Iterable[nn.Module], tokens: int, dim: int) -> int:
    """Every Linear and norm inside `parts`, applied to `tokens` tokens of width `dim`."""
    macs = 0
    for part in parts:
        for module in part.modules():
            if isinstance(module, nn.Linear):
                macs += tokens * module.in_features * module.out_features
            else:
                macs += norm_macs(module, tokens * dim)
    return macs


def attention_inner_dim(block: nn.Module, dim: int) -> int:
    """heads x head_dim of the block's attention (the width q @ k^T and attn @ v work in)."""
    attn = getattr(block, "attn", block)
    heads, head_dim = getattr(attn, "num_heads", None), getattr(attn, "head_dim", None)
    return heads * head_dim if heads and head_dim else dim


def block_macs(block: nn.Module, tokens: int, dim: int) -> int:
    """One transformer block on `tokens` tokens: projections, attention matmuls and norms."""
    return layer_macs((block,), tokens, dim) + 2 * tokens * tokens * attention_inner_dim(block, dim)


def attention_macs(block: nn.Module, tokens: int, dim: int) -> int:
    """The first half of a pre-norm block (norm1 + attention, both matmuls) on `tokens` tokens; with `mlp_macs`
    it adds up to `block_macs` (the baselines run the two halves on different token counts)."""
    return layer_macs((block.norm1, block.attn), tokens, dim) + 2 * tokens * tokens * attention_inner_dim(block, dim)


def mlp_macs(block: nn.Module, tokens: int, dim: int) -> int:
    """The second half of a pre-norm block (norm2 + MLP) on `tokens` tokens."""
    return layer_macs((block.norm2, block.mlp), tokens, dim)


def embed_macs(vit: nn.Module) -> int:
    """Patch embedding convolution (plus its norm and the pre-norm) for one image."""
    embed = vit.patch_embed
    proj = embed.proj
    num_patches = int(embed.num_patches)
    macs = 0
    if isinstance(proj, nn.Conv2d):
        kh, kw = proj.kernel_size
        macs += num_patches * proj.in_channels // proj.groups * kh * kw * proj.out_channels
    else:
        macs += sum(num_patches * m.in_features * m.out_features for m in proj.modules() if isinstance(m, nn.Linear))
    dim = int(vit.embed_dim)
    macs += norm_macs(getattr(embed, "norm", nn.Identity()), num_patches * dim)
    macs += norm_macs(vit.norm_pre, (num_patches + int(vit.num_prefix_tokens)) * dim)
    return macs


def head_macs(vit: nn.Module, final_tokens: int) -> int:
    """Final norm over the remaining tokens, pooling extras and the classifier head(s)."""
    dim = int(vit.embed_dim)
    macs = norm_macs(vit.norm, final_tokens * dim)
    macs += norm_macs(getattr(vit, "fc_norm", nn.Identity()), dim)
    attn_pool = getattr(vit, "attn_pool", None)
    if attn_pool is not None:
        linears = [m for m in attn_pool.modules() if isinstance(m, nn.Linear)]
        macs += sum(final_tokens * m.in_features * m.out_features for m in linears)
    for name in ("head", "head_dist"):
        head = getattr(vit, name, None)
        if isinstance(head, nn.Linear):
            macs += head.in_features * head.out_features
    return macs


def count_macs(vit: nn.Module, plan: TokenPlan, *, head_norm: bool = True) -> MacsReport:
    """MACs of `vit` running `plan` (a dense plan gives the plain model's count)."""
    dim = int(vit.embed_dim)
    report = MacsReport(embed=embed_macs(vit))
    tokens = plan.tokens_per_block
    for block, n in zip(vit.blocks, tokens):
        report.blocks.append(block_macs(block, n, dim))
        report.tokens_per_block.append(n)
    for stage in plan.stages:
        report.pruning += relevance_head_macs(stage, dim, head_norm=head_norm)
        if stage.sim_r:
            candidates = stage.n_relevance if stage.n_relevance is not None else stage.n_in
            half = candidates // 2
            report.pruning += half * (candidates - half) * dim
        report.pruning += reducer_macs(stage, dim)
    report.head = head_macs(vit, plan.num_prefix + plan.final_patches)
    if any(stage.n_reduced for stage in plan.stages) and _size_weighted_pool(vit):
        tokens = plan.final_patches + (plan.num_prefix if getattr(vit, "pool_include_prefix", False) else 0)
        report.head += tokens * dim  # sizes times tokens; the plain mean it replaces is free
    return report


def relevance_head_macs(stage: Stage, dim: int, *, head_norm: bool = True) -> int:
    """The relevance head scoring a stage's tokens (on layer-normed tokens with `head_norm`); 0 without one."""
    if stage.n_relevance is None:
        return 0
    return stage.n_in * dim + (stage.n_in * dim * 4 if head_norm else 0)


def reducer_macs(stage: Stage, dim: int) -> int:
    """What merging or fusing the tokens the top-k left out costs at one stage (0 for drop)."""
    left_out = stage.n_reduced
    if not left_out:
        return 0
    if stage.reducer == "merge":
        kept = stage.n_kept
        # cosine similarity of every left-out token to every kept one, then kept * size + sum of left-out * size
        return left_out * kept * dim + (kept + left_out) * dim
    return left_out * dim  # fuse: one size-weighted sum of the left-out tokens


def _size_weighted_pool(vit: nn.Module) -> bool:
    """Mirrors TNTModel.forward_head: average pooling over sized tokens is a weighted sum."""
    return (
        getattr(vit, "attn_pool", None) is None
        and getattr(vit, "global_pool", None) in ("avg", "avgmax")
        and getattr(vit, "head_dist", None) is None
    )
