"""`tnt prune`: the written directory runs the schedule, and `evaluate` on it reproduces calibrate's accuracy."""

from __future__ import annotations

import json

import pytest
from _helpers import error_line, run_cli

LIMIT = 192


@pytest.fixture
def calibrated(tiny_dir, tmp_path):
    out = tmp_path / "calib"
    result = run_cli(
        "calibrate", tiny_dir, "--data", "fashion-mnist", "--out", out, "--limit", LIMIT, "--device", "cpu",
        "--methods", "tnt", "--grid-layers", "1,2", "--grid-keep", "0.5,0.25", "--grid-sim", "0,2",
        "--max-drop", "100",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return out / "schedule.json"


def test_prune_output_reproduces_calibrated_accuracy(tiny_dir, calibrated, tmp_path):
    record = json.loads(calibrated.read_text())
    assert record["schedule"]["prune_layers"]  # a 100-point budget picks a pruned schedule, not dense
    out = tmp_path / "model"
    result = run_cli("prune", tiny_dir, "--schedule", calibrated, "--out", out)
    assert result.exit_code == 0, result.stderr
    text = " ".join(result.stdout.split())  # rich wraps at the test terminal's width
    assert "tokens per block" in text and record["schedule_text"] in text
    config = json.loads((out / "config.json").read_text())
    assert config["tnt"]["schedule"] == record["schedule"]
    assert config["tnt"]["gmacs"]["pruned"] == pytest.approx(record["gmacs"])
    report = json.loads((out / "report.json").read_text())
    assert report["calibration"]["top1"] == record["top1"]
    assert "GMACs" in (out / "README.md").read_text()

    # the directory's own schedule is the default; same images (calibrate's held-out slice, limit + seed) and batch
    # size as calibrate
    result = run_cli("evaluate", out, "--data", "fashion-mnist", "--split", "holdout", "--limit", LIMIT, "--device",
                     "cpu", "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    evaluated = json.loads(result.stdout)
    assert evaluated["schedule"] == record["schedule"]
    assert evaluated["images"] == record["measured_on"]["images"] == LIMIT
    assert evaluated["top1"] == record["top1"]
    assert evaluated["loss"] == pytest.approx(record["loss"], rel=1e-6)
    assert evaluated["gmacs"] == pytest.approx(record["gmacs"])


def test_prune_with_flags_prints_the_token_table(tiny_dir, tmp_path):
    result = run_cli("prune", tiny_dir, "--prune-layers", "1", "--keep-rates", "0.5", "--out", tmp_path / "m", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert [row["patch_tokens"] for row in report["blocks"]] == [16, 16, 8, 8]
    assert report["calibration"] is None
    assert not (tmp_path / "m" / "report.json").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ((), "no schedule: give --schedule"),
        (("--schedule", "x.json", "--prune-layers", "1", "--keep-rates", "0.5"), "either --schedule or"),
        (("--schedule", "missing.json"), "does not exist"),
        (("--prune-layers", "1", "--keep-rates", "0"), "outside (0, 1]"),
    ],
)
def test_bad_inputs_give_one_line(tiny_dir, tmp_path, args, needle):
    result = run_cli("prune", tiny_dir, "--out", tmp_path / "m", *args)
    assert needle in error_line(result)
    assert not (tmp_path / "m").exists()


def test_existing_output_needs_overwrite(tiny_dir, tmp_path):
    args = ("prune", tiny_dir, "--prune-layers", "1", "--keep-rates", "0.5", "--out", tmp_path / "m")
    assert run_cli(*args).exit_code == 0
    assert "--overwrite" in error_line(run_cli(*args))
    assert run_cli(*args, "--overwrite").exit_code == 0


def test_bad_schedule_file_is_one_line(tiny_dir, tmp_path):
    bad = tmp_path / "s.json"
    bad.write_text("{not json")
    assert "not valid JSON" in error_line(run_cli("prune", tiny_dir, "--schedule", bad, "--out", tmp_path / "m"))
    bad.write_text(json.dumps({"something": 1}))
    assert "has no schedule" in error_line(run_cli("prune", tiny_dir, "--schedule", bad, "--out", tmp_path / "m"))
    bad.write_text(json.dumps({"format": "tnt-schedule/9", "schedule": {"prune_layers": [1], "keep_rates": [0.5]}}))
    line = error_line(run_cli("prune", tiny_dir, "--schedule", bad, "--out", tmp_path / "m"))
    assert "'tnt-schedule/9'" in line and "reads 'tnt-schedule/1'" in line


def test_reducer_is_saved_in_the_directory_and_runs_from_it(tiny_dir, tmp_path):
    out = tmp_path / "m"
    args = ("--prune-layers", "1", "--keep-rates", "0.5", "--reducer", "fuse", "--out", out, "--json")
    result = run_cli("prune", tiny_dir, *args)
    assert result.exit_code == 0, result.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["tnt"]["schedule"]["reducer"] == "fuse"
    assert "fused into one extra token" in (out / "README.md").read_text()
    import tnt_cli

    model = tnt_cli.load(str(out))
    assert model.schedule.reducer == "fuse" and model.plan.stages[0].n_out == model.plan.stages[0].n_kept + 1
    result = run_cli("evaluate", out, "--data", "fashion-mnist", "--limit", 32, "--device", "cpu", "--json",
                     "--prune-layers", "1", "--keep-rates", "0.5", "--reducer", "merge")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["schedule"]["reducer"] == "merge"
    # --reducer alone has no schedule to change: one line, not a silent dense run
    assert "--reducer" in error_line(run_cli("evaluate", out, "--data", "fashion-mnist", "--reducer", "merge"))
