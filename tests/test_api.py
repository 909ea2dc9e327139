"""The Python API: tnt_cli.load / tnt_cli.save / tnt_cli.Schedule."""

from __future__ import annotations

import subprocess
import sys

import torch
from _helpers import IO, images, tiny_tnt

import tnt_cli


def test_load_runs_with_the_saved_schedule_and_can_change_it(tmp_path):
    model = tiny_tnt(shape=IO, schedule=tnt_cli.Schedule(prune_layers=(1,), keep_rates=(0.5,)))
    out = tnt_cli.save(model, tmp_path / "m", base_model="timm/x", metrics={"accuracy": {"top1": 0.5}})
    assert (out / "report.json").exists()
    loaded = tnt_cli.load(str(out))
    assert isinstance(loaded, tnt_cli.TNTModel) and not loaded.training
    x = images()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
        loaded.set_schedule(tnt_cli.Schedule(prune_layers=(0,), keep_rates=(0.25,)))
        _, trace = loaded.forward_traced(x)
    assert trace[0].kept_positions.shape == (3, 4)  # 16 patches -> 4
    again = tnt_cli.load(out, schedule=tnt_cli.Schedule())
    assert again.schedule.is_dense


def test_import_is_cheap():
    code = "import sys, tnt_cli; assert 'torch' not in sys.modules and 'timm' not in sys.modules; print('ok')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_describe_is_what_tnt_info_reports(tmp_path):
    """`tnt_cli.describe` and `tnt info --json` give the same numbers; a schedule changes the pruned GMACs only."""
    import json

    from _helpers import run_cli

    out = tnt_cli.save(tiny_tnt(shape=IO), tmp_path / "m")
    dense = tnt_cli.describe(out)
    pruned = tnt_cli.describe(out, schedule=tnt_cli.Schedule(prune_layers=(1,), keep_rates=(0.5,)))
    assert pruned["gmacs_dense"] == dense["gmacs_dense"] and pruned["gmacs_pruned"] < dense["gmacs_pruned"]
    result = run_cli("info", out, "--prune-layers", "1", "--keep-rates", "0.5", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == json.loads(json.dumps(pruned))
