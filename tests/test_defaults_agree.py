"""Defaults that agree: a fine-tune ships, evaluates and cards the schedule it trained for; calibrate chooses on
images the fine-tune held out and measures its choice on the test split; no report names a split the data lacks."""

from __future__ import annotations

import json

import pytest
from _helpers import read_config, run_cli

from tnt_cli.engine import Schedule
from tnt_cli.train.config import TrainConfig
from tnt_cli.train.task import PruningPass

LABEL = "train (held-out slice)"  # the held-out slice's name in reports (tnt_cli.data.holdout.LABEL)
SPLITS_FASHION_MNIST_HAS = {"train", "test", LABEL}


@pytest.fixture(scope="module")
def finetuned(base, tmp_path_factory):
    """Two steps of the default recipe from a plain timm directory: (OUT, the --json summary)."""
    out = tmp_path_factory.mktemp("agree") / "out"
    result = run_cli("finetune", base, "--out", out, "--data", "fashion-mnist", "--no-progress", "--max-steps", "2",
                     "--batch-size", "16", "--limit", "64", "--eval-limit", "64", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def card_splits(card: str) -> set[str]:
    """The split column of the card's results table."""
    lines = card.split("| data | split |", 1)[1].splitlines()[2:]
    return {line.split("|")[2].strip() for line in lines if line.startswith("|")}


def test_finetune_ships_evaluates_and_cards_the_schedule_it_trained_for(finetuned):
    out, summary = finetuned
    block = summary["settings"]["drop_block"]
    assert block == 1  # the default recipe's pruning pass on a 4-block model
    trained_for = Schedule(prune_layers=(block,), keep_rates=(0.5,), reducer="merge")  # the default recipe merges
    assert summary["eval_schedule"] == trained_for.to_dict()
    assert summary["evaluation"]["schedule"] == trained_for.describe()  # what the end-of-run evaluation measured
    assert read_config(out)["tnt"]["schedule"] == trained_for.to_dict()  # what OUT runs
    card = (out / "README.md").read_text()
    assert f"`{trained_for.describe()}`" in card and "block 2" not in card


def test_no_report_names_a_split_the_data_lacks(finetuned, tmp_path):
    out, summary = finetuned
    assert summary["evaluation"]["split"] == "test"  # Fashion-MNIST's "val" is its test split
    assert card_splits((out / "README.md").read_text()) == {"test"}
    result = run_cli("evaluate", out, "--data", "fashion-mnist", "--limit", "32", "--update-card", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["split"] == "test"
    assert card_splits((out / "README.md").read_text()) <= SPLITS_FASHION_MNIST_HAS


def test_split_label_is_the_name_the_data_gives_it(tmp_path):
    from tnt_cli.data.datasets import split_label

    assert split_label("fashion-mnist", "val") == "test" and split_label("cluttered-fashion-mnist", "train") == "train"
    assert split_label("fashion-mnist", "holdout") == LABEL
    assert split_label("hfds/org/data", "val") == "validation"
    for name in ("train", "validation"):
        (tmp_path / "imgs" / name / "cat").mkdir(parents=True)
    assert split_label(tmp_path / "imgs", "val") == "validation"


def test_finetune_leaves_the_held_out_slice_out_of_training():
    from tnt_cli.data.datasets import base_dataset
    from tnt_cli.data.holdout import holdout_indices, holdout_size
    from tnt_cli.train.setup import open_training_data

    held = base_dataset("fashion-mnist", "holdout")
    assert len(held) == holdout_size(60000) == 5000
    trained = open_training_data(TrainConfig(model="m", data="fashion-mnist", out="o")).base
    assert len(trained) == 55000 and set(trained.indices).isdisjoint(held.indices)
    assert len(open_training_data(TrainConfig(model="m", data="fashion-mnist", out="o", holdout=False)).base) == 60000
    assert holdout_indices(60000) == holdout_indices(60000) != holdout_indices(59999)[:5000]  # fixed by size alone


def test_deployed_schedule_is_the_pruning_pass_at_a_rate_it_trained():
    from tnt_cli.data.holdout import LABEL as label
    from tnt_cli.train.setup import deployed_schedule, trained_keep

    assert label == LABEL
    cfg = TrainConfig(model="m", data="d", out="o", reducer="merge")
    one = PruningPass(2, (0.7, 0.5, 0.3), "merge")
    assert deployed_schedule(cfg, one, (0, 1, 2, 3), 6) == Schedule((2,), (0.5,), reducer="merge")
    assert trained_keep((0.7, 0.3)) == 0.7 and trained_keep((0.3, 0.15)) == 0.3
    two = PruningPass((1, 3), (0.25,))  # two stages share the rate: 0.5 after each
    assert deployed_schedule(TrainConfig(model="m", data="d", out="o"), two, (1, 3), 6).keep_rates == (0.5, 0.5)
    no_pass = deployed_schedule(TrainConfig(model="m", data="d", out="o", recipe="official"), None, (0, 1, 2, 3), 6)
    assert no_pass == Schedule((2,), (0.5,))


def test_calibrate_chooses_on_held_out_train_and_measures_the_choice_on_test(tiny_dir, tmp_path):
    out = tmp_path / "calib"
    result = run_cli("calibrate", tiny_dir, "--data", "fashion-mnist", "--out", out, "--limit", "128",
                     "--eval-limit", "256", "--methods", "tnt", "--grid-layers", "1", "--grid-keep", "0.5",
                     "--grid-sim", "0", "--max-drop", "100", "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    record = json.loads((out / "schedule.json").read_text())
    assert record["measured_on"]["split"] == LABEL
    measured = record["evaluation"]
    assert measured["split"] == "test" and measured["images"] == 256
    assert "on test (256 images" in " ".join(result.stdout.split())
    # what `tnt evaluate` measures on the same test images
    again = run_cli("evaluate", tiny_dir, "--data", "fashion-mnist", "--split", "test", "--limit", "256",
                    "--prune-layers", "1", "--keep-rates", "0.5", "--json")  # fmt: skip
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["top1"] == measured["top1"]
    pruned = tmp_path / "pruned"
    assert run_cli("prune", tiny_dir, "--schedule", out / "schedule.json", "--out", pruned).exit_code == 0
    assert card_splits((pruned / "README.md").read_text()) == {LABEL, "test"}


def test_calibrate_refuses_to_measure_on_the_split_it_chooses_on(tiny_dir, tmp_path):
    result = run_cli("calibrate", tiny_dir, "--data", "fashion-mnist", "--out", tmp_path / "c", "--split", "val",
                     "--eval-split", "val")  # fmt: skip
    assert result.exit_code == 1 and "--eval-split is the split the schedule is chosen on" in result.stderr


def test_a_fine_tuned_model_does_not_carry_timms_pretrained_tag(base, finetuned):
    """timm names a model `architecture.tag`; a tag names pretrained weights, which fine-tuned ones no longer are."""
    assert read_config(base)["pretrained_cfg"].get("tag")  # the timm directory it started from has one
    out, _ = finetuned
    assert "tag" not in read_config(out)["pretrained_cfg"]
