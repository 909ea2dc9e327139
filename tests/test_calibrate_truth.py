"""calibrate tells the truth about its choice: a baseline of its own sweep that is as cheap and at least as accurate
(or more accurate at the same cost) is named, and the plot's title says what the plot draws."""

from __future__ import annotations

import csv
import json

from _helpers import run_cli
from PIL import Image

from tnt_cli.engine import Schedule
from tnt_cli.eval.sweep import SweepPoint

SAME_COST = 0.02  # GMACs within 2% are the same cost (tnt_cli.eval.pareto.SAME_COST)


def point(method: str, gmacs: float, top1: float, keep: float = 0.5) -> SweepPoint:
    schedule = Schedule() if method == "dense" else Schedule((1,), (keep,))
    return SweepPoint(method, schedule, gmacs=gmacs, top1=top1, images=100)


def test_better_baselines_are_named_and_worse_ones_are_not():
    from tnt_cli.eval import pareto
    from tnt_cli.eval.pareto import better_baselines

    assert pareto.SAME_COST == SAME_COST
    chosen = point("tnt", 0.0100, 0.80)
    points = [
        point("dense", 0.02, 0.85), chosen,
        point("random", 0.0099, 0.80),  # cheaper, as accurate: named
        point("evit", 0.0101, 0.79),  # same cost, less accurate: not
        point("tome", 0.0100 * (1 + SAME_COST / 2), 0.81),  # same cost (within 2%), more accurate: named
        point("evit-fuse", 0.0150, 0.84),  # more accurate but costlier: not
    ]  # fmt: skip
    named = better_baselines(points, chosen)
    assert [line.split()[0] for line in named] == ["random", "tome"]
    assert "cheaper and as accurate as" in named[0] and "as cheap and more accurate than" in named[1]
    assert better_baselines(points, points[0]) == []  # a dense choice has nothing cheaper to fear


def beats(row: dict, chosen: dict) -> bool:
    gmacs, top1 = float(row["gmacs"]), float(row["top1"])
    c_gmacs, c_top1 = float(chosen["gmacs"]), float(chosen["top1"])
    return (gmacs <= c_gmacs and top1 >= c_top1) or (abs(gmacs - c_gmacs) <= SAME_COST * c_gmacs and top1 > c_top1)


def test_calibrate_warns_exactly_about_the_baselines_its_sweep_shows_better(tiny_dir, tmp_path):
    out = tmp_path / "calib"
    result = run_cli("calibrate", tiny_dir, "--data", "fashion-mnist", "--out", out, "--limit", "128",
                     "--eval-limit", "0", "--grid-layers", "1,2", "--grid-keep", "0.7,0.5,0.3", "--grid-sim", "0",
                     "--max-drop", "100", "--device", "cpu", "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    chosen = next(r for r in rows if r["chosen"] == "1")
    expected = sorted({r["method"] for r in rows if r["method"] not in ("tnt", "dense") and beats(r, chosen)})
    assert sorted(line.split()[0] for line in summary["warnings"]) == expected
    warned = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warned) == len(expected)
    title = Image.open(out / "pareto.png").info["Title"]
    assert title.startswith("top-1 vs GMACs of TNT, random, EViT, ToMe and dense (star)")  # the default methods
    assert "lines: each method's Pareto front" in title and "train (held-out slice), 128 images" in title
    assert "dashed: the accuracy floor" in title
