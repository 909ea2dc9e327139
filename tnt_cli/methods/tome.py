"""Token Merging (Bolya et al., ICLR 2023) as published, on a TNT model's timm ViT.

In every block, between attention and MLP:
1. attention with proportional attention: log(size) of each key is added to the logits;
2. metric = the attention keys (after timm's k_norm) averaged over heads, cosine-normalised;
3. bipartite soft matching over ALL tokens: A = even positions, B = odd positions; each A token's edge is its
   most similar B token; prefix tokens (class, distillation, registers) are protected (their A rows and B
   columns are -inf); the r = min(r, (T - prefix) // 2) strongest edges are merged;
4. merging is a size-weighted average: (sum x * size) / (sum size), and sizes add up;
5. output order as ToMe: unmerged A tokens then B tokens, with the class-token case sorting the unmerged A
   tokens by position (ToMe keeps the edge order without a class token); prefix tokens are pulled to the front
   in their original order (ToMe's [cls, dist, rest of A, rest of B] with a distillation token, generalised);
6. then the MLP on the merged tokens: x + drop_path2(ls2(mlp(norm2(x)))).
Deviations: timm's LayerScale (ls1 / ls2) is honoured (ToMe's patch predates it); for average-pooled models the
final pooling is a size-weighted mean of the non-prefix tokens (our extension: ToMe pools unweighted), class-
token models use timm's `forward_head`. Matching indices are computed without gradients, as in ToMe.
`r` may also be a per-block list (ToMe's `parse_r` accepts one), which the GMACs matching uses: at a budget,
ToMe takes the per-block r whose MACs are closest to TNT's (`match_tome_r`: r in every block, r + 1 in the first m
blocks, since a constant r moves DeiT-S in steps of up to 7%).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tnt_cli.engine import Schedule, TNTModel
from tnt_cli.errors import SettingError, TntError
from tnt_cli.methods.base import Configured, reference_macs
from tnt_cli.methods.blocks import BlockCosts, attention_residual, check_blocks, mlp_residual
from tnt_cli.methods.registry import Method


def per_block_r(r: int | Sequence[int], depth: int) -> tuple[int, ...]:
    rs = (int(r),) * depth if isinstance(r, int) else tuple(int(v) for v in r)
    if len(rs) != depth:
        raise TntError(f"ToMe needs one r per block: {len(rs)} given for {depth} blocks")
    if any(v < 0 for v in rs):
        raise SettingError("{tome_r} must be >= 0, got {value}", value=min(rs))
    return rs


def tome_token_counts(num_tokens: int, num_prefix: int, rs: Sequence[int]) -> list[tuple[int, int]]:
    """(tokens entering attention, tokens entering the MLP) per block."""
    counts, t = [], num_tokens
    for r in rs:
        merged = min(r, (t - num_prefix) // 2)
        counts.append((t, t - merged))
        t -= merged
    return counts


def tome_macs(vit: nn.Module, rs: Sequence[int], costs: BlockCosts | None = None) -> int:
    """Exact MACs per image: attention on T tokens, the |A| x |B| x head_dim similarity, MLP on T - r."""
    costs = costs or BlockCosts(vit)
    p = int(vit.num_prefix_tokens)
    t0 = p + int(vit.patch_embed.num_patches)
    macs = costs.embed
    t_out = t0
    for i, (t_in, t_out) in enumerate(tome_token_counts(t0, p, rs)):
        macs += costs.attention(i, t_in) + costs.mlp(i, t_out)
        if t_out < t_in:
            macs += ((t_in + 1) // 2) * (t_in // 2) * costs.head_dim[i]
    return macs + costs.head(t_out)


def match_tome_r(vit: nn.Module, target_macs: float) -> tuple[int, ...]:
    """The per-block r closest in MACs to `target_macs`: r in every block, r + 1 in the first m blocks.

    A constant r moves DeiT-S's GMACs in steps of up to ~7%; adding one merge in the first m blocks fills the
    steps. Ties go to the cheaper plan.
    """
    costs = BlockCosts(vit)
    depth, n = len(vit.blocks), int(vit.patch_embed.num_patches)
    best, best_gap = (0,) * depth, float("inf")
    for r in range(n // 2 + 1):
        for m in range(depth):
            rs = (r + 1,) * m + (r,) * (depth - m)
            gap = abs(tome_macs(vit, rs, costs) - target_macs)
            if gap <= best_gap:
                best, best_gap = rs, gap
        if tome_macs(vit, (r,) * depth, costs) < target_macs - best_gap:
            break  # cheaper than the target by more than the best gap: larger r only moves away
    return best


def bipartite_soft_matching(
    metric: torch.Tensor, r: int, num_prefix: int, sort_unmerged: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices of one ToMe step on metric (B, T, C): (unmerged A, merged A, their B destinations), A-local.

    Unmerged A indices come in output order (protected prefix first, by position; then the rest by position
    when `sort_unmerged`, else in ToMe's edge order).
    """
    with torch.no_grad():
        if metric.dtype not in (torch.float32, torch.float64):
            metric = metric.float()
        metric = F.normalize(metric, dim=-1)
        a, b = metric[:, ::2], metric[:, 1::2]
        scores = a @ b.transpose(1, 2)  # (B, |A|, |B|)
        pa, pb = (num_prefix + 1) // 2, num_prefix // 2  # protected rows of A, columns of B
        if pb:
            scores[:, :, :pb] = -float("inf")
        node_max, node_idx = scores[:, pa:].max(dim=-1)  # unprotected A rows only: -inf rows never merge
        edge = node_max.argsort(dim=-1, descending=True) + pa
        src = edge[:, :r]
        rest = edge[:, r:]
        if sort_unmerged:
            rest = rest.sort(dim=-1).values
        batch = metric.shape[0]
        prefix = torch.arange(pa, device=metric.device).expand(batch, -1)
        unm = torch.cat([prefix, rest], dim=1)
        dst = torch.gather(node_idx, 1, src - pa)
    return unm, src, dst


def merge_wavg(
    x: torch.Tensor, size: torch.Tensor, unm: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, num_prefix: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Size-weighted merge of x (B, T, D) with sizes (B, T, 1); prefix tokens first, in original order."""
    dim = x.shape[-1]
    xs = torch.cat([x * size, size], dim=-1)  # merge values and sizes in one pass
    a, b = xs[:, ::2], xs[:, 1::2]
    unm_x = torch.gather(a, 1, unm.unsqueeze(-1).expand(-1, -1, dim + 1))
    src_x = torch.gather(a, 1, src.unsqueeze(-1).expand(-1, -1, dim + 1))
    b = b.scatter_add(1, dst.unsqueeze(-1).expand(-1, -1, dim + 1), src_x)
    pa, pb = (num_prefix + 1) // 2, num_prefix // 2
    if pb:  # interleave prefix tokens back into their original order: A0, B0, A1, B1, ...
        prefix = torch.stack([unm_x[:, :pb], b[:, :pb]], dim=2).flatten(1, 2)
        if pa > pb:
            prefix = torch.cat([prefix, unm_x[:, pb:pa]], dim=1)
        out = torch.cat([prefix, unm_x[:, pa:], b[:, pb:]], dim=1)
    else:
        out = torch.cat([unm_x, b], dim=1)
    size = out[..., dim:]
    return out[..., :dim] / size, size


def configure(model: TNTModel, schedule: Schedule, method: Method, *, seed: int = 0, own=None) -> Configured:
    """ToMe at the r plan closest to TNT's MACs at `schedule`, or at `own` (its merge count r, or one per block)."""
    check_blocks(model.vit, method.name)
    rs = match_tome_r(model.vit, reference_macs(model, schedule)) if own is None else per_block_r(own, model.depth)
    details = {"schedule": None, "tome_r": min(rs) if rs else 0, "tome_r_per_block": list(rs)}  # no schedule runs
    return Configured(tome_macs(model.vit, rs), schedule, describe_tome(rs), lambda: ToMeViT(model, rs), details,
                      reduces=any(rs), own=rs)  # fmt: skip


def describe_tome(rs: Sequence[int]) -> str:
    """'tome r 3 (4 in blocks 0-1)': the plan as reports show it."""
    rs = tuple(rs)
    if not rs:
        return "tome r 0"
    base = min(rs)
    more = [i for i, r in enumerate(rs) if r > base]
    if not more:
        return f"tome r {base}"
    blocks = f"block {more[0]}" if len(more) == 1 else f"blocks {more[0]}-{more[-1]}"
    return f"tome r {base} ({base + 1} in {blocks})"


class ToMeViT(nn.Module):
    """A TNT model's timm ViT run with ToMe: r merges in every block (a per-block list is allowed)."""

    def __init__(self, model: nn.Module, r: int | Sequence[int]) -> None:
        super().__init__()
        self.model = model
        self.rs = per_block_r(r, model.depth)

    @property
    def r(self) -> int:
        return min(self.rs) if self.rs else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_from(self.model.embed(x))

    def states_needed(self) -> set[int]:
        return {0}  # ToMe changes every block

    def forward_from_states(self, states: dict[int, torch.Tensor]) -> torch.Tensor:
        return self.forward_from(states[0])

    def forward_from(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Logits from embedded tokens (the input of block 0; ToMe changes every block, so start is 0)."""
        if start != 0:
            raise ValueError("ToMe starts at block 0")
        vit, p = self.model.vit, self.model.num_prefix_tokens
        sort_unmerged = getattr(vit, "cls_token", None) is not None
        size = None  # all ones until the first merge (ToMe: no proportional attention before it)
        for blk, r in zip(vit.blocks, self.rs):
            t = x.shape[1]
            r = min(r, (t - p) // 2)
            bias = None if size is None else size[..., 0].log()
            if r <= 0:
                x = blk(x) if bias is None else blk(x, attn_mask=bias[:, None, None, :].to(x.dtype))
                continue
            x, _, _, k = attention_residual(blk, x, bias)
            if size is None:
                size = x.new_ones(x.shape[0], t, 1)
            unm, src, dst = bipartite_soft_matching(k.mean(dim=1), r, p, sort_unmerged)
            x, size = merge_wavg(x, size, unm, src, dst, p)
            x = mlp_residual(blk, x)
        x = vit.norm(x)
        return pool_head(vit, x, size)


def pool_head(vit: nn.Module, x: torch.Tensor, size: torch.Tensor | None) -> torch.Tensor:
    """timm's head, with average pooling weighted by token size (a merged token counts as its patches)."""
    if size is None or getattr(vit, "attn_pool", None) is not None or getattr(vit, "global_pool", None) != "avg":
        return vit.forward_head(x)
    start = 0 if getattr(vit, "pool_include_prefix", False) else int(vit.num_prefix_tokens)
    tokens, weights = x[:, start:], size[:, start:]
    pooled = (tokens * weights).sum(dim=1) / weights.sum(dim=1)
    return vit.head(vit.head_drop(vit.fc_norm(pooled)))
