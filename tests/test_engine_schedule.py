"""Schedules and static token plans: validation, floor(n * keep) compounding, refusals."""

from __future__ import annotations

import math

import pytest

from tnt_cli.engine import Schedule, attach_tnt, plan_tokens
from tnt_cli.engine.model import TNTModel
from tnt_cli.engine.noise import NoiseConfig
from tnt_cli.engine.schedule import BEFORE_BLOCKS, keep_count
from tnt_cli.errors import ScheduleError, TntError
from tnt_cli.io.builder import LoadedModel
from tnt_cli.io.sources import install_schedule


def plan(schedule: Schedule, n: int = 196, prefix: int = 1, depth: int = 12):
    return plan_tokens(schedule, num_patches=n, num_prefix=prefix, depth=depth)


@pytest.mark.parametrize(
    ("n", "keep", "expected"),
    [(10, 0.3, 3), (10, 0.7, 7), (100, 0.29, 29), (196, 0.6, 117), (117, 0.6, 70), (10, 1.0, 10), (3, 0.5, 1)],
)
def test_keep_count_is_floor_and_robust_to_float_error(n, keep, expected):
    assert keep_count(n, keep) == expected


def test_keep_count_survives_products_just_below_an_integer():
    assert math.floor(100 * 0.29) == 28 and math.floor(100 * 0.57) == 56  # why the helper exists
    assert keep_count(100, 0.29) == 29 and keep_count(100, 0.57) == 57
    assert keep_count(100, 0.295) == 29  # but a real fraction is still floored


def test_keep_rates_compound_with_floor_at_each_stage():
    p = plan(Schedule((3, 6, 9), (0.7, 0.7, 0.7)), n=196, prefix=2)
    # 196 -> floor(137.2) = 137 -> floor(95.9) = 95 -> floor(66.5) = 66
    assert p.patches_per_block == (196,) * 4 + (137,) * 3 + (95,) * 3 + (66,) * 2
    assert p.tokens_per_block == tuple(2 + n for n in p.patches_per_block)
    assert p.final_patches == 66
    assert [(s.block, s.n_in, s.n_out) for s in p.stages] == [(3, 196, 137), (6, 137, 95), (9, 95, 66)]


def test_single_layer_similarity_takes_k_plus_r_candidates():
    p = plan(Schedule((2,), (0.6,), sim_prune=25))
    (stage,) = p.stages
    assert (stage.block, stage.n_in, stage.n_relevance, stage.sim_r, stage.n_out) == (2, 196, 142, 25, 117)
    assert p.patches_per_block[3] == 117


def test_multi_layer_similarity_runs_before_block_zero():
    p = plan(Schedule((2, 5), (0.5, 0.5), sim_prune=20))
    assert p.stages[0].block == BEFORE_BLOCKS and p.stages[0].n_out == 176
    assert p.patches_per_block[:4] == (176, 176, 176, 88)
    assert p.final_patches == 44


def test_keep_one_everywhere_is_dense():
    s = Schedule((1, 2), (1.0, 1.0))
    assert s.is_dense and not Schedule((1,), (0.9,)).is_dense and not Schedule(sim_prune=1).is_dense
    assert plan(s).stages == ()
    assert plan(s).tokens_per_block == (197,) * 12


def test_schedule_round_trips_through_dict():
    s = Schedule((2, 4), (0.6, 0.5), sim_prune=7, sim_seed=3)
    assert Schedule.from_dict(s.to_dict()) == s
    assert Schedule.from_dict({}) == Schedule()
    with pytest.raises(ScheduleError):
        Schedule.from_dict({"prune_layers": ["x"], "keep_rates": [0.5]})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"prune_layers": (2,), "keep_rates": (0.0,)},
        {"prune_layers": (2,), "keep_rates": (1.5,)},
        {"prune_layers": (2,), "keep_rates": (-0.1,)},
        {"prune_layers": (2,), "keep_rates": (float("nan"),)},
        {"prune_layers": (2, 3), "keep_rates": (0.5,)},
        {"prune_layers": (), "keep_rates": (0.5,)},
        {"prune_layers": (-1,), "keep_rates": (0.5,)},
        {"prune_layers": (3, 2), "keep_rates": (0.5, 0.5)},
        {"prune_layers": (2, 2), "keep_rates": (0.5, 0.5)},
        {"sim_prune": -1},
    ],
)
def test_invalid_schedules_are_refused(kwargs):
    with pytest.raises(ScheduleError):
        Schedule(**kwargs)


@pytest.mark.parametrize(
    "schedule",
    [
        Schedule((12,), (0.5,)),  # block out of range for 12 blocks
        Schedule((2,), (0.6,), sim_prune=150),  # k + r > 196
        Schedule(sim_prune=99),  # more than half of 196 before block 0
        Schedule((0, 1), (0.5, 0.5), sim_prune=99),
        Schedule((2,), (0.001,)),  # no token left
        Schedule((2,), (0.3,), sim_prune=60),  # k + r = 118 <= 196, but r > half of the 118 candidates
    ],
)
def test_plans_that_cannot_run_are_refused(schedule):
    with pytest.raises(ScheduleError):
        plan(schedule)


def test_pruning_at_a_block_without_a_head_is_refused(tiny_vit):
    model = TNTModel(tiny_vit("vit"), head_blocks=(0, 1))
    with pytest.raises(ScheduleError, match="no relevance head at block 3"):
        model.set_schedule(Schedule((3,), (0.5,)))
    assert model.schedule == Schedule()  # the old schedule stays
    model.set_schedule(Schedule((1,), (0.5,)))  # a block with a head is fine
    with pytest.raises(ScheduleError, match="out of range"):
        TNTModel(tiny_vit("vit"), head_blocks=(0, 4))
    model.scorer = lambda m, block, x_in, x_out: x_out[:, 1:, 0]  # a scorer needs no head, but blocks must exist
    model.set_schedule(Schedule((3,), (0.5,)))
    with pytest.raises(ScheduleError, match="out of range"):
        model.set_schedule(Schedule((4,), (0.5,)))


def test_attach_tnt_adds_heads_for_scheduled_blocks(tiny_vit):
    model = attach_tnt(tiny_vit("vit"), schedule=Schedule((2,), (0.5,)))
    assert model.head_blocks == tuple(sorted({*NoiseConfig().blocks, 2})) == (1, 2, 3)
    assert model.plan.patches_per_block == (64, 64, 64, 32)  # block 3 runs on the tokens kept after block 2


def test_install_schedule_refuses_untrained_heads(tiny_vit):
    loaded = LoadedModel(model=attach_tnt(tiny_vit("vit")), source="tiny", architecture="vit", heads_trained=False)
    with pytest.raises(TntError, match="no trained relevance heads"):
        install_schedule(loaded, Schedule((1,), (0.5,)))
    assert loaded.model.schedule == Schedule()
    install_schedule(loaded, Schedule((1,), (1.0,)))  # dense needs no trained head
    install_schedule(loaded, Schedule((1,), (0.5,)), require_trained_heads=False)  # counting only
    assert loaded.model.schedule == Schedule((1,), (0.5,))
    loaded.heads_trained = True
    install_schedule(loaded, Schedule((3,), (0.5,)))
    assert loaded.model.plan.final_patches == 32
