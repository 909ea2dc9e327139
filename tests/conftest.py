"""The tests' shared fixtures, built from the plain helpers in `_helpers.py`."""

from __future__ import annotations

import copy
import os

import _helpers
import pytest
from _helpers import EVAL, FMNIST, train_briefly, write_timm_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network


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
    """Factory fixture: `tiny_vit(kind="vit", seed=0, **timm_kwargs)` (the engine tests' spelling of the helper)."""
    return _helpers.tiny_vit


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A plain timm model directory holding a random tiny 28x28 Fashion-MNIST ViT: what a user would start from."""
    return write_timm_dir(tmp_path_factory.mktemp("base") / "tiny", _helpers.tiny_vit(shape=FMNIST))


@pytest.fixture(scope="session")
def trained_tiny(one_thread):
    """(TNTModel with random heads on blocks 0-3, its plain timm twin) in eval mode; the backbone was trained for a
    few steps on Fashion-MNIST, so accuracies are well above chance and equalities between them mean something."""
    import torch

    from tnt_cli.engine import attach_tnt

    vit = _helpers.tiny_vit(shape=EVAL)
    train_briefly(vit)
    plain = copy.deepcopy(vit).eval()
    torch.manual_seed(1)
    return attach_tnt(vit, [0, 1, 2, 3]).eval(), plain


@pytest.fixture(scope="session")
def tiny_dir(trained_tiny, tmp_path_factory):
    """`trained_tiny` saved by the product's own save path as a tnt model directory: a real MODEL for the CLI.

    Commands read it and write elsewhere; a test that needs a directory of its own saves a copy.
    """
    import tnt_cli

    return tnt_cli.save(trained_tiny[0], tmp_path_factory.mktemp("tiny") / "tiny-fm")


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """huggingface_hub in offline mode with its cache in a tmp HF_HOME (the module is already imported)."""
    from huggingface_hub import constants

    home = tmp_path / "hf_home"
    home.mkdir()
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    return home
