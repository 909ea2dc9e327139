"""ImageFolder datasets (`ROOT/train/<class>/*.jpg`, `ROOT/val/<class>/*.jpg`, or the class folders given
directly: `ROOT/<class>/*.jpg`, one split) with one-line errors.

Scanned here rather than with torchvision's ImageFolder so an empty class folder, a missing split or an
unreadable image is reported as one line naming the path.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch.utils.data import Dataset

from tnt_cli.errors import TntError, first_line

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".tif", ".tiff", ".webp", ".gif")
SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "validation", "test"), "test": ("test",)}
SPLIT_FOLDERS["validation"] = SPLIT_FOLDERS["val"]


class BadImageError(TntError):
    """An image file that cannot be decoded. Stays one line even when re-raised from a DataLoader worker."""

    def __init__(self, message: str) -> None:
        if "Original Traceback" in message:  # DataLoader's ExceptionWrapper.reraise passes the whole traceback
            lines = [line for line in message.strip().splitlines() if line.strip()]
            last = lines[-1] if lines else message
            message = last.split(f"{type(self).__name__}: ", 1)[-1]
        super().__init__(message)


def split_dir(root: Path, split: str) -> Path:
    """The folder holding `split`'s class folders."""
    candidates = SPLIT_FOLDERS.get(split, (split,))
    for name in candidates:
        path = root / name
        if path.is_dir():
            return path
    raise TntError(
        f"{root} has no {candidates[0]}/ folder: an ImageFolder dataset has train/ and val/ folders, "
        "each with one folder of images per class"
    )


def scan_classes(folder: Path) -> list[str]:
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise TntError(f"{folder} has no class folders (expected one folder of images per class)")
    return classes


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS)


def scan_samples(folder: Path, classes: list[str], label_of: dict[str, int]) -> list[tuple[str, int]]:
    """(path, label) for every image, sorted; an empty class folder is an error naming it."""
    samples: list[tuple[str, int]] = []
    empty: list[str] = []
    for cls in classes:
        files: list[str] = []
        for dirpath, dirnames, filenames in os.walk(folder / cls, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            files.extend(os.path.join(dirpath, f) for f in sorted(filenames) if _is_image(f))
        if not files:
            empty.append(cls)
        samples.extend((path, label_of[cls]) for path in files)
    if empty:
        more = f" (and {len(empty) - 1} more empty class folders)" if len(empty) > 1 else ""
        raise TntError(f"class folder {folder / empty[0]} has no images{more} (supported: {', '.join(IMG_EXTENSIONS)})")
    return samples


def is_split_root(root: Path) -> bool:
    """ROOT holds split folders (train/, val/, ...) rather than class folders."""
    names = {name for names in SPLIT_FOLDERS.values() for name in names}
    return any((root / name).is_dir() for name in names)


def direct_classes(root: Path) -> list[str]:
    """The class folders of a folder given directly as one split."""
    try:
        return scan_classes(root)
    except TntError:
        raise TntError(
            f"{root} has neither train/ and val/ folders nor class folders: an ImageFolder dataset has one "
            "folder of images per class, either directly or under train/ and val/"
        ) from None


def folder_classes(root: Path) -> list[str]:
    """Class names of an ImageFolder root: those of train/ when present, else of val/; class folders given
    directly: their names."""
    if not is_split_root(root):
        return direct_classes(root)
    for split in ("train", "val"):
        try:
            return scan_classes(split_dir(root, split))
        except TntError:
            continue
    split_dir(root, "train")  # raises the missing-folder message
    raise AssertionError("unreachable")


class ImageFolderDataset(Dataset):
    """(PIL image, label) pairs of one split; labels index `classes` (the train split's classes)."""

    def __init__(self, root: str | Path, split: str) -> None:
        self.root = Path(root)
        folder = split_dir(self.root, split) if is_split_root(self.root) else self.root
        self.classes = folder_classes(self.root)
        label_of = {c: i for i, c in enumerate(self.classes)}
        own = scan_classes(folder)
        unknown = [c for c in own if c not in label_of]
        if unknown:
            raise TntError(f"{folder / unknown[0]} is a class the train/ folder does not have")
        self.samples = scan_samples(folder, own, label_of)
        self.split = split

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        return load_image(path), label


def load_image(path: str):
    """Decode an image fully (so errors surface here, with the path), as 'L' or 'RGB'."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            return img.copy() if img.mode in ("L", "RGB") else img.convert("RGB")
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        raise BadImageError(f"cannot read image {path}: {first_line(exc)}") from None
