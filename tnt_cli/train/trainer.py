"""The TNT fine-tuning loop: heads-only or full training with relevance noise, resumable, DDP-ready.

Exact resume rests on three things: the data order and each sample's augmentation are functions of
(seed, epoch, index) (see `tnt_cli.data.sampler`); checkpoints are taken only between optimizer steps and hold
every RNG state (all ranks'); data loading never draws from the global RNGs. So a run interrupted after step k
and resumed performs the same float operations in the same order as an uninterrupted one.
"""

from __future__ import annotations

import copy
import math
import os
import random
import shutil
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from torch import nn

from tnt_cli.engine import Schedule, attach_tnt
from tnt_cli.errors import TntError
from tnt_cli.train import distributed as D
from tnt_cli.train.checkpoint import checkpoint_path, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from tnt_cli.train.config import LR_REFERENCE_BATCH, TrainConfig, resume_mismatch
from tnt_cli.train.losses import build_criterion, build_mixup, distill_loss
from tnt_cli.train.optim import build_optimizer, build_scheduler
from tnt_cli.train.progress import METRICS_FILE, MetricsLog, Throughput, TrainProgress

# Test hooks (not user options): simulate Ctrl-C after optimizer step k, or a NaN loss at step k (1-based).
INTERRUPT_ENV = "TNT_INTERRUPT_AT_STEP"
NAN_ENV = "TNT_INJECT_NAN_AT_STEP"
DEFAULT_EVAL_BLOCK = 2
DEFAULT_EVAL_KEEP = 0.5


class NonFiniteLoss(TntError):
    """The loss became NaN or inf: the run stops, the last good checkpoint stays as it was."""


class Interrupted(TntError):
    """Ctrl-C (or SIGTERM): a checkpoint was written at the last finished step."""


@dataclass
class Plan:
    """Derived numbers of a run, reported at the start and in the summary."""

    world_size: int
    batch_size: int
    accum: int
    steps_per_epoch: int
    total_steps: int
    epochs: int
    warmup_steps: int
    base_lr: float
    lr: float
    train_images: int
    amp: str

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size * self.accum

    def to_dict(self) -> dict:
        return {**self.__dict__, "global_batch": self.global_batch}


@dataclass
class RunState:
    epoch: int = 0  # epoch in progress
    step_in_epoch: int = 0  # optimizer steps done in that epoch
    step: int = 0  # optimizer steps done in total
    last_loss: float = float("nan")
    history: list = field(default_factory=list)


def default_eval_schedule(noise_blocks: tuple[int, ...], depth: int) -> Schedule:
    """Block 2 at keep 0.5, moved to the nearest earlier noise block (only those get trained heads) and kept
    before the last block (pruning after the last block changes nothing the classifier sees)."""
    usable = [b for b in noise_blocks if b < depth - 1] or [min(noise_blocks)]
    earlier = [b for b in usable if b <= DEFAULT_EVAL_BLOCK]
    block = max(earlier) if earlier else min(usable)
    return Schedule(prune_layers=(block,), keep_rates=(DEFAULT_EVAL_KEEP,))


def default_drop_block(noise_blocks: tuple[int, ...], depth: int) -> int:
    """The hard-pruning pass prunes after the first noise block past block 0 (the study used block 1), before the
    last block (pruning there changes nothing the classifier sees); block 0 or the first noise block otherwise."""
    usable = [b for b in noise_blocks if 1 <= b < depth - 1]
    return min(usable) if usable else min(noise_blocks)


def drop_keep(keeps: tuple[float, ...], seed: int, step: int, micro: int) -> float:
    """The keep rate of the hard-pruning pass at (step, micro-batch): a function of (seed, step, micro) alone, from
    its own generator, so a resumed run draws the same rates and the global RNG streams are untouched."""
    key = ((seed * 1_000_003 + step) * 1_009 + micro) & 0x7FFF_FFFF_FFFF_FFFF
    generator = torch.Generator().manual_seed(key)
    return keeps[int(torch.randint(len(keeps), (1,), generator=generator))]


class NoisyAndPruned(nn.Module):
    """A training step's two passes in ONE forward: the noisy pass (train mode) and, given a schedule, a hard-
    pruning pass (`TNTModel.forward_pruned`, top-k by the current heads, gradients into the backbone).

    DDP expects one forward per backward; wrapping this module (not the TNTModel) keeps it that way. The model's
    schedule is restored afterwards, so evaluation and checkpoints never see the training schedule.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, schedule: Schedule | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = self.model(x)
        if schedule is None:
            return logits, None
        restore = self.model.schedule
        self.model.set_schedule(schedule)
        try:
            pruned = self.model.forward_pruned(x)
        finally:
            self.model.set_schedule(restore)
        return logits, pruned


def clamp_noise_blocks(blocks: tuple[int, ...], depth: int, console: Console, is_main: bool) -> tuple[int, ...]:
    kept = tuple(b for b in blocks if 0 <= b < depth)
    if not kept:
        raise TntError(f"--noise-blocks {','.join(map(str, blocks))}: this model has blocks 0-{depth - 1}")
    if kept != blocks and is_main:
        console.print(f"note: noise blocks {','.join(map(str, kept))} (the model has {depth} blocks)")
    return kept


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
        self.overwrite = overwrite
        self.push_to_hub = push_to_hub
        self.console = console or Console(stderr=True, highlight=False)
        self.out = Path(cfg.out)
        self._stop_requested = False

    # ------------------------------------------------------------------ entry
    def run(self) -> dict | None:
        self.device = D.pick_device(self.cfg.device)
        self.dist = D.init_distributed(self.device)
        try:
            return self._run()
        finally:
            D.shutdown(self.dist)

    def note(self, text: str) -> None:
        if self.dist.is_main:
            self.console.print(text)

    def _run(self) -> dict | None:
        cfg = self.cfg
        self._check_out_dir()
        saved = load_checkpoint(self.out) if self.resume else None
        if saved is not None:
            mismatch = resume_mismatch(saved["config"], cfg)
            if mismatch:
                raise TntError(f"--resume: {mismatch}; resume with the original settings")
            if saved["world_size"] != self.dist.world_size:
                raise TntError(
                    f"--resume: the checkpoint was made with {saved['world_size']} processes, "
                    f"this run has {self.dist.world_size}; resume with the same number"
                )
        _seed_everything(cfg.seed)
        self._scan_data()
        self._build_model()
        self._build_data()
        self._build_optim()
        state = RunState()
        if saved is not None:
            state = self._restore(saved)
        else:
            # same heads on every rank (DDP also broadcasts them); different noise per rank from here on
            _seed_everything(cfg.seed * 1_000_003 + self.dist.rank)
        self._wrap()
        self._clear_out()
        self.metrics = MetricsLog(self.out / METRICS_FILE, enabled=self.dist.is_main)
        if saved is not None:
            self.metrics.truncate_after(state.step)
        self._announce(state)
        self._train(state)
        return self._finish(state)

    # ------------------------------------------------------------------ set-up
    def _check_out_dir(self) -> None:
        out = self.out
        if self.resume:
            if not checkpoint_path(out).exists():
                raise TntError(f"--resume: {out} has no checkpoint ({checkpoint_path(out)} is missing)")
            return
        if out.exists() and not out.is_dir():
            raise TntError(f"--out {out} exists and is not a directory")
        if out.exists() and any(out.iterdir()) and not self.overwrite:
            hint = " or --resume to continue its checkpoint" if checkpoint_path(out).exists() else ""
            raise TntError(f"--out {out} already exists: pass --overwrite to replace it{hint}")

    def _clear_out(self) -> None:
        """--overwrite: remove the old OUT only once model, data and optimizer are set up without error."""
        if self.resume or not (self.out.is_dir() and any(self.out.iterdir())):
            return
        D.barrier(self.dist)
        if self.dist.is_main:
            shutil.rmtree(self.out)
        D.barrier(self.dist)

    def _scan_data(self) -> None:
        """Open the training split first: a bad DATA is reported before any model is loaded or changed."""
        from tnt_cli.data.datasets import base_dataset

        self.train_base = base_dataset(self.cfg.data, self.cfg.split, seed=self.cfg.seed)
        self.classes = list(getattr(self.train_base, "classes", []))
        if len(self.train_base) == 0 or not self.classes:
            raise TntError(f"{self.cfg.data} {self.cfg.split} has no images")

    def _build_model(self) -> None:
        from tnt_cli.io.sources import load_model

        cfg = self.cfg
        loaded = load_model(cfg.model)
        self.loaded = loaded
        vit = loaded.model.vit
        depth = len(vit.blocks)
        if vit.num_classes != len(self.classes):
            if cfg.train == "heads":
                raise TntError(
                    f"{cfg.model} has {vit.num_classes} classes but {cfg.data} has {len(self.classes)}: heads-only "
                    "training keeps the classifier frozen; use --train full (or fine-tune the dense model first)"
                )
            self.note(f"note: new {len(self.classes)}-class classifier (the model had {vit.num_classes})")
            vit.reset_classifier(len(self.classes))
        noise_blocks = clamp_noise_blocks(cfg.noise_blocks, depth, self.console, self.dist.is_main)
        noise = cfg.noise()
        noise = type(noise)(**{**noise.to_dict(), "blocks": noise_blocks})
        if cfg.eval_prune_layers:
            schedule = Schedule(prune_layers=cfg.eval_prune_layers, keep_rates=cfg.eval_keep_rates or ())
            untrained = [b for b in schedule.prune_layers if b not in noise_blocks]
            if untrained:
                raise TntError(
                    f"--prune-layers {untrained[0]}: only noise blocks get trained heads "
                    f"(noise blocks {','.join(map(str, noise_blocks))})"
                )
        else:
            schedule = default_eval_schedule(noise_blocks, depth)
        self.eval_schedule = schedule
        trained = set(loaded.model.head_blocks) if loaded.heads_trained else set()
        head_blocks = sorted(set(noise_blocks) | trained)
        model = attach_tnt(vit, head_blocks, noise=noise, head_norm=loaded.model.head_norm)
        self.drop_block: int | None = None
        if cfg.drop_weight > 0:
            block = cfg.drop_block if cfg.drop_block is not None else default_drop_block(noise_blocks, depth)
            if str(block) not in model.heads:
                raise TntError(
                    f"--drop-block {block}: no relevance head there (heads at blocks {','.join(map(str, head_blocks))}"
                    f"; the model has blocks 0-{depth - 1})"
                )
            self.drop_block = block
            self._drop_schedules = {k: Schedule(prune_layers=(block,), keep_rates=(k,)) for k in cfg.drop_keeps}
        for block in trained:  # continue from the heads a tnt directory brought
            model.heads[str(block)].load_state_dict(loaded.model.heads[str(block)].state_dict())
        if hasattr(loaded.model, "tnt_provenance"):
            model.tnt_provenance = loaded.model.tnt_provenance
        for block, head in model.heads.items():
            head.requires_grad_(int(block) in noise_blocks)
        vit.requires_grad_(cfg.train == "full")
        self.teacher: nn.Module | None = None
        if cfg.distill and cfg.train == "full":
            self.teacher = copy.deepcopy(vit).eval().requires_grad_(False).to(self.device)
        self.model = model.to(self.device)
        if not any(p.requires_grad for p in model.parameters()):
            raise TntError("nothing to train: no noise block has a relevance head")

    def _build_data(self) -> None:
        from tnt_cli.data import build_loader

        cfg = self.cfg
        self.loader = build_loader(
            cfg.data,
            cfg.split,
            self.model,
            batch_size=cfg.batch_size,
            train=True,
            workers=cfg.workers,
            limit=cfg.limit,
            seed=cfg.seed,
            scale=cfg.scale,
            hflip=cfg.hflip,
            auto_augment=cfg.auto_augment,
            re_prob=cfg.re_prob,
            base=self.train_base,
        )
        self.sampler = self.loader.sampler
        batches = self.sampler.per_rank // cfg.batch_size
        steps_per_epoch = batches // cfg.accum
        if steps_per_epoch < 1:
            raise TntError(
                f"{cfg.data} {cfg.split}: {self.sampler.per_rank} images per process make fewer than one step of "
                f"{cfg.batch_size} x {cfg.accum} (batch x accumulation)"
            )
        total = cfg.epochs * steps_per_epoch
        if cfg.max_steps is not None:
            total = min(total, cfg.max_steps)
        epochs = math.ceil(total / steps_per_epoch)
        warmup = min(round(cfg.warmup_epochs * steps_per_epoch), total // 2)
        world = self.dist.world_size
        global_batch = cfg.batch_size * world * cfg.accum
        amp = _amp_dtype_name(cfg.amp, self.device)
        self.plan = Plan(
            world_size=world,
            batch_size=cfg.batch_size,
            accum=cfg.accum,
            steps_per_epoch=steps_per_epoch,
            total_steps=total,
            epochs=epochs,
            warmup_steps=warmup,
            base_lr=cfg.base_lr,
            lr=cfg.base_lr * global_batch / LR_REFERENCE_BATCH,
            train_images=len(self.sampler.indices),
            amp=amp,
        )
        if (cfg.mixup > 0 or cfg.cutmix > 0) and cfg.batch_size % 2:
            raise TntError("--mixup / --cutmix need an even --batch-size")
        self.mixup = build_mixup(cfg.mixup, cfg.cutmix, cfg.smoothing, len(self.classes))
        self.criterion = build_criterion(cfg.smoothing, soft_targets=self.mixup is not None)

    def _build_optim(self) -> None:
        plan = self.plan
        self.optimizer = build_optimizer(self.model, plan.lr, self.cfg.weight_decay, self.cfg.heads_lr_scale)
        self.scheduler = build_scheduler(
            self.optimizer, total=plan.total_steps, warmup=plan.warmup_steps, lr=plan.lr, min_lr=self.cfg.min_lr
        )
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(plan.amp)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=plan.amp == "fp16")
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]

    def _restore(self, saved: dict) -> RunState:
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        set_rng_state(saved["rng"][self.dist.rank])
        return RunState(epoch=saved["epoch"], step_in_epoch=saved["step_in_epoch"], step=saved["step"])

    def _wrap(self) -> None:
        self.forward_model: nn.Module = NoisyAndPruned(self.model)
        self.ddp = None
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device] if self.device.type == "cuda" else None
            # Only parameters that require grad are reduced: with heads-only training that is just the heads.
            # DDP wraps both passes of a step (NoisyAndPruned): one forward per backward.
            self.ddp = DDP(self.forward_model, device_ids=ids, find_unused_parameters=self._may_leave_unused())
            self.forward_model = self.ddp
        if self.cfg.compile:
            self.forward_model = torch.compile(self.forward_model)

    def _may_leave_unused(self) -> bool:
        """True when a trainable head can get no gradient in a step: noise after the last block does not reach
        a class-token classifier, so that head learns only from the sigmoid rate penalty, if at all."""
        vit, noise = self.model.vit, self.model.noise
        last_is_noisy = (self.model.depth - 1) in noise.blocks
        token_pool = getattr(vit, "global_pool", "token") == "token"
        rate_trains_it = noise.form == "sigmoid" and self.cfg.rate_weight > 0
        return last_is_noisy and token_pool and not rate_trains_it

    def _announce(self, state: RunState) -> None:
        p, cfg = self.plan, self.cfg
        what = "heads only (backbone frozen)" if cfg.train == "heads" else "full model"
        for text in cfg.notes:
            self.note(f"note: {text}")
        extras = [f"{cfg.relevance} relevance, sigma0 {cfg.sigma0:g}"]
        if cfg.distill:
            extras.append(f"distill x{cfg.distill_weight:g}")
        if self.drop_block is not None:
            keeps = "/".join(f"{k:g}" for k in cfg.drop_keeps)
            extras.append(f"pruning pass x{cfg.drop_weight:g} at block {self.drop_block} keep {keeps}")
        if cfg.heads_lr_scale != 1.0:
            extras.append(f"heads lr x{cfg.heads_lr_scale:g}")
        self.note(f"recipe {cfg.recipe}: " + ", ".join(extras))
        self.note(
            f"finetune {cfg.model}: {what}, {cfg.data} {cfg.split} ({p.train_images} images), "
            f"{p.steps_per_epoch} steps/epoch, {p.total_steps} steps, global batch {p.global_batch} "
            f"({p.batch_size} x {p.world_size} proc x {p.accum} accum), lr {p.lr:.3g} (= {p.base_lr:g} x "
            f"{p.global_batch}/{LR_REFERENCE_BATCH}), warmup {p.warmup_steps}, device {self.device}, amp {p.amp}"
        )
        if self.resume:
            self.note(f"resuming at step {state.step}/{p.total_steps} (epoch {state.epoch + 1})")

    # ------------------------------------------------------------------ loop
    def _train(self, state: RunState) -> None:
        plan = self.plan
        interrupt_at = _env_int(INTERRUPT_ENV)
        nan_at = _env_int(NAN_ENV)
        restore = self._install_signal_handlers()
        meter = Throughput()
        window: list[float] = []
        show = self.cfg.progress and self.dist.is_main
        progress = TrainProgress(self.console, plan.total_steps, state.step, enabled=show)
        try:
            with progress:
                while state.step < plan.total_steps:
                    self._train_epoch(state, progress, meter, window, interrupt_at, nan_at)
        finally:
            restore()

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
            loss = self._train_step(batches, state.step + 1, nan_at, state)
            state.step += 1
            state.step_in_epoch += 1
            state.last_loss = loss
            window.append(loss)
            meter.add(plan.global_batch)
            lr = self._lr_before_step(state.step)
            ips = meter.rate()
            if state.step % max(1, cfg.log_every) == 0 or state.step == plan.total_steps:
                record = {
                    "step": state.step,
                    "epoch": round(state.epoch + state.step_in_epoch / plan.steps_per_epoch, 4),
                    "loss": sum(window) / len(window),
                    "lr": lr,
                    "img_s": ips,
                    "global_batch": plan.global_batch,
                    "world_size": plan.world_size,
                }
                record.update(self._noise_stats())
                self.metrics.write(record)
                state.history.append(record)
                window.clear()
                meter.reset()
            progress.update(state.step, loss, lr, ips)
            requested = self._stop_requested or (interrupt_at is not None and state.step == interrupt_at)
            if D.any_rank(requested, self.dist, self.device):
                path = self._save_checkpoint(state)
                raise Interrupted(
                    f"interrupted after step {state.step}/{plan.total_steps}: checkpoint saved to {path}; "
                    "continue with the same command plus --resume"
                )
        del batches
        if state.step_in_epoch >= plan.steps_per_epoch or state.step >= plan.total_steps:
            state.epoch += 1
            state.step_in_epoch = 0
            if state.step < plan.total_steps or self.cfg.keep_checkpoint:
                self._save_checkpoint(state)

    def _lr_before_step(self, step: int) -> float:
        """The lr that step `step` (1-based) used."""
        base = self.scheduler.base_lrs[0]
        return base * self.scheduler.lr_lambdas[0](step - 1)

    def _train_step(self, batches, step: int, nan_at: int | None, state: RunState) -> float:
        cfg = self.cfg
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
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
                    loss = self._loss(images, targets, step, micro)
                if nan_at is not None and step == nan_at:
                    loss = loss * float("nan")
                value = D.all_reduce_mean(loss.detach().float(), self.dist)
                value = float(value)
                if not math.isfinite(value):
                    self._non_finite(value, step, state)
                self.scaler.scale(loss / cfg.accum).backward()
            total += value / cfg.accum
        if cfg.clip_grad is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.trainable, cfg.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return total

    def _loss(self, images: torch.Tensor, targets: torch.Tensor, step: int, micro: int) -> torch.Tensor:
        """task (+ distill) on the noisy logits + rate penalty + drop_weight * (task (+ distill) on pruned logits)."""
        cfg = self.cfg
        schedule = None
        if self.drop_block is not None:
            schedule = self._drop_schedules[drop_keep(cfg.drop_keeps, cfg.seed, step, micro)]
        logits, pruned = self.forward_model(images, schedule)
        teacher_logits = None
        if cfg.distill:
            with torch.no_grad():
                teacher = self.teacher if self.teacher is not None else self.model.vit  # heads: the frozen backbone
                teacher_logits = teacher(images)
        loss = self._task_loss(logits, targets, teacher_logits)
        if cfg.relevance == "sigmoid" and cfg.rate_weight:
            loss = loss + cfg.rate_weight * self.model.rate_loss()  # from the noisy pass (the pruned one sets none)
        if pruned is not None:
            loss = loss + cfg.drop_weight * self._task_loss(pruned, targets, teacher_logits)
        return loss

    def _task_loss(self, logits: torch.Tensor, targets: torch.Tensor, teacher_logits: torch.Tensor | None):
        """Task loss plus, with distillation, distill_weight * KL(teacher || student) (added, not mixed)."""
        loss = self.criterion(logits.float(), targets)
        if teacher_logits is not None:
            loss = loss + self.cfg.distill_weight * distill_loss(logits, teacher_logits, self.cfg.distill_temp)
        return loss

    def settings(self) -> dict:
        """The resolved recipe settings of this run (recorded in the summary and the model directory)."""
        cfg = self.cfg
        keys = ("recipe", "train", "relevance", "sigma0", "noise_variant", "target_rate", "rate_weight",
                "noise_blocks", "distill", "distill_weight", "distill_temp", "drop_weight", "drop_keeps", "lr",
                "head_lr_scale")  # fmt: skip
        data = {k: v for k, v in cfg.to_dict().items() if k in keys}
        data["noise_blocks"] = list(self.model.noise.blocks)  # after clamping to the model
        data["drop_block"] = self.drop_block
        return data

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _noise_stats(self) -> dict:
        stats = self.model.last_stats
        out = {}
        if stats.mean_alpha:
            out["mean_alpha"] = {str(b): round(float(a), 5) for b, a in stats.mean_alpha.items()}
        if stats.rate_penalties:
            out["rate_loss"] = float(torch.stack([p.detach() for p in stats.rate_penalties]).sum())
        return out

    def _non_finite(self, value: float, step: int, state: RunState) -> None:
        path = checkpoint_path(self.out)
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
        path = checkpoint_path(self.out)
        if self.dist.is_main:
            payload = {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": rng,
                "epoch": state.epoch,
                "step_in_epoch": state.step_in_epoch,
                "step": state.step,
                "world_size": self.dist.world_size,
                "config": self.cfg.to_dict(),
            }
            summary = {"epoch": state.epoch, "step_in_epoch": state.step_in_epoch, "step": state.step,
                       "total_steps": self.plan.total_steps, "time": time.time()}  # fmt: skip
            save_checkpoint(self.out, payload, summary)
        D.barrier(self.dist)
        return path

    def _install_signal_handlers(self):
        """First Ctrl-C / SIGTERM: finish the step, checkpoint, stop. A second one stops at once."""
        if not _in_main_thread():
            return lambda: None
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum, frame):
            if self._stop_requested:
                raise KeyboardInterrupt
            self._stop_requested = True
            if self.dist.is_main:
                self.console.print("stopping after this step (Ctrl-C again to stop now, without a checkpoint)")

        for s in previous:
            signal.signal(s, handler)

        def restore():
            for s, h in previous.items():
                signal.signal(s, h)

        return restore

    # ------------------------------------------------------------------ end
    def _finish(self, state: RunState) -> dict | None:
        D.barrier(self.dist)
        if not self.dist.is_main:
            return None
        model = self.model
        model.eval()
        evaluation = self._evaluate()
        model.set_schedule(self.eval_schedule)
        summary = {
            "out": str(self.out),
            "model": self.cfg.model,
            "data": self.cfg.data,
            "recipe": self.cfg.recipe,
            "settings": self.settings(),
            "steps": state.step,
            "final_loss": state.last_loss,
            **{k: v for k, v in self.plan.to_dict().items() if k != "amp"},
            "amp": self.plan.amp,
            "eval_schedule": self.eval_schedule.to_dict(),
            "eval_schedule_text": self.eval_schedule.describe(),
            "evaluation": evaluation,
        }
        training = {
            "recipe": f"tnt finetune --recipe {self.cfg.recipe}",
            "settings": summary["settings"],
            "config": self.cfg.to_dict(),
            "dataset": self.cfg.data,
            "classes": self.classes,
            **{k: summary[k] for k in ("steps", "global_batch", "lr", "world_size", "final_loss")},
        }
        metrics = {"finetune": evaluation} if evaluation else None
        from tnt_cli.train.output import save_final

        save_final(self.out, model.cpu(), base_model=self.loaded.base_model or self.cfg.model,
                   training=training, metrics=metrics)  # fmt: skip
        if not self.cfg.keep_checkpoint:
            shutil.rmtree(self.out / "checkpoint", ignore_errors=True)
        if self.push_to_hub:
            from tnt_cli.io.push import push_folder

            summary["url"] = push_folder(self.out, self.push_to_hub)
        return summary

    def _evaluate(self) -> dict | None:
        cfg = self.cfg
        if cfg.eval_limit == 0:
            return None
        from tnt_cli.data import build_loader
        from tnt_cli.train.output import evaluate_accuracy

        try:
            loader = build_loader(
                cfg.data, cfg.val_split, self.model, batch_size=cfg.eval_batch_size or cfg.batch_size * 2,
                workers=cfg.workers, limit=cfg.eval_limit, seed=cfg.seed,
            )  # fmt: skip
        except TntError as exc:
            self.note(f"note: no evaluation ({exc})")
            return None
        show = cfg.progress and self.dist.is_main
        dense = evaluate_accuracy(self.model, loader, self.device, Schedule(), progress=show)
        pruned = evaluate_accuracy(self.model, loader, self.device, self.eval_schedule, progress=show)
        return {"split": cfg.val_split, "images": dense.get("images"), "schedule": self.eval_schedule.describe(),
                "dense": _slim(dense), "pruned": _slim(pruned)}  # fmt: skip


def _slim(result: dict) -> dict:
    return {k: result[k] for k in ("top1", "top5", "loss", "images_per_s") if k in result}


def _amp_dtype_name(amp: str, device: torch.device) -> str:
    if device.type != "cuda":
        return "off"  # CPU autocast is slower than fp32 for these models and changes numerics
    if amp == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return amp


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def finetune(cfg: TrainConfig, **kwargs) -> dict | None:
    """Run a fine-tune (see `Trainer`); returns the summary on rank 0."""
    return Trainer(cfg, **kwargs).run()


__all__ = [
    "Interrupted", "NoisyAndPruned", "NonFiniteLoss", "Trainer", "default_drop_block", "default_eval_schedule",
    "drop_keep", "finetune",
]  # fmt: skip
