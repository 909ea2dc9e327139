"""Keep rate 1.0 is the plain timm model, and attaching TNT leaves the timm model itself untouched."""

from __future__ import annotations

import pytest
import torch

from tnt_cli.engine import Schedule, attach_tnt

KINDS = ["vit", "vit_reg_avg", "vit_reg_cls_avg", "deit_distilled"]
PREFIX = {"vit": 1, "vit_reg_avg": 4, "vit_reg_cls_avg": 5, "deit_distilled": 2}  # cls / registers / cls + dist
DENSE_SCHEDULES = [
    Schedule(),
    Schedule(prune_layers=(1,), keep_rates=(1.0,)),
    Schedule(prune_layers=(0, 1, 2, 3), keep_rates=(1.0, 1.0, 1.0, 1.0)),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("schedule", DENSE_SCHEDULES, ids=["dense", "one-layer", "all-layers"])
def test_keep_rate_one_gives_the_plain_timm_logits(tiny_vit, kind, schedule):
    vit = tiny_vit(kind)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = vit(x)
        model = attach_tnt(vit, schedule=schedule).eval()
        got = model(x)
        traced, trace = model.forward_traced(x)
    assert got.shape == expected.shape == (3, 10)
    assert model.num_prefix_tokens == PREFIX[kind]
    assert torch.equal(got, expected)
    assert torch.equal(traced, expected)
    assert trace == []  # nothing was pruned


@pytest.mark.parametrize("kind", KINDS)
def test_training_mode_without_noise_is_the_plain_timm_model(tiny_vit, kind):
    vit = tiny_vit(kind).train()  # no dropout in these models, so train mode is deterministic
    model = attach_tnt(vit)
    model.noise_enabled = False
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), vit(x))


@pytest.mark.parametrize("kind", KINDS)
def test_attaching_tnt_leaves_the_timm_state_dict_untouched(tiny_vit, kind):
    vit = tiny_vit(kind)
    before = {k: v.clone() for k, v in vit.state_dict().items()}
    model = attach_tnt(vit, schedule=Schedule(prune_layers=(1,), keep_rates=(0.5,)))
    after = vit.state_dict()
    assert list(after) == list(before)
    for key, tensor in before.items():
        assert torch.equal(after[key], tensor), key

    # the heads live outside the backbone: its parameters and keys do not include them
    backbone_params = {id(p) for p in model.vit.parameters()}
    head_params = list(model.heads.parameters())
    assert head_params and not any(id(p) in backbone_params for p in head_params)
    assert not any("heads" in key for key in after)
    full = model.state_dict()
    assert {k for k in full if k.startswith("vit.")} == {f"vit.{k}" for k in before}
    assert {k for k in full if not k.startswith("vit.")} == set(model.head_state_dict())
    assert all(k.startswith("heads.") for k in model.head_state_dict())

    # the backbone still loads strictly into a fresh timm model of the same shape
    fresh = tiny_vit(kind, seed=1)
    fresh.load_state_dict(model.vit.state_dict(), strict=True)
