"""Draw an ImageResult as a PNG: matplotlib (Agg, no display needed) when installed, else Pillow alone.

Layout: top row the input with its prediction, then per stage the image with pruned patches dimmed; bottom row
the top predictions, then per stage the relevance map the stage ranked tokens by.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np

from tnt_cli.errors import SettingError, TntError
from tnt_cli.methods.registry import lookup
from tnt_cli.terminal import LITERAL, printable

if TYPE_CHECKING:
    from tnt_cli.viz.result import ImageResult, StageView

RENDERERS = ("auto", "matplotlib", "pillow")
DIM = 0.3  # brightness left on pruned patches...
VEIL = np.array([0.10, 0.12, 0.35])  # ...under a dark blue veil, so pruning shows on black backgrounds too
OUTLINE = "#39ff14"  # kept patches are outlined in this colour


def has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_renderer(name: str) -> str:
    if name not in RENDERERS:
        raise TntError(f"unknown renderer {name!r}: choose one of {', '.join(RENDERERS)}")
    if name == "auto":
        return "matplotlib" if has_matplotlib() else "pillow"
    if name == "matplotlib" and not has_matplotlib():
        raise SettingError(
            "matplotlib is not installed: pip install 'tnt-token-pruning[plot]', or use {renderer} pillow"
        )
    return name


def render_png(result: ImageResult, *, renderer: str = "auto") -> bytes:
    renderer = resolve_renderer(renderer)
    return _render_matplotlib(result) if renderer == "matplotlib" else _render_pillow(result)


# --------------------------------------------------------------------------- shared pixel work
def patch_mask_image(result: ImageResult, mask: np.ndarray) -> np.ndarray:
    """The (H, W) per-pixel version of a (rows, cols) patch mask."""
    ph, pw = result.patch_size
    return np.kron(mask.astype(np.uint8), np.ones((ph, pw), dtype=np.uint8)).astype(bool)


def dimmed(result: ImageResult, stage: StageView) -> np.ndarray:
    """The input with every patch not kept after `stage` darkened under a veil."""
    img = result.image.copy()
    keep = _fit(patch_mask_image(result, stage.kept), img.shape[:2])
    img[~keep] = img[~keep] * DIM + VEIL
    return img.clip(0.0, 1.0)


def kept_boxes(result: ImageResult, stage: StageView, scale: tuple[float, float] = (1.0, 1.0)) -> list[tuple]:
    """(left, top, width, height) of every kept patch, in pixels times `scale` (x, y)."""
    ph, pw = result.patch_size
    rows, cols = np.nonzero(stage.kept)
    return [(c * pw * scale[0], r * ph * scale[1], pw * scale[0], ph * scale[1]) for r, c in zip(rows, cols)]


def _fit(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Pad / crop a mask to the image (patch grids can stop short of a border the patch size does not divide)."""
    out = np.zeros(shape, dtype=bool)
    h, w = min(shape[0], mask.shape[0]), min(shape[1], mask.shape[1])
    out[:h, :w] = mask[:h, :w]
    return out


def normalised_relevance(stage: StageView) -> np.ndarray | None:
    """Scores scaled to [0, 1] over the tokens that entered the stage (NaN elsewhere), for colouring."""
    if stage.relevance is None:
        return None
    rel = stage.relevance.astype(np.float64)
    finite = np.isfinite(rel)
    if not finite.any():
        return rel
    lo, hi = rel[finite].min(), rel[finite].max()
    return np.where(finite, (rel - lo) / (hi - lo) if hi > lo else 0.5, np.nan)


def titles(result: ImageResult) -> tuple[str, list[str], list[str]]:
    pred = f"{printable(result.class_label(result.prediction))} ({result.probability:.1%})"
    kept = [f"{s.label}: {s.n_out}/{s.n_in} kept" for s in result.stages]
    heat = [
        f"{'relevance' if lookup(result.method).uses_heads else result.method} scores, {s.label}"
        if s.relevance is not None
        else f"{s.label}: similarity only"
        for s in result.stages
    ]
    return pred, kept, heat


def top_lines(result: ImageResult) -> list[str]:
    return [f"{p:6.1%}  {printable(result.class_label(c))}" for c, p in result.top]


# --------------------------------------------------------------------------- matplotlib
def _render_matplotlib(result: ImageResult) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    pred, kept_titles, heat_titles = titles(result)
    cols = 1 + len(result.stages)
    fig = Figure(figsize=(2.6 * cols, 5.4), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].imshow(result.image, interpolation="nearest")
    axes[0, 0].set_title(f"prediction: {pred}", fontsize=8, **LITERAL)  # class names and paths: drawn as written
    axes[1, 0].axis("off")
    axes[1, 0].text(0.0, 1.0, "top classes\n" + "\n".join(top_lines(result)), va="top", family="monospace", fontsize=7,
                    **LITERAL)  # fmt: skip
    rows, cols_grid = result.grid
    ph, pw = result.patch_size
    extent = (-0.5, cols_grid * pw - 0.5, rows * ph - 0.5, -0.5)
    for j, stage in enumerate(result.stages, start=1):
        axes[0, j].imshow(dimmed(result, stage), interpolation="nearest")
        for left, top, width, height in kept_boxes(result, stage):
            box = Rectangle((left - 0.5, top - 0.5), width, height, fill=False, edgecolor=OUTLINE, linewidth=0.4)
            axes[0, j].add_patch(box)
        axes[0, j].set_title(kept_titles[j - 1], fontsize=8)
        rel = normalised_relevance(stage)
        ax = axes[1, j]
        ax.set_title(heat_titles[j - 1], fontsize=7)
        ax.imshow(result.image.mean(axis=2), cmap="gray", interpolation="nearest")
        if rel is not None:
            heat = np.ma.masked_invalid(rel)
            image = ax.imshow(heat, cmap="inferno", alpha=0.7, extent=extent, interpolation="nearest", vmin=0, vmax=1)
            bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, ticks=[0, 1])
            bar.ax.set_yticklabels(["low", "high"], fontsize=6)
    fig.suptitle(f"{printable(result.source)}  [{result.method}: {result.schedule}]", fontsize=8, **LITERAL)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# --------------------------------------------------------------------------- Pillow
_INFERNO = np.array(  # a few anchors of matplotlib's inferno map, interpolated linearly
    [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21], [250, 193, 39],
     [252, 255, 164]],
    dtype=np.float64,
)  # fmt: skip
TILE = 224
HEADER = 28


def colormap(values: np.ndarray) -> np.ndarray:
    """[0, 1] values -> RGB uint8 with the inferno anchors; NaN -> mid gray."""
    v = np.nan_to_num(values, nan=0.0).clip(0, 1) * (len(_INFERNO) - 1)
    lo = np.floor(v).astype(int).clip(0, len(_INFERNO) - 2)
    frac = (v - lo)[..., None]
    rgb = _INFERNO[lo] * (1 - frac) + _INFERNO[lo + 1] * frac
    rgb[np.isnan(values)] = 128
    return rgb.astype(np.uint8)


def _tile(pixels: np.ndarray, title: str, boxes: list[tuple] = ()):
    from PIL import Image, ImageDraw

    arr = (pixels * 255).round().astype(np.uint8) if pixels.dtype != np.uint8 else pixels
    img = Image.fromarray(arr, mode="RGB").resize((TILE, TILE), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(img)
    for left, top, width, height in boxes:
        draw.rectangle((left, top, left + width - 1, top + height - 1), outline=OUTLINE)
    tile = Image.new("RGB", (TILE, TILE + HEADER), "white")
    tile.paste(img, (0, HEADER))
    ImageDraw.Draw(tile).text((4, 4), title[:40], fill="black")
    return tile


def _text_tile(lines: list[str]):
    from PIL import Image, ImageDraw

    tile = Image.new("RGB", (TILE, TILE + HEADER), "white")
    ImageDraw.Draw(tile).multiline_text((4, 4), "\n".join(lines), fill="black", spacing=4)
    return tile


def _render_pillow(result: ImageResult) -> bytes:
    from PIL import Image

    pred, kept_titles, heat_titles = titles(result)
    top = [_tile(result.image, f"pred: {pred}")]
    bottom = [_text_tile(["top classes", *top_lines(result)])]
    shape = result.image.shape[:2]
    for stage, kept_title, heat_title in zip(result.stages, kept_titles, heat_titles):
        scale = (TILE / shape[1], TILE / shape[0])
        top.append(_tile(dimmed(result, stage), kept_title, kept_boxes(result, stage, scale)))
        rel = normalised_relevance(stage)
        if rel is None:
            heat = (result.image * 255).astype(np.uint8)
        else:
            heat = colormap(rel)
            heat = np.repeat(np.repeat(heat, result.patch_size[0], axis=0), result.patch_size[1], axis=1)
            canvas = np.full((*shape, 3), 128, dtype=np.uint8)
            h, w = min(shape[0], heat.shape[0]), min(shape[1], heat.shape[1])
            canvas[:h, :w] = heat[:h, :w]
            heat = canvas
        bottom.append(_tile(heat, heat_title))
    sheet = Image.new("RGB", (TILE * len(top), 2 * (TILE + HEADER)), "white")
    for j, (a, b) in enumerate(zip(top, bottom)):
        sheet.paste(a, (j * TILE, 0))
        sheet.paste(b, (j * TILE, TILE + HEADER))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return buf.getvalue()
