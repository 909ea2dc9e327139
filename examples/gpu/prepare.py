"""The acceptance run's inputs, made on the spot (the GPU machine has no network and maybe no Debian data):

- Fashion-MNIST-shaped data: gzipped IDX files (28x28 grey, 10 classes) that tnt reads through
  TNT_FASHION_MNIST_DIR exactly as it reads the real ones. Each class is a bright blob at its own place on a
  noisy background, jittered per image, so a model can learn it and the loss has somewhere to go.
- a timm model directory with random weights: DeiT-S (`deit_small_patch16_224`), or with `--tiny` the same
  architecture at 32x32, patch 8, width 64, 4 blocks.

    python examples/gpu/prepare.py --out WORK [--tiny]
"""

from __future__ import annotations

import argparse
import gzip
import json
import struct
from pathlib import Path

import numpy as np

ARCH = "deit_small_patch16_224"
TINY_SHAPE = {"img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 4, "num_heads": 2}
SIZES = {"full": (8192, 1024), "tiny": (512, 128)}  # (train, test) images: 128 and 32 steps per epoch


def synthetic_fashion_mnist(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (n, 28, 28), labels uint8 (n,)): class c is a blob centred on its own cell of a 2 x 5 grid."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    yy, xx = np.mgrid[0:28, 0:28].astype(np.float32)
    cy = 7.0 + 14.0 * (labels % 2) + rng.uniform(-1.5, 1.5, size=n)
    cx = 3.0 + 5.5 * (labels // 2) + rng.uniform(-1.5, 1.5, size=n)
    dist2 = (yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2
    blob = np.exp(-dist2 / 18.0) * rng.uniform(0.6, 1.0, size=(n, 1, 1))
    noise = rng.uniform(0.0, 0.25, size=(n, 28, 28))
    return (np.clip(blob + noise, 0.0, 1.0) * 255).astype(np.uint8), labels


def write_idx(path: Path, array: np.ndarray) -> None:
    """An unsigned-byte IDX file (the MNIST format), gzipped."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb", compresslevel=1) as fh:
        fh.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_data(folder: Path, train: int, test: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", train, 1), ("t10k", test, 2)):
        images, labels = synthetic_fashion_mnist(n, seed)
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels)


def write_model(folder: Path, tiny: bool) -> dict:
    """A random-weight timm directory (timm's own save_for_hf); returns its shape for the log."""
    import timm
    import torch
    from timm.models._hub import save_for_hf

    torch.manual_seed(0)
    vit = timm.create_model(ARCH, pretrained=False, **(TINY_SHAPE if tiny else {}))
    save_for_hf(vit, str(folder), safe_serialization=True)
    params = sum(p.numel() for p in vit.parameters())
    return {"architecture": ARCH, "tiny": tiny, "parameters": params, **(TINY_SHAPE if tiny else {})}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for fashion-mnist/ and model/")
    parser.add_argument("--tiny", action="store_true", help="small data and a small DeiT (the CPU smoke run)")
    args = parser.parse_args(argv)
    train, test = SIZES["tiny" if args.tiny else "full"]
    write_data(args.out / "fashion-mnist", train, test)
    model = write_model(args.out / "model", args.tiny)
    print(json.dumps({"data": {"train": train, "test": test, "folder": str(args.out / "fashion-mnist")},
                      "model": {**model, "folder": str(args.out / "model")}}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
