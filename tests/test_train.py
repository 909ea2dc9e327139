"""Training pieces: lr schedule, weight-decay groups, config checks, checkpoint RNG round trip, eval schedule."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch
from _helpers import FMNIST, tiny_vit

from tnt_cli.cli._errors import describe
from tnt_cli.engine import attach_tnt
from tnt_cli.errors import SettingError, TntError
from tnt_cli.recipes import RECIPES
from tnt_cli.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from tnt_cli.train.config import TrainConfig
from tnt_cli.train.optim import lr_factor, no_decay_names, param_groups
from tnt_cli.train.resume import resume_mismatch
from tnt_cli.train.setup import default_eval_schedule


def test_warmup_then_cosine_to_min():
    f = [lr_factor(s, total=100, warmup=10, min_ratio=0.01) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(f[10:]))  # monotone decay after warmup
    assert f[55] == pytest.approx(0.01 + 0.99 * 0.5)  # half way through the cosine
    assert lr_factor(100, total=100, warmup=10, min_ratio=0.01) == pytest.approx(0.01)


def test_no_weight_decay_on_norms_biases_tokens_and_head_biases():
    model = attach_tnt(tiny_vit(shape=FMNIST), (0, 1))
    skip = no_decay_names(model)
    assert {"vit.cls_token", "vit.pos_embed", "vit.norm.weight", "heads.0.bias", "vit.blocks.0.attn.qkv.bias"} <= skip
    assert "heads.0.weight" not in skip and "vit.blocks.0.attn.qkv.weight" not in skip
    model.vit.requires_grad_(False)
    groups = param_groups(model, 0.05)
    trainable = {id(p) for g in groups for p in g["params"]}
    assert trainable == {id(p) for p in model.heads.parameters()}
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]


def test_config_defaults_come_from_the_recipe_and_bad_values_are_refused():
    cfg = TrainConfig(model="m", data="fashion-mnist", out="o", recipe="official")
    recipe = RECIPES["official"]
    assert (cfg.noise_blocks, cfg.sigma0, cfg.noise_variant, cfg.relevance, cfg.target_rate) == (
        recipe.noise_blocks, recipe.sigma0, recipe.noise_variant, recipe.relevance, recipe.target_rate,
    )  # fmt: skip
    assert cfg.noise_blocks == (0, 1, 2, 3, 4)  # the official code's blocks
    assert cfg.lr == recipe.lr["heads"]
    with pytest.raises(TntError, match="train"):
        TrainConfig(model="m", data="d", out="o", train="all")
    with pytest.raises(SettingError, match=r"^noise_variant must be one of std, var, got 'cube'$"):
        TrainConfig(model="m", data="d", out="o", noise_variant="cube")
    with pytest.raises(TntError, match="accum"):
        TrainConfig(model="m", data="d", out="o", accum=0)


def test_resume_refuses_changed_settings():
    saved = TrainConfig(model="m", data="d", out="o", lr=0.1).to_dict()
    assert resume_mismatch(saved, TrainConfig(model="m", data="d", out="o", lr=0.1, workers=3)) is None
    mismatch = resume_mismatch(saved, TrainConfig(model="m", data="d", out="o", lr=0.2))
    assert mismatch is not None and str(mismatch).startswith("resume: lr is 0.2 but the checkpoint was made with 0.1")
    assert describe(mismatch)[0].startswith("--resume: --lr is 0.2 but the checkpoint was made with 0.1")


def test_checkpoint_round_trips_every_rng(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    state = rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    save_checkpoint(tmp_path, {"rng": [state], "x": torch.ones(2)}, {"step": 0})
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    loaded = load_checkpoint(tmp_path)  # weights_only=True: no pickled code in checkpoints
    set_rng_state(loaded["rng"][0])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_default_eval_schedule_uses_a_trained_head_before_the_last_block():
    assert default_eval_schedule((0, 1, 2, 3, 4), depth=12).prune_layers == (2,)
    assert default_eval_schedule((0, 1, 2, 3), depth=4).prune_layers == (2,)
    assert default_eval_schedule((0, 1, 2), depth=3).prune_layers == (1,)
    assert default_eval_schedule((4, 5), depth=12).prune_layers == (4,)
    assert default_eval_schedule((0, 1, 2), depth=3).keep_rates == (0.5,)


def test_training_errors_name_settings_for_python_and_flags_on_the_command_line(tmp_path):
    from tnt_cli.cli._errors import describe
    from tnt_cli.errors import SettingError
    from tnt_cli.train.trainer import Interrupted

    with pytest.raises(SettingError) as missing:
        load_checkpoint(tmp_path)
    assert str(missing.value).startswith("resume: no checkpoint at") and "--" not in str(missing.value)
    assert describe(missing.value)[0].startswith("--resume: no checkpoint at")
    stopped = Interrupted("interrupted after step 1/2: checkpoint saved to x", tmp_path / "x")
    assert "--resume" not in str(stopped)
    assert describe(stopped) == ("interrupted after step 1/2: checkpoint saved to x; continue with the same command "
                                 "plus --resume", 130)  # fmt: skip
