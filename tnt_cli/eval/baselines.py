"""Baseline token reducers in TNT's harness, written from the papers' descriptions.

- `random`: random scores, then TNT's own top-k schedule (same token counts as TNT).
- `cls-attn` (EViT, Liang et al. 2022): keep the patches the class token attends to most, averaged over heads.
  The CLS attention row is recomputed from the block's input (norm1 -> q_cls, k -> softmax), so the blocks keep
  their fused attention. Models without a class token fall back to the mean attention each patch receives.
- `tome` (Token Merging, Bolya et al. 2023): after every block, bipartite soft matching merges the r most similar
  patch pairs with size-weighted averages, and attention is made proportional to token size with a log(size)
  mask. Deviation from the paper: matching uses the block's output tokens rather than the attention keys, and
  merging happens between blocks, so timm's blocks run unchanged (and fused).
- `dense`: no reduction.

random and cls-attn plug into `TNTModel.scorer`, so they use exactly the schedule and top-k code TNT uses.
Every reducer keeps static shapes: token counts depend on the input size only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tnt_cli.engine import Schedule, TNTModel
from tnt_cli.errors import TntError

METHODS = ("tnt", "random", "cls-attn", "tome", "dense")
SCORER_METHODS = ("random", "cls-attn")

_MIX = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)


def check_method(method: str) -> str:
    if method not in METHODS:
        raise TntError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    return method


# --------------------------------------------------------------------------- random
class RandomScorer:
    """Uniform random scores per image, reproducible and independent of batch size and composition.

    The scores image i (its position in the evaluation order) gets at block b come from a generator seeded by
    (seed, i, b). The evaluation loop says where a batch starts with `begin_batch(start)`; without that, the
    scorer counts images itself (a call at a block not after the previous call's block starts a new batch),
    so results are reproducible for a given image order either way.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self.reset()

    def reset(self) -> None:
        self._start = 0
        self._last_block: int | None = None
        self._last_batch = 0

    def begin_batch(self, start: int) -> None:
        self._start = int(start)
        self._last_block = None
        self._last_batch = 0

    def image_seed(self, index: int, block: int) -> int:
        value = (self.seed * _MIX[0] + (index + 1) * _MIX[1] + (block + 2) * _MIX[2]) % (1 << 64)
        value ^= value >> 31
        return value % (1 << 63)

    def __call__(self, model: TNTModel, block: int, x_in: torch.Tensor, x_out: torch.Tensor) -> torch.Tensor:
        batch, n = x_out.shape[0], x_out.shape[1] - model.num_prefix_tokens
        if self._last_block is not None and block <= self._last_block:
            self._start += self._last_batch  # a new forward pass: the next images in the order
        self._last_block, self._last_batch = block, batch
        rows = []
        for i in range(batch):
            generator = torch.Generator().manual_seed(self.image_seed(self._start + i, block))
            rows.append(torch.rand(n, generator=generator))
        return torch.stack(rows).to(device=x_out.device)


# --------------------------------------------------------------------------- CLS attention
def _attention_parts(block: nn.Module) -> tuple[nn.Module, nn.Module]:
    norm1, attn = getattr(block, "norm1", None), getattr(block, "attn", None)
    if norm1 is None or attn is None or not isinstance(getattr(attn, "qkv", None), nn.Linear):
        raise TntError(
            f"cls-attn needs timm's standard attention blocks (norm1 + attn.qkv), not {type(block).__name__}"
        )
    return norm1, attn


def has_class_token(model: TNTModel) -> bool:
    return getattr(model.vit, "cls_token", None) is not None


class ClsAttentionScorer:
    """EViT's token attentiveness: the class token's attention to each patch in the pruning block, head-averaged.

    Computed from the block input x_in as the block's own attention computes it (norm1, qkv, q/k norms, scale,
    softmax over all tokens), but only for the class-token query, so it costs one key projection and one row.
    Without a class token it falls back to the mean attention each patch receives from all queries.
    """

    def __call__(self, model: TNTModel, block: int, x_in: torch.Tensor, x_out: torch.Tensor) -> torch.Tensor:
        norm1, attn = _attention_parts(model.vit.blocks[block])
        b, t, _ = x_in.shape
        heads, head_dim = attn.num_heads, attn.head_dim
        inner = heads * head_dim
        y = norm1(x_in)
        weight, bias = attn.qkv.weight, attn.qkv.bias
        k = F.linear(y, weight[inner : 2 * inner], None if bias is None else bias[inner : 2 * inner])
        k = attn.k_norm(k.view(b, t, heads, head_dim)).transpose(1, 2)  # (B, H, T, hd)
        p = model.num_prefix_tokens
        q_rows = y[:, :1] if has_class_token(model) else y
        q = F.linear(q_rows, weight[:inner], None if bias is None else bias[:inner])
        q = attn.q_norm(q.view(b, q_rows.shape[1], heads, head_dim)).transpose(1, 2)  # (B, H, Q, hd)
        probs = ((q * attn.scale) @ k.transpose(-2, -1)).float().softmax(dim=-1)  # (B, H, Q, T)
        return probs.mean(dim=(1, 2))[:, p:]


def cls_attn_scoring_macs(model: TNTModel, block: int, tokens: int) -> int:
    """MACs of ClsAttentionScorer at `block` on `tokens` tokens (prefix included)."""
    from tnt_cli.engine.gmacs import norm_macs

    norm1, attn = _attention_parts(model.vit.blocks[block])
    dim = int(model.vit.embed_dim)
    inner = attn.num_heads * attn.head_dim
    queries = 1 if has_class_token(model) else tokens
    macs = norm_macs(norm1, tokens * dim)
    macs += tokens * dim * inner + queries * dim * inner  # keys for all tokens, queries for the CLS row(s)
    macs += norm_macs(attn.k_norm, tokens * inner) + norm_macs(attn.q_norm, queries * inner)
    macs += queries * tokens * inner  # q . k^T
    return macs


# --------------------------------------------------------------------------- ToMe
def tome_patch_counts(num_patches: int, depth: int, r: int) -> list[int]:
    """Patch tokens entering each block when r tokens are merged after every block but the last."""
    counts, n = [], num_patches
    for i in range(depth):
        counts.append(n)
        if i < depth - 1:
            n -= min(r, n // 2)
    return counts


def bipartite_merge(
    patches: torch.Tensor, sizes: torch.Tensor, r: int, metric: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """ToMe's bipartite soft matching: merge the r patches of set A most similar to set B into their match.

    A is the even positions, B the odd ones. Each A token's edge is its most cosine-similar B token; the r
    strongest edges are merged by size-weighted average into the B token (sizes add up), the other A tokens stay.
    Returns (tokens, sizes) with n - r tokens: the unmerged A tokens (in original order), then all of B.
    """
    n = patches.shape[1]
    r = min(r, n // 2)
    if r <= 0:
        return patches, sizes
    metric = patches if metric is None else metric
    metric = F.normalize(metric.float(), dim=-1)
    a_metric, b_metric = metric[:, ::2], metric[:, 1::2]
    scores = a_metric @ b_metric.transpose(1, 2)  # (B, Na, Nb)
    node_max, node_idx = scores.max(dim=-1)
    edge_order = node_max.argsort(dim=-1, descending=True, stable=True)
    src_idx = edge_order[:, :r]  # A tokens merged away, most similar first
    unm_idx = edge_order[:, r:].sort(dim=-1).values  # A tokens kept, in original order
    dst_idx = torch.gather(node_idx, 1, src_idx)

    dim = patches.shape[-1]
    weighted = patches * sizes
    a_w, b_w = weighted[:, ::2], weighted[:, 1::2]
    a_s, b_s = sizes[:, ::2], sizes[:, 1::2]
    b_w = b_w.scatter_add(1, dst_idx.unsqueeze(-1).expand(-1, -1, dim), torch.gather(a_w, 1, _expand(src_idx, dim)))
    b_s = b_s.scatter_add(1, dst_idx.unsqueeze(-1), torch.gather(a_s, 1, src_idx.unsqueeze(-1)))
    unm_w = torch.gather(a_w, 1, _expand(unm_idx, dim))
    unm_s = torch.gather(a_s, 1, unm_idx.unsqueeze(-1))
    new_sizes = torch.cat([unm_s, b_s], dim=1)
    return torch.cat([unm_w, b_w], dim=1) / new_sizes, new_sizes


def _expand(index: torch.Tensor, dim: int) -> torch.Tensor:
    return index.unsqueeze(-1).expand(-1, -1, dim)


class ToMeViT(nn.Module):
    """A TNT model's timm ViT run with token merging: r patch merges after every block (prefix never merged).

    Attention is proportional to token size (log(size) added to the attention logits through timm's
    `attn_mask`), and average pooling is size-weighted, so a merged token counts as the patches it holds.
    """

    def __init__(self, model: TNTModel, r: int) -> None:
        super().__init__()
        if r < 0:
            raise TntError(f"--tome-r must be >= 0, got {r}")
        self.model = model
        self.r = int(r)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_from(self.model.embed(x))

    def forward_from(self, x: torch.Tensor) -> torch.Tensor:
        """Run the blocks with merging on embedded tokens (the input of block 0)."""
        vit, p = self.model.vit, self.model.num_prefix_tokens
        sizes = x.new_ones(x.shape[0], x.shape[1] - p, 1)
        prefix_sizes = x.new_ones(x.shape[0], p, 1)
        depth = len(vit.blocks)
        for i, blk in enumerate(vit.blocks):
            if i == 0 or self.r == 0:
                x = blk(x)
            else:
                log_size = torch.cat([prefix_sizes, sizes], dim=1).log().squeeze(-1)
                x = blk(x, attn_mask=log_size[:, None, None, :].to(x.dtype))
            if self.r and i < depth - 1:
                patches, sizes = bipartite_merge(x[:, p:], sizes, self.r)
                x = torch.cat([x[:, :p], patches], dim=1)
        x = vit.norm(x)
        return self._head(x, sizes)

    def _head(self, x: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        vit, p = self.model.vit, self.model.num_prefix_tokens
        if getattr(vit, "attn_pool", None) is None and getattr(vit, "global_pool", None) == "avg":
            pooled = (x[:, p:] * sizes).sum(dim=1) / sizes.sum(dim=1)
            return vit.head(vit.head_drop(vit.fc_norm(pooled)))
        return vit.forward_head(x)


# --------------------------------------------------------------------------- compute
def dense_schedule() -> Schedule:
    return Schedule()


def method_gmacs(model: TNTModel, method: str, schedule: Schedule | None = None, *, tome_r: int = 0) -> float:
    """GMACs per image of `method` (tnt / random / cls-attn at `schedule`, tome at r, dense)."""
    from tnt_cli.engine.gmacs import count_macs
    from tnt_cli.engine.schedule import plan_tokens

    vit = model.vit
    dims = dict(num_patches=model.num_patches, num_prefix=model.num_prefix_tokens, depth=model.depth)
    check_method(method)
    if method == "dense" or (method != "tome" and schedule is None):
        return count_macs(vit, plan_tokens(Schedule(), **dims), head_norm=model.head_norm).gmacs
    if method == "tome":
        return tome_macs(model, tome_r) / 1e9
    plan = plan_tokens(schedule, **dims)
    report = count_macs(vit, plan, head_norm=model.head_norm)
    if method == "tnt":
        return report.gmacs
    dim = int(vit.embed_dim)
    relevance = sum(
        s.n_in * dim * (5 if model.head_norm else 1) for s in plan.stages if s.n_relevance is not None
    )  # what count_macs charged for the heads; baselines replace it with their own scoring cost
    total = report.total - relevance
    if method == "cls-attn":
        total += sum(
            cls_attn_scoring_macs(model, s.block, plan.num_prefix + s.n_in)
            for s in plan.stages
            if s.n_relevance is not None
        )
    return total / 1e9


def tome_macs(model: TNTModel, r: int) -> int:
    """MACs of ToMe at r: blocks at the token counts merging leaves, plus every matching's similarity matrix."""
    from tnt_cli.engine.gmacs import block_macs, embed_macs, head_macs

    vit = model.vit
    dim, p = int(vit.embed_dim), model.num_prefix_tokens
    counts = tome_patch_counts(model.num_patches, model.depth, r)
    macs = embed_macs(vit)
    for i, (blk, n) in enumerate(zip(vit.blocks, counts)):
        macs += block_macs(blk, p + n, dim)
        if r and i < model.depth - 1 and min(r, n // 2) > 0:
            macs += (n - n // 2) * (n // 2) * dim  # |A| x |B| cosine similarities (A = ceil(n/2) even positions)
    final = counts[-1]
    return macs + head_macs(vit, p + final)


def match_tome_r(model: TNTModel, target_gmacs: float) -> int:
    """The ToMe r whose GMACs are closest to `target_gmacs` (ties: the larger r, i.e. the cheaper model)."""
    best_r, best_gap = 0, float("inf")
    for r in range(model.num_patches // 2 + 1):
        gap = abs(tome_macs(model, r) / 1e9 - target_gmacs)
        if gap <= best_gap:
            best_r, best_gap = r, gap
    return best_r


# --------------------------------------------------------------------------- configuration
@dataclass
class MethodSetup:
    """What `apply_method` configured: the module to call, and its compute."""

    method: str
    module: nn.Module
    schedule: Schedule
    tome_r: int
    gmacs: float

    def begin_batch(self, start: int) -> None:
        """Tell a seeded scorer where this batch starts in the evaluation order."""
        scorer = getattr(self.module, "scorer", None)
        if hasattr(scorer, "begin_batch"):
            scorer.begin_batch(start)

    def forward_from(self, states: dict[int, torch.Tensor], start: int | None = None) -> torch.Tensor:
        """Logits from cached dense states (see `tnt_cli.eval.cached`)."""
        from tnt_cli.eval.cached import run_from_states

        return run_from_states(self, states, start)


def make_scorer(method: str, seed: int = 0):
    if method == "random":
        return RandomScorer(seed)
    if method == "cls-attn":
        return ClsAttentionScorer()
    return None


@contextmanager
def apply_method(
    model: TNTModel,
    method: str,
    schedule: Schedule | None = None,
    *,
    tome_r: int | None = None,
    seed: int = 0,
) -> Iterator[MethodSetup]:
    """Configure `model` to run `method`; the model's scorer and schedule are restored on exit.

    tnt / random / cls-attn run `schedule` (default: the model's own); tome runs r merges per block (default:
    the r whose GMACs match the schedule's); dense runs every token.
    """
    check_method(method)
    saved_scorer, saved_schedule = model.scorer, model.schedule
    schedule = model.schedule if schedule is None else schedule
    try:
        if method == "tome":
            if tome_r is None:
                tome_r = match_tome_r(model, method_gmacs(model, "tnt", schedule))
            module: nn.Module = ToMeViT(model, tome_r)
            setup = MethodSetup(method, module, Schedule(), int(tome_r), tome_macs(model, tome_r) / 1e9)
        else:
            if method == "dense":
                schedule = Schedule()
            model.scorer = make_scorer(method, seed)
            model.set_schedule(schedule)
            setup = MethodSetup(method, model, schedule, 0, method_gmacs(model, method, schedule))
        if method == "cls-attn" and schedule.prune_layers:
            for block in schedule.prune_layers:
                _attention_parts(model.vit.blocks[block])
        yield setup
    finally:
        model.scorer = saved_scorer
        model.set_schedule(saved_schedule)
