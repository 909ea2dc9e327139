"""The base models shipped in examples/fashion_mnist/base/: complete, loadable, and as accurate as meta.json says.

The demo and the study start from them instead of training a base for most of an hour;
train_base.py (`make base`) is how they were made, and its defaults must be that recipe.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "fashion_mnist"
BENCHES = ("fashion-mnist", "cluttered-fashion-mnist")


@pytest.fixture(scope="module")
def examples():
    sys.path.insert(0, str(EXAMPLES))
    try:
        import common
        import train_base

        yield common, train_base
    finally:
        sys.path.remove(str(EXAMPLES))


@pytest.mark.parametrize("bench", BENCHES)
def test_shipped_base_is_complete_and_says_how_it_was_made(examples, bench):
    common, train_base = examples
    d = common.base_dir(bench)
    assert d == EXAMPLES / "base" / bench
    assert {p.name for p in d.iterdir()} >= {"config.json", "model.safetensors", "meta.json"}
    meta = json.loads((d / "meta.json").read_text())
    assert meta["bench"] == bench and meta["epochs"] == train_base.EPOCHS[bench]  # the defaults are the recipe
    assert f"--bench {bench}" in meta["command"] and meta["seed"] == 0
    assert 50 < meta["test_top1"] < 100 and meta["wall_s"] > 0 and meta["machine"]["cpu"]
    assert meta["history"][-1]["test_top1"] == meta["test_top1"]
    spec = common.BENCHES[bench]
    assert meta["arch"]["img_size"] == spec.img_size and meta["arch"]["patch_size"] == spec.patch_size


@pytest.mark.parametrize("bench", BENCHES)
def test_shipped_base_loads_through_tnt(examples, bench):
    from tnt_cli.io.sources import load_model

    common, _ = examples
    loaded = load_model(common.base_dir(bench), require_trained_heads=False)
    spec = common.BENCHES[bench]
    assert loaded.model.num_patches == (spec.img_size // spec.patch_size) ** 2
    assert loaded.model.vit.embed_dim == spec.embed_dim and loaded.model.depth == spec.depth


def test_shipped_fashion_mnist_base_has_the_recorded_test_accuracy(examples):
    """The first 1000 test images agree with the recorded full-test accuracy within sampling noise (sd ~1.1 pts
    at 85%; 4 pts is ~3.5 sd), so the weights are the ones meta.json describes (random weights score ~10%)."""
    common, train_base = examples
    model, meta = train_base.load_base("fashion-mnist")
    x, y = common.load_split("fashion-mnist", "test", limit=1000)
    assert common.evaluate(model, x, y) == pytest.approx(meta["test_top1"], abs=4.0)


def test_retraining_writes_a_fresh_folder_and_reports_the_delta(examples, tmp_path, monkeypatch, capsys):
    """train_base.py's bookkeeping (the training itself is stubbed: it takes half an hour)."""
    common, train_base = examples
    spec = common.BENCHES["fashion-mnist"]

    def fake_train(bench, *, epochs, **kw):
        history = [{"epoch": epochs, "loss": 1.0, "test_top1": 80.0, "wall_s": 2.0}]
        return common.create_vit(spec).eval(), history, 2.0

    monkeypatch.setattr(train_base, "train", fake_train)
    shipped = json.loads((common.base_dir("fashion-mnist") / "meta.json").read_text())["test_top1"]
    into = tmp_path / "retrained"
    train_base.main(["--bench", "fashion-mnist", "--into", str(into)])
    out = capsys.readouterr().out
    assert f"vs shipped {shipped:.2f}%: {80.0 - shipped:+.2f} pts" in out
    meta = json.loads((into / "meta.json").read_text())
    assert meta["epochs"] == 5 and meta["test_top1"] == 80.0 and "--into" in meta["command"]
    assert (into / "model.safetensors").exists() and (into / "config.json").exists()
    train_base.main(["--bench", "fashion-mnist", "--into", str(into)])  # an existing model is kept without --force
    assert "exists:" in capsys.readouterr().out
