"""Schedule sweeps for `tnt calibrate`: grids, one cached pass over the data, and optional speed timing.

Batches are the outer loop and configurations the inner one, so memory stays at one batch of cached dense
states: the embeddings and blocks before each first pruning block run once per batch, whatever the grid size.
Speed is timed as `tnt benchmark` times it (`tnt_cli.methods.timing`): alternating with the plain timm model,
the order reversed every other round, the median kept.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch

from tnt_cli.engine import Schedule, TNTModel
from tnt_cli.errors import ScheduleError, SettingError, TntError
from tnt_cli.eval.cached import dense_states, needed_states, run_from_states
from tnt_cli.eval.grid import AUTO_SIM
from tnt_cli.methods.accuracy import Accumulator
from tnt_cli.methods.apply import apply_method, configure, dense_gmacs
from tnt_cli.methods.registry import DENSE, REDUCING_METHODS, REFERENCE, alias_note, canonical, lookup
from tnt_cli.methods.timing import make_input, summarize, time_alternating
from tnt_cli.methods.tome import describe_tome


@dataclass
class SweepPoint:
    """One configuration of the sweep and, once measured, its numbers."""

    method: str
    schedule: Schedule = field(default_factory=Schedule)
    tome_r: tuple[int, ...] | None = None  # ToMe's r per block: the setting of its own ToMe is swept by
    gmacs: float = 0.0
    top1: float | None = None
    top5: float | None = None
    loss: float | None = None
    images: int = 0
    images_per_s: float | None = None
    speedup: float | None = None
    pareto: bool = False
    chosen: bool = False

    @property
    def group(self) -> str:
        """Dense is the zero-pruning end of TNT's curve: it shares TNT's Pareto front and selection."""
        return self.method if lookup(self.method).reduces else REFERENCE

    def describe(self) -> str:
        if self.tome_r is not None:
            return describe_tome(self.tome_r)
        return self.schedule.describe()

    def row(self) -> dict:
        return {
            "method": self.method,
            "schedule": self.describe(),
            "prune_layers": " ".join(map(str, self.schedule.prune_layers)),
            "keep_rates": " ".join(f"{k:g}" for k in self.schedule.keep_rates),
            "sim_prune": self.schedule.sim_prune,
            "tome_r": "" if self.tome_r is None else " ".join(map(str, self.tome_r)),
            "gmacs": repr(self.gmacs),  # exact: Pareto flags must be checkable from the file
            "top1": "" if self.top1 is None else repr(self.top1),
            "top5": "" if self.top5 is None else repr(self.top5),
            "loss": "" if self.loss is None else repr(self.loss),
            "images": self.images,
            "images_per_s": "" if self.images_per_s is None else f"{self.images_per_s:.2f}",
            "speedup": "" if self.speedup is None else f"{self.speedup:.4f}",
            "pareto": int(self.pareto),
            "chosen": int(self.chosen),
        }


def resolve_sim_grid(model: TNTModel, sims: Sequence[int | str]) -> tuple[int, ...]:
    """The grid's counts with 'auto' replaced by this model's `auto_sim_prune`, duplicates dropped."""
    auto = auto_sim_prune(model)
    return tuple(dict.fromkeys(auto if v == AUTO_SIM else int(v) for v in sims))


def default_layer_grid(model: TNTModel) -> list[tuple[int, ...]]:
    """Every block with a relevance head, except the last block (pruning after it saves nothing)."""
    return [(b,) for b in model.head_blocks if b < model.depth - 1]


def auto_sim_prune(model: TNTModel) -> int:
    """A similarity-prune count of about 1/8 of the patches (25 of 196 on a 224 / 16 ViT, as in the paper)."""
    return max(1, int(model.num_patches / 8 + 0.5))


def grid_reducer(chosen: str | None, own: Schedule) -> tuple[str, float | None]:
    """The reducer (and merge gate) a sweep uses: the one chosen, else the model's own (what it was fine-tuned
    with), else drop."""
    if chosen is not None:
        return chosen, None
    if own.prune_layers:
        return own.reducer, own.merge_threshold
    return "drop", None


def build_grid(
    model: TNTModel,
    layers: Sequence[tuple[int, ...]],
    keep_rates: Sequence[float],
    sim_counts: Sequence[int],
    *,
    sim_seed: int = 0,
    reducer: str = "drop",
    merge_threshold: float | None = None,
) -> tuple[list[Schedule], int]:
    """Every valid schedule in layers x keep rates x r (one keep rate at every layer, one reducer); and how many
    were invalid."""
    from tnt_cli.engine.schedule import plan_tokens

    if not layers or not keep_rates or not sim_counts:
        raise TntError("the schedule grid is empty: give at least one prune layer, keep rate and r")
    for blocks in layers:
        for block in blocks:
            if not 0 <= block < model.depth:
                raise TntError(
                    f"block {block} in the layer grid is out of range: this model has blocks 0-{model.depth - 1}"
                )
    schedules, invalid, seen = [], 0, set()
    for blocks in layers:
        for keep in keep_rates:
            for r in sim_counts:
                try:
                    schedule = Schedule(blocks, (keep,) * len(blocks), sim_prune=r, sim_seed=sim_seed, reducer=reducer,
                                        merge_threshold=merge_threshold)  # fmt: skip
                    plan = plan_tokens(
                        schedule, num_patches=model.num_patches, num_prefix=model.num_prefix_tokens, depth=model.depth
                    )
                except ScheduleError:
                    invalid += 1
                    continue
                key = (plan.stages, schedule.sim_seed)
                if not plan.stages or key in seen:  # dense is measured once; equal plans once
                    continue
                seen.add(key)
                schedules.append(schedule)
    return schedules, invalid


def build_points(
    model: TNTModel, schedules: Sequence[Schedule], methods: Sequence[str], *, heads_usable: bool
) -> list[SweepPoint]:
    """Dense, then each method over the schedules at matched GMACs (a method configured by a setting of its own,
    like ToMe's r, once per distinct configuration)."""
    methods = [canonical(m) for m in methods]
    for name in methods:
        if name not in REDUCING_METHODS:
            raise SettingError(
                "unknown method {name!r} in {methods}: choose from {choices}{aliases}",
                name=name,
                choices=", ".join(REDUCING_METHODS),
                aliases=alias_note(REDUCING_METHODS),
            )
    if any(lookup(name).uses_heads for name in methods):
        missing = sorted({b for s in schedules for b in s.prune_layers if str(b) not in model.heads})
        if missing:
            have = ", ".join(map(str, model.head_blocks)) or "none"
            raise SettingError(
                "no relevance head at block {block} (heads at blocks {have}): change {grid_layers}",
                block=missing[0],
                have=have,
            )
        if not heads_usable:
            raise TntError("this model's relevance heads are untrained: fine-tune it first or sweep baselines only")
    points = [SweepPoint(DENSE, Schedule(), gmacs=dense_gmacs(model))]
    for name in methods:
        own_setting = lookup(name).own_setting
        if own_setting is None:
            points += [SweepPoint(name, s, gmacs=configure(model, name, s)[1].macs / 1e9) for s in schedules]
            continue
        found = {}  # the configuration each schedule's GMACs give, each distinct one once
        for s in schedules:
            configured = configure(model, name, s)[1]
            if configured.reduces:
                found.setdefault(configured.own, configured)
        points += [
            SweepPoint(name, Schedule(), gmacs=found[own].macs / 1e9, **{own_setting: own})
            for own in sorted(found, key=lambda own: (sum(own), own))
        ]
    return points


def run_sweep(
    model: TNTModel,
    points: Sequence[SweepPoint],
    loader: Iterable,
    *,
    device: torch.device,
    limit: int | None = None,
    seed: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> None:
    """Measure top-1 / top-5 / loss of every point on the same images, filling the points in place."""
    model.eval().to(device)
    states_for = []
    for point in points:
        with _configured(model, point, seed) as setup:
            states_for.append(needed_states(setup))
    keep = set().union(*states_for)
    accs = [Accumulator() for _ in points]
    seen = 0
    with torch.inference_mode():
        for images, labels in loader:
            if limit is not None and seen >= limit:
                break
            if limit is not None and seen + len(labels) > limit:
                images, labels = images[: limit - seen], labels[: limit - seen]
            images = images.to(device)
            states = dense_states(model, images, keep)
            for point, acc in zip(points, accs):
                with _configured(model, point, seed) as setup:
                    setup.begin_batch(seen)
                    acc.add(run_from_states(setup, states), labels)
            seen += len(labels)
            if on_batch is not None:
                on_batch(len(labels))
    for point, acc in zip(points, accs):
        result = acc.result()
        point.top1, point.top5, point.loss, point.images = result["top1"], result["top5"], result["loss"], acc.images


def measure_speed(
    model: TNTModel,
    points: Sequence[SweepPoint],
    *,
    device: torch.device,
    batch_size: int = 32,
    rounds: int = 5,
    min_seconds: float = 0.05,
    seed: int = 0,
    on_point: Callable[[], None] | None = None,
) -> None:
    """Images/s of each point and its speedup over dense, timed as `tnt benchmark` times them.

    Dense is the plain timm model (what you would deploy without TNT, `tnt benchmark`'s dense). Each point is timed
    alternately with it on the same batch, the order reversed every other round, after one warm-up round; the
    median over `rounds` is kept. Each timing repeats the forward enough times to last about `min_seconds` (so
    tiny models are not timer noise).
    """
    device_name = str(device)
    images = make_input(model.vit, batch_size, device=device_name, seed=seed)
    dense = next(p for p in points if p.method == DENSE)
    model.eval().to(device)
    timm_dense = model.vit
    with torch.inference_mode():
        once = time_alternating({DENSE: timm_dense}, images, device=device_name, warmup=0, iters=1)[DENSE][0]
        repeat = max(1, math.ceil(min_seconds / max(once, 1e-6)))
        for point in points:
            variants = {DENSE: timm_dense}
            with _configured(model, point, seed) as setup:
                if point is not dense:
                    variants[point.method] = setup.module
                times = time_alternating(variants, images, device=device_name, warmup=1, iters=rounds, repeat=repeat)
            mine = times[point.method]
            point.images_per_s = summarize(mine, batch_size)["images_per_s"]
            point.speedup = statistics.median(times[DENSE]) / statistics.median(mine)
            if on_point is not None:
                on_point()


def _configured(model: TNTModel, point: SweepPoint, seed: int):
    return apply_method(model, point.method, point.schedule, tome_r=point.tome_r, seed=seed)
