"""The TNT fine-tuning loop: heads-only or full training with relevance noise, resumable, DDP-ready.

Exact resume rests on three things: the data order and each sample's augmentation are functions of
(seed, epoch, index) (see `tnt_cli.data.sampler`); checkpoints are taken only between optimizer steps and hold
every RNG state (all ranks'); data loading never draws from the global RNGs. So a run interrupted after step k
and resumed performs the same float operations in the same order as an uninterrupted one.
"""

from __future__ import annotations

import copy
import dataclasses
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

from tnt_cli import errors
from tnt_cli.engine import Schedule, attach_tnt
from tnt_cli.errors import TntError
from tnt_cli.train import distributed as D
from tnt_cli.train.checkpoint import checkpoint_path, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from tnt_cli.train.config import LR_REFERENCE_BATCH, TrainConfig, recipe_settings, resume_mismatch
from tnt_cli.train.losses import build_criterion, build_mixup
from tnt_cli.train.optim import build_optimizer, build_scheduler
from tnt_cli.train.progress import METRICS_FILE, MetricsLog, Throughput, TrainProgress
from tnt_cli.train.task import LossSettings, PruningTask

# Test hooks (not user options): simulate Ctrl-C after optimizer step k, or a NaN loss at step k (1-based).
INTERRUPT_ENV = "TNT_INTERRUPT_AT_STEP"
NAN_ENV = "TNT_INJECT_NAN_AT_STEP"
DEFAULT_EVAL_BLOCK = 2
DEFAULT_EVAL_KEEP = 0.5


class NonFiniteLoss(TntError):
    """The loss became NaN or inf: the run stops, the last good checkpoint stays as it was."""


class Interrupted(errors.Interrupted):
    """Ctrl-C (or SIGTERM): a checkpoint was written at the last finished step."""


class Diverged(TntError):
    """Training ended with non-finite weights or outputs: nothing is written, the previous output stays."""


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


def _stage_schedule(block: int, keep: float, reducer: str = "drop") -> Schedule:
    """One pruning stage after `block`, reducing the tokens TNT does not keep with `reducer`."""
    return Schedule(prune_layers=(block,), keep_rates=(keep,), reducer=reducer)


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
        self.work = self.out  # where checkpoints and the log go; a side directory when replacing an output
        self._lock = None
        self._stop_requested = False

    # ------------------------------------------------------------------ entry
    def run(self) -> dict | None:
        self.device = D.pick_device(self.cfg.device)
        self.dist = D.init_distributed(self.device)
        try:
            return self._run()
        finally:
            if self._lock is not None:
                self._lock.release()
            D.shutdown(self.dist)

    def note(self, text: str) -> None:
        if self.dist.is_main:
            self.console.print(text)

    def _run(self) -> dict | None:
        cfg = self.cfg
        self._check_out_dir()
        saved = load_checkpoint(self.work) if self.resume else None
        if saved is not None:
            mismatch = resume_mismatch(saved["config"], cfg)
            if mismatch is not None:
                raise mismatch
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
        self.metrics = MetricsLog(self.work / METRICS_FILE, enabled=self.dist.is_main)
        if saved is not None:
            self.metrics.truncate_after(state.step)
        self._announce(state)
        self._train(state)
        return self._finish(state)

    # ------------------------------------------------------------------ set-up
    def _check_out_dir(self) -> None:
        """Validate OUT (and the push target) before any work, lock it, and choose where the run writes.

        A new OUT (or an empty one) is trained in directly. Replacing an existing output (--overwrite) trains in
        the side directory `.OUT.run` and swaps the finished result in at the end, so a killed, failed or
        diverged run leaves the previous output exactly as it was; --resume continues whichever holds the
        checkpoint.
        """
        from tnt_cli.io.outdir import OutputExists, OutputLock, check_safe, check_target, clean_stale

        out, inputs = self.out, (self.cfg.model, self.cfg.data)
        check_safe(out, inputs)
        side = run_dir(out)
        if self.push_to_hub:
            from tnt_cli.io.push import check_push_target

            check_push_target(self.push_to_hub)
        if self.dist.is_main:  # first: a run in progress is reported as such (released in `run`)
            self._lock = OutputLock(out).acquire()
            clean_stale(out)
        if self.resume:
            work = next((d for d in (out, side) if checkpoint_path(d).exists()), None)
            if work is None:
                raise TntError(f"--resume: {out} has no checkpoint ({checkpoint_path(out)} is missing)")
        else:
            try:
                check_target(out, overwrite=self.overwrite, inputs=inputs)
            except OutputExists as exc:
                exc.resumable = checkpoint_path(out).exists() or checkpoint_path(side).exists()
                raise
            if side.exists() and not self.overwrite:
                raise OutputExists(side, " (an unfinished run into OUT)", resumable=checkpoint_path(side).exists())
            work = side if out.exists() and any(out.iterdir()) else out
        self.work = work
        if self.dist.is_main and not self.resume and work == side and side.exists():
            shutil.rmtree(side)  # an earlier run's leftovers: this run replaces them (--overwrite)

    def _clear_out(self) -> None:
        """Nothing to clear: an existing output is replaced only once the new one is complete (`_finish`)."""
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
        self._map_classes(loaded)
        noise_blocks = clamp_noise_blocks(cfg.noise_blocks, depth, self.console, self.dist.is_main)
        noise = cfg.noise()
        noise = type(noise)(**{**noise.to_dict(), "blocks": noise_blocks})
        if cfg.eval_prune_layers:
            schedule = Schedule(prune_layers=cfg.eval_prune_layers, keep_rates=cfg.eval_keep_rates or ())
            untrained = [b for b in schedule.prune_layers if b not in noise_blocks]
            if untrained and cfg.method == "tnt":
                raise TntError(
                    f"--prune-layers {untrained[0]}: only noise blocks get trained heads "
                    f"(noise blocks {','.join(map(str, noise_blocks))})"
                )
        else:
            schedule = default_eval_schedule(noise_blocks, depth)
        if cfg.method == "tnt" and schedule.prune_layers:
            schedule = dataclasses.replace(schedule, reducer=cfg.reducer)  # OUT's schedule reduces as training did
        self.eval_schedule = schedule
        trained = set(loaded.model.head_blocks) if loaded.heads_trained else set()
        head_blocks = sorted(set(noise_blocks) | trained | set(schedule.prune_layers))
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
            self._drop_schedules = {k: _stage_schedule(block, k, cfg.reducer) for k in cfg.drop_keeps}
        for block in trained:  # continue from the heads a tnt directory brought
            model.heads[str(block)].load_state_dict(loaded.model.heads[str(block)].state_dict())
        for block, head in model.heads.items():  # baselines rank tokens their own way: their heads stay as they are
            head.requires_grad_(int(block) in noise_blocks and cfg.method == "tnt")
        vit.requires_grad_(cfg.train == "full")
        self.teacher: nn.Module | None = None
        if cfg.distill and cfg.train == "full":
            self.teacher = copy.deepcopy(vit).eval().requires_grad_(False).to(self.device)
        self.model = model.to(self.device)
        if not any(p.requires_grad for p in model.parameters()):
            raise TntError("nothing to train: no noise block has a relevance head")

    def _map_classes(self, loaded) -> None:
        """Data labels -> the model's classes, by name (`tnt_cli.data.classes`); `new_classes`: a new classifier."""
        from tnt_cli.data.classes import map_classes, mapped_names, model_class_names, record_names

        cfg, vit = self.cfg, loaded.model.vit
        self.label_map: list[int] | None = None
        names = None
        if cfg.new_classes:
            if cfg.train == "heads":
                raise TntError("a new classifier must be trained: new classes need --train full")
            self.note(f"note: new {len(self.classes)}-class classifier (the model had {vit.num_classes})")
            vit.reset_classifier(len(self.classes))
        else:
            names = model_class_names(vit, loaded.tnt_config)
            self.label_map = map_classes(self.classes, names, vit.num_classes, data=cfg.data, model=cfg.model)
        self.model_classes = mapped_names(names, self.classes)
        record_names(vit, self.model_classes)

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
            label_map=self.label_map,
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
        self.mixup = build_mixup(cfg.mixup, cfg.cutmix, cfg.smoothing, self.model.vit.num_classes)
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
        cfg = self.cfg
        settings = LossSettings(method=cfg.method, rate_weight=cfg.rate_weight if cfg.relevance == "sigmoid" else 0.0,
                                distill=cfg.distill, distill_weight=cfg.distill_weight, distill_temp=cfg.distill_temp,
                                drop_weight=cfg.drop_weight if self.drop_block is not None else 0.0,
                                noise_trains_backbone=cfg.noise_trains == "all")  # fmt: skip
        self.task = PruningTask(self.model, self.criterion, settings, teacher=self.teacher)
        self.forward_model: nn.Module = self.task
        self.ddp = None
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device] if self.device.type == "cuda" else None
            # Only parameters that require grad are reduced: with heads-only training that is just the heads.
            # DDP wraps the whole step (PruningTask: both passes and the loss): one forward per backward.
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
        rate_trains_it = noise.relevance == "sigmoid" and self.cfg.rate_weight > 0
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
        """The step's loss from `PruningTask` (see tnt_cli.train.task), with this step's pruning-pass schedule."""
        cfg = self.cfg
        schedule = None
        if self.drop_block is not None:
            schedule = self._drop_schedules[drop_keep(cfg.drop_keeps, cfg.seed, step, micro)]
        per_step = cfg.batch_size * cfg.accum * self.dist.world_size
        start = (step - 1) * per_step + (micro * self.dist.world_size + self.dist.rank) * cfg.batch_size
        return self.forward_model(images, targets, schedule, start)

    def settings(self) -> dict:
        """The resolved recipe settings of this run (recorded in the summary and the model directory)."""
        data = recipe_settings(self.cfg)
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
                "rng": rng,
                "epoch": state.epoch,
                "step_in_epoch": state.step_in_epoch,
                "step": state.step,
                "world_size": self.dist.world_size,
                "config": self.cfg.to_dict(),
            }
            summary = {"epoch": state.epoch, "step_in_epoch": state.step_in_epoch, "step": state.step,
                       "total_steps": self.plan.total_steps, "time": time.time()}  # fmt: skip
            save_checkpoint(self.work, payload, summary)
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
        self._check_finite(state, "after the last update")
        evaluation = self._evaluate()
        model.set_schedule(self.eval_schedule)
        self._check_finite(state, "after the final evaluation", evaluation)
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
            "method": self.cfg.method,
            "recipe": f"tnt finetune --recipe {self.cfg.recipe}",
            "settings": summary["settings"],
            "config": self.cfg.to_dict(),
            "dataset": self.cfg.data,
            "classes": self.model_classes,
            **{k: summary[k] for k in ("steps", "global_batch", "lr", "world_size", "final_loss")},
        }
        metrics = {"finetune": evaluation} if evaluation else None
        from tnt_cli.train.output import save_final

        save_final(self.work, model.cpu(), base_model=self.loaded.base_model or self.cfg.model,
                   training=training, metrics=metrics, provenance=self.loaded.provenance)  # fmt: skip
        if not self.cfg.keep_checkpoint:
            shutil.rmtree(self.work / "checkpoint", ignore_errors=True)
        if self.work != self.out:
            from tnt_cli.io.outdir import swap_in

            swap_in(self.work, self.out)  # the previous output is replaced only now, in two renames
            self.work = self.out
        if self.push_to_hub:
            from tnt_cli.io.push import push_folder

            summary["url"] = push_folder(self.out, self.push_to_hub)
        return summary

    def _check_finite(self, state: RunState, when: str, evaluation: dict | None = None) -> None:
        """Refuse to write a model whose weights (or evaluated outputs) are not finite: the run diverged."""
        bad = next((n for n, p in self.model.named_parameters() if not torch.isfinite(p).all()), None)
        if bad is None:
            with torch.no_grad():  # a fixed probe input: finite weights can still overflow to inf logits
                probe = torch.randn((2, *self.model_input_shape()), generator=torch.Generator().manual_seed(0))
                logits = self.model(probe.to(self.device))
            if not torch.isfinite(logits).all():
                bad = "the logits"
        if bad is None and evaluation:
            losses = [evaluation[k].get("loss") for k in ("dense", "pruned") if isinstance(evaluation.get(k), dict)]
            if any(v is not None and not math.isfinite(v) for v in losses):
                bad = "the evaluation loss"
        if bad is not None:
            kept = "the previous output is unchanged" if self.work != self.out else "no model was written"
            raise Diverged(
                f"training diverged: {bad} not finite {when} (step {state.step}, last loss {state.last_loss:.4g}); "
                f"{kept}; try a lower learning rate or gradient clipping"
            )

    def model_input_shape(self) -> tuple[int, ...]:
        from tnt_cli.data.config import resolve_config

        return tuple(resolve_config(self.model.vit).input_size)

    def _evaluate(self) -> dict | None:
        cfg = self.cfg
        if cfg.eval_limit == 0:
            return None
        from tnt_cli.data import build_loader
        from tnt_cli.train.output import evaluate_accuracy

        try:
            loader = build_loader(
                cfg.data, cfg.val_split, self.model, batch_size=cfg.eval_batch_size or cfg.batch_size * 2,
                workers=cfg.workers, limit=cfg.eval_limit, seed=cfg.seed, label_map=self.label_map,
            )  # fmt: skip
        except TntError as exc:
            self.note(f"note: no evaluation ({exc})")
            return None
        show = cfg.progress and self.dist.is_main
        dense = evaluate_accuracy(self.model, loader, self.device, Schedule(), progress=show)
        pruned = evaluate_accuracy(self.model, loader, self.device, self.eval_schedule, method=cfg.method,
                                   progress=show)  # fmt: skip
        return {"split": cfg.val_split, "images": dense.get("images"), "schedule": self.eval_schedule.describe(),
                "dense": _slim(dense), "pruned": _slim(pruned)}  # fmt: skip


def run_dir(out: Path) -> Path:
    """The side directory a run that replaces an existing OUT trains in (checkpoint and log), then swaps in."""
    return out.with_name(f".{out.name}.run")


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
    "Diverged", "Interrupted", "NonFiniteLoss", "Trainer", "default_drop_block", "default_eval_schedule",
    "drop_keep", "finetune", "run_dir",
]  # fmt: skip
