"""Resolve MODEL strings to a TNT model.

MODEL may be:
- a timm name (`deit_small_patch16_224`): pretrained weights from the Hub, or random with `random_weights`;
- `hf-hub:org/name[@rev]`: a tnt directory or a timm model repo on the Hub (cache honoured, HF_HUB_OFFLINE too);
- a local directory: tnt's layout (config.json with "tnt", model.safetensors, tnt_heads.safetensors) or timm's
  `save_for_hf` layout (config.json + model.safetensors / pytorch_model.bin); `local-dir:PATH` works too;
- a `.safetensors` file: the architecture comes from its metadata (tnt writes it) or from `arch`;
- a `.pth`/`.pt`/`.bin` checkpoint, unpickled with weights_only=True only; the state dict may sit under
  'model' or 'state_dict'. The architecture comes from `arch` or is inferred from tensor shapes (see
  `tnt_cli.io.arch`). Official TNT checkpoints (`alpha_heads.*`) import with their trained heads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tnt_cli.errors import SettingError, TntError
from tnt_cli.io.builder import (
    IMPORTED_FROM,
    LoadedModel,
    assemble,
    backbone_from_config,
    build_backbone,
    default_head_blocks,
)
from tnt_cli.io.jsonio import loads
from tnt_cli.io.offline import set_offline

if TYPE_CHECKING:
    import torch

    from tnt_cli.engine import Schedule

FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".tar")


def load_model(
    spec: str | os.PathLike,
    *,
    random_weights: bool = False,
    schedule: Schedule | None = None,
    require_trained_heads: bool = True,
    offline: bool = False,
    arch: str | None = None,
) -> LoadedModel:
    """Build the model MODEL names, in eval mode, with `schedule` installed when given (else its own).

    With `random_weights` (timm names only) the backbone and the heads are random (for speed and compute work
    only); heads are then created on blocks 0-4 and every scheduled block. `offline` turns on HF_HUB_OFFLINE
    (call it before anything imports timm for it to reach huggingface_hub's import-time setting; tnt also
    updates an already-imported huggingface_hub). `arch` (a timm name, or a config.json / directory holding
    one) says which architecture a bare checkpoint is.
    """
    set_offline(offline)
    spec = os.fspath(spec)
    loaded = resolve(spec, random_weights=random_weights, schedule=schedule, arch=arch)
    if schedule is not None:
        install_schedule(loaded, schedule, require_trained_heads=require_trained_heads)
    loaded.model.eval()
    return loaded


def resolve(spec: str, *, random_weights: bool, schedule: Schedule | None, arch: str | None) -> LoadedModel:
    """Dispatch on the kind of MODEL string."""
    from tnt_cli.io.model_dir import load_model_dir

    kind, target = classify(spec)
    if random_weights and kind != "timm":
        raise SettingError("{random_weights} applies to timm model names only, not to {spec}", spec=repr(spec))
    if kind == "hub":
        return load_hub(spec)
    if kind == "dir":
        return load_model_dir(target, source=spec)
    if kind == "safetensors":
        return load_safetensors_file(Path(target), arch=arch, schedule=schedule)
    if kind == "pickle":
        return load_pickle_file(Path(target), arch=arch, schedule=schedule)
    return load_timm_name(spec, random_weights=random_weights, schedule=schedule)


def classify(spec: str) -> tuple[str, str]:
    """('hub' | 'dir' | 'safetensors' | 'pickle' | 'timm', target), refusing paths that do not exist."""
    from tnt_cli.io.hub import HUB_PREFIX, REPO_ID

    if spec.startswith(HUB_PREFIX):
        return "hub", spec
    path_text = spec[len("local-dir:") :] if spec.startswith("local-dir:") else spec
    path = Path(path_text).expanduser()
    if path.is_dir():
        return "dir", str(path)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".safetensors":
            return "safetensors", str(path)
        if suffix in FILE_SUFFIXES:
            return "pickle", str(path)
        if path.name == "config.json":
            return "dir", str(path.parent)
        raise TntError(f"{spec}: unsupported file type (expected a directory, .safetensors, .pth, .pt or .bin)")
    looks_like_path = (
        spec.startswith(("local-dir:", ".", "/", "~"))
        or os.sep in spec
        or "/" in spec
        or path.suffix.lower() in FILE_SUFFIXES
    )
    if looks_like_path:
        if REPO_ID.match(spec):
            raise TntError(_not_a_path(spec))
        raise TntError(f"no such file or directory: {path_text}")
    return "timm", spec


def _not_a_path(spec: str) -> str:
    """`org/name` that is no local path: what the Hub's repo of that name is (from the cache, or one request)."""
    from tnt_cli.io.hub import peek_config
    from tnt_cli.io.model_dir import is_transformers_config, transformers_refusal

    config = peek_config(spec)
    if is_transformers_config(config):
        return transformers_refusal(spec, config)
    found = "the Hub has a timm model of that name" if config is not None else "for a timm model on the Hub"
    return f"no such file or directory: {spec} ({found}: write hf-hub:{spec})"


# ----------------------------------------------------------------------------- timm names and the Hub
def load_timm_name(spec: str, *, random_weights: bool, schedule: Schedule | None) -> LoadedModel:
    from tnt_cli.engine import attach_tnt

    vit = build_backbone(spec, spec, where=spec, pretrained=not random_weights)
    model = attach_tnt(vit, default_head_blocks(len(vit.blocks), schedule))
    base = None if random_weights else (vit.pretrained_cfg or {}).get("hf_hub_id")
    loaded = LoadedModel(
        model=model,
        source=spec,
        architecture=spec,
        base_model=base,
        heads_trained=False,
        random_weights=random_weights,
    )
    loaded.record_provenance(heads_trained=False)
    return loaded


def load_hub(spec: str) -> LoadedModel:
    """A tnt directory or timm model repo from the Hub (through the local cache; offline when asked)."""
    from tnt_cli.io.hub import download, download_first, hub_access, parse_hub_spec
    from tnt_cli.io.model_dir import HEADS, TIMM_WEIGHTS, WEIGHTS, load_model_dir, read_config

    repo, revision = parse_hub_spec(spec)
    with hub_access():
        config_path = download(repo, "config.json", revision, what=spec)
        snapshot = config_path.parent
        tnt = read_config(snapshot, what=spec).get("tnt")
        if isinstance(tnt, dict):
            download(repo, WEIGHTS, revision, what=spec)
            download(repo, tnt.get("heads_file", HEADS), revision, what=spec)
        else:
            download_first(repo, TIMM_WEIGHTS, revision, what=spec)
    base = tnt.get("base_model") if isinstance(tnt, dict) and tnt.get("base_model") else repo
    return load_model_dir(snapshot, source=spec, base_model=base)


# ----------------------------------------------------------------------------- files
def load_safetensors_file(path: Path, *, arch: str | None, schedule: Schedule | None) -> LoadedModel:
    """A .safetensors file: tnt's model.safetensors (architecture in its metadata), or any with `arch`."""
    from tnt_cli.io.model_dir import load_model_dir, read_config
    from tnt_cli.io.weights import read_safetensors

    state, metadata = read_safetensors(path)
    parent = path.parent
    if arch is None and (parent / "config.json").is_file():
        try:
            same_dir = "tnt" in read_config(parent) and path.name == "model.safetensors"
        except TntError:
            same_dir = False
        if same_dir:  # DIR/model.safetensors of a tnt directory: load the directory, heads included
            return load_model_dir(parent, source=str(path))
    if arch is None and "timm_config" in metadata:
        config = loads(metadata["timm_config"], f"{path}'s timm_config metadata")
        vit = backbone_from_config(config, where=str(path))
        return from_state(vit, state, path, architecture=config.get("architecture", "?"), schedule=schedule)
    if arch is None and not any(k.startswith("alpha_heads.") for k in state):
        raise TntError(
            f"{path} does not say which architecture it is: load the directory that holds it with its "
            "config.json (timm's save_for_hf layout), or give the architecture (arch= in the Python API)"
        )
    return load_state(state, path, arch=arch, schedule=schedule)


def load_pickle_file(path: Path, *, arch: str | None, schedule: Schedule | None) -> LoadedModel:
    from tnt_cli.io.weights import extract_state_dict, read_pickle

    state = extract_state_dict(read_pickle(path), path)
    return load_state(state, path, arch=arch, schedule=schedule)


def load_state(
    state: dict[str, torch.Tensor], path: Path, *, arch: str | None, schedule: Schedule | None
) -> LoadedModel:
    """A bare state dict: build `arch`, or the ViT/DeiT its shapes describe, then load it strictly."""
    from tnt_cli.io.arch import infer_vit, split_checkpoint

    split = split_checkpoint(state)
    notes = []
    if arch is not None:
        vit = backbone_from_arch(arch, split.backbone, where=str(path))
        architecture = arch
    else:
        name, args = infer_vit(split.backbone, str(path))
        vit = build_backbone(name, name, where=str(path), pretrained=False, **args)
        architecture = name
        notes.append(f"architecture inferred from tensor shapes: {name} with {args}")
    loaded = from_state(vit, state, path, architecture=architecture, schedule=schedule)
    loaded.notes += notes
    return loaded


def from_state(
    vit: Any, state: dict[str, torch.Tensor], path: Path, *, architecture: str, schedule: Schedule | None
) -> LoadedModel:
    model, split = assemble(vit, state, where=str(path), schedule=schedule)
    trained = split.layout != "timm"
    loaded = LoadedModel(
        model=model,
        source=str(path),
        architecture=architecture,
        heads_trained=trained,
        tnt_config={"imported_from": IMPORTED_FROM[split.layout]} if split.layout in IMPORTED_FROM else {},
    )
    if split.dropped:
        loaded.notes.append(f"ignored training-only tensors: {', '.join(split.dropped)}")
    loaded.record_provenance(heads_trained=trained, imported_from=IMPORTED_FROM.get(split.layout))
    return loaded


# ----------------------------------------------------------------------------- architectures
def backbone_from_arch(arch: str, backbone: dict[str, torch.Tensor], *, where: str) -> Any:
    """`arch`: a directory or config.json (timm format), or a timm name (classes taken from the checkpoint)."""
    from tnt_cli.io.model_dir import read_config, read_config_file

    path = Path(arch).expanduser()
    if path.is_dir() or path.suffix == ".json":
        if not path.exists():
            raise TntError(f"no such file or directory: {arch}")
        config = read_config(path) if path.is_dir() else read_config_file(path)
        return backbone_from_config(config, where=where)
    kwargs = {}
    head = backbone.get("head.weight")
    if head is not None:
        kwargs["num_classes"] = int(head.shape[0])
    return build_backbone(arch, arch, where=where, pretrained=False, **kwargs)


def install_schedule(loaded: LoadedModel, schedule: Schedule, *, require_trained_heads: bool = True) -> None:
    """Set the schedule, refusing relevance pruning with heads that were never trained; a schedule whose reducer
    nobody chose takes the model's own."""
    schedule = schedule.with_reducer_of(loaded.model.schedule)
    if require_trained_heads and schedule.prune_layers and not schedule.is_dense and not loaded.heads_usable:
        raise SettingError(
            "{source} has no trained relevance heads: fine-tune it first (`tnt finetune`), use a baseline method, "
            "or pass {random_weights} for speed work",
            source=loaded.source,
        )
    loaded.model.set_schedule(schedule)
