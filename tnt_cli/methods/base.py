"""What every method's module gives back, and the budget they are configured at: TNT's exact MACs at a schedule.

A method's `configure(model, schedule, method, *, seed, own)` (named by its registry record) returns a
`Configured`: its own exact MACs at the budget (counted by `tnt_cli.engine.gmacs`'s rule), how reports describe
it, the report fields only it has, and `build()`, which makes the module that runs it. `configure` changes
nothing (so GMACs can be asked for freely); `build` may set the model's scorer and schedule, which `apply_method`
restores afterwards. Every module runs in eval and in training mode (the fine-tuning's pruning pass calls it with
gradients) and can resume from cached dense token states (`states_needed()`, `forward_from_states(states)`: the
calibration sweep's shared dense forward).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from tnt_cli.engine import Schedule, TNTModel
from tnt_cli.engine.gmacs import count_macs
from tnt_cli.engine.schedule import TokenPlan, plan_tokens


@dataclass
class Configured:
    """A method set up at a budget: what it costs, how it is described, and how to make its module."""

    macs: int  # exact MACs per image
    schedule: Schedule  # what the engine runs (tnt, random, dense), else the TNT schedule whose GMACs it matches
    text: str  # how reports describe this configuration: "block 2 keep 0.5", "tome r 3"
    build: Callable[[], nn.Module]  # the module that runs it (may set the model's scorer and schedule)
    details: dict[str, Any] = field(default_factory=dict)  # report fields only this method has (tome_r, evit_keep)
    reduces: bool = True  # False: this configuration runs every token (tome r 0, evit keeping all, dense)
    own: Any = None  # the value of the method's own setting it runs at (ToMe's r per block), if it has one


def token_plan(model: TNTModel, schedule: Schedule) -> TokenPlan:
    """The token counts `schedule` gives on `model`."""
    return plan_tokens(schedule, num_patches=model.num_patches, num_prefix=model.num_prefix_tokens, depth=model.depth)


def reference_macs(model: TNTModel, schedule: Schedule) -> int:
    """The budget: TNT's exact MACs per image at `schedule` (relevance heads included)."""
    return count_macs(model.vit, token_plan(model, schedule), head_norm=model.head_norm).total
