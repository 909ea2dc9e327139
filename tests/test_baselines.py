"""The baselines equal independent implementations written here from the papers' equations, at TNT's compute.

The references below use explicit per-image loops and plain float64 math (LayerNorm, per-head softmax attention,
GELU MLP, the matching and merging rules written out), reading only the timm model's parameters. They share no
code with `tnt_cli.methods`.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from _helpers import EVAL, tiny_vit

from tnt_cli.engine import Schedule, attach_tnt
from tnt_cli.engine.gmacs import attention_macs, mlp_macs
from tnt_cli.errors import TntError
from tnt_cli.eval.cached import dense_states, needed_states, run_from_states
from tnt_cli.methods.apply import apply_method, method_gmacs
from tnt_cli.methods.evit import EViT, EvitStage
from tnt_cli.methods.random import RandomScorer
from tnt_cli.methods.registry import METHODS
from tnt_cli.methods.registry import lookup as check_method
from tnt_cli.methods.tome import describe_tome, match_tome_r, tome_macs

ATOL = 1e-9

# 32x32 input with 8x8 patches: 16 patch tokens, 3 blocks of width 24 with LayerScale
SHAPE = {"img_size": 32, "patch_size": 8, "embed_dim": 24, "depth": 3, "num_heads": 3, "num_classes": 5}
SHAPE["init_values"] = 0.5
# name -> (the helpers' kind, its overrides): fewer register tokens than the engine tests use
KINDS = {
    "vit": ("vit", {}),
    "deit_distilled": ("deit_distilled", {}),
    "reg_cls_avg": ("vit_reg_cls_avg", {"reg_tokens": 3}),
    "reg_avg": ("vit_reg_avg", {"reg_tokens": 2}),
}


def tiny64(kind: str, seed: int = 0):
    """A tiny timm ViT in float64 with random weights everywhere (LayerScale and norms too)."""
    base_kind, extra = KINDS[kind]
    vit = tiny_vit(base_kind, seed, shape=SHAPE, **extra)
    with torch.no_grad():
        for name, param in vit.named_parameters():
            if name.endswith(("gamma", "norm1.weight", "norm2.weight", "norm.weight")):
                param.copy_(1 + 0.3 * torch.randn_like(param))
            elif "token" in name or "pos_embed" in name:
                param.copy_(torch.randn_like(param))
    return attach_tnt(vit.double().eval(), [0, 1, 2])


def images(n: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ----------------------------------------------------------------------------- reference math
def ln(norm, x):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def lin(layer, x):
    return x @ layer.weight.T + (layer.bias if layer.bias is not None else 0)


def gamma(ls, x):
    return x * ls.gamma if hasattr(ls, "gamma") else x


def mlp(blk, x):
    h = lin(blk.mlp.fc1, ln(blk.norm2, x))
    h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
    return x + gamma(blk.ls2, lin(blk.mlp.fc2, h))


def attend(blk, x, log_size=None):
    """x (T, D) -> (x + ls1(attn), per-head probabilities (H, T, T), keys averaged over heads (T, hd))."""
    a = blk.attn
    y = ln(blk.norm1, x)
    heads, hd = a.num_heads, a.head_dim
    qkv = lin(a.qkv, y)
    outs, probs, keys = [], [], []
    for h in range(heads):
        q = qkv[:, h * hd : (h + 1) * hd]
        k = qkv[:, heads * hd + h * hd : heads * hd + (h + 1) * hd]
        v = qkv[:, 2 * heads * hd + h * hd : 2 * heads * hd + (h + 1) * hd]
        logits = q @ k.T / math.sqrt(hd)
        if log_size is not None:
            logits = logits + log_size[None, :]
        p = torch.exp(logits - logits.max(dim=1, keepdim=True).values)
        p = p / p.sum(dim=1, keepdim=True)
        outs.append(p @ v)
        probs.append(p)
        keys.append(k)
    out = lin(a.proj, torch.cat(outs, dim=1))
    return x + gamma(blk.ls1, out), torch.stack(probs), torch.stack(keys).mean(0)


def embed(vit, image):
    return vit.norm_pre(vit._pos_embed(vit.patch_embed(image[None])))[0]


def head(vit, x, sizes):
    """Final norm and head; average pooling weighted by token size (non-prefix tokens)."""
    x = x if isinstance(vit.norm, torch.nn.Identity) else ln(vit.norm, x)
    p = vit.num_prefix_tokens
    if vit.global_pool == "avg":
        w = sizes[p:, None]
        pooled = (x[p:] * w).sum(0) / w.sum()
        return lin(vit.head, pooled if isinstance(vit.fc_norm, torch.nn.Identity) else ln(vit.fc_norm, pooled))
    if getattr(vit, "head_dist", None) is not None:
        return (lin(vit.head, x[0]) + lin(vit.head_dist, x[1])) / 2
    return lin(vit.head, x[0])


def tome_reference(vit, image, rs):
    """ToMe, one image: attention with +log(size), bipartite matching of A = even / B = odd positions on the
    head-averaged keys, prefix protected, r strongest edges merged by size-weighted average, then the MLP."""
    p = vit.num_prefix_tokens
    has_cls = vit.cls_token is not None
    x = embed(vit, image)
    sizes = torch.ones(x.shape[0], dtype=x.dtype)
    for blk, r in zip(vit.blocks, rs):
        x, _, keys = attend(blk, x, sizes.log())
        t = x.shape[0]
        r = min(r, (t - p) // 2)
        if r > 0:
            metric = keys / keys.norm(dim=1, keepdim=True)
            a_pos = [i for i in range(t) if i % 2 == 0 and i >= p]
            b_pos = [i for i in range(t) if i % 2 == 1 and i >= p]
            best = {}
            for i in a_pos:
                sims = [float(metric[i] @ metric[j]) for j in b_pos]
                j = max(range(len(b_pos)), key=lambda n: sims[n])
                best[i] = (sims[j], b_pos[j])
            by_edge = sorted(a_pos, key=lambda i: -best[i][0])
            merged, kept_a = by_edge[:r], by_edge[r:]
            if has_cls:
                kept_a = sorted(kept_a)
            new_x = {j: x[j] * sizes[j] for j in b_pos}
            new_s = {j: sizes[j].clone() for j in b_pos}
            for i in merged:
                j = best[i][1]
                new_x[j] = new_x[j] + x[i] * sizes[i]
                new_s[j] = new_s[j] + sizes[i]
            rows = [x[i] for i in range(p)] + [x[i] for i in kept_a] + [new_x[j] / new_s[j] for j in b_pos]
            size_rows = [sizes[i] for i in range(p)] + [sizes[i] for i in kept_a] + [new_s[j] for j in b_pos]
            x, sizes = torch.stack(rows), torch.stack(size_rows)
        x = mlp(blk, x)
    return head(vit, x, sizes)


def evit_reference(vit, image, keeps: dict[int, int], fuse: bool):
    """EViT, one image: in each pruning block, after attention keep the top-k non-prefix tokens by the class
    token's head-averaged attention; optionally add sum(attention_i * x_i) over the dropped ones; MLP after."""
    p = vit.num_prefix_tokens
    x = embed(vit, image)
    for i, blk in enumerate(vit.blocks):
        x, probs, _ = attend(blk, x)
        if i in keeps:
            attn_cls = probs[:, 0, :].mean(0)  # class token's row, mean over heads
            n = x.shape[0] - p
            order = sorted(range(n), key=lambda j: -float(attn_cls[p + j]))
            kept, dropped = order[: keeps[i]], order[keeps[i] :]
            rows = [x[j] for j in range(p)] + [x[p + j] for j in kept]
            if fuse:
                rows.append(sum(attn_cls[p + j] * x[p + j] for j in dropped))
            x = torch.stack(rows)
        x = mlp(blk, x)
    return head(vit, x, torch.ones(x.shape[0], dtype=x.dtype))


# ----------------------------------------------------------------------------- ToMe
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("r", [1, 3, 6, 50])  # 50 saturates: r = (T - prefix) // 2 in every block
def test_tome_equals_the_reference(kind, r):
    model = tiny64(kind)
    x = images()
    with apply_method(model, "tome", tome_r=r) as setup, torch.no_grad():
        ours = setup.module(x)
    with torch.no_grad():
        expected = torch.stack([tome_reference(model.vit, img, [r] * 3) for img in x])
    assert torch.allclose(ours, expected, atol=ATOL, rtol=0), (ours - expected).abs().max()


def test_tome_per_block_r_equals_the_reference():
    model = tiny64("deit_distilled")
    x = images()
    with apply_method(model, "tome", tome_r=(3, 2, 2)) as setup, torch.no_grad():
        ours = setup.module(x)
    with torch.no_grad():
        expected = torch.stack([tome_reference(model.vit, img, [3, 2, 2]) for img in x])
    assert torch.allclose(ours, expected, atol=ATOL, rtol=0)
    assert setup.module.r == 2 and setup.describe() == "tome r 2 (3 in block 0)"


def test_tome_r0_and_evit_keep_one_equal_dense_timm():
    model = tiny64("vit")
    x = images()
    with torch.no_grad():
        dense = model.vit(x)
        with apply_method(model, "tome", tome_r=0) as setup:
            assert torch.equal(setup.module(x), dense)
        for method in ("evit", "evit-fuse"):
            with apply_method(model, method, Schedule((1,), (1.0,))) as setup:
                assert setup.module.stages == ()
                assert torch.equal(setup.module(x), dense)
                assert setup.gmacs == pytest.approx(method_gmacs(model, "dense"))
    assert method_gmacs(model, "tome", tome_r=0) == pytest.approx(method_gmacs(model, "dense"))


# ----------------------------------------------------------------------------- EViT
@pytest.mark.parametrize("kind", ["vit", "deit_distilled", "reg_cls_avg"])
@pytest.mark.parametrize("fuse", [False, True])
@pytest.mark.parametrize("plan", [((1,), (7,)), ((0, 2), (10, 4))])
def test_evit_equals_the_reference(kind, fuse, plan):
    model = tiny64(kind)
    blocks, keeps = plan
    n, stages = 16, []
    for block, keep in zip(blocks, keeps):
        stages.append(EvitStage(block, n, keep, fuse))
        n = stages[-1].n_out
    x = images()
    with torch.no_grad():
        ours = EViT(model, stages, fuse=fuse)(x)
        expected = torch.stack([evit_reference(model.vit, img, dict(zip(blocks, keeps)), fuse) for img in x])
    assert torch.allclose(ours, expected, atol=ATOL, rtol=0), (ours - expected).abs().max()


@pytest.mark.parametrize("method", ["evit", "evit-fuse"])
def test_apply_method_evit_runs_its_matched_counts(method):
    model = tiny64("vit")
    x = images()
    schedule = Schedule((0, 1), (0.5, 0.5))
    with apply_method(model, method, schedule) as setup, torch.no_grad():
        ours = setup.module(x)
        keeps = {s.block: s.keep for s in setup.module.stages}
        expected = torch.stack([evit_reference(model.vit, img, keeps, method == "evit-fuse") for img in x])
    assert set(keeps) == {0, 1}
    assert torch.allclose(ours, expected, atol=ATOL, rtol=0)


def test_evit_refuses_models_without_a_class_token():
    model = tiny64("reg_avg")
    with pytest.raises(TntError, match="no class token"), apply_method(model, "evit", Schedule((1,), (0.5,))):
        pass


def test_cls_attn_is_an_alias_of_evit():
    assert check_method("cls-attn").name == "evit"
    model = tiny64("vit")
    with apply_method(model, "cls-attn", Schedule((1,), (0.5,))) as setup:
        assert setup.method == "evit"
    with pytest.raises(TntError, match="unknown method 'nope'"):
        check_method("nope")


# ----------------------------------------------------------------------------- compute
def deit_s():
    import timm

    return attach_tnt(timm.create_model("deit_small_patch16_224", pretrained=False).eval(), [2, 3, 6, 9])


def test_block_halves_add_up_to_the_block():
    from tnt_cli.engine.gmacs import block_macs

    vit = deit_s().vit
    for t in (1, 50, 197):
        assert attention_macs(vit.blocks[0], t, 384) + mlp_macs(vit.blocks[0], t, 384) == block_macs(
            vit.blocks[0], t, 384
        )


@pytest.mark.parametrize("keep", [0.7, 0.5, 0.3])
@pytest.mark.parametrize("layers", [(2,), (3, 6, 9)])
def test_every_method_is_matched_within_two_percent_on_deit_s(keep, layers):
    model = deit_s()
    schedule = Schedule(layers, (keep,) * len(layers))
    tnt = method_gmacs(model, "tnt", schedule)
    for method in ("random", "evit", "evit-fuse", "tome"):
        gmacs = method_gmacs(model, method, schedule)
        assert abs(gmacs / tnt - 1) < 0.02, (method, gmacs, tnt)
    with apply_method(model, "evit", schedule) as setup:
        # pruning inside the block is cheaper at equal counts, so EViT keeps more tokens than TNT's first stage
        assert setup.module.stages[0].keep > int(196 * keep)
        assert setup.gmacs == pytest.approx(method_gmacs(model, "evit", schedule))


def flop_counter_macs(module, x) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(x)
    return counter.get_total_flops() / 2  # FLOPs of matmuls and convolutions = 2 x MACs


@pytest.mark.parametrize("method", ["tome", "evit", "evit-fuse", "random", "tnt"])
def test_gmacs_equal_torch_flop_counter(method):
    """Our analytic count vs torch's FlopCounterMode (matmuls only; our norms add ~0.2%) on a DeiT-S."""
    model = deit_s()
    for blk in model.vit.blocks:
        blk.attn.fused_attn = False  # explicit attention matmuls, counted by the flop counter on any device
    x = torch.randn(1, 3, 224, 224)
    schedule = Schedule((3, 6, 9), (0.7, 0.7, 0.7))
    with apply_method(model, method, schedule) as setup:
        counted = flop_counter_macs(setup.module, x)
        assert setup.gmacs * 1e9 == pytest.approx(counted, rel=0.01), (setup.describe(), setup.gmacs, counted / 1e9)


def test_tome_r_matching_finds_the_closest_plan():
    model = tiny64("vit")
    gmacs = [method_gmacs(model, "tome", tome_r=r) for r in range(0, 8)]
    assert all(a >= b for a, b in itertools.pairwise(gmacs)) and gmacs[1] < gmacs[0]
    assert match_tome_r(model.vit, gmacs[3] * 1e9) == (3, 3, 3)
    assert tome_macs(model.vit, (3, 3, 3)) / 1e9 == pytest.approx(gmacs[3])
    assert describe_tome((4, 4, 3)) == "tome r 3 (4 in blocks 0-1)"


# ----------------------------------------------------------------------------- cached sweep, training
@pytest.mark.parametrize("method", ["tnt", "random", "evit", "evit-fuse", "tome", "dense"])
def test_cached_states_give_the_full_forward(method):
    model = tiny64("deit_distilled")
    x = images()
    with apply_method(model, method, Schedule((1, 2), (0.5, 0.5))) as setup, torch.no_grad():
        setup.begin_batch(0)
        full = setup.module(x)
        setup.begin_batch(0)
        cached = run_from_states(setup, dense_states(model, x, needed_states(setup)))
    assert torch.allclose(cached, full, atol=1e-12, rtol=0)


@pytest.mark.parametrize("method", [m for m in METHODS if m != "dense"])
def test_gradients_reach_the_backbone_in_training_mode(method):
    torch.manual_seed(0)
    model = attach_tnt(tiny_vit(shape=EVAL), [0, 1, 2, 3]).train()
    with apply_method(model, method, Schedule((1,), (0.5,))) as setup:
        setup.begin_batch(0)
        out = setup.module(torch.randn(2, 3, 32, 32))
        assert out.shape == (2, 10) and out.requires_grad
        out.square().sum().backward()
    for name in ("blocks.0.attn.qkv.weight", "blocks.3.mlp.fc2.weight", "patch_embed.proj.weight"):
        grad = dict(model.vit.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, (method, name)
    if method == "tnt":
        assert model.heads["1"].weight.grad is None  # hard top-k: no gradient through the heads' ranking


# ----------------------------------------------------------------------------- random
def test_random_scores_reproducible_and_independent_of_batch_composition():
    model = tiny64("vit")
    x_out = torch.randn(4, 17, 24)
    full = RandomScorer(seed=7)(model, 2, x_out, x_out)
    assert torch.equal(full, RandomScorer(seed=7)(model, 2, x_out, x_out))
    split = RandomScorer(seed=7)
    split.begin_batch(2)
    assert torch.equal(split(model, 2, x_out[2:], x_out[2:]), full[2:])  # image 2 scores the same in any batch
    assert not torch.equal(full[0], full[1])
    assert not torch.equal(RandomScorer(seed=8)(model, 2, x_out, x_out), full)
    counting = RandomScorer(seed=7)  # without begin_batch the scorer counts images
    counting(model, 2, x_out, x_out)
    explicit = RandomScorer(seed=7)
    explicit.begin_batch(4)
    assert torch.equal(counting(model, 2, x_out, x_out), explicit(model, 2, x_out, x_out))


def test_random_uses_tnt_token_counts_and_apply_method_restores_the_model():
    model = tiny64("vit")
    model.set_schedule(Schedule((2,), (0.5,)))
    schedule = Schedule((1, 2), (0.5, 0.5), sim_prune=2)
    counts = {}
    for method in ("tnt", "random"):
        with apply_method(model, method, schedule) as setup, torch.no_grad():
            _, trace = setup.module.forward_traced(images())
            counts[method] = [t.kept_positions.shape[1] for t in trace]
    assert counts["tnt"] == counts["random"] == [14, 7, 3]
    assert method_gmacs(model, "random", schedule) < method_gmacs(model, "tnt", schedule)  # no heads to run
    assert model.scorer is None and model.schedule == Schedule((2,), (0.5,))
