"""Never lose a user's work (issue 12): overwrite, locks, divergence, JSON, class mapping, early checks, messages.

Every test here failed on the code before the fix. Models are tiny (28x28 grey, 4 blocks of width 32; or the
helpers' IO-shaped 32x32 RGB ViT) and runs are a few optimizer steps.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _helpers import error_line, run_cli

from tnt_cli.errors import ScheduleError, TntError
from tnt_cli.train.trainer import INTERRUPT_ENV, NAN_ENV

FAST = ["--data", "fashion-mnist", "--no-progress", "--log-every", "1", "--crop-scale", "0.6,1"]
SHORT = [*FAST, "--recipe", "official", "--max-steps", "2", "--batch-size", "16", "--limit", "64", "--eval-limit", "0"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("TNT_DEBUG", raising=False)
    monkeypatch.delenv(NAN_ENV, raising=False)
    monkeypatch.delenv(INTERRUPT_ENV, raising=False)


@pytest.fixture(scope="module")
def previous(base, tmp_path_factory) -> Path:
    """A finished fine-tune: the output a careless --overwrite must not destroy."""
    out = tmp_path_factory.mktemp("prev") / "out"
    result = run_cli("finetune", base, "--out", out, *SHORT)
    assert result.exit_code == 0, result.output
    return out


def snapshot(path: Path) -> dict[str, str]:
    """Every file under PATH (hidden ones too) and its sha256: equal snapshots mean bit-identical trees."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*"))
        if p.is_file()
    }  # fmt: skip


def copy_of(previous: Path, where: Path) -> Path:
    target = where / "out"
    shutil.copytree(previous, target)
    return target


def loads(path: Path):
    from tnt_cli.io.sources import load_model

    return load_model(str(path))


# ----------------------------------------------------------------------------- 1. --overwrite keeps the old output
def test_nan_during_overwrite_leaves_the_previous_output_bit_for_bit(base, previous, tmp_path, monkeypatch):
    out = copy_of(previous, tmp_path)
    before = snapshot(out)
    monkeypatch.setenv(NAN_ENV, "2")
    result = run_cli("finetune", base, "--out", out, *SHORT, "--overwrite")
    assert "loss is nan at step 2" in error_line(result, notes=True)
    assert snapshot(out) == before
    loads(out)
    monkeypatch.delenv(NAN_ENV)
    again = run_cli("finetune", base, "--out", out, *SHORT, "--overwrite")  # the failed run's side dir is replaced
    assert again.exit_code == 0, again.output
    assert snapshot(out) != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no side directory, lock or partial left


KILL_RUN = """
import os, sys
sys.argv = ["tnt", "finetune", {base!r}, "--out", {out!r}, "--overwrite", "--data", "fashion-mnist", "--no-progress",
            "--recipe", "official", "--epochs", "100000", "--batch-size", "16", "--limit", "64",
            "--eval-limit", "0", "--log-every", "1"]
from tnt_cli.cli.app import main
main()
"""


def test_sigkilled_overwrite_leaves_the_previous_output_and_the_next_run_cleans_up(base, previous, tmp_path):
    out = copy_of(previous, tmp_path)
    before = snapshot(out)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    script = KILL_RUN.format(base=str(base), out=str(out))
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE)
    log = tmp_path / ".out.run" / "metrics.jsonl"
    deadline = time.monotonic() + 240
    try:
        while not (log.exists() and log.read_text().count("\n") >= 2):  # killed mid-training, steps written
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the run never trained beside the old output"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert snapshot(out) == before  # bit for bit
    loads(out)
    refused = run_cli("finetune", base, "--out", out, *SHORT)
    assert "pass --overwrite" in error_line(refused)
    result = run_cli("finetune", base, "--out", out, *SHORT, "--overwrite")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # side dir and stale lock gone


def test_overwrite_refuses_what_is_not_a_tnt_output(base, tmp_path, monkeypatch):
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "chapter1.tex").write_text("years of work")
    line = error_line(run_cli("finetune", base, "--out", foreign, *SHORT, "--overwrite"))
    assert "not a tnt output" in line
    assert (foreign / "chapter1.tex").read_text() == "years of work"
    # the input model itself, a parent of it, the working directory and its parents
    for target in (base, base.parent):
        before = snapshot(target)
        line = error_line(run_cli("finetune", base, "--out", target, *SHORT, "--overwrite"))
        assert "input" in line, line
        assert snapshot(target) == before
    monkeypatch.chdir(foreign)
    for target in (".", ".."):
        line = error_line(run_cli("finetune", base, "--out", target, *SHORT, "--overwrite"))
        assert "working directory" in line
        line = error_line(run_cli("prune", base, "--out", target, "--overwrite", "--prune-layers", "1",
                                  "--keep-rates", "0.5", "--random-weights"))  # fmt: skip
        assert "working directory" in line and "OSError" not in line
    assert (foreign / "chapter1.tex").exists()


def test_a_plain_timm_directory_is_not_replaced_by_prune(base, tmp_path):
    target = copy_of(base, tmp_path)
    before = snapshot(target)
    result = run_cli("prune", base, "--out", target, "--overwrite", "--prune-layers", "1", "--keep-rates", "1")
    assert "not a tnt output" in error_line(result)
    assert snapshot(target) == before


# ----------------------------------------------------------------------------- 2. a lock per output
HOLD = """
import sys, time
from tnt_cli.io.outdir import OutputLock
OutputLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(120)
"""


def test_a_second_run_into_a_locked_output_is_refused_at_once(base, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        line = error_line(run_cli("finetune", base, "--out", out, *SHORT))
        assert "being written by another tnt process" in line and f"pid {holder.pid}" in line
        assert not out.exists()
        line = error_line(run_cli("prune", base, "--out", out, "--prune-layers", "1", "--keep-rates", "1"))
        assert "another tnt process" in line
    finally:
        holder.kill()
        holder.wait()
    result = run_cli("finetune", base, "--out", out, *SHORT)  # the kernel released the dead holder's lock
    assert result.exit_code == 0, result.output


def test_lock_is_exclusive_across_processes_and_released_on_exit(tmp_path):
    from tnt_cli.io.outdir import OutputLock

    target = tmp_path / "o"
    with OutputLock(target):
        code = f"from tnt_cli.io.outdir import OutputLock; OutputLock({str(target)!r}).acquire()"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
        assert proc.returncode != 0 and "OutputLocked" in proc.stderr
    assert not (tmp_path / ".o.lock").exists()
    with OutputLock(target):  # free again
        pass


# ----------------------------------------------------------------------------- 3. divergence
def test_divergence_on_the_last_step_writes_nothing_and_fails(base, previous, tmp_path):
    out = tmp_path / "diverged"
    result = run_cli("finetune", base, "--out", out, *FAST, "--recipe", "official", "--train", "full", "--lr", "1e30",
                     "--max-steps", "1", "--batch-size", "16", "--limit", "32", "--eval-limit", "0")  # fmt: skip
    line = error_line(result, notes=True)
    assert "training diverged" in line and "no model was written" in line
    assert not (out / "config.json").exists() and not (out / "model.safetensors").exists()
    kept = copy_of(previous, tmp_path / "kept")
    before = snapshot(kept)
    result = run_cli("finetune", base, "--out", kept, *FAST, "--recipe", "official", "--train", "full", "--lr",
                     "1e30", "--max-steps", "1", "--batch-size", "16", "--limit", "32", "--overwrite")  # fmt: skip
    assert "previous output is unchanged" in error_line(result, notes=True)
    assert snapshot(kept) == before


@pytest.mark.parametrize(
    ("flag", "value", "needle"),
    [
        ("--weight-decay", "inf", "--weight-decay must be a finite number"),
        ("--warmup-epochs", "inf", "--warmup-epochs must be a finite number"),
        ("--min-lr", "nan", "--min-lr must be a finite number"),
        ("--min-lr", "-1", "--min-lr must be >= 0"),
        ("--hflip", "2", "--hflip is a probability"),
        ("--re-prob", "5", "--re-prob is a probability"),
    ],
)
def test_bad_numbers_are_refused_before_training(base, tmp_path, flag, value, needle):
    out = tmp_path / "o"
    line = error_line(run_cli("finetune", base, "--out", out, *SHORT, flag, value))
    assert needle in line and "Error:" not in line
    assert not out.exists()


# ----------------------------------------------------------------------------- 4. JSON
def test_machine_output_is_valid_json_with_null_for_non_finite_numbers(tmp_path, capsys):
    from tnt_cli.cli.output import print_json
    from tnt_cli.io.atomic import atomic_write_json
    from tnt_cli.train.progress import MetricsLog

    data = {"loss": float("nan"), "top": [float("inf"), 1.5], "t": torch.tensor(float("-inf")), "p": tmp_path}

    def strict(text: str):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))

    expected = {"loss": None, "top": [None, 1.5], "t": None, "p": str(tmp_path)}
    print_json(data)
    assert strict(capsys.readouterr().out) == expected
    atomic_write_json(tmp_path / "report.json", data)
    assert strict((tmp_path / "report.json").read_text()) == expected
    MetricsLog(tmp_path / "metrics.jsonl", enabled=True).write(data)
    assert strict((tmp_path / "metrics.jsonl").read_text()) == expected


# ----------------------------------------------------------------------------- 5. class mapping
CLASSES = ["ant", "bee", "cat", "dog"]


def folder(root: Path, classes: list[str], per_class: int = 3) -> Path:
    from PIL import Image

    for split in ("train", "val"):
        for i, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for j in range(per_class):
                Image.new("RGB", (32, 32), (40 * i, 20 * j, 90)).save(root / split / name / f"{j}.png")
    return root


@pytest.fixture
def always_cat(tmp_path) -> Path:
    """A 4-class model that names its classes (timm's label_names) and always predicts 'cat' (index 2)."""
    from _helpers import IO, tiny_tnt

    from tnt_cli.io.model_dir import save_model_dir

    model = tiny_tnt(shape=IO, num_classes=4)
    with torch.no_grad():
        model.vit.head.weight.zero_()
        model.vit.head.bias.copy_(torch.tensor([0.0, 0.0, 10.0, 0.0]))
    model.vit.pretrained_cfg = {**model.vit.pretrained_cfg, "num_classes": 4, "label_names": CLASSES}
    return save_model_dir(tmp_path / "cat_model", model, base_model=None)


def label_names(model_dir: Path) -> list[str] | None:
    """Where timm keeps class names in config.json: top level, or inside pretrained_cfg."""
    config = json.loads((model_dir / "config.json").read_text())
    return config.get("label_names") or config["pretrained_cfg"].get("label_names")


def test_a_subset_of_the_models_classes_is_mapped_by_name_not_shifted(always_cat, tmp_path):
    assert label_names(always_cat) == CLASSES
    data = folder(tmp_path / "data", ["bee", "cat"])  # data labels 0, 1; the model's 1, 2
    result = run_cli("evaluate", always_cat, "--data", data, "--method", "dense", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["top1"] == 0.5  # the 'cat' half is right (shifted labels gave 0 or 1)
    per_class = run_cli("evaluate", always_cat, "--data", data, "--method", "dense", "--device", "cpu", "--json",
                        "--per-class")  # fmt: skip
    assert set(json.loads(per_class.stdout)["per_class"]) == {"bee", "cat"}


def test_data_classes_the_model_lacks_are_refused_naming_them(always_cat, tmp_path):
    data = folder(tmp_path / "data", ["cat", "emu", "fox"])
    line = error_line(run_cli("evaluate", always_cat, "--data", data, "--method", "dense", "--device", "cpu"))
    assert "emu, fox" in line and "ant, bee, cat, dog" in line
    line = error_line(run_cli("calibrate", always_cat, "--data", data, "--out", tmp_path / "c", "--device", "cpu"))
    assert "emu, fox" in line
    assert not (tmp_path / "c").exists()


def test_class_count_mismatch_without_names_is_refused_and_new_classes_is_explicit(base, tmp_path):
    data = folder(tmp_path / "data", CLASSES, per_class=8)  # 4 classes; the base model predicts 10, no names
    line = error_line(run_cli("evaluate", base, "--data", data, "--method", "dense", "--device", "cpu"))
    assert "has 4 classes" in line and "predicts 10" in line
    args = ["--data", data, "--no-progress", "--max-steps", "1", "--batch-size", "8", "--eval-limit", "0",
            "--recipe", "official", "--train", "full"]  # fmt: skip
    line = error_line(run_cli("finetune", base, "--out", tmp_path / "o", *args))
    assert "--new-classes" in line
    assert not (tmp_path / "o").exists()
    result = run_cli("finetune", base, "--out", tmp_path / "o", *args, "--new-classes")
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "o" / "config.json").read_text())
    assert config["num_classes"] == 4 and label_names(tmp_path / "o") == CLASSES
    assert result.exit_code == 0 and "new 4-class classifier" in result.output


def test_map_classes_rule():
    from tnt_cli.data.classes import map_classes

    assert map_classes(["a", "b"], ["a", "b"], 2, data="d", model="m") is None
    assert map_classes(["b", "a"], ["a", "b"], 2, data="d", model="m") == [1, 0]  # same set, other order
    assert map_classes(["c"], ["a", "b", "c"], 3, data="d", model="m") == [2]
    assert map_classes(["x", "y"], None, 2, data="d", model="m") is None  # unknown names, same count: as is
    with pytest.raises(TntError, match="predicts 3"):
        map_classes(["x", "y"], None, 3, data="d", model="m")


# ----------------------------------------------------------------------------- 6. checks before expensive work
def test_calibrate_checks_out_before_the_sweep(always_cat, tmp_path, monkeypatch):
    from tnt_cli.eval import sweep

    def no_sweep(*args, **kwargs):
        raise AssertionError("the sweep ran before --out was checked")

    monkeypatch.setattr(sweep, "run_sweep", no_sweep)
    taken = tmp_path / "calib"
    taken.mkdir()
    (taken / "sweep.csv").write_text("an earlier sweep")
    data = folder(tmp_path / "data", CLASSES)
    line = error_line(run_cli("calibrate", always_cat, "--data", data, "--out", taken, "--device", "cpu"))
    assert "already exists" in line and "--overwrite" in line


def test_a_sweep_meeting_no_target_is_still_written(always_cat, tmp_path):
    data = folder(tmp_path / "data", CLASSES, per_class=2)
    out = tmp_path / "calib"
    result = run_cli("calibrate", always_cat, "--data", data, "--out", out, "--device", "cpu", "--methods", "tnt",
                     "--grid-layers", "1", "--grid-keep", "0.5", "--grid-sim", "0", "--target-speedup", "1000",
                     "--measure-speed", "--speed-rounds", "1", "--speed-batch", "1")  # fmt: skip
    line = error_line(result, notes=True)
    assert "sweep.csv" in line
    assert (out / "sweep.csv").read_text().count("\n") >= 2 and (out / "pareto.png").stat().st_size > 0
    assert not (out / "schedule.json").exists()


def test_push_to_hub_offline_fails_before_training(base, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    out = tmp_path / "o"
    line = error_line(run_cli("finetune", base, "--out", out, *SHORT, "--push-to-hub", "me/tiny"))
    assert "offline" in line
    assert not out.exists()  # no training happened
    line = error_line(run_cli("prune", base, "--out", out, "--prune-layers", "1", "--keep-rates", "1",
                              "--push-to-hub", "me/tiny"))  # fmt: skip
    assert "offline" in line and not out.exists()


def test_benchmark_out_is_checked_before_timing_and_needs_overwrite(tmp_path, monkeypatch):
    from tnt_cli.bench import runner

    def no_timing(*args, **kwargs):
        raise AssertionError("timed before --out was checked")

    monkeypatch.setattr(runner, "run_benchmark", no_timing)
    out = tmp_path / "bench"
    out.mkdir()
    (out / "report.json").write_text("{}")
    args = ["benchmark", "vit_tiny_patch16_224", "--random-weights", "--prune-layers", "1", "--keep-rates", "0.5"]
    line = error_line(run_cli(*args, "--out", out))
    assert "report.json already exists" in line and "--overwrite" in line
    (tmp_path / "file").write_text("x")
    assert "not a directory" in error_line(run_cli(*args, "--out", tmp_path / "file"))


# ----------------------------------------------------------------------------- 7. validation gaps
def test_format_version_and_hand_edited_fields_are_checked(always_cat):
    config_path = always_cat / "config.json"
    original = json.loads(config_path.read_text())
    for key, value, needle in [
        ("format_version", 99, "format 99"),
        ("format_version", "one", "format_version"),
        ("head_blocks", "abc", "head_blocks"),
        ("schedule", {"prune_layers": [1.5], "keep_rates": [0.5]}, "whole number"),
        ("schedule", {"prune_layers": "23", "keep_rates": [0.5, 0.5]}, "whole number"),
    ]:
        config = json.loads(json.dumps(original))
        config["tnt"][key] = value
        config_path.write_text(json.dumps(config))
        with pytest.raises(TntError, match=needle):
            loads(always_cat)


def test_schedule_layers_are_never_truncated():
    from tnt_cli.engine import Schedule

    for layers in ([1.5], "23", [True], ["2"]):
        with pytest.raises(ScheduleError):
            Schedule.from_dict({"prune_layers": layers, "keep_rates": [0.5] * len(layers)})
    assert Schedule.from_dict({"prune_layers": [2.0], "keep_rates": [0.5]}).prune_layers == (2,)
    with pytest.raises(ScheduleError):
        Schedule.from_dict({"prune_layers": [1], "keep_rates": ["0.5"]})


def test_prune_schedule_file_with_fractional_layer_is_one_line(base, tmp_path):
    schedule = tmp_path / "s.json"
    schedule.write_text(json.dumps({"prune_layers": [1.5], "keep_rates": [0.5]}))
    line = error_line(run_cli("prune", base, "--out", tmp_path / "o", "--schedule", schedule))
    assert "whole number" in line and "1.5" in line


def test_usage_errors_are_one_error_line_with_exit_2(base):
    result = run_cli("finetune", base, "--bogus")
    assert error_line(result, code=2).startswith("error: No such option: --bogus")
    result = run_cli("finetune", base, "--data", "fashion-mnist", "--out", "x", "--epochs", "many")
    assert "'--epochs'" in error_line(result, code=2)


def test_resume_compares_resolved_paths(base, tmp_path, monkeypatch):
    shutil.copytree(base, tmp_path / "base")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(INTERRUPT_ENV, "1")
    stopped = run_cli("finetune", "base", "--out", "run", *SHORT)
    assert "interrupted after step 1/2" in stopped.stderr
    monkeypatch.delenv(INTERRUPT_ENV)
    resumed = run_cli("finetune", "./base", "--out", "run", *SHORT, "--resume")
    assert resumed.exit_code == 0, resumed.output


def test_stale_partial_and_old_siblings_of_dead_runs_are_cleaned(base, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "m"
    stale = [tmp_path / f".m.partial-{dead.pid}-abc", tmp_path / f".m.old-{dead.pid}"]
    for path in stale:
        path.mkdir()
        (path / "model.safetensors").write_bytes(b"half")
    mine = tmp_path / f".m.partial-{os.getpid()}-live"  # a live owner's partial is left alone
    mine.mkdir()
    out.mkdir()  # NAME exists, so the .old sibling is garbage, not an interrupted swap
    result = run_cli("prune", base, "--out", out, "--overwrite", "--prune-layers", "1", "--keep-rates", "1")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["m", mine.name])


def test_a_swap_cut_short_is_rolled_back(tmp_path):
    from tnt_cli.io.outdir import clean_stale

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    old = tmp_path / f".m.old-{dead.pid}"  # killed between "NAME -> .old" and ".partial -> NAME"
    old.mkdir()
    (old / "config.json").write_text("{}")
    clean_stale(tmp_path / "m")
    assert (tmp_path / "m" / "config.json").exists() and not old.exists()


def test_is_tnt_output(tmp_path, previous):
    from tnt_cli.io.outdir import is_tnt_output

    assert not is_tnt_output(ROOT)  # the repository itself
    assert is_tnt_output(tmp_path) and is_tnt_output(previous)  # empty, and a finished fine-tune
    (tmp_path / "sweep.csv").write_text("")
    (tmp_path / "pareto.png").write_bytes(b"")
    assert is_tnt_output(tmp_path)  # a calibrate output
    (tmp_path / "notes.txt").write_text("mine")
    assert not is_tnt_output(tmp_path)


# ----------------------------------------------------------------------------- exit codes
def test_internal_errors_say_so_and_exit_3(monkeypatch, base, tmp_path):
    from tnt_cli.io import sources

    def bug(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    # patched: an internal error is a bug, and no real input reaches one (the point is how a bug is reported)
    monkeypatch.setattr(sources, "load_model", bug)
    result = run_cli("prune", base, "--out", tmp_path / "o", "--prune-layers", "1", "--keep-rates", "1")
    line = error_line(result, code=3)
    assert line.startswith("error: internal error: ZeroDivisionError: division by zero") and "TNT_DEBUG=1" in line


def test_interrupted_runs_exit_130(base, tmp_path, monkeypatch):
    monkeypatch.setenv(INTERRUPT_ENV, "1")
    result = run_cli("finetune", base, "--out", tmp_path / "o", *SHORT)
    assert result.exit_code == 130 and "--resume" in result.stderr
