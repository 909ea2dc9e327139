"""`tnt finetune` end to end on Fashion-MNIST with a tiny ViT (28x28, 1 channel, patch 7, width 32, 4 blocks).

Step counts are the smallest that show what each test is about on 2 shared CPU cores: 80 steps of batch 32
for "the loss goes down" (a from-scratch tiny ViT's loss moves from ~2.27 to 2.00-2.14 over 80 steps for
every seed tried, 0-3, a drop of at least 0.12 against a step-to-step noise of ~0.05 on a 10-step mean),
and 24 steps across an epoch boundary for the resume test (exactness does not need learning). The "trained"
fixture pins the settings those numbers were measured with (--recipe official, then full training with sigmoid
noise, sigma0 1, one lr for all); the resume and torchrun tests run the default recipe (distillation and the
hard-pruning pass on).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _helpers import backbone_state, error_line, read_metrics, run_cli

from tnt_cli.train.checkpoint import load_checkpoint
from tnt_cli.train.trainer import INTERRUPT_ENV, NAN_ENV

FAST = ["--data", "fashion-mnist", "--no-progress", "--log-every", "1", "--crop-scale", "0.6,1"]


@pytest.fixture(scope="module")
def trained(base, tmp_path_factory) -> Path:
    """80 steps of full training with noise: the output directory."""
    out = tmp_path_factory.mktemp("full") / "out"
    torch.set_num_threads(1)
    result = run_cli(
        "finetune", base, "--out", out, *FAST, "--recipe", "official", "--train", "full", "--relevance", "sigmoid",
        "--sigma0", "1", "--head-lr-scale", "1", "--max-steps", "80", "--batch-size", "32",
        "--limit", "2560", "--lr", "0.05", "--warmup-epochs", "0.1", "--eval-limit", "256", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def heads_state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "tnt_heads.safetensors"))


def test_full_finetune_lowers_the_loss_and_writes_a_loadable_directory(trained):
    import timm

    from tnt_cli.io.sources import load_model

    losses = [m["loss"] for m in read_metrics(trained)]
    assert len(losses) == 80
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < first - 0.08, (first, last)

    loaded = load_model(str(trained))
    assert loaded.heads_trained
    assert loaded.model.schedule.prune_layers == (2,)  # the default eval schedule is the directory's schedule
    with torch.no_grad():
        logits = loaded.model(torch.randn(2, 1, 28, 28))
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    dense = timm.create_model(f"local-dir:{trained}", pretrained=True)  # timm alone loads the backbone
    saved = backbone_state(trained)
    assert all(torch.equal(v, saved[k]) for k, v in dense.state_dict().items())
    config = json.loads((trained / "config.json").read_text())
    assert config["tnt"]["training"]["global_batch"] == 32
    report = json.loads((trained / "report.json").read_text())
    assert set(report["finetune"]) >= {"dense", "pruned"}
    assert not (trained / "checkpoint").exists()  # removed after a finished run (--keep-checkpoint keeps it)


def test_heads_only_training_leaves_the_backbone_bit_identical(trained, tmp_path):
    out = tmp_path / "heads"
    result = run_cli(
        "finetune", trained, "--out", out, *FAST, "--train", "heads", "--max-steps", "15", "--batch-size", "32",
        "--limit", "640", "--lr", "0.5", "--eval-limit", "0",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "pruning pass is off" in result.output  # the default recipe's pass has nothing to train here
    before, after = backbone_state(trained), backbone_state(out)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    heads_before, heads_after = heads_state(trained), heads_state(out)
    assert any(not torch.equal(heads_before[k], heads_after[k]) for k in heads_before)


def test_interrupt_and_resume_ends_with_the_same_weights(base, tmp_path, monkeypatch):
    # 320 images / batch 16 = 20 steps per epoch; 24 steps cross the epoch boundary. Mixup (numpy RNG),
    # RandAugment (timm PIL path, python + numpy + torch RNG), the noise (torch RNG) and the default recipe's
    # distillation and hard-pruning pass (keep rates drawn per step) are all on.
    args = [*FAST, "--max-steps", "24", "--batch-size", "16", "--limit", "320", "--lr", "0.05",
            "--eval-limit", "0", "--mixup", "0.2", "--randaugment", "rand-m5-n1", "--seed", "7"]  # fmt: skip
    assert run_cli("finetune", base, "--out", tmp_path / "straight", *args).exit_code == 0

    monkeypatch.setenv(INTERRUPT_ENV, "7")
    stopped = run_cli("finetune", base, "--out", tmp_path / "resumed", *args)
    assert stopped.exit_code == 130  # interrupted, like Ctrl-C
    assert "interrupted after step 7/24" in stopped.output
    assert load_checkpoint(tmp_path / "resumed")["step"] == 7
    monkeypatch.delenv(INTERRUPT_ENV)
    resumed = run_cli("finetune", base, "--out", tmp_path / "resumed", *args, "--resume")
    assert resumed.exit_code == 0, resumed.output

    for read in (backbone_state, heads_state):
        a, b = read(tmp_path / "straight"), read(tmp_path / "resumed")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def logged(run):  # the metrics log without the timing column
        return [{k: v for k, v in m.items() if k != "img_s"} for m in read_metrics(tmp_path / run)]

    assert logged("straight") == logged("resumed")
    settings = json.loads((tmp_path / "resumed" / "config.json").read_text())["tnt"]["training"]["settings"]
    assert settings["recipe"] == "default" and settings["drop_weight"] == 1.0 and settings["drop_block"] == 1


def test_nan_loss_stops_with_one_line_and_keeps_the_last_checkpoint(base, tmp_path, monkeypatch):
    out = tmp_path / "nan"
    monkeypatch.setenv(NAN_ENV, "25")  # epoch 1 ends at step 20 with a checkpoint
    result = run_cli("finetune", base, "--out", out, *FAST, "--recipe", "official", "--max-steps", "30",
                     "--batch-size", "16", "--limit", "320", "--eval-limit", "0")  # fmt: skip
    assert error_line(result, notes=True).startswith("error: loss is nan at step 25: stopped; last good checkpoint")
    checkpoint = load_checkpoint(out)
    assert checkpoint["step"] == 20 and checkpoint["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values() if v.is_floating_point())
    assert not (out / "config.json").exists()  # no half-made model directory


def test_bad_data_paths_and_empty_class_folders_give_one_line(base, tmp_path):
    missing = run_cli("finetune", base, "--data", tmp_path / "nowhere", "--out", tmp_path / "o1")
    assert error_line(missing) == (
        f"error: data '{tmp_path / 'nowhere'}' not found: give a folder (an ImageFolder root with train/ and val/, "
        "or class folders), a .tar of class folders, hfds/ORG/NAME, or one of fashion-mnist, cluttered-fashion-mnist, "
            "textured-fashion-mnist"
    )
    for split in ("train", "val"):
        (tmp_path / "data" / split / "shirt").mkdir(parents=True)
    (tmp_path / "data" / "train" / "shirt" / "x.txt").write_text("not an image")
    empty = run_cli("finetune", base, "--data", tmp_path / "data", "--out", tmp_path / "o2", "--train", "full")
    assert error_line(empty) == (
        f"error: class folder {tmp_path / 'data' / 'train' / 'shirt'} has no images (supported: .jpg, .jpeg, "
        ".png, .ppm, .pgm, .pbm, .bmp, .tif, .tiff, .webp, .gif)"
    )
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()
    keep = tmp_path / "o3"
    keep.mkdir()
    (keep / "previous.txt").write_text("an earlier run")
    refused = run_cli("finetune", base, "--data", tmp_path / "nowhere", "--out", keep, "--overwrite")
    assert refused.exit_code == 1 and (keep / "previous.txt").exists()  # --overwrite waits for a valid set-up


@pytest.mark.slow
def test_torchrun_two_cpu_processes_write_one_output(base, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "tnt_cli",
           "finetune", str(base), "--out", str(out), *FAST, "--max-steps", "6", "--batch-size", "16",
           "--limit", "320", "--eval-limit", "64", "--json"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)  # only rank 0 prints
    assert summary["world_size"] == 2 and summary["global_batch"] == 32
    assert summary["recipe"] == "default" and summary["settings"]["drop_block"] == 1  # both passes ran under DDP
    metrics = read_metrics(out)
    assert [m["step"] for m in metrics] == list(range(1, 7))  # one writer, not two
    assert all(m["global_batch"] == 32 and m["world_size"] == 2 for m in metrics)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]
    assert (out / "config.json").exists() and (out / "model.safetensors").exists()
