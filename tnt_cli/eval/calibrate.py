"""Calibration: sweep schedules (and the baselines at matched compute) on a subset, then choose one for a target.

`Calibration` (declared in `grid`, torch-free) holds the settings and checks them when made, so bad input fails
before a model is loaded; `calibrate(model, data, out, settings)` runs the sweep and writes sweep.csv, pareto.png
and schedule.json (the `tnt-schedule/1` file, see `schedule_file`) into `out` in one atomic step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tnt_cli.errors import SettingError, TntError
from tnt_cli.eval.grid import DEFAULT_METHODS, Calibration, Target
from tnt_cli.eval.sweep import SweepPoint
from tnt_cli.io.names import PARETO, SCHEDULE, SWEEP
from tnt_cli.methods.registry import DENSE, REFERENCE, lookup

__all__ = ["Calibration", "CalibrationResult", "NoScheduleMeetsTarget", "calibrate", "write_results"]

if TYPE_CHECKING:
    import torch

FILES = (SWEEP, PARETO, SCHEDULE)


@dataclass
class CalibrationResult:
    """What `calibrate` wrote: `summary` (the chosen schedule's record, the files) and every measured point."""

    summary: dict[str, Any]
    points: list[SweepPoint]


class NoScheduleMeetsTarget(SettingError):
    """The sweep ran (and was written), but no schedule meets the target."""


def calibrate(
    model: str,
    data: str,
    out: str | Path,
    settings: Calibration,
    *,
    device: str | torch.device = "auto",
    overwrite: bool = False,
    random_weights: bool = False,
    on_note: Callable[[str], None] | None = None,
    progress: bool = True,
) -> CalibrationResult:
    """Sweep MODEL on a seeded subset of DATA, choose a TNT schedule under `settings.target` and write the files.

    `out` is checked (and locked until the files are in) before anything is loaded, so an existing target without
    `overwrite` fails at once rather than after the sweep. The dense forward up to each first pruning block is
    computed once per batch and shared by the schedules. When no schedule meets the target the sweep is still
    written (without schedule.json), then NoScheduleMeetsTarget says why. `on_note` hears what was skipped or
    estimated.
    """
    from tnt_cli.io.outdir import locked_target

    with locked_target(out, overwrite=overwrite, inputs=(model, data), kind="replace"):
        return _sweep_and_write(model, data, out, settings, device, overwrite, random_weights, on_note, progress)


def _sweep_and_write(
    model: str,
    data: str,
    out: str | Path,
    settings: Calibration,
    device: str | torch.device,
    overwrite: bool,
    random_weights: bool,
    on_note: Callable[[str], None] | None,
    progress: bool,
) -> CalibrationResult:
    from tnt_cli.data import build_loader
    from tnt_cli.data.classes import data_label_map
    from tnt_cli.devices import resolve_device
    from tnt_cli.eval import sweep as sw
    from tnt_cli.eval.pareto import check_reachable
    from tnt_cli.io.sources import load_model
    from tnt_cli.progress import Progress

    note = on_note or (lambda text: None)
    s = settings
    dev = resolve_device(device) if isinstance(device, str) else device
    loaded = load_model(model, random_weights=random_weights, require_trained_heads=False)
    tnt_model = loaded.model
    methods = list(s.methods if s.methods is not None else DEFAULT_METHODS)
    if s.methods is None and getattr(tnt_model.vit, "cls_token", None) is None:
        for name in [m for m in methods if lookup(m).needs_class_token]:
            methods.remove(name)
            note(f"this model has no class token, so the {name} baseline is skipped")
    layers = list(s.grid_layers) if s.grid_layers is not None else sw.default_layer_grid(tnt_model)
    sims = sw.resolve_sim_grid(tnt_model, s.grid_sim)
    reducer, threshold = sw.grid_reducer(s.reducer, tnt_model.schedule)
    schedules, invalid = sw.build_grid(tnt_model, layers, s.grid_keep, sims, sim_seed=s.sim_seed, reducer=reducer,
                                       merge_threshold=threshold)  # fmt: skip
    if not schedules:
        raise TntError(
            "the schedule grid is empty: every combination is dense or cannot run on this model "
            f"({tnt_model.num_patches} patch tokens, blocks 0-{tnt_model.depth - 1})"
        )
    if invalid:
        note(f"skipped {invalid} grid combination(s) that cannot run on this model")
    points = sw.build_points(tnt_model, schedules, methods, heads_usable=loaded.heads_usable)
    check_reachable(points, s.target, speed_measured=s.measure_speed)  # fail before the sweep when compute decides
    label_map = data_label_map(data, tnt_model.vit, loaded.tnt_config, model=loaded.source, split=s.split)
    loader = build_loader(
        data, s.split, tnt_model.vit, batch_size=s.batch_size, workers=s.workers, limit=s.limit, seed=s.seed,
        label_map=label_map,
    )  # fmt: skip
    with Progress(f"sweeping {len(points)} points", total=_loader_images(loader, s.limit), unit="img",
                  enabled=progress) as bar:  # fmt: skip
        sw.run_sweep(tnt_model, points, loader, device=dev, limit=s.limit, seed=s.seed, on_batch=bar.advance)
    if s.measure_speed:
        with Progress(f"timing at batch {s.speed_batch}", total=len(points), unit="point", enabled=progress) as bar:
            sw.measure_speed(
                tnt_model, points, device=dev, batch_size=s.speed_batch, rounds=s.speed_rounds, seed=s.seed,
                on_point=bar.advance,
            )  # fmt: skip
    from tnt_cli.data.datasets import split_label

    measured_on = {
        "model": loaded.source, "data": str(data), "split": split_label(data, s.split), "limit": s.limit,
        "seed": s.seed,
        "batch_size": s.batch_size, "device": str(dev), "speed_measured": s.measure_speed,
        "speed_batch": s.speed_batch if s.measure_speed else None,
        "speed_rounds": s.speed_rounds if s.measure_speed else None,
    }  # fmt: skip

    def measure(chosen: SweepPoint) -> dict | None:
        if s.eval_limit == 0:
            return None
        return measure_choice(tnt_model, chosen, data, s, label_map=label_map, device=dev, progress=progress)

    summary = write_results(out, points, s.target, overwrite=overwrite, context=measured_on, inputs=(model, data),
                            measure=measure)  # fmt: skip
    return CalibrationResult(summary, list(points))


def measure_choice(model, chosen: SweepPoint, data: str, s: Calibration, *, label_map, device, progress: bool) -> dict:
    """The chosen schedule and dense on the evaluation split (images the choice was not made on)."""
    from tnt_cli.data import build_loader
    from tnt_cli.data.datasets import split_label
    from tnt_cli.methods.accuracy import evaluate_model
    from tnt_cli.methods.apply import apply_method

    loader = build_loader(data, s.eval_split, model.vit, batch_size=s.batch_size, workers=s.workers,
                          limit=s.eval_limit, seed=s.seed, label_map=label_map)  # fmt: skip
    results = {}
    for name, schedule in (("dense", None), ("chosen", chosen.schedule)):
        method = DENSE if schedule is None or schedule.is_dense else REFERENCE
        with apply_method(model, method, schedule or chosen.schedule) as setup:
            results[name] = evaluate_model(setup.module, loader, device=device, progress=progress,
                                           description=f"measuring {setup.describe()} on {s.eval_split}")  # fmt: skip
    split_images = len(loader.dataset)
    subset = s.eval_limit is not None and s.eval_limit < split_images
    return {
        "split": split_label(data, s.eval_split), "images": results["chosen"]["images"],
        "limit": s.eval_limit if subset else None, "seed": s.seed,
        "top1": results["chosen"]["top1"], "top5": results["chosen"]["top5"], "loss": results["chosen"]["loss"],
        "dense_top1": results["dense"]["top1"], "dense_top5": results["dense"]["top5"],
    }  # fmt: skip


def write_results(
    out: str | Path,
    points: Sequence[SweepPoint],
    target: Target,
    *,
    overwrite: bool,
    context: dict,
    inputs=(),
    measure: Callable[[SweepPoint], dict | None] | None = None,
) -> dict[str, Any]:
    """Mark the Pareto fronts, choose, and write sweep.csv, pareto.png and schedule.json in one atomic step.

    `measure(chosen)` measures the choice on the evaluation split (kept in schedule.json as `evaluation`).
    `warnings` in the summary name the baselines of the sweep that beat the choice on its own images. When no
    schedule meets the target, the finished sweep is still written (sweep.csv, pareto.png; no schedule.json),
    then NoScheduleMeetsTarget says why.
    """
    from tnt_cli.eval.pareto import better_baselines, choose, mark_pareto, plot_pareto
    from tnt_cli.eval.schedule_file import FILE_NAME, schedule_record
    from tnt_cli.io.atomic import atomic_directory, atomic_write_json, atomic_write_text

    mark_pareto(points)
    try:
        chosen = choose(points, target)
    except TntError as exc:
        chosen, failure = None, exc
    else:
        chosen.chosen, failure = True, None
    dense = next(p for p in points if p.method == DENSE)
    where = f"{context['model']} on {context['data']} ({context['split']}, {dense.images} images)"
    if chosen is None:
        with atomic_directory(out, overwrite=overwrite, inputs=inputs) as tmp:
            atomic_write_text(tmp / SWEEP, _csv(points))
            plot_pareto(points, None, tmp / PARETO, where=where, target=target)
        raise _no_schedule(failure, out)
    record = schedule_record(chosen, dense, target, context)
    evaluation = measure(chosen) if measure is not None else None
    if evaluation is not None:
        record["evaluation"] = evaluation
    with atomic_directory(out, overwrite=overwrite, inputs=inputs) as tmp:
        atomic_write_text(tmp / SWEEP, _csv(points))
        plot_pareto(points, chosen, tmp / PARETO, where=where, target=target)
        atomic_write_json(tmp / FILE_NAME, record)
    warnings = better_baselines(points, chosen)
    return {"out": str(out), "files": list(FILES), "points": len(points), "chosen": record, "warnings": warnings}


def _no_schedule(failure: TntError, out: str | Path) -> NoScheduleMeetsTarget:
    """The target's failure, saying where the sweep went (settings keep their spelling for each audience)."""
    if isinstance(failure, SettingError):
        template, values = failure.template, failure.values
    else:
        template, values = "{reason}", {"reason": str(failure)}
    where = "; the sweep was written to {out_dir}/sweep.csv and pareto.png"
    return NoScheduleMeetsTarget(template + where, **values, out_dir=str(out))


def _csv(points: Sequence[SweepPoint]) -> str:
    import csv
    import io

    buffer = io.StringIO()
    rows = [p.row() for p in points]
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _loader_images(loader, limit: int | None) -> int | None:
    try:
        n = len(loader.sampler)
    except (TypeError, AttributeError):
        return limit
    return n if limit is None else min(n, limit)
