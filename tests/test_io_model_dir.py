"""The tnt model directory: round trips, plain timm compatibility, the card, atomic writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import fields

import pytest
import torch
from _helpers import IO, images, read_config, tiny_tnt

from tnt_cli.engine import Schedule
from tnt_cli.errors import TntError
from tnt_cli.io.card import read_card
from tnt_cli.io.model_dir import save_model_dir, update_card
from tnt_cli.io.outdir import OutputExists
from tnt_cli.io.sources import load_model

KINDS = [
    ("vit", {}),
    ("deit_distilled", {}),
    ("vit", {"reg_tokens": 2, "global_pool": "avg"}),
]


@pytest.mark.parametrize(("kind", "extra"), KINDS)
def test_round_trip_identical_logits_dense_and_pruned(tmp_path, kind, extra):
    schedule = Schedule(prune_layers=(0, 1), keep_rates=(0.5, 0.5), sim_prune=1)
    model = tiny_tnt(kind, schedule=schedule, head_norm=False, shape=IO, **extra)
    out = save_model_dir(tmp_path / "m", model, base_model="timm/base-model", training={"dataset": "fashion-mnist"})
    loaded = load_model(out)
    x = images(4)
    with torch.no_grad():
        assert loaded.model.schedule == schedule
        assert loaded.heads_trained and loaded.base_model == "timm/base-model"
        assert loaded.model.head_norm is False
        assert loaded.model.noise == model.noise
        pruned_before, pruned_after = model(x), loaded.model(x)
        assert torch.equal(pruned_before, pruned_after)
        model.set_schedule(Schedule())
        loaded.model.set_schedule(Schedule())
        dense_before, dense_after = model(x), loaded.model(x)
        assert torch.equal(dense_before, dense_after)
    assert not torch.allclose(pruned_before, dense_before)  # the pruned forward really dropped tokens


def test_plain_timm_loads_the_directory_as_the_dense_model(tmp_path):
    import timm

    model = tiny_tnt(shape=IO, schedule=Schedule(prune_layers=(1,), keep_rates=(0.5,)))
    out = save_model_dir(tmp_path / "m", model, base_model=None)
    dense = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    tnt_model = load_model(out, schedule=Schedule(prune_layers=(1,), keep_rates=(1.0,))).model
    x = images(4)
    with torch.no_grad():
        torch.testing.assert_close(dense(x), tnt_model(x), rtol=0, atol=1e-6)
        torch.testing.assert_close(dense(x), model.vit(x), rtol=0, atol=0)


def test_config_is_timm_format_plus_tnt(tmp_path):
    from safetensors import safe_open
    from timm.models._pretrained import PretrainedCfg

    model = tiny_tnt(shape=IO, schedule=Schedule(prune_layers=(1,), keep_rates=(0.5,)))
    out = save_model_dir(tmp_path / "m", model, base_model="timm/x")
    config = read_config(out)
    assert {"architecture", "num_classes", "num_features", "global_pool", "model_args", "pretrained_cfg"} <= set(config)
    assert set(config["pretrained_cfg"]) <= {f.name for f in fields(PretrainedCfg)}
    tnt = config["tnt"]
    assert tnt["format_version"] == 1 and tnt["base_model"] == "timm/x"
    assert tnt["head_blocks"] == [0, 1, 2] and tnt["schedule"]["keep_rates"] == [0.5]
    assert tnt["heads_trained"] is True
    assert tnt["gmacs"]["pruned"] < tnt["gmacs"]["dense"]
    with safe_open(str(out / "model.safetensors"), "pt") as fh:
        assert set(fh.keys()) == set(model.vit.state_dict())
        assert fh.metadata()["producer"].startswith("tnt-token-pruning")
    with safe_open(str(out / "tnt_heads.safetensors"), "pt") as fh:
        assert set(fh.keys()) == {f"heads.{b}.{p}" for b in (0, 1, 2) for p in ("weight", "bias")}


def test_card_and_report(tmp_path):
    model = tiny_tnt(shape=IO, schedule=Schedule(prune_layers=(1,), keep_rates=(0.5,)))
    metrics = {"finetune": {"split": "val", "images": 200, "schedule": "block 1 keep 0.5",
                            "dense": {"top1": 0.91, "top5": 0.99}, "pruned": {"top1": 0.88, "top5": 0.97}}}  # fmt: skip
    out = save_model_dir(tmp_path / "m", model, base_model="hf-hub:timm/x@main", metrics=metrics,
                         training={"dataset": "fashion-mnist", "steps": 12})  # fmt: skip
    card = read_card(out / "README.md")
    assert card.data.library_name == "timm" and card.data.base_model == "timm/x"
    assert {"token-pruning", "tnt"} <= set(card.data.tags)
    assert card.data.datasets == ["zalando-datasets/fashion_mnist"]
    top1 = [r for r in card.data.eval_results if r.metric_type == "accuracy"]
    assert [(r.dataset_type, r.dataset_split, r.metric_value) for r in top1] == [
        ("zalando-datasets/fashion_mnist", "val", 88.0),
        ("zalando-datasets/fashion_mnist", "val", 91.0),
    ]
    assert "block 1 keep 0.5" in card.text and "| 88.00% | 97.00% |" in card.text and "| 200 |" in card.text
    assert "0.88" not in card.text  # one unit: percent, as the CLI prints
    assert json.loads((out / "report.json").read_text()) == metrics

    update_card(out, {"benchmark": {"device": "cpu", "batches": [{"batch_size": 1, "speedup": 1.5}]}})
    report = json.loads((out / "report.json").read_text())
    assert set(report) == {"finetune", "benchmark"}
    card = read_card(out / "README.md")
    assert "| 1 |" in card.text and "1.50x" in card.text and "| 88.00% |" in card.text
    assert load_model(out).model.schedule.keep_rates == (0.5,)  # still loads after the update


def test_card_is_for_people_and_parses_back(tmp_path):
    """No settings dump, no empty headings; sections without data are left out; huggingface_hub reads it."""
    import re

    training = {"dataset": "fashion-mnist", "recipe": "tnt finetune --recipe fm", "steps": 5, "config": {"lr": 9}}
    out = save_model_dir(tmp_path / "bare", tiny_tnt(shape=IO), base_model=None, training=training)
    text = (out / "README.md").read_text()
    card = read_card(out / "README.md")
    assert card.data.eval_results is None and card.data.base_model is None  # nothing measured, no Hub base
    headings = re.findall(r"^#+ .*$", card.text, flags=re.M)
    for heading in headings:  # every heading has text under it before the next heading
        body = card.text.split(heading, 1)[1]
        nxt = re.search(r"^#+ ", body, flags=re.M)
        assert body[: nxt.start() if nxt else None].strip(), heading
    assert "## Results" not in text and "## Speed" not in text and "Extra" not in text
    assert '"lr": 9' not in text and "config" not in card.text.split("## Files")[0].replace("config.json", "")
    assert "`tnt finetune --recipe fm` on Fashion-MNIST (5 steps)" in text
    assert 'timm.create_model("hf-hub:<this repo>", pretrained=True)' in text


def test_method_and_reducer_are_read_from_the_config(tmp_path):
    out = save_model_dir(tmp_path / "m", tiny_tnt(shape=IO, schedule=Schedule((1,), (0.5,))), base_model=None)
    config = read_config(out)
    config["tnt"]["method"] = "evit"
    config["tnt"]["schedule"]["reducer"] = "fuse"
    from tnt_cli.io.card import render_card

    text = render_card(config, None, name="m")
    assert "CLS-attention scores (EViT)" in text and "fused into one extra token" in text
    assert "Training Noise Token pruning)" not in text.split("## How it was made")[1].split("## How to use")[0]


def test_no_report_without_metrics_and_extra_files(tmp_path):
    model = tiny_tnt(shape=IO)
    out = save_model_dir(tmp_path / "m", model, base_model=None, extra_files={"calib/schedule.json": b"{}"})
    assert not (out / "report.json").exists()
    assert (out / "calib" / "schedule.json").read_bytes() == b"{}"
    with pytest.raises(TntError, match="relative path"):
        save_model_dir(tmp_path / "n", model, base_model=None, extra_files={"../evil": b""})


def test_existing_target_needs_overwrite(tmp_path):
    model = tiny_tnt(shape=IO)
    out = save_model_dir(tmp_path / "m", model, base_model="a/b")
    with pytest.raises(OutputExists, match="already exists") as raised:
        save_model_dir(out, model, base_model="c/d")
    assert "--overwrite" not in str(raised.value)  # a library error: the CLI's error table adds the flag
    assert read_config(out)["tnt"]["base_model"] == "a/b"
    save_model_dir(out, model, base_model="c/d", overwrite=True)
    assert read_config(out)["tnt"]["base_model"] == "c/d"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary leftovers


def test_error_while_writing_leaves_nothing(tmp_path, monkeypatch):
    import tnt_cli.io.model_dir as md

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(md, "render", boom)  # fails after the weights were written
    with pytest.raises(RuntimeError, match="disk full"):
        save_model_dir(tmp_path / "m", tiny_tnt(shape=IO), base_model=None)
    assert list(tmp_path.iterdir()) == []


KILL_SCRIPT = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from _helpers import IO, tiny_tnt
import tnt_cli.io.model_dir as md

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)  # killed mid-write: weights are on disk, the card and config are not

md.render = die
md.save_model_dir({target!r}, tiny_tnt(shape=IO), base_model=None)
"""


def test_killed_while_writing_leaves_no_directory_that_looks_complete(tmp_path):
    target = tmp_path / "m"
    script = KILL_SCRIPT.format(tests=os.path.dirname(__file__), target=str(target))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert not target.exists()
    leftovers = [p for p in tmp_path.iterdir() if p.name != ".m.lock"]  # the lock file: its flock died too
    assert leftovers, "the kill should have happened mid-write"
    for path in leftovers:
        assert path.name.startswith(".m.partial-")
        assert (path / "model.safetensors").exists() and not (path / "config.json").exists()  # not loadable
    with pytest.raises(TntError, match="no such file or directory"):
        load_model(target)
    save_model_dir(target, tiny_tnt(shape=IO), base_model=None)  # the next write removes the dead run's partial
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_random_weights_heads_recorded_as_untrained(tmp_path):
    loaded = load_model("vit_tiny_patch16_224", random_weights=True)
    out = save_model_dir(tmp_path / "m", loaded.model, base_model=None, provenance=loaded.provenance)
    tnt = read_config(out)["tnt"]
    assert tnt["heads_trained"] is False and tnt["random_weights"] is True
    assert "untrained" in (out / "README.md").read_text()
    again = load_model(out, schedule=Schedule(prune_layers=(2,), keep_rates=(0.5,)))  # speed work stays allowed
    assert again.random_weights and again.provenance.heads_trained is False
