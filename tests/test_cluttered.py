"""Cluttered Fashion-MNIST: deterministic, seeded, label-preserving, and the item is where the layout says."""

from __future__ import annotations

import numpy as np
import pytest

from tnt_cli.data.cluttered import ITEM, ClutteredFashionMNIST
from tnt_cli.data.fashion_mnist import load_arrays
from tnt_cli.errors import TntError


@pytest.fixture(scope="module")
def test_split() -> ClutteredFashionMNIST:
    return ClutteredFashionMNIST("test", seed=0)


def test_item_pixels_are_where_the_layout_says(test_split):
    images, labels = load_arrays("test")
    for i in (0, 1, 17, 9999):
        canvas = test_split.render(i)
        top, left, h, w = test_split.item_box(i)
        assert (h, w) == (ITEM, ITEM)
        assert 0 <= top <= test_split.canvas - ITEM and 0 <= left <= test_split.canvas - ITEM
        np.testing.assert_array_equal(canvas[top : top + h, left : left + w], images[i])
        _, label = test_split[i]
        assert label == labels[i]


def test_clutter_comes_from_other_images_and_stays_off_the_item(test_split):
    images, _ = load_arrays("test")
    lay = test_split.layout(5)
    assert len(lay.fragments) == test_split.clutter
    canvas = test_split.render(5)
    top, left, _, _ = lay.item_box
    outside = canvas.copy()
    outside[top : top + ITEM, left : left + ITEM] = 0
    f = test_split.fragment
    for src, (fy, fx, sy, sx) in lay.fragments:
        assert src != 5
        overlap_y = fy < top + ITEM and fy + f > top
        overlap_x = fx < left + ITEM and fx + f > left
        assert not (overlap_y and overlap_x)
        # every fragment pixel is present (maximum blending: overlapping fragments can only be brighter)
        assert (canvas[fy : fy + f, fx : fx + f] >= images[src, sy : sy + f, sx : sx + f]).all()
    assert outside.any(), "clutter should put some ink outside the item"


def test_deterministic_and_seeded():
    a = ClutteredFashionMNIST("test", seed=0)
    b = ClutteredFashionMNIST("test", seed=0)
    c = ClutteredFashionMNIST("test", seed=1)
    # order-independent: rendering 3 before 2 gives the same pixels as a fresh instance rendering 2 alone
    a.render(3)
    np.testing.assert_array_equal(a.render(2), b.render(2))
    assert a.layout(2) == b.layout(2)
    assert a.layout(2) != c.layout(2)
    assert ClutteredFashionMNIST("train", seed=0).layout(2) != a.layout(2)


def test_pil_and_tensor_paths_agree(test_split):
    img, label = test_split[7]
    assert img.mode == "L" and img.size == (test_split.canvas, test_split.canvas)
    x, y, boxes = test_split.tensors(limit=8)
    assert x.shape == (8, 1, test_split.canvas, test_split.canvas)
    np.testing.assert_array_equal(np.asarray(img), x[7, 0].numpy())
    assert int(y[7]) == label
    assert tuple(boxes[7].tolist()) == test_split.item_box(7)


def test_transforms_and_other_geometry():
    ds = ClutteredFashionMNIST("val", seed=3, canvas=48, clutter=2, fragment=6, transform=np.asarray)
    arr, _ = ds[0]
    assert arr.shape == (48, 48)
    assert len(ds.layout(0).fragments) <= 2


@pytest.mark.parametrize(
    "kwargs",
    [dict(split="dev"), dict(split="test", canvas=20), dict(split="test", fragment=0), dict(split="test", clutter=-1)],
)
def test_bad_arguments_are_clear_errors(kwargs):
    split = kwargs.pop("split")
    with pytest.raises(TntError):
        ClutteredFashionMNIST(split, **kwargs)


def test_index_out_of_range(test_split):
    with pytest.raises(IndexError):
        test_split.layout(len(test_split))


def test_textured_background_has_no_equal_patches_and_the_same_layout():
    """The textured set: every 8x8 patch differs from every other (no free merges, as in natural images), the
    item and clutter sit where the black set puts them, and the texture is seeded like the layout."""
    black = ClutteredFashionMNIST("test", seed=0)
    textured = ClutteredFashionMNIST("test", seed=0, background="texture")
    images, _ = load_arrays("test")
    for i in (0, 3, 9999):
        assert textured.layout(i) == black.layout(i)
        canvas = textured.render(i)
        patches = canvas.reshape(8, 8, 8, 8).transpose(0, 2, 1, 3).reshape(64, -1)
        assert len({p.tobytes() for p in patches}) == 64
        top, left, h, w = textured.item_box(i)
        item = canvas[top : top + h, left : left + w]
        assert (item >= images[i]).all()  # maximum blending: the item's ink is all there
        np.testing.assert_array_equal(canvas, ClutteredFashionMNIST("test", seed=0, background="texture").render(i))
    other_seed = ClutteredFashionMNIST("test", seed=1, background="texture")
    assert not np.array_equal(textured.texture(0), other_seed.texture(0))
    black_canvas = black.render(0)
    black_patches = black_canvas.reshape(8, 8, 8, 8).transpose(0, 2, 1, 3).reshape(64, -1)
    assert len({p.tobytes() for p in black_patches}) < 40  # the black set is mostly one patch


def test_unknown_background_is_a_clear_error():
    with pytest.raises(TntError, match="background"):
        ClutteredFashionMNIST("test", background="plaid")
