"""GPU acceptance in one command: tnt's CUDA paths run and measured, every part logged, a summary at the end.

    bash examples/gpu/acceptance.sh OUTDIR            # one GPU machine, about 8 minutes (docs/gpu.md)
    bash examples/gpu/acceptance.sh OUTDIR --tiny     # the same parts at toy sizes, on the CPU (CI runs it)
    bash examples/gpu/acceptance.sh OUTDIR --only bench-fp32-compiled    # some parts (and what they need)

Parts, in order (each a separate process with its own log and time limit; a failing part never stops the
others, a part whose input failed is skipped; the whole run keeps to --budget):
  env                 GPUs, driver, CUDA, torch, onnxruntime providers (env.json)
  prepare             Fashion-MNIST-shaped data and a random-weight DeiT-S directory (no network)
  bench-fp32-eager    tnt benchmark --methods tnt,tome,evit,evit-fuse,random at batch 1, 64, 256
  bench-bf16-eager      ... in bf16 autocast
  finetune            tnt finetune, bf16 autocast, --compile, stopped half-way (a simulated Ctrl-C)
  resume                ... --resume to the end
  onnx-export         tnt export of the fine-tuned model (checked against PyTorch in onnxruntime's CPU provider)
  onnx-cuda           the file in onnxruntime's CUDA provider, if this onnxruntime has one
  ddp                 2-process torchrun fine-tune, if the machine has 2 GPUs (else noted)
  bench-bf16-compiled / bench-fp32-compiled   the benchmarks under torch.compile

OUTDIR gets summary.md (the parts, then the tables to paste), summary.json, results-table.md, logs/, every
part's own output, and results.tar.gz (everything but data, weights and checkpoints) to carry home.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

import tables  # noqa: E402 - the folder's own module

KIND = "tnt-gpu-acceptance"
METHODS = "tnt,tome,evit,evit-fuse,random"
MIN_PART_SECONDS = 20  # a part is not started with less time left than this
BUNDLE_MAX_BYTES = 2 * 2**20  # results.tar.gz leaves out bigger files
BULKY = (".safetensors", ".onnx", ".pt", ".gz")  # weights, ONNX files, checkpoints, data: never in results.tar.gz
PASSING = ("passed", "noted")


@dataclass(frozen=True)
class Sizes:
    """What differs between the GPU run and the CPU smoke run (--tiny)."""

    steps: int
    batch: int
    workers: int
    eval_limit: int
    log_every: int
    bench_batches: str
    onnx_batch: int
    schedule: tuple[str, ...]  # the benchmark's schedule flags
    budget: float | None  # seconds for the whole run (None: no limit)
    ddp_steps: int


FULL = Sizes(
    steps=300,
    batch=64,
    workers=6,
    eval_limit=1024,
    log_every=10,
    bench_batches="1,64,256",
    onnx_batch=8,
    schedule=("--prune-layers", "2", "--keep-rates", "0.6", "--sim-prune", "25"),
    budget=470,
    ddp_steps=40,
)
TINY = Sizes(steps=8, batch=16, workers=0, eval_limit=64, log_every=1, bench_batches="1,4", onnx_batch=2,
             schedule=("--prune-layers", "1", "--keep-rates", "0.5"), budget=None, ddp_steps=4)  # fmt: skip


@dataclass
class Part:
    name: str
    argv: list[str]
    cap: float  # seconds at most
    expect: int = 0  # the exit code that means it did its job (130: stopped on purpose)
    needs: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    owns: tuple[str, ...] = ()  # folders (under OUTDIR) it writes: cleared before it runs
    stdout: str | None = None  # file (under OUTDIR) for its stdout (JSON); else stdout goes to the log
    check: Callable[[Run], tuple[str, str]] | None = None  # after the expected exit: (status, note)
    noted: str | None = None  # not applicable on this machine: recorded, not run


@dataclass
class Record:
    name: str
    status: str  # passed | failed | timeout | skipped | noted
    seconds: float = 0.0
    exit_code: int | None = None
    command: str = ""
    log: str = ""
    note: str = ""


class Run:
    """One invocation: OUTDIR, the mode, the machine (from env.json) and the parts' records so far."""

    def __init__(self, out: Path, tiny: bool, python: str) -> None:
        self.out, self.tiny, self.python = out, tiny, python
        self.sizes = TINY if tiny else FULL
        self.records: dict[str, Record] = {}
        self.machine: dict = {}
        self.started = time.time()

    def path(self, relative: str) -> Path:
        return self.out / relative

    @property
    def cuda(self) -> bool:
        return bool(self.machine.get("cuda_available"))

    @property
    def device(self) -> str:
        """Full runs insist on CUDA (a one-line error per part without it); the smoke run takes what is here."""
        return "cuda" if not self.tiny or self.cuda else "cpu"

    def tnt(self, *args: str) -> list[str]:
        return [self.python, "-m", "tnt_cli", *args]

    def json(self, relative: str) -> dict | None:
        try:
            return json.loads(self.path(relative).read_text())
        except (OSError, ValueError):
            return None


# ----------------------------------------------------------------------------------------------------------- parts
def plan_parts(run: Run) -> list[Part]:
    s, dev = run.sizes, run.device
    model, data_env = str(run.path("work/model")), {"TNT_FASHION_MNIST_DIR": str(run.path("work/fashion-mnist"))}
    finetune = run.tnt("finetune", model, "--data", "fashion-mnist", "--out", str(run.path("finetune")),
                       "--new-classes", "--train", "full", "--amp", "bf16", "--compile", "--device", dev,
                       "--max-steps", str(s.steps), "--batch-size", str(s.batch), "--workers", str(s.workers),
                       "--drop-keeps", "0.5", "--log-every", str(s.log_every), "--eval-limit", str(s.eval_limit),
                       "--no-progress", "--json")  # fmt: skip
    half = str(s.steps // 2)
    parts = [
        Part(
            "prepare",
            [run.python, str(HERE / "prepare.py"), "--out", str(run.path("work"))] + (["--tiny"] if run.tiny else []),
            cap=180,
            owns=("work", "work.json"),
            stdout="work.json",
            check=check_prepare,
        ),
        *bench_parts(run, model, compiled=False),
        Part(
            "finetune",
            finetune,
            cap=300,
            expect=130,
            needs=("prepare",),
            owns=("finetune", "finetune.json"),
            env={**data_env, "TNT_INTERRUPT_AT_STEP": half},
            check=check_interrupted,
        ),
        Part(
            "resume",
            [*finetune, "--resume"],
            cap=240,
            needs=("finetune",),
            env=data_env,
            stdout="finetune.json",
            check=check_resumed,
        ),
        Part(
            "onnx-export",
            run.tnt(
                "export",
                str(run.path("finetune")),  # at the schedule it was fine-tuned for (the default recipe's blocks)
                "--onnx",
                str(run.path("onnx/model.onnx")),
                "--batch-size",
                str(s.onnx_batch),
                "--json",
            ),
            cap=180,
            needs=("resume",),
            owns=("onnx",),
            stdout="onnx/export.json",
            check=check_export,
        ),
        Part(
            "onnx-cuda",
            [
                run.python,
                str(HERE / "onnx_cuda.py"),
                str(run.path("onnx/model.onnx")),
                "--out",
                str(run.path("onnx/cuda.json")),
            ],
            cap=120,
            needs=("onnx-export",),
            check=check_onnx_cuda,
        ),
        ddp_part(run, model, data_env),
        *bench_parts(run, model, compiled=True),
    ]
    return parts


def bench_parts(run: Run, model: str, *, compiled: bool) -> list[Part]:
    """The benchmark at two precisions; compiled ones bf16 first (the deployment case), eager ones fp32 first."""
    dtypes = ("bf16", "fp32") if compiled else ("fp32", "bf16")
    parts = []
    for dtype in dtypes:
        name = f"bench-{dtype}-{'compiled' if compiled else 'eager'}"
        argv = run.tnt("benchmark", model, *run.sizes.schedule, "--methods", METHODS, "--batch-sizes",
                       run.sizes.bench_batches, "--dtype", dtype, "--device", run.device, "--out",
                       str(run.path(f"bench/{name}")), *(["--compile"] if compiled else []))  # fmt: skip
        parts.append(Part(name, argv, cap=300 if compiled else 150, needs=("prepare",), owns=(f"bench/{name}",),
                          check=functools.partial(check_bench, name=name)))  # fmt: skip
    return parts


def ddp_part(run: Run, model: str, data_env: dict[str, str]) -> Part:
    """Two processes: on two GPUs (NCCL), or on the CPU (gloo) in the smoke run; one GPU is noted, not run."""
    s = run.sizes
    argv = [run.python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "tnt_cli",
            "finetune", model, "--data", "fashion-mnist", "--out", str(run.path("ddp")), "--new-classes",
            "--train", "full", "--device", run.device, "--max-steps", str(s.ddp_steps), "--batch-size",
            str(s.batch), "--eval-limit", str(s.eval_limit), "--no-progress", "--json"]  # fmt: skip
    gpus = int(run.machine.get("gpu_count") or 0)
    noted = None
    if run.device == "cuda" and gpus < 2:
        noted = f"{gpus} GPU(s) here: 2-process DDP needs 2 (the CPU gloo path is tested by tests/test_finetune.py)"
    env = {**data_env, "OMP_NUM_THREADS": "1"}
    return Part("ddp", argv, cap=240, needs=("prepare",), owns=("ddp", "ddp.json"), env=env, stdout="ddp.json",
                check=check_ddp, noted=noted)  # fmt: skip


# ----------------------------------------------------------------------------------------------------------- checks
def check_env(run: Run) -> tuple[str, str]:
    machine = run.json("env.json") or {}
    gpus = ", ".join(g["name"] for g in machine.get("gpus", [])) or "no CUDA GPU"
    return "passed", f"{gpus}; torch {machine.get('torch')}"


def check_prepare(run: Run) -> tuple[str, str]:
    info = run.json("work.json") or {}
    model = info.get("model", {})
    ok = (run.path("work/model/model.safetensors").exists()
          and run.path("work/fashion-mnist/train-images-idx3-ubyte.gz").exists())  # fmt: skip
    return ("passed" if ok else "failed"), f"{model.get('architecture')} ({model.get('parameters', 0):,} parameters)"


def check_interrupted(run: Run) -> tuple[str, str]:
    state = run.json("finetune/checkpoint/state.json") or {}
    half = run.sizes.steps // 2
    if state.get("step") != half:
        return "failed", f"expected a checkpoint at step {half}, found {state.get('step')}"
    return "passed", f"stopped after step {half} of {run.sizes.steps} with a checkpoint (exit 130, as asked)"


def finetune_metrics(run: Run, folder: str = "finetune") -> list[dict]:
    try:
        lines = run.path(f"{folder}/metrics.jsonl").read_text().splitlines()
    except OSError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


def check_resumed(run: Run) -> tuple[str, str]:
    summary, metrics = run.json("finetune.json") or {}, finetune_metrics(run)
    steps = [m["step"] for m in metrics]
    problems = []
    if summary.get("steps") != run.sizes.steps:
        problems.append(f"{summary.get('steps')} steps, not {run.sizes.steps}")
    if not steps or steps != sorted(set(steps)) or steps[-1] != run.sizes.steps:
        problems.append(f"metrics.jsonl steps are not one increasing run to {run.sizes.steps}")
    expected_amp = "bf16" if run.device == "cuda" else "off"
    if summary.get("amp") != expected_amp:
        problems.append(f"amp {summary.get('amp')}, expected {expected_amp}")
    log = run.path("logs/resume.log").read_text(errors="replace") if run.path("logs/resume.log").exists() else ""
    if f"resuming at step {run.sizes.steps // 2}/" not in log:
        problems.append("the log does not say where it resumed")
    if problems:
        return "failed", "; ".join(problems)
    evaluation = summary.get("evaluation") or {}
    top1 = [f"{(evaluation.get(k) or {}).get('top1', float('nan')):.3f}" for k in ("dense", "pruned")]
    return (
        "passed",
        f"amp {summary['amp']}, final loss {summary.get('final_loss', float('nan')):.3f}, "
        f"top-1 dense/pruned {'/'.join(top1)}",
    )


def check_export(run: Run) -> tuple[str, str]:
    report = run.json("onnx/export.json") or {}
    if not report.get("verified"):
        return "failed", "the export was not verified in onnxruntime"
    return "passed", f"max abs diff vs PyTorch {report.get('max_abs_diff', float('nan')):.2e} (CPU provider)"


def check_onnx_cuda(run: Run) -> tuple[str, str]:
    report = run.json("onnx/cuda.json") or {}
    if not report.get("cuda_provider"):
        providers = ", ".join(report.get("providers", [])) or "none"
        return "noted", f"this onnxruntime has no CUDA provider (providers: {providers}); CPU provider only"
    return "passed", (f"CUDA provider: {report['cuda_ms']:.2f} ms vs CPU {report['cpu_ms']:.2f} ms per batch, "
                      f"max abs diff {report['max_abs_diff_vs_cpu']:.2e}")  # fmt: skip


def check_ddp(run: Run) -> tuple[str, str]:
    summary = run.json("ddp.json") or {}
    ok = summary.get("world_size") == 2 and summary.get("steps") == run.sizes.ddp_steps
    return ("passed" if ok else "failed"), f"world size {summary.get('world_size')}, {summary.get('steps')} steps"


def check_bench(run: Run, name: str) -> tuple[str, str]:
    report = run.json(f"bench/{name}/report.json")
    if report is None:
        return "failed", "no report.json"
    batches = [row["batch_size"] for row in report["results"]]
    wanted = [int(b) for b in run.sizes.bench_batches.split(",")]
    if batches != wanted or report["environment"]["device"] != run.device:
        return "failed", f"batches {batches} on {report['environment']['device']}"
    speedups = ", ".join(f"b{row['batch_size']} {row['speedup']:.2f}x" for row in report["results"])
    note = f"TNT speedup over dense {speedups}"
    if report["settings"]["compile"]:
        worst = max((c["max_abs_diff"] for c in (report.get("compile_check") or {}).values()), default=0.0)
        note += f"; compiled vs eager logits: max abs diff {worst:.2g}"
        mismatched = [n for n, c in (report.get("compile_check") or {}).items() if not c["allclose"]]
        if mismatched and report["settings"]["dtype"] == "fp32":  # bf16 rounding differs between kernels
            return "failed", note + f" (not allclose: {', '.join(mismatched)})"
    return "passed", note


# ----------------------------------------------------------------------------------------------------------- running
class Stop(Exception):
    """SIGTERM: the part running is ended with its whole process group, then the summary is written."""


def _raise_stop(signum, frame):
    raise Stop()


def run_part(run: Run, part: Part, timeout: float) -> Record:
    """Run one part in its own process group (so a timeout ends its workers and compilers too)."""
    for owned in map(run.path, part.owns):
        if owned.is_dir() and not owned.is_symlink():
            shutil.rmtree(owned)
        else:
            owned.unlink(missing_ok=True)
    log_path = run.path(f"logs/{part.name}.log")
    record = Record(part.name, "failed", command=shlex.join(part.argv), log=str(log_path.relative_to(run.out)))
    env = {**os.environ, **part.env}
    start = time.monotonic()
    with open(log_path, "w") as log, contextlib.ExitStack() as stack:
        log.write(f"$ {record.command}\n# env: {json.dumps(part.env)}\n# time limit: {timeout:.0f} s\n")
        log.flush()
        stdout = log
        if part.stdout is not None:
            run.path(part.stdout).parent.mkdir(parents=True, exist_ok=True)
            stdout = stack.enter_context(open(run.path(part.stdout), "w"))
        # its own process group: a timeout (or our own end) stops its workers, launcher children and compilers too
        proc = subprocess.Popen(part.argv, stdout=stdout, stderr=log, env=env, cwd=ROOT, preexec_fn=os.setpgrp)
        try:
            record.exit_code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            record.status, record.note = "timeout", f"stopped after its {timeout:.0f} s limit"
        finally:
            _end_group(proc)
    record.seconds = round(time.monotonic() - start, 1)
    if record.status == "timeout":
        return record
    if record.exit_code != part.expect:
        record.note = f"exit code {record.exit_code} (expected {part.expect}): " + _last_error(log_path)
        return record
    try:
        record.status, record.note = part.check(run) if part.check is not None else ("passed", "")
    except Exception as exc:  # an output in an unexpected shape is that part's failure, not the run's
        record.note = f"its output could not be checked: {type(exc).__name__}: {exc}"
    return record


def _end_group(proc: subprocess.Popen) -> None:
    """End what is left of the part's process group (all of it after a timeout; stray workers after an exit)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _last_error(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:") or "Error" in line]
    return (errors or lines or ["no output"])[-1][:300]


def execute(run: Run, parts: list[Part], only: set[str] | None) -> None:
    deadline = None if run.sizes.budget is None else run.started + run.sizes.budget
    for part in parts:
        if only is not None and part.name not in only:
            continue
        failed = [n for n in part.needs if n in run.records and run.records[n].status not in PASSING]
        missing = [n for n in part.needs if n not in run.records]
        if part.noted is not None:
            record = Record(part.name, "noted", command=shlex.join(part.argv), note=part.noted)
        elif failed or missing:
            record = Record(part.name, "skipped", note=f"needs {', '.join(failed + missing)}")
        elif deadline is not None and deadline - time.time() < MIN_PART_SECONDS:
            record = Record(
                part.name,
                "skipped",
                command=shlex.join(part.argv),
                note=f"out of time (budget {run.sizes.budget:.0f} s): rerun with --only {part.name}",
            )
        else:
            timeout = part.cap if deadline is None else min(part.cap, deadline - time.time())
            print(f"[{time.time() - run.started:5.0f} s] {part.name} ...", flush=True)
            record = run_part(run, part, timeout)
        run.records[part.name] = record
        print(f"[{time.time() - run.started:5.0f} s] {part.name}: {record.status} {record.note}", flush=True)
        write_summary(run)


# ----------------------------------------------------------------------------------------------------------- results
def write_summary(run: Run) -> None:
    created = dt.datetime.fromtimestamp(run.started, dt.timezone.utc).isoformat(timespec="seconds")
    data = {"kind": KIND, "mode": "tiny" if run.tiny else "full", "device": run.device, "created_utc": created,
            "wall_s": round(time.time() - run.started, 1), "machine": run.machine,
            "parts": [asdict(r) for r in run.records.values()]}  # fmt: skip
    run.path("summary.json").write_text(json.dumps(data, indent=2) + "\n")
    text = results_tables(run)
    run.path("results-table.md").write_text(text)
    run.path("summary.md").write_text(summary_markdown(run, data, text))


def machine_line(run: Run) -> str:
    m = run.machine
    gpus = ", ".join(f"{g['name']} ({g['memory_gib']} GiB, sm {g['capability']})" for g in m.get("gpus", []))
    smi = m.get("nvidia_smi")
    driver = smi[0].get("driver_version") if isinstance(smi, list) and smi else "?"
    return (f"{gpus or 'no CUDA GPU'}; driver {driver}; torch {m.get('torch')} (CUDA {m.get('cuda_build')}), "
            f"timm {(m.get('versions') or {}).get('timm')}, onnxruntime {m.get('onnxruntime')}; "
            f"{m.get('cpu_count')} x {m.get('cpu')}")  # fmt: skip


def results_tables(run: Run) -> str:
    measured = run.device == "cuda" and not run.tiny
    lines = (
        []
        if measured
        else [
            "> Smoke run (--tiny, toy sizes"
            + (", on the CPU" if run.device == "cpu" else "")
            + "): these numbers only show that every part runs. They are no measurement of tnt on a GPU.",
            "",
        ]
    )
    for name in ("bench-fp32-eager", "bench-bf16-eager", "bench-bf16-compiled", "bench-fp32-compiled"):
        report = run.json(f"bench/{name}/report.json")
        if report is not None and run.records.get(name, Record(name, "")).status in PASSING:
            lines += [_table(name, tables.bench_table, report), ""]
    summary = run.json("finetune.json")
    if summary is not None or run.path("finetune/metrics.jsonl").exists():
        compiled = "dynamo disabled (--tiny)" if os.environ.get("TORCHDYNAMO_DISABLE") == "1" else "on"
        arch = ((run.json("work.json") or {}).get("model") or {}).get("architecture", "DeiT-S")
        metrics, resumed_at = finetune_metrics(run), run.sizes.steps // 2
        lines += [f"**tnt finetune** ({arch}, random weights, synthetic Fashion-MNIST-shaped data, "
                  "--drop-keeps 0.5):", "",
                  _table("finetune", tables.finetune_table, summary, metrics, resumed_at, compiled)]  # fmt: skip
    return "\n".join(lines) + "\n"


def _table(name: str, make: Callable[..., str], *args) -> str:
    """A table, or one line saying why there is none (an odd output must not stop the run's summary)."""
    try:
        return make(*args)
    except Exception as exc:
        return f"_{name}: no table ({type(exc).__name__}: {exc})_\n"


def summary_markdown(run: Run, data: dict, tables_text: str) -> str:
    mode = "tiny smoke run" if run.tiny else "full run"
    lines = [
        f"# tnt GPU acceptance ({mode}, device {run.device})",
        "",
        f"Machine: {machine_line(run)}.",
        "",
        f"{data['created_utc']}, wall time {data['wall_s']:.0f} s.",
        "",
        "| part | status | seconds | note |",
        "|:---|:---|---:|:---|",
    ]
    for r in run.records.values():
        lines.append(f"| {r.name} | {r.status} | {r.seconds:.0f} | {r.note.replace('|', '/')} |")
    lines += ["", "Each part's command and output: logs/PART.log.", "", "## Tables", "", tables_text]
    return "\n".join(lines) + "\n"


def bundle(run: Run) -> Path:
    """results.tar.gz: every file but the data, the weights, ONNX files and checkpoints (the bulky ones)."""
    target = run.path("results.tar.gz")
    with tarfile.open(target, "w:gz") as tar:
        for path in sorted(run.out.rglob("*")):
            relative = path.relative_to(run.out)
            if path.is_file() and not path.is_symlink() and path.suffix not in BULKY \
                    and path.stat().st_size <= BUNDLE_MAX_BYTES:  # fmt: skip
                tar.add(path, arcname=str(Path(run.out.name) / relative))
    return target


# ----------------------------------------------------------------------------------------------------------- main
def with_needs(parts: list[Part], only: set[str], records: dict[str, Record]) -> set[str]:
    """`only` plus every part it needs that has not passed in this OUTDIR (on a bare machine: all of them)."""
    needs = {p.name: p.needs for p in parts}
    selected, todo = set(only), list(only)
    while todo:
        for need in needs.get(todo.pop(), ()):
            if need not in selected and (need not in records or records[need].status not in PASSING):
                selected.add(need)
                todo.append(need)
    return selected


def claim(out: Path, only: set[str] | None, mode: str) -> dict | None:
    """OUTDIR must be new, empty, or (with --only) an earlier acceptance run of the same mode, whose records are
    kept."""
    previous = None
    if out.exists():
        try:
            previous = json.loads((out / "summary.json").read_text())
        except (OSError, ValueError):
            previous = None
        if previous is not None and previous.get("kind") != KIND:
            previous = None
        if previous is None and (not out.is_dir() or any(out.iterdir())):
            raise SystemExit(f"error: {out} exists and is not an acceptance run's folder: give a new or empty one")
        if previous is not None and only is None:
            raise SystemExit(f"error: {out} holds an acceptance run: give a new folder, or --only PARTS to rerun some")
        if previous is not None and previous.get("mode") != mode:
            raise SystemExit(f"error: {out} holds a {previous.get('mode')} run, not a {mode} one: give a new folder")
    (out / "logs").mkdir(parents=True, exist_ok=True)
    return previous


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, metavar="OUTDIR")
    parser.add_argument("--tiny", action="store_true", help="toy sizes on whatever device is here (CI: the CPU)")
    parser.add_argument(
        "--only",
        help="comma-separated parts to run, with the parts they need that have not passed "
        "in OUTDIR (an earlier run's folder, or a new one); env always runs",
    )
    parser.add_argument(
        "--budget", type=float, help=f"seconds for the whole run (default: {FULL.budget:g} full, none tiny)"
    )
    args = parser.parse_args(argv)
    only = {p.strip() for p in args.only.split(",") if p.strip()} if args.only else None
    out = args.out.resolve()
    previous = claim(out, only, "tiny" if args.tiny else "full")
    run = Run(out, args.tiny, sys.executable)
    if args.budget is not None:
        run.sizes = Sizes(**{**asdict(run.sizes), "budget": args.budget})
    known = {p.name for p in plan_parts(run)} | {"env"}
    if only is not None and only - known:
        raise SystemExit(f"error: unknown part(s) {', '.join(sorted(only - known))}: choose from {', '.join(known)}")
    if previous is not None:
        run.records = {r["name"]: Record(**r) for r in previous.get("parts", [])}
    if only is not None:
        only = with_needs(plan_parts(run), only, run.records)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded: the machine may have no network
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    os.environ.setdefault("COLUMNS", "160")  # logs keep rich's lines whole
    if args.tiny:  # CI's CPU: one thread per toy model, and no inductor compile (minutes of C++ on a small CPU)
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
    signal.signal(signal.SIGTERM, _raise_stop)
    env_part = Part("env", [run.python, str(HERE / "environment.py"), "--out", str(out / "env.json")]
                    + ([] if args.tiny else ["--require-cuda"]), cap=90, check=check_env)  # fmt: skip
    try:
        execute(run, [env_part], None)
        run.machine = run.json("env.json") or {}
        execute(run, plan_parts(run), only)
    except (Stop, KeyboardInterrupt):
        print("stopped: the summary holds the parts that finished", file=sys.stderr)
    write_summary(run)
    target = bundle(run)
    print(run.path("summary.md").read_text())
    print(f"wrote {run.path('summary.md')} and {target}")
    return 0 if all(r.status in PASSING for r in run.records.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
