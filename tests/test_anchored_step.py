"""The anchored TNT step and what it trains with: rank relevance, the gated merge, progressive pruning passes."""

from __future__ import annotations

import pytest
import torch
from _helpers import FMNIST, tiny_vit

from tnt_cli.engine import NoiseConfig, Schedule, attach_tnt
from tnt_cli.engine.noise import rank_alpha
from tnt_cli.engine.reducers import merge_into_kept
from tnt_cli.train.task import LOSS_PARTS, LossSettings, PruningPass, PruningTask, progressive


def settings(**overrides) -> LossSettings:
    values = dict(method="tnt", rate_weight=0.0, distill=False, distill_weight=1.0, distill_temp=1.0, drop_weight=1.0,
                  noise_trains_backbone=True, anchor=True, heads_fraction=0.5)  # fmt: skip
    return LossSettings(**{**values, **overrides})


def anchored_model(relevance: str = "rank"):
    torch.manual_seed(0)
    noise = NoiseConfig(blocks=(1,), sigma0=1.0, relevance=relevance)
    return attach_tnt(tiny_vit(shape=FMNIST, seed=1), (1,), noise=noise).train()


# ----------------------------------------------------------------------------- rank relevance
@pytest.mark.parametrize("keep", [0.15, 0.3, 0.5, 0.7])
def test_rank_alpha_keeps_exactly_the_top_k_above_one_half(keep):
    scores = torch.randn(5, 16, generator=torch.Generator().manual_seed(1))
    alpha = rank_alpha(scores, keep)
    k = int(16 * keep)
    above = alpha > 0.5
    assert torch.equal(above.sum(dim=-1), torch.full((5,), k))
    assert torch.equal(above, scores >= scores.topk(k, dim=-1).values[:, -1:])  # the tokens top-k keeps


def test_rank_alpha_ignores_the_scores_scale_so_heads_cannot_saturate_it():
    scores = torch.randn(3, 16, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(rank_alpha(scores, 0.3), rank_alpha(100.0 * scores + 7.0, 0.3), atol=1e-4)


def test_rank_alpha_passes_gradient_to_every_score_at_every_keep_rate():
    for keep in (0.15, 0.5, 0.7):
        scores = torch.randn(2, 16, generator=torch.Generator().manual_seed(3), requires_grad=True)
        (rank_alpha(scores, keep) * torch.arange(16.0)).sum().backward()
        assert scores.grad is not None and (scores.grad.abs() > 0).all()


def test_rank_alpha_at_keep_one_keeps_every_token_mostly_clean():
    alpha = rank_alpha(torch.randn(2, 16, generator=torch.Generator().manual_seed(4)), 1.0)
    assert (alpha > 0.5).all()


# ----------------------------------------------------------------------------- gated merge
def _tokens():
    gen = torch.Generator().manual_seed(5)
    kept, others = torch.randn(2, 4, 8, generator=gen), torch.randn(2, 6, 8, generator=gen)
    return kept, torch.ones(2, 4, 1), others, torch.ones(2, 6, 1)


def test_gated_merge_below_every_similarity_is_the_ungated_merge():
    kept, ks, others, os_ = _tokens()
    ungated = merge_into_kept(kept, ks, others, os_)
    gated = merge_into_kept(kept, ks, others, os_, threshold=-1.0)
    assert all(torch.equal(a, b) for a, b in zip(ungated, gated))


def test_gated_merge_above_every_similarity_drops_every_left_out_token():
    kept, ks, others, os_ = _tokens()
    merged, sizes = merge_into_kept(kept, ks, others, os_, threshold=1.01)
    assert torch.allclose(merged, kept) and torch.equal(sizes, ks)


def test_gated_merge_moves_only_the_tokens_close_enough():
    kept, ks, others, os_ = _tokens()
    others[:, 0] = kept[:, 2] + 1e-3  # one left-out token almost equal to kept token 2; the rest random
    merged, sizes = merge_into_kept(kept, ks, others, os_, threshold=0.99)
    assert torch.equal(sizes[:, 2, 0], torch.full((2,), 2.0)) and sizes.sum() == 2 * 4 + 2
    assert torch.allclose(merged[:, 2], (kept[:, 2] + others[:, 0]) / 2)


# ----------------------------------------------------------------------------- the anchored step
def test_anchored_step_reports_its_loss_parts():
    model = anchored_model()
    task = PruningTask(model, torch.nn.CrossEntropyLoss(), settings())
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    out = task(x, y, Schedule((1,), (0.5,)))
    assert set(out) == {"loss", "task", "pruned", "heads"} and set(out) - {"loss"} <= set(LOSS_PARTS)
    assert torch.allclose(out["loss"].detach(), out["task"] + out["pruned"] + out["heads"])


def test_anchored_step_noise_trains_the_heads_and_never_the_backbone():
    """The backbone's gradient is the dense pass's alone (the heads' noisy pass is detached from it), and the
    heads' gradient comes from the noisy pass (the dense pass does not use them)."""
    model = anchored_model()
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    task = PruningTask(model, torch.nn.CrossEntropyLoss(), settings(drop_weight=0.0, noise_blocks=(1,)))
    model.zero_grad(set_to_none=True)
    task(x, y)["loss"].backward()
    anchored = {n: p.grad.clone() for n, p in model.vit.named_parameters()}
    heads = [p.grad for p in model.heads.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in heads)

    model.zero_grad(set_to_none=True)
    logits, _ = model.forward_dense(x)
    torch.nn.functional.cross_entropy(logits, y).backward()
    assert all(torch.allclose(anchored[n], p.grad, atol=1e-6) for n, p in model.vit.named_parameters())
    assert all(p.grad is None for p in model.heads.parameters())


def test_anchored_step_runs_the_heads_pass_on_a_fraction_of_the_batch():
    model = anchored_model()
    seen = []
    original = model.forward_noisy_from
    model.forward_noisy_from = lambda x, start, keeps: seen.append(x.shape[0]) or original(x, start, keeps)
    task = PruningTask(model, torch.nn.CrossEntropyLoss(), settings(heads_fraction=0.25))
    task(torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,)), Schedule((1,), (0.5,)))
    assert seen == [2]


# ----------------------------------------------------------------------------- progressive pruning passes
def test_progressive_pass_keeps_the_drawn_rate_in_equal_steps():
    schedule = progressive((1, 3), 0.49)
    assert schedule.prune_layers == (1, 3) and schedule.keep_rates == (0.7, 0.7)
    assert progressive((1,), 0.3).keep_rates == (0.3,)
    drawn = PruningPass((1, 3), (0.5,), "merge", 0.5).schedule(seed=0, step=1, micro=0)
    assert drawn.reducer == "merge" and drawn.merge_threshold == 0.5 and drawn.prune_layers == (1, 3)


def test_anchored_step_noises_each_stage_of_a_progressive_pass_at_the_share_left_after_it():
    model = attach_tnt(tiny_vit(shape=FMNIST, seed=1), (1, 3), noise=NoiseConfig(blocks=(1, 3), relevance="rank"))
    task = PruningTask(model.train(), torch.nn.CrossEntropyLoss(), settings())
    assert task._noise_keeps(progressive((1, 3), 0.49)) == pytest.approx({1: 0.7, 3: 0.49})


def test_a_run_logs_its_loss_parts_and_shows_them(base, tmp_path):
    """metrics.jsonl records each logged step's loss parts (they add up to the loss) and the progress line shows
    them."""
    import json

    from _helpers import run_cli

    out = tmp_path / "run"
    result = run_cli("finetune", base, "--out", out, "--data", "fashion-mnist", "--crop-scale", "0.6,1", "--max-steps",
                     "2", "--batch-size", "8", "--limit", "32", "--eval-limit", "0", "--log-every", "1")  # fmt: skip
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if "loss_parts" in r]
    assert len(logged) == 2
    for r in logged:
        assert {"task", "distill", "pruned", "heads"} <= set(r["loss_parts"]) <= set(LOSS_PARTS)
        assert sum(r["loss_parts"].values()) == pytest.approx(r["loss"], rel=1e-4)
    assert "pruned" in result.output and "heads" in result.output
