"""Pruning schedules and the static token plan they imply.

A schedule says where tokens go; the plan says how many tokens every block sees. Both are plain data so the
engine, the GMACs counter and the CLI agree on one set of numbers.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field, replace

from tnt_cli.errors import ScheduleError
from tnt_cli.parsing import fits_seed
from tnt_cli.recipes import REDUCERS  # drop (the paper), merge or fuse the tokens the top-k does not keep

BEFORE_BLOCKS = -1  # a stage at this "block" runs on the patch embeddings, before block 0


@dataclass(frozen=True)
class Schedule:
    """Where to prune: after each block in `prune_layers`, keep `keep_rates` of the patch tokens.

    `sim_prune` (r) tokens are also dropped by random-partition similarity: with one pruning layer they are
    dropped right after the relevance top-k (which then keeps k + r candidates); with several, before block 0.
    `reducer` says what happens to the tokens the relevance top-k leaves out (one of REDUCERS, see
    engine/reducers.py); similarity pruning always discards (with one pruning layer, the left-out tokens are merged
    into the k tokens that survive both steps; the r similarity-pruned ones are dropped).
    """

    prune_layers: tuple[int, ...] = ()
    keep_rates: tuple[float, ...] = ()
    sim_prune: int = 0
    sim_seed: int = 0
    reducer: str = "drop"
    merge_threshold: float | None = None  # merge only: the least cosine similarity that merges (below: dropped)
    # False: nobody chose the reducer (CLI flags without --reducer), so a model installing this schedule keeps its
    # own reducer and gate (`with_reducer_of`); not part of the schedule's value (equality, dict, text)
    reducer_chosen: bool = field(default=True, compare=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.prune_layers, (str, bytes)) or isinstance(self.keep_rates, (str, bytes)):
            raise ScheduleError("prune layers and keep rates must be lists of numbers, not text")
        object.__setattr__(self, "prune_layers", tuple(_whole(b, "prune layer") for b in self.prune_layers))
        object.__setattr__(self, "keep_rates", tuple(_real(k, "keep rate") for k in self.keep_rates))
        object.__setattr__(self, "sim_prune", _whole(self.sim_prune, "similarity-prune count"))
        object.__setattr__(self, "sim_seed", _whole(self.sim_seed, "similarity-prune seed"))
        if len(self.prune_layers) != len(self.keep_rates):
            raise ScheduleError(
                f"{len(self.prune_layers)} prune layer(s) but {len(self.keep_rates)} keep rate(s): "
                "give one keep rate per prune layer"
            )
        for block, keep in zip(self.prune_layers, self.keep_rates):
            if not (0.0 < keep <= 1.0) or math.isnan(keep):
                raise ScheduleError(f"keep rate {keep:g} at block {block} is outside (0, 1]")
        if any(b < 0 for b in self.prune_layers):
            raise ScheduleError(f"prune layers must be block indices >= 0, got {list(self.prune_layers)}")
        if list(self.prune_layers) != sorted(set(self.prune_layers)):
            raise ScheduleError(f"prune layers must be distinct and increasing, got {list(self.prune_layers)}")
        if self.sim_prune < 0:
            raise ScheduleError(f"similarity-prune count must be >= 0, got {self.sim_prune}")
        if not fits_seed(self.sim_seed):
            raise ScheduleError(f"similarity-prune seed must fit in 64 bits, got {self.sim_seed}")
        if self.reducer not in REDUCERS:
            raise ScheduleError(f"unknown reducer {self.reducer!r}: choose one of {', '.join(REDUCERS)}")
        if self.merge_threshold is not None:
            object.__setattr__(self, "merge_threshold", _real(self.merge_threshold, "merge threshold"))
            if not -1.0 <= self.merge_threshold <= 1.0:
                raise ScheduleError(f"merge threshold {self.merge_threshold:g} is a cosine similarity: in [-1, 1]")
            if self.reducer != "merge":
                raise ScheduleError(f"a merge threshold gates the merge reducer, not {self.reducer}")

    @property
    def is_dense(self) -> bool:
        return self.sim_prune == 0 and all(k == 1.0 for k in self.keep_rates)

    @property
    def sim_before_blocks(self) -> bool:
        """Multi-layer form (and r without any relevance layer): similarity pruning on the patch embeddings."""
        return self.sim_prune > 0 and len(self.prune_layers) != 1

    def with_reducer_of(self, own: Schedule) -> Schedule:
        """This schedule with `own`'s reducer and gate when its own reducer was not chosen (else itself)."""
        if self.reducer_chosen or not self.prune_layers or not own.prune_layers:
            return self
        return replace(self, reducer=own.reducer, merge_threshold=own.merge_threshold, reducer_chosen=True)

    def to_dict(self) -> dict:
        data = {
            "prune_layers": list(self.prune_layers),
            "keep_rates": list(self.keep_rates),
            "sim_prune": self.sim_prune,
            "sim_seed": self.sim_seed,
            "reducer": self.reducer,
        }
        if self.merge_threshold is not None:  # written only when set: ungated files stay as they were
            data["merge_threshold"] = self.merge_threshold
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Schedule:
        try:
            return cls(
                prune_layers=tuple(data.get("prune_layers", ())),
                keep_rates=tuple(data.get("keep_rates", ())),
                sim_prune=data.get("sim_prune", 0),
                sim_seed=data.get("sim_seed", 0),
                reducer=str(data.get("reducer", "drop")),  # files written before reducers existed dropped
                merge_threshold=data.get("merge_threshold"),
            )
        except (TypeError, ValueError, AttributeError) as exc:
            raise ScheduleError(f"malformed schedule {data!r}: {exc}") from None

    def describe(self) -> str:
        if not self.prune_layers and not self.sim_prune:
            return "dense"
        parts = [f"block {b} keep {k:g}" for b, k in zip(self.prune_layers, self.keep_rates)]
        if self.sim_prune:
            parts.append(f"r {self.sim_prune}")
        if self.reducer != "drop" and self.prune_layers:  # drop is the paper's default: old texts stay as they were
            gate = f" >= {self.merge_threshold:g}" if self.merge_threshold is not None else ""
            parts.append(self.reducer + gate)
        return ", ".join(parts)


def _whole(value, what: str) -> int:
    """An int (or an integral float such as 2.0); 1.5, "23", True and None are refused, never truncated."""
    if isinstance(value, (bool, str, bytes)):
        raise ScheduleError(f"{what} must be a whole number, got {value!r}")
    if isinstance(value, float):
        if not value.is_integer():
            raise ScheduleError(f"{what} must be a whole number, got {value!r}")
        return int(value)
    try:
        return operator.index(value)
    except TypeError:
        raise ScheduleError(f"{what} must be a whole number, got {value!r}") from None


def _real(value, what: str) -> float:
    if isinstance(value, (bool, str, bytes)) or value is None:
        raise ScheduleError(f"{what} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ScheduleError(f"{what} must be a number, got {value!r}") from None


def keep_count(n: int, keep: float) -> int:
    """floor(n * keep), robust to float error (0.3 * 10 must be 3, not 2)."""
    return math.floor(n * keep + 1e-9)


@dataclass(frozen=True)
class Stage:
    """One token reduction: after `block` (or before block 0), `n_in` patch tokens become `n_out`.

    `n_relevance` is how many the relevance top-k keeps (None: no relevance step); `sim_r` how many the
    similarity step then drops from those. `reducer` is what happens to the n_in - n_relevance tokens the
    top-k leaves out: dropped, merged into the kept tokens, or fused into one extra token (n_out = kept + 1).
    """

    block: int
    n_in: int
    n_out: int
    n_relevance: int | None = None
    sim_r: int = 0
    reducer: str = "drop"
    merge_threshold: float | None = None

    @property
    def n_reduced(self) -> int:
        """Tokens the top-k leaves out that are merged or fused rather than discarded (0 for drop)."""
        if self.reducer == "drop" or self.n_relevance is None:
            return 0
        return self.n_in - self.n_relevance

    @property
    def n_kept(self) -> int:
        """Tokens that leave the stage as they entered (or with merged tokens added): n_out less a fused token."""
        return self.n_out - (1 if self.reducer == "fuse" and self.n_reduced else 0)


@dataclass(frozen=True)
class TokenPlan:
    """Static token counts for one schedule on one model shape."""

    num_prefix: int
    num_patches: int
    depth: int
    stages: tuple[Stage, ...] = field(default_factory=tuple)

    @property
    def stage_by_block(self) -> dict[int, Stage]:
        return {s.block: s for s in self.stages}

    @property
    def patches_per_block(self) -> tuple[int, ...]:
        """Patch tokens entering each block."""
        by_block = self.stage_by_block
        n = self.num_patches
        if BEFORE_BLOCKS in by_block:
            n = by_block[BEFORE_BLOCKS].n_out
        counts = []
        for i in range(self.depth):
            counts.append(n)
            if i in by_block:
                n = by_block[i].n_out
        return tuple(counts)

    @property
    def tokens_per_block(self) -> tuple[int, ...]:
        """All tokens (prefix first, then patches) entering each block."""
        return tuple(self.num_prefix + n for n in self.patches_per_block)

    @property
    def final_patches(self) -> int:
        return self.stages[-1].n_out if self.stages else self.num_patches


def plan_tokens(schedule: Schedule, *, num_patches: int, num_prefix: int, depth: int) -> TokenPlan:
    """Turn a schedule into static per-stage token counts, refusing schedules that cannot run."""
    for block in schedule.prune_layers:
        if block >= depth:
            raise ScheduleError(f"block {block} is out of range: this model has blocks 0-{depth - 1}")
    r = schedule.sim_prune
    stages: list[Stage] = []
    n = num_patches
    if schedule.sim_before_blocks:
        _check_sim(r, n, where="the patch embeddings")
        stages.append(Stage(block=BEFORE_BLOCKS, n_in=n, n_out=n - r, sim_r=r))
        n -= r
    for block, keep in zip(schedule.prune_layers, schedule.keep_rates):
        k = keep_count(n, keep)
        if k < 1:
            raise ScheduleError(f"keep rate {keep:g} at block {block} leaves no patch token out of {n}")
        if r and not schedule.sim_before_blocks:
            candidates = k + r
            if candidates > n:
                raise ScheduleError(
                    f"block {block}: keeping {k} tokens and similarity-pruning {r} needs {candidates} tokens, "
                    f"but only {n} exist"
                )
            _check_sim(r, candidates, where=f"block {block}")
            fused = int(schedule.reducer == "fuse" and candidates < n)
            stages.append(
                Stage(block=block, n_in=n, n_out=k + fused, n_relevance=candidates, sim_r=r, reducer=schedule.reducer,
                      merge_threshold=schedule.merge_threshold)
            )
            k += fused
        elif k < n:
            fused = int(schedule.reducer == "fuse")
            stages.append(Stage(block=block, n_in=n, n_out=k + fused, n_relevance=k, reducer=schedule.reducer,
                                merge_threshold=schedule.merge_threshold))
            k += fused
        n = k
    return TokenPlan(num_prefix=num_prefix, num_patches=num_patches, depth=depth, stages=tuple(stages))


def _check_sim(r: int, n: int, *, where: str) -> None:
    if r > n // 2:
        raise ScheduleError(
            f"similarity pruning of {r} tokens at {where} needs at least {2 * r} candidate tokens, "
            f"but only {n} exist (r can be at most half of them: {n // 2})"
        )
