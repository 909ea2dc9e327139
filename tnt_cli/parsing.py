"""List values given as text ('0,1,2' or '0 1 2'), parsed once for every command and for the settings; seeds.

Errors are `SettingError`s naming the setting (`noise_blocks`), so the CLI prints its flag (`--noise-blocks`).
One layer above the errors (it imports nothing else), so every other module may use it.
"""

from __future__ import annotations

from tnt_cli.errors import SettingError


def list_parts(text: str) -> list[str]:
    """'0,1,2' or '0 1 2' -> ['0', '1', '2'] (empty for blank text)."""
    return [p.strip() for p in str(text).replace(" ", ",").split(",") if p.strip()]


def split_list(text: str) -> list[str]:
    """'0,1,2' or '0 1 2' -> its parts; ValueError when there are none."""
    parts = list_parts(text)
    if not parts:
        raise ValueError(text)
    return parts


def int_list(text: str, name: str) -> tuple[int, ...]:
    """Whole numbers separated by commas, for the setting `name`."""
    try:
        return tuple(int(part) for part in split_list(text))
    except ValueError:
        raise SettingError(f"{{{name}}} takes whole numbers separated by commas, got {{text!r}}", text=text) from None


def float_list(text: str, name: str) -> tuple[float, ...]:
    """Numbers separated by commas, for the setting `name`."""
    try:
        return tuple(float(part) for part in split_list(text))
    except ValueError:
        raise SettingError(f"{{{name}}} takes numbers separated by commas, got {{text!r}}", text=text) from None


def float_pair(text: str, name: str) -> tuple[float, float]:
    """Two numbers min,max, for the setting `name`."""
    try:
        values = tuple(float(part) for part in split_list(text))
    except ValueError:
        values = ()
    if len(values) != 2:
        raise SettingError(f"{{{name}}} takes two numbers min,max, got {{text!r}}", text=text)
    return values


# What torch.manual_seed accepts: any whole number that fits in 64 bits, signed or unsigned. Larger ones raised
# OverflowError / "Overflow when unpacking long long" deep inside a run.
SEED_RANGE = (-(1 << 63), (1 << 64) - 1)


def fits_seed(value: object) -> bool:
    """True for a whole number (not a bool) in `SEED_RANGE`."""
    return isinstance(value, int) and not isinstance(value, bool) and SEED_RANGE[0] <= value <= SEED_RANGE[1]


def check_seed(value: int, name: str = "seed") -> int:
    """VALUE, or a `SettingError` naming the setting `name` when it is not a seed (`fits_seed`)."""
    if not fits_seed(value):
        raise SettingError(f"{{{name}}} must be a whole number that fits in 64 bits ({SEED_RANGE[0]} to "
                           f"{SEED_RANGE[1]}), got {{value}}", value=value)  # fmt: skip
    return value
