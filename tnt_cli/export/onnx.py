"""ONNX export of a pruned TNT model, checked against PyTorch in onnxruntime before the file is kept.

Uses torch's supported exporter (`torch.onnx.export(..., dynamo=True)`, torch.export + onnxscript; the
TorchScript exporter is deprecated). The engine's static top-k + gather pruning exports as plain ONNX TopK /
Gather(Elements) nodes, so every block's token count is a constant in the graph (checked on the file: tokens per
block are read back from the graph and must equal the plan). The partition for similarity pruning is computed
eagerly before export (the seeded torch.Generator is not expressible in ONNX). The file gets the schedule and
token plan as metadata (`tnt.schedule`, ...).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tnt_cli.errors import TntError

if TYPE_CHECKING:
    import torch

    from tnt_cli.engine import TNTModel

MIN_OPSET = 18  # the dynamo exporter's onnxscript library writes opset 18 and newer natively
DEFAULT_OPSET = 18
INPUT_NAME, OUTPUT_NAME = "pixel_values", "logits"
MAX_PROTO_BYTES = 2 * 1024**3  # ONNX protobuf limit; bigger models would need external data files
DEFAULT_ATOL = 1e-4


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
    """The newest opset torch's exporter writes."""
    try:
        from torch.onnx._constants import ONNX_MAX_OPSET

        return int(ONNX_MAX_OPSET)
    except ImportError:  # private constant: fall back to what torch 2.6+ supports
        return 23


def check_exportable(model: TNTModel, *, opset: int, batch_size: int) -> None:
    """Refuse, in one line each, what this exporter cannot produce faithfully."""
    for package in ("onnx", "onnxscript"):  # torch's exporter builds the graph with onnxscript, writes with onnx
        try:
            __import__(package)
        except ImportError:
            raise TntError(f"ONNX export needs the {package} package: pip install 'tnt-token-pruning[onnx]'") from None
    check_opset(opset)
    if batch_size < 1:
        raise TntError(f"--batch-size must be at least 1, got {batch_size}")
    if model.scorer is not None:
        raise TntError("export takes the model's own relevance heads; a baseline scorer is installed")
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    if size >= MAX_PROTO_BYTES:
        raise TntError(f"the model has {size / 1e9:.1f} GB of weights: ONNX files over 2 GB are not supported yet")


def check_opset(opset: int) -> None:
    top = max_opset()
    if not MIN_OPSET <= opset <= top:
        raise TntError(
            f"opset {opset} is not supported: choose {MIN_OPSET}-{top} (torch's exporter writes {MIN_OPSET}+)"
        )


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
        raise TntError(f"{path} already exists: pass --overwrite to replace it")
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
        exporter=f"torch.onnx.export (dynamo=True), torch {torch.__version__}",
        input_shape=["batch" if dynamic_batch else batch_size, c, h, w],
        dynamic_batch=dynamic_batch,
        schedule=model.schedule.to_dict(),
        schedule_text=model.schedule.describe(),
        tokens_per_block=list(model.plan.tokens_per_block),
        atol=atol,
        notes=report_notes,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with torch.no_grad():
            model(example)  # eager pass: fills the plan / partition caches outside the trace
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.export's warnings about guards and specialisation
                _export(model, example, tmp, opset=opset, dynamic_batch=dynamic_batch)
        _annotate(tmp, model, report)
        if verify:
            sizes = [batch_size, batch_size + 2] if dynamic_batch else [batch_size]
            _verify(model, tmp, report, sizes, seed=seed)
        report.size_bytes = tmp.stat().st_size
        tmp.chmod(0o666 & ~_umask())  # mkstemp makes owner-only files; give it a normal file's mode
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        model.train(was_training)
    return report


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _export(model: TNTModel, example: torch.Tensor, target: Path, *, opset: int, dynamic_batch: bool) -> None:
    import contextlib
    import io

    import torch

    kwargs: dict[str, Any] = dict(
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        opset_version=opset,
        dynamo=True,
        external_data=False,  # one self-contained file (models under 2 GB: checked above)
        optimize=True,
        verbose=False,
    )
    if dynamic_batch:
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
    try:  # the exporter prints its progress on stdout, which is the CLI's (--json) output
        with contextlib.redirect_stdout(io.StringIO()):
            torch.onnx.export(model, (example,), str(target), **kwargs)
    except Exception as exc:
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        raise TntError(f"ONNX export failed ({type(exc).__name__}): {first}") from None


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
    counts = graph_tokens_per_block(proto, model.depth, int(model.vit.embed_dim))
    report.graph_tokens_per_block = counts
    if counts is not None and counts != report.tokens_per_block:
        raise TntError(f"the exported graph runs {counts} tokens per block, the plan says {report.tokens_per_block}")


def graph_tokens_per_block(proto, depth: int, width: int | None = None) -> list[int] | None:
    """Tokens each transformer block sees in the exported graph, read from the graph itself.

    First from ONNX shape inference on the (batch, tokens, width) tensors the nodes of block i produce (the
    exporter records each node's module path, `vit.blocks.<i>...`, in its metadata; `width`, the embedding
    width, leaves out attention's per-head (batch x heads, head dim, tokens) tensors). Where inference cannot
    resolve the token axis (a dynamic batch after similarity pruning), each block's first such tensor is made
    an extra graph output and read from one onnxruntime run. None when neither works.
    """
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto)
    per_block = block_tensors(inferred, width)
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


def block_tensors(inferred, width: int | None = None) -> dict[int, list]:
    """{block: value_infos of the 3-d tensors its nodes produce} of a shape-inferred graph (with `width`: only
    those whose last axis is that wide, the (batch, tokens, width) residual stream)."""
    block_of_output: dict[str, int] = {}
    for node in inferred.graph.node:
        block = node_block(node)
        if block is not None:
            for name in node.output:
                block_of_output[name] = block
    per_block: dict[int, list] = {}
    for info in inferred.graph.value_info:
        block = block_of_output.get(info.name)
        dims = info.type.tensor_type.shape.dim
        if block is not None and len(dims) == 3 and (width is None or dims[2].dim_value == width):
            per_block.setdefault(block, []).append(info)
    return per_block


def node_block(node) -> int | None:
    """The transformer block a node belongs to: from the module path the exporter stores in its metadata
    (`pkg.torch.onnx.name_scopes`), else from a TorchScript-style scoped name (`/vit/blocks.3/...`)."""
    import re

    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            found = re.findall(r"(?:^|[\'\"/.])blocks\.(\d+)(?:[\'\".]|$)", prop.value)
            return int(found[0]) if found else None
    match = re.match(r"^/(?:vit/)?blocks\.(\d+)/", node.name)
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
        raise TntError(
            f"onnxruntime disagrees with PyTorch: largest logit difference {worst:.3g} > {report.atol:g}; "
            "nothing written (try another --opset, or --no-verify to keep it anyway)"
        )
