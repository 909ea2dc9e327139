"""One command from the shipped base ViTs to the README's results: TNT fine-tuning, every baseline, table and plot.

    .venv/bin/python examples/fashion_mnist/pipeline.py            # both benchmarks, seed 0
    .venv/bin/python examples/fashion_mnist/pipeline.py --seed 1 --out /tmp/rerun   # a reproduction check

Steps, per benchmark (fashion-mnist: 28x28, patch 4, 49 tokens; cluttered-fashion-mnist: 64x64, patch 8, 64
tokens): take the shipped dense base ViT (base/<bench>/, made by train_base.py; `make base` retrains it),
fine-tune TNT in the default recipe and in the official one (softmax, sigma0 0.02, heads only), then evaluate on
the full 10k test set: TNT, random, cls-attn and tome on the base model, random and cls-attn also on the
TNT-tuned backbone, at single-layer schedules (after block 1, keep 0.7/0.5/0.3/0.15) and multi-layer ones
(blocks 1 and 3). All methods run the same token plan, so GMACs match (tome: the merge count r with the closest
GMACs).

Writes results/results.csv, results/results.md, results/accuracy_vs_gmacs.png and results/run.json (wall times,
seed, machine), and the fine-tuned TNT models to out/tnt-<bench>-<recipe>/ (tnt model directories).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, RESULTS, Timer, load_split, set_threads, write_json
from study import DEFAULT_RECIPE, HEAD_BLOCKS, RECIPES, evaluate_methods, finetune

from tnt_cli.engine import attach_tnt

BENCH_NAMES = ("fashion-mnist", "cluttered-fashion-mnist")
METHOD_ORDER = (
    "dense",
    "tnt",
    "tnt-official",
    "random",
    "cls-attn",
    "tome",
    "random@tuned",
    "cls-attn@tuned",
)
LABELS = {
    "dense": "dense",
    "tnt": "TNT (default recipe)",
    "tnt-official": "TNT (official recipe)",
    "random": "random",
    "cls-attn": "CLS attention",
    "tome": "ToMe",
    "random@tuned": "random (TNT-tuned backbone)",
    "cls-attn@tuned": "CLS attention (TNT-tuned backbone)",
}
BASELINES = ("random", "cls-attn", "tome", "random@tuned", "cls-attn@tuned")


def ensure_base(bench: str, seed: int, log) -> tuple[torch.nn.Module, dict]:
    """The shipped base model; retrained from nothing into its place only if someone removed it."""
    import train_base
    from common import base_dir

    if not (base_dir(bench) / "meta.json").exists():
        log(f"[{bench}] no base model in {base_dir(bench)}: training one (see train_base.py)")
        train_base.main(["--bench", bench, "--seed", str(seed), "--into", str(base_dir(bench))])
    return train_base.load_base(bench)


def save_tnt(model, bench: str, recipe, base_meta: dict, rows: list[dict], train_s: float) -> Path:
    from tnt_cli.engine import Schedule
    from tnt_cli.io.model_dir import save_model_dir

    out = OUT / f"tnt-{bench}-{recipe.name}"
    training = {
        "dataset": bench,
        "recipe": recipe.name,
        "description": recipe.describe(),
        "steps": recipe.steps,
        "batch_size": recipe.batch,
        "train": recipe.train,
        "distill": recipe.distill,
        "drop": recipe.drop,
        "mask": recipe.mask,
        "train_s": round(train_s, 1),
        "base_top1": base_meta["test_top1"],
    }
    metrics = {r["schedule"]: r["top1"] for r in rows if r["method"] == "tnt"}
    model.set_schedule(Schedule((1,), (0.5,)))  # a sensible deployment default; override with --keep-rates
    save_model_dir(out, model, base_model=None, training=training, metrics={"test_top1": metrics}, overwrite=True)
    return out


def run_bench(bench: str, *, seed: int, steps: int | None, log) -> tuple[list[dict], dict]:
    from dataclasses import replace

    timer = Timer()
    base, meta = ensure_base(bench, seed, log)
    xtr, ytr = load_split(bench, "train")
    xte, yte = load_split(bench, "test")
    rows: list[dict] = []
    times = {"base_train_s": meta["wall_s"], "base_top1": meta["test_top1"]}

    t = Timer()
    plain = attach_tnt(base, HEAD_BLOCKS).eval()
    for r in evaluate_methods(plain, xte, yte, ("random", "cls-attn", "tome"), seed=seed):
        rows.append(r)
    times["baselines_eval_s"] = round(t(), 1)
    log(f"[{bench}] baselines on the base model evaluated ({t():.0f}s)")

    for key, name in (("tnt", DEFAULT_RECIPE), ("tnt-official", "official")):
        recipe = RECIPES[name]
        if steps:
            recipe = replace(recipe, steps=steps)
        t = Timer()
        model, stats = finetune(base, recipe, xtr, ytr, seed=seed, log=log)
        times[f"{key}_train_s"] = round(stats["train_s"], 1)
        tuned = recipe.train == "full"
        methods = ("tnt", "random", "cls-attn") if tuned and key == "tnt" else ("tnt",)
        t = Timer()
        new = evaluate_methods(model, xte, yte, methods, seed=seed)
        times[f"{key}_eval_s"] = round(t(), 1)
        for r in new:
            if r["method"] == "dense":
                if key == "tnt" and tuned:
                    rows.append({**r, "method": "dense@tuned"})
                continue
            method = {"tnt": key}.get(r["method"], f"{r['method']}@tuned")
            rows.append({**r, "method": method})
        save_tnt(model, bench, recipe, meta, [r for r in new if r["method"] == "tnt"], stats["train_s"])
        log(f"[{bench}] {key} ({recipe.describe()}) done")
    times["total_s"] = round(timer(), 1)
    return [{"bench": bench, "seed": seed, **r} for r in rows], times


# --------------------------------------------------------------------------- reports
def write_csv(path: Path, rows: list[dict]) -> None:
    fields = ["bench", "seed", "schedule", "keep", "method", "gmacs", "top1", "tome_r"]
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "gmacs": f"{r['gmacs']:.5f}", "top1": f"{r['top1']:.2f}"})
    tmp.replace(path)


def markdown(rows: list[dict], runs: list[dict]) -> str:
    out = ["# TNT vs baselines on Fashion-MNIST (generated by examples/fashion_mnist/pipeline.py)", ""]
    out.append(
        "Top-1 (%) on the full 10k test set; GMACs per image. All methods at a schedule run the same token "
        "counts; ToMe runs the merge count r with the closest GMACs (r and its GMACs in brackets). Baselines run "
        "on the dense base model, and random / CLS attention also on the TNT-tuned backbone (TNT-tuned backbone "
        "columns). The last column compares TNT (default recipe) with the best of all baseline columns."
    )
    out.append("")
    for run in runs:
        out.append(
            f"- {run['bench']}: seed {run['seed']}, {run['machine']}, {run['threads']} threads, "
            f"{run['wall_s'] / 60:.1f} min (shipped base model); default recipe `{run['default_recipe']}`; "
            f"official `{run['official_recipe']}`"
        )
    for bench in BENCH_NAMES:
        sub = [r for r in rows if r["bench"] == bench]
        if not sub:
            continue
        dense = next(r for r in sub if r["method"] == "dense")
        tuned = next((r for r in sub if r["method"] == "dense@tuned"), None)
        line = f"Dense base model: {dense['top1']:.2f}% at {dense['gmacs']:.4f} GMACs"
        if tuned:
            line += f"; TNT-tuned backbone run dense: {tuned['top1']:.2f}%"
        out += ["", f"## {bench}", "", line + ".", ""]
        methods = [m for m in METHOD_ORDER[1:] if any(r["method"] == m for r in sub)]
        out.append("| schedule | GMACs | " + " | ".join(LABELS[m] for m in methods) + " | TNT - best baseline |")
        out.append("|---|---|" + "---|" * len(methods) + "---|")
        for sched in dict.fromkeys(r["schedule"] for r in sub if r["schedule"] != "dense"):
            cells = {r["method"]: r for r in sub if r["schedule"] == sched}
            gm = cells["tnt"]["gmacs"]
            vals = []
            for m in methods:
                r = cells.get(m)
                if r is None:
                    vals.append("")
                elif m == "tome":
                    vals.append(f"{r['top1']:.2f} (r={r.get('tome_r')}, {r['gmacs']:.4f})")
                else:
                    vals.append(f"{r['top1']:.2f}")
            best = max(cells[m]["top1"] for m in BASELINES if m in cells)
            out.append(f"| {sched} | {gm:.4f} | " + " | ".join(vals) + f" | {cells['tnt']['top1'] - best:+.2f} |")
    out.append("")
    return "\n".join(out)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, bench in zip(axes, BENCH_NAMES):
        sub = [r for r in rows if r["bench"] == bench and r["schedule"].count("keep") <= 1]
        dense = next((r for r in sub if r["method"] == "dense"), None)
        for m in METHOD_ORDER[1:]:
            pts = sorted((r["gmacs"], r["top1"]) for r in sub if r["method"] == m)
            if pts:
                style = "-o" if m.startswith("tnt") else "--s"
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=LABELS[m], markersize=4)
        if dense:
            ax.axhline(dense["top1"], color="gray", lw=0.8, ls=":", label="dense")
        ax.set_title(f"{bench} (pruned after block 1)")
        ax.set_xlabel("GMACs per image")
        ax.set_ylabel("top-1 (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bench", action="append", choices=BENCH_NAMES, help="default: both")
    ap.add_argument("--steps", type=int, default=None, help="override fine-tuning steps (quick checks)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--assemble", action="store_true", help="only merge existing per-benchmark results")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    out = Path(args.out)
    if args.assemble:
        assemble(out)
        return
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - start:6.0f}s] {msg}", file=sys.stderr, flush=True)

    for bench in args.bench or BENCH_NAMES:
        t0 = time.time()
        rows, times = run_bench(bench, seed=args.seed, steps=args.steps, log=log)
        run = {
            "bench": bench,
            "seed": args.seed,
            "threads": args.threads,
            "wall_s": round(time.time() - t0, 1),
            "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
            "torch": torch.__version__,
            "default_recipe": RECIPES[DEFAULT_RECIPE].describe(),
            "official_recipe": RECIPES["official"].describe(),
            "times": times,
            "command": "python examples/fashion_mnist/pipeline.py " + " ".join(sys.argv[1:] if argv is None else argv),
        }
        write_csv(out / f"results-{bench}.csv", rows)
        write_json(out / f"run-{bench}.json", run)
    assemble(out)
    log(f"wrote {out}/results.csv, results.md, accuracy_vs_gmacs.png ({(time.time() - start) / 60:.1f} min)")


def assemble(out: Path) -> None:
    """Merge the per-benchmark files in `out` into results.csv, results.md and the plot."""
    rows, runs = [], []
    for bench in BENCH_NAMES:
        csv_path, run_path = out / f"results-{bench}.csv", out / f"run-{bench}.json"
        if not csv_path.exists() or not run_path.exists():
            continue
        with csv_path.open() as fh:
            for r in csv.DictReader(fh):
                r.update(gmacs=float(r["gmacs"]), top1=float(r["top1"]), keep=float(r["keep"]))
                rows.append(r)
        runs.append(json.loads(run_path.read_text()))
    if not rows:
        return
    write_csv(out / "results.csv", rows)
    (out / "results.md").write_text(markdown(rows, runs))
    plot(rows, out / "accuracy_vs_gmacs.png")


if __name__ == "__main__":
    main()
