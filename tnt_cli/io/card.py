"""The model card (README.md) of a tnt model directory: YAML front matter for the Hub, then what tnt knows.

Metrics are free-form so every command can add its measurements (`update_card`). Conventions:
- `dataset`: the DATA spec the numbers come from (becomes the card's `datasets` when it is a Hub dataset);
- any other key holding a list of dicts (or a dict of dicts) becomes a table, e.g. `accuracy` rows
  {"model": "pruned", "top1": ..., "top5": ..., "gmacs": ...} and `throughput` rows
  {"variant": "dense", "batch_size": 64, "images_per_s": ...}; a dict of numbers becomes a two-column table.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tnt_cli import __version__

# DATA specs tnt knows -> Hub dataset ids for the card's `datasets`
HUB_DATASETS = {
    "fashion-mnist": "zalando-datasets/fashion_mnist",
    "cluttered-fashion-mnist": "zalando-datasets/fashion_mnist",
    "imagenet": "ILSVRC/imagenet-1k",
    "imagenet-1k": "ILSVRC/imagenet-1k",
}
TAGS = ["image-classification", "timm", "vision-transformer", "token-pruning", "tnt"]
FIRST_SECTIONS = ("accuracy", "evaluation", "finetune", "throughput", "benchmark")
PAPER = "https://arxiv.org/abs/2411.18092"
REPO_PLACEHOLDER = "<this repo>"  # `tnt push` fills in the repo id


def card_metadata(config: dict, metrics: dict | None) -> dict[str, Any]:
    """The YAML front matter as data."""
    tnt = config.get("tnt", {})
    meta: dict[str, Any] = {"library_name": "timm"}
    base = hub_model_id(tnt.get("base_model"))
    if base:
        meta["base_model"] = base
    licence = config.get("pretrained_cfg", {}).get("license")
    if licence:
        meta["license"] = licence
    meta["pipeline_tag"] = "image-classification"
    meta["tags"] = list(TAGS)
    datasets = dataset_ids(tnt.get("training") or {}, metrics or {})
    if datasets:
        meta["datasets"] = datasets
    if metrics and _has_accuracy(metrics):
        meta["metrics"] = ["accuracy"]
    return meta


def hub_model_id(value: Any) -> str | None:
    """`value` as a Hub model id for `base_model` (the Hub rejects anything else), or None for local paths."""
    from tnt_cli.io.hub import REPO_ID

    if not isinstance(value, str):
        return None
    repo = value.removeprefix("hf-hub:").split("@")[0]
    if not REPO_ID.match(repo) or Path(value).exists():
        return None
    return repo


def dataset_ids(training: dict, metrics: dict) -> list[str]:
    """Hub dataset ids for the card: DATA specs tnt knows (never local paths), plus explicit `datasets` lists."""
    found: list[str] = []
    for source in (training, metrics):
        explicit = source.get("datasets")
        for item in explicit if isinstance(explicit, list) else []:
            if isinstance(item, str) and item.count("/") == 1 and not Path(item).exists():
                found.append(item)
        for key in ("dataset", "data"):
            value = source.get(key)
            if isinstance(value, str) and value.lower() in HUB_DATASETS:
                found.append(HUB_DATASETS[value.lower()])
    return list(dict.fromkeys(found))


def _has_accuracy(metrics: dict) -> bool:
    text = json.dumps(metrics, default=str)
    return '"top1"' in text or '"accuracy"' in text


def render_card(config: dict, metrics: dict | None = None, *, title: str | None = None) -> str:
    """README.md text: front matter, summary, schedule, tokens per block, GMACs, measurements, usage."""
    tnt = config.get("tnt", {})
    arch = config.get("architecture", "?")
    schedule = tnt.get("schedule", {})
    gmacs = tnt.get("gmacs", {})
    lines = ["---", to_yaml(card_metadata(config, metrics)).rstrip(), "---", ""]
    lines += [f"# {title or arch + ' with TNT token pruning'}", ""]
    base = tnt.get("base_model")
    lines.append(
        f"A timm `{arch}`{f' (from `{base}`)' if base else ''} with Training Noise Token (TNT) relevance heads "
        f"([Rao, Jiang, Moyer 2024]({PAPER})): after the scheduled blocks only the most relevant patch tokens go on, "
        "so the model runs on fewer tokens. Written by tnt " + str(tnt.get("tnt_version", __version__)) + "."
    )
    lines.append("")
    if not tnt.get("heads_trained", True):
        lines += ["> The relevance heads are untrained (random): use this model for speed work only.", ""]
    if tnt.get("imported_from"):
        lines += [f"Imported from {tnt['imported_from']}.", ""]
    lines += ["## Schedule", ""]
    lines += _schedule_lines(schedule, tnt.get("schedule_text"))
    if gmacs:
        lines += ["## Compute", "", "| | GMACs |", "|---|---:|"]
        lines.append(f"| dense | {_fmt(gmacs.get('dense'))} |")
        lines.append(f"| pruned | {_fmt(gmacs.get('pruned'))} |")
        if gmacs.get("ratio"):
            lines.append(f"| ratio | {_fmt(gmacs['ratio'])} ({1 / gmacs['ratio']:.2f}x fewer MACs) |")
        lines.append("")
    tokens = tnt.get("tokens_per_block")
    if tokens:
        lines += ["## Tokens per block", "", "| block | tokens |", "|---:|---:|"]
        lines += [f"| {i} | {n} |" for i, n in enumerate(tokens)]
        lines.append("")
    if metrics:
        lines += _metrics_lines(metrics)
    training = tnt.get("training")
    if training:
        lines += _section("training", training, 2)
    lines += _usage_lines(tnt)
    lines += [
        "## Files",
        "",
        "- `config.json`: timm's config, plus tnt's settings under `\"tnt\"`",
        "- `model.safetensors`: the backbone, timm's key names (plain timm loads it as a dense model)",
        f"- `{tnt.get('heads_file', 'tnt_heads.safetensors')}`: the TNT relevance heads",
    ]
    if metrics:
        lines.append("- `report.json`: the measurements above, as data")
    lines += ["", "## Citation", "", "```bibtex", *CITATION, "```", ""]
    return "\n".join(lines)


CITATION = [
    "@article{rao2024tnt,",
    "  title={Training Noise Token Pruning},",
    "  author={Rao, Mingxing and Jiang, Bohan and Moyer, Daniel},",
    "  journal={arXiv preprint arXiv:2411.18092},",
    "  year={2024}",
    "}",
]


def _schedule_lines(schedule: dict, text: str | None) -> list[str]:
    layers = schedule.get("prune_layers") or []
    rates = schedule.get("keep_rates") or []
    lines = [f"`{text or 'dense'}`", ""]
    if layers:
        lines += ["| after block | keep rate |", "|---:|---:|"]
        lines += [f"| {b} | {k:g} |" for b, k in zip(layers, rates)]
        lines.append("")
    if schedule.get("sim_prune"):
        r, seed = schedule["sim_prune"], schedule.get("sim_seed", 0)
        lines += [
            f"Similarity pruning (r {r}, random partition, seed {seed}): the relevance top-k keeps {r} extra "
            f"candidates and similarity removes the {r} most redundant of them, so r changes which tokens stay, "
            "not how many."
            if len(layers) == 1
            else f"Similarity pruning (r {r}, random partition, seed {seed}) drops {r} tokens from the patch "
            "embeddings before block 0; the keep rates apply to the rest.",
            "",
        ]
    return lines


def _usage_lines(tnt: dict) -> list[str]:
    text = tnt.get("schedule_text") or "dense"
    schedule = tnt.get("schedule") or {}
    layers = tuple(schedule.get("prune_layers") or (2,))
    rates = tuple(min(1.0, round(k * 0.9, 2)) for k in schedule.get("keep_rates") or (0.5,))
    return [
        "## Usage",
        "",
        "```python",
        "import tnt_cli  # pip install tnt-token-pruning",
        f'model = tnt_cli.load("hf-hub:{REPO_PLACEHOLDER}")  # pruned: {text}',
        f"model.set_schedule(tnt_cli.Schedule(prune_layers={layers}, keep_rates={rates}))  # another schedule",
        "",
        "import timm  # the dense backbone with plain timm",
        f'dense = timm.create_model("hf-hub:{REPO_PLACEHOLDER}", pretrained=True)',
        "```",
        "",
    ]


def _metrics_lines(metrics: dict) -> list[str]:
    keys = [k for k in FIRST_SECTIONS if k in metrics] + [k for k in metrics if k not in FIRST_SECTIONS]
    scalars = {k: metrics[k] for k in keys if not _nested(metrics[k])}
    lines = ["## Measured", "", *_table_from_mapping(scalars)] if scalars else []
    for key in keys:
        if key not in scalars:
            lines += _section(key, metrics[key], 2)
    return lines


def _nested(value: Any) -> bool:
    """Lists of scalars print inline; dicts and lists of dicts get their own tables."""
    if isinstance(value, dict):
        return True
    return isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value)


def _section(title: str, value: Any, level: int) -> list[str]:
    """A heading and tables: scalars as a two-column table, rows (dicts of scalars) as one table, deeper as
    sub-sections."""
    lines = [f"{'#' * min(level, 6)} {title.replace('_', ' ').capitalize()}", ""]
    if isinstance(value, list):
        return [*lines, *_rows_table([r for r in value if isinstance(r, dict)]), ""]
    scalars = {k: v for k, v in value.items() if not _nested(v)}
    rows = {k: v for k, v in value.items() if isinstance(v, dict) and v and not any(_nested(x) for x in v.values())}
    if scalars:
        lines += _table_from_mapping(scalars)
    if rows:
        lines += [*_rows_table([{"": k, **v} for k, v in rows.items()]), ""]
    for key, sub in value.items():
        if key not in scalars and key not in rows:
            lines += _section(key, sub, level + 1)
    return lines


def _rows_table(rows: list[dict]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns and not _nested(row[c])]
    if not columns:
        return []
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return lines


def _table_from_mapping(mapping: dict) -> list[str]:
    lines = ["| | |", "|---|---|"]
    lines += [f"| {key} | {_fmt(value)} |" for key, value in mapping.items()]
    return [*lines, ""]


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value).lower()
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a"
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value).replace("|", "\\|")


def to_yaml(data: Any) -> str:
    """A small YAML writer for the front matter (dicts, lists, strings, numbers, booleans)."""
    return "\n".join(_yaml_lines(data, 0)) + "\n"


def _yaml_lines(data: Any, indent: int) -> list[str]:
    pad = " " * indent
    out: list[str] = []
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(value, (dict, list)) and value:
                out.append(f"{pad}{key}:")
                out += _yaml_lines(value, indent + 2 if isinstance(value, dict) else indent)
            else:
                out.append(f"{pad}{key}: {_scalar(value)}")
    elif isinstance(data, list):
        for item in data:
            if isinstance(item, (dict, list)) and item:
                body = _yaml_lines(item, indent + 2)
                out.append(f"{pad}- {body[0].strip()}")
                out += body[1:]
            else:
                out.append(f"{pad}- {_scalar(item)}")
    else:
        out.append(f"{pad}{_scalar(data)}")
    return out


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    text = str(value)
    plain = text and all(c.isalnum() or c in "-_./" for c in text) and text.lower() not in {"true", "false", "null"}
    return text if plain and not text[0].isdigit() else json.dumps(text)


def parse_front_matter(text: str) -> dict[str, Any]:
    """Read back the front matter this module writes (YAML via PyYAML when installed, else our subset)."""
    if not text.startswith("---\n"):
        return {}
    body = text[4 : text.index("\n---", 3)]
    try:
        import yaml
    except ImportError:
        return _parse_subset(body)
    return yaml.safe_load(body) or {}


def _parse_subset(body: str) -> dict[str, Any]:
    data: dict[str, Any] = {}
    key = None
    for line in body.splitlines():
        if not line.strip():
            continue
        if line.startswith("- ") or line.startswith("  - "):
            data.setdefault(key, []).append(_unscalar(line.split("- ", 1)[1]))
        elif ":" in line and not line.startswith(" "):
            key, _, value = line.partition(":")
            if value.strip():
                data[key] = _unscalar(value.strip())
    return data


def _unscalar(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
