"""Shared pieces of the Fashion-MNIST study: tensors in memory, the small ViTs, a fast training loop.

Everything runs from in-memory uint8 tensors (no DataLoader, no PIL) because the whole study has to fit in
an hour of a 2-core CPU. Images are normalised like the models' pretrained_cfg says: (x / 255 - 0.5) / 0.5.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"  # gitignored: caches, fine-tuned models, retrained bases
RESULTS = HERE / "results"
BASE = HERE / "base"  # tracked: the shipped dense base models, one timm directory per benchmark (train_base.py)


def base_dir(bench: str) -> Path:
    """The shipped base model of a benchmark: config.json, model.safetensors, meta.json (how it was made)."""
    return BASE / bench


MEAN, STD = 0.5, 0.5


@dataclass(frozen=True)
class BenchSpec:
    """One benchmark: which images, what ViT shape fits them."""

    name: str
    img_size: int
    patch_size: int
    embed_dim: int = 96
    depth: int = 6
    num_heads: int = 3
    mlp_ratio: float = 2.0


BENCHES = {
    "fashion-mnist": BenchSpec("fashion-mnist", img_size=28, patch_size=4),
    "cluttered-fashion-mnist": BenchSpec("cluttered-fashion-mnist", img_size=64, patch_size=8),
    "textured-fashion-mnist": BenchSpec("textured-fashion-mnist", img_size=64, patch_size=8),
}


def set_threads(n: int = 2) -> None:
    torch.set_num_threads(n)


def load_split(bench: str, split: str, *, seed: int = 0, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images (N, 1, H, W), int64 labels) for a benchmark split, cached in out/ as .pt for speed."""
    if bench == "fashion-mnist":
        from tnt_cli.data.fashion_mnist import load_arrays

        images, labels = load_arrays(split)
        x = torch.from_numpy(images.copy()).unsqueeze(1)
        y = torch.from_numpy(labels.copy())
    elif bench in ("cluttered-fashion-mnist", "textured-fashion-mnist"):
        from tnt_cli.data.cluttered import ClutteredFashionMNIST
        from tnt_cli.data.datasets import CANVASES

        cache = OUT / "data" / f"{bench.split('-')[0]}-{split}-seed{seed}.pt"
        if cache.exists():
            x, y = torch.load(cache)
        else:
            ds = ClutteredFashionMNIST(split, seed=seed, background=CANVASES[bench])
            x, y, _ = ds.tensors()
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp")
            torch.save((x, y), tmp)
            tmp.replace(cache)
    else:
        raise ValueError(f"unknown benchmark {bench!r}")
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return x, y


def normalise(x_uint8: torch.Tensor) -> torch.Tensor:
    return (x_uint8.float() / 255.0 - MEAN) / STD


def augment(x: torch.Tensor, gen: torch.Generator, pad: int = 2, flip: bool = True) -> torch.Tensor:
    """Per-image random crop with zero padding (background is 0 before normalisation) and horizontal flip."""
    b, _, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    iy = oy[:, None] + torch.arange(h)[None, :]
    ix = ox[:, None] + torch.arange(w)[None, :]
    bi = torch.arange(b)[:, None, None]
    out = xp[bi, :, iy[:, :, None], ix[:, None, :]]  # (B, H, W, C)
    out = out.permute(0, 3, 1, 2)
    if flip:
        f = torch.rand(b, generator=gen) < 0.5
        out = torch.where(f[:, None, None, None], out.flip(-1), out)
    return out.contiguous()


def create_vit(spec: BenchSpec, *, num_classes: int = 10):
    import timm

    return timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=spec.img_size,
        patch_size=spec.patch_size,
        in_chans=1,
        num_classes=num_classes,
        embed_dim=spec.embed_dim,
        depth=spec.depth,
        num_heads=spec.num_heads,
        mlp_ratio=spec.mlp_ratio,
        pretrained_cfg_overlay=dict(
            mean=(MEAN,),
            std=(STD,),
            crop_pct=1.0,
            input_size=(1, spec.img_size, spec.img_size),
            num_classes=num_classes,
        ),
    )


def cosine_lr(step: int, total: int, warmup: int, base: float, floor: float = 0.0) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return floor + (base - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


@torch.no_grad()
def evaluate(model, x: torch.Tensor, y: torch.Tensor, *, batch: int = 1000) -> float:
    """Top-1 accuracy (%) on uint8 images."""
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        logits = model(normalise(x[i : i + batch]))
        correct += (logits.argmax(-1) == y[i : i + batch]).sum().item()
    return 100.0 * correct / len(x)


@torch.no_grad()
def predict_logits(model, x: torch.Tensor, *, batch: int = 1000) -> torch.Tensor:
    model.eval()
    return torch.cat([model(normalise(x[i : i + batch])) for i in range(0, len(x), batch)])


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


class Timer:
    def __init__(self) -> None:
        self.t0 = time.time()

    def __call__(self) -> float:
        return time.time() - self.t0


# The dense base model of each benchmark, shipped in the repo (`make base` retrains them with train_base.py).
BASE_DIRS = {name: base_dir(name) for name in BENCHES}
