"""Markdown tables from the acceptance run's outputs (plain Python: no torch), ready to paste into the README.

- `bench_table(report)`: one `tnt benchmark --out` report.json (one dtype, eager or compiled) as every method at
  matched GMACs x batch size, each cell "speedup over dense / efficiency";
- `finetune_table(summary, metrics, ...)`: the fine-tune's own numbers (throughput, loss, accuracy).
"""

from __future__ import annotations

import statistics

LABELS = {"dense": "dense (timm)", "tnt": "TNT", "tome": "ToMe", "evit": "EViT", "evit-fuse": "EViT + fusion",
          "random": "random"}  # fmt: skip


def _ips(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _gmacs(value: float) -> str:
    return f"{value:.2f}" if value >= 0.1 else f"{value:.3g}"


def bench_title(report: dict) -> str:
    env, s = report["environment"], report["settings"]
    mode = "torch.compile" if s["compile"] else "eager"
    return f"{s['dtype']}, {mode}: {env['device_name']} ({env['device']}), torch {env['torch']}, timm {env['timm']}"


def bench_table(report: dict) -> str:
    """Methods x batch sizes of one benchmark report; dense shows images/s, the others speedup / efficiency."""
    rows = report["results"]
    batches = [row["batch_size"] for row in rows]
    s, g = report["settings"], report["gmacs"]
    lines = [
        f"**{bench_title(report)}**. Schedule {report['schedule_text']}; {s['iters']} alternating rounds after "
        f"{s['warmup']} warm-up per batch size; images/s from the median latency.",
        "",
        "| method | configuration | GMACs | " + " | ".join(f"batch {b}" for b in batches) + " |",
        "|:---|:---|---:|" + "---:|" * len(batches),
        f"| {LABELS['dense']} | | {_gmacs(g['dense'])} | "
        + " | ".join(f"{_ips(row['variants']['dense']['images_per_s'])} img/s" for row in rows)
        + " |",
    ]
    methods = report.get("methods", {})
    for method, info in methods.items():
        cells = []
        for row in rows:
            m = row.get("methods", {}).get(method)
            if m is None and method == "tnt":  # tnt alone: the row's own speedup
                m = {"speedup": row["speedup"], "efficiency": row["efficiency"]}
            cells.append("-" if m is None else f"{m['speedup']:.2f}x / {m['efficiency']:.2f}")
        label, gmacs = LABELS.get(method, method), _gmacs(info.get("gmacs", g["pruned"]))
        lines.append(f"| {label} | {info.get('config', '')} | {gmacs} | {' | '.join(cells)} |")
    overhead = [row.get("tnt_dense_overhead_pct") for row in rows]
    if any(v is not None for v in overhead):
        text = ", ".join(f"batch {b}: {v:+.1f}%" for b, v in zip(batches, overhead) if v is not None)
        lines += ["", f"TNT at keep 1.0 vs timm (the cost of TNT's forward itself): {text}."]
    lines += ["", "Cells: speedup over dense / efficiency (speedup / GMACs ratio; 1.0: time falls as compute does)."]
    lines += [f"> warning: {w}" for w in report.get("warnings", [])]
    return "\n".join(lines) + "\n"


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def finetune_table(summary: dict | None, metrics: list[dict], interrupted_at: int | None, compiled: str) -> str:
    """The fine-tune's numbers: steps, precision, compile, throughput after warm-up, loss, accuracy."""
    if not metrics:
        return "_no fine-tuning metrics were written_\n"
    losses = [m["loss"] for m in metrics]
    tail = metrics[len(metrics) // 2 :]  # past compilation and warm-up
    ips = _median([m["img_s"] for m in tail if m.get("img_s")])
    k = max(1, len(losses) // 10)
    evaluation = (summary or {}).get("evaluation") or {}
    top1 = {name: (evaluation.get(name) or {}).get("top1") for name in ("dense", "pruned")}
    cells = {
        "steps": str(metrics[-1]["step"]),
        "global batch": str(metrics[-1].get("global_batch", "")),
        "amp": str((summary or {}).get("amp", "?")),
        "compile": compiled,
        "img/s (median, 2nd half)": "-" if ips is None else _ips(ips),
        "loss (first / last tenth)": f"{statistics.fmean(losses[:k]):.3f} / {statistics.fmean(losses[-k:]):.3f}",
        "interrupted, resumed at step": "-" if interrupted_at is None else str(interrupted_at),
        "dense / pruned top-1": " / ".join("-" if v is None else f"{v:.3f}" for v in top1.values()),
    }
    return ("| " + " | ".join(cells) + " |\n|" + "---:|" * len(cells) + "\n| " + " | ".join(cells.values())
            + " |\n")  # fmt: skip
