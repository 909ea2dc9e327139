"""The calibration grid as people write it: its defaults and the parsing of its text (no torch, so `--help` is instant).

Layers: '2,3,2+4' (commas separate alternatives, '+' joins a multi-layer schedule); keep rates: one rate at every
layer; similarity-prune counts r: whole numbers, or 'auto' for about 1/8 of the patches (`sweep.auto_sim_prune`).
"""

from __future__ import annotations

from tnt_cli.errors import SettingError
from tnt_cli.methods.registry import names
from tnt_cli.parsing import list_parts

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
