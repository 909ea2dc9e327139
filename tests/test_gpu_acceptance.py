"""examples/gpu/acceptance.sh: the one command a lent GPU machine runs (docs/gpu.md), proven here at toy sizes.

The runner's contract is checked directly (a failing, a timed-out and a skipped part never stop the rest; a
timeout ends the part's whole process group; the budget; which folders it may write). `--tiny` runs every part
end to end on the CPU, as CI does, and its summary, tables and bundle are read back.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "gpu" / "acceptance.sh"
PARTS = ["env", "prepare", "bench-fp32-eager", "bench-bf16-eager", "finetune", "resume", "onnx-export", "onnx-cuda",
         "ddp", "bench-bf16-compiled", "bench-fp32-compiled"]  # fmt: skip
PEERS = {"tnt", "tome", "evit", "evit-fuse", "random"}


def load_acceptance():
    spec = importlib.util.spec_from_file_location("gpu_acceptance", ROOT / "examples" / "gpu" / "acceptance.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def alive(pid: int, wait: float = 2.0) -> bool:
    """Still running after `wait` seconds (a killed process nobody has reaped yet, a zombie, counts as ended)."""
    end = time.monotonic() + wait
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        if state in ("Z", "X"):
            return False
        if time.monotonic() > end:
            return True
        time.sleep(0.05)


def test_a_failing_or_slow_part_never_stops_the_others(tmp_path):
    acc = load_acceptance()
    run = acc.Run(tmp_path / "out", tiny=True, python=sys.executable)
    (run.out / "logs").mkdir(parents=True)
    py = [sys.executable, "-c"]
    grandchild = tmp_path / "grandchild.pid"
    slow = ("import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
            f" open({str(grandchild)!r}, 'w').write(str(p.pid)); time.sleep(60)")  # fmt: skip
    parts = [
        acc.Part("broken", [*py, "import sys; print('error: it broke', file=sys.stderr); sys.exit(3)"], cap=30),
        acc.Part("slow", [*py, slow], cap=6),
        acc.Part("after-broken", [*py, "pass"], cap=30, needs=("broken",)),
        acc.Part("not-here", [*py, "pass"], cap=30, noted="needs 2 GPUs"),
        acc.Part("fine", [*py, "print('hello')"], cap=30, check=lambda run: ("passed", "checked")),
        acc.Part("bad-output", [*py, "pass"], cap=30, check=lambda run: run.json("missing.json")["key"]),
    ]
    acc.execute(run, parts, None)
    got = {name: (r.status, r.note) for name, r in run.records.items()}
    assert got["broken"] == ("failed", "exit code 3 (expected 0): error: it broke")
    assert got["slow"][0] == "timeout" and not alive(int(grandchild.read_text()))  # the whole group was ended
    assert got["after-broken"] == ("skipped", "needs broken")
    assert got["not-here"] == ("noted", "needs 2 GPUs")
    assert got["fine"] == ("passed", "checked") and "hello" in (run.out / "logs" / "fine.log").read_text()
    assert got["bad-output"][0] == "failed" and "could not be checked: TypeError" in got["bad-output"][1]
    summary = json.loads((run.out / "summary.json").read_text())
    assert [p["name"] for p in summary["parts"]] == [p.name for p in parts]
    assert "| broken | failed |" in (run.out / "summary.md").read_text()


def test_parts_past_the_budget_are_skipped_with_the_command_to_rerun_them(tmp_path):
    acc = load_acceptance()
    run = acc.Run(tmp_path / "out", tiny=True, python=sys.executable)
    (run.out / "logs").mkdir(parents=True)
    run.sizes = acc.Sizes(**{**acc.asdict(run.sizes), "budget": 30})
    run.started = time.time() - 25  # 5 s left: less than a part is started with
    acc.execute(run, [acc.Part("late", [sys.executable, "-c", "pass"], cap=30)], None)
    assert run.records["late"].status == "skipped" and "rerun with --only late" in run.records["late"].note


def test_only_adds_what_a_part_needs_unless_it_passed_here():
    acc = load_acceptance()
    run = acc.Run(Path("unused"), tiny=True, python=sys.executable)
    parts = acc.plan_parts(run)
    assert acc.with_needs(parts, {"onnx-cuda"}, {}) == {"onnx-cuda", "onnx-export", "resume", "finetune", "prepare"}
    passed = {"prepare": acc.Record("prepare", "passed")}
    assert acc.with_needs(parts, {"bench-fp32-compiled"}, passed) == {"bench-fp32-compiled"}
    assert [p.name for p in parts] == PARTS[1:]  # env runs first, always


def test_outdir_must_be_new_empty_or_an_earlier_run_of_the_same_kind(tmp_path):
    acc = load_acceptance()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("a user's file")
    with pytest.raises(SystemExit, match="is not an acceptance run's folder"):
        acc.claim(mine, None, "full")
    with pytest.raises(SystemExit, match="is not an acceptance run's folder"):
        acc.claim(mine, {"env"}, "full")
    assert (mine / "notes.txt").read_text() == "a user's file" and not (mine / "logs").exists()
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "summary.json").write_text(json.dumps({"kind": acc.KIND, "mode": "tiny", "parts": []}))
    with pytest.raises(SystemExit, match="holds an acceptance run: give a new folder, or --only"):
        acc.claim(earlier, None, "tiny")
    with pytest.raises(SystemExit, match="holds a tiny run, not a full one"):
        acc.claim(earlier, {"env"}, "full")
    assert acc.claim(earlier, {"env"}, "tiny")["mode"] == "tiny"
    assert acc.claim(tmp_path / "new", None, "full") is None


@pytest.mark.slow
def test_the_tiny_run_passes_every_part_on_the_cpu(tmp_path):
    """What CI runs: `bash examples/gpu/acceptance.sh OUTDIR --tiny`, every part passing (or noted: no GPU here)."""
    out = tmp_path / "acceptance"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    start = time.monotonic()
    proc = subprocess.run(["bash", str(SCRIPT), "--tiny", str(out)], capture_output=True, text=True, env=env,
                          timeout=600)  # fmt: skip
    seconds = time.monotonic() - start
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    statuses = {p["name"]: p["status"] for p in summary["parts"]}
    assert list(statuses) == PARTS
    assert set(statuses.values()) <= {"passed", "noted"}, statuses
    print(f"tiny acceptance run: {seconds:.0f} s")
    for name in ("bench-fp32-eager", "bench-bf16-eager", "bench-bf16-compiled", "bench-fp32-compiled"):
        report = json.loads((out / "bench" / name / "report.json").read_text())
        assert [row["batch_size"] for row in report["results"]] == [1, 4]
        assert set(report["methods"]) == PEERS and all(set(row["methods"]) == PEERS for row in report["results"])
    metrics = [json.loads(line) for line in (out / "finetune" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, 9))  # interrupted at 4, resumed to 8, nothing twice
    tables = (out / "results-table.md").read_text()
    assert "They are no measurement of tnt on a GPU" in tables and tables.count("| EViT + fusion |") == 4
    assert "**tnt finetune**" in tables and (out / "summary.md").read_text().count("| passed |") >= 9
    with tarfile.open(out / "results.tar.gz") as tar:
        names = tar.getnames()
    assert "acceptance/summary.md" in names and "acceptance/logs/resume.log" in names
    assert not [n for n in names if n.endswith((".safetensors", ".onnx", ".pt", ".gz"))]
