"""TNT against its peers on speed: DeiT-S at the official single-layer schedule, every method at matched GMACs.

    .venv/bin/python examples/benchmarks/peers_deit_s.py --threads 2

Random weights (speed does not depend on them; nothing is downloaded). One `tnt benchmark --methods` run per
batch size: dense (plain timm), TNT (block 2 / keep 0.6 / r 25), ToMe, EViT, EViT + fusion and random, each peer
at the GMACs closest to TNT's (`tnt_cli.methods.apply.apply_method`, the rule evaluate uses), timed in the same
alternating rounds, so load from other processes hits all of them alike. Writes results/peers_deit_s_<device>.json
and .md (with the machine).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tnt_cli.bench import BenchConfig, run_benchmark
from tnt_cli.bench.report import to_markdown
from tnt_cli.bench.variants import LABELS
from tnt_cli.engine import Schedule
from tnt_cli.io.atomic import atomic_write_json, atomic_write_text
from tnt_cli.io.sources import load_model

SCHEDULE = Schedule(prune_layers=(2,), keep_rates=(0.6,), sim_prune=25)  # the paper's single-layer DeiT-S schedule
METHODS = ("tnt", "tome", "evit", "evit-fuse", "random")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="deit_small_patch16_224")
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--iters", default="20,5", help="timed rounds per batch size (one value, or one per size)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--note", default="", help="a line about the conditions (e.g. other load), kept in the files")
    parser.add_argument("--markdown-from", type=Path, help="only rewrite the .md of an earlier run's .json")
    args = parser.parse_args(argv)
    if args.markdown_from is not None:
        import json

        text = markdown(json.loads(args.markdown_from.read_text()))
        atomic_write_text(args.markdown_from.with_suffix(".md"), text)
        print(text)
        return 0

    from tnt_cli.bench.config import parse_methods

    batches = [int(b) for b in args.batch_sizes.split(",")]
    iters = [int(i) for i in args.iters.split(",")]
    iters = iters * len(batches) if len(iters) == 1 else iters
    loaded = load_model(args.model, random_weights=True, schedule=SCHEDULE, require_trained_heads=False)
    reports = []
    for batch, n in zip(batches, iters):
        config = BenchConfig(
            batch_sizes=(batch,), dtype=args.dtype, compile=args.compile, device=args.device, warmup=args.warmup,
            iters=n, threads=args.threads, tnt_dense=False, methods=parse_methods(args.methods),
        )  # fmt: skip
        print(f"batch {batch}: {n} alternating rounds", file=sys.stderr)
        reports.append(run_benchmark(loaded.model, config, source=args.model, progress=sys.stderr.isatty()))

    env = reports[0]["environment"]
    result = {
        "model": args.model,
        "schedule": SCHEDULE.to_dict(),
        "machine": {k: env[k] for k in ("device", "device_name", "cpu", "cpu_count", "threads", "platform")},
        "versions": {k: env[k] for k in ("torch", "timm", "tnt", "python")},
        "methods": reports[0]["methods"],
        "note": args.note,
        "summary": [summary_row(report) for report in reports],
        "reports": reports,
    }
    stem = f"peers_deit_s_{env['device']}{'_' + args.dtype if args.dtype != 'fp32' else ''}"
    stem += "_compiled" if args.compile else ""
    json_path = atomic_write_json(args.out / f"{stem}.json", result)
    md_path = atomic_write_text(args.out / f"{stem}.md", markdown(result))
    print(markdown(result))
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    return 0


def summary_row(report: dict) -> dict:
    row = report["results"][0]
    return {
        "batch_size": row["batch_size"],
        "gmacs_dense": report["gmacs"]["dense"],
        "dense": row["variants"]["dense"],
        "methods": row["methods"],
    }


def _ips(value: float) -> str:
    return f"{value:.1f}" if value >= 10 else f"{value:.3g}"


def markdown(result: dict) -> str:
    m, v = result["machine"], result["versions"]
    s = result["reports"][0]["settings"]
    rounds = ", ".join(f"batch {r['settings']['batch_sizes'][0]}: {r['settings']['iters']}" for r in result["reports"])
    lines = [
        f"# {result['model']} (random weights): TNT vs ToMe vs EViT at matched GMACs",
        "",
        f"Machine: {m['device_name']} ({m['device']}, {m['cpu_count']} cores visible, {m['threads']} threads), "
        f"{m['platform']}; torch {v['torch']}, timm {v['timm']}. dtype {s['dtype']}"
        f"{', compiled' if s['compile'] else ''}. One run per batch size, every method alternating with dense "
        f"({rounds} rounds after {s['warmup']} warm-up); images/s from the median latency.",
        *([f"> {result['note']}", ""] if result.get("note") else []),
        "",
        "| batch | method | configuration | GMACs | img/s | speedup over dense | efficiency | speedup vs TNT's |",
        "|---:|:---|:---|---:|---:|---:|---:|---:|",
    ]
    for row in result["summary"]:
        dense = row["dense"]
        lines.append(
            f"| {row['batch_size']} | dense (timm) | | {row['gmacs_dense']:.3f} | {_ips(dense['images_per_s'])} "
            "| 1.00x | | |"
        )
        for method, x in row["methods"].items():
            config = result["methods"][method]["config"]
            ips = x["speedup"] * dense["images_per_s"]
            lines.append(
                f"| {row['batch_size']} | {LABELS.get(method, method)} | {config} | {x['gmacs']:.3f} | {_ips(ips)} "
                f"| {x['speedup']:.2f}x | {x['efficiency']:.2f} | {x['vs_tnt']:.2f} |"
            )
    lines += [
        "",
        "efficiency = speedup / GMACs ratio; speedup vs TNT's < 1: slower than TNT at (about) the same GMACs.",
        "",
        "## Every run",
        "",
    ]
    lines += [to_markdown(report) for report in result["reports"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
