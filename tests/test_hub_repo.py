"""Hub-grade model repos and timm data sources, end to end with no network (issue 14).

A tiny timm model sits in a hand-built Hugging Face cache as `hf-hub:org/tiny-timm`; it is fine-tuned on a
folder of class folders given directly, pruned, evaluated on a tar of class folders with --update-card and
pushed (HfApi replaced by a recorder). What must hold: the card's base_model is the original Hub id at every
step, huggingface_hub parses the card's eval results back, plain timm sees the class names.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import sys
import tarfile
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers import IO, error_line, fake_hf_cache, run_cli, tiny_vit
from PIL import Image

from tnt_cli.errors import TntError

CLASSES = ("cat", "dog", "eel")


def make_class_folders(root: Path, per_class: int = 6, seed: int = 0) -> Path:
    """ROOT/<class>/*.png: an ImageFolder given directly as its class folders (one split). Each class has its
    own mean colour, so even two optimizer steps see a learnable signal."""
    rng = np.random.default_rng(seed)
    for label, cls in enumerate(CLASSES):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            base = np.zeros((24, 28, 3), dtype=np.int64)
            base[..., label] = 200
            pixels = np.clip(base + rng.integers(0, 55, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i}.png")
    return root


def make_tar(folder: Path, target: Path) -> Path:
    """A .tar holding the class folders, as timm's ImageInTar reader reads it."""
    with tarfile.open(target, "w") as tf:
        for cls in CLASSES:
            tf.add(folder / cls, arcname=cls)
    return target


@pytest.fixture
def hub_model(tmp_path, offline_hub):
    from timm.models import save_for_hf

    local = tmp_path / "timm_dir"
    save_for_hf(tiny_vit(shape=IO, seed=1), str(local), safe_serialization=True)
    fake_hf_cache(offline_hub, "org/tiny-timm", local)
    return "hf-hub:org/tiny-timm"


def test_finetune_prune_evaluate_push_keeps_the_hub_id_and_the_class_names(tmp_path, hub_model, monkeypatch):
    import timm

    from tnt_cli.io.card import read_card

    torch.set_num_threads(1)
    pets = make_class_folders(tmp_path / "pets")
    run = tmp_path / "run"
    result = run_cli(
        "finetune", hub_model, "--data", pets, "--out", run, "--train", "full", "--new-classes", "--max-steps", "2",
        "--batch-size", "6", "--no-progress", "--no-distill", "--drop-weight", "0", "--eval-limit", "9", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    tnt = json.loads((run / "config.json").read_text())["tnt"]
    assert tnt["base_model"] == "org/tiny-timm"

    pruned = tmp_path / "pruned"
    result = run_cli("prune", str(run), "--prune-layers", "1", "--keep-rates", "0.5", "--out", str(pruned))
    assert result.exit_code == 0, result.output
    config = json.loads((pruned / "config.json").read_text())
    assert config["tnt"]["base_model"] == "org/tiny-timm"  # the original Hub id, not the local run directory
    assert read_card(pruned / "README.md").data.base_model == "org/tiny-timm"
    dense = timm.create_model(f"local-dir:{pruned}", pretrained=True)
    assert dense.pretrained_cfg["label_names"] == list(CLASSES)

    from tnt_cli.io.labels import model_class_names as class_names
    from tnt_cli.io.sources import load_model

    assert class_names(load_model(pruned).model.vit) == list(CLASSES)

    tar = make_tar(make_class_folders(tmp_path / "held_out", per_class=3, seed=5), tmp_path / "held_out.tar")
    result = run_cli("evaluate", str(pruned), "--data", str(tar), "--update-card", "--json")
    assert result.exit_code == 0, result.output
    measured = json.loads(result.stdout)
    assert measured["images"] == 9
    card = read_card(pruned / "README.md")
    ours = [r for r in card.data.eval_results if r.dataset_name == "held_out.tar"]
    assert {(r.metric_type, r.dataset_split) for r in ours} == {("accuracy", "val"), ("top_5_accuracy", "val")}
    top1 = next(r for r in ours if r.metric_type == "accuracy")
    assert top1.metric_value == round(100 * measured["top1"], 2)  # percent, as the CLI prints
    assert top1.metric_args["images"] == 9 and top1.metric_args["gmacs"] == pytest.approx(measured["gmacs"])
    row = next(line for line in card.text.splitlines() if line.startswith("| held_out.tar |"))
    assert f"{100 * measured['top1']:.2f}%" in row and "| 9 |" in row and "`tnt evaluate`" in row
    again = run_cli("evaluate", str(pruned), "--data", str(tar), "--update-card", "--json")
    assert again.exit_code == 0
    report = json.loads((pruned / "report.json").read_text())
    assert len(report["evaluations"]) == 1  # the same measurement replaces its row

    import huggingface_hub
    from test_push import Recorder

    Recorder.calls, Recorder.uploaded, Recorder.fail = [], {}, None
    monkeypatch.setattr(huggingface_hub, "HfApi", Recorder)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token_not_real")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    result = run_cli("push", str(pruned), "me/tiny-pruned")
    assert result.exit_code == 0, result.output
    pushed = huggingface_hub.ModelCard(Recorder.uploaded["README.md"].decode())
    assert pushed.data.base_model == "org/tiny-timm"
    assert 'timm.create_model("hf-hub:me/tiny-pruned", pretrained=True)' in pushed.text


def test_update_card_needs_a_local_tnt_directory(tmp_path, hub_model):
    pets = make_class_folders(tmp_path / "pets", per_class=1)
    result = run_cli("evaluate", hub_model, "--data", str(pets), "--update-card")
    error_line(result, "--update-card needs MODEL to be a local tnt model directory")


def test_class_folders_given_directly_and_tars_load_like_imagefolders(tmp_path):
    from tnt_cli.data import build_loader, dataset_classes

    vit = tiny_vit(shape=IO, num_classes=3)
    pets = make_class_folders(tmp_path / "pets", per_class=2)
    tar = make_tar(pets, tmp_path / "pets.tar")
    for spec in (pets, tar):
        assert dataset_classes(spec) == list(CLASSES)
        loader = build_loader(spec, "val", vit, batch_size=3)
        labels = torch.cat([y for _, y in loader])
        assert sorted(labels.tolist()) == [0, 0, 1, 1, 2, 2]
        images, _ = next(iter(loader))
        assert images.shape == (3, 3, 32, 32)
    val = make_class_folders(tmp_path / "imagenet" / "val", per_class=1)
    with pytest.raises(TntError, match="is the val split only"):
        build_loader(val, "train", vit, batch_size=1, train=True)  # never train on a folder named val


def test_hfds_is_wired_through_and_fails_with_one_line_offline(tmp_path, monkeypatch):
    """`hfds/` reaches timm's Hugging Face datasets reader; offline, with nothing cached, one clear line."""
    calls = []

    def load_dataset(name, split=None, **kwargs):
        calls.append((name, split))
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub (OfflineModeIsEnabled)")

    fake = types.ModuleType("datasets")
    fake.__spec__ = importlib.machinery.ModuleSpec("datasets", None)
    fake.load_dataset = load_dataset
    fake.Image = object
    monkeypatch.setitem(sys.modules, "datasets", fake)
    monkeypatch.delitem(sys.modules, "timm.data.readers.reader_hfds", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from _helpers import IO, tiny_tnt

    from tnt_cli.io.model_dir import save_model_dir

    out = save_model_dir(tmp_path / "m", tiny_tnt(shape=IO), base_model=None)
    result = run_cli("evaluate", str(out), "--data", "hfds/org/some-images", "--method", "dense")
    line = error_line(result, "hfds/org/some-images", "offline")
    assert "HF_HUB_OFFLINE" in line
    assert calls == [("org/some-images", "validation")]


def test_missing_dataset_packages_are_named(tmp_path, monkeypatch):
    from tnt_cli.data import build_loader

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "webdataset" else real(name, *a))
    with pytest.raises(TntError, match="needs the 'webdataset' package: pip install webdataset"):
        build_loader("wds/imagenet@/shards", "val", tiny_vit(shape=IO), batch_size=2)
    with pytest.raises(TntError, match="streamed"):
        build_loader("wds/imagenet@/shards", "train", tiny_vit(shape=IO), batch_size=2, train=True)


def test_api_save_keeps_what_load_found(tmp_path, hub_model):
    """tnt_cli.load -> tnt_cli.save keeps the Hub base model and the untrained-heads flag (no model attribute)."""
    import tnt_cli

    model = tnt_cli.load(hub_model)
    assert not hasattr(model, "tnt_provenance")
    config = json.loads((tnt_cli.save(model, tmp_path / "a") / "config.json").read_text())
    assert config["tnt"]["base_model"] == "org/tiny-timm" and config["tnt"]["heads_trained"] is False
    random = tnt_cli.load("vit_tiny_patch16_224", random_weights=True)
    config = json.loads((tnt_cli.save(random, tmp_path / "b") / "config.json").read_text())
    assert config["tnt"]["random_weights"] is True and config["tnt"]["heads_trained"] is False
    assert (
        json.loads((tnt_cli.save(model, tmp_path / "c", base_model="x/y") / "config.json").read_text())["tnt"][
            "base_model"
        ]
        == "x/y"
    )


def test_visualize_labels_with_the_models_label_names(tmp_path):
    """The names come from timm's label_names in the saved directory, not from a dataset that must be present."""
    from _helpers import IO, tiny_tnt

    from tnt_cli.io.labels import model_class_names as class_names
    from tnt_cli.io.model_dir import save_model_dir
    from tnt_cli.io.sources import load_model
    from tnt_cli.viz.images import class_names as viz_names

    names = [f"kind {i}" for i in range(10)]
    out = save_model_dir(
        tmp_path / "m", tiny_tnt(shape=IO), base_model=None, training={"dataset": "/elsewhere", "classes": names}
    )
    loaded = load_model(out)
    assert class_names(loaded.model.vit) == names
    assert viz_names(loaded.model.vit, config=loaded.tnt_config) == (names, "model config")
    with pytest.raises(TntError, match="3 class names given for a model with 10 classes"):
        save_model_dir(tmp_path / "n", tiny_tnt(shape=IO), base_model=None, class_names=["a", "b", "c"])
    assert class_names(tiny_vit(shape=IO)) is None  # a random timm model has none
