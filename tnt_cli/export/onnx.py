"""ONNX export of a pruned TNT model, checked against PyTorch in onnxruntime before the file is kept.

Uses torch's TorchScript-based exporter (`dynamo=False`). The supported exporter (`dynamo=True`, with onnxscript)
was tried: it writes the same static TopK + Gather graph and passes the same onnxruntime check, but one export of
the tests' tiny ViT took 29-47 s against 2-3 s here (2-core CPU), which made `tests/test_export.py` take 8 minutes;
it needs an extra package too. Move when that cost drops. With TorchScript the engine's static top-k + gather
pruning traces into plain ONNX TopK / Gather(Elements) nodes, so every block's token count is a constant in the
graph (the engine keys its plan caches by Python ints, so traced sizes hit them too). The merge reducer adds
ArgMax and ScatterElements (add, opset 16+), fuse a ReduceSum, and proportional attention an additive mask on the
attention logits. The partition itself is computed eagerly before tracing (the tracer would record its seeded
torch.Generator, which ONNX cannot express). The file gets the schedule and token plan as metadata
(`tnt.schedule`, ...).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tnt_cli.errors import SettingError, TntError, first_line
from tnt_cli.io.atomic import atomic_file

if TYPE_CHECKING:
    import torch

    from tnt_cli.engine import TNTModel

MIN_OPSET = 14  # scaled_dot_product_attention (timm's fused attention) exports from opset 14
MERGE_OPSET = 16  # the merge reducer's scatter_add needs ScatterElements with reduction="add" (opset 16)
DEFAULT_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "pixel_values", "logits"
MAX_PROTO_BYTES = 2 * 1024**3  # ONNX protobuf limit; bigger models would need external data files
DEFAULT_ATOL = 1e-4


class VerificationFailed(TntError):
    """onnxruntime's logits differ from PyTorch's, so the file was not kept (`reason` says by how much)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"{reason}; nothing written (try another opset, or verify=False to keep it anyway)")


@dataclass
class ExportReport:
    """What was exported and how well onnxruntime agrees with PyTorch."""

    path: str
    opset: int
    exporter: str
    input_shape: list[Any]  # [batch or "batch", C, H, W]
    dynamic_batch: bool
    schedule: dict
    schedule_text: str
    tokens_per_block: list[int]
    graph_tokens_per_block: list[int] | None = None
    verified: bool = False
    verify_batch_sizes: list[int] = field(default_factory=list)
    max_abs_diff: float | None = None
    atol: float = DEFAULT_ATOL
    notes: list[str] = field(default_factory=list)
    size_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def max_opset() -> int:
    """The newest opset torch's TorchScript exporter writes."""
    try:
        from torch.onnx._constants import ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET

        return int(ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET)
    except ImportError:  # private constant: fall back to what torch 2.x supports
        return 20


def check_export_settings(*, opset: int, batch_size: int | None, dynamic_batch: bool = False) -> None:
    """The model-free checks (callers run them before claiming the output): a fixed or a symbolic batch, an opset
    this exporter writes, a positive batch size. `batch_size` None: not given (the default, 1)."""
    if batch_size is not None and dynamic_batch:
        raise SettingError(
            "{batch_size} and {dynamic_batch} exclude each other: a graph has a fixed or a symbolic batch"
        )
    top = max_opset()
    if not MIN_OPSET <= opset <= top:
        raise SettingError(
            "{opset} {value} is not supported: choose {low}-{high} (attention needs {low}+)",
            value=opset, low=MIN_OPSET, high=top,
        )  # fmt: skip
    if batch_size is not None and batch_size < 1:
        raise SettingError("{batch_size} must be at least 1, got {value}", value=batch_size)


def check_exportable(model: TNTModel, *, opset: int, batch_size: int) -> None:
    """Refuse, in one line each, what this exporter cannot produce faithfully."""
    try:
        import onnx  # noqa: F401  (torch's exporter writes through it)
    except ImportError:
        raise TntError("ONNX export needs the onnx package: pip install 'tnt-token-pruning[onnx]'") from None
    check_export_settings(opset=opset, batch_size=batch_size)
    if model.scorer is not None:
        raise TntError("export takes the model's own relevance heads; a baseline scorer is installed")
    if opset < MERGE_OPSET and any(s.reducer == "merge" and s.n_reduced for s in model.plan.stages):
        raise SettingError(
            "the merge reducer exports from opset {merge} (scatter-add): choose {opset} {merge}+", merge=MERGE_OPSET
        )
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    if size >= MAX_PROTO_BYTES:
        raise TntError(f"the model has {size / 1e9:.1f} GB of weights: ONNX files over 2 GB are not supported yet")


def input_spec(model: TNTModel) -> tuple[int, int, int]:
    vit = model.vit
    h, w = (int(v) for v in vit.patch_embed.img_size)
    return int(vit.patch_embed.proj.in_channels), h, w


def export_onnx(
    model: TNTModel,
    path: str | Path,
    *,
    batch_size: int = 1,
    dynamic_batch: bool = False,
    opset: int = DEFAULT_OPSET,
    verify: bool = True,
    atol: float = DEFAULT_ATOL,
    overwrite: bool = False,
    seed: int = 0,
) -> ExportReport:
    """Export `model` (eval mode, its installed schedule) to `path`, verify it, then move it into place.

    With `dynamic_batch` the batch dimension is symbolic and verification runs two batch sizes. The file only
    appears at `path` once export (and verification, when asked) succeeded.
    """
    import torch

    path = Path(path)
    if path.exists() and not overwrite:
        from tnt_cli.io.outdir import OutputExists

        raise OutputExists(path)
    if path.exists() and path.is_dir():
        raise TntError(f"{path} is a directory, not an .onnx file path")
    check_exportable(model, opset=opset, batch_size=batch_size)
    if getattr(model.vit, "dynamic_img_size", False):
        report_notes = ["the model accepts any image size; the graph is exported at its native size only"]
    else:
        report_notes = []
    was_training = model.training
    model.eval()
    c, h, w = input_spec(model)
    trace_batch = max(batch_size, 2) if dynamic_batch else batch_size
    device = next(model.parameters()).device
    example = torch.randn(trace_batch, c, h, w, generator=torch.Generator().manual_seed(seed)).to(device)
    report = ExportReport(
        path=str(path),
        opset=opset,
        exporter=f"torch.onnx.export (TorchScript, dynamo=False), torch {torch.__version__}",
        input_shape=["batch" if dynamic_batch else batch_size, c, h, w],
        dynamic_batch=dynamic_batch,
        schedule=model.schedule.to_dict(),
        schedule_text=model.schedule.describe(),
        tokens_per_block=list(model.plan.tokens_per_block),
        atol=atol,
        notes=report_notes,
    )
    try:
        with atomic_file(path) as tmp:  # the file appears at `path` only once it is exported and verified
            with torch.no_grad():
                model(example)  # eager pass: fills the plan / partition caches outside the trace
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # tracer and deprecation warnings about the legacy exporter
                    _export(model, example, tmp, opset=opset, dynamic_batch=dynamic_batch)
            _annotate(tmp, model, report)
            if verify:
                sizes = [batch_size, batch_size + 2] if dynamic_batch else [batch_size]
                _verify(model, tmp, report, sizes, seed=seed)
            report.size_bytes = tmp.stat().st_size
    finally:
        model.train(was_training)
    return report


def _export(model: TNTModel, example: torch.Tensor, target: Path, *, opset: int, dynamic_batch: bool) -> None:
    import torch

    kwargs: dict[str, Any] = dict(
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        opset_version=opset,
        do_constant_folding=True,
        dynamo=False,
    )
    if dynamic_batch:
        kwargs["dynamic_axes"] = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    try:
        torch.onnx.export(model, (example,), str(target), **kwargs)
    except Exception as exc:
        raise TntError(f"ONNX export failed ({type(exc).__name__}): {first_line(exc)}") from None


def _annotate(target: Path, model: TNTModel, report: ExportReport) -> None:
    """Record the schedule and token plan in the file's metadata, and read the graph's token counts back."""
    import json

    import onnx

    proto = onnx.load(str(target))
    meta = {
        "tnt.schedule": json.dumps(report.schedule),
        "tnt.tokens_per_block": json.dumps(report.tokens_per_block),
        "tnt.input_shape": json.dumps(report.input_shape),
    }
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(target))
    counts = graph_tokens_per_block(proto, model.depth)
    report.graph_tokens_per_block = counts
    if counts is not None and counts != report.tokens_per_block:
        raise TntError(f"the exported graph runs {counts} tokens per block, the plan says {report.tokens_per_block}")


def graph_tokens_per_block(proto, depth: int) -> list[int] | None:
    """Tokens each transformer block sees in the exported graph, read from the graph itself.

    First from ONNX shape inference on the (batch, tokens, width) tensors inside `/blocks.<i>/` (the exporter's
    scope names, with or without a leading `/vit`). Where inference cannot resolve the token axis (a dynamic
    batch after similarity pruning), each block's first such tensor is made an extra graph output and read
    from one onnxruntime run. None when neither works.
    """
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto)
    per_block: dict[int, list] = {}
    for info in inferred.graph.value_info:
        block = _block_of(info.name)
        if block is not None and len(info.type.tensor_type.shape.dim) == 3:
            per_block.setdefault(block, []).append(info)
    if sorted(per_block) != list(range(depth)):
        return None
    counts = []
    for block in range(depth):
        known = {int(i.type.tensor_type.shape.dim[1].dim_value) for i in per_block[block]}
        known.discard(0)  # 0: not known statically
        if len(known) > 1:
            return None  # a block whose tensors disagree is not a plain (B, T, D) block
        counts.append(known.pop() if known else None)
    if None in counts:
        return _runtime_counts(proto, [per_block[b][0] for b in range(depth)])
    return counts


def _block_of(name: str) -> int | None:
    import re

    match = re.match(r"^/(?:vit/)?blocks\.(\d+)/", name)
    return int(match.group(1)) if match else None


def _runtime_counts(proto, probes: list) -> list[int] | None:
    """The token axis of `probes` (one value per block), measured by running the graph once on zeros."""
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError:
        return None
    import copy

    probe_model = copy.deepcopy(proto)
    probe_model.graph.output.extend(probes)
    graph_input = probe_model.graph.input[0]
    shape = [d.dim_value if d.dim_value > 0 else 1 for d in graph_input.type.tensor_type.shape.dim]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy-waiting on shared CPUs
    session = ort.InferenceSession(probe_model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    outputs = session.run([p.name for p in probes], {graph_input.name: np.zeros(shape, dtype=np.float32)})
    return [int(out.shape[1]) for out in outputs]


def _verify(model: TNTModel, target: Path, report: ExportReport, sizes: list[int], *, seed: int) -> None:
    """Run the file in onnxruntime on random inputs at each batch size; refuse it when logits differ."""
    try:
        import onnxruntime as ort
    except ImportError:
        report.notes.append("onnxruntime is not installed: export not verified (pip install 'tnt-token-pruning[onnx]')")
        return
    import numpy as np
    import torch

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy-waiting on shared CPUs
    session = ort.InferenceSession(str(target), options, providers=["CPUExecutionProvider"])
    c, h, w = input_spec(model)
    device = next(model.parameters()).device
    worst = 0.0
    generator = torch.Generator().manual_seed(seed + 1)
    for batch in sizes:
        x = torch.randn(batch, c, h, w, generator=generator)
        with torch.no_grad():
            expected = model(x.to(device)).float().cpu().numpy()
        got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
        if got.shape != expected.shape:
            raise TntError(
                f"onnxruntime returned shape {list(got.shape)} at batch {batch}, PyTorch {list(expected.shape)}"
            )
        worst = max(worst, float(np.abs(got - expected).max()))
    report.verified = True
    report.verify_batch_sizes = sizes
    report.max_abs_diff = worst
    if not worst <= report.atol:  # also refuses NaN
        raise VerificationFailed(
            f"onnxruntime disagrees with PyTorch: largest logit difference {worst:.3g} > {report.atol:g}"
        )
