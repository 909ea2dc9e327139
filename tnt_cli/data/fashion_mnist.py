"""Fashion-MNIST from Debian's `dataset-fashion-mnist` IDX files (or torchvision's download when online)."""

from __future__ import annotations

import gzip
import math
import os
import struct
from functools import lru_cache
from pathlib import Path

import numpy as np

from tnt_cli.errors import TntError

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
MAX_IDX_BYTES = 1 << 31  # Fashion-MNIST's train images are 47 MB; a header declaring more is not an image set
SPLIT_ALIASES = {"train": "train", "val": "test", "test": "test", "validation": "test"}


def data_dir() -> Path:
    """Where the IDX files are: $TNT_FASHION_MNIST_DIR, else Debian's package directory."""
    return Path(os.environ.get("TNT_FASHION_MNIST_DIR", DEBIAN_DIR))


def read_idx(path: Path) -> np.ndarray:
    """Read one (gzipped) IDX file into a numpy array, checking its header against its size.

    Never more is decompressed than the header declares (plus one byte to see that the file is longer): a small
    .gz that expands without end (a decompression bomb) is refused, naming the file.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            head = fh.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != 0x08:
                raise TntError(f"{path} is not an unsigned-byte IDX file")
            ndim = head[3]
            dims = struct.unpack(f">{ndim}I", fh.read(4 * ndim).ljust(4 * ndim, b"\0"))
            expected = math.prod(dims)
            if expected > MAX_IDX_BYTES:
                raise TntError(f"{path} declares {expected} values ({dims}): too large for an image set")
            raw = fh.read(expected + 1)
    except (OSError, EOFError) as exc:
        raise TntError(f"cannot read {path}: {exc}") from None
    if len(raw) > expected:
        raise TntError(f"{path} holds more data than its header's {dims} (a decompression bomb?): refused")
    data = np.frombuffer(raw, dtype=np.uint8)
    if data.size != expected:
        raise TntError(f"{path} is truncated: header says {dims}, file holds {data.size} values")
    return data.reshape(dims)


@lru_cache(maxsize=4)
def load_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels int64 (N,)) for 'train' or 'test' (alias 'val')."""
    if split not in SPLIT_ALIASES:
        raise TntError(f"Fashion-MNIST has splits train and test (alias val), and holdout (a slice of train), "
                       f"not {split!r}")  # fmt: skip
    split = SPLIT_ALIASES[split]
    root = data_dir()
    image_file, label_file = (root / name for name in _FILES[split])
    if not image_file.exists() or not label_file.exists():
        return _download(split)
    images = read_idx(image_file)
    labels = read_idx(label_file).astype(np.int64)
    if images.shape[0] != labels.shape[0]:
        raise TntError(f"Fashion-MNIST {split}: {images.shape[0]} images but {labels.shape[0]} labels")
    return images, labels


def _download(split: str) -> tuple[np.ndarray, np.ndarray]:
    """torchvision's copy, for machines without the Debian package (needs the network once)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tnt" / "fashion-mnist"
    try:
        from torchvision.datasets import FashionMNIST

        ds = FashionMNIST(str(cache), train=split == "train", download=True)
    except Exception as exc:
        raise TntError(
            f"Fashion-MNIST not found in {data_dir()} and the download failed ({type(exc).__name__}); "
            "install Debian's dataset-fashion-mnist or set TNT_FASHION_MNIST_DIR"
        ) from None
    return ds.data.numpy(), ds.targets.numpy().astype(np.int64)
