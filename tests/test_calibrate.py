"""`tnt calibrate`: the three files, a chosen schedule that meets its target, clean Pareto fronts, clear errors."""

from __future__ import annotations

import csv
import json

import pytest
from _helpers import error_line, run_cli

from tnt_cli.engine import Schedule
from tnt_cli.errors import TntError
from tnt_cli.eval.pareto import Target, choose, dominates, make_target, mark_pareto
from tnt_cli.eval.sweep import SweepPoint
from tnt_cli.methods.apply import method_gmacs

LIMIT = 256
GRID = ("--grid-layers", "1,2", "--grid-keep", "0.75,0.5,0.25", "--grid-sim", "0,2")


def read_rows(out) -> list[dict]:
    with open(out / "sweep.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        row["gmacs"], row["top1"] = float(row["gmacs"]), float(row["top1"])
    return rows


@pytest.fixture(scope="module")
def calibrated(tiny_dir, trained_tiny, tmp_path_factory):
    target = 0.75 * method_gmacs(trained_tiny[0], "dense")
    out = tmp_path_factory.mktemp("calib") / "calib"
    result = run_cli(
        "calibrate", tiny_dir, "--data", "fashion-mnist", "--out", out, "--limit", LIMIT, "--device", "cpu",
        *GRID, "--target-gmacs", f"{target:.9f}", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return out, target, json.loads(result.stdout)


def test_calibrate_writes_the_three_files(calibrated):
    out, _, summary = calibrated
    assert sorted(p.name for p in out.iterdir()) == ["pareto.png", "schedule.json", "sweep.csv"]
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = read_rows(out)
    methods = {row["method"] for row in rows}
    assert methods == {"dense", "tnt", "random", "evit", "tome"}
    assert all(int(row["images"]) == LIMIT for row in rows)
    schedule = json.loads((out / "schedule.json").read_text())
    assert schedule["measured_on"]["images"] == LIMIT and schedule["measured_on"]["limit"] == LIMIT
    assert schedule == summary["chosen"]
    # random runs exactly TNT's schedules; evit is matched to each of them (same schedule text, its own GMACs)
    tnt = {row["schedule"] for row in rows if row["method"] == "tnt"}
    assert {row["schedule"] for row in rows if row["method"] == "random"} == tnt
    assert {row["schedule"] for row in rows if row["method"] == "evit"} == tnt


def test_chosen_schedule_meets_the_target_and_is_the_best_under_it(calibrated):
    out, target, _ = calibrated
    rows = read_rows(out)
    chosen = [row for row in rows if row["chosen"] == "1"]
    assert len(chosen) == 1 and chosen[0]["method"] in ("tnt", "dense")
    assert chosen[0]["gmacs"] <= target
    feasible = [row for row in rows if row["method"] in ("tnt", "dense") and row["gmacs"] <= target]
    assert chosen[0]["top1"] == max(row["top1"] for row in feasible)
    schedule = json.loads((out / "schedule.json").read_text())
    assert schedule["gmacs"] <= target
    assert Schedule.from_dict(schedule["schedule"]).describe() == chosen[0]["schedule"]


def test_pareto_front_has_no_dominated_point_and_misses_no_point(calibrated):
    rows = read_rows(calibrated[0])
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault("tnt" if row["method"] == "dense" else row["method"], []).append(row)

    def beats(a, b):
        return (
            a["gmacs"] <= b["gmacs"] and a["top1"] >= b["top1"] and (a["gmacs"], a["top1"]) != (b["gmacs"], b["top1"])
        )

    for members in groups.values():
        for row in members:
            dominated = any(beats(other, row) for other in members if other is not row)
            assert (row["pareto"] == "1") == (not dominated), row


def test_impossible_targets_name_the_best_reachable_point(tiny_dir, tmp_path):
    base = ("calibrate", tiny_dir, "--data", "fashion-mnist", "--limit", 64, "--device", "cpu", "--methods", "tnt",
            "--grid-layers", "1", "--grid-keep", "0.5,0.25", "--grid-sim", "0")  # fmt: skip
    line = error_line(run_cli(*base, "--out", tmp_path / "a", "--target-gmacs", "0.0000001"))
    assert "below the cheapest schedule swept: block 1 keep 0.25" in line and "GMACs" in line
    line = error_line(run_cli(*base, "--out", tmp_path / "b", "--target-speedup", "50"))
    assert "best reachable is" in line and "block 1 keep 0.25" in line
    assert not any(tmp_path.iterdir()), list(tmp_path.iterdir())  # nothing half-written


def test_measure_speed_and_max_drop(tiny_dir, tmp_path):
    out = tmp_path / "speed"
    result = run_cli(
        "calibrate", tiny_dir, "--data", "fashion-mnist", "--limit", 64, "--device", "cpu", "--methods", "tnt,tome",
        "--grid-layers", "1", "--grid-keep", "0.25", "--grid-sim", "0", "--measure-speed", "--speed-batch", 8,
        "--speed-rounds", 2, "--max-drop", "100", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    rows = read_rows(out)
    assert all(float(row["images_per_s"]) > 0 for row in rows)
    assert [float(r["speedup"]) for r in rows if r["method"] == "dense"] == [1.0]
    schedule = json.loads((out / "schedule.json").read_text())
    assert schedule["speedup_source"] == "measured"
    assert schedule["schedule_text"] == "block 1 keep 0.25"  # a 100-point budget allows the cheapest schedule


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--methods", "tnt,magic"), "unknown method 'magic'"),
        (("--grid-keep", ""), "grid is empty"),
        (("--grid-layers", "1", "--grid-keep", "1.0", "--grid-sim", "0"), "grid is empty"),
        (("--grid-layers", "1", "--grid-keep", "0.5", "--grid-sim", "9"), "grid is empty"),
        (("--target-gmacs", "1", "--max-drop", "1"), "at most one of"),
        (("--max-drop", "-1"), "--max-drop"),
        (("--grid-sim", "x"), "--grid-sim takes whole numbers"),
        (("--grid-layers", "7"), "out of range"),
        (("--limit", "0"), "--limit must be positive"),
        (("--methods", ","), "--methods is empty"),
    ],
)
def test_bad_inputs_give_one_line(tiny_dir, tmp_path, args, needle):
    result = run_cli("calibrate", tiny_dir, "--data", "fashion-mnist", "--limit", 64, "--out", tmp_path / "o", *args)
    assert needle in error_line(result)
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- selection logic, synthetic
def points() -> list[SweepPoint]:
    def p(method, g, acc, speed=None):
        return SweepPoint(method, Schedule((1,), (g,)) if method != "dense" else Schedule(), gmacs=g, top1=acc,
                          speedup=speed)  # fmt: skip

    return [p("dense", 1.0, 0.90, 1.0), p("tnt", 0.8, 0.895, 1.2), p("tnt", 0.6, 0.88, 1.5), p("tnt", 0.7, 0.85, 1.3),
            p("tnt", 0.4, 0.70, 2.2), p("random", 0.6, 0.80, 1.5)]  # fmt: skip


def test_choose_under_each_target():
    pts = points()
    assert choose(pts, Target("gmacs", 0.75)).gmacs == 0.6
    assert choose(pts, Target("max_drop", 1.0)).gmacs == 0.8
    assert choose(pts, Target("max_drop", 3.0)).gmacs == 0.6
    assert choose(pts, Target("max_drop", 0.0)).method == "dense"
    assert choose(pts, Target("speedup", 1.4)).gmacs == 0.6
    with pytest.raises(TntError, match=r"best reachable is 2.20x"):
        choose(pts, Target("speedup", 3))
    mark_pareto(pts)
    assert [p.gmacs for p in pts if p.pareto and p.group == "tnt"] == [1.0, 0.8, 0.6, 0.4]
    assert not any(dominates(a, b) for a in pts for b in pts if a.pareto and b.pareto and a.group == b.group)


def test_make_target_defaults_and_validation():
    assert make_target(None, None, None) == Target("max_drop", 1.0)
    with pytest.raises(TntError, match="must be positive"):
        make_target(0, None, None)


def test_library_errors_name_settings_not_flags():
    """Python callers see the parameter names; the CLI's table spells the same errors as flags (checked above)."""
    from tnt_cli.errors import SettingError
    from tnt_cli.eval.calibrate import Calibration
    from tnt_cli.eval.grid import parse_sim_grid

    with pytest.raises(SettingError) as caught:
        make_target(0, None, None)
    assert str(caught.value) == "target_gmacs must be positive, got 0"
    with pytest.raises(SettingError, match=r"^speed_rounds must be positive"):
        Calibration(speed_rounds=0)
    with pytest.raises(SettingError, match=r"^grid_sim takes whole numbers or 'auto'"):
        parse_sim_grid("x")
    assert parse_sim_grid("0, auto,3") == (0, "auto", 3)


def test_library_calibrate_refuses_an_existing_out_before_loading_anything(tmp_path):
    """A Python caller with an existing `out` is refused at once, not after minutes of sweeping."""
    from tnt_cli.eval.calibrate import Calibration, calibrate
    from tnt_cli.io.outdir import OutputExists

    out = tmp_path / "calib"
    out.mkdir()
    (out / "sweep.csv").write_text("old\n")
    # a MODEL that does not exist: reaching the model (or the data) would be a different error
    with pytest.raises(OutputExists):
        calibrate(str(tmp_path / "no-such-model"), "fashion-mnist", out, Calibration(limit=8))
    assert (out / "sweep.csv").read_text() == "old\n"
