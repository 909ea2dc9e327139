"""What a pruning stage does with the tokens its relevance top-k leaves out: pure tensor functions.

- drop (the paper): they are discarded.
- merge: each left-out token joins the KEPT token it is most cosine-similar to (similarity of the block's output
  tokens; one (n_left_out x n_kept) matrix, no bipartite rounds as in ToMe): the kept token becomes the
  size-weighted mean of itself and the tokens that joined it, and their sizes add up. With a threshold (gated
  merge) a token whose best similarity is below it is dropped instead, so clutter is not averaged into the item.
- fuse (EViT's fusion): all left-out tokens become ONE extra token, their size-weighted mean, whose size is the
  number of patches they hold; it is appended after the kept tokens and is an ordinary patch token from then on
  (a later stage scores it and may keep, merge or fuse it again).

A token's size is how many original patches it stands for (prefix tokens and untouched patches: 1). Once a
stage has merged or fused, every later block uses proportional attention (log(size) added to the attention
logits, as ToMe does), so a token holding s patches weighs like s copies; average pooling is size-weighted.

Shapes depend only on the token plan (top-k + gather + scatter_add with a static index shape, no boolean
masks), so torch.compile(fullgraph=True) and ONNX export keep working. Similarity pruning stays a discard.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def split_by_score(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions of the k best scores, best first; positions of the others, best first): a full static order."""
    order = scores.topk(scores.shape[1], dim=1, sorted=True).indices
    return order[:, :k], order[:, k:]


def merge_into_kept(
    kept: torch.Tensor,
    kept_sizes: torch.Tensor,
    others: torch.Tensor,
    other_sizes: torch.Tensor,
    threshold: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge each of `others` (B, M, D) into its most cosine-similar token of `kept` (B, K, D); with `threshold`,
    only those whose best similarity reaches it (the rest are dropped: their weight is zero, the shapes static).

    Returns the K kept tokens as size-weighted means of themselves and what joined them, and their new sizes
    (B, K, 1). Sizes are (B, n, 1) float32 (exact counts even in a bf16 model); the sums are taken at the wider
    of the two dtypes and the tokens come back in their own.
    """
    sim = F.normalize(others, dim=-1) @ F.normalize(kept, dim=-1).transpose(1, 2)  # (B, M, K)
    best, target = sim.max(dim=-1, keepdim=True)  # (B, M, 1) each
    if threshold is not None:
        other_sizes = other_sizes * (best >= threshold).to(other_sizes.dtype)
    dim = kept.shape[-1]
    total = (kept * kept_sizes).scatter_add(1, target.expand(-1, -1, dim), others * other_sizes)
    sizes = kept_sizes.scatter_add(1, target, other_sizes)
    return (total / sizes).to(kept.dtype), sizes


def fuse_tokens(tokens: torch.Tensor, sizes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One token from all of `tokens` (B, M, D): their size-weighted mean (B, 1, D), and its size (B, 1, 1)."""
    size = sizes.sum(dim=1, keepdim=True)
    return ((tokens * sizes).sum(dim=1, keepdim=True) / size).to(tokens.dtype), size


def size_bias(num_prefix: int, sizes: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Proportional attention: log(size) per key, prefix tokens size 1, shaped (B, 1, 1, T) for timm's attn_mask."""
    log_sizes = sizes.squeeze(-1).log()
    prefix = log_sizes.new_zeros(log_sizes.shape[0], num_prefix)
    return torch.cat([prefix, log_sizes], dim=1)[:, None, None, :].to(dtype)


def weighted_mean(tokens: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """Mean over tokens (B, N, D) where a token of size s counts s times: (B, D)."""
    return ((tokens * sizes).sum(dim=1) / sizes.sum(dim=1)).to(tokens.dtype)
