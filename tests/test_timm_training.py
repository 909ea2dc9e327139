"""The library does the training plumbing: timm's optimizer and lr scheduler (exact resume kept), timm's EMA as an
option (checkpointed, resumable), a TensorBoard hook when the package is there, and `tnt --version`."""

from __future__ import annotations

import importlib.machinery
import json
import subprocess
import sys
import types

import torch
from _helpers import backbone_state, error_line, read_config, read_metrics, run_cli

from tnt_cli.train.checkpoint import load_checkpoint
from tnt_cli.train.trainer import INTERRUPT_ENV

# 160 images / batch 16 = 10 steps per epoch: 12 steps cross an epoch boundary (a checkpoint) and the warmup's end
SHORT = ["--data", "fashion-mnist", "--no-progress", "--log-every", "1", "--max-steps", "12", "--batch-size", "16",
         "--limit", "160", "--warmup-epochs", "0.5", "--eval-limit", "0", "--seed", "3"]  # fmt: skip


def test_timm_optimizer_and_ema_resume_exactly(base, tmp_path, monkeypatch):
    args = [*SHORT, "--opt", "lamb", "--ema-decay", "0.9", "--keep-checkpoint"]
    assert run_cli("finetune", base, "--out", tmp_path / "straight", *args).exit_code == 0
    monkeypatch.setenv(INTERRUPT_ENV, "5")
    assert run_cli("finetune", base, "--out", tmp_path / "resumed", *args).exit_code == 130
    checkpoint = load_checkpoint(tmp_path / "resumed")
    assert {f"module.{k}" for k in checkpoint["model"]} == set(checkpoint["ema"])  # the EMA is checkpointed
    monkeypatch.delenv(INTERRUPT_ENV)
    resumed = run_cli("finetune", base, "--out", tmp_path / "resumed", *args, "--resume")
    assert resumed.exit_code == 0, resumed.output
    a, b = backbone_state(tmp_path / "straight"), backbone_state(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a)

    def logged(run):  # the lr timm's scheduler set at each step, the loss: the same trajectory
        return [{k: v for k, v in m.items() if k != "img_s"} for m in read_metrics(tmp_path / run)]

    assert logged("straight") == logged("resumed")
    lrs = [m["lr"] for m in read_metrics(tmp_path / "straight")]
    assert lrs[0] < lrs[4] and lrs[-1] < lrs[4]  # warmup, then the cosine
    assert read_config(tmp_path / "straight")["tnt"]["training"]["config"]["opt"] == "lamb"

    # OUT holds the average: the last weights (the checkpoint's model) differ from what was written
    last = load_checkpoint(tmp_path / "straight")["model"]
    ema = load_checkpoint(tmp_path / "straight")["ema"]
    assert all(torch.equal(ema[f"module.vit.{k}"], v) for k, v in a.items())
    assert any(not torch.equal(last[f"vit.{k}"], v) for k, v in a.items())


def test_unknown_optimizer_is_one_line_with_a_suggestion(base, tmp_path):
    line = error_line(run_cli("finetune", base, "--out", tmp_path / "o", *SHORT, "--opt", "adamww"))
    assert "--opt 'adamww' is not a timm optimizer (did you mean adamw" in line


def test_tensorboard_hook_logs_every_metrics_record(base, tmp_path, monkeypatch):
    written: list[tuple[str, float, int]] = []

    class SummaryWriter:  # stands in for torch.utils.tensorboard's
        def __init__(self, log_dir, purge_step=None):
            self.log_dir = log_dir

        def add_scalar(self, tag, value, step):
            written.append((tag, value, step))

        def flush(self):
            pass

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = SummaryWriter
    package = types.ModuleType("tensorboard")
    package.__spec__ = importlib.machinery.ModuleSpec("tensorboard", None)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    monkeypatch.setitem(sys.modules, "tensorboard", package)
    out = tmp_path / "tb"
    result = run_cli("finetune", base, "--out", out, *SHORT, "--max-steps", "3", "--tensorboard")
    assert result.exit_code == 0, result.output
    losses = [(tag, step) for tag, _, step in written if tag == "train/loss"]
    assert losses == [("train/loss", m["step"]) for m in read_metrics(out)] == [("train/loss", s) for s in (1, 2, 3)]
    assert any(tag.startswith("train/loss_parts/") for tag, _, _ in written)


def test_tensorboard_without_the_package_is_refused_up_front(base, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    line = error_line(run_cli("finetune", base, "--out", tmp_path / "o", *SHORT, "--tensorboard"))
    assert "--tensorboard needs the tensorboard package: pip install tensorboard" in line
    assert not (tmp_path / "o").exists()


def test_version_names_tnt_torch_and_timm_without_importing_them():
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "tnt_cli", "--version"], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    from importlib.metadata import version

    import tnt_cli

    assert proc.stdout.startswith(f"tnt {tnt_cli.__version__} (torch {version('torch')}, timm {version('timm')}")
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert not imported & {"torch", "timm"}
    assert json.dumps(proc.stdout)  # one line of plain text


def test_a_checkpoint_of_the_previous_version_resumes_or_says_why():
    """Checkpoints written before timm's scheduler and the held-out slice: the lr is recomputed from the step, and
    a run that would now hold images out is refused rather than continued on other data."""
    from tnt_cli.train.config import TrainConfig
    from tnt_cli.train.optim import build_optimizer, build_scheduler
    from tnt_cli.train.resume import resume_mismatch

    model = torch.nn.Linear(2, 2)
    schedule = build_scheduler(build_optimizer(model, 0.1, 0.0), total=10, warmup=2, min_lr=0.0)
    schedule.load_state_dict({"last_epoch": 4, "base_lrs": [0.1], "_step_count": 5})  # torch's LambdaLR state
    assert schedule.updates == 4 and schedule.lr_at(4) == schedule.timm.optimizer.param_groups[0]["lr"]
    old = {k: v for k, v in TrainConfig(model="m", data="d", out="o").to_dict().items()
           if k not in ("holdout", "opt", "ema_decay")}  # fmt: skip
    from tnt_cli.cli._errors import describe

    refused = resume_mismatch(old, TrainConfig(model="m", data="d", out="o"))
    assert describe(refused)[0] == "--resume: the checkpoint was made with --no-holdout; resume with the original " \
                                   "settings"  # fmt: skip
    assert resume_mismatch(old, TrainConfig(model="m", data="d", out="o", holdout=False)) is None
