"""torch.compile of a pruned TNT model: one graph, same logits as eager (tiny model, CPU)."""

from __future__ import annotations

import pytest
import torch

from tnt_cli.engine import Schedule, attach_tnt


@pytest.mark.slow
def test_compiled_pruned_model_matches_eager(tiny_vit):
    from torch._inductor import config as inductor_config

    torch._dynamo.reset()
    # relevance top-k and similarity pruning in one model; a distilled DeiT to cover two prefix tokens
    schedule = Schedule((1,), (0.5,), sim_prune=8)
    model = attach_tnt(tiny_vit("deit_distilled", depth=2), schedule=schedule).eval()
    x = torch.randn(3, 3, 32, 32)
    # fullgraph: static token counts mean no graph breaks, even on a fresh model (nothing cached by eager runs)
    compiled = torch.compile(model, fullgraph=True)
    try:
        with torch.no_grad(), inductor_config.patch(compile_threads=1):  # no worker pool to start on a small CPU
            got = compiled(x)
            expected = model(x)
    finally:
        torch._dynamo.reset()
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    _, trace = model.forward_traced(x)
    assert trace[0].kept_positions.shape == (3, 32)
