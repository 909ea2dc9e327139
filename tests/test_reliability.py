"""Never lose a user's work (issue 12): overwrite, locks, divergence, JSON, class mapping, early checks, messages;
and (issue 22) untrusted names, links, special files, malformed documents, signals, resources and file modes, one
test per class (docs/safety.md lists the guarantees).

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


# ============================================================================= issue 22: names, links and faults
# Each test below failed on 748280b (the round's base).
def flat(text: str) -> str:
    """TEXT without whitespace: rich folds long paths at 80 columns when output is not a terminal."""
    return "".join(text.split())


def tnt_dir(always_cat: Path, where: Path, name: str = "m") -> Path:
    """A copy of the always-'cat' tnt model directory (inputs are read-only to the tests that share them)."""
    return Path(shutil.copytree(always_cat, where / name))


# ----------------------------------------------------------------------------- 0. --new-classes and the teacher
def test_new_classes_never_distils_toward_a_reset_classifier(base, tmp_path):
    data = folder(tmp_path / "data", CLASSES, per_class=4)
    args = ["--data", data, "--no-progress", "--max-steps", "1", "--batch-size", "8", "--eval-limit", "0",
            "--new-classes"]  # fmt: skip
    result = run_cli("finetune", base, "--out", tmp_path / "o", *args)  # the default recipe distils
    assert result.exit_code == 0, result.output
    assert "distillation is off" in result.stderr
    config = json.loads((tmp_path / "o" / "config.json").read_text())
    assert config["tnt"]["training"]["settings"]["distill"] is False  # what ran is what is recorded
    line = error_line(run_cli("finetune", base, "--out", tmp_path / "p", *args, "--distill"))
    assert "--distill" in line and "--new-classes" in line
    assert not (tmp_path / "p").exists()


def test_the_teacher_is_the_model_as_loaded(always_cat, tmp_path):
    from tnt_cli.train.config import TrainConfig
    from tnt_cli.train.setup import build_training_model

    data = folder(tmp_path / "data", ["bee", "cat"])  # mapped by name onto the model's 4 classes
    cfg = TrainConfig(model=str(always_cat), data=str(data), out=str(tmp_path / "o"), train="full", distill=True)
    built = build_training_model(cfg, ["bee", "cat"], torch.device("cpu"), note=lambda text: None)
    loaded = loads(always_cat).model.vit
    assert torch.equal(built.teacher.head.bias, loaded.head.bias) and built.teacher.num_classes == 4


# ----------------------------------------------------------------------------- 1. untrusted text on the terminal
def test_names_are_printed_literally_escaped_and_saved_whatever_their_bytes(always_cat, base, tmp_path):
    out = tmp_path / "out[x]"  # markup: once printed as "out"
    result = run_cli("prune", always_cat, "--out", out, "--prune-layers", "1", "--keep-rates", "0.5")
    assert result.exit_code == 0, result.output
    assert flat(f"wrote {out}:") in flat(result.stdout)
    data = folder(tmp_path / "data", ["bee", "cat"])
    result = run_cli("compare", always_cat, "--data", data, "--methods", "tnt,random", "--keeps", "0.5",
                     "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "[tnt]" in flat(result.stdout) and "[random]" in flat(result.stdout)  # the column labels
    # a control sequence in a file name is shown as an escape, never sent to the terminal
    evil = folder(tmp_path / "evil", ["cat", "b\x1b]0;pwned\x07ee"])
    line = error_line(run_cli("evaluate", always_cat, "--data", evil, "--device", "cpu"))
    assert "\x1b" not in line and "\x07" not in line and "b\\x1b]0;pwned\\x07ee" in line
    # a class name that is not UTF-8: the run is saved, and shown with the byte escaped
    raw = folder(tmp_path / "raw", ["ant", "bee", "cat", "dog"], per_class=4)
    for split in ("train", "val"):
        os.rename(raw / split / "ant", os.fsencode(raw / split) + b"/caf\xe9")
    trained = tmp_path / "trained"
    result = run_cli("finetune", base, "--out", trained, "--data", raw, "--no-progress", "--max-steps", "1",
                     "--batch-size", "8", "--eval-limit", "0", "--new-classes", "--no-distill")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert label_names(trained) == ["bee", "caf\udce9", "cat", "dog"]  # the name itself, JSON-escaped
    assert "caf\\xe9" in (trained / "README.md").read_text(encoding="utf-8")
    result = run_cli("evaluate", trained, "--data", raw, "--device", "cpu", "--method", "dense", "--per-class")
    assert result.exit_code == 0, result.output
    assert "caf\\xe9" in result.stdout
    # figures draw names as written: `$...$` is not mathtext (a stray `$\\x{$` raised after all the work)
    math = folder(tmp_path / "d$\\bogus{$", ["bee", "cat"])
    for command in (["calibrate", always_cat, "--data", math, "--out", tmp_path / "calib", "--grid-layers", "1",
                     "--grid-keep", "0.5", "--grid-sim", "0", "--methods", "tnt", "--device", "cpu"],
                    ["visualize", always_cat, math / "val" / "cat" / "0.png", "--out", tmp_path / "viz"]):  # fmt: skip
        result = run_cli(*command)
        assert result.exit_code == 0, result.output


# ----------------------------------------------------------------------------- 2. links and special files
def test_links_and_special_files_are_never_followed(always_cat, tmp_path):
    from tnt_cli.data.folder import ImageFolderDataset

    secret = tmp_path / "secret.txt"
    secret.write_text("private key")
    model = tnt_dir(always_cat, tmp_path)
    (model / "notes.txt").symlink_to(secret)  # resolves outside the model directory
    for extra in ([], ["--dry-run"]):
        result = run_cli("push", model, "me/tiny", *extra)
        line = error_line(result)
        assert "notes.txt" in line and "outside" in line
    # tnt's lock file planted as a link to a file elsewhere: refused, the file is not truncated
    (tmp_path / ".pruned.lock").symlink_to(secret)
    line = error_line(run_cli("prune", always_cat, "--out", tmp_path / "pruned", "--prune-layers", "1",
                              "--keep-rates", "0.5"))  # fmt: skip
    assert "symbolic link" in line and secret.read_text() == "private key"
    assert not (tmp_path / "pruned").exists()
    # an ImageFolder with a FIFO, a device file, a link loop, an image reached twice: refused, never hangs
    data = folder(tmp_path / "data", ["bee", "cat"])
    fifo = data / "train" / "cat" / "stream.png"
    os.mkfifo(fifo)
    with pytest.raises(TntError, match="FIFO"):
        ImageFolderDataset(data, "train")
    line = error_line(run_cli("evaluate", always_cat, "--data", data, "--split", "train", "--device", "cpu"))
    assert "stream.png is a FIFO" in line
    fifo.unlink()
    (data / "train" / "cat" / "zero.png").symlink_to("/dev/zero")
    with pytest.raises(TntError, match="device file"):
        ImageFolderDataset(data, "train")
    (data / "train" / "cat" / "zero.png").unlink()
    (data / "train" / "cat" / "loop").symlink_to("..")
    with pytest.raises(TntError, match="link loop"):
        ImageFolderDataset(data, "train")
    (data / "train" / "cat" / "loop").unlink()
    (data / "train" / "cat" / "again.png").symlink_to(data / "train" / "bee" / "0.png")
    with pytest.raises(TntError, match="same file"):
        ImageFolderDataset(data, "train")


# ----------------------------------------------------------------------------- 3. --overwrite deletes nothing foreign
def test_overwrite_never_deletes_files_tnt_did_not_write(always_cat, tmp_path):
    from tnt_cli.io.outdir import is_tnt_output

    model = tnt_dir(always_cat, tmp_path)
    (model / "notes.txt").write_text("my notes")
    (model / "scripts").mkdir()
    (model / "scripts" / "serve.sh").write_text("#!/bin/sh")
    (model / ".git").mkdir()  # a clone of the Hub repo: hidden, and still the user's
    before = snapshot(model)
    for command in (["prune", always_cat, "--prune-layers", "1", "--keep-rates", "1"],
                    ["calibrate", always_cat, "--data", "fashion-mnist"]):  # fmt: skip
        line = error_line(run_cli(*command, "--out", model, "--overwrite"))
        assert "files tnt did not write" in line and ".git, notes.txt, scripts" in line
        assert snapshot(model) == before
    (model / "notes.txt").unlink()
    shutil.rmtree(model / "scripts")
    shutil.rmtree(model / ".git")
    (model / ".README.md.partial-1-x.tmp").write_text("")  # what a killed `evaluate --update-card` leaves is tnt's
    assert is_tnt_output(model)  # what tnt wrote alone is replaced as before
    result = run_cli("prune", always_cat, "--out", model, "--overwrite", "--prune-layers", "1", "--keep-rates", "1")
    assert result.exit_code == 0, result.output
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "README.md").write_text("my project")  # a name tnt writes, but nothing only tnt writes
    assert not is_tnt_output(mine)


# ----------------------------------------------------------------------------- 4. a refused run leaves nothing
def test_a_refused_run_leaves_nothing_and_odd_out_paths_are_one_line(always_cat, base, tmp_path):
    tmp_path = tmp_path / "work"  # beside the model fixture
    tmp_path.mkdir()
    nested = tmp_path / "new" / "deeper" / "out"
    line = error_line(run_cli("prune", base, "--out", nested, "--prune-layers", "1", "--keep-rates", "0.5"))
    assert "no trained relevance heads" in line  # refused after --out was claimed
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no parent folders, no lock
    (tmp_path / "file").write_text("a file")
    line = error_line(run_cli("prune", always_cat, "--out", tmp_path / "file" / "out", "--prune-layers", "1",
                              "--keep-rates", "0.5"))  # fmt: skip
    assert "is a file, not a directory" in line
    long = tmp_path / ("m" * 250)  # valid (the limit is 255 bytes); tnt's hidden siblings must not exceed it
    result = run_cli("prune", always_cat, "--out", long, "--prune-layers", "1", "--keep-rates", "0.5")
    assert result.exit_code == 0, result.output
    again = run_cli("prune", always_cat, "--out", long, "--prune-layers", "1", "--keep-rates", "0.5", "--overwrite")
    assert again.exit_code == 0, again.output
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["file", long.name])
    line = error_line(run_cli("prune", always_cat, "--out", tmp_path / ("m" * 256), "--prune-layers", "1",
                              "--keep-rates", "0.5"))  # fmt: skip
    assert "too long" in line


# ----------------------------------------------------------------------------- 5. malformed numbers and documents
def test_deep_json_and_seeds_beyond_64_bits_are_one_line(always_cat, tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    model = tnt_dir(always_cat, tmp_path)
    (model / "config.json").write_text(deep)
    assert "nested too deeply" in error_line(run_cli("info", model))
    schedule = tmp_path / "schedule.json"
    schedule.write_text(deep)
    line = error_line(run_cli("prune", always_cat, "--out", tmp_path / "o", "--schedule", schedule))
    assert "nested too deeply" in line and not (tmp_path / "o").exists()
    data = folder(tmp_path / "data", ["bee", "cat"])
    huge = str(2**64)
    for flag in ("--seed", "--sim-seed"):
        line = error_line(run_cli("evaluate", always_cat, "--data", data, "--device", "cpu", "--prune-layers", "1",
                                  "--keep-rates", "0.5", "--sim-prune", "1", flag, huge))  # fmt: skip
        assert f"{flag} must be a whole number that fits in 64 bits" in line
    line = error_line(run_cli("finetune", always_cat, "--out", tmp_path / "f", "--data", data, "--seed", huge))
    assert "--seed must be a whole number that fits in 64 bits" in line and not (tmp_path / "f").exists()
    line = error_line(run_cli("evaluate", always_cat, "--data", data, "--device", "cpu", "--limit", huge))
    assert "--limit must be a whole number that fits in 64 bits" in line  # any whole number, not only seeds
    result = run_cli("evaluate", always_cat, "--data", data, "--device", "cpu", "--method", "random", "--prune-layers",
                     "1", "--keep-rates", "0.5", "--seed", str(2**64 - 1))  # fmt: skip
    assert result.exit_code == 0, result.output  # the largest seed torch takes still runs


# ----------------------------------------------------------------------------- 6. resources and signals
def test_out_of_memory_from_any_allocator_names_the_setting_to_lower(always_cat, tmp_path, monkeypatch):
    from tnt_cli.methods import accuracy

    def allocate(*args, **kwargs):
        return torch.empty(1 << 50, dtype=torch.uint8)  # a petabyte: torch's CPU allocator refuses it for real

    monkeypatch.setattr(accuracy, "evaluate_model", allocate)
    data = folder(tmp_path / "data", ["bee", "cat"])
    line = error_line(run_cli("evaluate", always_cat, "--data", data, "--device", "cpu"))
    assert line.startswith("error: out of memory (") and "can't allocate memory" in line
    assert line.endswith("lower --batch-size")
    from tnt_cli.cli._errors import describe

    cuda = RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported")
    assert describe(cuda, "benchmark") == ("out of memory (CUDA error: out of memory): lower --batch-sizes", 1)


def test_a_killed_data_loader_worker_is_one_line(always_cat, tmp_path, monkeypatch):
    from tnt_cli.data import folder as folder_module

    def die_in_worker(path):
        if torch.utils.data.get_worker_info() is not None:
            os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's OOM killer would
        return original(path)

    original = folder_module.load_image
    monkeypatch.setattr(folder_module, "load_image", die_in_worker)
    data = folder(tmp_path / "data", ["bee", "cat"])
    line = error_line(run_cli("evaluate", always_cat, "--data", data, "--device", "cpu", "--workers", "1"), notes=True)
    assert "data-loading worker process died" in line and "--workers" in line


def test_a_closed_stdout_ends_the_command_quietly(always_cat):
    reader, writer = os.pipe()
    os.close(reader)  # `| head -c 10` that has already gone
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    try:
        proc = subprocess.run([sys.executable, "-m", "tnt_cli", "info", str(always_cat), "--json"], stdout=writer,
                              stderr=subprocess.PIPE, env=env, text=True, timeout=120)  # fmt: skip
    finally:
        os.close(writer)
    assert proc.returncode == 141 and proc.stderr == ""


TERM_RUN = """
import sys
sys.argv = ["tnt", *sys.argv[1:]]
from tnt_cli.cli.app import main
main()
"""


@pytest.mark.parametrize("command", ["benchmark", "finetune", "calibrate"])
def test_sigterm_is_handled_like_ctrl_c_by_long_commands(base, tmp_path, command):
    out = tmp_path / "out"
    if command == "calibrate":  # a long sweep of a baseline (no trained heads needed) over the whole test split
        args = ["calibrate", base, "--data", "fashion-mnist", "--split", "test", "--limit", "10000", "--eval-limit",
                "0", "--methods", "tome,random", "--grid-layers", "1,2,3", "--grid-keep", "0.9,0.8,0.7,0.6,0.5,0.4",
                "--grid-sim", "0,1,2,3", "--out", out]  # fmt: skip
    elif command == "benchmark":
        args = ["benchmark", "vit_tiny_patch16_224", "--random-weights", "--prune-layers", "1", "--keep-rates", "0.5",
                "--batch-sizes", "1", "--iters", "1000000", "--device", "cpu", "--out", out]  # fmt: skip
    else:
        args = ["finetune", base, "--out", out, "--data", "fashion-mnist", "--no-progress", "--recipe", "official",
                "--epochs", "100000", "--batch-size", "16", "--limit", "64", "--eval-limit", "0", "--log-every", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", TERM_RUN, *map(str, args)], env=env, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)  # fmt: skip
    started = (lambda: (out / "metrics.jsonl").exists()) if command == "finetune" else (lambda: True)
    deadline = time.monotonic() + 240
    try:
        while not ((tmp_path / ".out.lock").exists() and started()):
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "the command never started"
            time.sleep(0.2)
        time.sleep(1.0)  # into the work
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 143, err[-2000:]
    assert len(lines) == 1 and "Traceback" not in err
    assert not (tmp_path / ".out.lock").exists()  # the lock was released and removed
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    if command == "finetune":
        assert "--resume" in lines[0] and (out / "checkpoint" / "last.pt").exists()
    else:
        assert "terminated (SIGTERM)" in lines[0] and not out.exists()  # nothing half-written


def test_a_stop_that_python_wrapped_is_still_a_stop():
    """SIGTERM during an import (the benchmark above, on a loaded machine) reached the CLI as Python 3.11's
    `RuntimeError: Error calling __set_name__ ...` from Terminated: an internal error, exit 3, instead of 143."""
    from tnt_cli.cli._errors import describe
    from tnt_cli.stopping import Terminated

    for stop, code in ((Terminated(), 143), (KeyboardInterrupt(), 130)):
        try:
            try:
                raise stop
            except BaseException as exc:
                raise RuntimeError("Error calling __set_name__ on 'Field' instance 'items' in 'Segment'") from exc
        except RuntimeError as wrapped:
            assert describe(wrapped)[1] == code
    assert describe(RuntimeError("a bug"))[1] == 3


def test_decompression_bombs_are_refused_naming_the_file(always_cat, tmp_path, monkeypatch):
    import gzip

    from PIL import Image

    from tnt_cli.data.fashion_mnist import read_idx
    from tnt_cli.data.folder import load_image

    data = folder(tmp_path / "data", ["bee", "cat"])
    bomb = data / "val" / "cat" / "bomb.png"
    Image.new("1", (40, 40)).save(bomb)  # 1600 pixels: over a limit of 1100, under 2 x 1100 where Pillow stops
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1100)  # the dataset's other images have 1024
    with pytest.raises(TntError, match="decompression bomb"):
        load_image(str(bomb))
    line = error_line(run_cli("evaluate", always_cat, "--data", data, "--device", "cpu"), notes=True)
    assert "bomb.png" in line and "decompression bomb" in line
    labels = tmp_path / "labels-idx1-ubyte.gz"  # declares 10 labels, expands to 10 MB
    with gzip.open(labels, "wb") as fh:
        fh.write(b"\0\0\x08\x01" + (10).to_bytes(4, "big") + bytes(10 * 1024 * 1024))
    with pytest.raises(TntError, match=r"labels-idx1-ubyte\.gz holds more data than its header"):
        read_idx(labels)


# ----------------------------------------------------------------------------- 7. resume after the data changed
def test_resume_after_a_class_was_added_says_what_changed(base, tmp_path, monkeypatch):
    data = folder(tmp_path / "data", CLASSES, per_class=4)
    out = tmp_path / "run"
    args = ["--out", out, "--data", data, "--no-progress", "--max-steps", "2", "--batch-size", "8", "--eval-limit", "0",
            "--new-classes", "--no-distill"]  # fmt: skip
    monkeypatch.setenv(INTERRUPT_ENV, "1")
    assert run_cli("finetune", base, *args).exit_code == 130
    monkeypatch.delenv(INTERRUPT_ENV)
    folder(tmp_path / "more", ["emu"], per_class=4)
    for split in ("train", "val"):
        shutil.move(tmp_path / "more" / split / "emu", data / split / "emu")
    line = error_line(run_cli("finetune", base, *args, "--resume"))
    assert "--resume: DATA's classes changed since the checkpoint (added emu)" in line


# ----------------------------------------------------------------------------- 8. file modes
def test_every_file_tnt_writes_gets_the_mode_the_umask_gives(base, tmp_path):
    from importlib.util import find_spec

    from PIL import Image

    previous = os.umask(0o027)
    try:
        run = tmp_path / "run"
        assert run_cli("finetune", base, "--out", run, *SHORT, "--keep-checkpoint").exit_code == 0
        pruned = tmp_path / "pruned"
        assert run_cli("prune", run, "--out", pruned, "--prune-layers", "1", "--keep-rates", "0.5").exit_code == 0
        image = tmp_path / "item.png"
        Image.new("L", (28, 28), 128).save(image)
        writers = (  # every other command that writes files: sweep + plot, timings, picture, ONNX graph
            ("calibrate", run, "--data", "fashion-mnist", "--limit", "32", "--eval-limit", "0", "--methods", "tnt",
             "--grid-layers", "1", "--grid-keep", "0.5", "--grid-sim", "0", "--max-drop", "100", "--out",
             tmp_path / "calib"),
            ("benchmark", run, "--batch-sizes", "1", "--warmup", "0", "--iters", "1", "--threads", "1", "--out",
             tmp_path / "bench"),
            ("visualize", run, image, "--out", tmp_path / "viz"),
            *([("export", run, "--onnx", tmp_path / "onnx" / "model.onnx")] if find_spec("onnx") else []),
        )  # fmt: skip
        for argv in writers:
            result = run_cli(*argv)
            assert result.exit_code == 0, (argv[0], result.output)
    finally:
        os.umask(previous)
    modes = {str(p.relative_to(tmp_path)): p.stat().st_mode & 0o777 for p in tmp_path.rglob("*")}
    assert "run/model.safetensors" in modes and "run/checkpoint/last.pt" in modes and "pruned/config.json" in modes
    assert "calib/schedule.json" in modes and any(n.startswith("viz/") for n in modes)
    assert "onnx/model.onnx" in modes or not find_spec("onnx")
    wrong = {name: oct(mode) for name, mode in modes.items()
             if mode != (0o750 if (tmp_path / name).is_dir() else 0o640)}  # fmt: skip
    assert wrong == {}


# ----------------------------------------------------------------------------- 9. an unusable HF_HOME
def test_an_unusable_hf_home_or_token_path_is_one_line(always_cat, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    (tmp_path / "hf_home").write_text("a file where the cache should be")
    for token_path, needle in ((tmp_path / "hf_home" / "token", "Not a directory"), (tmp_path, "Is a directory")):
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(token_path))
        line = error_line(run_cli("push", always_cat, "me/tiny"))
        assert needle in line and "check HF_TOKEN_PATH" in line
