"""Data order as a pure function of (seed, epoch): what makes resume exact and DDP sharding consistent.

`EpochSampler` permutes a fixed list of dataset indices with a generator seeded from (seed, epoch), pads the
order so every rank gets the same count (like DistributedSampler), takes this rank's share and can start
part-way through (`set_start`), so a resumed run skips the batches it already trained on without drawing
any random numbers. With `with_seeds` it yields (index, sample seed) pairs; the seed, a function of
(seed, epoch, index), drives that sample's augmentation.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

_MASK = (1 << 64) - 1


def mix_seed(*parts: int) -> int:
    """Combine integers into one well-spread 63-bit seed (splitmix64 over the parts)."""
    x = 0x9E3779B97F4A7C15
    for part in parts:
        x = (x ^ (int(part) & _MASK)) & _MASK
        x = (x + 0x9E3779B97F4A7C15) & _MASK
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
        x ^= x >> 31
    return x >> 1


def images_per_rank(images: int, world_size: int) -> int:
    """Images each process sees per epoch: the order is padded so every rank gets this many."""
    return -(-images // world_size)


class EpochSampler(Sampler):
    """Deterministic, resumable, optionally sharded order over `indices`."""

    def __init__(
        self,
        indices: Sequence[int],
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        with_seeds: bool = False,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.indices = list(indices)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.with_seeds = with_seeds
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.start = 0

    def set_start(self, samples: int) -> None:
        """Skip the first `samples` of this rank's order for the current epoch (resume mid-epoch)."""
        self.start = int(samples)

    @property
    def per_rank(self) -> int:
        """Samples each rank sees per epoch (the order is padded so all ranks get the same number)."""
        return images_per_rank(len(self.indices), self.world_size)

    def order(self, epoch: int | None = None) -> list[int]:
        """This rank's full order for `epoch` (before `start` is applied)."""
        epoch = self.epoch if epoch is None else epoch
        n = len(self.indices)
        if self.shuffle:
            gen = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
            perm = torch.randperm(n, generator=gen).tolist()
        else:
            perm = list(range(n))
        total = self.per_rank * self.world_size
        if total > n and n:
            perm = (perm * (-(-total // n)))[:total]
        return [self.indices[p] for p in perm[self.rank : total : self.world_size]]

    def __iter__(self) -> Iterator:
        order = self.order()[self.start :]
        if self.with_seeds:
            epoch = self.epoch
            return iter([(i, mix_seed(self.seed, epoch, i)) for i in order])
        return iter(order)

    def __len__(self) -> int:
        return max(0, self.per_rank - self.start)
