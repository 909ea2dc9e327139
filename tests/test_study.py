"""The study's central claim at small scale, through the product, against the strongest TRAINED baselines.

On textured Fashion-MNIST (an item on a 64x64 canvas over a texture: no two background patches equal, so merging
gets nothing for free), the shipped base model is fine-tuned three times through `tnt_cli.train.trainer.finetune`
with the same recipe, steps, data and seed: with TNT (the default recipe), and as EViT and ToMe (`--method`), the
strongest trained baselines of the full study at keep 0.3 and 0.5. Each is compared with `tnt_cli.eval.compare`
(what `tnt compare` runs, every method at TNT's GMACs) after block 1 at keep 0.5 and 0.3, on held-out test images.
The thresholds come from repeated runs (see `MEASURED`). A second test checks that the study's rows are what the
CLI prints.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "fashion_mnist"
BENCH = "textured-fashion-mnist"
KEEPS = (0.5, 0.3)
BASELINES = ("evit", "tome")

# TNT - the best of EViT and ToMe (all fine-tuned the same way: 120 steps of 64 from the shipped base, 4000 train
# images; 2000 test images), points at keep 0.5 / 0.3, measured with
# `cd tests && python test_study.py 5 1 tnt,evit,tome,random` (seeds 0-4, one thread, 220-350 s a seed on the
# 2-core CPU shared with other jobs; random drop was 6-11 points behind and never the best): every seed had TNT
# ahead at both keep rates, by 0.1-0.8 (mean 0.45 / 0.44, sd 0.27 / 0.30). TNT at 58.90-60.00%, EViT 58.45-59.35%,
# ToMe 57.15-59.50%. The test runs seed 0 and asks TNT to be at least as accurate as the better baseline at both
# keep rates: below the smallest margin any seed showed, and failed by heads that rank no better than chance
# (random drop's 48-54%) or by a baseline that keeps more.
MEASURED = {0: (0.45, 0.2), 1: (0.1, 0.85), 2: (0.3, 0.6), 3: (0.8, 0.45), 4: (0.6, 0.1)}
MARGIN = (0.0, 0.0)


def small_scale(seed: int, tmp: Path, *, methods: tuple[str, ...] = ("tnt", *BASELINES), steps: int = 120,
                test_n: int = 2000) -> dict[str, dict[float, float]]:  # fmt: skip
    """Top-1 (%) after block 1 at each of KEEPS, per method, all fine-tuned the same way from the shipped base."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        from common import BASE_DIRS
    finally:
        sys.path.remove(str(EXAMPLES))
    from tnt_cli.data import build_loader
    from tnt_cli.engine import Schedule
    from tnt_cli.eval.compare import compare, load_entries
    from tnt_cli.train.config import TrainConfig
    from tnt_cli.train.trainer import finetune

    entries = []
    for method in methods:
        out = tmp / f"{method}-{seed}"
        cfg = TrainConfig(model=str(BASE_DIRS[BENCH]), data=BENCH, out=str(out), method=method, max_steps=steps,
                          batch_size=64, seed=seed, limit=4000, scale=(0.6, 1.0), eval_limit=0, progress=False,
                          holdout=False)  # fmt: skip
        finetune(cfg)
        entries.append(replace(load_entries([str(out)])[0], label=method))  # its own method and reducer
    loader = build_loader(BENCH, "test", entries[0].model.vit, batch_size=250, limit=test_n, seed=0)
    rows = compare(entries, loader, [Schedule((1,), (k,)) for k in KEEPS], seed=seed)
    acc: dict[str, dict[float, float]] = {}
    for r in rows:
        acc.setdefault(r["label"], {})[r["schedule"]["keep_rates"][0]] = 100 * r["top1"]
    return acc


def margins(acc: dict[str, dict[float, float]]) -> tuple[float, ...]:
    """TNT minus the best baseline at each of KEEPS."""
    return tuple(acc["tnt"][k] - max(acc[b][k] for b in acc if b != "tnt") for k in KEEPS)


@pytest.mark.slow
def test_tnt_against_the_strongest_trained_baselines_on_textured(tmp_path):
    torch.set_num_threads(1)  # as measured
    acc = small_scale(0, tmp_path)
    assert all(m >= t for m, t in zip(margins(acc), MARGIN)), (acc, margins(acc), MARGIN)


def test_a_study_row_is_what_the_cli_commands_print(tmp_path, monkeypatch):
    """The study trains and evaluates through the same code as `tnt finetune` + `tnt evaluate`: same numbers."""
    import json

    from _helpers import FMNIST, run_cli, tiny_vit, write_timm_dir

    sys.path.insert(0, str(EXAMPLES))
    try:
        import study
    finally:
        sys.path.remove(str(EXAMPLES))
    torch.set_num_threads(1)
    base = write_timm_dir(tmp_path / "base", tiny_vit(shape=FMNIST))  # under ROOT: the study names paths from there
    monkeypatch.setitem(study.BASE_DIRS, "fashion-mnist", base)
    monkeypatch.setattr(study, "STUDY_OUT", tmp_path / "study")
    monkeypatch.setattr(study, "ROOT", tmp_path)
    monkeypatch.chdir(tmp_path)
    steps, batch, schedule = 4, 16, "block 1 keep 0.5"
    study.train_run("fashion-mnist", "tnt", 0, steps, batch, log=lambda *_: None)
    from tnt_cli.data import build_loader
    from tnt_cli.io.sources import load_model

    vit = load_model(str(base), require_trained_heads=False).model.vit
    loader = build_loader("fashion-mnist", "test", vit, batch_size=500, limit=500)
    rows = study.evaluate_run("fashion-mnist", "tnt", 0, steps, batch, loader, set(), log=lambda *_: None)
    row = next(r for r in rows if r["schedule"] == schedule)

    finetune_cmd, evaluate_cmd = study.commands("fashion-mnist", "tnt", 0, steps, batch, schedule).split(" && ")
    out = tmp_path / "cli"
    args = finetune_cmd.split()[2:]
    args[args.index("--out") + 1] = str(out)
    assert run_cli("finetune", *args, "--no-progress").exit_code == 0
    ev = evaluate_cmd.split()[2:]
    ev[0] = str(out)
    result = run_cli("evaluate", *ev, "--limit", "500", "--json")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert round(100 * printed["top1"], 2) == row["top1"]
    assert round(printed["gmacs"], 6) == row["gmacs"]


if __name__ == "__main__":  # the repeated runs that justify MARGIN
    import tempfile
    import time

    torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    compared = tuple(sys.argv[3].split(",")) if len(sys.argv) > 3 else ("tnt", *BASELINES)
    for s in range(int(sys.argv[1]) if len(sys.argv) > 1 else 5):
        t = time.time()
        with tempfile.TemporaryDirectory() as d:
            a = small_scale(s, Path(d), methods=compared)
        shown = {m: {k: round(v, 2) for k, v in by_keep.items()} for m, by_keep in a.items()}
        print(s, shown, "margins", tuple(round(m, 2) for m in margins(a)), f"{time.time() - t:.0f}s", flush=True)
