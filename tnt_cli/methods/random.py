"""The random baseline: uniform scores per image, then exactly TNT's own schedule and top-k.

It has TNT's token counts, so its MACs are TNT's without the relevance heads (random scores cost nothing).
"""

from __future__ import annotations

import torch

from tnt_cli.engine import Schedule, TNTModel
from tnt_cli.engine.gmacs import relevance_head_macs
from tnt_cli.methods.base import Configured, reference_macs, token_plan
from tnt_cli.methods.registry import Method
from tnt_cli.methods.tnt import run_schedule

_MIX = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)


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

    def __call__(self, model, block: int, x_in: torch.Tensor, x_out: torch.Tensor) -> torch.Tensor:
        batch, n = x_out.shape[0], x_out.shape[1] - model.num_prefix_tokens
        if self._last_block is not None and block <= self._last_block:
            self._start += self._last_batch  # a new forward pass: the next images in the order
        self._last_block, self._last_batch = block, batch
        rows = []
        for i in range(batch):
            generator = torch.Generator().manual_seed(self.image_seed(self._start + i, block))
            rows.append(torch.rand(n, generator=generator))
        return torch.stack(rows).to(device=x_out.device)


def configure(model: TNTModel, schedule: Schedule, method: Method, *, seed: int = 0, own=None) -> Configured:
    """Random scores at TNT's schedule: TNT's MACs less what its relevance heads cost."""
    dim = int(model.vit.embed_dim)
    heads = sum(relevance_head_macs(s, dim, head_norm=model.head_norm) for s in token_plan(model, schedule).stages)
    return run_schedule(model, schedule, reference_macs(model, schedule) - heads, lambda: RandomScorer(seed))
