"""The benchmark report as files (JSON + pasteable Markdown) and as a compact summary for model cards."""

from __future__ import annotations

from pathlib import Path

from tnt_cli.bench.variants import DENSE, LABELS, PRUNED
from tnt_cli.io.atomic import atomic_write_json, atomic_write_text
from tnt_cli.io.names import BENCHMARK_JSON, BENCHMARK_MD, REPORT, REPORT_MD, is_tnt_model_dir

# inside a tnt model directory report.json is the model's own metrics file (update_card merges into it): there
# the benchmark writes BENCHMARK_JSON / BENCHMARK_MD


def headline(report: dict) -> str:
    env, s = report["environment"], report["settings"]
    compiled = ", compiled" if s["compile"] else ""
    layout = ", channels-last" if s["channels_last"] else ""
    threads = f", {env['threads']} threads" if env["device"] == "cpu" else ""
    return (
        f"{report['model']} | {report['schedule_text']} | {env['device_name']} ({env['device']}{threads}) | "
        f"{s['dtype']}{compiled}{layout} | torch {env['torch']}, timm {env['timm']}"
    )


def _fmt_overhead(row: dict) -> str:
    pct = row.get("tnt_dense_overhead_pct")
    return "-" if pct is None else f"{pct:+.1f}%"


def memory_text(row: dict, name: str) -> str:
    mib = row["variants"][name].get("peak_memory_mib")
    if mib is None:
        return "-"
    return f"{mib:,.0f}" if mib >= 10 else f"{mib:.3g}"  # a small model's few MiB keep their digits


def gmacs_text(value: float) -> str:
    return f"{value:.2f}" if value >= 0.1 else f"{value:.3g}"


def _memory_cell(report: dict, row: dict) -> str:
    return f"{memory_text(row, DENSE)} / {memory_text(row, PRUNED)}"


def to_markdown(report: dict) -> str:
    g = report["gmacs"]
    memory_header = "peak MiB (dense / pruned)"
    lines = [
        f"**tnt benchmark**: {headline(report)}",
        "",
        f"GMACs dense {gmacs_text(g['dense'])}, pruned {gmacs_text(g['pruned'])} (ratio {g['ratio']:.2f}x). "
        f"{report['settings']['iters']} alternating rounds after {report['settings']['warmup']} warm-up; "
        "images/s from the median latency.",
        "",
        "| batch | dense img/s | pruned img/s | speedup | efficiency | dense p50 / p90 ms | pruned p50 / p90 ms "
        f"| TNT keep 1.0 vs timm | {memory_header} |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["results"]:
        d, p = row["variants"][DENSE], row["variants"][PRUNED]
        lines.append(
            f"| {row['batch_size']} | {d['images_per_s']:.1f} | {p['images_per_s']:.1f} | {row['speedup']:.2f}x "
            f"| {row['efficiency']:.2f} | {d['latency_ms_p50']:.1f} / {d['latency_ms_p90']:.1f} "
            f"| {p['latency_ms_p50']:.1f} / {p['latency_ms_p90']:.1f} | {_fmt_overhead(row)} "
            f"| {_memory_cell(report, row)} |"
        )
    lines += _peer_lines(report)
    lines += [
        "",
        "efficiency = measured speedup / GMACs ratio (1.0: time falls exactly with compute). "
        f"Peak memory: {report['memory']}.",
    ]
    lines += [f"> note: {n}" for n in report.get("notes", [])]
    lines += [f"> warning: {w}" for w in report["warnings"]]
    return "\n".join(lines) + "\n"


def _peer_lines(report: dict) -> list[str]:
    """Every method at matched GMACs, timed in the same alternating rounds as dense."""
    if not any("methods" in row for row in report["results"]):
        return []
    configs = report.get("methods", {})
    lines = [
        "",
        f"Methods at matched GMACs ({report.get('matching', 'closest to TNT')}):",
        "",
        "| batch | method | configuration | GMACs | img/s | p50 / p90 ms | speedup | efficiency | vs TNT |",
        "|---:|:---|:---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["results"]:
        for method, m in row.get("methods", {}).items():
            v = row["variants"][m["variant"]]
            lines.append(
                f"| {row['batch_size']} | {LABELS.get(method, method)} | {configs.get(method, {}).get('config', '')} "
                f"| {gmacs_text(m['gmacs'])} | {v['images_per_s']:.1f} | {v['latency_ms_p50']:.1f} / "
                f"{v['latency_ms_p90']:.1f} | {m['speedup']:.2f}x | {m['efficiency']:.2f} | {m['vs_tnt']:.2f} |"
            )
    return lines


def card_metrics(report: dict) -> dict:
    """What a model card shows: per batch size throughput, speedup and efficiency, with the machine."""
    env, s = report["environment"], report["settings"]
    return {
        "benchmark": {
            "device": f"{env['device_name']} ({env['device']})",
            "threads": env["threads"],
            "dtype": s["dtype"],
            "compile": s["compile"],
            "torch": env["torch"],
            "timm": env["timm"],
            "schedule": report["schedule_text"],
            "gmacs_dense": report["gmacs"]["dense"],
            "gmacs_pruned": report["gmacs"]["pruned"],
            "created_utc": report["created_utc"],
            "batches": [
                {
                    "batch_size": row["batch_size"],
                    "dense_images_per_s": row["variants"][DENSE]["images_per_s"],
                    "pruned_images_per_s": row["variants"][PRUNED]["images_per_s"],
                    "speedup": row["speedup"],
                    "efficiency": row["efficiency"],
                }
                for row in report["results"]
            ],
        }
    }


def report_paths(out_dir: str | Path, *, overwrite: bool = True) -> tuple[Path, Path]:
    """Where write_reports writes (benchmark.* inside a model directory); refuses existing files unless
    `overwrite`. Call it before timing so a bad output directory fails first."""
    from tnt_cli.io.outdir import OutputError, OutputExists

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} exists and is not a directory")
    json_name, md_name = (BENCHMARK_JSON, BENCHMARK_MD) if is_tnt_model_dir(out) else (REPORT, REPORT_MD)
    paths = out / json_name, out / md_name
    existing = next((p for p in paths if p.exists()), None)
    if existing is not None and not overwrite:
        raise OutputExists(existing)
    return paths


def write_reports(out_dir: str | Path, report: dict, *, overwrite: bool = True) -> tuple[Path, Path]:
    """report.json + report.md (benchmark.* inside a model directory), each written atomically."""
    json_path, md_path = report_paths(out_dir, overwrite=overwrite)
    return atomic_write_json(json_path, report), atomic_write_text(md_path, to_markdown(report))


def benchmark_card_dir(model: str, out: str | Path | None, update_card: bool) -> Path | None:
    """The model directory whose card gets the numbers: `out` when it is one, else MODEL with `update_card`."""
    from tnt_cli.errors import SettingError

    if out is not None and is_tnt_model_dir(out):
        return Path(out)
    if update_card and is_tnt_model_dir(model):
        return Path(model)
    if update_card:
        raise SettingError("{update_card} needs {model} or {out} to be a tnt model directory")
    return None


def update_model_card(model_dir: str | Path, report: dict) -> None:
    """Merge the numbers into the model directory's card."""
    from tnt_cli.io.model_dir import update_card

    update_card(Path(model_dir), card_metrics(report))
