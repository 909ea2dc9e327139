"""The tnt model directory: a Hub-ready timm model repo plus TNT's heads and settings.

Layout:
- `config.json`: timm's format (architecture, num_classes, num_features, global_pool, model_args,
  pretrained_cfg) plus a top-level `"tnt"` object (timm ignores unknown top-level keys);
- `model.safetensors`: the backbone with timm's key names, so `timm.create_model('local-dir:DIR',
  pretrained=True)` loads it strictly as a working dense model;
- `tnt_heads.safetensors`: the relevance heads (`heads.{block}.weight/bias`), where timm never looks;
- `README.md`: the model card; `report.json`: measurements, when there are any.

Writes go to a hidden temporary directory beside the target, `config.json` last, then one rename: a crash
leaves either the old directory or none, never one that looks complete.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from tnt_cli._version import __version__
from tnt_cli.errors import TntError
from tnt_cli.io.atomic import atomic_directory, atomic_write_json, atomic_write_text
from tnt_cli.io.builder import IMPORTED_FROM, LoadedModel, Provenance, assemble, build_backbone
from tnt_cli.io.jsonio import jsonable, read_json
from tnt_cli.io.names import CARD, CONFIG, HEADS, REPORT, WEIGHTS
from tnt_cli.methods.registry import REFERENCE

if TYPE_CHECKING:
    from tnt_cli.engine import TNTModel

FORMAT_VERSION = 1
CORE_FILES = (CONFIG, WEIGHTS, HEADS, CARD, REPORT)
# weights files timm's local-dir: loader accepts, in its order of preference
TIMM_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth")


def save_model_dir(
    out_dir: str | Path,
    model: TNTModel,
    *,
    base_model: str | None,
    training: dict | None = None,
    metrics: dict | None = None,
    overwrite: bool = False,
    extra_files: dict[str, bytes] | None = None,
    heads_trained: bool | None = None,
    inputs: tuple = (),
    provenance: Provenance | None = None,
    class_names: list[str] | None = None,
) -> Path:
    """Write MODEL as a tnt model directory (atomically) and return its path.

    `inputs`: paths the model was read from; the target may not be (or hold) one of them.
    `base_model` is the Hub id the weights started from (the card's `base_model`; local paths are dropped);
    None falls back to `provenance` (what the loader found: `LoadedModel.provenance`). `heads_trained`
    defaults to: True when `training` is given, else the provenance's, else True. `class_names` default to
    `training["classes"]`, else the backbone's timm `label_names`; they are written as timm's `label_names`.
    """
    from tnt_cli.io.hub import hub_model_id

    out_dir = Path(out_dir)
    provenance = provenance or Provenance()
    base_model = hub_model_id(base_model) or provenance.base_model
    if training is None:
        training = provenance.training
    elif heads_trained is None:
        heads_trained = True
    if heads_trained is None:
        heads_trained = provenance.heads_trained
    names = _label_names(model.vit, class_names, training)
    _check_extra_files(extra_files or {})

    with atomic_directory(out_dir, overwrite=overwrite, inputs=inputs) as tmp:
        timm_config = timm_config_of(model.vit, tmp, label_names=names, fine_tuned=bool(training))
        tnt = tnt_config(
            model,
            base_model=base_model,
            heads_trained=heads_trained,
            random_weights=provenance.random_weights,
            training=training,
            imported_from=provenance.imported_from,
        )
        if extra_files:  # recorded, so a later overwrite knows them as tnt's (`tnt_cli.io.outdir.foreign_entries`)
            tnt["extra_files"] = sorted({PurePosixPath(name).parts[0] for name in extra_files})
        config = {**timm_config, "tnt": tnt}
        _write_tensors(tmp, model, timm_config, tnt)
        atomic_write_text(tmp / CARD, render(config, metrics, name=_card_name(out_dir)))
        if metrics:
            atomic_write_json(tmp / REPORT, metrics)
        for name, data in (extra_files or {}).items():
            target = tmp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        atomic_write_json(tmp / CONFIG, config)  # last: a directory without it is visibly incomplete
    return out_dir


def _card_name(out_dir: Path) -> str:
    """The model's name in the card: the directory's (a hidden staging directory is named for its parent)."""
    path = out_dir.resolve()
    return path.parent.name if path.name.startswith(".") else path.name


def _label_names(vit: Any, explicit: list[str] | None, training: dict | None) -> list[str] | None:
    from tnt_cli.io.labels import as_class_names, model_class_names

    n = int(getattr(vit, "num_classes", 0) or 0)
    for candidate in (explicit, (training or {}).get("classes")):
        if candidate is not None:
            names = as_class_names(candidate, n)
            if names is None:
                raise TntError(f"{len(candidate)} class names given for a model with {n} classes")
            return names
    return model_class_names(vit)


def timm_config_of(vit: Any, scratch: Path, *, label_names: list[str] | None = None, fine_tuned: bool = False) -> dict:
    """timm's own config.json for the backbone (timm's exporter, so the format is exactly timm's).

    `label_names` go where timm puts them (top level; timm moves them into `pretrained_cfg` on load). A
    `fine_tuned` backbone drops timm's pretrained `tag` (e.g. augreg_in21k_ft_in1k): timm names a model
    `architecture.tag`, and these are no longer that tag's weights.
    """
    from timm.models._hub import save_config_for_hf

    path = scratch / ".timm_config.json"
    try:
        save_config_for_hf(vit, str(path), model_config={"label_names": label_names} if label_names else None)
        config = read_json(path)
    except Exception as exc:
        raise TntError(f"could not write timm's config for this model: {type(exc).__name__}: {exc}") from None
    finally:
        path.unlink(missing_ok=True)
    if fine_tuned and isinstance(config.get("pretrained_cfg"), dict):
        config["pretrained_cfg"].pop("tag", None)
    return config


def tnt_config(
    model: TNTModel,
    *,
    base_model: str | None,
    heads_trained: bool,
    random_weights: bool = False,
    training: dict | None = None,
    imported_from: str | None = None,
) -> dict:
    """The `"tnt"` object of config.json: how to rebuild the TNT model, and what its schedule costs."""
    from tnt_cli.analysis import describe_model

    described = describe_model(model)
    data: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "tnt_version": __version__,
        "base_model": base_model,
        "heads_file": HEADS,
        "head_blocks": list(model.head_blocks),
        "head_norm": bool(model.head_norm),
        "heads_trained": bool(heads_trained),
        "method": str((training or {}).get("method", REFERENCE)),  # what `evaluate`, `prune`, ... run by default
        "random_weights": bool(random_weights),
        "noise": model.noise.to_dict(),
        "schedule": model.schedule.to_dict(),
        "schedule_text": model.schedule.describe(),
        "gmacs": {
            "dense": described["gmacs_dense"],
            "pruned": described["gmacs_pruned"],
            "ratio": described["gmacs_ratio"],
        },
        "tokens_per_block": [row["tokens"] for row in described["blocks"]],
        "input_size": described["input_size"],
    }
    if imported_from:
        data["imported_from"] = imported_from
    if training:
        data["training"] = jsonable(training)
    return data


def _write_tensors(tmp: Path, model: TNTModel, timm_config: dict, tnt: dict) -> None:
    from tnt_cli.io.weights import write_safetensors

    write_safetensors(
        tmp / WEIGHTS,
        model.vit.state_dict(),
        {"architecture": timm_config["architecture"], "timm_config": timm_config, "content": "timm backbone"},
    )
    write_safetensors(tmp / HEADS, model.head_state_dict(), {"content": "tnt relevance heads", "tnt": tnt})


def _check_extra_files(extra: dict[str, bytes]) -> None:
    for name in extra:
        parts = PurePosixPath(name).parts
        if not parts or PurePosixPath(name).is_absolute() or ".." in parts:
            raise TntError(f"extra file name {name!r} must be a relative path inside the directory")
        if name in CORE_FILES:
            raise TntError(f"extra file {name!r} would replace one tnt writes itself")


def render(config: dict, metrics: dict | None, *, name: str | None = None) -> str:
    from tnt_cli.io.card import render_card

    return render_card(config, metrics, name=name)


def read_report(model_dir: str | Path) -> dict:
    """report.json of a model directory ({} when there is none)."""
    path = Path(model_dir) / REPORT
    if not path.is_file():
        return {}
    report = read_json(path)
    return report if isinstance(report, dict) else {}


def update_card(model_dir: str | Path, metrics: dict) -> Path:
    """Merge new measurements into report.json and rewrite README.md (each file replaced atomically).

    Rows under `evaluations` (from `tnt evaluate --update-card`) are merged by what they measured (data,
    split, method, schedule, subset): a new measurement of the same thing replaces the old row.
    """
    model_dir = Path(model_dir)
    config = read_config(model_dir)
    if not isinstance(config.get("tnt"), dict):
        raise TntError(f'{model_dir} is not a tnt model directory (config.json has no "tnt" section)')
    report = read_report(model_dir)
    new = jsonable(metrics)
    rows = new.pop("evaluations", None)
    merged = merge_metrics(report, new)
    if rows:
        merged["evaluations"] = merge_rows(report.get("evaluations") or [], rows)
    text = render(config, merged, name=model_dir.resolve().name)  # before any write: a bad card changes nothing
    atomic_write_json(model_dir / REPORT, merged)
    atomic_write_text(model_dir / CARD, text)
    return model_dir


EVAL_KEY = ("data", "split", "method", "schedule_text", "limit", "seed")


def merge_rows(old: list, new: list) -> list:
    """Evaluation rows: one per measured (data, split, method, schedule, subset), the newest kept."""
    out = {tuple(row.get(k) for k in EVAL_KEY): row for row in old if isinstance(row, dict)}
    for row in new:
        out[tuple(row.get(k) for k in EVAL_KEY)] = row
    return list(out.values())


def merge_metrics(old: dict, new: dict) -> dict:
    """Dicts merge key by key; anything else (numbers, lists of rows) is replaced by the new value."""
    out = dict(old)
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_metrics(out[key], value)
        else:
            out[key] = value
    return out


def read_config(model_dir: str | Path, *, what: str | None = None) -> dict:
    """config.json of a model directory, with one-line errors for a missing or broken file (`what` names the
    model in them, e.g. the Hub id whose cached snapshot this is)."""
    model_dir = Path(model_dir)
    path = model_dir / CONFIG
    if not path.is_file():
        raise TntError(f"{model_dir} is not a model directory: it has no config.json")
    return read_config_file(path, what=what)


def read_config_file(path: str | Path, *, what: str | None = None) -> dict:
    """A timm config.json (any file name), with one-line errors for broken JSON, a transformers config or a
    missing architecture."""
    path = Path(path)
    config = read_json(path)
    if is_transformers_config(config):
        raise TntError(transformers_refusal(what or str(path), config))
    if not isinstance(config, dict) or not isinstance(config.get("architecture"), str):
        raise TntError(f'{what or path} is not a timm model config (no "architecture")')
    return config


def is_transformers_config(config: Any) -> bool:
    """A Hugging Face transformers config.json (`architectures`, `model_type`) rather than timm's (`architecture`)."""
    return (
        isinstance(config, dict)
        and not isinstance(config.get("architecture"), str)
        and (isinstance(config.get("architectures"), list) or "model_type" in config)
    )


def transformers_refusal(what: str, config: dict) -> str:
    """Why a transformers checkpoint does not load, and the timm model to use instead when its name says which."""
    import timm

    kind = ", ".join(str(a) for a in config.get("architectures") or []) or config.get("model_type", "?")
    repo = what.removeprefix("hf-hub:").split("@")[0].rstrip("/")
    guess = repo.split("/")[-1].lower().replace("-", "_")
    instead = (
        f"use timm's {guess} (pretrained weights: hf-hub:timm/{guess}.<tag>)"
        if timm.is_model(guess)
        else "use a timm ViT or DeiT (https://huggingface.co/timm)"
    )
    return f"{what} is a transformers model ({kind}), not a timm model: tnt works on timm ViTs; {instead}"


def load_model_dir(
    model_dir: str | Path,
    *,
    source: str | None = None,
    base_model: str | None = None,
) -> LoadedModel:
    """Read a tnt directory (heads, head_norm, noise, schedule) or a timm save_for_hf directory (new heads)."""
    from tnt_cli.engine import NoiseConfig
    from tnt_cli.io.weights import read_safetensors

    model_dir = Path(model_dir)
    where = source or str(model_dir)
    config = read_config(model_dir)
    tnt = config.get("tnt")
    if tnt is not None and not isinstance(tnt, dict):
        raise TntError(f'{model_dir / CONFIG}: "tnt" must be an object')
    if tnt is not None:
        check_tnt_config(tnt, model_dir / CONFIG)
    weights = next((model_dir / w for w in TIMM_WEIGHTS if (model_dir / w).is_file()), None)
    if weights is None:
        raise TntError(f"{where} has config.json but no weights ({', '.join(TIMM_WEIGHTS[:2])})")
    vit = build_backbone(f"local-dir:{model_dir}", config["architecture"], where=where)
    state = _read_weights(weights)
    heads = None
    noise = None
    head_norm = None
    if tnt is not None:
        heads_path = model_dir / tnt.get("heads_file", HEADS)
        if not heads_path.is_file():
            raise TntError(f"{where} is a tnt directory but {heads_path.name} is missing")
        head_tensors, _ = read_safetensors(heads_path)
        state = {**state, **{k: v for k, v in head_tensors.items()}}
        try:
            noise = NoiseConfig.from_dict(tnt.get("noise", {}))
        except (TypeError, ValueError) as exc:
            raise TntError(f"{model_dir / CONFIG}: bad noise settings: {exc}") from None
        head_norm = bool(tnt.get("head_norm", True))
        heads = tnt.get("head_blocks")
    model, split = assemble(vit, state, where=where, noise=noise, head_norm=head_norm, expect_heads=heads)
    heads_trained = bool(tnt.get("heads_trained", True)) if tnt is not None else split.layout != "timm"
    random_weights = bool(tnt.get("random_weights", False)) if tnt is not None else False
    base = base_model or (tnt or {}).get("base_model")  # a tnt directory keeps the original Hub id
    loaded = LoadedModel(
        model=model,
        source=source or str(model_dir),
        architecture=config["architecture"],
        base_model=base,
        heads_trained=heads_trained,
        tnt_config=dict(tnt or {}),
        random_weights=random_weights,
    )
    if tnt is not None and tnt.get("schedule"):
        from tnt_cli.engine import Schedule

        model.set_schedule(Schedule.from_dict(tnt["schedule"]))
    loaded.record_provenance(
        heads_trained=heads_trained,
        training=(tnt or {}).get("training"),
        imported_from=(tnt or {}).get("imported_from") or IMPORTED_FROM.get(split.layout),
    )
    return loaded


def check_tnt_config(tnt: dict, where: Path) -> None:
    """The fields of config.json's "tnt" section that loading relies on, with one-line errors (hand edits)."""
    version = tnt.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise TntError(f'{where}: "tnt.format_version" must be a whole number (this tnt writes {FORMAT_VERSION}), '
                       f"got {version!r}")  # fmt: skip
    if version > FORMAT_VERSION:
        raise TntError(
            f"{where}: written in tnt format {version}, this tnt ({__version__}) reads format {FORMAT_VERSION}: "
            "upgrade it (pip install -U tnt-token-pruning)"
        )
    if version < 1:
        raise TntError(f'{where}: "tnt.format_version" {version} is not a tnt format (formats start at 1)')
    blocks = tnt.get("head_blocks")
    if blocks is not None and (
        not isinstance(blocks, list) or not all(isinstance(b, int) and not isinstance(b, bool) for b in blocks)
    ):
        raise TntError(f'{where}: "tnt.head_blocks" must be a list of block numbers, got {blocks!r}')
    for key, kind, text in (("heads_file", str, "a file name"), ("noise", dict, "an object"),
                            ("schedule", dict, "an object"), ("head_norm", bool, "true or false")):  # fmt: skip
        if key in tnt and tnt[key] is not None and not isinstance(tnt[key], kind):
            raise TntError(f'{where}: "tnt.{key}" must be {text}, got {tnt[key]!r}')
    heads_file = tnt.get("heads_file")
    if isinstance(heads_file, str) and (not heads_file or "/" in heads_file or heads_file.startswith(".")):
        raise TntError(f'{where}: "tnt.heads_file" must be a file name in the directory, got {heads_file!r}')


def _read_weights(path: Path) -> dict:
    from tnt_cli.io.weights import extract_state_dict, read_pickle, read_safetensors

    if path.suffix == ".safetensors":
        return read_safetensors(path)[0]
    return extract_state_dict(read_pickle(path), path)
