"""DATA specs -> datasets.

- "fashion-mnist", "cluttered-fashion-mnist", "textured-fashion-mnist": tnt's own readers (Debian's IDX files,
  read in place);
- a folder: an ImageFolder root (train/ and val/ class folders), or the class folders given directly
  (`imagenet/val`, as timm's validate.py takes it);
- a `.tar` of class folders, `hfds/ORG/NAME`, `hfids/...`, `wds/...`, `tfds/...`: through
  `timm.data.create_dataset` (see `timm_source`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from tnt_cli.errors import TntError

FASHION_MNIST = "fashion-mnist"
CLUTTERED = "cluttered-fashion-mnist"
TEXTURED = "textured-fashion-mnist"
# the synthetic canvases and their background (tnt_cli.data.cluttered.BACKGROUNDS)
CANVASES = {CLUTTERED: "black", TEXTURED: "texture"}
NAMED = (FASHION_MNIST, CLUTTERED, TEXTURED)
_ALIASES = {"fashion-mnist": FASHION_MNIST, "fashion_mnist": FASHION_MNIST, "fashionmnist": FASHION_MNIST}
_ALIASES.update({name.replace("-", "_"): name for name in CANVASES} | {name: name for name in CANVASES})


def canonical_spec(spec: str | Path) -> str | Path:
    """A named dataset's canonical name, a timm source spec (str), or a folder / tar file as a Path."""
    from tnt_cli.data.timm_source import prefix_of

    text = str(spec).strip()
    if text.lower() in _ALIASES:
        return _ALIASES[text.lower()]
    if prefix_of(text):
        return text
    path = Path(text).expanduser()
    if not path.exists():
        raise TntError(
            f"data {text!r} not found: give a folder (an ImageFolder root with train/ and val/, or class folders), "
            f"a .tar of class folders, hfds/ORG/NAME, or one of {', '.join(NAMED)}"
        )
    if path.is_file() and path.suffix.lower() != ".tar":
        raise TntError(f"data {text!r} is a file but not a .tar: give a folder of class folders or a .tar of them")
    return path


def check_single_split(path: Path, split: str) -> None:
    """A source that is one split (class folders given directly, a tar) serves any split, as in timm, unless
    its name says it is the other side: `imagenet/train` is never evaluated as the val split, nor the reverse."""
    from tnt_cli.data.folder import SPLIT_FOLDERS

    name = path.name.lower().removesuffix(".tar")
    train_names, eval_names = set(SPLIT_FOLDERS["train"]), set(SPLIT_FOLDERS["val"])
    wrong = (name in train_names and split not in train_names) or (name in eval_names and split in train_names)
    if wrong:
        raise TntError(f"{path} is the {name} split only (class folders given directly): it has no {split} split")


class ArrayDataset(Dataset):
    """Fixed-size uint8 grayscale images held in memory: PIL on `[i]`, a uint8 tensor via `raw(i)`."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, classes: list[str]) -> None:
        if images.ndim != 3 or images.shape[0] != labels.shape[0] or images.shape[0] == 0:
            raise TntError(f"malformed image array {images.shape} with {labels.shape[0]} labels")
        self.images = torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8).copy())
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64).copy())
        self.classes = classes

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def raw(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])

    def __getitem__(self, index: int):
        from PIL import Image

        return Image.fromarray(self.images[index].numpy(), mode="L"), int(self.labels[index])


class PILToRaw:
    """`raw(i)` for a dataset of fixed-size PIL images (e.g. the cluttered canvas): uint8 tensor, label."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __call__(self, index: int) -> tuple[torch.Tensor, int]:
        img, label = self.base[index]
        arr = np.array(img, dtype=np.uint8, copy=True)
        tensor = torch.from_numpy(arr)
        return (tensor.permute(2, 0, 1) if tensor.ndim == 3 else tensor), int(label)


def base_dataset(spec: str | Path, split: str, *, seed: int = 0) -> Dataset:
    """The untransformed dataset: items are (PIL image, int label); `.classes` names the labels.

    `holdout` is the held-out slice of the train split (`tnt_cli.data.holdout`)."""
    from tnt_cli.data.holdout import HOLDOUT, SOURCE_SPLIT, held_out

    if split == HOLDOUT:
        return held_out(base_dataset(spec, SOURCE_SPLIT, seed=seed), f"{spec} {SOURCE_SPLIT}")
    spec = canonical_spec(spec)
    if spec == FASHION_MNIST:
        from tnt_cli.data.fashion_mnist import CLASSES, load_arrays

        images, labels = load_arrays(split)
        return ArrayDataset(images, labels, list(CLASSES))
    if spec in CANVASES:
        from tnt_cli.data.cluttered import ClutteredFashionMNIST

        try:
            ds = ClutteredFashionMNIST(split, seed=seed, background=CANVASES[spec])
        except TntError:
            raise
        except (ValueError, KeyError) as exc:
            raise TntError(f"{spec}: {exc}") from None
        if len(ds) == 0:
            raise TntError(f"{spec} {split} is empty")
        return ds
    if isinstance(spec, str):  # a timm source spec
        from tnt_cli.data import timm_source

        if timm_source.is_streaming(spec):
            raise TntError(
                f"data {spec!r} is streamed (no random access): tnt can evaluate it, but fine-tuning, calibration "
                "and visualisation need hfds/..., a folder or a .tar"
            )
        return timm_source.create(spec, split, seed=seed)
    from tnt_cli.data.folder import ImageFolderDataset, is_split_root

    if spec.is_file() or not is_split_root(spec):
        check_single_split(spec, split)
    if spec.is_file():
        from tnt_cli.data import timm_source

        return timm_source.create(str(spec), split, seed=seed)
    return ImageFolderDataset(spec, split)


def dataset_classes(spec: str | Path, split: str = "train") -> list[str]:
    """Class names, in label order (`split` matters only for sources opened through timm)."""
    from tnt_cli.data.holdout import HOLDOUT, SOURCE_SPLIT

    split = SOURCE_SPLIT if split == HOLDOUT else split
    spec = canonical_spec(spec)
    if spec in NAMED:  # the cluttered and textured sets keep Fashion-MNIST's labels
        from tnt_cli.data.fashion_mnist import CLASSES

        return list(CLASSES)
    if isinstance(spec, Path) and spec.is_dir():
        from tnt_cli.data.folder import folder_classes

        return folder_classes(spec)
    from tnt_cli.data import timm_source

    return list(getattr(timm_source.create(str(spec), split), "classes", []))


def split_label(spec: str | Path, split: str) -> str:
    """The name DATA itself gives `split`: what reports and model cards record, never a split the data lacks.

    Fashion-MNIST's `val` is its `test` split, a Hub dataset's is `validation`, an ImageFolder's is the folder
    found (val/, validation/ or test/); the held-out slice is named as part of train.
    """
    from tnt_cli.data.holdout import HOLDOUT, LABEL

    if split == HOLDOUT:
        return LABEL
    try:
        spec = canonical_spec(spec)
    except TntError:
        return split
    if spec in NAMED:
        from tnt_cli.data.fashion_mnist import SPLIT_ALIASES

        return SPLIT_ALIASES.get(split, split)
    if isinstance(spec, str):
        from tnt_cli.data.timm_source import prefix_of, split_name

        return split_name(split, prefix_of(spec))
    from tnt_cli.data.folder import SPLIT_FOLDERS, is_split_root, split_dir

    if spec.is_dir() and is_split_root(spec):
        try:
            return split_dir(spec, split).name
        except TntError:
            return split
    name = spec.name.lower().removesuffix(".tar")  # one split given directly: named for it, or the split asked
    return name if any(name in names for names in SPLIT_FOLDERS.values()) else split


@contextmanager
def seeded_rng(seed: int | None) -> Iterator[None]:
    """Seed python, numpy and torch RNGs for one sample's augmentation, then put the old states back, so
    loading in the main process never shifts the training RNG (noise, dropout)."""
    if seed is None:
        yield
        return
    py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)


class TransformedDataset(Dataset):
    """Applies a transform to a base dataset's images. Accepts `index` or `(index, sample seed)` keys.

    With `raw=True` it skips the PIL transform and returns (uint8 tensor, label, seed) for the batched
    tensor path (`TensorBatchTransform`).
    """

    def __init__(
        self, base: Dataset, transform: Callable | None = None, *, raw: bool = False, label_map: list[int] | None = None
    ) -> None:
        self.base = base
        self.transform = transform
        self.raw = raw
        self.label_map = label_map  # data label -> model class index (see tnt_cli.data.classes)
        self.classes = list(getattr(base, "classes", []))
        if raw:
            self._raw = base.raw if hasattr(base, "raw") else PILToRaw(base)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        if self.raw:
            image, label = self._raw(index)
            return image, self._label(label), seed
        image, label = self.base[index]
        if self.transform is not None:
            with seeded_rng(seed):
                image = self.transform(image)
        return image, self._label(label)

    def _label(self, label) -> int:
        return int(label) if self.label_map is None else self.label_map[int(label)]


def build_dataset(spec: str | Path, split: str, transform: Callable | None = None, *, seed: int = 0) -> Dataset:
    """A map-style dataset of (transform(PIL image), int label) with `.classes`; `seed` seeds synthetic data."""
    base = base_dataset(spec, split, seed=seed)
    if len(base) == 0:
        raise TntError(f"{spec} {split} has no images")
    return TransformedDataset(base, transform)
