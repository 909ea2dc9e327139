"""Methods side by side at matched compute: the question `tnt compare` (and the study) answers.

Each entry is a model with the method it runs (a fine-tuned directory's own method, or several methods on one
model). At every schedule, each entry runs at the GMACs closest to TNT's at that schedule (`apply_method`'s
matching rule, the one `tnt evaluate` uses), on the same images; every row records the GMACs it ran at, so a
reader can check the match (`within` is the largest relative gap to TNT's GMACs).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from tnt_cli.errors import SettingError, TntError
from tnt_cli.methods.registry import DENSE, REFERENCE, lookup
from tnt_cli.settings import default_of

if TYPE_CHECKING:
    from tnt_cli.engine import Schedule, TNTModel

# `tnt compare`'s defaults (its other settings take the shared ones): torch-free, so the CLI reads them here
KEEPS, BLOCK, BATCH_SIZE = (0.7, 0.5, 0.3), 1, 256
# With a GMACs budget: the keep rates searched, and how far over the budget a schedule may run (the matching rule's
# 2%: GMACs within 2% count as the same compute)
BUDGET_KEEPS = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)
BUDGET_TOLERANCE = 0.02


@dataclass
class Entry:
    """One competitor: a label for tables, the model, and the method it runs."""

    label: str
    model: TNTModel
    method: str
    reducer: str = "drop"  # a method that takes one (tnt): the schedule's reducer (what happens to the tokens left out)
    merge_threshold: float | None = None  # tnt with the merge reducer: its gate (None: every token merges)


def compare(
    entries: Iterable[Entry],
    loader,
    schedules: Iterable[Schedule],
    *,
    device=None,
    seed: int = 0,
    on_row: Callable[[dict], None] | None = None,
    skip: Callable[[Entry, Schedule], bool] | None = None,
    max_gmacs: float | None = None,
) -> list[dict]:
    """Evaluate every entry at every schedule; one row each (top-1/top-5 as fractions, GMACs, TNT's GMACs).
    With `max_gmacs`, schedules at which TNT costs more are not evaluated (every method is matched to TNT)."""
    from tnt_cli.methods.accuracy import evaluate_model
    from tnt_cli.methods.apply import apply_method

    rows = []
    schedules = list(schedules)
    for entry in entries:
        for schedule in schedules:
            if skip is not None and skip(entry, schedule):
                continue
            takes_reducer = lookup(entry.method).takes_reducer
            run = _with_reducer(schedule, entry.reducer, entry.merge_threshold) if takes_reducer else schedule
            with apply_method(entry.model, REFERENCE, run) as reference:  # heads need not be trained to count MACs
                gmacs_tnt = reference.gmacs
            if max_gmacs is not None and gmacs_tnt > max_gmacs:
                continue
            method = DENSE if schedule.is_dense else entry.method
            with apply_method(entry.model, method, run, seed=seed) as setup:
                result = evaluate_model(setup.module, loader, device=device or "cpu", progress=False,
                                        on_batch=setup.begin_batch)  # fmt: skip
                row = {
                    "label": entry.label,
                    "method": entry.method,
                    "reducer": entry.reducer if takes_reducer else None,
                    "schedule": run.to_dict(),
                    "schedule_text": "dense" if schedule.is_dense else schedule.describe(),
                    "top1": result["top1"],
                    "top5": result["top5"],
                    "images": result["images"],
                    "gmacs": setup.gmacs,
                    "gmacs_tnt": gmacs_tnt,
                }
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return rows


def load_entries(specs: Sequence[str], methods: Sequence[str] | None = None) -> list[Entry]:
    """One entry per MODEL running its own method (what it was fine-tuned for), or one per MODEL and method."""
    from tnt_cli.io.sources import load_model
    from tnt_cli.methods.loading import own_method

    wanted = [lookup(m).name for m in methods] if methods else None
    entries: list[Entry] = []
    for spec in specs:
        loaded = load_model(spec, require_trained_heads=False)
        own = own_method(loaded)
        own_schedule = loaded.model.schedule
        reducer, threshold = own_schedule.reducer, own_schedule.merge_threshold
        for method in wanted or [own]:
            record = lookup(method)
            if record.uses_heads and not loaded.heads_usable:
                raise TntError(
                    f"{spec} has no trained relevance heads: TNT cannot rank its tokens (its method is {own}); "
                    "fine-tune it with `tnt finetune --method tnt`"
                )
            label = spec if len(wanted or [own]) == 1 else f"{spec} [{method}]"
            own_reducer = record.takes_reducer
            entries.append(Entry(label, loaded.model, method, reducer if own_reducer else "drop",
                                 threshold if own_reducer else None))  # fmt: skip
    return entries


def keep_schedules(block: int, keeps: Iterable[float]) -> list[Schedule]:
    """Dense, then one single-stage schedule per keep rate after (for EViT: inside) `block`."""
    from tnt_cli.engine import Schedule

    return [Schedule()] + [Schedule((block,), (k,)) for k in keeps]


def candidate_schedules(block: int, keeps: Iterable[float], progressive: Sequence[int] = ()) -> list[Schedule]:
    """`keep_schedules`, plus with `progressive` blocks one multi-stage schedule per keep rate: that keep rate after
    each of those blocks (the form the default recipe trains: heads after blocks 1 and 3)."""
    from tnt_cli.engine import Schedule

    keeps = list(keeps)
    schedules = keep_schedules(block, keeps)
    blocks = tuple(sorted(set(progressive)))
    if len(blocks) > 1:
        schedules += [Schedule(blocks, (k,) * len(blocks)) for k in keeps]
    return schedules


def best_within_budget(rows: Iterable[dict], budget: float, tolerance: float = BUDGET_TOLERANCE) -> list[dict]:
    """Each label's most accurate row whose GMACs are at most `budget` (+ `tolerance`), in the order labels first
    appear; a label with no such row gets `{"label": ..., "schedule_text": None}`."""
    rows = list(rows)
    best: dict[str, dict | None] = {r["label"]: None for r in rows}
    for r in rows:
        if r["gmacs"] <= budget * (1 + tolerance):
            current = best[r["label"]]
            if current is None or (r["top1"], -r["gmacs"]) > (current["top1"], -current["gmacs"]):
                best[r["label"]] = r
    return [r if r is not None else {"label": label, "schedule_text": None} for label, r in best.items()]


def compare_models(
    models: Sequence[str],
    data: str,
    *,
    split: str = default_of("split"),
    methods: Sequence[str] | None = None,
    keeps: Iterable[float] | None = None,
    block: int = BLOCK,
    budget: float | None = None,
    progressive: Sequence[int] = (),
    limit: int | None = default_of("limit"),
    batch_size: int = BATCH_SIZE,
    workers: int = default_of("workers"),
    device: str = default_of("device"),
    seed: int = default_of("seed"),
    on_note: Callable[[str], None] | None = None,
    on_row: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Each MODEL (its own method, or each of `methods`) at dense and at every keep rate after `block` (and after
    each `progressive` block), on the same images of DATA; the rows `compare` returns (`largest_gmacs_gap` says how
    close the matching came). With a GMACs `budget` the keep rates default to `BUDGET_KEEPS`, schedules over the
    budget are not run, and `best_within_budget` picks each model's best; a TNT model is run only at schedules
    whose blocks all have heads."""
    from tnt_cli.data import build_loader
    from tnt_cli.devices import resolve_device
    from tnt_cli.settings import check_positive

    check_positive(limit, "limit")
    check_positive(batch_size, "batch_size")
    if budget is not None and not (0 < budget < math.inf):
        raise SettingError("{budget} is GMACs per image: a positive number, got {value}", value=budget)
    if keeps is None:
        keeps = BUDGET_KEEPS if budget is not None else KEEPS
    schedules = candidate_schedules(block, keeps, progressive)
    entries = load_entries(models, methods)
    depth = min(e.model.depth for e in entries)
    if any(not 0 <= b < depth for b in progressive):
        raise SettingError("{progressive} names blocks 0-{last} of these models, got {value}", last=depth - 1,
                           value=",".join(map(str, progressive)))  # fmt: skip
    loader = build_loader(
        data, split, entries[0].model.vit, batch_size=batch_size, workers=workers, limit=limit, seed=seed
    )
    dev = resolve_device(device)
    if on_note is not None:
        on_note(f"comparing {len(entries)} model(s) at {len(schedules)} schedules on {data} {split}")
    rows = compare(entries, loader, schedules, device=dev, seed=seed, on_row=on_row, skip=_lacks_heads,
                   max_gmacs=None if budget is None else budget * (1 + BUDGET_TOLERANCE))  # fmt: skip
    if not rows and budget is not None:
        raise SettingError("no schedule of {keeps} (and {progressive}) costs at most {budget} GMACs per image "
                           "(+{tolerance:.0%}): give a larger budget or smaller keep rates", tolerance=BUDGET_TOLERANCE)
    return rows


def _lacks_heads(entry: Entry, schedule: Schedule) -> bool:
    """TNT ranks with the head after each pruning block: a schedule pruning where the model has none cannot run."""
    return lookup(entry.method).uses_heads and not set(schedule.prune_layers) <= set(entry.model.head_blocks)


def largest_gmacs_gap(rows: Iterable[dict]) -> float:
    """The largest |GMACs / TNT's GMACs - 1| over pruned rows: the comparison is fair when this is <= 0.02."""
    gaps = [abs(r["gmacs"] / r["gmacs_tnt"] - 1) for r in rows if r["schedule_text"] != "dense"]
    return max(gaps, default=0.0)


def _with_reducer(schedule: Schedule, reducer: str, merge_threshold: float | None = None) -> Schedule:
    if reducer == "drop" or not schedule.prune_layers:
        return schedule
    return replace(schedule, reducer=reducer, merge_threshold=merge_threshold if reducer == "merge" else None)
