"""Cluttered Fashion-MNIST: each item at a random place on a larger canvas, among fragments of other items.

Most tokens are background or clutter, as in ImageNet photos, so which tokens a pruner keeps matters: random
dropping loses the item, a good relevance keeps it. Every image is a pure function of (split, seed, index), so the
dataset is deterministic and does not depend on worker count or iteration order.

Two backgrounds:
- "black" (`cluttered-fashion-mnist`): zero pixels. Most patches are exact duplicates of one another (up to the
  position embedding), which similarity merging (ToMe) reduces almost for free: real photos have no such patches.
- "texture" (`textured-fashion-mnist`): a smooth random field plus per-pixel grain under everything (items and
  clutter combine with it by maximum), so no two background patches are equal, as in natural images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tnt_cli.data.fashion_mnist import CLASSES, SPLIT_ALIASES, load_arrays
from tnt_cli.errors import TntError

ITEM = 28  # Fashion-MNIST items are 28x28
_SPLIT_IDS = {"train": 1, "test": 2}
BACKGROUNDS = ("black", "texture")
# The textured background: a smooth field (a GRID x GRID lattice of uniform values, bilinearly interpolated) up to
# FIELD grey levels, plus uniform per-pixel grain up to GRAIN: darker than most item ink (up to 255), never flat.
TEXTURE_GRID, TEXTURE_FIELD, TEXTURE_GRAIN = 6, 72, 40


@dataclass(frozen=True)
class Layout:
    """Where things went on one canvas: the item's box and each clutter fragment (source index, box)."""

    item_index: int
    item_box: tuple[int, int, int, int]  # (top, left, height, width)
    fragments: tuple[tuple[int, tuple[int, int, int, int]], ...]  # (source index, (top, left, src_top, src_left))


class ClutteredFashionMNIST:
    """A torch-style Dataset of (PIL 'L' image, label) on a `canvas` x `canvas` canvas.

    Item i of the split is pasted at a random position; `clutter` fragments (`fragment` x `fragment` pixels cut
    near the centre of other random images of the same split) are scattered where they do not overlap the item,
    so the label stays unambiguous. Pixels combine by maximum (clutter never covers the item: they do not touch),
    over a black or a textured `background` (one of BACKGROUNDS).
    """

    @property
    def classes(self) -> list[str]:
        return list(CLASSES)

    def __init__(
        self,
        split: str,
        *,
        seed: int = 0,
        canvas: int = 64,
        clutter: int = 4,
        fragment: int = 8,
        background: str = "black",
        transform: Callable | None = None,
        target_transform: Callable | None = None,
    ) -> None:
        if split not in SPLIT_ALIASES:
            raise TntError(f"cluttered Fashion-MNIST has splits train and test (alias val), and holdout (a slice "
                           f"of train), not {split!r}")  # fmt: skip
        if canvas < ITEM:
            raise TntError(f"canvas must be at least {ITEM} pixels, got {canvas}")
        if not 1 <= fragment <= ITEM:
            raise TntError(f"fragment must be 1-{ITEM} pixels, got {fragment}")
        if clutter < 0:
            raise TntError(f"clutter must be >= 0, got {clutter}")
        if background not in BACKGROUNDS:
            raise TntError(f"background must be one of {', '.join(BACKGROUNDS)}, got {background!r}")
        self.split = SPLIT_ALIASES[split]
        self.seed = int(seed)
        self.canvas = int(canvas)
        self.clutter = int(clutter)
        self.fragment = int(fragment)
        self.background = background
        self.transform = transform
        self.target_transform = target_transform
        self.images, self.labels = load_arrays(self.split)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    # ----------------------------------------------------------------- layout and rendering
    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, _SPLIT_IDS[self.split], int(index)])

    def layout(self, index: int) -> Layout:
        """The random choices for one canvas, drawn from a generator seeded by (seed, split, index) alone."""
        n = len(self)
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        rng = self._rng(index)
        c, f = self.canvas, self.fragment
        top, left = (int(v) for v in rng.integers(0, c - ITEM + 1, size=2))
        fragments = []
        for _ in range(self.clutter):
            src = int(rng.integers(0, n - 1))
            src += src >= index  # any image but the item itself
            margin = min(4, (ITEM - f) // 2)
            sy, sx = (int(v) for v in rng.integers(margin, ITEM - f - margin + 1, size=2))
            for _attempt in range(20):  # rejection sampling: fragments must not touch the item box
                fy, fx = (int(v) for v in rng.integers(0, c - f + 1, size=2))
                if fy + f <= top or fy >= top + ITEM or fx + f <= left or fx >= left + ITEM:
                    break
            else:
                continue  # no room on this canvas (tiny canvases): skip the fragment
            fragments.append((src, (fy, fx, sy, sx)))
        return Layout(index, (top, left, ITEM, ITEM), tuple(fragments))

    def render(self, index: int) -> np.ndarray:
        """The canvas for one index as uint8 (canvas, canvas)."""
        return self._render(self.layout(index))

    def texture(self, index: int) -> np.ndarray:
        """The background of one canvas as uint8 (canvas, canvas): zeros, or the seeded texture (its own generator,
        so the layout's draws are the same for both backgrounds)."""
        c = self.canvas
        if self.background == "black":
            return np.zeros((c, c), dtype=np.uint8)
        rng = np.random.default_rng([self.seed, _SPLIT_IDS[self.split], int(index), 1])
        lattice = rng.uniform(0.0, TEXTURE_FIELD, size=(TEXTURE_GRID, TEXTURE_GRID))
        at = np.linspace(0.0, TEXTURE_GRID - 1, c)
        lo = np.minimum(at.astype(int), TEXTURE_GRID - 2)
        frac = at - lo
        rows = lattice[lo] * (1 - frac)[:, None] + lattice[lo + 1] * frac[:, None]  # (c, GRID)
        field = rows[:, lo] * (1 - frac)[None, :] + rows[:, lo + 1] * frac[None, :]  # (c, c)
        grain = rng.uniform(0.0, TEXTURE_GRAIN, size=(c, c))
        return np.clip(np.rint(field + grain), 0, 255).astype(np.uint8)

    def _render(self, lay: Layout) -> np.ndarray:
        index = lay.item_index
        out = self.texture(index)
        f = self.fragment
        for src, (fy, fx, sy, sx) in lay.fragments:
            patch = self.images[src, sy : sy + f, sx : sx + f]
            np.maximum(out[fy : fy + f, fx : fx + f], patch, out=out[fy : fy + f, fx : fx + f])
        top, left, h, w = lay.item_box
        np.maximum(out[top : top + h, left : left + w], self.images[index], out=out[top : top + h, left : left + w])
        return out

    def item_box(self, index: int) -> tuple[int, int, int, int]:
        """(top, left, height, width) of the item on the canvas."""
        return self.layout(index).item_box

    def __getitem__(self, index: int):
        from PIL import Image

        img = Image.fromarray(self.render(int(index)), mode="L")
        label = int(self.labels[index])
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return img, label

    # ----------------------------------------------------------------- fast path
    def tensors(self, limit: int | None = None):
        """(uint8 images (N, 1, canvas, canvas), int64 labels (N,), int64 item boxes (N, 4)) as torch tensors.

        Same pixels as `__getitem__`, without PIL: for training loops that keep the whole split in memory.
        """
        import torch

        n = len(self) if limit is None else min(limit, len(self))
        images = np.empty((n, 1, self.canvas, self.canvas), dtype=np.uint8)
        boxes = np.empty((n, 4), dtype=np.int64)
        for i in range(n):
            lay = self.layout(i)
            images[i, 0] = self._render(lay)
            boxes[i] = lay.item_box
        return torch.from_numpy(images), torch.from_numpy(self.labels[:n].copy()), torch.from_numpy(boxes)
