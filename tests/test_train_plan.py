"""The run's arithmetic (`tnt_cli.train.plan.make_plan`): steps per epoch, the max-steps cap, accumulation,
warmup capped at half the run, and lr scaling by global batch / 512. Pure: no model, no data, no torch."""

from __future__ import annotations

import pytest

from tnt_cli.data.sampler import EpochSampler, images_per_rank
from tnt_cli.errors import TntError
from tnt_cli.train.config import TrainConfig
from tnt_cli.train.plan import make_plan


def cfg(**kw) -> TrainConfig:
    return TrainConfig(model="m", data="d", out="o", **{"train": "full", "lr": 1e-3, **kw})


def test_steps_per_epoch_drop_the_last_partial_step_and_epochs_multiply():
    plan = make_plan(cfg(batch_size=32, epochs=3), train_images=1000, world_size=1)
    assert plan.steps_per_epoch == 31  # 1000 // 32: the 8 left-over images are dropped
    assert plan.total_steps == 93 and plan.epochs == 3
    assert plan.train_images == 1000 and plan.global_batch == 32


def test_max_steps_caps_the_run_and_the_epochs_follow():
    plan = make_plan(cfg(batch_size=10, epochs=5, max_steps=25), train_images=100, world_size=1)
    assert (plan.steps_per_epoch, plan.total_steps, plan.epochs) == (10, 25, 3)  # 2.5 epochs: the third is begun
    assert make_plan(cfg(batch_size=10, epochs=1, max_steps=50), train_images=100, world_size=1).total_steps == 10


def test_accumulation_and_processes_make_the_global_batch_and_scale_the_lr():
    plan = make_plan(cfg(batch_size=16, accum=4, lr=2e-3), train_images=1030, world_size=2)
    assert plan.steps_per_epoch == 8  # 515 images per process // 16 = 32 batches // 4 = 8 steps
    assert plan.global_batch == 16 * 4 * 2 == 128
    assert plan.base_lr == 2e-3 and plan.lr == pytest.approx(2e-3 * 128 / 512)
    assert make_plan(cfg(batch_size=128, accum=4), train_images=4096, world_size=1).lr == pytest.approx(1e-3)


def test_warmup_is_in_epochs_and_capped_at_half_the_steps():
    assert make_plan(cfg(batch_size=10, warmup_epochs=0.5), train_images=100, world_size=1).warmup_steps == 5
    long_warmup = make_plan(cfg(batch_size=10, epochs=2, warmup_epochs=3), train_images=100, world_size=1)
    assert long_warmup.total_steps == 20 and long_warmup.warmup_steps == 10  # 30 asked, half the run allowed
    capped = make_plan(cfg(batch_size=10, max_steps=7, warmup_epochs=1), train_images=100, world_size=1)
    assert capped.warmup_steps == 3  # 7 // 2: the cap is half of the capped run
    assert make_plan(cfg(batch_size=10, warmup_epochs=0), train_images=100, world_size=1).warmup_steps == 0


def test_per_process_share_is_the_samplers_and_too_little_data_is_refused():
    for images, world in [(10, 1), (10, 3), (7, 2), (1, 4)]:
        last = EpochSampler(range(images), rank=world - 1, world_size=world)  # the rank padding reaches
        assert images_per_rank(images, world) == last.per_rank == len(last.order())
    with pytest.raises(TntError, match="fewer than one step of 8 x 2"):
        make_plan(cfg(batch_size=8, accum=2), train_images=30, world_size=2)  # 15 per process < 16
    assert make_plan(cfg(batch_size=8, accum=2), train_images=31, world_size=2).steps_per_epoch == 1


def test_the_plan_reports_the_amp_it_was_given_and_round_trips_to_a_dict():
    plan = make_plan(cfg(batch_size=10), train_images=100, world_size=1, amp="bf16")
    assert plan.to_dict()["amp"] == "bf16" and plan.to_dict()["global_batch"] == 10
