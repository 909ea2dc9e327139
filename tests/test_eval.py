"""`tnt evaluate` and the evaluation loop: dense equals plain timm, TNT at keep 1.0 equals dense, bad inputs."""

from __future__ import annotations

import json

import pytest
import torch
from _helpers import BATCH, error_line, run_cli

import tnt_cli
from tnt_cli.engine import Schedule
from tnt_cli.methods.accuracy import evaluate_model

LIMIT = 320


def plain_accuracy(vit, limit: int) -> tuple[float, float, int]:
    """Top-1 and mean loss of the plain timm model, computed here without tnt's evaluation code."""
    from tnt_cli.data import build_loader

    loader = build_loader("fashion-mnist", "val", vit, batch_size=BATCH, limit=limit, seed=0)
    correct, loss, n = 0, 0.0, 0
    with torch.no_grad():
        for x, y in loader:
            logits = vit(x)
            correct += int((logits.argmax(1) == y).sum())
            loss += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
            n += len(y)
    return correct / n, loss / n, n


def evaluate_json(model, *extra: str) -> dict:
    args = ("--data", "fashion-mnist", "--limit", LIMIT, "--device", "cpu", "--json")
    result = run_cli("evaluate", model, *args, *extra)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return json.loads(result.stdout)


def test_evaluate_dense_equals_plain_timm_model(tiny_dir, trained_tiny):
    top1, loss, n = plain_accuracy(trained_tiny[1], LIMIT)
    report = evaluate_json(tiny_dir, "--method", "dense")
    assert report["images"] == n == LIMIT
    assert report["top1"] == top1
    assert report["loss"] == pytest.approx(loss, rel=1e-5)
    assert 0.2 < top1 < 1.0  # the briefly trained model is better than chance, so equality means something
    assert report["gmacs"] == pytest.approx(report["gmacs_dense"])
    assert report["images_per_s"] > 0 and 0 < report["top5"] <= 1


def test_tnt_at_keep_one_equals_dense(tiny_dir):
    dense = evaluate_json(tiny_dir, "--method", "dense")
    keep_one = evaluate_json(tiny_dir, "--method", "tnt", "--prune-layers", "1,2", "--keep-rates", "1.0,1.0")
    for key in ("top1", "top5", "loss", "images", "gmacs"):
        assert keep_one[key] == dense[key], key
    pruned = evaluate_json(tiny_dir, "--method", "tnt", "--prune-layers", "1", "--keep-rates", "0.25")
    assert pruned["gmacs"] < dense["gmacs"]
    assert pruned["loss"] != dense["loss"]  # pruning really changed the computation


def test_every_method_runs_and_reports_its_own_compute(tiny_dir):
    reports = {
        m: evaluate_json(tiny_dir, "--method", m, "--prune-layers", "1", "--keep-rates", "0.5", "--per-class")
        for m in ("tnt", "random", "cls-attn", "tome")
    }
    assert reports["tome"]["tome_r"] > 0  # r matched to the schedule's GMACs
    assert abs(reports["tome"]["gmacs"] - reports["tnt"]["gmacs"]) < 0.1 * reports["tnt"]["gmacs"]
    for report in reports.values():
        assert report["gmacs"] < report["gmacs_dense"]
        per_class = report["per_class"]
        assert sum(v["images"] for v in per_class.values()) == LIMIT
        assert "Ankle boot" in per_class


def test_evaluate_model_loop_matches_direct_forward(trained_tiny):
    model, plain = trained_tiny
    x = torch.randn(10, 3, 32, 32)
    y = torch.arange(10)
    result = evaluate_model(model, [(x[:6], y[:6]), (x[6:], y[6:])], progress=False, limit=8, per_class=True)
    with torch.no_grad():
        logits = plain(x[:8])
    assert result["images"] == 8
    assert result["top1"] == float((logits.argmax(1) == y[:8]).float().mean())
    assert result["loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, y[:8])), rel=1e-5)
    assert set(result["per_class"]) == {str(i) for i in range(8)}


def test_evaluate_uses_the_model_schedule_by_default(tiny_dir, tmp_path):
    """A model directory's own schedule is the default: here a directory saved with a pruning schedule."""
    model = tnt_cli.load(tiny_dir)
    model.set_schedule(Schedule((2,), (0.5,)))
    scheduled = tnt_cli.save(model, tmp_path / "scheduled")
    for method in ("tnt", "random"):
        report = evaluate_json(scheduled, "--method", method)
        assert report["schedule"]["prune_layers"] == [2] and report["schedule"]["keep_rates"] == [0.5]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--method", "magic"), "unknown method 'magic'"),
        (("--limit", "0"), "--limit must be positive"),
        (("--prune-layers", "1"), "--prune-layers and --keep-rates go together"),
        (("--prune-layers", "9", "--keep-rates", "0.5"), "no relevance head at block 9"),
        (("--method", "random", "--prune-layers", "9", "--keep-rates", "0.5"), "block 9 is out of range"),
        (("--method", "tome", "--tome-r", "-1"), "--tome-r must be >= 0"),
        (("--method", "tnt", "--tome-r", "2"), "--tome-r applies to --method tome only"),
        # checked in the old order (method first) and before the dense note, so a refusal is its only line
        (("--method", "bogus", "--prune-layers", "x", "--keep-rates", "0.5"), "unknown method 'bogus'"),
        (("--method", "dense", "--prune-layers", "1", "--keep-rates", "0.5", "--limit", "0"), "--limit must be"),
        (("--method", "dense", "--prune-layers", "1", "--keep-rates", "0.5", "--batch-size", "0"), "--batch-size"),
    ],
)
def test_bad_inputs_give_one_line(tiny_dir, args, needle):
    result = run_cli("evaluate", tiny_dir, "--data", "fashion-mnist", "--limit", 64, "--device", "cpu", *args)
    assert needle in error_line(result)


def test_cuda_request_without_cuda_is_one_line(tiny_dir):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    result = run_cli("evaluate", tiny_dir, "--data", "fashion-mnist", "--device", "cuda")
    assert "no CUDA device" in error_line(result)
