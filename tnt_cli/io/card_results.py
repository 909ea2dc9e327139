"""What a model card reports: report.json's accuracies as rows of one shape, and the Hub's `eval_results`.

Rows come from `tnt evaluate --update-card` (`evaluations`), the end-of-fine-tune evaluation (`finetune`) and
calibrate's pick (`calibration`, a subset: shown in the card, never in `eval_results`). DATA specs appear by a
public name (a Hub id where there is one, never a whole local path: a card is public).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tnt_cli.methods.registry import DENSE, REFERENCE

if TYPE_CHECKING:
    from huggingface_hub import EvalResult

TASK = "image-classification"
# DATA specs tnt knows -> (Hub dataset id, pretty name, dataset config)
KNOWN_DATASETS = {
    "fashion-mnist": ("zalando-datasets/fashion_mnist", "Fashion-MNIST", None),
    "cluttered-fashion-mnist": ("zalando-datasets/fashion_mnist", "Cluttered Fashion-MNIST (synthetic)", "cluttered"),
    "textured-fashion-mnist": ("zalando-datasets/fashion_mnist", "Textured Fashion-MNIST (synthetic)", "textured"),
    "imagenet": ("ILSVRC/imagenet-1k", "ImageNet-1k", None),
    "imagenet-1k": ("ILSVRC/imagenet-1k", "ImageNet-1k", None),
}
HUB_PREFIXES = ("hfds/", "hfids/")
STREAM_PREFIXES = ("wds/", "tfds/")
SPLIT_NAMES = {"train", "val", "validation", "test"}


# ----------------------------------------------------------------------------- datasets
def dataset_ref(spec: Any) -> tuple[str, str, str | None]:
    """(dataset type, dataset name, config) for a DATA spec: a Hub id where there is one, else its kind.

    Local paths never appear whole (a card is public): a folder shows as its name (`imagenet/val` when it is
    named for a split).
    """
    text = str(spec or "").strip()
    known = KNOWN_DATASETS.get(text.lower())
    if known:
        return known
    for prefix in (*HUB_PREFIXES, *STREAM_PREFIXES):
        if text.lower().startswith(prefix):
            name = text[len(prefix) :]
            return (name if prefix in HUB_PREFIXES else prefix.rstrip("/"), name, None)
    path = Path(text)
    split_named = path.name.lower() in SPLIT_NAMES and len(path.parts) > 1
    shown = "/".join(path.parts[-2:]) if split_named else path.name or text
    return ("imagefolder", shown, None)


def hub_dataset_ids(*specs: Any) -> list[str]:
    """The Hub dataset ids among DATA specs (known names, hfds/ ids), for the card's `datasets`."""
    found = []
    for spec in specs:
        text = str(spec or "").strip()
        if text.lower() in KNOWN_DATASETS or text.lower().startswith(HUB_PREFIXES):
            found.append(dataset_ref(text)[0])
    return list(dict.fromkeys(found))


# ----------------------------------------------------------------------------- numbers
def pct(value: Any) -> str:
    """A fraction as the CLI prints it: 0.207 -> '20.70%'; '' when unknown."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return ""
    return f"{100 * value:.2f}%"


def _pct_value(value: Any) -> float | None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return None
    return round(100 * value, 2)


def fmt_number(value: Any, digits: int = 4) -> str:
    """A number in `digits` significant figures; '' when unknown."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return ""
    return f"{value:.{digits}g}"


def images_text(row: dict) -> str:
    """How many images a row measured, and whether they were a seeded subset."""
    images = row.get("images")
    text = f"{images:,}" if isinstance(images, int) else ""
    limit = row.get("limit")
    if text and limit:
        text += f" (seeded subset, seed {row.get('seed', 0)})"
    return text


def model_label(method: str | None, schedule_text: str | None) -> str:
    """The model a row measured, in words: `dense (all tokens)` or `METHOD: SCHEDULE`."""
    method = method or REFERENCE
    if method == DENSE or schedule_text in (None, "", "dense"):
        return "dense (all tokens)"
    return f"{method}: {schedule_text}"


# ----------------------------------------------------------------------------- rows
def result_rows(config: dict, metrics: dict) -> list[dict]:
    """Every accuracy the report holds, as rows of one shape (fractions; `source` says who measured)."""
    tnt = config.get("tnt") or {}
    gmacs = tnt.get("gmacs") or {}
    training = tnt.get("training") or {}
    rows: list[dict] = []
    for row in metrics.get("evaluations") or []:
        if isinstance(row, dict) and row.get("top1") is not None:
            rows.append({**row, "source": "`tnt evaluate`", "full": not row.get("limit")})
    finetune = metrics.get("finetune")
    if isinstance(finetune, dict):
        for variant in ("pruned", "dense"):
            result = finetune.get(variant)
            if not isinstance(result, dict) or result.get("top1") is None:
                continue
            pruned = variant == "pruned"  # else the dense model
            schedule = finetune.get("schedule") if pruned else "dense"
            same = schedule == tnt.get("schedule_text")
            rows.append(
                {
                    "data": training.get("dataset") or metrics.get("data"),
                    "split": finetune.get("split"),
                    "images": finetune.get("images"),
                    "limit": finetune.get("limit"),
                    "seed": finetune.get("seed"),
                    "method": tnt.get("method", REFERENCE) if pruned else DENSE,
                    "schedule_text": schedule,
                    "gmacs": (gmacs.get("pruned") if same else None) if pruned else gmacs.get("dense"),
                    "top1": result.get("top1"),
                    "top5": result.get("top5"),
                    "source": "end of `tnt finetune`",
                    "full": not finetune.get("limit"),
                }
            )
    calibration = metrics.get("calibration")
    if isinstance(calibration, dict) and calibration.get("top1") is not None:
        where = calibration.get("measured_on") or {}
        common = {
            "data": where.get("data") or metrics.get("data"),
            "split": where.get("split"),
            "images": where.get("images"),
            "limit": where.get("limit"),
            "seed": where.get("seed"),
            "source": "calibration subset (`tnt calibrate`, which selected the schedule on these images)",
            "full": False,
        }
        rows.append(
            {
                **common,
                "method": tnt.get("method", REFERENCE),
                "schedule_text": tnt.get("schedule_text"),
                "gmacs": calibration.get("gmacs"),
                "top1": calibration.get("top1"),
                "top5": calibration.get("top5"),
            }
        )
        if calibration.get("dense_top1") is not None:
            dense = {"method": DENSE, "schedule_text": "dense", "gmacs": calibration.get("gmacs_dense")}
            rows.append({**common, **dense, "top1": calibration.get("dense_top1"), "top5": None})
        rows += _calibration_evaluation(calibration, tnt, common["data"])
    return rows


def _calibration_evaluation(calibration: dict, tnt: dict, data: Any) -> list[dict]:
    """The chosen schedule and dense as calibrate measured them on the evaluation split, after choosing."""
    e = calibration.get("evaluation")
    if not isinstance(e, dict) or e.get("top1") is None:
        return []
    common = {"data": data, "split": e.get("split"), "images": e.get("images"), "limit": e.get("limit"),
              "seed": e.get("seed"), "source": "`tnt calibrate`, after choosing (not on the images it chose on)",
              "full": not e.get("limit")}  # fmt: skip
    chosen = {"method": tnt.get("method", REFERENCE), "schedule_text": tnt.get("schedule_text"),
              "gmacs": calibration.get("gmacs"), "top1": e.get("top1"), "top5": e.get("top5")}  # fmt: skip
    dense = {"method": DENSE, "schedule_text": "dense", "gmacs": calibration.get("gmacs_dense"),
             "top1": e.get("dense_top1"), "top5": e.get("dense_top5")}  # fmt: skip
    return [{**common, **chosen}] + ([{**common, **dense}] if dense["top1"] is not None else [])


def eval_results(config: dict, metrics: dict) -> list[EvalResult]:
    """The card's `model-index`: top-1 and top-5 of each evaluation (never calibrate's selection subset)."""
    from huggingface_hub import EvalResult

    out = []
    for row in result_rows(config, metrics):
        if not row.get("full") and not row.get("source", "").startswith("`tnt evaluate`"):
            continue
        dataset_type, dataset_name, dataset_config = dataset_ref(row.get("data"))
        label = model_label(row.get("method"), row.get("schedule_text"))
        detail = [label]
        if row.get("gmacs"):
            detail.append(f"{fmt_number(row['gmacs'])} GMACs")
        if row.get("images"):
            detail.append(f"{row['images']} images" + (" (subset)" if row.get("limit") else ""))
        args = {
            "method": row.get("method") or REFERENCE,
            "schedule": row.get("schedule_text") or "dense",
            "gmacs": row.get("gmacs"),
            "images": row.get("images"),
        }
        args = {k: v for k, v in args.items() if v is not None}
        for metric, key, pretty in (("accuracy", "top1", "top-1"), ("top_5_accuracy", "top5", "top-5")):
            value = _pct_value(row.get(key))
            if value is None:
                continue
            out.append(
                EvalResult(
                    task_type=TASK,
                    task_name="Image Classification",
                    dataset_type=dataset_type,
                    dataset_name=dataset_name,
                    dataset_config=dataset_config,
                    dataset_split=row.get("split"),
                    metric_type=metric,
                    metric_name=f"{pretty} accuracy, % ({'; '.join(detail)})",
                    metric_value=value,
                    metric_args=args,
                )
            )
    return out
