"""The study behind README's Results: TNT against baselines fine-tuned the same way, through the product.

    .venv/bin/python examples/fashion_mnist/study.py --bench fashion-mnist --seeds 0,1,2
    .venv/bin/python examples/fashion_mnist/study.py --bench cluttered-fashion-mnist --seeds 0,1,2
    .venv/bin/python examples/fashion_mnist/study.py --report          # tables from the rows already measured

A thin driver over the library `tnt finetune` and `tnt evaluate` run (no loop or recipe of its own): for every
(method, seed) it fine-tunes the shipped base model with `tnt_cli.train.trainer.finetune` (the same `TrainConfig`
the CLI builds: the default recipe, `--max-steps`, `--batch-size`, `--method`), then evaluates the output on the
FULL test set with `apply_method` + `evaluate_model` (what `tnt evaluate` runs) at every schedule: one stage after
block 1 at keep 0.7 / 0.5 / 0.3 / 0.15 and two-stage schedules after blocks 1 and 3. Each baseline runs at the
GMACs closest to TNT's at that schedule (the rule `tnt evaluate` uses); every row records its GMACs.

Fine-tuned models are cached in out/study/<bench>/<run>/ and rows in results/study/rows-<bench>.csv, so an
interrupted study resumes where it stopped. Each row can be reproduced with the two CLI commands `--commands`
prints.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
from common import BASE_DIRS, OUT, RESULTS  # noqa: E402

STUDY_OUT = OUT / "study"
STUDY_RESULTS = RESULTS / "study"
BENCHES = ("fashion-mnist", "cluttered-fashion-mnist", "textured-fashion-mnist")
PRUNE_BLOCK = 1
KEEPS = (0.7, 0.5, 0.3, 0.15)
MULTI = (((1, 3), (0.7, 0.7)), ((1, 3), (0.5, 0.5)))
# The default recipe before this round ("sigmoid-drop", the paper's noisy step with a pruning pass), spelled out so
# its rows stay reproducible whatever the default becomes.
NOISY = {"anchor": False, "noise_blocks": (0, 1, 2, 3), "sigma0": 1.0, "relevance": "sigmoid", "target_rate": 0.3,
         "rate_weight": 1.0}  # fmt: skip
BASELINE = {"anchor": False, "noise_blocks": (0, 1, 2, 3), "relevance": "sigmoid"}
ANCHORED = {"anchor": True, "noise_blocks": (PRUNE_BLOCK,), "sigma0": 1.0, "heads_fraction": 0.25}
PROGRESSIVE = {**ANCHORED, "relevance": "rank", "noise_blocks": (1, 3), "drop_block": None}
# run name -> (finetune --method, --reducer, other `tnt finetune` settings); the name labels it in every table
RUNS: dict[str, tuple[str, str, dict]] = {
    "tnt": ("tnt", "merge", {"drop_block": None}),  # the default recipe, as it is now (tnt-rank-prog-merge's settings)
    "tnt-noisy": ("tnt", "drop", NOISY),
    "tnt-noisy-merge": ("tnt", "merge", NOISY),
    "tnt-noisy-hn": ("tnt", "drop", {**NOISY, "noise_trains": "heads"}),  # the noise trains the heads only
    # the anchored step: a clean dense pass trains the backbone, the noise the heads only (sigmoid's rate target
    # tied to the pruning pass's keep rate)
    "tnt-anchor": ("tnt", "drop", {**ANCHORED, "relevance": "sigmoid"}),
    "tnt-rank": ("tnt", "drop", {**ANCHORED, "relevance": "rank"}),  # ... and the rank relevance
    "tnt-rank-merge": ("tnt", "merge", {**ANCHORED, "relevance": "rank"}),  # ... with merging
    "tnt-rank-gmerge": ("tnt", "merge", {**ANCHORED, "relevance": "rank", "merge_threshold": 0.5}),  # ... gated
    # ... gated at the threshold `--merge-threshold` chose on textured training images (merge-threshold-*.json)
    "tnt-rank-gmerge.9": ("tnt", "merge", {**ANCHORED, "relevance": "rank", "merge_threshold": 0.9}),
    "tnt-rank-fuse": ("tnt", "fuse", {**ANCHORED, "relevance": "rank"}),  # ... the left-out tokens fused into one
    # ... progressive: heads after blocks 1 and 3, the pruning pass prunes at both (keep split between them)
    "tnt-rank-prog": ("tnt", "drop", {**PROGRESSIVE}),
    # the default recipe at the baselines' training GMACs (fewer steps: EQUAL_BUDGET)
    "tnt-eq": ("tnt", "merge", {"drop_block": None}),
    "tnt-rank-prog-merge": ("tnt", "merge", {**PROGRESSIVE}),  # ... progressive and merging
    # ... the merge gated at 0.9 (the textured set's choice): for heavy pruning, where ungated merging hurts
    "tnt-rank-prog-gmerge.9": ("tnt", "merge", {**PROGRESSIVE, "merge_threshold": 0.9}),
    # baselines: the step and pruning-pass block they trained with in every round (their rows stay reproducible)
    "random": ("random", "drop", BASELINE),
    "evit": ("evit", "drop", BASELINE),
    "evit-fuse": ("evit-fuse", "drop", BASELINE),
    "tome": ("tome", "drop", BASELINE),
}
# run -> the run whose settings it trains with, for fewer steps: as many as the baselines' training GMACs allow
EQUAL_BUDGET = {"tnt-eq": "tnt"}
BASELINES = ("random", "evit", "evit-fuse", "tome")
FIELDS = ("bench", "run", "method", "reducer", "seed", "steps", "batch", "schedule", "keep", "gmacs", "gmacs_tnt",
          "top1", "top5", "images", "train_s")  # fmt: skip
# What the study sets in every `tnt finetune` run besides the run's own method, steps, batch and seed; everything
# else is the default recipe's. A milder crop than ImageNet's 0.08 for 28 px items; a short warmup (the default,
# one epoch capped at half the run, would spend half of a 300-step run warming up); the pruning pass after the block
# the study evaluates; no end-of-run evaluation (the study evaluates on the full test set itself); the whole train
# split (no slice held out for `tnt calibrate`: the study calibrates nothing, and its rows stay comparable).
FINETUNE = {"scale": (0.6, 1.0), "warmup_epochs": 0.03, "drop_block": PRUNE_BLOCK, "eval_limit": 0,
            "holdout": False}  # fmt: skip


def schedules() -> list[tuple[str, object]]:
    from tnt_cli.engine import Schedule

    out = [("dense", Schedule())]
    out += [(f"block {PRUNE_BLOCK} keep {k:g}", Schedule((PRUNE_BLOCK,), (k,))) for k in KEEPS]
    out += [(" + ".join(f"block {b} keep {k:g}" for b, k in zip(bl, ks)), Schedule(bl, ks)) for bl, ks in MULTI]
    return out


def run_dir(bench: str, run: str, seed: int, steps: int, batch: int) -> Path:
    return STUDY_OUT / bench / f"{run}-s{seed}-{steps}x{batch}"


def finetune_settings(bench: str, run: str, seed: int, steps: int, batch: int) -> dict:
    """The settings one run gives `tnt finetune` (`TrainConfig` names): what the study varies, nothing else."""
    method, reducer, extra = RUNS[run]
    max_steps = equal_budget_steps(bench, run, steps) if run in EQUAL_BUDGET else steps
    return {"model": str(BASE_DIRS[bench]), "data": bench, "out": str(run_dir(bench, run, seed, steps, batch)),
            "method": method, "reducer": reducer, "max_steps": max_steps, "batch_size": batch, "seed": seed,
            **FINETUNE, **extra}  # fmt: skip


def equal_budget_steps(bench: str, run: str, steps: int) -> int:
    """The steps `run` may train for within the training GMACs the cheapest baseline spends in `steps` steps."""
    budget = min(train_gmacs_per_image(bench, b) for b in BASELINES) * steps
    return min(steps, math.floor(budget / train_gmacs_per_image(bench, EQUAL_BUDGET[run])))


def finetune_config(bench: str, run: str, seed: int, steps: int, batch: int):
    """The `TrainConfig` that `tnt finetune` builds from the flags `commands()` prints."""
    from tnt_cli.train.config import TrainConfig

    return TrainConfig(**finetune_settings(bench, run, seed, steps, batch), progress=False)


def commands(bench: str, run: str, seed: int, steps: int, batch: int, schedule: str) -> str:
    """The CLI that reproduces one row (same code path, same numbers)."""
    from tnt_cli.cli.declared import argv_from
    from tnt_cli.train.config import SETTINGS

    settings = finetune_settings(bench, run, seed, steps, batch)
    out = run_dir(bench, run, seed, steps, batch).relative_to(ROOT)
    settings.update(model=str(BASE_DIRS[bench].relative_to(ROOT)), out=str(out))
    ft = " ".join(["tnt finetune", *argv_from(SETTINGS, settings)])
    method, reducer, extra = RUNS[run]
    sched = next(s for name, s in schedules() if name == schedule)
    flags = ""
    if sched.prune_layers:
        flags = f" --prune-layers {','.join(map(str, sched.prune_layers))} --keep-rates "
        flags += ",".join(f"{k:g}" for k in sched.keep_rates)
        if method == "tnt":
            flags += f" --reducer {reducer}"
        if extra.get("merge_threshold") is not None:
            flags += f" --merge-threshold {extra['merge_threshold']:g}"
    ev = f"tnt evaluate {out} --data {bench} --split test{flags} --batch-size 500"
    return f"{ft} && {ev}"


def train_run(bench: str, run: str, seed: int, steps: int, batch: int, log) -> float:
    """Fine-tune one run through the product (cached); returns the training wall time."""
    from tnt_cli.train.trainer import finetune

    out = run_dir(bench, run, seed, steps, batch)
    meta = out / "study-run.json"
    if (out / "config.json").is_file() and meta.is_file():
        return float(json.loads(meta.read_text())["train_s"])
    started = time.perf_counter()
    log(f"[{bench}] fine-tune {run} seed {seed}: {steps} steps x batch {batch}")
    finetune(finetune_config(bench, run, seed, steps, batch), overwrite=True)
    train_s = time.perf_counter() - started
    meta.write_text(json.dumps({"train_s": round(train_s, 1)}) + "\n")
    log(f"[{bench}] {run} seed {seed} trained in {train_s:.0f}s")
    return train_s


def evaluate_run(bench: str, run: str, seed: int, steps: int, batch: int, loader, done: set, log) -> list[dict]:
    """Full-test-set rows of one fine-tuned run at every schedule, through `tnt compare`'s library function."""
    from tnt_cli.eval.compare import Entry, compare
    from tnt_cli.io.sources import load_model

    method, reducer, extra = RUNS[run]
    out = run_dir(bench, run, seed, steps, batch)
    model = load_model(str(out), require_trained_heads=False).model
    train_s = json.loads((out / "study-run.json").read_text())["train_s"]
    names = {repr(s): name for name, s in schedules()}

    heads = set(model.head_blocks)

    def skip(entry, schedule) -> bool:  # a schedule needs heads where it prunes (anchored runs train only theirs)
        return (run, seed, steps, batch, names[repr(schedule)]) in done or not set(schedule.prune_layers) <= heads

    def row(r: dict) -> dict:
        name = r["schedule_text"] if r["schedule_text"] == "dense" else names[repr(_drop_reducer(r["schedule"]))]
        keep = r["schedule"]["keep_rates"][0] if len(r["schedule"]["keep_rates"]) == 1 else ""
        log(f"[{bench}] {run} s{seed} {name}: {100 * r['top1']:.2f}% at {r['gmacs']:.5f} GMACs")
        return {"bench": bench, "run": run, "method": method, "reducer": reducer, "seed": seed, "steps": steps,
                "batch": batch, "schedule": name, "keep": keep, "gmacs": round(r["gmacs"], 6),
                "gmacs_tnt": round(r["gmacs_tnt"], 6), "top1": round(100 * r["top1"], 2),
                "top5": round(100 * r["top5"], 2), "images": r["images"], "train_s": train_s}  # fmt: skip

    entry = Entry(run, model, method, reducer, extra.get("merge_threshold"))
    rows = compare([entry], loader, [s for _, s in schedules()], skip=skip)
    return [row(r) for r in rows]


def _drop_reducer(schedule: dict):
    from tnt_cli.engine import Schedule

    data = {k: v for k, v in schedule.items() if k not in ("reducer", "merge_threshold")}
    return Schedule.from_dict(data)


def rows_path(bench: str) -> Path:
    return STUDY_RESULTS / f"rows-{bench}.csv"


def read_rows(bench: str) -> list[dict]:
    path = rows_path(bench)
    if not path.is_file():
        return []
    with path.open() as fh:
        return list(csv.DictReader(fh))


def append_rows(bench: str, rows: list[dict]) -> None:
    path = rows_path(bench)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.is_file()
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def run_bench(bench: str, runs: list[str], seeds: list[int], steps: int, batch: int, log) -> None:
    from tnt_cli.data import build_loader
    from tnt_cli.io.sources import load_model

    done = {(r["run"], int(r["seed"]), int(r["steps"]), int(r["batch"]), r["schedule"]) for r in read_rows(bench)}
    vit = load_model(str(BASE_DIRS[bench]), require_trained_heads=False).model.vit
    loader = build_loader(bench, "test", vit, batch_size=500)
    for seed in seeds:
        for run in runs:
            train_run(bench, run, seed, steps, batch, log)
            rows = evaluate_run(bench, run, seed, steps, batch, loader, done, log)
            append_rows(bench, rows)


# --------------------------------------------------------------------------- gated merge threshold
THRESHOLDS = (0.0, 0.3, 0.5, 0.7, 0.9)
THRESHOLD_KEEPS = (0.5, 0.3)


def choose_merge_threshold(bench: str, run: str = "tnt-rank", seed: int = 0, steps: int = 300, batch: int = 64,
                           images: int = 2000) -> dict:  # fmt: skip
    """The gated merge's threshold, chosen training-free on `images` TRAINING images (never the test set): `run`'s
    fine-tuned model with the merge reducer at each threshold, mean top-1 over `THRESHOLD_KEEPS`; -1 is the
    ungated merge, 'drop' no merge. Written to results/study/merge-threshold-BENCH.json."""
    from tnt_cli.data import build_loader
    from tnt_cli.engine import Schedule
    from tnt_cli.eval.compare import Entry, compare
    from tnt_cli.io.sources import load_model

    model = load_model(str(run_dir(bench, run, seed, steps, batch)), require_trained_heads=False).model
    loader = build_loader(bench, "train", model.vit, batch_size=500, limit=images, seed=1)
    found: dict[str, float] = {}
    for label, reducer, tau in [("drop", "drop", None), ("ungated", "merge", None),
                                *((f"{t:g}", "merge", t) for t in THRESHOLDS)]:  # fmt: skip
        rows = compare([Entry(label, model, "tnt", reducer, tau)], loader,
                       [Schedule((PRUNE_BLOCK,), (k,)) for k in THRESHOLD_KEEPS])  # fmt: skip
        found[label] = round(100 * statistics.fmean(r["top1"] for r in rows), 2)
    best = max((v, k) for k, v in found.items() if k not in ("drop", "ungated"))[1]
    result = {"bench": bench, "run": run, "seed": seed, "images": images, "split": "train", "keeps": THRESHOLD_KEEPS,
              "mean_top1": found, "chosen": float(best)}  # fmt: skip
    STUDY_RESULTS.mkdir(parents=True, exist_ok=True)
    (STUDY_RESULTS / f"merge-threshold-{bench}.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


# --------------------------------------------------------------------------- training budget
_BUDGETS: dict[tuple[str, str], float] = {}


def train_gmacs_per_image(bench: str, run: str) -> float:
    """Training GMACs per image and step of `run`, from the settings it trains with (the analytic count
    `tnt info` uses): a trainable pass costs 3x its forward (forward, and the backward's gradients of inputs and of
    weights), a pass through a detached backbone 2x (no weight gradients), the teacher 1x. The pruning pass is
    the mean over the keep rates it draws, at the method's own (matched) GMACs; the anchored step's heads pass
    runs the blocks after the pruning block on `heads_fraction` of the batch."""
    key = (bench, run)
    if key in _BUDGETS:
        return _BUDGETS[key]
    from tnt_cli.engine import Schedule, plan_tokens
    from tnt_cli.engine.gmacs import count_macs
    from tnt_cli.io.sources import load_model
    from tnt_cli.methods.apply import method_gmacs
    from tnt_cli.train.setup import pruning_pass_blocks
    from tnt_cli.train.task import progressive

    cfg = finetune_config(bench, run, 0, 300, 64)
    model = load_model(str(BASE_DIRS[bench]), require_trained_heads=False).model
    plan = plan_tokens(Schedule(), num_patches=model.num_patches, num_prefix=model.num_prefix_tokens,
                       depth=model.depth)  # fmt: skip
    dense = count_macs(model.vit, plan)
    dim, n = int(model.vit.embed_dim), model.num_patches
    head = n * dim * 5  # one relevance head on layer-normed patch tokens
    tnt, anchored = cfg.method == "tnt", cfg.method == "tnt" and cfg.anchor
    noise_blocks = tuple(b for b in cfg.noise_blocks if b < model.depth)
    blocks = pruning_pass_blocks(cfg, noise_blocks, model.depth)
    if tnt and not anchored:  # the noisy pass: the whole model, heads at every noise block
        first = dense.total + head * len(noise_blocks)
        total = (3 if cfg.noise_trains == "all" else 2) * first
    else:
        total = 3 * dense.total
    total += dense.total if cfg.distill else 0
    if cfg.drop_weight > 0:
        pruned = [method_gmacs(model, cfg.method, progressive(blocks, k)) * 1e9 for k in cfg.drop_keeps]
        total += 3 * sum(pruned) / len(pruned)
    if anchored:
        start = min(blocks)
        rest = sum(dense.blocks[start + 1 :]) + dense.head + head * len(blocks)
        total += cfg.heads_fraction * 2 * rest
    _BUDGETS[key] = total / 1e9
    return _BUDGETS[key]


# --------------------------------------------------------------------------- report
def summarise(rows: list[dict]) -> dict:
    """(bench, steps, batch, schedule, run) -> mean, spread (min-max), n, GMACs, TNT's GMACs."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        key = (r["bench"], int(r["steps"]), int(r["batch"]), r["schedule"], r["run"])
        groups.setdefault(key, []).append(r)
    out = {}
    for key, rs in groups.items():
        accs = [float(r["top1"]) for r in rs]
        out[key] = {
            "mean": statistics.fmean(accs),
            "min": min(accs),
            "max": max(accs),
            "sd": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "n": len(accs),
            "seeds": sorted(int(r["seed"]) for r in rs),
            "gmacs": statistics.fmean(float(r["gmacs"]) for r in rs),
            "gmacs_tnt": statistics.fmean(float(r["gmacs_tnt"]) for r in rs),
        }
    return out


def report(benches: tuple[str, ...] = BENCHES) -> str:
    rows = [r for b in benches for r in read_rows(b)]
    stats = summarise(rows)
    lines = ["# TNT vs fine-tuned baselines (generated by examples/fashion_mnist/study.py --report)", ""]
    lines.append("Top-1 (%) on the full 10k test set, mean over seeds (min-max in brackets, n = seeds). Every method "
                 "was fine-tuned from the same base model with the same recipe, steps, batch and distillation; only "
                 "the reducer in the hard-pruning pass differs. Baselines run at the GMACs closest to TNT's at each "
                 "schedule; the GMACs column is TNT's, and a baseline cell is starred if its GMACs differ by more "
                 "than 2%.")  # fmt: skip
    configs = sorted({(k[0], k[1], k[2]) for k in stats}, key=lambda c: (BENCHES.index(c[0]), c[1], c[2]))
    for bench, steps, batch in configs:
        runs = [r for r in RUNS if any(k[:3] == (bench, steps, batch) and k[4] == r for k in stats)]
        lines += ["", f"## {bench}: {steps} steps x batch {batch}", ""]
        lines.append("| schedule | GMACs | " + " | ".join(runs) + " | default recipe - best baseline |")
        lines.append("|---|---|" + "---|" * len(runs) + "---|")
        for name, _ in schedules():
            cells = {r: stats.get((bench, steps, batch, name, r)) for r in runs}
            if not any(cells.values()):
                continue
            ref = next(c for c in cells.values() if c)
            row = [name, f"{ref['gmacs_tnt']:.5f}"]
            for r in runs:
                c = cells[r]
                if c is None:
                    row.append("")
                    continue
                star = "*" if abs(c["gmacs"] / c["gmacs_tnt"] - 1) > 0.02 and name != "dense" else ""
                spread = f" ({c['min']:.2f}-{c['max']:.2f})" if c["n"] > 1 else ""
                row.append(f"{c['mean']:.2f}{spread}{star}")
            margin = ""
            base = [(cells[b]["mean"], b) for b in BASELINES if cells.get(b)]
            default = [r for r in ("tnt", "tnt-eq") if cells.get(r)]
            if base and default and name != "dense":
                best, who = max(base)
                margin = "; ".join(f"{r} {cells[r]['mean'] - best:+.2f}" for r in default) + f" vs {who}"
            row.append(margin)
            lines.append("| " + " | ".join(row) + " |")
        n = {c["n"] for k, c in stats.items() if k[:3] == (bench, steps, batch)}
        lines += ["", f"Seeds per cell: {sorted(n)}.", ""]
        lines += budget_best_table(stats, bench, steps, batch, runs)
        lines += budget_table(rows, bench, steps, batch, runs)
    lines += ["", f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, one thread per run.",
              "Reproduce a row: `study.py --commands BENCH RUN SEED SCHEDULE` prints its `tnt finetune` and "
              "`tnt evaluate` commands.", ""]  # fmt: skip
    return "\n".join(lines)


def budget_best_table(stats: dict, bench: str, steps: int, batch: int, runs: list[str]) -> list[str]:
    """Each run at its best schedule (single- or two-stage) within a GMACs budget: TNT's GMACs at each single-stage
    keep rate, 2% tolerance (`tnt compare --budget`'s rule, `best_within_budget`)."""
    from tnt_cli.eval.compare import best_within_budget

    keys = [(k, (bench, steps, batch, f"block {PRUNE_BLOCK} keep {k:g}", runs[0])) for k in KEEPS[:3]]
    budgets = [(k, stats[key]["gmacs_tnt"]) for k, key in keys if key in stats]
    if not budgets:
        return []
    lines = ["Best schedule within a GMACs budget (mean top-1, the schedule in brackets):", "",
             "| budget (GMACs) | " + " | ".join(runs) + " |", "|---|" + "---|" * len(runs)]  # fmt: skip
    # each run's mean over seeds at each pruned schedule, as rows `tnt compare --budget` picks from
    rows = [{"label": k[4], "schedule_text": k[3], "gmacs": c["gmacs"], "top1": c["mean"]} for k, c in stats.items()
            if k[:3] == (bench, steps, batch) and k[4] in runs and k[3] != "dense"]  # fmt: skip
    for keep, gmacs in budgets:
        best = {r["label"]: r for r in best_within_budget(rows, gmacs) if r["schedule_text"] is not None}
        cells = [f"{best[run]['top1']:.2f} ({best[run]['schedule_text'].replace('block ', 'b').replace(' keep ', ':')})"
                 if run in best else "" for run in runs]  # fmt: skip
        lines.append(f"| <= {gmacs:.5f} (keep {keep:g}) | " + " | ".join(cells) + " |")
    return [*lines, ""]


def budget_table(rows: list[dict], bench: str, steps: int, batch: int, runs: list[str]) -> list[str]:
    """Each run's training compute (`train_gmacs_per_image` x its steps x batch) against ToMe's, and its wall
    time."""
    reference = train_gmacs_per_image(bench, "tome") * steps
    lines = ["| run | training GMACs per image-step | steps | training TMACs | vs ToMe | fine-tuning wall time |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for run in runs:
        per = train_gmacs_per_image(bench, run)
        run_steps = equal_budget_steps(bench, run, steps) if run in EQUAL_BUDGET else steps
        wall = [float(r["train_s"]) for r in rows if (r["bench"], int(r["steps"]), int(r["batch"]), r["run"]) ==
                (bench, steps, batch, run) and r["schedule"] == "dense"]  # fmt: skip
        wall_text = f"{statistics.fmean(wall):.0f} s" if wall else ""
        total = per * run_steps
        lines.append(f"| {run} | {per:.4f} | {run_steps} | {total * batch / 1e3:.2f} | {total / reference - 1:+.1%} | "
                     f"{wall_text} |")  # fmt: skip
    lines.append("")
    lines.append("Training compute counts every pass forward and backward (3x a forward; 2x through a detached "
                 "backbone) plus the teacher's forward; wall time is one thread on a 2-core machine shared with "
                 "other jobs (an upper bound).")  # fmt: skip
    return lines


def plot(path: Path, benches: tuple[str, ...] = BENCHES) -> Path | None:
    """Accuracy vs GMACs, mean over seeds, one panel per benchmark (the longest-trained config of each)."""
    try:
        import matplotlib
    except ModuleNotFoundError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = summarise([r for b in benches for r in read_rows(b)])
    present = [b for b in benches if any(k[0] == b for k in stats)]
    if not present:
        return None
    fig, axes = plt.subplots(1, len(present), figsize=(6 * len(present), 4.5), squeeze=False)
    for ax, bench in zip(axes[0], present):
        steps, batch = max((k[1], k[2]) for k in stats if k[0] == bench)
        for run in RUNS:
            points = sorted((c["gmacs"], c["mean"]) for k, c in stats.items()
                            if k[:3] == (bench, steps, batch) and k[4] == run and " + " not in k[3])  # fmt: skip
            if points:
                ax.plot(*zip(*points), marker="o", label=run)
        ax.set_title(f"{bench} ({steps} steps x {batch})")
        ax.set_xlabel("GMACs per image")
        ax.set_ylabel("top-1 (%), mean over seeds")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", choices=BENCHES, action="append", help="benchmark(s) to run (default: both)")
    ap.add_argument("--runs", default=",".join(RUNS), help=f"comma list of {', '.join(RUNS)}")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--merge-threshold",
        action="store_true",
        help="choose the gated merge's threshold on training images (needs the tnt-rank seed-0 run)",
    )
    ap.add_argument("--report", action="store_true", help="only write results/study/STUDY.md from the rows")
    ap.add_argument("--commands", nargs=4, metavar=("BENCH", "RUN", "SEED", "SCHEDULE"),
                    help="print the CLI commands that reproduce one row (with --steps/--batch)")  # fmt: skip
    args = ap.parse_args(argv)
    if args.commands:
        bench, run, seed, schedule = args.commands
        print(commands(bench, run, int(seed), args.steps, args.batch, schedule))
        return
    if args.merge_threshold:
        for bench in args.bench or BENCHES:
            print(json.dumps(choose_merge_threshold(bench)))
        return
    if not args.report:
        import torch

        torch.set_num_threads(args.threads)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        runs = [r.strip() for r in args.runs.split(",") if r.strip()]
        unknown = [r for r in runs if r not in RUNS]
        if unknown:
            sys.exit(f"unknown run(s) {unknown}: choose from {', '.join(RUNS)}")
        seeds = [int(s) for s in args.seeds.split(",")]
        for bench in args.bench or BENCHES:
            run_bench(bench, runs, seeds, args.steps, args.batch, lambda m: print(m, flush=True))
    STUDY_RESULTS.mkdir(parents=True, exist_ok=True)
    text = report()
    (STUDY_RESULTS / "STUDY.md").write_text(text)
    plot(STUDY_RESULTS / "accuracy_vs_gmacs.png")
    print(text)


if __name__ == "__main__":
    main()
