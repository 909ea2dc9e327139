"""`tnt visualize`: kept-patch masks per stage match the schedule, and the pictures get written."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from _helpers import FMNIST, error_line, run_cli, tiny_tnt
from PIL import Image

from tnt_cli.data.fashion_mnist import CLASSES, load_arrays
from tnt_cli.engine import Schedule
from tnt_cli.viz import trace_images, visualize_files


@pytest.fixture(scope="module")
def fmnist_png(tmp_path_factory):
    """Fashion-MNIST test images 0 and 7 saved as PNG files, as a user would pass them."""
    images, labels = load_arrays("test")
    folder = tmp_path_factory.mktemp("fmnist")
    paths = []
    for i in (0, 7):
        path = folder / f"fmnist_{i}_{labels[i]}.png"
        Image.fromarray(images[i], mode="L").save(path)
        paths.append(path)
    return paths


def expected_kept(n: int, schedule: Schedule) -> list[int]:
    """Patches left after each stage, straight from the schedule's definition (floor of n * keep)."""
    counts = []
    if schedule.sim_prune and len(schedule.prune_layers) != 1:
        n -= schedule.sim_prune
        counts.append(n)
    for keep in schedule.keep_rates:
        n = math.floor(n * keep + 1e-9)
        counts.append(n)
    return counts


SCHEDULES = [
    Schedule((1,), (0.5,)),
    Schedule((0, 2), (0.7, 0.5)),
    Schedule((1,), (0.5,), sim_prune=3),  # relevance top-k then similarity, at one block
    Schedule((1, 2), (0.6, 0.6), sim_prune=4),  # similarity on the embeddings, then relevance
]


@pytest.mark.parametrize("patch", [4, 7])
@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: s.describe())
def test_kept_patches_per_stage_match_the_schedule(tmp_path, fmnist_png, patch, schedule):
    model = tiny_tnt(shape=FMNIST, patch_size=patch)
    grid = 28 // patch
    results = visualize_files(
        model, fmnist_png, tmp_path / "viz", schedule=schedule, class_names=list(CLASSES), renderer="pillow"
    )
    want = expected_kept(grid * grid, schedule)
    assert len(results) == len(fmnist_png)
    for result in results:
        assert result.grid == (grid, grid)
        assert [int(mask.sum()) for mask in result.masks] == want
        assert [len(s.kept_positions) for s in result.stages] == want
        previous = np.ones((grid, grid), dtype=bool)
        for stage in result.stages:
            assert not (stage.kept & ~stage.present).any(), "a kept patch was not there to keep"
            assert np.array_equal(stage.present, previous), "a stage saw patches an earlier stage had pruned"
            previous = stage.kept
        with Image.open(result.output) as png:
            assert png.format == "PNG" and png.width > 224
        assert result.class_label(result.prediction) in CLASSES
        assert 0.0 < result.probability <= 1.0


def test_mask_is_the_top_of_the_relevance_map(fmnist_png):
    """Without similarity pruning, the kept patches are exactly the highest-scoring ones the map shows."""
    model = tiny_tnt(shape=FMNIST, patch_size=4)
    images = [Image.open(p) for p in fmnist_png]
    for result in trace_images(model, images, schedule=Schedule((1, 2), (0.5, 0.5))):
        for stage in result.stages:
            rel = stage.relevance.ravel()
            assert np.isnan(rel[~stage.present.ravel()]).all()
            top = set(np.argsort(-np.nan_to_num(rel, nan=-np.inf), kind="stable")[: stage.n_out].tolist())
            assert top == set(stage.kept_positions)


@pytest.mark.parametrize("method", ["random", "cls-attn"])
def test_baselines_keep_the_same_counts(tmp_path, fmnist_png, method):
    model = tiny_tnt(shape=FMNIST, patch_size=4)
    schedule = Schedule((1, 2), (0.5, 0.5))
    results = visualize_files(model, fmnist_png[:1], tmp_path, method=method, schedule=schedule, renderer="pillow")
    expected = expected_kept(49, schedule)
    if method == "cls-attn":  # EViT keeps the counts whose GMACs match TNT's schedule
        from tnt_cli.methods.apply import apply_method

        with apply_method(model, method, schedule) as setup:
            expected = [s.keep for s in setup.module.stages]
    assert [int(m.sum()) for m in results[0].masks] == expected
    assert results[0].method == method
    assert model.scorer is None and model.schedule == Schedule(), "the method must not leak into the model"


def test_matplotlib_renderer_writes_a_png(tmp_path, fmnist_png):
    pytest.importorskip("matplotlib")
    model = tiny_tnt(shape=FMNIST, patch_size=7)
    (result,) = visualize_files(model, fmnist_png[:1], tmp_path, schedule=Schedule((1,), (0.5,)), renderer="matplotlib")
    with Image.open(result.output) as png:
        assert png.format == "PNG"
    assert [p.name for p in tmp_path.iterdir()] == [result.output.name], "no temporary files may be left behind"


def test_existing_outputs_are_refused_unless_overwrite(tmp_path, fmnist_png):
    model = tiny_tnt(shape=FMNIST, patch_size=7)
    visualize_files(model, fmnist_png[:1], tmp_path, renderer="pillow")
    with pytest.raises(Exception, match="already exists"):
        visualize_files(model, fmnist_png[:1], tmp_path, renderer="pillow")
    visualize_files(model, fmnist_png[:1], tmp_path, renderer="pillow", overwrite=True)


# ----------------------------------------------------------------------------- CLI
def test_cli_writes_one_png_per_image_and_reports_the_masks(tmp_path, fmnist_png, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "viz"
    args = ["visualize", "test_vit", *map(str, fmnist_png), "--out", str(out), "--random-weights"]
    result = run_cli(*args, "--prune-layers", "1,3", "--keep-rates", "0.5,0.5", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [img["image"] for img in data["images"]] == list(map(str, fmnist_png))
    for image in data["images"]:  # test_vit: 160 px, patch 16 -> 100 patches
        assert [s["tokens_kept"] for s in image["stages"]] == [50, 25]
        assert [len(s["kept_positions"]) for s in image["stages"]] == [50, 25]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.stem + ".png" for p in fmnist_png)


def test_cli_says_visualizing_before_drawing_and_a_refusal_stays_one_line(tmp_path, fmnist_png, monkeypatch):
    from tnt_cli.viz.files import visualize

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "viz"
    flags = ("--random-weights", "--prune-layers", "1", "--keep-rates", "0.5")
    result = run_cli("visualize", "test_vit", *map(str, fmnist_png), "--out", out, *flags)
    assert result.exit_code == 0, result.output
    assert f"visualizing {len(fmnist_png)} image(s) with tnt on test_vit" in result.stderr
    again = run_cli("visualize", "test_vit", *map(str, fmnist_png), "--out", out, *flags)  # PNGs exist
    error_line(again, "already exists")  # the refusal is the only line: no "visualizing" before it
    started: list[list[str]] = []  # the PNGs present when the library says it starts: none yet

    def on_start(method: str, source: str) -> None:
        started.append(sorted(p.name for p in (tmp_path / "fresh").glob("*.png")))

    visualize("test_vit", fmnist_png[:1], tmp_path / "fresh", random_weights=True, renderer="pillow", on_start=on_start)
    assert started == [[]] and len(list((tmp_path / "fresh").glob("*.png"))) == 1


@pytest.mark.parametrize("content", [b"this is not an image", None], ids=["garbage", "missing"])
def test_cli_unreadable_image_is_one_error_line(tmp_path, content):
    bad = tmp_path / "bad.png"
    if content is not None:
        bad.write_bytes(content)
    out = tmp_path / "viz"
    result = run_cli("visualize", "test_vit", bad, "--out", out, "--random-weights")
    line = error_line(result, "bad.png")
    assert line.startswith("error: cannot read image")
    assert not out.exists()


def test_cli_unknown_method_is_one_error_line(tmp_path, fmnist_png):
    args = ["visualize", "test_vit", str(fmnist_png[0]), "--out", str(tmp_path), "--method", "tome"]
    assert error_line(run_cli(*args)) == "error: unknown --method 'tome': choose one of tnt, random, evit"


def test_auto_method_of_a_merging_model_names_the_model_and_the_choices():
    from tnt_cli.errors import SettingError
    from tnt_cli.viz.files import resolve_method

    assert resolve_method("auto", "cls-attn", "runs/m") == "evit"
    assert resolve_method("random", "tome", "runs/m") == "random"
    with pytest.raises(SettingError) as caught:
        resolve_method("auto", "tome", "runs/tome")
    assert str(caught.value).startswith("runs/tome was fine-tuned for tome, which merges tokens")
    assert "pick --method tnt | random | evit" in caught.value.render(lambda name: f"--{name}")


@pytest.mark.parametrize("reducer", ["merge", "fuse"])
def test_merge_and_fuse_draw_the_kept_patches(tmp_path, fmnist_png, reducer):
    """The fused token stands on no patch: masks show the top-k patches, counts include the fused token."""
    model = tiny_tnt(shape=FMNIST, patch_size=4)
    schedule = Schedule((1, 2), (0.5, 0.5), reducer=reducer)
    results = visualize_files(model, fmnist_png, tmp_path / "viz", schedule=schedule, renderer="pillow")
    extra = int(reducer == "fuse")
    first = 49 // 2 + extra  # 7 x 7 patches
    for result in results:
        assert [(s.n_in, s.n_out) for s in result.stages] == [(49, first), (first, first // 2 + extra)]
        assert int(result.stages[0].kept.sum()) == 24 == len(result.stages[0].kept_positions)
        assert np.array_equal(result.stages[1].present, result.stages[0].kept)
        kept_second = int(result.stages[1].kept.sum())
        assert kept_second in (first // 2, first // 2 - 1)  # one fewer when the top-k kept the fused token
        assert not np.isnan(result.stages[1].relevance[result.stages[1].present]).any()
        with Image.open(result.output) as png:
            assert png.format == "PNG"
