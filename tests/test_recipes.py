"""Fine-tuning recipes: how `--recipe` and explicit flags resolve, and the hard-pruning pass of the default recipe.

All in-process and tiny (a 4-block width-32 ViT on random 28x28 inputs): no data set is read except by the two
CLI refusals, which stop before any model is loaded.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from _helpers import FMNIST, error_line, run_cli, tiny_vit

from tnt_cli.cli._errors import describe
from tnt_cli.engine import NoiseConfig, Schedule, attach_tnt
from tnt_cli.errors import TntError
from tnt_cli.recipes import DEFAULT_RECIPE, RECIPES, get_recipe
from tnt_cli.train.config import TrainConfig
from tnt_cli.train.optim import param_groups
from tnt_cli.train.resume import resume_mismatch
from tnt_cli.train.setup import default_drop_block
from tnt_cli.train.task import LossSettings, PruningTask, drop_keep


def cfg(**kw) -> TrainConfig:
    return TrainConfig(model="m", data="fashion-mnist", out="o", **kw)


def test_default_recipe_is_the_studys_winner():
    c = cfg()
    assert c.recipe == "default"
    # the study's winning recipe (examples/fashion_mnist/study.py, "tnt-rank-prog-merge")
    assert (c.relevance, c.sigma0, c.noise_variant, c.train) == ("rank", 1.0, "std", "full")
    assert c.anchor is True and c.heads_fraction == 0.25 and c.reducer == "merge" and c.merge_threshold is None
    assert c.noise_blocks == (1, 3)
    assert cfg(method="tome").reducer == "drop"  # a baseline reduces its own way
    assert c.distill is True and c.distill_weight == 1.0
    assert c.drop_weight == 1.0 and c.drop_keeps == (0.7, 0.5, 0.3, 0.15) and c.drop_block is None
    # study lrs at batch 128 (backbone 2e-4, heads 3e-3) in the trainer's per-512 convention
    assert c.lr == pytest.approx(8e-4) and c.heads_lr_scale * c.lr == pytest.approx(1.2e-2)
    saved = c.to_dict()
    assert saved["recipe"] == "default" and saved["drop_weight"] == 1.0  # resolved values are what gets recorded
    assert TrainConfig.from_dict(saved).to_dict() == saved


def test_official_recipe_is_the_paper():
    c = cfg(recipe="official")
    assert (c.relevance, c.sigma0, c.train, c.distill, c.drop_weight) == ("softmax", 0.02, "heads", False, 0.0)
    assert c.noise_blocks == (0, 1, 2, 3, 4)  # as the official code
    assert c.anchor is False and c.reducer == "drop"  # the paper's noisy step, tokens dropped
    assert c.heads_lr_scale == 1.0 and c.lr == pytest.approx(RECIPES["official"].lr["heads"])


def test_explicit_flags_override_the_recipe():
    c = cfg(sigma0=0.5, relevance="softmax", noise_blocks=(2, 0), distill=False, drop_keeps=(0.4,), lr=1e-3)
    assert (c.sigma0, c.relevance, c.noise_blocks, c.distill, c.drop_keeps, c.lr) == (
        0.5, "softmax", (0, 2), False, (0.4,), 1e-3,
    )  # fmt: skip
    assert c.target_rate == 0.3 and c.drop_weight == 1.0  # what was not given still comes from the recipe
    o = cfg(recipe="official", train="full", distill=True, drop_weight=0.5)
    assert (o.train, o.distill, o.distill_weight, o.drop_weight, o.sigma0) == ("full", True, 1.0, 0.5, 0.02)
    assert o.lr == pytest.approx(RECIPES["official"].lr["full"]) and o.heads_lr_scale == 15.0


def test_heads_only_turns_the_recipes_pruning_pass_off_but_refuses_an_explicit_one(tmp_path):
    c = cfg(train="heads")
    assert c.drop_weight == 0.0 and any("pruning pass is off" in n for n in c.notes)
    assert c.distill is True  # distillation still trains the heads (teacher: the frozen backbone)
    with pytest.raises(TntError, match=r"^drop_weight needs train full"):  # Python names; the CLI says flags
        cfg(train="heads", drop_weight=1.0)
    result = run_cli("finetune", "m", "--data", "fashion-mnist", "--out", tmp_path / "o", "--recipe", "official",
                     "--drop-weight", "1")  # fmt: skip
    assert error_line(result).startswith("error: --drop-weight needs --train full")
    assert not (tmp_path / "o").exists()


def test_unknown_recipe_and_bad_drop_settings_give_one_line(tmp_path):
    with pytest.raises(TntError, match="unknown recipe 'fast': choose one of default, official"):
        get_recipe("fast")
    result = run_cli("finetune", "m", "--data", "fashion-mnist", "--out", tmp_path / "o", "--recipe", "fast")
    assert error_line(result) == "error: unknown recipe 'fast': choose one of default, official"
    bad_values = [
        ({"drop_keeps": (0.5, 1.5)}, "^drop_keeps must be"),
        ({"drop_weight": -1.0}, "^drop_weight must be"),
        ({"head_lr_scale": 0.0}, "^head_lr_scale must be"),
        ({"distill_weight": -0.1}, "^distill_weight must be"),
    ]
    for bad, match in bad_values:
        with pytest.raises(TntError, match=match):
            cfg(**bad)


def test_resume_refuses_another_recipe_or_drop_setting():
    saved = cfg().to_dict()
    assert resume_mismatch(saved, cfg()) is None
    assert describe(resume_mismatch(saved, cfg(recipe="official")))[0].startswith("--resume: --recipe is 'official'")
    assert describe(resume_mismatch(saved, cfg(drop_weight=0.5)))[0].startswith("--resume: --drop-weight is 0.5")


def test_head_lr_scale_gives_the_heads_their_own_groups():
    model = attach_tnt(tiny_vit(shape=FMNIST), (0, 1))
    groups = param_groups(model, 0.05, lr=1e-3, head_lr_scale=15.0)
    heads = {id(p) for p in model.heads.parameters()}
    for g in groups:
        in_heads = {id(p) in heads for p in g["params"]}
        assert len(in_heads) == 1  # no group mixes heads and backbone
        assert g["lr"] == pytest.approx(1.5e-2 if in_heads.pop() else 1e-3)
    assert groups[0]["lr"] == pytest.approx(1e-3)  # group 0 carries the base lr the trainer logs


def test_default_drop_block_is_the_first_noise_block_after_block_0():
    assert default_drop_block((0, 1, 2, 3), depth=6) == 1
    assert default_drop_block((0, 2, 4), depth=12) == 2
    assert default_drop_block((0,), depth=12) == 0
    assert default_drop_block((0, 1), depth=2) == 0  # block 1 is the last block: pruning there changes nothing


def test_drop_keep_is_a_function_of_seed_step_micro_and_leaves_global_rngs_alone():
    keeps = (0.7, 0.5, 0.3, 0.15)
    torch.manual_seed(5)
    random.seed(5)
    np.random.seed(5)
    draws = [drop_keep(keeps, 0, step, 0) for step in range(1, 41)]
    after = (torch.rand(1).item(), random.random(), np.random.rand())
    torch.manual_seed(5)
    random.seed(5)
    np.random.seed(5)
    assert (torch.rand(1).item(), random.random(), np.random.rand()) == after
    assert draws == [drop_keep(keeps, 0, step, 0) for step in range(1, 41)]
    assert set(draws) == set(keeps)  # 40 draws over 4 rates hit every one
    assert draws != [drop_keep(keeps, 1, step, 0) for step in range(1, 41)]
    assert draws != [drop_keep(keeps, 0, step, 1) for step in range(1, 41)]


def test_the_pruning_pass_changes_the_backbone_gradient_and_restores_the_schedule():
    torch.manual_seed(0)
    noise = NoiseConfig(blocks=(0, 1, 2, 3), relevance="sigmoid", sigma0=1.0, target_rate=0.3)
    vit = tiny_vit(shape=FMNIST, seed=1)
    model = attach_tnt(vit, (0, 1, 2, 3), noise=noise, schedule=Schedule((2,), (0.5,))).train()
    task = PruningTask(model, torch.nn.CrossEntropyLoss(), LossSettings(
        method="tnt", rate_weight=0.0, distill=False, distill_weight=1.0, distill_temp=1.0, drop_weight=1.0,
        noise_trains_backbone=True,
    ))
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))

    def grads(schedule):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(3)  # the same noise in both runs
        loss = task(x, y, schedule)["loss"]
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.vit.named_parameters()}

    loss_plain, plain = grads(None)
    loss_drop, drop = grads(Schedule((1,), (0.3,)))
    assert loss_drop > loss_plain
    assert any(not torch.allclose(plain[n], drop[n]) for n in plain)
    assert model.schedule == Schedule((2,), (0.5,))  # the eval schedule is back
    torch.manual_seed(3)
    model.eval()
    pruned = task.pruned_logits(x, Schedule((1,), (0.3,)))
    model.set_schedule(Schedule((1,), (0.3,)))
    assert torch.equal(pruned, model(x))  # the training pass is exactly the deployed pruned model


def test_a_recipes_noise_is_built_in_one_place_and_an_official_import_records_the_papers():
    from tnt_cli.io.builder import assemble

    official = RECIPES["official"]
    assert NoiseConfig.from_settings(RECIPES[DEFAULT_RECIPE]) == NoiseConfig()  # the engine's default is the recipe's
    assert TrainConfig(model="m", data="d", out="o", recipe="official").noise() == NoiseConfig.from_settings(official)
    state = dict(tiny_vit(shape=FMNIST).state_dict())
    for block in (0, 1):
        state[f"alpha_heads.{block}.weight"], state[f"alpha_heads.{block}.bias"] = torch.zeros(1, 32), torch.zeros(1)
    model, _ = assemble(tiny_vit(shape=FMNIST), state, where="checkpoint.pth")
    assert model.noise == NoiseConfig.from_settings(official, blocks=(0, 1))
    assert (model.noise.relevance, model.noise.sigma0, model.noise.target_rate) == ("softmax", 0.02, 0.5)


def test_a_bare_tnt_model_gets_the_heads_attach_tnt_gives():
    from tnt_cli.engine import TNTModel

    vit = tiny_vit(shape=FMNIST, depth=6)
    assert TNTModel(vit).head_blocks == attach_tnt(vit).head_blocks == NoiseConfig().blocks
    assert TNTModel(vit).noise == attach_tnt(vit).noise == NoiseConfig()
    shallow = tiny_vit(shape=FMNIST, depth=2)  # the default noise blocks a model lacks are left out, as attach_tnt does
    assert TNTModel(shallow).head_blocks == attach_tnt(shallow).head_blocks == (1,)
