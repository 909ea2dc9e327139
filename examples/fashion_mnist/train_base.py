"""Train the dense base ViT of a benchmark from nothing: how the shipped base models were made.

The repo ships both base models in examples/fashion_mnist/base/<bench>/ (config.json, model.safetensors and
meta.json: command, epochs, seed, test accuracy, wall time, machine), so the demo and the study
never train one. This script retrains them, into a fresh folder unless --into says otherwise, and prints how its
test accuracy compares with the shipped model's:

    make base                                                            # both, into out/base-retrained/
    .venv/bin/python examples/fashion_mnist/train_base.py --bench fashion-mnist            # 5 epochs
    .venv/bin/python examples/fashion_mnist/train_base.py --bench cluttered-fashion-mnist  # 4 epochs
    .venv/bin/python examples/fashion_mnist/train_base.py --bench fashion-mnist \
        --into examples/fashion_mnist/base/fashion-mnist --force                        # replace the shipped one

The output is a timm model directory (`tnt_cli.io.sources.load_model` or `timm.create_model('local-dir:...')`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    BENCHES,
    OUT,
    Timer,
    augment,
    base_dir,
    cosine_lr,
    create_vit,
    evaluate,
    load_split,
    normalise,
    set_threads,
)

EPOCHS = {"fashion-mnist": 5, "cluttered-fashion-mnist": 4, "textured-fashion-mnist": 4}  # the shipped recipe


def retrained_dir(bench: str) -> Path:
    """Where a retrain goes by default: a fresh, gitignored folder, never over the shipped model."""
    return OUT / "base-retrained" / bench


def save_base(model, out_dir: Path, meta: dict) -> None:
    """Save as a plain timm directory (save_for_hf): `tnt_cli.io.sources.load_model` reads it with fresh heads."""
    import shutil

    from timm.models import save_for_hf

    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_for_hf(model, tmp, safe_serialization=True)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)


def load_base(bench: str, directory: Path | None = None):
    """The base model (eval mode) and its meta.json: the shipped one unless `directory` names another."""
    import timm

    d = base_dir(bench) if directory is None else Path(directory)
    meta = json.loads((d / "meta.json").read_text())
    model = timm.create_model(f"local-dir:{d}", pretrained=True)
    return model.eval(), meta


def train(
    bench: str, *, epochs: int, batch: int, lr: float, wd: float, seed: int, smoothing: float, model=None, log=print
):
    spec = BENCHES[bench]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    xtr, ytr = load_split(bench, "train")
    xte, yte = load_split(bench, "test")
    model = create_vit(spec) if model is None else model
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "pos_embed" not in n and "cls_token" not in n]
    no_decay = [
        p for n, p in model.named_parameters() if not (p.ndim > 1 and "pos_embed" not in n and "cls_token" not in n)
    ]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    steps_per_epoch = len(xtr) // batch
    total = epochs * steps_per_epoch
    warmup = max(1, steps_per_epoch // 2)
    pad = 2 if spec.img_size <= 32 else 4
    timer = Timer()
    step = 0
    history = []
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        run_loss = 0.0
        for i in range(steps_per_epoch):
            idx = perm[i * batch : (i + 1) * batch]
            x = normalise(augment(xtr[idx], gen, pad=pad))
            for g in opt.param_groups:
                g["lr"] = cosine_lr(step, total, warmup, lr, floor=lr * 0.01)
            loss = F.cross_entropy(model(x), ytr[idx], label_smoothing=smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            run_loss += loss.item()
            step += 1
            if step % 100 == 0:
                log(f"[{bench}] step {step}/{total} loss {loss.item():.3f} ({timer():.0f}s)")
        acc = evaluate(model, xte, yte)
        history.append({"epoch": epoch + 1, "loss": run_loss / steps_per_epoch, "test_top1": acc, "wall_s": timer()})
        log(
            f"[{bench}] epoch {epoch + 1}/{epochs} loss {run_loss / steps_per_epoch:.4f} "
            f"test {acc:.2f}% ({timer():.0f}s)"
        )
    return model.eval(), history, timer()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", default="fashion-mnist", choices=sorted(BENCHES))
    ap.add_argument(
        "--epochs", type=int, default=None, help="default: the shipped recipe, 5 (fashion-mnist), 4 (the canvases)"
    )
    ap.add_argument(
        "--into", type=Path, default=None, help="model directory to write (default: out/base-retrained/BENCH)"
    )
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--wd", type=float, default=0.05)
    ap.add_argument("--smoothing", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="1 thread per run trains best on a busy 2-core box")
    ap.add_argument("--force", action="store_true", help="retrain even if --into already holds a model")
    ap.add_argument("--extend", type=int, default=0, help="train the --into model N more epochs (new cosine cycle)")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    if args.epochs is None:
        args.epochs = EPOCHS[args.bench]
    out = args.into if args.into is not None else retrained_dir(args.bench)
    if args.extend:
        extend(args, out)
        return
    if (out / "meta.json").exists() and not args.force:
        meta = json.loads((out / "meta.json").read_text())
        print(f"exists: {out} test top1 {meta['test_top1']:.2f}% (trained in {meta['wall_s']:.0f}s); --force retrains")
        return
    command = "examples/fashion_mnist/train_base.py " + " ".join(argv if argv is not None else sys.argv[1:])
    shipped = shipped_top1(args.bench)  # read first: --into may name the shipped directory itself
    model, history, wall = train(
        args.bench,
        epochs=args.epochs,
        batch=args.batch,
        lr=args.lr,
        wd=args.wd,
        seed=args.seed,
        smoothing=args.smoothing,
    )
    spec = BENCHES[args.bench]
    meta = {
        "bench": args.bench,
        "command": command.strip(),
        "test_top1": history[-1]["test_top1"],
        "seed": args.seed,
        "epochs": args.epochs,
        "batch": args.batch,
        "lr": args.lr,
        "weight_decay": args.wd,
        "label_smoothing": args.smoothing,
        "wall_s": wall,
        "threads": args.threads,
        "machine": machine(),
        "arch": {
            k: getattr(spec, k) for k in ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio")
        },
        "history": history,
    }
    save_base(model, out, meta)
    print(f"saved {out}: test top1 {meta['test_top1']:.2f}% in {wall:.0f}s")
    print(compare_with_shipped(args.bench, meta["test_top1"], shipped))


def machine() -> dict:
    """What the wall time was measured on."""
    import os
    import platform

    import timm

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
    }


def shipped_top1(bench: str) -> float | None:
    """The shipped base model's recorded test accuracy (None if it is missing)."""
    meta_path = base_dir(bench) / "meta.json"
    return json.loads(meta_path.read_text())["test_top1"] if meta_path.exists() else None


def compare_with_shipped(bench: str, top1: float, shipped: float | None) -> str:
    """One line: this run's test accuracy against the shipped base model's."""
    if shipped is None:
        return f"[{bench}] test top1 {top1:.2f}%; no shipped base model in {base_dir(bench)} to compare with"
    return f"[{bench}] test top1 {top1:.2f}% vs shipped {shipped:.2f}%: {top1 - shipped:+.2f} pts"


def extend(args, out: Path) -> None:
    """More epochs on the cached base at a lower peak rate; meta.json keeps the whole history."""
    model, meta = load_base(args.bench, out)
    model, history, wall = train(
        args.bench,
        epochs=args.extend,
        batch=args.batch,
        lr=args.lr,
        wd=args.wd,
        seed=args.seed + 1000,
        smoothing=args.smoothing,
        model=model,
    )
    base = meta["history"][-1]
    for h in history:
        h.update(epoch=h["epoch"] + base["epoch"], wall_s=h["wall_s"] + base["wall_s"], lr=args.lr)
    meta.update(
        test_top1=history[-1]["test_top1"],
        epochs=meta["epochs"] + args.extend,
        wall_s=meta["wall_s"] + wall,
        history=meta["history"] + history,
        extended={"epochs": args.extend, "lr": args.lr},
    )
    save_base(model, out, meta)
    print(f"extended {out}: test top1 {meta['test_top1']:.2f}% (total {meta['wall_s']:.0f}s)")


if __name__ == "__main__":
    main()
