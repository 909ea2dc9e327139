"""Benchmark a DeiT-S-shaped model with the paper's two official TNT schedules, dense vs pruned, on this machine.

    .venv/bin/python examples/benchmarks/deit_s_official.py --threads 2 --batch-size 32 --iters 6 --repeats 3

Random weights (speed does not depend on them, and nothing is downloaded). Every repeat times dense (plain timm),
TNT at keep 1.0 and pruned alternately, so load from other processes hits all of them alike; the summary takes
the median speedup over repeats. Writes results/deit_s_official_<device>.json and .md (with the machine).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from tnt_cli.bench import BenchConfig, run_benchmark
from tnt_cli.bench.report import to_markdown
from tnt_cli.engine import Schedule
from tnt_cli.io.atomic import atomic_write_json, atomic_write_text
from tnt_cli.io.sources import load_model

SCHEDULES = {
    "single-layer (block 2 / keep 0.6 / r 25)": Schedule(prune_layers=(2,), keep_rates=(0.6,), sim_prune=25),
    "multi-layer (blocks 2,3,4 / keep 0.8 each / r 40)": Schedule(
        prune_layers=(2, 3, 4), keep_rates=(0.8, 0.8, 0.8), sim_prune=40
    ),
}
TARGET_EFFICIENCY = 0.9  # our quality bar: measured speedup >= 0.9 x GMACs ratio at batch >= 32


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="deit_small_patch16_224")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3, help="independent alternating runs per schedule")
    parser.add_argument("--only", choices=("single", "multi"), help="run one of the two schedules")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)

    config = BenchConfig(
        batch_sizes=(args.batch_size,),
        dtype=args.dtype,
        compile=args.compile,
        device=args.device,
        warmup=args.warmup,
        iters=args.iters,
        threads=args.threads,
    )
    runs, rows = [], []
    for label, schedule in SCHEDULES.items():
        if args.only and not label.startswith(args.only):
            continue
        loaded = load_model(args.model, random_weights=True, schedule=schedule, require_trained_heads=False)
        reports = []
        for repeat in range(args.repeats):
            print(f"{label}: repeat {repeat + 1}/{args.repeats}", file=sys.stderr)
            reports.append(run_benchmark(loaded.model, config, source=args.model, progress=sys.stderr.isatty()))
        runs.append({"schedule_label": label, "reports": reports})
        rows.append(summarize(label, reports))

    env = runs[0]["reports"][0]["environment"]
    result = {
        "model": args.model,
        "machine": {k: env[k] for k in ("device", "device_name", "cpu", "cpu_count", "threads", "platform")},
        "versions": {k: env[k] for k in ("torch", "timm", "tnt", "python")},
        "settings": {**runs[0]["reports"][0]["settings"], "repeats": args.repeats},
        "summary": rows,
        "runs": runs,
    }
    stem = f"deit_s_official_{env['device']}{'_' + args.dtype if args.dtype != 'fp32' else ''}"
    stem += "_compiled" if args.compile else ""
    json_path = atomic_write_json(args.out / f"{stem}.json", result)
    md_path = atomic_write_text(args.out / f"{stem}.md", markdown(result, runs))
    print(markdown(result, runs))
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    return 0


def summarize(label: str, reports: list[dict]) -> dict:
    """Median over repeats of the per-run numbers (each run is itself a median over alternating rounds)."""
    rows = [r["results"][0] for r in reports]
    gmacs = reports[0]["gmacs"]
    speedups = [row["speedup"] for row in rows]
    speedup = statistics.median(speedups)
    overheads = [row["tnt_dense_overhead_pct"] for row in rows if "tnt_dense_overhead_pct" in row]
    return {
        "schedule": label,
        "batch_size": rows[0]["batch_size"],
        "gmacs_dense": gmacs["dense"],
        "gmacs_pruned": gmacs["pruned"],
        "gmacs_ratio": gmacs["ratio"],
        "dense_images_per_s": statistics.median(row["variants"]["dense"]["images_per_s"] for row in rows),
        "pruned_images_per_s": statistics.median(row["variants"]["pruned"]["images_per_s"] for row in rows),
        "speedup": speedup,
        "speedups": speedups,
        "efficiency": speedup / gmacs["ratio"],
        "target_speedup": TARGET_EFFICIENCY * gmacs["ratio"],
        "meets_target": speedup >= TARGET_EFFICIENCY * gmacs["ratio"],
        "tnt_dense_overhead_pct": statistics.median(overheads) if overheads else None,
        "tnt_dense_overhead_pcts": overheads,
    }


def markdown(result: dict, runs: list[dict]) -> str:
    m, v, s = result["machine"], result["versions"], result["settings"]
    lines = [
        f"# {result['model']} (random weights), official TNT schedules",
        "",
        f"Machine: {m['device_name']} ({m['device']}, {m['cpu_count']} cores visible, {m['threads']} threads), "
        f"{m['platform']}; torch {v['torch']}, timm {v['timm']}. dtype {s['dtype']}"
        f"{', compiled' if s['compile'] else ''}; {s['repeats']} repeats x {s['iters']} alternating rounds "
        f"(after {s['warmup']} warm-up) per schedule; medians.",
        "",
        "| schedule | batch | GMACs dense -> pruned | GMACs ratio | dense img/s | pruned img/s | speedup "
        "(per repeat) | efficiency | target (0.9 x ratio) | TNT keep 1.0 vs timm |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["summary"]:
        per = ", ".join(f"{x:.2f}" for x in row["speedups"])
        overhead = "-" if row["tnt_dense_overhead_pct"] is None else f"{row['tnt_dense_overhead_pct']:+.1f}%"
        lines.append(
            f"| {row['schedule']} | {row['batch_size']} | {row['gmacs_dense']:.2f} -> {row['gmacs_pruned']:.2f} "
            f"| {row['gmacs_ratio']:.2f}x | {row['dense_images_per_s']:.1f} | {row['pruned_images_per_s']:.1f} "
            f"| **{row['speedup']:.2f}x** ({per}) | {row['efficiency']:.2f} | {row['target_speedup']:.2f}x "
            f"{'met' if row['meets_target'] else 'MISSED'} | {overhead} |"
        )
    lines += ["", "## Every run", ""]
    for run in runs:
        for i, report in enumerate(run["reports"], 1):
            lines += [f"### {run['schedule_label']}, repeat {i}", "", to_markdown(report)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
