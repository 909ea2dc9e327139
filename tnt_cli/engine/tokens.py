"""Static-shape token selection: top-k + gather and random-partition similarity pruning.

Each selector returns an index into the current patch tokens, so callers gather tokens (and, when they trace,
original patch positions) once. Token counts stay fixed for a given input size (no boolean masks), so fused
attention, torch.compile and ONNX export keep working.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x[b, index[b, j]] for every b, j: (B, N, D), (B, K) -> (B, K, D)."""
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def top_index(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Positions of the k highest scores per row, best first."""
    return scores.topk(k, dim=1, sorted=True).indices


def partition(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random split of positions 0..n-1 into halves A (n // 2) and B (the rest).

    The same for every image and batch size, so a result never depends on the other images in the batch.
    """
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=generator)
    half = n // 2
    return perm[:half].sort().values, perm[half:].sort().values


def similarity_keep_index(patches: torch.Tensor, r: int, part_a: torch.Tensor, part_b: torch.Tensor) -> torch.Tensor:
    """Survivors after dropping the r tokens of half A most cosine-similar to some token of half B.

    Returns positions into `patches`: the rest of A (least redundant first), then all of B.
    """
    a = patches.index_select(1, part_a)
    b = patches.index_select(1, part_b)
    sim = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).transpose(1, 2)
    redundancy = sim.amax(dim=-1)
    keep_a = redundancy.topk(a.shape[1] - r, dim=1, largest=False, sorted=True).indices
    batch = patches.shape[0]
    return torch.cat([part_a[keep_a], part_b.unsqueeze(0).expand(batch, -1)], dim=1)
