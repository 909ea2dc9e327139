"""Data: loaders for Fashion-MNIST and ImageFolder roots, transforms fitted to the model, clear errors, and the
deterministic / resumable / shardable sampler the trainer's exact resume relies on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _helpers import EVAL, FMNIST, tiny_vit
from PIL import Image

from tnt_cli.data import (
    BadImageError,
    EpochSampler,
    build_dataset,
    build_loader,
    dataset_classes,
    eval_transform,
    resolve_config,
    subset_indices,
)
from tnt_cli.data.fashion_mnist import load_arrays
from tnt_cli.errors import TntError


@pytest.fixture(scope="module")
def gray28():
    return tiny_vit(shape=FMNIST)


@pytest.fixture(scope="module")
def rgb32():
    return tiny_vit(shape=EVAL)


def make_folder(root, classes=("cat", "dog"), per_class=3, size=(20, 30), splits=("train", "val")):
    rng = np.random.default_rng(0)
    for split in splits:
        for cls in classes:
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")
    return root


def test_fashion_mnist_fast_path_matches_the_arrays(gray28):
    """28x28 grayscale model: no resize, one channel, (x/255 - mean) / std of the model's config."""
    loader = build_loader("fashion-mnist", "val", gray28, batch_size=64, limit=64)
    images, labels = next(iter(loader))
    assert images.shape == (64, 1, 28, 28) and images.dtype == torch.float32
    assert labels.dtype == torch.int64
    cfg = resolve_config(gray28)
    raw, raw_labels = load_arrays("test")
    idx = subset_indices(len(raw), 64, 0)
    expected = (torch.from_numpy(raw[idx]).float() / 255 - cfg.mean[0]) / cfg.std[0]
    torch.testing.assert_close(images[:, 0], expected)
    assert labels.tolist() == raw_labels[idx].tolist()


def test_grayscale_is_widened_and_resized_for_an_rgb_model(rgb32):
    fast = build_loader("fashion-mnist", "val", rgb32, batch_size=8, limit=8)
    pil = build_loader("fashion-mnist", "val", rgb32, batch_size=8, limit=8, tensor_path=False)
    (xf, yf), (xp, yp) = next(iter(fast)), next(iter(pil))
    assert xf.shape == xp.shape == (8, 3, 32, 32)
    assert torch.equal(xf[:, 0], xf[:, 1]) and torch.equal(xf[:, 1], xf[:, 2])
    assert torch.equal(yf, yp)
    # the tensor path and timm's PIL path resize the same way up to interpolation details
    assert (xf - xp).abs().mean() < 0.02


def test_train_augmentation_is_a_function_of_seed_epoch_and_index(gray28):
    def first_batch(epoch, seed=0):
        loader = build_loader("fashion-mnist", "train", gray28, batch_size=16, train=True, limit=64, seed=seed)
        loader.sampler.set_epoch(epoch)
        return next(iter(loader))

    a, b = first_batch(0), first_batch(0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], first_batch(1)[0])
    assert not torch.equal(a[0], first_batch(0, seed=1)[0])


def test_sampler_shards_resumes_and_depends_only_on_seed_and_epoch():
    indices = list(range(10, 33))  # 23 items: not divisible by 2 ranks
    full = EpochSampler(indices, seed=3)
    full.set_epoch(2)
    order = list(full)
    assert sorted(order) == indices and order != indices
    again = EpochSampler(indices, seed=3)
    again.set_epoch(2)
    assert list(again) == order
    again.set_epoch(3)
    assert list(again) != order
    again.set_epoch(2)
    again.set_start(5)
    assert list(again) == order[5:] and len(again) == len(order) - 5
    ranks = [EpochSampler(indices, seed=3, rank=r, world_size=2) for r in range(2)]
    for s in ranks:
        s.set_epoch(2)
    shards = [list(s) for s in ranks]
    assert len(shards[0]) == len(shards[1]) == 12
    assert set(shards[0]) | set(shards[1]) == set(indices)
    seeded = EpochSampler(indices, seed=3, with_seeds=True)
    seeded.set_epoch(2)
    pairs = list(seeded)
    assert [i for i, _ in pairs] == order and len({s for _, s in pairs}) == len(pairs)


def test_limit_is_a_seeded_subset_across_classes(tmp_path, rgb32):
    root = make_folder(tmp_path / "data", classes=("a", "b", "c"), per_class=4)
    picked = subset_indices(12, 6, seed=0)
    assert picked == subset_indices(12, 6, seed=0) and picked != subset_indices(12, 6, seed=1)
    loader = build_loader(root, "val", rgb32, batch_size=6, limit=6)
    _, labels = next(iter(loader))
    assert len(set(labels.tolist())) > 1  # not just the first class folder


def test_image_folder_loads_with_the_train_split_classes(tmp_path, rgb32, gray28):
    root = make_folder(tmp_path / "data")
    assert dataset_classes(root) == ["cat", "dog"]
    loader = build_loader(root, "val", rgb32, batch_size=4)
    batches = list(loader)
    assert [tuple(x.shape) for x, _ in batches] == [(4, 3, 32, 32), (2, 3, 32, 32)]
    assert torch.cat([y for _, y in batches]).tolist() == [0, 0, 0, 1, 1, 1]
    x, _ = next(iter(build_loader(root, "train", gray28, batch_size=2, train=True)))
    assert x.shape == (2, 1, 28, 28)  # RGB files reduced to the 1-channel model
    ds = build_dataset(root, "val", eval_transform(rgb32))
    assert ds[0][0].shape == (3, 32, 32) and ds.classes == ["cat", "dog"]


@pytest.mark.parametrize("workers", [0, 1])
def test_bad_image_is_reported_with_its_path(tmp_path, rgb32, workers):
    root = make_folder(tmp_path / "data")
    bad = root / "val" / "dog" / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    loader = build_loader(root, "val", rgb32, batch_size=8, workers=workers)
    with pytest.raises(BadImageError) as err:
        list(loader)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"cannot read image {bad}")


def test_malformed_datasets_are_one_line_errors(tmp_path, rgb32):
    with pytest.raises(TntError, match="not found"):
        build_loader(tmp_path / "missing", "val", rgb32, batch_size=2)
    root = make_folder(tmp_path / "data", splits=("train",))
    with pytest.raises(TntError, match="no val/ folder"):
        build_loader(root, "val", rgb32, batch_size=2)
    (root / "train" / "empty").mkdir()
    with pytest.raises(TntError, match=r"class folder .*empty has no images"):
        build_loader(root, "train", rgb32, batch_size=2)
    (tmp_path / "flat").mkdir()
    with pytest.raises(TntError, match="neither train/ and val/ folders nor class folders"):
        build_loader(tmp_path / "flat", "train", rgb32, batch_size=2)
    with pytest.raises(TntError, match="splits train and test"):
        build_loader("fashion-mnist", "dev", rgb32, batch_size=2)


@pytest.mark.parametrize("name", ["cluttered-fashion-mnist", "textured_fashion_mnist"])
def test_canvas_benchmarks_are_mapped(gray28, name):
    canvas = tiny_vit(shape=FMNIST, img_size=64, patch_size=8)
    loader = build_loader(name, "val", canvas, batch_size=4, limit=4)
    images, labels = next(iter(loader))
    assert images.shape == (4, 1, 64, 64) and labels.dtype == torch.int64
    assert dataset_classes(name) == dataset_classes("fashion-mnist")
