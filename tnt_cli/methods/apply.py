"""The methods TNT is compared with, configured at TNT's compute: `apply_method(model, method, schedule)`.

- `tnt`: the relevance heads at `schedule` (prune after each scheduled block).
- `random`: uniform random scores, then exactly TNT's schedule and top-k.
- `evit` / `evit-fuse` (Liang et al. 2022): prune inside the scheduled blocks by class-token attention (MLP on the
  kept tokens only; `-fuse` adds EViT's fused inattentive token); `cls-attn` is accepted as an alias of `evit`.
- `tome` (Bolya et al. 2023): bipartite merging in every block, between attention and MLP.
- `dense`: every token.
The algorithms live in `tnt_cli.eval.methods` (see their docstrings for what is faithful and what is ours).

Compute matching, the same rule everywhere (evaluate, calibrate, benchmark, fine-tuning): every method runs at
the exact GMACs closest to TNT's for `schedule`. random has TNT's token counts (and skips the heads' MACs);
tome takes the per-block r closest in MACs (r in every block, r + 1 in the first m blocks: a constant r
moves DeiT-S in steps of up to 7%); evit takes the kept counts closest in MACs at the schedule's blocks: the
first stage's count is searched over every value, later stages keep TNT's counts scaled by the same factor
(pruning inside the block makes EViT cheaper at equal counts, so it keeps a few more tokens). Ties go to the
cheaper configuration. Every module also runs in training mode with autograd (the hard-pruning pass of
fine-tuning calls `setup.module(images)`), and every reducer keeps static shapes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from tnt_cli.engine import Schedule, TNTModel
from tnt_cli.engine.schedule import BEFORE_BLOCKS, plan_tokens
from tnt_cli.errors import SettingError, TntError
from tnt_cli.eval.methods.blocks import BlockCosts, check_blocks
from tnt_cli.eval.methods.evit import EViT, EvitStage, check_evit, evit_macs, evit_stages
from tnt_cli.eval.methods.random import RandomScorer
from tnt_cli.eval.methods.tome import ToMeViT, match_tome_r, per_block_r, tome_macs
from tnt_cli.method_names import ALIASES, METHODS

__all__ = [
    "ALIASES", "METHODS", "EViT", "MethodSetup", "RandomScorer", "ToMeViT", "apply_method", "check_method",
    "describe_tome", "evit_keep_counts", "has_class_token", "match_tome_r", "method_gmacs", "tome_macs",
]  # fmt: skip


def check_method(method: str) -> str:
    """The canonical name of `method` (aliases resolved), or one line saying what the choices are."""
    method = ALIASES.get(method, method)
    if method not in METHODS:
        raise TntError(f"unknown method {method!r}: choose one of {', '.join(METHODS)} (cls-attn = evit)")
    return method


def has_class_token(model: TNTModel) -> bool:
    return getattr(model.vit, "cls_token", None) is not None


class Pruned(nn.Module):
    """TNT's engine with its schedule's hard pruning in train and eval mode (tnt, random and dense)."""

    def __init__(self, model: TNTModel) -> None:
        super().__init__()
        self.model = model

    @property
    def scorer(self):
        return self.model.scorer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_pruned(x)

    def forward_traced(self, x: torch.Tensor):
        return self.model.forward_traced(x)


@dataclass
class MethodSetup:
    """What `apply_method` configured: the module to call, and its own exact compute."""

    method: str
    module: nn.Module
    schedule: Schedule  # tnt / random: what runs; evit / tome: the TNT schedule whose GMACs they match
    gmacs: float
    model: TNTModel | None = None
    tome_rs: tuple[int, ...] = ()
    evit_stages: tuple[EvitStage, ...] = field(default_factory=tuple)

    @property
    def tome_r(self) -> int:
        """ToMe's r (the per-block list may add one merge in the first blocks, see `tome_rs`)."""
        return min(self.tome_rs) if self.tome_rs else 0

    def begin_batch(self, start: int) -> None:
        """Tell a seeded scorer where this batch starts in the evaluation order (or the training step's start)."""
        scorer = getattr(self.model, "scorer", None)
        if hasattr(scorer, "begin_batch"):
            scorer.begin_batch(start)

    def describe(self) -> str:
        if self.method == "tome":
            return describe_tome(self.tome_rs)
        if self.method in ("evit", "evit-fuse"):
            kept = ", ".join(f"block {s.block} keep {s.keep}/{s.n_in}" for s in self.evit_stages) or "dense"
            return f"{self.method}: {kept}"
        return self.schedule.describe()


def describe_tome(rs: tuple[int, ...]) -> str:
    if not rs:
        return "tome r 0"
    base = min(rs)
    more = [i for i, r in enumerate(rs) if r > base]
    if not more:
        return f"tome r {base}"
    blocks = f"block {more[0]}" if len(more) == 1 else f"blocks {more[0]}-{more[-1]}"
    return f"tome r {base} ({base + 1} in {blocks})"


# --------------------------------------------------------------------------- compute
def _tnt_macs(model: TNTModel, schedule: Schedule) -> int:
    from tnt_cli.engine.gmacs import count_macs

    return count_macs(model.vit, _plan(model, schedule), head_norm=model.head_norm).total


def _plan(model: TNTModel, schedule: Schedule):
    return plan_tokens(schedule, num_patches=model.num_patches, num_prefix=model.num_prefix_tokens, depth=model.depth)


def _random_macs(model: TNTModel, schedule: Schedule) -> int:
    """TNT's count without what count_macs charged for the relevance heads (random scores cost nothing)."""
    plan, dim = _plan(model, schedule), int(model.vit.embed_dim)
    heads = sum(s.n_in * dim * (5 if model.head_norm else 1) for s in plan.stages if s.n_relevance is not None)
    return _tnt_macs(model, schedule) - heads


def evit_keep_counts(model: TNTModel, schedule: Schedule, fuse: bool) -> tuple[EvitStage, ...]:
    """EViT stages at the schedule's blocks whose MACs are closest to TNT's (see the module docstring)."""
    plan = _plan(model, schedule)
    stages = [s for s in plan.stages if s.block != BEFORE_BLOCKS]
    if not stages:
        return ()
    vit, n = model.vit, model.num_patches
    costs, target = BlockCosts(vit), _tnt_macs(model, schedule)
    blocks, counts = [s.block for s in stages], [s.n_out for s in stages]
    best, best_gap, best_macs = (), float("inf"), 0
    for first in range(1, n + 1):
        scale = first / counts[0]
        keeps = [first] + [max(1, round(scale * k)) for k in counts[1:]]
        candidate = evit_stages(n, blocks, keeps, fuse)
        macs = evit_macs(vit, candidate, costs)
        gap = abs(macs - target)
        if gap < best_gap or (gap == best_gap and macs < best_macs):
            best, best_gap, best_macs = candidate, gap, macs
    return best


def _configure(model: TNTModel, method: str, schedule: Schedule, tome_r: int | Sequence[int] | None):
    """(tome_rs, evit stages, exact MACs) of `method` matched to `schedule`."""
    if method == "dense":
        return (), (), _tnt_macs(model, Schedule())
    if method == "tnt":
        return (), (), _tnt_macs(model, schedule)
    if method == "random":
        return (), (), _random_macs(model, schedule)
    if method == "tome":
        check_blocks(model.vit, "tome")
        matched = tome_r is None
        rs = match_tome_r(model.vit, _tnt_macs(model, schedule)) if matched else per_block_r(tome_r, model.depth)
        return rs, (), tome_macs(model.vit, rs)
    check_evit(model.vit, method)
    stages = evit_keep_counts(model, schedule, fuse=method == "evit-fuse")
    return (), stages, evit_macs(model.vit, stages)


def method_gmacs(
    model: TNTModel, method: str, schedule: Schedule | None = None, *, tome_r: int | Sequence[int] | None = None
) -> float:
    """GMACs per image of `method` matched to `schedule` (default: the model's own); tome at `tome_r` if given."""
    method = check_method(method)
    schedule = model.schedule if schedule is None else schedule
    return _configure(model, method, schedule, tome_r)[2] / 1e9


# --------------------------------------------------------------------------- configuration
def make_scorer(method: str, seed: int = 0):
    return RandomScorer(seed) if method == "random" else None


def check_tome_r(tome_r: object, method: str) -> None:
    """Refuse a ToMe merge count for any other method (it would be silently ignored)."""
    if tome_r is not None and method != "tome":
        raise SettingError("{tome_r} applies to {method} tome only (this run uses {method} {name})", name=method)


@contextmanager
def apply_method(
    model: TNTModel,
    method: str,
    schedule: Schedule | None = None,
    *,
    tome_r: int | Sequence[int] | None = None,
    seed: int = 0,
) -> Iterator[MethodSetup]:
    """Configure `model` to run `method` at `schedule`'s compute (default: the model's own schedule).

    The model's scorer and schedule are restored on exit. `setup.module(images)` runs the method in eval and in
    training mode (pruned / merged, with gradients); `setup.gmacs` is its own exact GMACs.
    """
    method = check_method(method)
    check_tome_r(tome_r, method)
    saved_scorer, saved_schedule = model.scorer, model.schedule
    schedule = model.schedule if schedule is None else schedule
    try:
        rs, stages, macs = _configure(model, method, schedule, tome_r)
        if method == "tome":
            module: nn.Module = ToMeViT(model, rs)
        elif method in ("evit", "evit-fuse"):
            module = EViT(model, stages, fuse=method == "evit-fuse")
        else:
            if method == "dense":
                schedule = Schedule()
            model.scorer = make_scorer(method, seed)
            model.set_schedule(schedule)
            module = Pruned(model)
        yield MethodSetup(method, module, schedule, macs / 1e9, model, tuple(rs), tuple(stages))
    finally:
        model.scorer = saved_scorer
        model.set_schedule(saved_schedule)
