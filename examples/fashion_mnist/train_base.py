"""Train the dense base ViT for a benchmark from scratch (cached: a second run only reports the cache).

    .venv/bin/python examples/fashion_mnist/train_base.py --bench fashion-mnist
    .venv/bin/python examples/fashion_mnist/train_base.py --bench cluttered-fashion-mnist

Writes examples/fashion_mnist/out/base-<bench>/ (a timm model directory loadable by `tnt_cli.io.sources.load_model`
or `timm.create_model('local-dir:...')`) plus meta.json (test accuracy, seed, epochs, wall time).
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
    cosine_lr,
    create_vit,
    evaluate,
    load_split,
    normalise,
    set_threads,
    write_json,
)


def base_dir(bench: str) -> Path:
    return OUT / f"base-{bench}"


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


def load_base(bench: str):
    """The cached base model (eval mode) and its meta.json."""
    import timm

    d = base_dir(bench)
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
    ap.add_argument("--epochs", type=int, default=None, help="default: 8 (fashion-mnist), 6 (cluttered)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--wd", type=float, default=0.05)
    ap.add_argument("--smoothing", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="1 thread per run trains best on a busy 2-core box")
    ap.add_argument("--force", action="store_true", help="retrain even if the cache exists")
    ap.add_argument("--extend", type=int, default=0, help="train the cached model N more epochs (new cosine cycle)")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    if args.epochs is None:
        args.epochs = 8 if args.bench == "fashion-mnist" else 6
    out = base_dir(args.bench)
    if args.extend:
        extend(args, out)
        return
    if (out / "meta.json").exists() and not args.force:
        meta = json.loads((out / "meta.json").read_text())
        print(f"cached: {out} test top1 {meta['test_top1']:.2f}% (trained in {meta['wall_s']:.0f}s)")
        return
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
        "test_top1": history[-1]["test_top1"],
        "seed": args.seed,
        "epochs": args.epochs,
        "batch": args.batch,
        "lr": args.lr,
        "weight_decay": args.wd,
        "label_smoothing": args.smoothing,
        "wall_s": wall,
        "threads": args.threads,
        "arch": {
            k: getattr(spec, k) for k in ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio")
        },
        "history": history,
    }
    save_base(model, out, meta)
    write_json(out.parent / f"base-{args.bench}.json", meta)
    print(f"saved {out}: test top1 {meta['test_top1']:.2f}% in {wall:.0f}s")


def extend(args, out: Path) -> None:
    """More epochs on the cached base at a lower peak rate; meta.json keeps the whole history."""
    model, meta = load_base(args.bench)
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
    write_json(out.parent / f"base-{args.bench}.json", meta)
    print(f"extended {out}: test top1 {meta['test_top1']:.2f}% (total {meta['wall_s']:.0f}s)")


if __name__ == "__main__":
    main()
