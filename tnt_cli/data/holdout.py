"""The held-out slice of a training split: where `tnt calibrate` chooses a schedule by default.

Most data (Fashion-MNIST, a train/val ImageFolder) has no split between train and the one results are reported
on: selecting a schedule on the reported split selects on it. So a fixed slice of the train split is held out:
`tnt finetune` leaves it out of training (unless `--no-holdout`), `--split holdout` reads it. The slice is a
function of the split's size alone (not of any run's seed), so every command agrees on it without being told.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from tnt_cli.errors import TntError

HOLDOUT = "holdout"  # the split name commands accept
SOURCE_SPLIT = "train"  # the split the slice is cut from
SHARE = 10  # one image in SHARE ...
MAX_IMAGES = 5000  # ... at most this many: enough to rank schedules, a small cost to training
_SEED = 0x401D  # fixed: the slice must not move with a run's --seed
LABEL = "train (held-out slice)"  # what reports and cards call it (the data has no split of that name)


def holdout_size(n: int) -> int:
    """How many of a train split's `n` images are held out: a tenth, rounded up (none of a single image)."""
    return 0 if n < 2 else min(MAX_IMAGES, -(-n // SHARE))


def holdout_indices(n: int) -> list[int]:
    """The held-out indices of a train split of `n` images, in dataset order."""
    from tnt_cli.data.sampler import mix_seed

    generator = torch.Generator().manual_seed(mix_seed(_SEED, n))
    return sorted(torch.randperm(n, generator=generator)[: holdout_size(n)].tolist())


def training_indices(n: int) -> list[int]:
    """The indices training uses when the slice is held out (all others, in dataset order)."""
    held = set(holdout_indices(n))
    return [i for i in range(n) if i not in held]


class Slice(Dataset):
    """Some items of a dataset, in order; keeps `.classes`, and the uint8 path (`raw`) when the dataset has one."""

    def __init__(self, base: Dataset, indices: Sequence[int]) -> None:
        self.base = base
        self.indices = list(indices)
        self.classes = list(getattr(base, "classes", []))
        if hasattr(base, "raw"):
            self.raw = self._raw  # a bound method: workers started by spawn can pickle it

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.base[self.indices[index]]

    def _raw(self, index: int):
        return self.base.raw(self.indices[index])


def held_out(train: Dataset, what: str) -> Slice:
    """The held-out slice of the train split `train` (`what` names it in errors)."""
    n = len(train)
    if holdout_size(n) == 0:
        raise TntError(f"{what} has {n} image: too few to hold one out; choose another --split")
    return Slice(train, holdout_indices(n))


def without_holdout(train: Dataset) -> Dataset:
    """The train split minus its held-out slice (all of it when the split is too small to hold any out)."""
    n = len(train)
    return train if holdout_size(n) == 0 else Slice(train, training_indices(n))
