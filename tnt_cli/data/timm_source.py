"""timm's dataset sources as tnt DATA: `timm.data.create_dataset` for tar files and prefixed specs.

Specs (as timm's train.py / validate.py take `--dataset` and `--data-dir`, folded into one string):
- `PATH.tar`: a tar of class folders (timm's ImageInTar reader), one split;
- `hfds/ORG/NAME`: a Hugging Face dataset (needs `datasets`; cached, honours HF_HUB_OFFLINE);
- `hfids/ORG/NAME`, `wds/NAME`, `tfds/NAME`: streamed sources (evaluation only: no random access);
- an optional `@ROOT` suffix is timm's `root` (wds: the shards directory with `_info.json`; tfds: the data
  directory; hfds: a datasets cache directory).

Items are (PIL image, int label) with `.classes` in label order, like the other tnt datasets, so the rest of
the data layer (transforms, sampler, limit, tensor path) is the same for every source.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset, IterableDataset

from tnt_cli.errors import SettingError, TntError, first_line

MAP_PREFIXES = ("hfds",)
STREAM_PREFIXES = ("hfids", "wds", "tfds")
PREFIXES = MAP_PREFIXES + STREAM_PREFIXES
PACKAGES = {"hfds": "datasets", "hfids": "datasets", "wds": "webdataset", "tfds": "tensorflow_datasets"}
PIP_NAMES = {"datasets": "datasets", "webdataset": "webdataset", "tensorflow_datasets": "tensorflow-datasets"}


def prefix_of(spec: str) -> str | None:
    """'hfds' for 'hfds/org/name' (any case), None for anything else."""
    head, sep, _ = str(spec).partition("/")
    return head.lower() if sep and head.lower() in PREFIXES else None


def is_streaming(spec: str) -> bool:
    return prefix_of(spec) in STREAM_PREFIXES


def split_name(split: str, prefix: str | None) -> str:
    """tnt's split names -> the source's: Hub datasets call the evaluation split 'validation'."""
    if prefix in ("hfds", "hfids", "tfds") and split == "val":
        return "validation"
    return split


def _parse(spec: str) -> tuple[str, str, str | None]:
    prefix = prefix_of(spec)
    body = str(spec).split("/", 1)[1]
    name, _, root = body.partition("@")
    if not name:
        raise TntError(f"data {spec!r}: write {prefix}/NAME (for example hfds/ORG/DATASET)")
    return f"{prefix}/{name}", name, root or None


def _need_package(spec: str, prefix: str) -> None:
    package = PACKAGES[prefix]
    if importlib.util.find_spec(package) is None:  # checked first: timm's readers print to stdout when it is missing
        raise TntError(f"data {spec!r} needs the {package!r} package: pip install {PIP_NAMES[package]}")


class TimmDataset(Dataset):
    """A map-style timm ImageDataset as (PIL image, label) with `.classes` (from its reader's class map)."""

    def __init__(self, ds: Any, spec: str) -> None:
        self.ds = ds
        self.spec = spec
        self.classes = reader_classes(ds)

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int):
        try:
            image, label = self.ds[index]
        except RuntimeError as exc:  # timm retries unreadable images, then gives up with a RuntimeError
            raise TntError(f"{self.spec}: cannot read image {index}: {exc}") from None
        return image, int(label)


class LimitedStream(IterableDataset):
    """The first `limit` items of a streamed dataset (`--limit` on a source without random access)."""

    def __init__(self, ds: Any, limit: int | None) -> None:
        self.ds = ds
        self.limit = limit
        self.classes = list(getattr(ds, "classes", []))

    def __iter__(self):
        for i, item in enumerate(self.ds):
            if self.limit is not None and i >= self.limit:
                return
            yield item

    def __len__(self) -> int:
        n = len(self.ds)
        return n if self.limit is None else min(n, self.limit)


def reader_classes(ds: Any) -> list[str]:
    """Class names in label order from a timm dataset's reader (folder, tar, hfds, wds, tfds readers)."""
    reader = getattr(ds, "reader", ds)
    mapping = getattr(reader, "class_to_idx", None) or getattr(reader, "class_name_to_idx", None) or {}
    if mapping:
        by_index = {int(i): str(name) for name, i in mapping.items()}
        return [by_index.get(i, str(i)) for i in range(max(by_index) + 1)]
    names = getattr(reader, "_source_names", None) or {}
    return [str(names[i]) for i in sorted(names)] if names else []


def create(spec: str, split: str, *, train: bool = False, transform: Any = None, seed: int = 0) -> Any:
    """timm.data.create_dataset for SPEC's split, with every failure as one line.

    Map-style sources come back wrapped as `TimmDataset`; streamed ones as timm's IterableImageDataset with
    `transform` applied by timm (they have no random access, so tnt cannot sample or shuffle them itself).
    """
    from timm.data import create_dataset

    from tnt_cli.io.hub import hub_error
    from tnt_cli.io.offline import is_offline

    prefix = prefix_of(spec)
    if prefix is None:  # a tar file: one split
        name, root = "", str(Path(spec).expanduser())
    else:
        _need_package(spec, prefix)
        name, _, root = _parse(spec)
    kwargs: dict[str, Any] = {"split": split_name(split, prefix), "is_training": train, "seed": seed}
    if prefix in ("hfds", "hfids", "tfds"):
        kwargs["download"] = not is_offline()
    if prefix in STREAM_PREFIXES:
        kwargs["transform"] = transform
    try:
        ds = create_dataset(name, root=root, **kwargs)
    except TntError:
        raise
    except Exception as exc:  # timm and the dataset libraries raise many types; the user needs the reason
        mapped = None if is_offline() else hub_error(exc, spec)
        if mapped is not None:
            raise mapped from None
        raise source_error(spec, exc, offline=is_offline()) from None
    if prefix in STREAM_PREFIXES:
        ds.classes = reader_classes(ds)
        return ds
    wrapped = TimmDataset(ds, spec)
    if len(wrapped) == 0:
        raise TntError(f"{spec} {split} has no images")
    return wrapped


def source_error(spec: str, exc: BaseException, *, offline: bool) -> TntError:
    """One line for a dataset that could not be opened (offline and not cached, missing split, bad file)."""
    reason = f"{type(exc).__name__}: {first_line(exc)}"
    if offline:
        return SettingError(
            "data {spec} could not be opened with offline mode on (HF_HUB_OFFLINE / {offline}): download it once "
            "online, or unset HF_HUB_OFFLINE ({reason})",
            spec=repr(spec),
            reason=reason,
        )
    return TntError(f"data {spec!r}: timm.data.create_dataset could not open it: {reason}")
