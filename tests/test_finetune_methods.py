"""`tnt finetune --method`: the baselines fine-tuned through the same step as TNT (tnt_cli.train.task).

A tiny ViT on Fashion-MNIST, a few steps each: what is checked is the plumbing (which parameters train, what the
directory records, that evaluate runs a directory with its own method), not accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _helpers import FMNIST, backbone_state, error_line, run_cli, tiny_vit

from tnt_cli.cli._errors import describe
from tnt_cli.engine import Schedule, attach_tnt
from tnt_cli.errors import TntError
from tnt_cli.train.config import TrainConfig
from tnt_cli.train.task import LossSettings, PruningTask

FAST = ["--data", "fashion-mnist", "--no-progress", "--crop-scale", "0.6,1", "--max-steps", "3", "--batch-size", "16",
        "--limit", "160", "--eval-limit", "64", "--drop-block", "1"]  # fmt: skip


def heads(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "tnt_heads.safetensors"))


@pytest.mark.parametrize("method", ["random", "tome", "evit"])
def test_a_baseline_trains_its_backbone_not_the_heads_and_is_recorded(base, tmp_path, method):
    out = tmp_path / method
    result = run_cli("finetune", base, "--out", out, *FAST, "--method", method, "--json")
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())["tnt"]
    assert config["method"] == method and config["heads_trained"] is False
    before, after = backbone_state(base), backbone_state(out)
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the backbone was fine-tuned
    reference = attach_tnt(tiny_vit(shape=FMNIST), config["head_blocks"])  # heads as attach_tnt made them: untrained
    saved = heads(out)
    assert saved.keys() == {f"heads.{k}" for k in reference.heads.state_dict()}
    summary = json.loads(result.stdout)
    assert summary["settings"]["method"] == method
    assert 0.0 <= summary["evaluation"]["pruned"]["top1"] <= 1.0  # the end-of-run evaluation ran the method


def test_a_baseline_directory_refuses_tnt_pruning_without_trained_heads(base, tmp_path):
    out = tmp_path / "tome"
    assert run_cli("finetune", base, "--out", out, *FAST, "--method", "tome").exit_code == 0
    result = run_cli("evaluate", out, "--data", "fashion-mnist", "--method", "tnt", "--limit", "32")
    error_line(result, notes=True)


def test_method_settings_are_checked_before_any_work(tmp_path):
    def cfg(**kw):
        return TrainConfig(model="m", data="fashion-mnist", out=str(tmp_path / "o"), **kw)

    assert cfg(method="cls-attn").method == "evit"  # the old name still works
    for bad, python, cli in (  # Python API users read the parameter names, the CLI prints the flags
        ({"method": "magic"}, "method must be one of", "--method must be one of"),
        ({"method": "tome", "train": "heads"}, "use train full", "use --train full"),
        ({"method": "random", "drop_weight": 0.0}, "drop_weight must be > 0", "--drop-weight must be > 0"),
        ({"reducer": "melt"}, "reducer must be one of", "--reducer must be one of"),
        ({"method": "tome", "reducer": "merge"}, "has its own reducer", "--method tome has its own reducer"),
    ):
        with pytest.raises(TntError, match=python) as caught:
            cfg(**bad)
        assert cli in describe(caught.value)[0]


def test_the_random_baseline_draws_new_scores_per_batch_position_and_repeats_them():
    torch.manual_seed(0)
    model = attach_tnt(tiny_vit(shape=FMNIST, seed=1), (0, 1, 2, 3)).train()
    task = PruningTask(model, torch.nn.CrossEntropyLoss(), LossSettings(
        method="random", rate_weight=1.0, distill=False, distill_weight=1.0, distill_temp=1.0, drop_weight=1.0,
        noise_trains_backbone=True,
    ))
    x = torch.randn(4, 1, 28, 28)
    schedule = Schedule((1,), (0.3,))
    with torch.no_grad():
        a, b, c = (task.pruned_logits(x, schedule, start) for start in (0, 4, 0))
    assert torch.equal(a, c) and not torch.equal(a, b)
    assert model.scorer is None and model.schedule == Schedule()  # restored after the pass


def test_tnt_with_the_merge_reducer_trains_and_deploys_with_it(base, tmp_path):
    out = tmp_path / "merge"
    result = run_cli("finetune", base, "--out", out, *FAST, "--reducer", "merge", "--prune-layers", "1",
                     "--keep-rates", "0.5", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())["tnt"]
    assert config["method"] == "tnt" and config["schedule"]["reducer"] == "merge"
    evaluated = run_cli("evaluate", out, "--data", "fashion-mnist", "--limit", "32", "--json")
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.stdout)
    assert report["method"] == "tnt" and report["schedule"]["reducer"] == "merge"

    # another schedule from the flags keeps the model's reducer unless --reducer says otherwise (evaluate, prune,
    # calibrate's sweep): a merging model is not silently measured dropping
    flags = ("--prune-layers", "1", "--keep-rates", "0.3")
    for reducer, expected in ((), "merge"), (("--reducer", "drop"), "drop"):
        evaluated = run_cli("evaluate", out, "--data", "fashion-mnist", "--limit", "32", *flags, *reducer, "--json")
        assert evaluated.exit_code == 0 and json.loads(evaluated.stdout)["schedule"]["reducer"] == expected
        pruned = tmp_path / f"pruned-{expected}"
        assert run_cli("prune", out, "--out", pruned, *flags, *reducer).exit_code == 0
        assert json.loads((pruned / "config.json").read_text())["tnt"]["schedule"]["reducer"] == expected
    swept = run_cli("calibrate", out, "--data", "fashion-mnist", "--limit", "32", "--eval-limit", "0", "--out",
                    tmp_path / "calib", "--grid-layers", "1", "--grid-keep", "0.5", "--grid-sim", "0", "--methods",
                    "tnt", "--max-drop", "100")  # fmt: skip
    assert swept.exit_code == 0, swept.output
    chosen = json.loads((tmp_path / "calib" / "schedule.json").read_text())
    assert chosen["schedule"]["reducer"] == "merge", chosen


def test_evaluate_runs_a_baseline_directory_with_its_own_method(base, tmp_path):
    out = tmp_path / "evit"
    assert run_cli("finetune", base, "--out", out, *FAST, "--method", "evit").exit_code == 0
    result = run_cli("evaluate", out, "--data", "fashion-mnist", "--limit", "32", "--prune-layers", "1",
                     "--keep-rates", "0.5", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["method"] == "evit"


def test_noise_trains_heads_keeps_the_noisy_pass_out_of_the_backbone():
    torch.manual_seed(0)
    model = attach_tnt(tiny_vit(shape=FMNIST, seed=1), (0, 1, 2, 3)).train()
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    grads = {}
    for trains_backbone in (True, False):
        settings = LossSettings(method="tnt", rate_weight=1.0, distill=False, distill_weight=1.0, distill_temp=1.0,
                                drop_weight=0.0, noise_trains_backbone=trains_backbone)  # fmt: skip
        task = PruningTask(model, torch.nn.CrossEntropyLoss(), settings)
        model.zero_grad(set_to_none=True)
        torch.manual_seed(3)
        task(x, y)["loss"].backward()
        grads[trains_backbone] = (
            [p.grad for p in model.vit.parameters()],
            [p.grad.clone() for p in model.heads.parameters() if p.grad is not None],
        )
    assert all(g is not None for g in grads[True][0])
    assert all(g is None for g in grads[False][0])  # the backbone gets nothing from the noisy pass
    assert grads[False][1] and all(torch.equal(a, b) for a, b in zip(grads[True][1], grads[False][1]))


def test_compare_runs_each_directory_with_its_own_method_at_matched_gmacs(base, tmp_path):
    runs = {}
    for method in ("tnt", "tome"):
        runs[method] = tmp_path / method
        assert run_cli("finetune", base, "--out", runs[method], *FAST, "--method", method).exit_code == 0
    result = run_cli("compare", runs["tnt"], runs["tome"], "--data", "fashion-mnist", "--keeps", "0.5,0.3",
                     "--limit", "48", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    rows = report["rows"]
    assert {(r["method"], r["schedule_text"]) for r in rows} == {
        (m, s) for m in ("tnt", "tome") for s in ("dense", "block 1 keep 0.5", "block 1 keep 0.3")
    }
    assert all(r["images"] == 48 for r in rows)
    for r in rows:
        if r["schedule_text"] != "dense":
            assert abs(r["gmacs"] / r["gmacs_tnt"] - 1) <= 0.05  # tiny model: coarse r steps; DeiT-S is within 2%
    assert report["largest_gmacs_gap"] == max(
        abs(r["gmacs"] / r["gmacs_tnt"] - 1) for r in rows if r["schedule_text"] != "dense"
    )
    refused = run_cli("compare", runs["tome"], "--methods", "tnt", "--data", "fashion-mnist", "--limit", "8")
    assert refused.exit_code == 1 and "no trained relevance heads" in refused.output

    # --budget: each model at its best schedule costing at most the budget (+2%), progressive schedules included
    dense = next(r for r in rows if r["method"] == "tnt" and r["schedule_text"] == "dense")
    budget = 0.9 * dense["gmacs"]
    result = run_cli("compare", runs["tnt"], runs["tome"], "--data", "fashion-mnist", "--keeps", "0.7,0.3",
                     "--progressive", "1,3", "--budget", f"{budget}", "--limit", "48", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    rows = report["rows"]
    assert rows and all(r["gmacs_tnt"] <= budget * 1.02 for r in rows)  # dense (over the budget) is not run
    assert {len(r["schedule"]["prune_layers"]) for r in rows} == {1, 2}
    assert [b["label"] for b in report["best"]] == [str(runs["tnt"]), str(runs["tome"])]
    for best in report["best"]:
        within = [r for r in rows if r["label"] == best["label"] and r["gmacs"] <= budget * 1.02]
        assert best["top1"] == max(r["top1"] for r in within) and best["gmacs"] <= budget * 1.02
    text = run_cli("compare", runs["tnt"], "--data", "fashion-mnist", "--keeps", "0.3", "--budget", f"{budget}",
                   "--limit", "16")  # fmt: skip
    assert text.exit_code == 0 and "best schedule within" in text.stdout and "block 1 keep 0.3" in text.stdout
    tiny = run_cli("compare", runs["tnt"], "--data", "fashion-mnist", "--budget", "1e-6", "--limit", "16")
    assert tiny.exit_code == 1 and "no schedule of --keeps" in tiny.output and "Traceback" not in tiny.output
    far = run_cli("compare", runs["tnt"], "--data", "fashion-mnist", "--progressive", "1,9", "--limit", "16")
    assert far.exit_code == 1 and "--progressive names blocks 0-3" in far.output and "%" not in far.output
    for bad in ("0", "-1", "nan"):
        refused = run_cli("compare", runs["tnt"], "--data", "fashion-mnist", "--budget", bad)
        assert refused.exit_code in (1, 2) and "--budget" in refused.output and "Traceback" not in refused.output
