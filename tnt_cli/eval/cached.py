"""Re-use the dense forward across a sweep: a schedule whose first stage is after block l runs blocks 0..l once.

`dense_states` runs the embeddings and the first blocks once per batch and keeps the token states (the input of
block i is state i; state `depth` is the last block's output) that the schedules need. `run_from_states` resumes
a configured method from there with the same stage code as `TNTModel.forward`, so its logits equal a full forward.
ToMe changes every block (it starts at state 0); EViT starts at the input of its first pruning block.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from tnt_cli.engine.schedule import BEFORE_BLOCKS

_OWN_FORWARD = ("tome", "evit", "evit-fuse")  # methods with their own block loop (`module.forward_from`)

if TYPE_CHECKING:
    from tnt_cli.engine import TNTModel
    from tnt_cli.eval.baselines import MethodSetup


def start_state(setup: MethodSetup) -> int:
    """The earliest cached state a configured method needs: its first stage's block (0 for tome, depth for dense)."""
    model = _model(setup)
    if setup.method == "tome":
        return 0
    if setup.method in ("evit", "evit-fuse"):
        return setup.module.first_block
    stages = model.plan.stages
    if not stages:
        return model.depth
    first = stages[0].block
    return 0 if first == BEFORE_BLOCKS else first


def needed_states(setup: MethodSetup) -> set[int]:
    """States to keep for `setup`: the input of its first pruning block and that block's output."""
    start = start_state(setup)
    model = _model(setup)
    if setup.method in _OWN_FORWARD or start == model.depth or model.plan.stages[0].block == BEFORE_BLOCKS:
        return {start}
    return {start, start + 1}


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


def run_from_states(setup: MethodSetup, states: dict[int, torch.Tensor], start: int | None = None) -> torch.Tensor:
    """Logits of a configured method, resumed from cached dense states."""
    model = _model(setup)
    start = start_state(setup) if start is None else start
    if setup.method in _OWN_FORWARD:
        return setup.module.forward_from(states[start], start)
    plan = model.plan
    stages = plan.stage_by_block
    for stage in plan.stages:
        if stage.block != BEFORE_BLOCKS and stage.block < start:
            raise ValueError(f"cannot resume at block {start}: the schedule prunes after block {stage.block}")
    x = states[start]
    first_block, sizes = start, None
    if BEFORE_BLOCKS in stages:
        x, _, sizes = model.apply_stage(stages[BEFORE_BLOCKS], x, x)
    elif start in stages:  # the first pruning block already ran in the dense pass
        x, _, sizes = model.apply_stage(stages[start], states[start + 1], states[start])
        first_block = start + 1
    x, sizes = model.run_blocks(x, first_block, plan=plan, sizes=sizes)  # merge/fuse sizes carry on from here
    return model.forward_head(model.vit.norm(x), sizes=sizes)


def _model(setup: MethodSetup) -> TNTModel:
    return setup.model if setup.model is not None else setup.module.model
