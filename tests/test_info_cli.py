"""`tnt info`: the official GMACs numbers, JSON output, and one clear line for bad schedules."""

from __future__ import annotations

import json

import pytest
from _helpers import error_line, run_cli

OFFICIAL = ["deit_small_distilled_patch16_224", "--random-weights", "--prune-layers", "2", "--keep-rates", "0.6"]
OFFICIAL += ["--sim-prune", "25"]


@pytest.fixture
def run(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.delenv("TNT_DEBUG", raising=False)
    return lambda *args: run_cli("info", *args)


def test_info_prints_the_official_gmacs(run):
    result = run(*OFFICIAL)
    assert result.exit_code == 0, result.stderr
    lines = {line.split("  ")[0].strip(): line for line in result.stdout.splitlines()}
    assert lines["GMACs dense"].split()[-1] == "4.63"
    assert lines["GMACs pruned"].split()[-1] == "3.20"
    assert "prefix tokens" in lines and lines["prefix tokens"].split()[-1] == "2"
    assert "block 2 keep 0.6, r 25" in result.stdout


def test_info_json_is_json_alone_and_agrees(run):
    result = run(*OFFICIAL, "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)  # nothing but JSON on stdout
    assert f"{data['gmacs_dense']:.2f}" == "4.63"
    assert f"{data['gmacs_pruned']:.2f}" == "3.20"
    assert data["gmacs_ratio"] == pytest.approx(data["gmacs_pruned"] / data["gmacs_dense"])
    assert data["prefix_tokens"] == 2 and data["patch_tokens"] == 196 and data["depth"] == 12
    assert [b["tokens"] for b in data["blocks"]] == [198] * 3 + [2 + 117] * 9
    assert data["schedule"] == {
        "prune_layers": [2],
        "keep_rates": [0.6],
        "sim_prune": 25,
        "sim_seed": 0,
        "reducer": "drop",
    }


def test_info_dense_without_schedule_flags(run):
    result = run("deit_tiny_patch16_224", "--random-weights", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["gmacs_pruned"] == data["gmacs_dense"] and data["gmacs_ratio"] == 1.0
    assert f"{data['gmacs_dense']:.2f}" == "1.26"
    assert [b["tokens"] for b in data["blocks"]] == [197] * 12


BAD = {
    "keep-zero": ["--prune-layers", "2", "--keep-rates", "0"],
    "keep-above-one": ["--prune-layers", "2", "--keep-rates", "1.5"],
    "keep-negative": ["--prune-layers", "2", "--keep-rates=-0.2"],
    "unequal-lengths": ["--prune-layers", "2,3", "--keep-rates", "0.5"],
    "layers-without-rates": ["--prune-layers", "2"],
    "block-out-of-range": ["--prune-layers", "12", "--keep-rates", "0.5"],
    "non-numeric-layers": ["--prune-layers", "two", "--keep-rates", "0.5"],
    "non-numeric-rates": ["--prune-layers", "2", "--keep-rates", "0.5x"],
    "empty-rates": ["--prune-layers", "2", "--keep-rates", ","],
    "too-many-sim-single": ["--prune-layers", "2", "--keep-rates", "0.6", "--sim-prune", "150"],
    "too-many-sim-before-blocks": ["--sim-prune", "150"],
    "negative-sim": ["--sim-prune=-3"],
    "unknown-reducer": ["--prune-layers", "2", "--keep-rates", "0.5", "--reducer", "average"],
    "reducer-without-schedule": ["--reducer", "merge"],
    "unknown-model": [],
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_schedules_exit_with_one_clear_line(run, name):
    model = "no_such_model_xyz" if name == "unknown-model" else "deit_tiny_patch16_224"
    result = run(model, "--random-weights", *BAD[name])
    line = error_line(result)
    assert "TNT_DEBUG" not in line, "expected a deliberate message, not the catch-all"
    assert result.stdout == ""


@pytest.mark.parametrize(("reducer", "extra"), [("drop", 0), ("merge", 0), ("fuse", 1)])
def test_info_reducer_flag_reaches_the_plan_and_the_gmacs(run, reducer, extra):
    result = run("deit_tiny_patch16_224", "--random-weights", "--prune-layers", "2", "--keep-rates", "0.5",
                 "--reducer", reducer, "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["schedule"]["reducer"] == reducer
    assert [b["tokens"] for b in data["blocks"]] == [197] * 3 + [1 + 98 + extra] * 9
    drop = json.loads(run("deit_tiny_patch16_224", "--random-weights", "--prune-layers", "2", "--keep-rates", "0.5",
                          "--json").stdout)  # fmt: skip
    assert (data["gmacs_pruned"] > drop["gmacs_pruned"]) == (reducer != "drop")


# ----------------------------------------------------------------------------- shapes only, never a download
def test_info_builds_a_timm_name_without_weights(run, monkeypatch):
    import timm

    seen = []
    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda name, **kw: seen.append(kw.get("pretrained")) or real(name, **kw))
    result = run("deit_tiny_patch16_224", "--json")  # no --random-weights
    assert result.exit_code == 0, result.stderr
    assert seen == [False]
    assert f"{json.loads(result.stdout)['gmacs_dense']:.2f}" == "1.26"


def test_info_answers_offline_with_an_empty_hub_cache(tmp_path):
    """`HF_HUB_OFFLINE=1 tnt info deit_tiny_patch16_224` in a fresh process with nothing cached: no Hub retries."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(root)}
    env.pop("HF_HUB_CACHE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "tnt_cli", "info", "deit_tiny_patch16_224", "--prune-layers", "2", "--keep-rates", "0.6",
         "--json"], capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert f"{data['gmacs_dense']:.2f}" == "1.26" and data["schedule_text"] == "block 2 keep 0.6"
    assert not any((tmp_path / "hf").rglob("*.safetensors"))
