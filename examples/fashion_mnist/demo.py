"""The main job on the embedded default (`make demo`): Fashion-MNIST, end to end, with the `tnt` CLI, in minutes.

0. the shipped dense base ViT                                    examples/fashion_mnist/base/fashion-mnist/
1. fine-tune it with TNT (the default recipe, a short run)       tnt finetune
2. sweep schedules on held-out train images, best under a budget tnt calibrate
3. write the deployable pruned model                             tnt prune
4. full test set: TNT against the baselines at that schedule     tnt evaluate (TNT and dense: --update-card)
5. dense vs pruned speed on this machine, into the model card    tnt benchmark --update-card
6. what the model keeps, drawn on a test image                   tnt visualize
7. the model card's numbers

Every step is a plain `tnt` command (printed before it runs) so you can rerun any of them by hand. Outputs go to
runs/demo/ (DEMO_OUT changes it). The fine-tuning is short (DEMO_STEPS steps of batch 64, default 150) so the
demo fits in about 10 minutes on a 2-core CPU: it shows the workflow and what each command reports, not the
accuracy a full run reaches (see docs/results.md and examples/fashion_mnist/study.py for that).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BIN = Path(sys.executable).parent
TNT = str(BIN / "tnt")
OUT = Path(os.environ.get("DEMO_OUT", ROOT / "runs" / "demo"))
BASE = HERE / "base" / "fashion-mnist"  # shipped in the repo; `make base` retrains it
DATA = "fashion-mnist"
STEPS = os.environ.get("DEMO_STEPS", "150")
BATCH = "64"
CALIB_LIMIT = "1000"  # calibration subset of the train split's held-out slice: the test set takes no part in it
# The methods `tnt evaluate` compares on the full test set, at the schedule calibrate chose: ONE place to edit.
METHODS = ("dense", "tnt", "evit", "tome", "random")
CARD_METHODS = ("dense", "tnt")  # what the pruned model's card records (the baselines are other models' numbers)
# A small grid (the default recipe's head blocks) keeps calibrate short; without --grid-* it sweeps every head
# block. The target is a compute budget (about 0.63x the dense 0.0254 GMACs): after a short fine-tune no schedule
# stays within 1 point of dense (--max-drop 1 would pick dense itself), and the demo is about what pruning keeps at
# a fixed budget.
GRID = ("--grid-layers", "1,3", "--grid-keep", "0.7,0.5,0.4,0.3", "--grid-sim", "0")
TARGET = ("--target-gmacs", "0.016")


def run(args: list[str], *, capture: bool = False) -> str:
    """Run one step, then print its wall time and CPU time (on a busy machine the two part ways)."""
    print(f"\n$ {shlex.join(args)}", flush=True)
    started, cpu = time.perf_counter(), cpu_seconds()
    result = subprocess.run(args, cwd=ROOT, text=True, stdout=subprocess.PIPE if capture else None)
    if result.returncode != 0:
        sys.exit(f"demo: step failed with exit code {result.returncode}: {shlex.join(args)}")
    print(f"  ({time.perf_counter() - started:.0f} s, {cpu_seconds() - cpu:.0f} s CPU)", flush=True)
    return result.stdout or ""


def cpu_seconds() -> float:
    """User + system CPU time of this process and every finished step."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def evaluate(model: Path, method: str) -> dict:
    card = ["--update-card"] if method in CARD_METHODS else []
    return json.loads(run([TNT, "evaluate", str(model), "--data", DATA, "--split", "test", "--method", method, *card,
                           "-j"], capture=True))  # fmt: skip


def main() -> None:
    started = time.perf_counter()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # This ViT is tiny (49 tokens, width 96): one thread runs it fastest, and on a busy machine a second thread
    # spinning for a core costs far more than it gains (30 s a step instead of 1 s, measured here). Set it to
    # override.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    OUT.mkdir(parents=True, exist_ok=True)
    tuned, calib, pruned = OUT / "tnt", OUT / "calib", OUT / "pruned"
    meta = json.loads((BASE / "meta.json").read_text())
    print(f"base model: {BASE.relative_to(ROOT)}, dense test top-1 {meta['test_top1']:.2f}% "
          f"({meta.get('epochs', '?')} epochs from scratch by train_base.py)")  # fmt: skip

    run([TNT, "finetune", str(BASE), "--data", DATA, "-o", str(tuned), "--max-steps", STEPS, "-b", BATCH,
         "--eval-limit", "2000", "--overwrite"])  # fmt: skip
    # --eval-limit 0: step 4 measures the choice on the whole test set (and puts it on the card)
    run([TNT, "calibrate", str(tuned), "--data", DATA, "--limit", CALIB_LIMIT, "--eval-limit", "0",
         *TARGET, *GRID, "-o", str(calib), "--overwrite"])  # fmt: skip
    run([TNT, "prune", str(tuned), "--schedule", str(calib / "schedule.json"), "-o", str(pruned), "--overwrite"])
    results = {method: evaluate(pruned, method) for method in METHODS}
    run([TNT, "benchmark", str(pruned), "--batch-sizes", "1,64", "--update-card"])
    image = write_test_image(OUT / "test-image.png")
    run([TNT, "visualize", str(pruned), str(image), "--data", DATA, "-o", str(OUT / "viz"), "--overwrite"])

    schedule = json.loads((calib / "schedule.json").read_text())
    print(f"\n== Summary ({time.perf_counter() - started:.0f} s in all, {cpu_seconds():.0f} s CPU)")
    print(f"calibrate chose {schedule['schedule_text']} on {CALIB_LIMIT} held-out train images "
          f"({schedule['gmacs_ratio']:.2f}x the dense GMACs)")  # fmt: skip
    print(f"\nFull Fashion-MNIST test set ({results['dense']['images']} images), that schedule for every method:")
    print(f"{'method':<10} {'top-1':>7} {'GMACs':>8}")
    for method, r in results.items():
        print(f"{method:<10} {100 * r['top1']:>6.2f}% {r['gmacs']:>8.4f}")
    print(f"\nmodel card ({pruned / 'README.md'}):")
    for line in card_numbers(pruned / "README.md"):
        print(f"  {line}")
    print(f"\npruned model: {pruned}   token picture: {OUT / 'viz' / image.name}   sweep: {calib / 'pareto.png'}")
    print(f"(fine-tuned {STEPS} steps only: a full run and the study behind the defaults are in docs/results.md)")


def card_numbers(card: Path) -> list[str]:
    """The card's headings and table rows (what it reports), without the front matter, prose and long tables."""
    lines, skip, body = [], False, card.read_text().split("\n---\n", 1)[-1]
    for line in body.splitlines():
        if line.startswith("## "):
            skip = line[3:].strip().lower() in ("tokens per block", "usage", "files", "citation")
            if not skip:
                lines.append(line)
        elif not skip and line.startswith("|") and not set(line) <= set("|-: "):
            lines.append(line)
    return lines


def write_test_image(path: Path) -> Path:
    """The first Fashion-MNIST test image as a PNG, to show `tnt visualize` on a real file."""
    from PIL import Image

    from tnt_cli.data.fashion_mnist import load_arrays

    images, _ = load_arrays("test")
    Image.fromarray(images[0]).save(path)
    return path


if __name__ == "__main__":
    main()
