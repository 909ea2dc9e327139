"""Small shared fixtures: tiny timm ViTs that build in milliseconds, so engine tests stay fast on CPU."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network

# Tiny shapes: 32x32 input, patch 4 -> 64 patch tokens, width 32, 4 blocks. Enough tokens for top-k and
# similarity pruning to make real choices, small enough that a forward takes well under a millisecond.
TINY = {"img_size": 32, "patch_size": 4, "embed_dim": 32, "depth": 4, "num_heads": 2, "num_classes": 10}

# name -> (timm architecture, extra kwargs, number of prefix tokens)
TINY_KINDS = {
    "vit": ("vit_tiny_patch16_224", {}, 1),
    "vit_reg_avg": ("vit_tiny_patch16_224", {"reg_tokens": 4, "class_token": False, "global_pool": "avg"}, 4),
    "vit_reg_cls_avg": ("vit_tiny_patch16_224", {"reg_tokens": 4, "class_token": True, "global_pool": "avg"}, 5),
    "deit_distilled": ("deit_tiny_distilled_patch16_224", {}, 2),
}


def make_tiny_vit(kind: str = "vit", seed: int = 0, **overrides):
    """A randomly initialised tiny timm ViT in eval mode; same `seed` gives the same weights."""
    import timm
    import torch

    arch, extra, _ = TINY_KINDS[kind]
    torch.manual_seed(seed)
    vit = timm.create_model(arch, pretrained=False, **{**TINY, **extra, **overrides})
    if kind == "deit_distilled":
        vit.set_distilled_training(False)  # eval-style output: mean of the two heads
    return vit.eval()


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny models run fastest on one thread, and on a busy 2-core machine extra threads only add contention."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_vit():
    """Factory fixture: `tiny_vit(kind="vit", seed=0, **timm_kwargs)`."""
    return make_tiny_vit


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A plain timm model directory holding a random tiny 28x28 Fashion-MNIST ViT: what a user would start from."""
    from _train_helpers import tiny_vit, write_timm_dir

    return write_timm_dir(tmp_path_factory.mktemp("base") / "tiny", tiny_vit(seed=0))
