"""The calibration's settings as people write them: `Calibration` (each field one setting's declaration, so
`tnt calibrate`'s options come from here), the target it chooses under, the grid's defaults and the parsing of its
text. No torch, so `--help` is instant.

Layers: '2,3,2+4' (commas separate alternatives, '+' joins a multi-layer schedule); keep rates: one rate at every
layer; similarity-prune counts r: whole numbers, or 'auto' for about 1/8 of the patches (`sweep.auto_sim_prune`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tnt_cli.errors import SettingError
from tnt_cli.methods.registry import REDUCING_METHODS, metavar, names
from tnt_cli.parsing import float_list, list_parts
from tnt_cli.recipes import REDUCERS
from tnt_cli.settings import SCHEDULE, check_positive, setting, shared

DEFAULT_KEEP_GRID = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2)
AUTO_SIM = "auto"
DEFAULT_SIM_GRID: tuple[int | str, ...] = (0, AUTO_SIM)
DEFAULT_METHODS = names(calibrated_by_default=True)  # those that need a class token only on models with one


def parse_layer_grid(text: str) -> list[tuple[int, ...]]:
    """'2,3,2+4' -> [(2,), (3,), (2, 4)]: commas separate alternatives, '+' joins a multi-layer schedule."""
    out = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        try:
            out.append(tuple(int(b) for b in part.split("+")))
        except ValueError:
            raise SettingError("{grid_layers} takes block numbers like 2,3,2+4, got {text!r}", text=text) from None
    return out


def parse_sim_grid(text: str) -> tuple[int | str, ...]:
    """'0,auto' -> (0, 'auto'): similarity-prune counts r to try, each a whole number >= 0 or 'auto'."""
    try:
        values = tuple(AUTO_SIM if p == AUTO_SIM else int(p) for p in list_parts(text))
    except ValueError:
        raise SettingError("{grid_sim} takes whole numbers or 'auto', got {text!r}", text=text) from None
    if any(v != AUTO_SIM and int(v) < 0 for v in values):
        raise SettingError("{grid_sim} counts must be >= 0, got {text!r}", text=text)
    return values


def _layer_grid(text: str, name: str) -> tuple[tuple[int, ...], ...]:
    return tuple(parse_layer_grid(text))


def _keep_grid(text: str, name: str) -> tuple[float, ...]:
    return float_list(text, name) if text.strip() else ()  # empty: refused as an empty grid, with the others


def _sim_grid(text: str, name: str) -> tuple[int | str, ...]:
    return parse_sim_grid(text)


def _names(text: str, name: str) -> tuple[str, ...]:
    return tuple(list_parts(text))


@dataclass(frozen=True)
class Target:
    """What the user asked calibrate to optimise under: one of gmacs, speedup, max_drop (top-1 points)."""

    kind: str
    value: float

    def describe(self) -> str:
        return {
            "gmacs": f"at most {self.value:g} GMACs",
            "speedup": f"at least {self.value:g}x speedup",
            "max_drop": f"at most {self.value:g} top-1 points below dense",
        }[self.kind]


def make_target(target_gmacs: float | None, target_speedup: float | None, max_drop: float | None) -> Target:
    given = [
        (k, v)
        for k, v in (("gmacs", target_gmacs), ("speedup", target_speedup), ("max_drop", max_drop))
        if v is not None
    ]
    if len(given) > 1:
        raise SettingError("give at most one of {target_gmacs}, {target_speedup} and {max_drop}")
    kind, value = given[0] if given else ("max_drop", 1.0)
    if kind == "gmacs" and value <= 0:
        raise SettingError("{target_gmacs} must be positive, got {value:g}", value=value)
    if kind == "speedup" and value <= 0:
        raise SettingError("{target_speedup} must be positive, got {value:g}", value=value)
    if kind == "max_drop" and value < 0:
        raise SettingError("{max_drop} is in top-1 points and must be >= 0, got {value:g}", value=value)
    return Target(kind, float(value))


GRID, TARGET = "Grid", "Target (one of)"


@dataclass(frozen=True)
class Calibration:
    """What to sweep, on how many images, and the target to choose under; each field is one setting's only
    declaration. `target` (a `Target`) may be given instead of the three target settings."""

    split: str = shared(
        "split", default="holdout", help="Where the schedule is chosen: holdout is the slice of the train split `tnt "
        "finetune` holds out (images the fine-tune never saw), so the test split plays no part in the choice.",
    )  # fmt: skip  # "holdout": tnt_cli.data.holdout.HOLDOUT (that module needs torch; this one must not)
    limit: int = shared("limit", default=2000, help="Calibration subset: a seeded draw of N images.")
    eval_split: str = setting("val", help="Where the chosen schedule and dense are then measured.")
    eval_limit: int | None = setting(
        None, help="Measure the choice on a seeded subset of N images (0: not at all). Default: the whole split."
    )
    grid_layers: tuple[tuple[int, ...], ...] | None = setting(
        None, help="Prune layers to try: 2,3 tries each; 2+4 is one multi-layer schedule. Default: every head block "
        "but the last block.", panel=GRID, parse=_layer_grid,
    )  # fmt: skip
    grid_keep: tuple[float, ...] = setting(
        DEFAULT_KEEP_GRID, help="Keep rates to try (the same rate at every layer).", panel=GRID, parse=_keep_grid
    )
    grid_sim: tuple[int | str, ...] = setting(
        DEFAULT_SIM_GRID, help="Similarity-prune counts r to try; 'auto' is 1/8 of the patches.", panel=GRID,
        parse=_sim_grid,
    )  # fmt: skip
    sim_seed: int = setting(0, help="Seed of the similarity-pruning partition.", panel=SCHEDULE)
    reducer: str | None = setting(
        None, help="What a prune layer does with the tokens it does not keep: drop (the paper), merge (each into its "
        "most similar kept token) or fuse (all into one extra token). Default: the model's own (what it was "
        "fine-tuned with; drop for a model without a schedule).", panel=SCHEDULE, choices=REDUCERS,
    )  # fmt: skip
    methods: tuple[str, ...] | None = setting(
        None, help=f"Methods to sweep: tnt plus baselines at matched GMACs. Default: {','.join(DEFAULT_METHODS)} (evit "
        "only with a class token).", panel=GRID, parse=_names, metavar=metavar(REDUCING_METHODS).replace("|", ","),
    )  # fmt: skip
    target_gmacs: float | None = setting(None, help="Most accurate schedule within G GMACs.", panel=TARGET)
    target_speedup: float | None = setting(
        None, help="Most accurate schedule at least S times faster than dense (measured with --measure-speed, "
        "else the GMACs ratio).", panel=TARGET,
    )  # fmt: skip
    max_drop: float | None = setting(
        None, help="Cheapest schedule within D top-1 points of dense (the default, with D = 1).", panel=TARGET
    )
    measure_speed: bool = setting(
        False, help="Time every point against dense as `tnt benchmark` does: alternating, the order reversed every "
        "other round, on this machine."
    )  # fmt: skip
    speed_batch: int = setting(32, help="Batch size for --measure-speed.")
    speed_rounds: int = setting(5, help="Timed rounds per point for --measure-speed (median kept).")
    batch_size: int = shared("batch_size")
    workers: int = shared("workers")
    seed: int = shared("seed", help="Seed of the calibration subset and of the random baseline's scores.")
    target: Target = field(default=None)  # type: ignore[assignment]  # from the three target settings

    def __post_init__(self) -> None:
        if self.target is None:
            object.__setattr__(self, "target", make_target(self.target_gmacs, self.target_speedup, self.max_drop))
        elif (self.target_gmacs, self.target_speedup, self.max_drop) != (None, None, None):
            raise SettingError("give {target} or one of {target_gmacs}, {target_speedup} and {max_drop}, not both")
        for name in ("limit", "batch_size", "speed_batch", "speed_rounds"):
            check_positive(getattr(self, name), name)
        if self.eval_limit is not None and self.eval_limit < 0:
            raise SettingError("{eval_limit} must be >= 0 (0: do not measure the choice), got {value}",
                               value=self.eval_limit)  # fmt: skip
        if self.eval_limit != 0 and self.eval_split == self.split:
            raise SettingError("{eval_split} is the split the schedule is chosen on ({value}): measure the choice "
                               "on another split, or give {eval_limit} 0", value=self.split)  # fmt: skip
        if self.reducer is not None and self.reducer not in REDUCERS:
            raise SettingError("{reducer} must be one of {choices}, got {value!r}", choices=", ".join(REDUCERS),
                               value=self.reducer)  # fmt: skip
        if self.methods is not None and not self.methods:
            choices = ", ".join(REDUCING_METHODS)
            raise SettingError("{methods} is empty: give at least one of {choices}", choices=choices)
