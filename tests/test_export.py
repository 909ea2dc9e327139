"""`tnt export --onnx`: the pruned graph runs in onnxruntime like PyTorch, with fewer tokens after pruning."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest
import torch
from _helpers import error_line, run_cli, tiny_tnt

from tnt_cli.engine import Schedule
from tnt_cli.errors import TntError
from tnt_cli.export import export_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

DEPTH = 4  # the helpers' tiny ViT: 32x32 input, patch 4 -> 64 patches, 4 blocks


def ort_logits(path, x: torch.Tensor) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def tokens_in_block_scopes(path) -> dict[int, set[int]]:
    """Token axis of every (batch, tokens, width) tensor the exporter placed under blocks.<i>, by shape inference."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    seen: dict[int, set[int]] = {}
    for info in model.graph.value_info:
        match = re.match(r"^/(?:vit/)?blocks\.(\d+)/", info.name)
        dims = info.type.tensor_type.shape.dim
        if match and len(dims) == 3 and dims[1].dim_value:
            seen.setdefault(int(match.group(1)), set()).add(dims[1].dim_value)
    return seen


@pytest.mark.parametrize(
    "schedule",
    [Schedule((1,), (0.5,), sim_prune=4), Schedule((1, 2), (0.5, 0.5), sim_prune=4)],
    ids=lambda s: s.describe(),
)
def test_dynamic_batch_matches_pytorch_at_two_batch_sizes(tmp_path, schedule):
    model = tiny_tnt(schedule=schedule)
    path = tmp_path / "tiny.onnx"
    report = export_onnx(model, path, dynamic_batch=True)
    assert report.verified and len(report.verify_batch_sizes) == 2 and report.max_abs_diff <= 1e-4
    for batch in (1, 5):  # checked here too, independently of the exporter's own verification
        x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = model(x).numpy()
        got = ort_logits(path, x)
        assert got.shape == (batch, 10)
        assert np.abs(got - expected).max() < 1e-4
    assert report.graph_tokens_per_block == list(model.plan.tokens_per_block)


def test_graph_has_fewer_tokens_after_the_pruning_block(tmp_path):
    model = tiny_tnt(schedule=Schedule((1,), (0.5,)))  # 64 patches + CLS; keep 32 after block 1
    path = tmp_path / "static.onnx"
    export_onnx(model, path, batch_size=2)
    tokens = tokens_in_block_scopes(path)
    assert sorted(tokens) == list(range(DEPTH))
    assert tokens[0] == tokens[1] == {65}
    assert tokens[2] == tokens[3] == {33}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert np.abs(ort_logits(path, x) - model(x).numpy()).max() < 1e-4


def test_dense_export_keeps_every_token(tmp_path):
    path = tmp_path / "dense.onnx"
    report = export_onnx(tiny_tnt(schedule=Schedule()), path, verify=False)
    assert report.graph_tokens_per_block == [65] * DEPTH
    assert all(t == {65} for t in tokens_in_block_scopes(path).values())


def test_failed_verification_writes_nothing(tmp_path):
    path = tmp_path / "never.onnx"
    with pytest.raises(TntError, match="disagrees") as caught:
        export_onnx(tiny_tnt(schedule=Schedule((1,), (0.5,))), path, atol=-1.0)  # no difference can pass
    assert list(tmp_path.iterdir()) == []
    from tnt_cli.cli._errors import describe

    assert "verify=False" in str(caught.value)  # the library's words; the CLI line names the flags
    assert "try another --opset, or --no-verify to keep it anyway" in describe(caught.value)[0]


def test_without_onnxruntime_the_export_is_kept_unverified(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    report = export_onnx(tiny_tnt(schedule=Schedule((1,), (0.5,))), tmp_path / "x.onnx")
    assert not report.verified and report.max_abs_diff is None
    assert any("onnxruntime is not installed" in note for note in report.notes)
    assert (tmp_path / "x.onnx").stat().st_size > 0


def test_without_onnx_export_is_refused(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(TntError, match="needs the onnx package"):
        export_onnx(tiny_tnt(schedule=Schedule()), tmp_path / "x.onnx")
    assert list(tmp_path.iterdir()) == []


def test_unsupported_opset_is_refused(tmp_path):
    with pytest.raises(TntError, match="opset 12 is not supported"):
        export_onnx(tiny_tnt(schedule=Schedule()), tmp_path / "x.onnx", opset=12)
    assert not (tmp_path / "x.onnx").exists()


# ----------------------------------------------------------------------------- CLI
def test_cli_export_reports_the_difference(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = tmp_path / "test_vit.onnx"
    args = ["export", "test_vit", "--random-weights", "--prune-layers", "2", "--keep-rates", "0.5"]
    result = run_cli(*args, "--onnx", path, "--dynamic-batch", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["verified"] and data["max_abs_diff"] <= 1e-4 and data["input_shape"][0] == "batch"
    assert data["graph_tokens_per_block"][:4] == [101, 101, 101, 51]  # 100 patches + CLS; half kept after block 2
    assert path.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--opset", "11"], "error: --opset 11 is not supported: choose 14-"),
        (["--batch-size", "4", "--dynamic-batch"], "error: --batch-size and --dynamic-batch exclude each other"),
        (["--batch-size", "0"], "error: --batch-size must be at least 1"),
    ],
    ids=["opset", "batch-and-dynamic", "batch-zero"],
)
def test_cli_unsupported_options_are_one_error_line(tmp_path, extra, message):
    path = tmp_path / "x.onnx"
    result = run_cli("export", "test_vit", "--random-weights", "--onnx", path, *extra)
    assert error_line(result).startswith(message)
    assert not path.exists()
