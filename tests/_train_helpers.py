"""Helpers for the data / finetune tests: a tiny timm ViT directory and an in-process CLI runner."""

from __future__ import annotations

import json
from pathlib import Path

import torch

TINY = dict(img_size=28, patch_size=7, in_chans=1, embed_dim=32, depth=4, num_heads=2, num_classes=10)


def tiny_vit(seed: int = 0, **overrides):
    import timm

    torch.manual_seed(seed)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, **{**TINY, **overrides})


def write_timm_dir(path: Path, vit) -> Path:
    """A plain timm model directory (config.json + model.safetensors), as `timm` itself exports it."""
    from timm.models._hub import save_for_hf

    save_for_hf(vit, str(path), safe_serialization=True)
    assert (path / "config.json").exists()
    return path


def run_cli(*args: str):
    """Run `tnt ARGS` in this process; returns click's Result (exit_code, stdout, stderr)."""
    from typer.testing import CliRunner

    from tnt_cli.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args])


def read_metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def backbone_state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))
