"""Shared fixtures for the evaluation tests: a tiny ViT trained for a few steps on Fashion-MNIST, served by name.

The tiny model (32x32 input, 8x8 patches -> 16 patch tokens, 4 blocks) stands in for the example model; its TNT
heads are random, which is enough for the equality properties these tests check.
"""

from __future__ import annotations

import copy

import pytest
import torch

TINY = "tiny-fm"  # the MODEL name the patched loader answers to
BATCH = 64


def make_vit(seed: int = 0):
    import timm

    torch.manual_seed(seed)
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=32, depth=4, num_heads=2,
        num_classes=10,
    )  # fmt: skip


def train_briefly(vit, steps: int = 20) -> None:
    """A few SGD steps on Fashion-MNIST train so accuracy is well above chance (and schedules differ)."""
    from tnt_cli.data import build_loader

    loader = build_loader("fashion-mnist", "train", vit, batch_size=BATCH, limit=steps * BATCH, seed=1)
    opt = torch.optim.AdamW(vit.parameters(), lr=3e-3)
    vit.train()
    for images, labels in loader:
        loss = torch.nn.functional.cross_entropy(vit(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    vit.eval()


def run_cli(*args: str):
    """Invoke `tnt ARGS` in-process; returns click's Result (stdout and stderr apart)."""
    from typer.testing import CliRunner

    from tnt_cli.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args])


def one_error_line(result) -> str:
    """The single `error: ...` line a failing command must end with (notes may precede it; no traceback)."""
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert "Traceback" not in result.stderr
    return errors[0]


@pytest.fixture(scope="session")
def tiny_tnt():
    """(TNTModel with heads on blocks 0-3, its plain timm twin) in eval mode."""
    from tnt_cli.engine import attach_tnt

    vit = make_vit()
    before = torch.get_num_threads()  # session-scoped: may run before conftest's `one_thread`
    torch.set_num_threads(1)
    try:
        train_briefly(vit)
    finally:
        torch.set_num_threads(before)
    plain = copy.deepcopy(vit).eval()
    torch.manual_seed(1)
    model = attach_tnt(vit, [0, 1, 2, 3]).eval()
    return model, plain


def _serve(mp: pytest.MonkeyPatch, tiny_model) -> str:
    import tnt_cli.io.sources as sources

    real = sources.load_model

    def fake(spec, *, random_weights=False, schedule=None, require_trained_heads=True, **kwargs):
        if spec != TINY:
            return real(spec, random_weights=random_weights, schedule=schedule,
                        require_trained_heads=require_trained_heads, **kwargs)  # fmt: skip
        model = copy.deepcopy(tiny_model).eval()
        loaded = sources.LoadedModel(model=model, source=TINY, architecture="vit_tiny_patch16_224", heads_trained=True)
        if schedule is not None:
            sources.install_schedule(loaded, schedule, require_trained_heads=require_trained_heads)
        return loaded

    mp.setattr(sources, "load_model", fake)
    return TINY


@pytest.fixture
def serve_tiny(monkeypatch, tiny_tnt):
    """Make `load_model('tiny-fm')` return a fresh copy of the tiny model (heads counted as trained)."""
    return _serve(monkeypatch, tiny_tnt[0])


@pytest.fixture(scope="module")
def serve_tiny_module(tiny_tnt):
    """`serve_tiny` for module-scoped fixtures (one calibrate run shared by several tests)."""
    with pytest.MonkeyPatch.context() as mp:
        yield _serve(mp, tiny_tnt[0])
