"""ImageFolder datasets (`ROOT/train/<class>/*.jpg`, `ROOT/val/<class>/*.jpg`, or the class folders given
directly: `ROOT/<class>/*.jpg`, one split) with one-line errors.

Scanned here rather than with torchvision's ImageFolder so an empty class folder, a missing split or an
unreadable image is reported as one line naming the path. Links are followed, but each folder and each file is
counted once: a link loop, or an image reached twice (through a link or a hard link), is refused naming both
paths, and so is an image name that is not a regular file (a FIFO would block the reader forever, a device
never ends). An image whose header declares more pixels than Pillow's limit is refused before it is decoded.
"""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
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
    seen = _Seen()
    for cls in classes:
        files: list[str] = []
        _walk(str(folder / cls), seen, files)
        if not files:
            empty.append(cls)
        samples.extend((path, label_of[cls]) for path in files)
    if empty:
        more = f" (and {len(empty) - 1} more empty class folders)" if len(empty) > 1 else ""
        raise TntError(f"class folder {folder / empty[0]} has no images{more} (supported: {', '.join(IMG_EXTENSIONS)})")
    return samples


class _Seen:
    """The folders and files a scan has counted, by (device, inode): what a link or a hard link reaches again."""

    def __init__(self) -> None:
        self.folders: dict[tuple[int, int], str] = {}
        self.files: dict[tuple[int, int], str] = {}


def _walk(folder: str, seen: _Seen, files: list[str]) -> None:
    """Append FOLDER's image files, then its subfolders' (each sorted by name: os.walk's order), following links."""
    info = os.stat(folder)
    key = (info.st_dev, info.st_ino)
    if key in seen.folders:
        raise TntError(f"{folder} is {seen.folders[key]} again (a link loop, or a link to a folder already read): "
                       "each image must be counted once; remove the link")  # fmt: skip
    seen.folders[key] = folder
    with os.scandir(folder) as scan:
        entries = sorted((e for e in scan if not e.name.startswith(".")), key=lambda e: e.name)
    subfolders = []
    for entry in entries:
        if entry.is_dir():
            subfolders.append(entry.path)
        elif _is_image(entry.name):
            file_key = _file_key(entry, info.st_dev)
            if file_key in seen.files:
                raise TntError(f"{entry.path} is the same file as {seen.files[file_key]} (a link): each image must "
                               "be counted once; remove one of them")  # fmt: skip
            seen.files[file_key] = entry.path
            files.append(entry.path)
    for path in subfolders:
        _walk(path, seen, files)


def _file_key(entry: os.DirEntry, device: int) -> tuple[int, int]:
    """(device, inode) of an image file; anything but a regular file (behind a link too) is refused."""
    if entry.is_file(follow_symlinks=False):
        return device, entry.inode()  # no stat: the directory listing has the inode
    try:
        info = entry.stat()  # follows the link
    except OSError:
        raise TntError(f"{entry.path} is a broken link, not an image file: remove it") from None
    if not stat.S_ISREG(info.st_mode):
        raise TntError(f"{entry.path} is {_kind(info.st_mode)}, not an image file (reading it would block or never "
                       "end): remove it from the dataset")  # fmt: skip
    return info.st_dev, info.st_ino


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


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
        with quiet_bomb_warning(), Image.open(path) as img:
            refuse_bomb(img, path)
            img.load()
            return img.copy() if img.mode in ("L", "RGB") else img.convert("RGB")
    except BadImageError:
        raise
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        raise BadImageError(f"cannot read image {path}: {first_line(exc)}") from None


@contextmanager
def quiet_bomb_warning() -> Iterator[None]:
    """Pillow's DecompressionBombWarning, silenced: `refuse_bomb` turns the case into an error naming the file."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def refuse_bomb(img, path: str | Path) -> None:
    """Refuse an opened (not yet decoded) image whose header declares more pixels than Pillow's limit
    (`PIL.Image.MAX_IMAGE_PIXELS`): Pillow only warns up to twice the limit and decodes it, and a few kilobytes
    of PNG can expand to gigabytes."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    width, height = img.size
    if limit and width * height > limit:
        raise BadImageError(f"cannot read image {path}: {width} x {height} pixels is more than Pillow's limit of "
                            f"{limit} (a decompression bomb?): refused before decoding")  # fmt: skip
