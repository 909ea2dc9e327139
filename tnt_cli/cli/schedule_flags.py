"""The schedule flags (--prune-layers, --keep-rates, --sim-prune, --sim-seed, --reducer), declared once.

Typer has no option groups, so a command that takes them names one parameter, `schedule_flags: ScheduleFlags`,
where they belong in its help, and `@takes_schedule_flags` puts the five options there; the command receives
them as one ScheduleFlags value and turns it into a Schedule with `.schedule()` (after `apply_offline`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from tnt_cli.cli import options as o

if TYPE_CHECKING:
    from tnt_cli.engine import Schedule

PARAMETER = "schedule_flags"


@dataclass(frozen=True)
class ScheduleFlags:
    """The schedule flags as given on the command line (None: not given)."""

    prune_layers: o.PruneLayers = None
    keep_rates: o.KeepRates = None
    sim_prune: o.SimPrune = None
    sim_seed: o.SimSeed = 0
    reducer: o.Reducer = None

    def schedule(self) -> Schedule | None:
        """The schedule the flags describe; None where no flag is given (the command uses the model's own)."""
        return o.schedule_from_flags(self.prune_layers, self.keep_rates, self.sim_prune, self.sim_seed, self.reducer)


def takes_schedule_flags(command: Callable[..., Any]) -> Callable[..., Any]:
    """`command` with its `schedule_flags` parameter shown as the five schedule options, passed as one value."""
    signature = inspect.signature(command, eval_str=True)
    types = inspect.get_annotations(ScheduleFlags, eval_str=True)
    parameters: list[inspect.Parameter] = []
    for parameter in signature.parameters.values():
        if parameter.name != PARAMETER:
            parameters.append(parameter)
            continue
        parameters += [inspect.Parameter(f.name, parameter.kind, default=f.default, annotation=types[f.name])
                       for f in fields(ScheduleFlags)]  # fmt: skip
    if len(parameters) == len(signature.parameters):
        raise TypeError(f"{command.__name__} has no `{PARAMETER}` parameter for the schedule flags")

    @functools.wraps(command)
    def with_flags(**kwargs: Any) -> Any:
        given = ScheduleFlags(**{f.name: kwargs.pop(f.name) for f in fields(ScheduleFlags)})
        return command(**kwargs, **{PARAMETER: given})

    with_flags.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    with_flags.__annotations__ = {p.name: p.annotation for p in parameters}
    return with_flags
