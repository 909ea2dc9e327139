"""Any method at TNT's compute: `apply_method(model, method, schedule)`, and `method_gmacs` for its cost alone.

The rule is the same everywhere (evaluate, calibrate, benchmark, compare, fine-tuning): every method runs at the
exact GMACs closest to TNT's at `schedule`. How each one gets there is its own module's business (see the
registry, `tnt_cli.methods.registry`, for where each lives): tnt and random run the schedule itself (random
without the heads' MACs), evit picks its kept counts, tome its per-block merge counts; dense ignores the schedule.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from tnt_cli.engine import Schedule, TNTModel
from tnt_cli.errors import SettingError
from tnt_cli.methods.base import Configured
from tnt_cli.methods.registry import DENSE, Method, lookup, names


@dataclass
class MethodSetup:
    """What `apply_method` configured: the module to call, its own exact compute and how reports describe it."""

    method: str
    module: nn.Module
    schedule: Schedule  # tnt / random: what runs; evit / tome: the TNT schedule whose GMACs they match
    gmacs: float
    model: TNTModel
    text: str
    details: dict[str, Any] = field(default_factory=dict)  # report fields only this method has (tome_r, evit_keep)

    def begin_batch(self, start: int) -> None:
        """Tell a seeded scorer where this batch starts in the evaluation order (or the training step's start)."""
        scorer = getattr(self.model, "scorer", None)
        if hasattr(scorer, "begin_batch"):
            scorer.begin_batch(start)

    def describe(self) -> str:
        return self.text


def configure(
    model: TNTModel, name: str, schedule: Schedule | None = None, *, own: Any = None, seed: int = 0
) -> tuple[Method, Configured]:
    """`name`'s record and its configuration at `schedule`'s budget (default: the model's own schedule); nothing
    on the model changes until `Configured.build()`."""
    record = lookup(name)
    schedule = model.schedule if schedule is None else schedule
    module_name, _, function = record.configure.partition(":")
    configure_at = getattr(importlib.import_module(module_name), function)
    return record, configure_at(model, schedule, record, seed=seed, own=own)


def check_own_setting(record: Method, setting: str, value: object) -> None:
    """Refuse a setting only another method takes (ToMe's `tome_r`): it would be silently ignored."""
    if value is not None and record.own_setting != setting:
        owner = " or ".join(names(own_setting=setting))
        raise SettingError(f"{{{setting}}} applies to {{method}} {owner} only (this run uses {{method}} {{name}})",
                           name=record.name)  # fmt: skip


def method_gmacs(
    model: TNTModel, name: str, schedule: Schedule | None = None, *, tome_r: int | Sequence[int] | None = None
) -> float:
    """GMACs per image of `name` matched to `schedule` (default: the model's own); tome at `tome_r` if given."""
    return configure(model, name, schedule, own=tome_r)[1].macs / 1e9


def dense_gmacs(model: TNTModel) -> float:
    """GMACs per image with every token."""
    return method_gmacs(model, DENSE)


@contextmanager
def apply_method(
    model: TNTModel,
    name: str,
    schedule: Schedule | None = None,
    *,
    tome_r: int | Sequence[int] | None = None,
    seed: int = 0,
) -> Iterator[MethodSetup]:
    """Configure `model` to run method `name` at `schedule`'s compute (default: the model's own schedule).

    The model's scorer and schedule are restored on exit. `setup.module(images)` runs the method in eval and in
    training mode (pruned / merged, with gradients); `setup.gmacs` is its own exact GMACs.
    """
    record = lookup(name)
    check_own_setting(record, "tome_r", tome_r)
    saved_scorer, saved_schedule = model.scorer, model.schedule
    try:
        record, configured = configure(model, record.name, schedule, own=tome_r, seed=seed)
        module = configured.build()
        yield MethodSetup(record.name, module, configured.schedule, configured.macs / 1e9, model, configured.text,
                          configured.details)  # fmt: skip
    finally:
        model.scorer = saved_scorer
        model.set_schedule(saved_schedule)
