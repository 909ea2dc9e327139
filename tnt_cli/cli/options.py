"""Options shared by several commands, and their parsing into engine objects.

The settings many commands take are declared once (`tnt_cli.settings.SHARED`); the aliases here are their typer
options (`option`), and a command's parameter defaults to `default(name)`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from tnt_cli.cli.declared import default, option
from tnt_cli.errors import ScheduleError, TntError
from tnt_cli.parsing import float_list, int_list, split_list
from tnt_cli.recipes import REDUCERS

if TYPE_CHECKING:
    from tnt_cli.engine import Schedule

__all__ = ["default", "option"]

ModelArg = option("model")
DataOpt = option("data")
SplitOpt = option("split")
BatchSizeOpt = option("batch_size")
WorkersOpt = option("workers")
DeviceOpt = option("device")
SeedOpt = option("seed")
LimitOpt = option("limit")
RandomWeights = option("random_weights")
PruneLayers = Annotated[
    str | None,
    typer.Option("--prune-layers", help="Blocks after which to prune, e.g. 2 or 2,3,4.", rich_help_panel="Schedule"),
]
KeepRates = Annotated[
    str | None,
    typer.Option(
        "--keep-rates",
        help="Fraction of patch tokens kept at each prune layer, e.g. 0.6 or 0.8,0.8,0.8.",
        rich_help_panel="Schedule",
    ),
]
SimPrune = Annotated[
    int | None,
    typer.Option(
        "--sim-prune",
        help="Random-partition similarity pruning r. With one prune layer it does not drop r more: the relevance "
        "top-k keeps floor(n x keep) + r candidates and similarity removes the r most redundant of them, so as many "
        "tokens stay (r changes which, not how many). With several prune layers r tokens are dropped from the "
        "patch embeddings before block 0 and the keep rates apply to the rest.",
        rich_help_panel="Schedule",
    ),
]
SimSeed = Annotated[
    int, typer.Option("--sim-seed", help="Seed of the similarity-pruning partition.", rich_help_panel="Schedule")
]
# The CLI's reducer when --reducer is not given and the model has none of its own (a model directory's reducer, from
# `tnt finetune --reducer` or its recipe, is kept).
DEFAULT_REDUCER = REDUCERS[0]
Reducer = Annotated[
    str | None,
    typer.Option(
        "--reducer",
        help="What a prune layer does with the tokens it does not keep: drop (the paper), merge (each into its "
        f"most similar kept token) or fuse (all into one extra token). Default: the model's own (a tnt model "
        f"directory's), else {DEFAULT_REDUCER}.",
        metavar="[" + "|".join(REDUCERS) + "]",
        show_default=False,
        rich_help_panel="Schedule",
    ),
]
JsonOut = Annotated[bool, typer.Option("--json", "-j", help="Print machine-readable JSON on stdout.")]
Offline = Annotated[
    bool,
    typer.Option("--offline", help="Use only the local Hugging Face cache, never the network (sets HF_HUB_OFFLINE=1)."),
]
PushToHub = Annotated[
    str | None,
    typer.Option(
        "--push-to-hub",
        help="After writing the directory, upload it to this Hub repo (org/name) in one commit.",
        metavar="REPO",
        show_default=False,
    ),
]
TomeR = Annotated[
    int | None,
    typer.Option(
        "--tome-r",
        help="ToMe: tokens merged after every block (default: the r whose GMACs match the schedule's).",
        rich_help_panel="Schedule",
    ),
]


def apply_offline(offline: bool) -> None:
    """Call first thing in a command: HF_HUB_OFFLINE must be set before timm imports huggingface_hub."""
    from tnt_cli.io.offline import set_offline

    set_offline(offline)


def parse_int_list(text: str, flag: str) -> tuple[int, ...]:
    """`--flag`'s whole numbers (`tnt_cli.parsing.int_list`, named by the setting the flag spells)."""
    return int_list(text, _setting_name(flag))


def parse_float_list(text: str, flag: str) -> tuple[float, ...]:
    """`--flag`'s numbers (`tnt_cli.parsing.float_list`, named by the setting the flag spells)."""
    return float_list(text, _setting_name(flag))


def _setting_name(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")


def parse_str_list(text: str, flag: str) -> tuple[str, ...]:
    try:
        return tuple(split_list(text))
    except ValueError:
        raise TntError(f"{flag} takes names separated by commas, got {text!r}") from None


def schedule_from_flags(
    prune_layers: str | None,
    keep_rates: str | None,
    sim_prune: int | None,
    sim_seed: int = 0,
    reducer: str | None = None,
) -> Schedule | None:
    """The schedule the flags describe; None where no flag is given (the command then uses the model's own).

    `--reducer` changes the schedule the other flags give: alone it is refused, not silently ignored.
    """
    from tnt_cli.engine import Schedule

    if reducer is not None:
        check_reducer(reducer)
    if prune_layers is None and keep_rates is None and sim_prune is None:
        if reducer is not None:
            raise ScheduleError("--reducer changes a schedule: give --prune-layers and --keep-rates with it")
        return None
    if (prune_layers is None) != (keep_rates is None):
        raise ScheduleError("--prune-layers and --keep-rates go together: give both, with one keep rate per layer")
    layers = parse_int_list(prune_layers, "--prune-layers") if prune_layers is not None else ()
    rates = parse_float_list(keep_rates, "--keep-rates") if keep_rates is not None else ()
    return Schedule(
        prune_layers=layers,
        keep_rates=rates,
        sim_prune=sim_prune or 0,
        sim_seed=sim_seed,
        reducer=reducer or DEFAULT_REDUCER,
        reducer_chosen=reducer is not None,
    )


def check_reducer(reducer: str) -> str:
    """The reducer name, or one line listing the choices (checked before any model is loaded)."""
    if reducer not in REDUCERS:
        raise ScheduleError(f"--reducer {reducer!r} is unknown: choose one of {', '.join(REDUCERS)}")
    return reducer
