"""Baselines reproduce their defining property on constructed inputs, with static shapes."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from _eval_helpers import make_vit

from tnt_cli.engine import Schedule, attach_tnt
from tnt_cli.errors import TntError
from tnt_cli.eval.baselines import (
    ClsAttentionScorer,
    RandomScorer,
    ToMeViT,
    apply_method,
    bipartite_merge,
    match_tome_r,
    method_gmacs,
    tome_patch_counts,
)

# shared fixtures (see tests/_eval_helpers.py)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return attach_tnt(make_vit(), [0, 1, 2, 3]).eval()


def images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- cls-attn
def test_cls_attn_keeps_the_patches_the_cls_row_attends_to_most(model):
    """Constructed attention: head 0's CLS query is u, keys are the tokens themselves, head 1 is uniform, so the
    CLS attention (mean over heads) ranks patch j by u . x_j: cls-attn must keep exactly those top-k."""
    blk = model.vit.blocks[1]
    dim = model.vit.embed_dim
    blk.norm1 = torch.nn.Identity()
    u = torch.zeros(dim)
    u[: dim // 2] = torch.randn(dim // 2, generator=torch.Generator().manual_seed(3))  # head 0's dims only
    with torch.no_grad():
        blk.attn.qkv.weight.zero_()
        blk.attn.qkv.bias.zero_()
        blk.attn.qkv.weight[dim : 2 * dim] = torch.eye(dim)  # k = x
        blk.attn.qkv.bias[:dim] = u  # q = u for every token, the CLS token included
    x = images()
    with apply_method(model, "cls-attn", Schedule((1,), (0.25,))) as setup, torch.inference_mode():
        _, trace = setup.module.forward_traced(x)
        x_in = model.vit.blocks[0](model.embed(x))  # the input of block 1
    expected = (x_in[:, 1:] @ u).topk(4, dim=1).indices  # 16 patches, keep 4
    kept = trace[0].kept_positions
    assert kept.shape == (4, 4)
    assert torch.equal(kept.sort(dim=1).values, expected.sort(dim=1).values)


def test_cls_attn_equals_timm_attention_map_with_fused_attention_untouched(model):
    """The recomputed CLS row equals what timm's own (non-fused) attention computes, head-averaged."""
    blk = model.vit.blocks[2]
    fused_before = blk.attn.fused_attn
    x_in = torch.randn(3, 17, model.vit.embed_dim)
    captured = {}
    reference = copy.deepcopy(blk)
    reference.attn.fused_attn = False
    reference.attn.attn_drop.register_forward_hook(lambda m, inp, out: captured.setdefault("attn", out))
    with torch.no_grad():
        reference(x_in)
        scores = ClsAttentionScorer()(model, 2, x_in, blk(x_in))
    expected = captured["attn"][:, :, 0, 1:].mean(dim=1)
    assert torch.allclose(scores, expected, atol=1e-6)
    assert blk.attn.fused_attn == fused_before  # the model's own blocks keep their attention kernel


def test_cls_attn_without_class_token_uses_mean_attention_received():
    import timm

    torch.manual_seed(0)
    vit = timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=10,
        class_token=False, global_pool="avg",
    ).eval()  # fmt: skip
    model = attach_tnt(vit, [0])
    x_in = torch.randn(2, 16, 32)
    blk = copy.deepcopy(vit.blocks[0])
    blk.attn.fused_attn = False
    captured = {}
    blk.attn.attn_drop.register_forward_hook(lambda m, inp, out: captured.setdefault("attn", out))
    with torch.no_grad():
        blk(x_in)
        scores = ClsAttentionScorer()(model, 0, x_in, x_in)
    assert torch.allclose(scores, captured["attn"].mean(dim=(1, 2)), atol=1e-6)


# ----------------------------------------------------------------------------- tome
def test_tome_merges_the_most_similar_pair_first_size_weighted():
    torch.manual_seed(0)
    dim = 8
    patches = torch.randn(1, 6, dim)
    v = torch.randn(dim)
    patches[0, 2] = 2 * v  # A token (even position 2) ...
    patches[0, 5] = v  # ... exactly parallel to B token (odd position 5): cosine similarity 1, the best edge
    sizes = torch.tensor([1.0, 1.0, 3.0, 1.0, 1.0, 1.0]).view(1, 6, 1)
    merged, new_sizes = bipartite_merge(patches, sizes, r=1)
    assert merged.shape == (1, 5, dim) and new_sizes.shape == (1, 5, 1)
    # output: unmerged A (positions 0, 4) in order, then B (positions 1, 3, 5); B's third token holds the merge
    assert torch.equal(merged[0, 0], patches[0, 0]) and torch.equal(merged[0, 1], patches[0, 4])
    assert torch.allclose(merged[0, 4], (3 * 2 * v + 1 * v) / 4)
    assert new_sizes.flatten().tolist() == [1.0, 1.0, 1.0, 1.0, 4.0]
    assert new_sizes.sum() == sizes.sum()


def test_tome_sizes_always_sum_to_the_patch_count(model):
    x = torch.randn(2, 16, 32)
    sizes = torch.ones(2, 16, 1)
    for r in (3, 3, 2, 5):
        x, sizes = bipartite_merge(x, sizes, r)
        assert torch.all(sizes.sum(dim=1) == 16)
    assert x.shape[1] == 4  # 16 -> 13 -> 10 -> 8, then r = 5 is capped at half of 8
    assert tome_patch_counts(16, 4, 3) == [16, 13, 10, 7]


def test_tome_proportional_attention_equals_duplicated_tokens(model):
    """log(size) in timm's attn_mask makes a size-2 token count as two identical copies (fused attention)."""
    blk = model.vit.blocks[0]
    x = torch.randn(1, 5, 32)
    duplicated = torch.cat([x, x[:, 4:5]], dim=1)  # token 4 twice
    mask = torch.tensor([0.0, 0, 0, 0, float(torch.tensor(2.0).log())]).view(1, 1, 1, 5)
    with torch.no_grad():
        proportional = blk(x, attn_mask=mask)
        reference = blk(duplicated)
    assert torch.allclose(proportional[:, :4], reference[:, :4], atol=1e-5)


def test_tome_r0_equals_dense_and_gmacs_follow_token_counts(model):
    x = images()
    with torch.inference_mode():
        dense = model.vit(x)
        assert torch.equal(ToMeViT(model, 0)(x), dense)
        out = ToMeViT(model, 4)(x)
    assert out.shape == dense.shape and not torch.allclose(out, dense)
    gmacs = [method_gmacs(model, "tome", tome_r=r) for r in range(0, 9)]
    assert gmacs[0] == pytest.approx(method_gmacs(model, "dense"))
    assert all(a > b for a, b in itertools.pairwise(gmacs))
    assert match_tome_r(model, gmacs[5]) == 5


# ----------------------------------------------------------------------------- random
def test_random_scores_reproducible_and_independent_of_batch_composition(model):
    x_out = torch.randn(4, 17, 32)
    full = RandomScorer(seed=7)(model, 2, x_out, x_out)
    again = RandomScorer(seed=7)(model, 2, x_out, x_out)
    assert torch.equal(full, again)
    split = RandomScorer(seed=7)
    split.begin_batch(2)
    assert torch.equal(split(model, 2, x_out[2:], x_out[2:]), full[2:])  # image 2 scores the same in any batch
    assert not torch.equal(full[0], full[1])  # different images, different scores
    assert not torch.equal(RandomScorer(seed=8)(model, 2, x_out, x_out), full)
    # without begin_batch the scorer counts images: the second forward continues at image 4
    counting = RandomScorer(seed=7)
    counting(model, 2, x_out, x_out)
    second = counting(model, 2, x_out, x_out)
    explicit = RandomScorer(seed=7)
    explicit.begin_batch(4)
    assert torch.equal(second, explicit(model, 2, x_out, x_out))


def test_random_and_cls_attn_use_tnt_token_counts(model):
    schedule = Schedule((1, 2), (0.5, 0.5), sim_prune=2)
    x = images()
    counts = {}
    for method in ("tnt", "random", "cls-attn"):
        with apply_method(model, method, schedule) as setup, torch.inference_mode():
            _, trace = setup.module.forward_traced(x)
            counts[method] = [t.kept_positions.shape[1] for t in trace]
    assert counts["tnt"] == counts["random"] == counts["cls-attn"] == [14, 7, 3]
    tnt_g = method_gmacs(model, "tnt", schedule)
    assert method_gmacs(model, "random", schedule) < tnt_g < method_gmacs(model, "cls-attn", schedule)


def test_apply_method_restores_the_model(model):
    model.set_schedule(Schedule((2,), (0.5,)))
    with apply_method(model, "random", Schedule((1,), (0.25,))):
        assert model.scorer is not None and model.schedule.prune_layers == (1,)
    assert model.scorer is None and model.schedule == Schedule((2,), (0.5,))
    with pytest.raises(TntError, match="unknown method 'nope'"), apply_method(model, "nope"):
        pass


@pytest.mark.parametrize("kind", ["deit_distilled", "vit_reg_cls_avg", "vit_reg_avg"])
def test_baselines_respect_prefix_tokens(tiny_vit, kind):
    """Distillation and register tokens are never scored or merged; ToMe at r=0 is exactly the timm model."""
    vit = tiny_vit(kind)
    model = attach_tnt(vit, [1]).eval()
    p = model.num_prefix_tokens
    x = images(2)
    with torch.inference_mode():
        assert torch.equal(ToMeViT(model, 0)(x), vit(x))
        merged = ToMeViT(model, 8)(x)
        assert merged.shape == vit(x).shape and torch.isfinite(merged).all()
        x_in = torch.randn(2, p + 64, 32)
        scores = ClsAttentionScorer()(model, 1, x_in, x_in)
    assert scores.shape == (2, 64)
    with apply_method(model, "cls-attn", Schedule((1,), (0.5,))) as setup, torch.inference_mode():
        _, trace = setup.module.forward_traced(x)
    assert trace[0].kept_positions.shape == (2, 32)
