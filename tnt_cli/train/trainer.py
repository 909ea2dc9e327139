"""The TNT fine-tuning loop: heads-only or full training with relevance noise, resumable, DDP-ready.

Exact resume rests on three things: the data order and each sample's augmentation are functions of
(seed, epoch, index) (see `tnt_cli.data.sampler`); checkpoints are taken only between optimizer steps and hold
every RNG state (all ranks'); data loading never draws from the global RNGs. So a run interrupted after step k
and resumed performs the same float operations in the same order as an uninterrupted one.

What is built before the first step is in `tnt_cli.train.setup`, the run's numbers in `tnt_cli.train.plan`, where
it writes in `tnt_cli.train.output`, and the final checks and evaluation in `tnt_cli.train.finish`.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from torch import nn

from tnt_cli import errors
from tnt_cli.errors import TntError
from tnt_cli.stopping import StopRequests
from tnt_cli.terminal import console as safe_console
from tnt_cli.train import distributed as D
from tnt_cli.train import setup as S
from tnt_cli.train.checkpoint import (
    checkpoint_path,
    load_checkpoint,
    restore_scaler,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from tnt_cli.train.config import TrainConfig, recipe_settings
from tnt_cli.train.finish import finish_run
from tnt_cli.train.optim import build_ema, build_optimizer, build_scheduler
from tnt_cli.train.output import RunOutput
from tnt_cli.train.plan import make_plan, resolve_amp
from tnt_cli.train.progress import (
    METRICS_FILE,
    LossWindow,
    MetricsLog,
    Throughput,
    TrainProgress,
    describe_run,
    step_record,
    tensorboard_hook,
)
from tnt_cli.train.resume import check_resumable, check_same_classes
from tnt_cli.train.setup import seed_everything
from tnt_cli.train.task import LOSS_PARTS, PruningTask

# Test hooks (not user options): simulate Ctrl-C after optimizer step k, or a NaN loss at step k (1-based).
INTERRUPT_ENV = "TNT_INTERRUPT_AT_STEP"
NAN_ENV = "TNT_INJECT_NAN_AT_STEP"


class NonFiniteLoss(TntError):
    """The loss became NaN or inf: the run stops, the last good checkpoint stays as it was."""


class Interrupted(errors.Interrupted):
    """Ctrl-C (or SIGTERM): a checkpoint was written at the last finished step; resuming continues from it."""

    def __init__(self, message: str, checkpoint: Path, signum: int | None = None) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint
        self.signum = signum


@dataclass
class RunState:
    epoch: int = 0  # epoch in progress
    step_in_epoch: int = 0  # optimizer steps done in that epoch
    step: int = 0  # optimizer steps done in total
    last_loss: float = float("nan")


class Trainer:
    """One fine-tuning run. `run()` returns the summary dict (rank 0) or None (other ranks)."""

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        resume: bool = False,
        overwrite: bool = False,
        push_to_hub: str | None = None,
        console: Console | None = None,
    ) -> None:
        self.cfg = cfg
        self.resume = resume
        self.console = console or safe_console(stderr=True)
        self.output = RunOutput(cfg.out, resume=resume, overwrite=overwrite, push_to_hub=push_to_hub)
        self.stop = StopRequests(self._stopping)

    @property
    def work(self) -> Path:
        """Where checkpoints and the log go (OUT, or a side directory while replacing an output)."""
        return self.output.work

    # ------------------------------------------------------------------ entry
    def run(self) -> dict | None:
        self.device = D.pick_device(self.cfg.device)
        self.dist = D.init_distributed(self.device)
        try:
            return self._run()
        finally:
            self.output.release()
            D.shutdown(self.dist)

    def note(self, text: str) -> None:
        if self.dist.is_main:
            self.console.print(text)

    def _run(self) -> dict | None:
        cfg = self.cfg
        self.output.open((cfg.model, cfg.data), is_main=self.dist.is_main)
        saved = load_checkpoint(self.work) if self.resume else None
        if saved is not None:
            check_resumable(saved, cfg, self.dist.world_size)
        seed_everything(cfg.seed)
        data = S.open_training_data(cfg)
        self.data_classes = data.classes
        if saved is not None:
            check_same_classes(saved, data.classes)
        self._build(data)
        state = RunState()
        if saved is not None:
            state = self._restore(saved)
        else:
            # same heads on every rank (DDP also broadcasts them); different noise per rank from here on
            seed_everything(cfg.seed * 1_000_003 + self.dist.rank)
        self._wrap()
        D.barrier(self.dist)  # an existing output is replaced only once the new one is complete (`_finish`)
        self.metrics = MetricsLog(self.work / METRICS_FILE, enabled=self.dist.is_main)
        if saved is not None:
            self.metrics.truncate_after(state.step)
        if cfg.tensorboard and self.dist.is_main:
            self.metrics.hooks.append(tensorboard_hook(self.work, resumed_at=state.step if saved else None))
        blocks = self.pruning_pass.blocks if self.pruning_pass is not None else None
        for line in describe_run(cfg, self.plan, pruning_blocks=blocks, device=self.device):
            self.note(line)
        if self.resume:
            self.note(f"resuming at step {state.step}/{self.plan.total_steps} (epoch {state.epoch + 1})")
        self._train(state)
        return self._finish(state)

    # ------------------------------------------------------------------ set-up
    def _build(self, data: S.TrainingData) -> None:
        """Model, loader, plan, loss and optimizer, in this order (the model's heads draw from the seeded RNG)."""
        cfg = self.cfg
        self.built = built = S.build_training_model(cfg, data.classes, self.device, self.note)
        self.model, self.teacher, self.pruning_pass = built.model, built.teacher, built.pruning_pass
        self.drop_block = built.drop_block
        self.loader = S.build_train_loader(cfg, self.model, data, built.label_map)
        self.sampler = self.loader.sampler
        self.plan = plan = make_plan(cfg, train_images=len(self.sampler.indices), world_size=self.dist.world_size,
                                     amp=resolve_amp(cfg.amp, self.device))  # fmt: skip
        self.mixup, self.criterion = S.build_loss(cfg, self.model.vit.num_classes)
        self.optimizer = build_optimizer(self.model, plan.lr, cfg.weight_decay, cfg.heads_lr_scale, opt=cfg.opt)
        self.scheduler = build_scheduler(self.optimizer, total=plan.total_steps, warmup=plan.warmup_steps,
                                         min_lr=cfg.min_lr)  # fmt: skip
        self.ema = build_ema(self.model, cfg.ema_decay)
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(plan.amp)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=plan.amp == "fp16")
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]

    def _restore(self, saved: dict) -> RunState:
        try:
            self.model.load_state_dict(saved["model"])
        except RuntimeError as exc:  # a checkpoint from before data_classes were recorded, or another MODEL
            raise errors.SettingError("{resume}: the checkpoint's model does not fit this run's ({reason}): did MODEL "
                                      "or DATA change since it was written?", reason=errors.first_line(exc)) from None
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        restore_scaler(self.scaler, saved["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(saved["ema"])
        set_rng_state(saved["rng"][self.dist.rank])
        return RunState(epoch=saved["epoch"], step_in_epoch=saved["step_in_epoch"], step=saved["step"])

    def _wrap(self) -> None:
        settings = S.loss_settings(self.cfg, self.pruning_pass, self.model.noise.blocks)
        self.task = PruningTask(self.model, self.criterion, settings, teacher=self.teacher)
        self.forward_model: nn.Module = self.task
        self.ddp = None
        if self.dist.enabled:  # DDP wraps the whole step (both passes and the loss): one forward per backward
            self.ddp = D.wrap_ddp(self.task, self.device, find_unused=S.may_leave_unused(self.model, self.cfg))
            self.forward_model = self.ddp
        if self.cfg.compile:
            self.forward_model = torch.compile(self.forward_model)

    # ------------------------------------------------------------------ loop
    def _train(self, state: RunState) -> None:
        plan = self.plan
        interrupt_at = _env_int(INTERRUPT_ENV)
        nan_at = _env_int(NAN_ENV)
        meter = Throughput()
        window = LossWindow()
        show = self.cfg.progress and self.dist.is_main
        progress = TrainProgress(self.console, plan.total_steps, state.step, enabled=show)
        with self.stop, progress:  # first Ctrl-C / SIGTERM: finish the step, checkpoint, stop; a second: at once
            while state.step < plan.total_steps:
                self._train_epoch(state, progress, meter, window, interrupt_at, nan_at)

    def _train_epoch(self, state, progress, meter, window, interrupt_at, nan_at) -> None:
        cfg, plan = self.cfg, self.plan
        self.model.train()
        if cfg.train == "heads":
            self.model.vit.eval()  # frozen backbone: no dropout / drop-path, so its features stay the dense ones
        self.sampler.set_epoch(state.epoch)
        self.sampler.set_start(state.step_in_epoch * cfg.accum * cfg.batch_size)
        steps_this_epoch = min(plan.steps_per_epoch, state.step_in_epoch + plan.total_steps - state.step)
        batches = iter(self.loader)
        while state.step_in_epoch < steps_this_epoch:
            loss, parts = self._train_step(batches, state.step + 1, nan_at, state)
            state.step += 1
            state.step_in_epoch += 1
            state.last_loss = loss
            window.add(loss, parts)
            meter.add(plan.global_batch)
            lr = self._lr_before_step(state.step)
            ips = meter.rate()
            if state.step % max(1, cfg.log_every) == 0 or state.step == plan.total_steps:
                epoch = state.epoch + state.step_in_epoch / plan.steps_per_epoch
                record = step_record(state.step, epoch, plan, window=window, lr=lr, images_per_s=ips, model=self.model)
                self.metrics.write(record)
                window.clear()
                meter.reset()
            progress.update(state.step, loss, lr, ips, parts)
            requested = self.stop.requested or (interrupt_at is not None and state.step == interrupt_at)
            if D.any_rank(requested, self.dist, self.device):
                path = self._save_checkpoint(state)
                done = f"{state.step}/{plan.total_steps}"
                raise Interrupted(f"interrupted after step {done}: checkpoint saved to {path}", path, self.stop.signum)
        del batches
        if state.step_in_epoch >= plan.steps_per_epoch or state.step >= plan.total_steps:
            state.epoch += 1
            state.step_in_epoch = 0
            if state.step < plan.total_steps or self.cfg.keep_checkpoint:
                self._save_checkpoint(state)

    def _lr_before_step(self, step: int) -> float:
        """The lr that step `step` (1-based) used."""
        return self.scheduler.lr_at(step - 1)

    def _train_step(self, batches, step: int, nan_at: int | None, state: RunState) -> tuple[float, dict[str, float]]:
        """One optimizer step; returns the loss and its parts (rank 0's, averaged over the micro-batches)."""
        cfg = self.cfg
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        parts: dict[str, float] = {}
        for micro in range(cfg.accum):
            images, labels = next(batches)
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            targets = labels
            if self.mixup is not None:
                images, targets = self.mixup(images, labels)
            sync = self.ddp.no_sync() if self.ddp is not None and micro < cfg.accum - 1 else nullcontext()
            with sync:
                with self._autocast():
                    out = self._loss(images, targets, step, micro)
                loss = out["loss"]
                if nan_at is not None and step == nan_at:
                    loss = loss * float("nan")
                value = D.all_reduce_mean(loss.detach().float(), self.dist)
                value = float(value)
                if not math.isfinite(value):
                    self._non_finite(value, step, state)
                self.scaler.scale(loss / cfg.accum).backward()
            total += value / cfg.accum
            for name in LOSS_PARTS:
                if name in out:
                    parts[name] = parts.get(name, 0.0) + float(out[name]) / cfg.accum
        if cfg.clip_grad is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.trainable, cfg.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model, step=step)
        return total, parts

    def _loss(self, images: torch.Tensor, targets: torch.Tensor, step: int, micro: int) -> dict[str, torch.Tensor]:
        """The step's loss and its parts from `PruningTask` (see tnt_cli.train.task), with this step's pruning-pass
        schedule."""
        cfg = self.cfg
        schedule = None
        if self.pruning_pass is not None:
            schedule = self.pruning_pass.schedule(cfg.seed, step, micro)
        per_step = cfg.batch_size * cfg.accum * self.dist.world_size
        start = (step - 1) * per_step + (micro * self.dist.world_size + self.dist.rank) * cfg.batch_size
        return self.forward_model(images, targets, schedule, start)

    def settings(self) -> dict:
        """The resolved recipe settings of this run (recorded in the summary and the model directory)."""
        data = recipe_settings(self.cfg)
        data["noise_blocks"] = list(self.model.noise.blocks)  # after clamping to the model
        data["drop_block"] = self.drop_block
        data["pruning_blocks"] = list(self.pruning_pass.blocks) if self.pruning_pass is not None else None
        return data

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _non_finite(self, value: float, step: int, state: RunState) -> None:
        path = checkpoint_path(self.work)
        last = "no checkpoint was written yet"
        if path.exists():
            last = f"last good checkpoint {path} (epoch {state.epoch}) is unchanged"
        raise NonFiniteLoss(f"loss is {value} at step {step}: stopped; {last}")

    def _save_checkpoint(self, state: RunState) -> Path:
        rng = [rng_state()]
        if self.dist.enabled:
            import torch.distributed as dist

            rng = [None] * self.dist.world_size
            dist.all_gather_object(rng, rng_state())
        path = checkpoint_path(self.work)
        if self.dist.is_main:
            payload = {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
                "rng": rng,
                "epoch": state.epoch,
                "step_in_epoch": state.step_in_epoch,
                "step": state.step,
                "world_size": self.dist.world_size,
                "config": self.cfg.to_dict(),
                "data_classes": list(self.data_classes),  # a resume with other classes is refused by name
            }
            summary = {"epoch": state.epoch, "step_in_epoch": state.step_in_epoch, "step": state.step,
                       "total_steps": self.plan.total_steps, "time": time.time()}  # fmt: skip
            save_checkpoint(self.work, payload, summary)
        D.barrier(self.dist)
        return path

    def _stopping(self, signum: int) -> None:
        if self.dist.is_main:
            self.console.print("stopping after this step (Ctrl-C again to stop now, without a checkpoint)")

    # ------------------------------------------------------------------ end
    def _finish(self, state: RunState) -> dict | None:
        D.barrier(self.dist)
        if not self.dist.is_main:
            return None
        if self.ema is not None:  # the averaged weights are the run's result: evaluated and written
            self.model.load_state_dict(self.ema.module.state_dict())
        return finish_run(self.cfg, self.built, self.output, self.plan, device=self.device, settings=self.settings(),
                          steps=state.step, final_loss=state.last_loss, note=self.note)  # fmt: skip


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def finetune(cfg: TrainConfig, **kwargs) -> dict | None:
    """Run a fine-tune (see `Trainer`); returns the summary on rank 0."""
    return Trainer(cfg, **kwargs).run()


__all__ = ["Interrupted", "NonFiniteLoss", "Trainer", "finetune"]
