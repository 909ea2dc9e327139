"""Pictures into files: one PNG per input image, each written atomically, for a loaded model or a MODEL name."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tnt_cli.errors import SettingError, TntError
from tnt_cli.methods.registry import REFERENCE
from tnt_cli.viz.core import METHODS, check_method, trace_images
from tnt_cli.viz.result import ImageResult

if TYPE_CHECKING:
    from tnt_cli.engine import Schedule, TNTModel


def output_names(paths: Sequence[str | Path]) -> list[str]:
    """One PNG name per input: its stem, else (stems clash) its file name, else that plus its position."""
    stems = [Path(p).stem or "image" for p in paths]
    names = [f"{s}.png" if stems.count(s) == 1 else f"{Path(p).name}.png" for s, p in zip(stems, paths)]
    return [n if names.count(n) == 1 else f"{n[:-4]}-{i}.png" for i, n in enumerate(names)]


def visualize_files(
    model: TNTModel,
    paths: Sequence[str | Path],
    out_dir: str | Path,
    *,
    method: str = REFERENCE,
    schedule: Schedule | None = None,
    class_names: list[str] | None = None,
    renderer: str = "auto",
    overwrite: bool = False,
    seed: int = 0,
    on_start: Callable[[], None] | None = None,
) -> list[ImageResult]:
    """Read `paths`, trace them, and write one PNG per image into `out_dir` (each written atomically).

    Every image is read and every target checked before anything is computed or written, so a bad input
    leaves `out_dir` untouched; `on_start` is called once those checks pass, before the drawing.
    """
    from tnt_cli.io.atomic import atomic_write_bytes
    from tnt_cli.viz.images import read_image
    from tnt_cli.viz.render import render_png, resolve_renderer

    if not paths:
        raise TntError("give at least one image")
    renderer = resolve_renderer(renderer)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise SettingError("{out_dir} {path} exists and is not a directory", path=out_dir)
    images = [read_image(p) for p in paths]
    targets = [out_dir / name for name in output_names(paths)]
    clash = [t for t in targets if t.exists()]
    if clash and not overwrite:
        from tnt_cli.io.outdir import OutputExists

        raise OutputExists(clash[0])
    if on_start is not None:
        on_start()
    results = trace_images(
        model,
        images,
        sources=[str(p) for p in paths],
        method=method,
        schedule=schedule,
        class_names=class_names,
        seed=seed,
    )
    for result, target in zip(results, targets):
        atomic_write_bytes(target, render_png(result, renderer=renderer))
        result.output = target
    return results


@dataclass
class Visualized:
    """What `visualize` drew: one result per image (with its PNG), the method, the model's source, and where the
    class names came from."""

    results: list[ImageResult]
    method: str
    source: str
    class_names_from: str | None


def resolve_method(method: str, own: str, model: str) -> str:
    """`auto` is MODEL's own method (`own`), when it is one that selects tokens; else `method`, checked."""
    from tnt_cli.methods.loading import AUTO_METHOD
    from tnt_cli.methods.registry import canonical

    if method != AUTO_METHOD:
        return check_method(method)
    own = canonical(own)
    if own not in METHODS:
        raise SettingError(
            "{spec} was fine-tuned for {own}, which merges tokens rather than selecting them: "
            "pick {method} {choices} to see which tokens one of those keeps",
            spec=model, own=own, choices=" | ".join(METHODS),
        )  # fmt: skip
    return own


def visualize(
    model: str,
    images: Sequence[str | Path],
    out_dir: str | Path,
    *,
    method: str = "auto",
    schedule: Schedule | None = None,
    data: str | None = None,
    renderer: str = "auto",
    overwrite: bool = False,
    random_weights: bool = False,
    seed: int = 0,
    on_start: Callable[[str, str], None] | None = None,
) -> Visualized:
    """Load MODEL and draw, per image and per pruning stage, the patches `method` keeps at `schedule`.

    Every image is read before the model is loaded. Class names come from `data`, else the model's own.
    `on_start(method, source)` is called once everything is loaded and checked, before the drawing (a long
    run can say what it is doing; a refusal comes before it).
    """
    from tnt_cli.methods.loading import load_for_method
    from tnt_cli.viz.images import class_names, read_image
    from tnt_cli.viz.render import resolve_renderer

    resolve_renderer(renderer)
    for path in images:  # fail on a bad image before spending time on the model
        read_image(path)
    loaded, schedule, chosen = load_for_method(model, method, schedule, random_weights=random_weights)
    method = resolve_method(method, chosen, model)  # auto: the directory's own, when it is one that selects tokens
    names, names_from = class_names(loaded.model.vit, data=data, config=loaded.tnt_config)
    results = visualize_files(
        loaded.model, images, out_dir, method=method, schedule=schedule, class_names=names, renderer=renderer,
        overwrite=overwrite, seed=seed, on_start=None if on_start is None else lambda: on_start(method, loaded.source),
    )  # fmt: skip
    return Visualized(results, method, loaded.source, names_from)
