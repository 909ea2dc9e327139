"""The main job on the embedded default (`make demo`): Fashion-MNIST, end to end, with the `tnt` CLI.

1. train (or reuse the cached) dense base ViT           examples/fashion_mnist/train_base.py
2. fine-tune it with TNT (the default recipe)           tnt finetune
3. sweep schedules and pick one within 1 point of dense tnt calibrate
4. write the deployable pruned model                    tnt prune
5. full test set: TNT vs the baselines at that schedule tnt evaluate
6. dense vs pruned speed on this machine                tnt benchmark
7. what the model keeps, drawn on a test image          tnt visualize

Every step is a plain `tnt` command (printed before it runs) so you can rerun any of them by hand.
Outputs go to runs/demo/ (set DEMO_OUT to change it); the base model is cached in examples/fashion_mnist/out/.
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
BASE = HERE / "out" / "base-fashion-mnist"
STEPS = os.environ.get("DEMO_STEPS", "400")


def run(args: list[str], *, capture: bool = False) -> str:
    print(f"\n$ {shlex.join(args)}", flush=True)
    started = time.perf_counter()
    result = subprocess.run(args, cwd=ROOT, text=True, stdout=subprocess.PIPE if capture else None)
    if result.returncode != 0:
        sys.exit(f"demo: step failed with exit code {result.returncode}: {shlex.join(args)}")
    print(f"  ({time.perf_counter() - started:.0f} s)", flush=True)
    return result.stdout or ""


def evaluate(model: Path, method: str) -> dict:
    text = run([TNT, "evaluate", str(model), "--data", "fashion-mnist", "--method", method, "--json"], capture=True)
    return json.loads(text)


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    OUT.mkdir(parents=True, exist_ok=True)
    tuned, calib, pruned = OUT / "tnt", OUT / "calib", OUT / "pruned"

    run([sys.executable, str(HERE / "train_base.py"), "--bench", "fashion-mnist"])
    run(
        [
            TNT,
            "finetune",
            str(BASE),
            "--data",
            "fashion-mnist",
            "--out",
            str(tuned),
            "--max-steps",
            STEPS,
            "--overwrite",
        ]
    )
    run(
        [
            TNT,
            "calibrate",
            str(tuned),
            "--data",
            "fashion-mnist",
            "--limit",
            "2000",
            "--max-drop",
            "1",
            "--out",
            str(calib),
            "--overwrite",
        ]
    )
    run([TNT, "prune", str(tuned), "--schedule", str(calib / "schedule.json"), "--out", str(pruned), "--overwrite"])

    results = {method: evaluate(pruned, method) for method in ("dense", "tnt", "cls-attn", "random")}
    run([TNT, "benchmark", str(pruned), "--batch-sizes", "1,64", "--update-card"])
    image = write_test_image(OUT / "test-image.png")
    viz = OUT / "viz"
    run([TNT, "visualize", str(pruned), str(image), "--data", "fashion-mnist", "--out", str(viz), "--overwrite"])

    print("\nFull Fashion-MNIST test set, schedule chosen by calibrate:")
    print(f"{'method':<10} {'top-1':>7} {'GMACs':>8}")
    for method, r in results.items():
        print(f"{method:<10} {100 * r['top1']:>6.2f}% {r['gmacs']:>8.4f}")
    print(f"\npruned model: {pruned} (model card: {pruned / 'README.md'})")


def write_test_image(path: Path) -> Path:
    """The first Fashion-MNIST test image as a PNG, to show `tnt visualize` on a real file."""
    from PIL import Image

    from tnt_cli.data.fashion_mnist import load_arrays

    images, _ = load_arrays("test")
    Image.fromarray(images[0]).save(path)
    return path


if __name__ == "__main__":
    main()
