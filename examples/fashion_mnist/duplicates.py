"""The share of patches that exactly equal another patch of the same image, per benchmark: what similarity merging
(ToMe) reduces for free. `python examples/fashion_mnist/duplicates.py [N]` (first N test images, default 500)."""

from __future__ import annotations

import sys

import torch

from tnt_cli.data.cluttered import ClutteredFashionMNIST
from tnt_cli.data.datasets import CANVASES
from tnt_cli.data.fashion_mnist import load_arrays


def duplicate_share(images: torch.Tensor, patch: int) -> float:
    """Mean over images of the fraction of patches equal to at least one other patch of the same image."""
    shares = []
    for img in images:
        tiles = img.unfold(-2, patch, patch).unfold(-2, patch, patch).reshape(-1, patch * patch)
        _, inverse, counts = torch.unique(tiles, dim=0, return_inverse=True, return_counts=True)
        shares.append((counts[inverse] > 1).float().mean().item())
    return sum(shares) / len(shares)


def main(n: int) -> None:
    images, _ = load_arrays("test")
    plain = torch.from_numpy(images[:n].copy()).float()
    print(f"fashion-mnist (patch 4): {duplicate_share(plain, 4):.0%} of patches duplicate another")
    for bench in ("cluttered-fashion-mnist", "textured-fashion-mnist"):
        x, _, _ = ClutteredFashionMNIST("test", seed=0, background=CANVASES[bench]).tensors(limit=n)
        print(f"{bench} (patch 8): {duplicate_share(x[:, 0], 8):.0%} of patches duplicate another")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
