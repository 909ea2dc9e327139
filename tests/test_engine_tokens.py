"""Deployment pruning: token counts per block, prefix tokens, top-k choice and similarity pruning."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from tnt_cli.engine import Schedule, attach_tnt
from tnt_cli.engine.tokens import partition, similarity_keep_index

KINDS = ["vit", "vit_reg_avg", "vit_reg_cls_avg", "deit_distilled"]

# Expected patch tokens entering blocks 0-3 of a 64-patch, 4-block model, worked out by hand:
# floor(n * keep) compounding; single-layer r: top (k + r) then r dropped -> k; multi-layer r: 64 - r first.
SCHEDULES = {
    "single": (Schedule((1,), (0.5,)), [64, 64, 32, 32]),
    "multi": (Schedule((0, 2), (0.7, 0.5)), [64, 44, 44, 22]),
    "single-sim": (Schedule((1,), (0.5,), sim_prune=8), [64, 64, 32, 32]),
    "multi-sim": (Schedule((0, 2), (0.5, 0.5), sim_prune=8), [56, 28, 28, 14]),
    "sim-only": (Schedule(sim_prune=10), [54, 54, 54, 54]),
    "last-block": (Schedule((3,), (0.3,)), [64, 64, 64, 64]),
}


class BlockRecorder:
    """Forward hooks recording every block's input and output."""

    def __init__(self, blocks):
        self.inputs: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []
        self.handles = [b.register_forward_hook(self._hook) for b in blocks]

    def _hook(self, module, args, output):
        self.inputs.append(args[0].detach().clone())
        self.outputs.append(output.detach().clone())

    def remove(self):
        for h in self.handles:
            h.remove()


def run_recorded(model, x):
    rec = BlockRecorder(model.vit.blocks)
    try:
        with torch.no_grad():
            logits, trace = model.forward_traced(x)
    finally:
        rec.remove()
    return logits, trace, rec


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_tokens_per_block_follow_the_schedule(tiny_vit, kind, name):
    schedule, patches = SCHEDULES[name]
    model = attach_tnt(tiny_vit(kind), schedule=schedule).eval()
    p = model.num_prefix_tokens
    logits, _, rec = run_recorded(model, torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10)
    assert [t.shape[1] for t in rec.inputs] == [p + n for n in patches]
    assert list(model.plan.tokens_per_block) == [p + n for n in patches]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["single", "multi", "single-sim", "multi-sim"])
def test_prefix_tokens_are_kept_first_and_patches_are_a_subset(tiny_vit, kind, name):
    schedule, _ = SCHEDULES[name]
    model = attach_tnt(tiny_vit(kind), schedule=schedule).eval()
    p = model.num_prefix_tokens
    _, _, rec = run_recorded(model, torch.randn(2, 3, 32, 32))
    for out, nxt in zip(rec.outputs[:-1], rec.inputs[1:]):
        # the prefix tokens leave block l and enter block l + 1 unchanged, in front
        assert torch.equal(nxt[:, :p], out[:, :p])
        # every patch token entering block l + 1 is one of block l's output patch tokens, none twice
        for b in range(out.shape[0]):
            match = (nxt[b, p:, None, :] == out[b, None, p:, :]).all(-1)  # (n_next, n_out)
            assert (match.sum(1) == 1).all()
            assert (match.sum(0) <= 1).all()


@pytest.mark.parametrize("kind", ["vit", "deit_distilled"])
def test_relevance_pruning_keeps_the_top_scoring_tokens(tiny_vit, kind):
    model = attach_tnt(tiny_vit(kind), schedule=Schedule((1, 2), (0.5, 0.5))).eval()
    for head in model.heads.values():  # spread the scores so the ranking is far from ties
        torch.nn.init.normal_(head.weight, std=1.0)
    p = model.num_prefix_tokens
    _, trace, rec = run_recorded(model, torch.randn(3, 3, 32, 32))
    assert [t.block for t in trace] == [1, 2]
    for stage in trace:
        out = rec.outputs[stage.block][:, p:]
        scores = model.heads[str(stage.block)](F.layer_norm(out, (out.shape[-1],))).squeeze(-1)
        k = rec.inputs[stage.block + 1].shape[1] - p
        best = scores.topk(k, dim=1).indices
        kept = torch.gather(stage.positions_in, 1, best)  # original grid positions of the top-k
        assert torch.equal(kept.sort(1).values, stage.kept_positions.sort(1).values)
        assert torch.allclose(stage.scores, scores)


@pytest.mark.parametrize("kind", ["vit", "deit_distilled"])
@pytest.mark.parametrize("name", ["single-sim", "multi-sim", "sim-only"])
def test_similarity_pruning_does_not_depend_on_the_batch(tiny_vit, kind, name):
    schedule, _ = SCHEDULES[name]
    model = attach_tnt(tiny_vit(kind), schedule=schedule).eval()
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        batch_logits, batch_trace = model.forward_traced(x)
        for i in range(5):
            alone_logits, alone_trace = model.forward_traced(x[i : i + 1])
            torch.testing.assert_close(alone_logits[0], batch_logits[i], atol=1e-5, rtol=0)
            for alone, batched in zip(alone_trace, batch_trace):
                assert torch.equal(alone.kept_positions[0], batched.kept_positions[i])


@pytest.mark.parametrize("name", ["single-sim", "multi-sim"])
def test_similarity_pruning_is_reproducible_with_its_seed(tiny_vit, name):
    schedule, _ = SCHEDULES[name]
    x = torch.randn(5, 3, 32, 32)

    def kept(seed: int, global_seed: int):
        torch.manual_seed(global_seed)  # the global RNG must not matter
        vit = tiny_vit("vit")
        model = attach_tnt(vit, schedule=Schedule(**{**schedule.to_dict(), "sim_seed": seed})).eval()
        with torch.no_grad():
            logits, trace = model.forward_traced(x)
        return logits, trace[-1].kept_positions.sort(1).values

    logits_a, kept_a = kept(seed=0, global_seed=1)
    logits_b, kept_b = kept(seed=0, global_seed=2)
    assert torch.equal(logits_a, logits_b)
    assert torch.equal(kept_a, kept_b)
    logits_c, kept_c = kept(seed=1, global_seed=1)
    assert not torch.equal(kept_a, kept_c)  # another partition drops other tokens on at least one image
    assert not torch.equal(logits_a, logits_c)


def test_similarity_pruning_drops_the_most_redundant_tokens():
    """Tokens of half A that duplicate a token of half B are the redundant ones: with r = 4 duplicates, all go."""
    a_half, b_half = partition(64, seed=0)
    assert sorted(torch.cat([a_half, b_half]).tolist()) == list(range(64))
    tokens = torch.randn(1, 64, 32)
    tokens[:, a_half[:4]] = tokens[:, b_half[:4]] * 2.0  # cosine similarity exactly 1
    keep = similarity_keep_index(tokens, 4, a_half, b_half)
    assert keep.shape == (1, 60)
    assert not set(a_half[:4].tolist()) & set(keep[0].tolist())
    assert set(b_half.tolist()) <= set(keep[0].tolist())


def test_copies_of_a_model_prune_identically(tiny_vit):
    model = attach_tnt(tiny_vit("deit_distilled"), schedule=Schedule((1,), (0.6,), sim_prune=5)).eval()
    twin = copy.deepcopy(model)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), twin(x))
        assert torch.equal(model(x), model(x))
