"""`build_loader`: DATA spec + model -> DataLoader of (normalised float images, int64 labels)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from tnt_cli.data.config import resolve_config
from tnt_cli.data.datasets import FASHION_MNIST, NAMED, TransformedDataset, base_dataset, canonical_spec
from tnt_cli.data.sampler import EpochSampler
from tnt_cli.data.timm_source import is_streaming
from tnt_cli.data.transforms import (
    DEFAULT_HFLIP,
    DEFAULT_RATIO,
    DEFAULT_SCALE,
    TensorBatchTransform,
    eval_transform,
    train_transform,
)
from tnt_cli.errors import SettingError, TntError

AUG_KEYS = {
    "scale": DEFAULT_SCALE,
    "ratio": DEFAULT_RATIO,
    "hflip": DEFAULT_HFLIP,
    "vflip": 0.0,
    "color_jitter": 0.0,
    "auto_augment": None,
    "re_prob": 0.0,
}
# Options that only timm's PIL pipeline implements; asking for any of them turns the tensor path off.
PIL_ONLY = ("color_jitter", "auto_augment", "re_prob")


def subset_indices(n: int, limit: int | None, seed: int = 0) -> list[int]:
    """All indices, or `limit` of them drawn by a seeded permutation and kept in dataset order.

    A random draw rather than the first N: ImageFolder samples are sorted by class, so the first N would be
    one class. The same (n, limit, seed) always gives the same subset.
    """
    if limit is None or limit >= n:
        return list(range(n))
    if limit <= 0:
        raise SettingError("{limit} must be positive, got {value}", value=limit)
    from tnt_cli.data.sampler import mix_seed

    gen = torch.Generator().manual_seed(mix_seed(seed, n, limit))
    return sorted(torch.randperm(n, generator=gen)[:limit].tolist())


def _ignore_sigint(_worker_id: int) -> None:
    """Workers leave Ctrl-C to the main process, which finishes its step and checkpoints."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _dist_info() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def build_loader(
    spec: str | Path,
    split: str,
    vit: nn.Module,
    *,
    batch_size: int,
    train: bool = False,
    workers: int = 0,
    limit: int | None = None,
    seed: int = 0,
    crop_pct: float | None = None,
    tensor_path: bool | None = None,
    distributed: bool | None = None,
    base: Dataset | None = None,
    label_map: list[int] | None = None,
    pin_memory: bool | None = None,
    **aug,
) -> DataLoader:
    """A DataLoader of (float images normalised for `vit`, int64 labels).

    - eval (`train=False`): dataset order, every image once (a seeded subset of `limit` images if given);
    - train: shuffled per epoch from (seed, epoch), last partial batch dropped, sharded across DDP ranks when
      torch.distributed is initialised (`distributed=False` turns that off); `loader.sampler` is an
      `EpochSampler`: call `set_epoch(e)` each epoch and `set_start(samples)` to resume mid-epoch.
    - `aug` (train only): scale, ratio, hflip, vflip, color_jitter, auto_augment (e.g. "rand-m9-mstd0.5-inc1"),
      re_prob. Fixed-size grayscale sources (Fashion-MNIST, cluttered, textured) use a batched tensor path unless a
      PIL-only option is set (or `tensor_path=False`).
    - `base`: the untransformed dataset of (spec, split) when the caller already built it (saves a rescan).
    - `label_map`: data label -> model class index (`tnt_cli.data.classes.map_classes`); None keeps the labels.
    - `crop_pct`: eval resize policy; default the model's pretrained_cfg for ImageFolder and 1.0 (no crop) for
      the Fashion-MNIST datasets, whose items fill the frame.
    - `pin_memory`: pin batches for fast copies to a GPU; default: when CUDA is available (pass
      `tnt_cli.devices.pin_memory(device)` when the device is known).
    """
    unknown = sorted(set(aug) - set(AUG_KEYS))
    if unknown:
        raise TntError(f"unknown augmentation option(s): {', '.join(unknown)}")
    if batch_size <= 0:
        raise TntError(f"batch size must be positive, got {batch_size}")
    options = {**AUG_KEYS, **{k: v for k, v in aug.items() if v is not None}}
    canonical = canonical_spec(spec)
    if isinstance(canonical, str) and is_streaming(canonical):
        if train:
            raise TntError(f"data {spec!r} is streamed (no random access): fine-tune from hfds/..., a folder or a .tar")
        return stream_loader(canonical, split, vit, batch_size=batch_size, workers=workers, limit=limit,
                             crop_pct=crop_pct)  # fmt: skip
    named = canonical in NAMED
    if base is None:
        base = base_dataset(canonical, split, seed=seed)
    if len(base) == 0:
        raise TntError(f"{spec} {split} has no images")
    cfg = resolve_config(vit).with_crop_pct(1.0 if named and crop_pct is None else crop_pct)

    pil_only = train and any(options[k] for k in PIL_ONLY)
    use_tensor = named and not pil_only if tensor_path is None else bool(tensor_path)
    if use_tensor and pil_only:
        raise TntError(f"the tensor path does not implement {', '.join(k for k in PIL_ONLY if options[k])}")
    if use_tensor:
        dataset = TransformedDataset(base, raw=True, label_map=label_map)
        collate = TensorBatchTransform(
            cfg, train=train, scale=options["scale"], ratio=options["ratio"], hflip=options["hflip"],
            vflip=options["vflip"],
        )  # fmt: skip
    else:
        tf = train_transform(cfg, **options) if train else eval_transform(cfg)
        dataset = TransformedDataset(base, tf, label_map=label_map)
        collate = None

    indices = subset_indices(len(base), limit, seed)
    rank, world = _dist_info() if (distributed is None or distributed) and train else (0, 1)
    sampler = EpochSampler(indices, shuffle=train, seed=seed, rank=rank, world_size=world, with_seeds=train)
    if train and sampler.per_rank < batch_size:
        raise TntError(f"{spec} {split} has {len(indices)} images: fewer than one batch of {batch_size} per process")
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=max(0, int(workers)),
        collate_fn=collate,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        drop_last=train,
        persistent_workers=train and workers > 0,
        worker_init_fn=_ignore_sigint if workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),  # never draw from the global RNG (exact resume)
    )
    loader.data_config = cfg  # type: ignore[attr-defined]
    loader.classes = list(getattr(base, "classes", []))  # type: ignore[attr-defined]
    return loader


def stream_loader(
    spec: str, split: str, vit: nn.Module, *, batch_size: int, workers: int, limit: int | None, crop_pct: float | None
) -> DataLoader:
    """Evaluation over a streamed timm source (wds/, tfds/, hfids/): its own order, the first `limit` images."""
    from tnt_cli.data import timm_source

    cfg = resolve_config(vit).with_crop_pct(crop_pct)
    ds = timm_source.create(spec, split, transform=eval_transform(cfg))
    loader = DataLoader(
        timm_source.LimitedStream(ds, limit), batch_size=batch_size, num_workers=max(0, int(workers)),
        pin_memory=torch.cuda.is_available(),
    )  # fmt: skip
    loader.data_config = cfg  # type: ignore[attr-defined]
    loader.classes = list(getattr(ds, "classes", []))  # type: ignore[attr-defined]
    return loader


__all__ = ["FASHION_MNIST", "build_loader", "stream_loader", "subset_indices"]
