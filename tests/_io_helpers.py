"""Tiny models and on-disk fixtures for the IO tests (model directories, official checkpoints, a HF cache)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

# width 64 with one attention head: the DeiT/ViT convention (64 channels per head) tnt uses to infer .pth shapes
TINY_IO = {"img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 3, "num_heads": 1, "num_classes": 10}


def tiny_vit(arch: str = "vit_tiny_patch16_224", seed: int = 0, **overrides):
    import timm

    torch.manual_seed(seed)
    vit = timm.create_model(arch, pretrained=False, **{**TINY_IO, **overrides})
    if hasattr(vit, "set_distilled_training"):
        vit.set_distilled_training(False)
    return vit.eval()


def tiny_tnt(arch: str = "vit_tiny_patch16_224", seed: int = 0, schedule=None, head_norm: bool = True, **overrides):
    """A tiny TNT model whose heads have spread-out weights (so top-k makes real, head-driven choices)."""
    from tnt_cli.engine import attach_tnt

    vit = tiny_vit(arch, seed, **overrides)
    model = attach_tnt(vit, range(len(vit.blocks)), schedule=schedule, head_norm=head_norm)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for head in model.heads.values():
            head.weight.copy_(torch.randn(head.weight.shape, generator=gen))
            head.bias.copy_(torch.randn(head.bias.shape, generator=gen))
    return model.eval()


def images(n: int = 3, seed: int = 0, size: int = 32) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def fake_hf_cache(
    home: Path, repo: str, model_dir: Path, sha: str = "0123456789abcdef0123456789abcdef01234567"
) -> Path:
    """Lay out HF_HOME/hub/models--org--name/{refs/main, snapshots/<sha>/...} as huggingface_hub would."""
    repo_dir = home / "hub" / ("models--" + repo.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / sha
    snapshot.mkdir(parents=True)
    for path in model_dir.iterdir():
        if path.is_file():
            shutil.copy2(path, snapshot / path.name)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(sha)
    return snapshot


def run_cli(args: list[str]):
    from tnt_cli.cli.app import app

    return CliRunner().invoke(app, args)


def assert_one_error_line(result, *fragments: str) -> str:
    """Non-zero exit, and stderr is exactly one `error: ...` line containing every fragment."""
    assert result.exit_code != 0, result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


def read_config(path: Path) -> dict:
    return json.loads((path / "config.json").read_text())


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
