"""Progress a person can see: plain periodic lines on a stderr that is not a terminal, also under --json.

Before, every bar was a transient rich bar: piped to a file, a 2.5-minute calibrate wrote 0 bytes to stderr.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _helpers import run_cli

from tnt_cli.progress import DEFAULT_INTERVAL, INTERVAL_ENV, Progress, line_interval

ROOT = Path(__file__).resolve().parents[1]


def progress_lines(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


# ----------------------------------------------------------------------------- the Progress object
def test_plain_lines_at_start_every_interval_and_at_the_end():
    stream = io.StringIO()
    with Progress("evaluating", total=30, unit="img", stream=stream, interval=0) as bar:
        for _ in range(3):
            bar.advance(10)
    lines = progress_lines(stream.getvalue(), "evaluating: ")
    assert "\r" not in stream.getvalue()  # plain lines, no in-place redraws
    assert lines[0].startswith("evaluating: 0/30 img (0%)")
    assert [line.split()[1] for line in lines[1:4]] == ["10/30", "20/30", "30/30"]
    assert lines[-1].startswith("evaluating: 30/30 img (100%)")


def test_lines_are_throttled_by_the_interval():
    stream = io.StringIO()
    with Progress("sweeping", total=1000, unit="img", stream=stream, interval=3600) as bar:
        for _ in range(100):
            bar.advance(10)
    lines = progress_lines(stream.getvalue(), "sweeping: ")
    assert len(lines) == 2  # the start and the end only: 100 updates within an hour print nothing between
    assert lines[-1].startswith("sweeping: 1000/1000 img")


def test_fields_description_and_absolute_updates():
    stream = io.StringIO()
    with Progress("finetune", total=4, completed=1, unit="step", stream=stream, interval=0) as bar:
        bar.update(completed=3, loss="0.5000", lr="1.00e-03")
        bar.update(description="benchmark batch 8")
        bar.advance()
    text = stream.getvalue()
    assert progress_lines(text, "finetune: ")[0].startswith("finetune: 1/4 step")
    assert any(
        line.startswith("finetune: 3/4 step") and "loss 0.5000, lr 1.00e-03" in line for line in text.splitlines()
    )
    assert progress_lines(text, "benchmark batch 8: ")[-1].startswith("benchmark batch 8: 4/4 step")


def test_disabled_progress_writes_nothing():
    stream = io.StringIO()
    with Progress("evaluating", total=3, stream=stream, enabled=False, interval=0) as bar:
        bar.advance(3)
        bar.update(completed=3, loss="1")
    assert stream.getvalue() == ""


def test_a_terminal_gets_the_live_bar_not_lines():
    from rich.console import Console

    console = Console(file=io.StringIO(), force_terminal=True)
    with Progress("evaluating", total=3, console=console) as bar:
        assert bar._rich is not None and bar._lines is None
        bar.advance(3)


def test_interval_from_the_environment(monkeypatch):
    monkeypatch.setenv(INTERVAL_ENV, "2.5")
    assert line_interval() == 2.5
    monkeypatch.setenv(INTERVAL_ENV, "soon")
    assert line_interval() == DEFAULT_INTERVAL
    monkeypatch.setenv(INTERVAL_ENV, "-1")
    assert line_interval() == DEFAULT_INTERVAL


# ----------------------------------------------------------------------------- commands
def test_calibrate_leaves_progress_lines_in_a_piped_stderr(base, tmp_path):
    """`tnt calibrate ... 2>log` in a real process: stderr is a file, stdout carries the JSON alone."""
    log = tmp_path / "log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop(INTERVAL_ENV, None)
    args = [sys.executable, "-m", "tnt_cli", "calibrate", str(base), "--data", "fashion-mnist", "--limit", "128",
            "--grid-layers", "1", "--grid-keep", "0.5", "--grid-sim", "0", "--methods", "random",
            "--device", "cpu", "-o", str(tmp_path / "calib"), "-j"]  # fmt: skip
    with log.open("w") as err:
        proc = subprocess.run(args, stdout=subprocess.PIPE, stderr=err, text=True, env=env, timeout=300)
    text = log.read_text()
    assert proc.returncode == 0, text
    assert json.loads(proc.stdout)["points"] == 2  # JSON alone on stdout
    lines = progress_lines(text, "sweeping ")
    assert lines and lines[0].startswith("sweeping 2 points: 0/128 img"), text
    assert lines[-1].startswith("sweeping 2 points: 128/128 img (100%)"), text


def test_evaluate_shows_progress_on_stderr_also_with_json(tiny_dir):
    result = run_cli("evaluate", tiny_dir, "--data", "fashion-mnist", "--limit", "96", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["images"] == 96
    assert progress_lines(result.stderr, "evaluating: ")[-1].startswith("evaluating: 96/96 img (100%)")


@pytest.fixture
def no_interval(monkeypatch):
    monkeypatch.setenv(INTERVAL_ENV, "0")


def test_finetune_shows_steps_loss_and_final_evaluation(base, tmp_path, no_interval):
    out = tmp_path / "out"
    result = run_cli("finetune", base, "--data", "fashion-mnist", "-o", out, "--max-steps", "3", "-b", "8",
                     "--eval-limit", "16", "--device", "cpu", "-j")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    json.loads(result.stdout)
    steps = progress_lines(result.stderr, "finetune: ")
    assert steps[0].startswith("finetune: 0/3 step") and steps[-1].startswith("finetune: 3/3 step (100%)")
    assert "loss " in steps[-1] and "lr " in steps[-1]
    assert progress_lines(result.stderr, "evaluating dense: ")[-1].startswith("evaluating dense: 16/16 img")
