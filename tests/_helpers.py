"""The tests' plain helpers, each defined once: tiny timm ViTs, model directories on disk, the in-process CLI, the
error-line check. Fixtures built from them live in conftest.py.

Tiny models build in milliseconds, so engine, IO and CLI tests stay fast on a 2-core CPU.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

# 32x32 input, patch 4 -> 64 patch tokens, width 32, 4 blocks: enough tokens for top-k and similarity pruning to
# make real choices, small enough that a forward takes well under a millisecond.
TINY = {"img_size": 32, "patch_size": 4, "embed_dim": 32, "depth": 4, "num_heads": 2, "num_classes": 10}
# Fashion-MNIST at its own size: 28x28 grey, patch 7 -> 16 patch tokens (what a `base` model directory holds).
FMNIST = {**TINY, "img_size": 28, "patch_size": 7, "in_chans": 1}
# 32x32 RGB, patch 8 -> 16 patch tokens: fast enough to train briefly and to evaluate on real images.
EVAL = {**TINY, "patch_size": 8}
# Width 64 with one attention head: the DeiT/ViT convention (64 channels per head) tnt uses to infer .pth shapes.
IO = {**TINY, "patch_size": 8, "embed_dim": 64, "depth": 3, "num_heads": 1}

# name -> (timm architecture, extra kwargs): a class token, registers with average pooling (with and without the
# class token), a distilled DeiT (class + distillation token)
KINDS = {
    "vit": ("vit_tiny_patch16_224", {}),
    "vit_reg_avg": ("vit_tiny_patch16_224", {"reg_tokens": 4, "class_token": False, "global_pool": "avg"}),
    "vit_reg_cls_avg": ("vit_tiny_patch16_224", {"reg_tokens": 4, "class_token": True, "global_pool": "avg"}),
    "deit_distilled": ("deit_tiny_distilled_patch16_224", {}),
}
BATCH = 64  # the evaluation tests' batch size


# ----------------------------------------------------------------------------- tiny models
def tiny_vit(kind: str = "vit", seed: int = 0, *, shape: dict = TINY, **overrides):
    """A randomly initialised tiny timm ViT of `kind` (see KINDS) in eval mode; the same `seed`, the same weights."""
    import timm

    arch, extra = KINDS[kind]
    torch.manual_seed(seed)
    vit = timm.create_model(arch, pretrained=False, **{**shape, **extra, **overrides})
    if kind == "deit_distilled":
        vit.set_distilled_training(False)  # eval-style output: mean of the two heads
    return vit.eval()


def tiny_tnt(
    kind: str = "vit", seed: int = 0, *, schedule=None, head_norm: bool = True, shape: dict = TINY, **overrides
):
    """A tiny TNT model with heads on every block, spread-out head weights (so top-k makes real, head-driven
    choices) and `schedule` installed, in eval mode."""
    from tnt_cli.engine import attach_tnt

    vit = tiny_vit(kind, seed, shape=shape, **overrides)
    model = attach_tnt(vit, range(len(vit.blocks)), schedule=schedule, head_norm=head_norm)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for head in model.heads.values():
            head.weight.copy_(torch.randn(head.weight.shape, generator=gen))
            head.bias.copy_(torch.randn(head.bias.shape, generator=gen))
    return model.eval()


def images(n: int = 3, seed: int = 0, size: int = 32) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def train_briefly(vit, steps: int = 20) -> None:
    """A few AdamW steps on Fashion-MNIST train, so accuracy is well above chance (and schedules differ)."""
    from tnt_cli.data import build_loader

    loader = build_loader("fashion-mnist", "train", vit, batch_size=BATCH, limit=steps * BATCH, seed=1)
    opt = torch.optim.AdamW(vit.parameters(), lr=3e-3)
    vit.train()
    for batch, labels in loader:
        loss = torch.nn.functional.cross_entropy(vit(batch), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    vit.eval()


# ----------------------------------------------------------------------------- files on disk
def write_timm_dir(path: Path, vit) -> Path:
    """A plain timm model directory (config.json + model.safetensors), as `timm` itself exports it."""
    from timm.models._hub import save_for_hf

    save_for_hf(vit, str(path), safe_serialization=True)
    assert (path / "config.json").exists()
    return path


def read_config(path: Path) -> dict:
    return json.loads((path / "config.json").read_text())


def read_metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def backbone_state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


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


# ----------------------------------------------------------------------------- the CLI
def run_cli(*args):
    """Run `tnt ARGS` in this process; returns click's Result (exit_code, stdout and stderr apart)."""
    from typer.testing import CliRunner

    from tnt_cli.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args])


def error_line(result, *fragments: str, code: int = 1, notes: bool = False) -> str:
    """The one `error: ...` line a failing command ends with: exit `code`, no traceback, every fragment in it.

    The command printed that line alone, unless `notes` allows other lines before it (never a second `error:`).
    """
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), result.stderr
    assert sum(line.startswith("error: ") for line in lines) == 1, result.stderr
    assert notes or (len(lines) == 1 and not result.stdout.strip()), (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]
    return lines[-1]
