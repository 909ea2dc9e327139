"""The model card (README.md) of a tnt model directory, built and read with huggingface_hub's ModelCard.

The metadata is a `ModelCardData` whose `eval_results` (`EvalResult`s, so the Hub shows a results widget)
come from full evaluations: `tnt evaluate --update-card` rows and the end-of-fine-tune evaluation. The body is
rendered from `card_template.md` (Jinja, shipped in the package) and is for people: what the model is, how it
was made, the results (percent, each row with its data, split and number of images), how to load it. The run's
settings stay in config.json, the raw measurements in report.json. The result rows (and `eval_results`) are
`tnt_cli.io.card_results`; this module writes the sentences and renders the card.

report.json keys the card understands (everything else is kept in report.json and not shown):
- `evaluations`: rows {data, split, images, limit, seed, method, schedule_text, gmacs, top1, top5, ...};
- `finetune`: {split, images, schedule, dense: {top1, top5}, pruned: {top1, top5}} (data: the training data);
- `calibration`: calibrate's pick, measured on a calibration subset (shown as such, never in `eval_results`);
- `benchmark`: throughput per batch size (`tnt benchmark --update-card`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tnt_cli._version import __version__
from tnt_cli.errors import TntError
from tnt_cli.io.card_results import (
    TASK,
    dataset_ref,
    eval_results,
    fmt_number,
    hub_dataset_ids,
    images_text,
    model_label,
    pct,
    result_rows,
)
from tnt_cli.methods.registry import REFERENCE, lookup

if TYPE_CHECKING:
    from huggingface_hub import ModelCard, ModelCardData

TEMPLATE = Path(__file__).with_name("card_template.md")
PAPER = "https://arxiv.org/abs/2411.18092"
REPO_PLACEHOLDER = "<this repo>"  # `tnt push` fills in the repo id
TAGS = ["image-classification", "timm", "vision-transformer", "token-pruning", "tnt"]

REDUCER_WORDS = {"drop": "dropped", "merge": "merged into the kept tokens", "fuse": "fused into one extra token"}


def method_words(method: str) -> str:
    """How a card names a method: 'token merging (ToMe)' (an unknown name as it is)."""
    try:
        return lookup(method).card
    except TntError:
        return method


def _sim_prune_note(schedule: dict) -> str | None:
    """What `--sim-prune r` does, in the card's words (it behaves differently with one prune layer)."""
    r = schedule.get("sim_prune")
    if not r:
        return None
    seed = schedule.get("sim_seed", 0)
    if len(schedule.get("prune_layers") or []) == 1:
        return (f"Similarity pruning (r {r}, random partition, seed {seed}): the relevance top-k keeps {r} extra "
                f"candidates and similarity removes the {r} most redundant of them, so r changes which tokens stay, "
                "not how many.")  # fmt: skip
    return (f"Similarity pruning (r {r}, random partition, seed {seed}) drops {r} tokens from the patch embeddings "
            "before block 0; the keep rates apply to the rest.")  # fmt: skip


# ----------------------------------------------------------------------------- the card
def card_data(config: dict, metrics: dict | None, *, name: str) -> ModelCardData:
    """The YAML front matter: library, base_model (a Hub id), datasets, tags and the evaluation results."""
    from huggingface_hub import ModelCardData

    from tnt_cli.io.hub import hub_model_id

    tnt = config.get("tnt") or {}
    metrics = metrics or {}
    training = tnt.get("training") or {}
    evaluated = [row.get("data") for row in result_rows(config, metrics)]
    results = eval_results(config, metrics)
    return ModelCardData(
        library_name="timm",
        base_model=hub_model_id(tnt.get("base_model")),
        license=(config.get("pretrained_cfg") or {}).get("license"),
        pipeline_tag=TASK,
        tags=list(TAGS),
        datasets=hub_dataset_ids(training.get("dataset"), *evaluated) or None,
        metrics=["accuracy"] if results else None,
        model_name=name if results else None,
        eval_results=results or None,
    )


def render_card(config: dict, metrics: dict | None = None, *, name: str | None = None) -> str:
    """README.md text, from the package's template through `ModelCard.from_template`."""
    from huggingface_hub import ModelCard

    metrics = metrics or {}
    name = name or f"{config.get('architecture', 'vit')}-tnt"
    data = card_data(config, metrics, name=name)
    card = ModelCard.from_template(data, template_path=str(TEMPLATE), **context(config, metrics, name=name))
    card.text = re.sub(r"\n{3,}", "\n\n", card.text)  # the template's optional sections leave blank runs
    return str(card)


def read_card(path: str | Path) -> ModelCard:
    """A card tnt wrote (or any model card), parsed by huggingface_hub."""
    from huggingface_hub import ModelCard

    return ModelCard.load(Path(path))


def context(config: dict, metrics: dict, *, name: str) -> dict[str, Any]:
    """The template's variables: sentences and rows for people, no settings dump."""
    from tnt_cli.io.hub import hub_model_id

    tnt = config.get("tnt") or {}
    arch = config.get("architecture", "?")
    schedule = tnt.get("schedule") or {}
    gmacs = tnt.get("gmacs") or {}
    method = tnt.get("method", REFERENCE)
    reducer = schedule.get("reducer", "drop")
    text = tnt.get("schedule_text") or "dense"
    base = hub_model_id(tnt.get("base_model"))
    rows = result_rows(config, metrics)
    layers = tuple(schedule.get("prune_layers") or (2,))
    rates = tuple(min(1.0, round(k * 0.9, 2)) for k in schedule.get("keep_rates") or (0.5,))
    return {
        "title": name,
        "summary": _summary(arch, base, method, reducer, text, gmacs, config),
        "warning": _warning(tnt),
        "made": _made(tnt, base, method, reducer, text, gmacs),
        "sim_note": _sim_prune_note(schedule),
        "schedule_rows": [
            {"block": b, "keep": f"{k:g}"}
            for b, k in zip(schedule.get("prune_layers") or [], schedule.get("keep_rates") or [])
        ],
        "results": [
            {
                "data": dataset_ref(row.get("data"))[1],
                "split": row.get("split") or "",
                "images": images_text(row),
                "model": model_label(row.get("method"), row.get("schedule_text")),
                "gmacs": fmt_number(row.get("gmacs")),
                "top1": pct(row.get("top1")),
                "top5": pct(row.get("top5")),
                "source": row.get("source", ""),
            }
            for row in rows
        ],
        "results_note": _results_note(rows),
        "speed": _speed(metrics.get("benchmark")),
        "repo": REPO_PLACEHOLDER,
        "schedule_text": text,
        "usage_layers": layers,
        "usage_rates": rates,
        "has_labels": bool(config.get("label_names") or (config.get("pretrained_cfg") or {}).get("label_names")),
        "heads_file": tnt.get("heads_file", "tnt_heads.safetensors"),
        "has_report": bool(metrics),
    }


def _summary(arch: str, base: str | None, method: str, reducer: str, text: str, gmacs: dict, config: dict) -> str:
    source = f" fine-tuned from [`{base}`](https://huggingface.co/{base})" if base else ""
    names = config.get("label_names") or (config.get("pretrained_cfg") or {}).get("label_names") or []
    classes = f"{config.get('num_classes')}-class " if config.get("num_classes") else ""
    out = (
        f"A {classes}timm `{arch}` image classifier{source}, with Training Noise Token (TNT) relevance heads "
        f"([Rao, Jiang, Moyer 2024]({PAPER})) so it can run on fewer tokens."
    )
    if text != "dense" and gmacs.get("pruned"):
        out += (
            f" As shipped it runs the schedule `{text}` ({method_words(method)}; pruned tokens are "
            f"{REDUCER_WORDS.get(reducer, reducer)}): {fmt_number(gmacs['pruned'])} GMACs per image instead of "
            f"{fmt_number(gmacs.get('dense'))}."
        )
    else:
        out += f" As shipped it runs every token ({fmt_number(gmacs.get('dense'))} GMACs per image)."
    if isinstance(names, list) and names:
        shown = ", ".join(str(n) for n in names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        out += f" Classes: {shown}."
    return out


def _warning(tnt: dict) -> str | None:
    if tnt.get("random_weights"):
        return "Random weights and untrained heads: for speed and compute work only; its predictions mean nothing."
    if not tnt.get("heads_trained", True):
        return "The relevance heads are untrained (random): use this model for speed work only."
    return None


def _made(tnt: dict, base: str | None, method: str, reducer: str, text: str, gmacs: dict) -> list[str]:
    training = tnt.get("training") or {}
    items = []
    if base:
        items.append(f"**Base model**: [`{base}`](https://huggingface.co/{base})")
    if tnt.get("imported_from"):
        items.append(f"**Imported from** {tnt['imported_from']}")
    if training:
        parts = [f"`{training['recipe']}`" if training.get("recipe") else "`tnt finetune`"]
        if training.get("dataset"):
            parts.append(f"on {dataset_ref(training['dataset'])[1]}")
        numbers = []
        if training.get("steps"):
            numbers.append(f"{training['steps']:,} steps")
        if training.get("global_batch"):
            numbers.append(f"global batch {training['global_batch']}")
        if training.get("lr"):
            numbers.append(f"lr {fmt_number(training['lr'], 3)}")
        if (training.get("world_size") or 1) > 1:
            numbers.append(f"{training['world_size']} processes")
        items.append("**Fine-tuning**: " + " ".join(parts) + (f" ({', '.join(numbers)})" if numbers else ""))
    if text == "dense":
        items.append("**Pruning**: none as shipped (dense); choose a schedule at load time")
    else:
        items.append(
            f"**Pruning**: {method_words(method)}, schedule `{text}`; pruned tokens are "
            f"{REDUCER_WORDS.get(reducer, reducer)}"
        )
    if gmacs.get("dense"):
        ratio = gmacs.get("ratio")
        fewer = f" ({1 / ratio:.2f}x fewer MACs)" if ratio and text != "dense" else ""
        items.append(
            f"**Compute**: {fmt_number(gmacs.get('pruned'))} GMACs per image at input size "
            f"{'x'.join(str(v) for v in (tnt.get('input_size') or [])[-2:]) or '?'}, dense {fmt_number(gmacs['dense'])}"
            f"{fewer}"
        )
    items.append(f"**Written by** tnt {tnt.get('tnt_version', __version__)}; the full settings are in `config.json`")
    return items


def _results_note(rows: list[dict]) -> str | None:
    if any(not row.get("full") for row in rows):
        return (
            "Rows marked subset were measured on a seeded subset of the split, not the whole of it; "
            "calibration rows are the images `tnt calibrate` chose the schedule on (optimistic)."
        )
    return None


def _speed(benchmark: Any) -> dict | None:
    if not isinstance(benchmark, dict) or not benchmark.get("batches"):
        return None
    where = ", ".join(
        str(v)
        for v in (
            benchmark.get("device"),
            benchmark.get("dtype"),
            "compiled" if benchmark.get("compile") else None,
            f"{benchmark['threads']} threads" if benchmark.get("threads") else None,
            f"torch {benchmark['torch']}" if benchmark.get("torch") else None,
        )
        if v
    )
    rows = [
        {
            "batch_size": row.get("batch_size", ""),
            "dense": fmt_number(row.get("dense_images_per_s"), 5),
            "pruned": fmt_number(row.get("pruned_images_per_s"), 5),
            "speedup": f"{row['speedup']:.2f}x" if isinstance(row.get("speedup"), (int, float)) else "",
        }
        for row in benchmark["batches"]
        if isinstance(row, dict)
    ]
    return {"where": f"Measured with `tnt benchmark` on {where}." if where else "Measured with `tnt benchmark`.",
            "rows": rows}  # fmt: skip
