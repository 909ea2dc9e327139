"""`tnt export`: the pruned model as an ONNX file with static token counts, verified in onnxruntime."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tnt_cli.cli import options as o
from tnt_cli.cli.output import print_json, stderr, stdout
from tnt_cli.cli.schedule_flags import ScheduleFlags, takes_schedule_flags
from tnt_cli.export.onnx import MIN_OPSET


@takes_schedule_flags
def export(
    model: o.ModelArg,
    onnx: Annotated[Path, typer.Option("--onnx", help="Where to write the .onnx file.", show_default=False)],
    schedule_flags: ScheduleFlags = ScheduleFlags(),
    batch_size: Annotated[
        int | None,
        typer.Option("--batch-size", "-b", help="Fixed batch size of the graph (default 1).", show_default=False),
    ] = None,
    dynamic_batch: Annotated[
        bool, typer.Option("--dynamic-batch", help="Symbolic batch dimension (verified at two batch sizes).")
    ] = False,
    opset: Annotated[
        int, typer.Option("--opset", help=f"ONNX opset ({MIN_OPSET} or newer, up to what your torch exports).")
    ] = 17,
    atol: Annotated[float, typer.Option("--atol", help="Largest logit difference accepted by verification.")] = 1e-4,
    no_verify: Annotated[bool, typer.Option("--no-verify", help="Skip the onnxruntime check.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing file.")] = False,
    random_weights: o.RandomWeights = o.default("random_weights"),
    offline: o.Offline = False,
    json_out: o.JsonOut = False,
) -> None:
    """Export the pruned model to ONNX (fp32, static token counts: TopK + Gather, no data-dependent shapes), then
    run it in onnxruntime against PyTorch on random inputs and report the largest logit difference. The file is
    only written when export and verification succeed.

    Examples:

      tnt export runs/deit_s --onnx deit_s.onnx --dynamic-batch

      tnt export runs/fm --prune-layers 2 --keep-rates 0.6 --onnx fm.onnx -b 8
    """
    o.apply_offline(offline)
    from tnt_cli.export.onnx import check_export_settings, export_onnx

    check_export_settings(opset=opset, batch_size=batch_size, dynamic_batch=dynamic_batch)  # before claiming --onnx
    from tnt_cli.cli.targets import claim_output

    claim_output(onnx, overwrite=overwrite, inputs=[model], kind="file")
    from tnt_cli.io.sources import load_model

    schedule = schedule_flags.schedule()
    loaded = load_model(model, random_weights=random_weights, schedule=schedule)
    stderr.print(f"exporting {loaded.source} ({loaded.model.schedule.describe()}) to {onnx}, opset {opset}")
    report = export_onnx(
        loaded.model,
        onnx,
        batch_size=batch_size or 1,
        dynamic_batch=dynamic_batch,
        opset=opset,
        verify=not no_verify,
        atol=atol,
        overwrite=overwrite,
    )
    for note in report.notes:
        stderr.print(f"note: {note}")
    if json_out:
        print_json({"model": loaded.source, **report.to_dict()})
        return
    stdout.print(
        f"wrote {report.path} ({report.size_bytes / 1e6:.1f} MB, opset {report.opset}, input {report.input_shape})"
    )
    stdout.print(f"schedule: {report.schedule_text}; tokens per block {report.tokens_per_block}")
    if report.verified:
        sizes = ", ".join(map(str, report.verify_batch_sizes))
        stdout.print(
            f"onnxruntime vs PyTorch: max |diff| {report.max_abs_diff:.2e} at batch {sizes} (<= {report.atol:g})"
        )
    elif no_verify:
        stdout.print("not verified (--no-verify)")
