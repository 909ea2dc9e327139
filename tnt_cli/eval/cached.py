"""Re-use the dense forward across a sweep: a schedule whose first stage is after block l runs blocks 0..l once.

`dense_states` runs the embeddings and the first blocks once per batch and keeps the token states (the input of
block i is state i; state `depth` is the last block's output) that the configured methods need. `run_from_states`
resumes a configured method from there (each method's module knows which states it needs and how to resume:
`states_needed`, `forward_from_states`), so its logits equal a full forward.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from tnt_cli.engine import TNTModel
    from tnt_cli.methods.apply import MethodSetup


def needed_states(setup: MethodSetup) -> set[int]:
    """States to keep for `setup` (e.g. the input of its first pruning block and that block's output)."""
    return setup.module.states_needed()


def dense_states(model: TNTModel, images: torch.Tensor, keep: set[int]) -> dict[int, torch.Tensor]:
    """Token states `keep` from one dense pass that stops at the last state anybody needs."""
    x = model.embed(images)
    states = {0: x} if 0 in keep else {}
    last = max(keep) if keep else 0
    for i in range(min(last, model.depth)):
        x = model.vit.blocks[i](x)
        if i + 1 in keep:
            states[i + 1] = x
    return states


def run_from_states(setup: MethodSetup, states: dict[int, torch.Tensor]) -> torch.Tensor:
    """Logits of a configured method, resumed from cached dense states."""
    return setup.module.forward_from_states(states)
