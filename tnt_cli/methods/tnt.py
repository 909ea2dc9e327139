"""TNT (the reference) and dense, run by the engine itself: the relevance heads rank the tokens at the schedule.

`Pruned` calls `TNTModel.forward_pruned`, so the schedule's hard pruning and reducer run in eval and in training
mode; `dense` is the same module with the empty schedule. `tnt_cli.methods.random` reuses it with its own scorer.
"""

from __future__ import annotations

import torch
from torch import nn

from tnt_cli.engine import Schedule, TNTModel
from tnt_cli.engine.schedule import BEFORE_BLOCKS
from tnt_cli.methods.base import Configured, reference_macs
from tnt_cli.methods.registry import Method


class Pruned(nn.Module):
    """TNT's engine with its schedule's hard pruning in train and eval mode (tnt, random and dense)."""

    def __init__(self, model: TNTModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_pruned(x)

    def forward_traced(self, x: torch.Tensor):
        return self.model.forward_traced(x)

    def start_state(self) -> int:
        """The earliest cached dense state the schedule needs: the input of its first pruning block."""
        model = self.model
        stages = model.plan.stages
        if not stages:
            return model.depth
        first = stages[0].block
        return 0 if first == BEFORE_BLOCKS else first

    def states_needed(self) -> set[int]:
        """The input of the first pruning block and that block's output (the stage scores both)."""
        start, model = self.start_state(), self.model
        if start == model.depth or model.plan.stages[0].block == BEFORE_BLOCKS:
            return {start}
        return {start, start + 1}

    def forward_from_states(self, states: dict[int, torch.Tensor]) -> torch.Tensor:
        """Logits resumed from cached dense states, with the same stage code as `TNTModel.forward`."""
        model = self.model
        start = self.start_state()
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


def run_schedule(model: TNTModel, schedule: Schedule, macs: int, make_scorer=lambda: None) -> Configured:
    """The engine at `schedule`, its tokens ranked by `make_scorer()` (None: the relevance heads)."""

    def build() -> Pruned:
        model.scorer = make_scorer()
        model.set_schedule(schedule)
        return Pruned(model)

    return Configured(macs, schedule, schedule.describe(), build, reduces=not schedule.is_dense)


def configure(model: TNTModel, schedule: Schedule, method: Method, *, seed: int = 0, own=None) -> Configured:
    """TNT: the relevance heads at `schedule` (prune after each scheduled block)."""
    return run_schedule(model, schedule, reference_macs(model, schedule))


def configure_dense(model: TNTModel, schedule: Schedule, method: Method, *, seed: int = 0, own=None) -> Configured:
    """Every token (`schedule` is ignored)."""
    dense = Schedule()
    return run_schedule(model, dense, reference_macs(model, dense))
