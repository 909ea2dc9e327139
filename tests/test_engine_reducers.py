"""The drop / merge / fuse reducers: static token counts, size bookkeeping, dense at keep 1.0, drop unchanged,
torch.compile, ONNX, the cached sweep and gradients of the hard-pruning pass."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tnt_cli.engine import Schedule, attach_tnt
from tnt_cli.engine.reducers import fuse_tokens, merge_into_kept
from tnt_cli.engine.schedule import BEFORE_BLOCKS, plan_tokens
from tnt_cli.engine.tokens import gather_tokens, partition, similarity_keep_index, top_index
from tnt_cli.errors import ScheduleError

REDUCERS = ("drop", "merge", "fuse")
KINDS = ["vit", "vit_reg_avg", "vit_reg_cls_avg", "deit_distilled"]
SHAPES = [
    ((1,), (0.3,), 0),
    ((1,), (0.5,), 0),
    ((1,), (0.7,), 0),
    ((0, 1, 2), (0.7, 0.7, 0.7), 0),
    ((1, 2), (0.5, 0.5), 0),
    ((1,), (0.5,), 8),  # relevance top-k, then similarity pruning, at one block
    ((1, 2), (0.7, 0.7), 8),  # similarity pruning on the embeddings, then two stages
]


def model_for(tiny_vit, kind: str, schedule: Schedule, seed: int = 0):
    return attach_tnt(tiny_vit(kind, seed=seed), range(4), schedule=schedule).eval()


def images(batch: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def record_stages(model) -> list[tuple]:
    """Make `model` record every stage's (stage, tokens out, sizes out)."""
    seen: list[tuple] = []
    original = model.apply_stage

    def spy(stage, *args, **kwargs):
        out = original(stage, *args, **kwargs)
        seen.append((stage, out[0], out[2]))
        return out

    model.apply_stage = spy
    return seen


def tokens_entering_blocks(model) -> list[int]:
    counts: list[int] = []
    for blk in model.vit.blocks:
        blk.register_forward_pre_hook(lambda _m, args: counts.append(int(args[0].shape[1])))
    return counts


# ----------------------------------------------------------------------------- schedule and plan
def test_reducer_round_trips_and_old_dicts_drop():
    schedule = Schedule((1, 2), (0.5, 0.5), reducer="merge")
    assert schedule.to_dict()["reducer"] == "merge"
    assert Schedule.from_dict(schedule.to_dict()) == schedule
    assert Schedule.from_dict({"prune_layers": [2], "keep_rates": [0.6]}).reducer == "drop"
    assert "fuse" in Schedule((2,), (0.6,), reducer="fuse").describe()
    assert Schedule((2,), (0.6,), sim_prune=25).describe() == "block 2 keep 0.6, r 25"  # drop's text unchanged
    with pytest.raises(ScheduleError, match="drop, merge, fuse"):
        Schedule((2,), (0.6,), reducer="average")


@pytest.mark.parametrize("reducer", REDUCERS)
def test_fuse_adds_one_token_per_stage_to_the_plan(reducer):
    plan = plan_tokens(Schedule((1, 2), (0.5, 0.5), reducer=reducer), num_patches=64, num_prefix=1, depth=4)
    extra = int(reducer == "fuse")
    first = 32 + extra  # 64 patches, keep 0.5 (+ the fused token)
    second = first // 2 + extra
    assert [(s.n_in, s.n_out, s.n_kept) for s in plan.stages] == [
        (64, first, 32),
        (first, second, first // 2),
    ]
    assert plan.patches_per_block == (64, 64, first, second)
    assert [s.n_reduced for s in plan.stages] == ([0, 0] if reducer == "drop" else [32, first - first // 2])


def test_a_stage_with_nothing_left_out_merges_nothing():
    """k + r = n: the relevance step keeps every token, so fuse has nothing to fuse and adds no token."""
    plan = plan_tokens(Schedule((1,), (0.75,), sim_prune=16, reducer="fuse"), num_patches=64, num_prefix=1, depth=4)
    (stage,) = plan.stages
    assert stage.n_relevance == 64 and stage.n_reduced == 0 and stage.n_out == 48


@pytest.mark.parametrize("reducer", REDUCERS)
@pytest.mark.parametrize(("layers", "keeps", "r"), SHAPES)
def test_every_block_runs_the_planned_token_count(tiny_vit, reducer, layers, keeps, r):
    model = model_for(tiny_vit, "vit_reg_avg", Schedule(layers, keeps, sim_prune=r, reducer=reducer))
    counts = tokens_entering_blocks(model)
    stages = record_stages(model)
    with torch.no_grad():
        logits, trace = model.forward_traced(images())
    assert counts == list(model.plan.tokens_per_block)
    assert [s.n_out for s, _, _ in stages] == [s.n_out for s in model.plan.stages]
    assert [t.kept_positions.shape[1] for t in trace] == [s.n_out for s in model.plan.stages]
    assert logits.shape == (3, 10) and torch.isfinite(logits).all()


# ----------------------------------------------------------------------------- sizes
@pytest.mark.parametrize("reducer", ["merge", "fuse"])
@pytest.mark.parametrize(("layers", "keeps"), [((1,), (0.3,)), ((0, 1, 2), (0.6, 0.6, 0.6)), ((1, 2), (0.5, 0.4))])
def test_sizes_always_add_up_to_the_patches(tiny_vit, reducer, layers, keeps):
    model = model_for(tiny_vit, "vit", Schedule(layers, keeps, reducer=reducer))
    stages = record_stages(model)
    with torch.no_grad():
        model(images())
    assert len(stages) == len(layers)
    for stage, tokens, sizes in stages:
        assert sizes.shape == (3, stage.n_out, 1)
        assert tokens.shape[1] == model.num_prefix_tokens + stage.n_out
        assert torch.equal(sizes.sum(dim=1).squeeze(-1), torch.full((3,), 64.0))
        assert (sizes >= 1).all()
    if reducer == "fuse":
        fused = stages[0][2][:, -1, 0]
        assert torch.equal(fused, torch.full((3,), float(stages[0][0].n_reduced)))


def test_drop_carries_no_sizes(tiny_vit):
    model = model_for(tiny_vit, "vit", Schedule((1, 2), (0.5, 0.5), sim_prune=4))
    stages = record_stages(model)
    with torch.no_grad():
        model(images())
    assert [sizes for _, _, sizes in stages] == [None] * len(stages)


def hand_merge(kept, kept_sizes, others, other_sizes):
    """merge_into_kept written token by token."""
    out, sizes = kept.clone(), kept_sizes.clone()
    for b in range(kept.shape[0]):
        members = {j: [(kept[b, j], kept_sizes[b, j, 0])] for j in range(kept.shape[1])}
        for i in range(others.shape[1]):
            sims = [F.cosine_similarity(others[b, i], kept[b, j], dim=0) for j in range(kept.shape[1])]
            members[int(torch.stack(sims).argmax())].append((others[b, i], other_sizes[b, i, 0]))
        for j, group in members.items():
            total = sum(s for _, s in group)
            out[b, j] = sum(t * s for t, s in group) / total
            sizes[b, j, 0] = total
    return out, sizes


def test_merge_is_the_size_weighted_mean_of_its_members():
    g = torch.Generator().manual_seed(0)
    kept, others = torch.randn(2, 5, 8, generator=g), torch.randn(2, 9, 8, generator=g)
    kept_sizes = torch.randint(1, 4, (2, 5, 1), generator=g).float()
    other_sizes = torch.randint(1, 4, (2, 9, 1), generator=g).float()
    got, got_sizes = merge_into_kept(kept, kept_sizes, others, other_sizes)
    want, want_sizes = hand_merge(kept, kept_sizes, others, other_sizes)
    torch.testing.assert_close(got, want)
    assert torch.equal(got_sizes, want_sizes)
    assert got_sizes.sum() == kept_sizes.sum() + other_sizes.sum()


def test_fuse_is_the_size_weighted_mean_of_everything_left_out():
    g = torch.Generator().manual_seed(1)
    others, sizes = torch.randn(2, 7, 8, generator=g), torch.randint(1, 5, (2, 7, 1), generator=g).float()
    token, size = fuse_tokens(others, sizes)
    for b in range(2):
        want = sum(others[b, i] * sizes[b, i, 0] for i in range(7)) / sizes[b].sum()
        torch.testing.assert_close(token[b, 0], want)
        assert size[b, 0, 0] == sizes[b].sum()


@pytest.mark.parametrize("reducer", ["merge", "fuse"])
def test_the_engine_stage_merges_what_its_heads_left_out(tiny_vit, reducer):
    """One stage by hand from the block output: top-k by the head, the rest merged (or fused) as specified."""
    model = model_for(tiny_vit, "vit", Schedule((1,), (0.25,), reducer=reducer))
    stages = record_stages(model)
    with torch.no_grad():
        model(images())
        x = model.embed(images())
        x = model.vit.blocks[1](model.vit.blocks[0](x))
    patches = x[:, 1:]
    order = model.relevance_scores(1, patches).argsort(dim=1, descending=True)
    kept, others = gather_tokens(patches, order[:, :16]), gather_tokens(patches, order[:, 16:])
    ones = torch.ones(3, 64, 1)
    if reducer == "merge":
        want, want_sizes = hand_merge(kept, ones[:, :16], others, ones[:, 16:])
    else:
        want = torch.cat([kept, others.mean(dim=1, keepdim=True)], dim=1)
        want_sizes = torch.cat([ones[:, :16], torch.full((3, 1, 1), 48.0)], dim=1)
    _, tokens, sizes = stages[0]
    torch.testing.assert_close(tokens[:, 1:], want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tokens[:, :1], x[:, :1])
    assert torch.equal(sizes, want_sizes)


# ----------------------------------------------------------------------------- dense and drop
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reducer", REDUCERS)
@pytest.mark.parametrize("layers", [(1,), (0, 1, 2, 3)])
def test_keep_one_is_the_plain_timm_model(tiny_vit, kind, reducer, layers):
    vit = tiny_vit(kind)
    x = images()
    with torch.no_grad():
        expected = vit(x)
        model = attach_tnt(vit, schedule=Schedule(layers, (1.0,) * len(layers), reducer=reducer)).eval()
        assert torch.equal(model(x), expected)
        traced, trace = model.forward_traced(x)
    assert torch.equal(traced, expected) and trace == []


def reference_drop_logits(model, x: torch.Tensor) -> torch.Tensor:
    """The drop engine as it was before reducers existed: top-k + gather, then similarity pruning."""
    p = model.num_prefix_tokens
    x = model.embed(x)
    stages = model.plan.stage_by_block

    def stage_at(stage, x):
        prefix, patches = x[:, :p], x[:, p:]
        if stage.n_relevance is not None:
            patches = gather_tokens(patches, top_index(model.relevance_scores(stage.block, patches), stage.n_relevance))
        if stage.sim_r:
            part_a, part_b = partition(patches.shape[1], model.schedule.sim_seed)
            patches = gather_tokens(patches, similarity_keep_index(patches, stage.sim_r, part_a, part_b))
        return torch.cat([prefix, patches], dim=1)

    if BEFORE_BLOCKS in stages:
        x = stage_at(stages[BEFORE_BLOCKS], x)
    for i, blk in enumerate(model.vit.blocks):
        x = blk(x)
        if i in stages:
            x = stage_at(stages[i], x)
    return model.vit.forward_head(model.vit.norm(x))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("layers", "keeps", "r"), SHAPES)
def test_drop_is_bit_identical_to_the_engine_before_reducers(tiny_vit, kind, layers, keeps, r):
    model = model_for(tiny_vit, kind, Schedule(layers, keeps, sim_prune=r))
    x = images()
    with torch.no_grad():
        assert torch.equal(model(x), reference_drop_logits(model, x))


@pytest.mark.parametrize("kind", ["vit", "vit_reg_avg"])
def test_merge_and_fuse_change_the_answer_and_keep_the_same_tokens(tiny_vit, kind):
    """Same kept positions as drop (the top-k is shared); logits differ, since left-out tokens now count."""
    x = images()
    results = {}
    for reducer in REDUCERS:
        model = model_for(tiny_vit, kind, Schedule((1,), (0.5,), reducer=reducer))
        with torch.no_grad():
            results[reducer] = model.forward_traced(x)
    drop_kept = results["drop"][1][0].kept_positions
    assert torch.equal(results["merge"][1][0].kept_positions, drop_kept)
    assert torch.equal(results["fuse"][1][0].kept_positions[:, :-1], drop_kept)
    assert (results["fuse"][1][0].kept_positions[:, -1] == -1).all()
    assert not torch.allclose(results["merge"][0], results["drop"][0])
    assert not torch.allclose(results["fuse"][0], results["drop"][0])


def test_avg_pooling_counts_a_token_as_the_patches_it_holds(tiny_vit):
    model = model_for(tiny_vit, "vit_reg_avg", Schedule((1,), (0.5,), reducer="fuse"))
    tokens = torch.randn(2, 4 + 33, 32)
    sizes = torch.cat([torch.ones(2, 32, 1), torch.full((2, 1, 1), 32.0)], dim=1)
    vit = model.vit
    want = vit.head(vit.fc_norm((tokens[:, 4:] * sizes).sum(dim=1) / 64))
    torch.testing.assert_close(model.forward_head(tokens, sizes=sizes), want)
    assert not torch.allclose(model.forward_head(tokens, sizes=sizes), model.forward_head(tokens))


# ----------------------------------------------------------------------------- training pass
@pytest.mark.parametrize("reducer", REDUCERS)
def test_hard_pruning_pass_sends_gradient_through_the_left_out_tokens(tiny_vit, reducer):
    """forward_pruned runs the reducer in training mode: with merge/fuse the tokens the top-k left out still get
    gradient (they are in the merged tokens), with drop they get none."""
    model = attach_tnt(tiny_vit("vit"), schedule=Schedule((1,), (0.5,), reducer=reducer)).train()
    grabbed = {}

    def keep_output(_module, _args, out):
        out.retain_grad()
        grabbed["out"] = out

    model.vit.blocks[1].register_forward_hook(keep_output)
    x = images(2)
    model.forward_pruned(x).logsumexp(dim=-1).sum().backward()
    out = grabbed["out"]
    with torch.no_grad():
        scores = model.relevance_scores(1, out[:, 1:])
    left_out = scores.argsort(dim=1, descending=True)[:, 32:]
    grad = gather_tokens(out.grad[:, 1:], left_out).abs().amax(dim=(1, 2))
    if reducer == "drop":
        assert torch.equal(grad, torch.zeros(2))
    else:
        assert (grad > 0).all()
    assert model.vit.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- cached sweep
@pytest.mark.parametrize("reducer", REDUCERS)
@pytest.mark.parametrize(
    ("layers", "keeps", "r"), [((1,), (0.5,), 0), ((1, 2), (0.5, 0.5), 0), ((1, 2), (0.7, 0.7), 8)]
)
@pytest.mark.parametrize("kind", ["vit", "vit_reg_avg"])
def test_cached_sweep_equals_the_full_forward(tiny_vit, reducer, layers, keeps, r, kind):
    from tnt_cli.eval.cached import dense_states, needed_states, run_from_states
    from tnt_cli.methods.apply import apply_method

    schedule = Schedule(layers, keeps, sim_prune=r, reducer=reducer)
    model = model_for(tiny_vit, kind, Schedule())
    x = images()
    with torch.no_grad(), apply_method(model, "tnt", schedule) as setup:
        expected = model(x)
        got = run_from_states(setup, dense_states(model, x, needed_states(setup)))
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- compile and export
@pytest.mark.slow
@pytest.mark.parametrize("reducer", ["merge", "fuse"])
def test_compiled_reducer_matches_eager(tiny_vit, reducer):
    from torch._inductor import config as inductor_config

    torch._dynamo.reset()
    model = model_for(tiny_vit, "vit_reg_avg", Schedule((1, 2), (0.5, 0.5), reducer=reducer))
    x = images()
    compiled = torch.compile(model, fullgraph=True)
    try:
        with torch.no_grad(), inductor_config.patch(compile_threads=1):
            got = compiled(x)
            expected = model(x)
    finally:
        torch._dynamo.reset()
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("reducer", ["merge", "fuse"])
@pytest.mark.parametrize(("layers", "keeps", "r"), [((1,), (0.5,), 4), ((1, 2), (0.5, 0.5), 0)])
def test_onnx_export_runs_the_reducer_in_onnxruntime(tmp_path, tiny_vit, reducer, layers, keeps, r):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from tnt_cli.export import export_onnx

    model = model_for(tiny_vit, "vit_reg_avg", Schedule(layers, keeps, sim_prune=r, reducer=reducer))
    path = tmp_path / "tiny.onnx"
    report = export_onnx(model, path, dynamic_batch=True)
    assert report.verified and report.max_abs_diff <= 1e-4
    assert report.graph_tokens_per_block == list(model.plan.tokens_per_block)
    assert report.schedule["reducer"] == reducer
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = images(4, seed=7)
    with torch.no_grad():
        expected = model(x).numpy()
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert abs(got - expected).max() < 1e-4


def test_merge_refuses_an_opset_without_scatter_add(tmp_path, tiny_vit):
    pytest.importorskip("onnx")
    from tnt_cli.errors import TntError
    from tnt_cli.export import export_onnx

    model = model_for(tiny_vit, "vit", Schedule((1,), (0.5,), reducer="merge"))
    with pytest.raises(TntError, match="opset 16"):
        export_onnx(model, tmp_path / "m.onnx", opset=14)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("reducer", REDUCERS)
def test_blocks_after_a_merge_get_proportional_attention(tiny_vit, reducer):
    model = model_for(tiny_vit, "vit_reg_avg", Schedule((1,), (0.5,), reducer=reducer))
    masks: dict[int, torch.Tensor | None] = {}
    for i, blk in enumerate(model.vit.blocks):
        blk.register_forward_pre_hook(
            lambda _m, _a, kw, i=i: masks.__setitem__(i, kw.get("attn_mask")), with_kwargs=True
        )
    stages = record_stages(model)
    with torch.no_grad():
        model(images())
    assert masks[0] is None and masks[1] is None  # nothing merged yet
    sizes = stages[0][2]
    if reducer == "drop":
        assert masks[2] is None and masks[3] is None
        return
    want = torch.cat([torch.zeros(3, 4), sizes.squeeze(-1).log()], dim=1)[:, None, None, :]  # 4 registers: size 1
    assert torch.equal(masks[2], want) and torch.equal(masks[3], want)
    assert masks[2].shape == (3, 1, 1, model.plan.tokens_per_block[2])


@pytest.mark.parametrize("reducer", ["merge", "fuse"])
def test_a_bf16_model_keeps_exact_float32_sizes(tiny_vit, reducer):
    model = model_for(tiny_vit, "vit_reg_avg", Schedule((1, 2), (0.5, 0.5), reducer=reducer)).to(torch.bfloat16)
    stages = record_stages(model)
    with torch.no_grad():
        logits = model(images().bfloat16())
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    for _, tokens, sizes in stages:
        assert tokens.dtype == torch.bfloat16 and sizes.dtype == torch.float32
        assert torch.equal(sizes.sum(dim=1).squeeze(-1), torch.full((3,), 64.0))
