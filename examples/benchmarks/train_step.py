"""Training step time with TNT noise vs without, as a ratio (our quality bar: <= 5% slower).

One process, the variants alternating round by round so drift in machine load hits all of them alike:
- `timm`: the plain timm model's step (forward, cross-entropy, backward, AdamW step), what fine-tuning costs
  without TNT;
- `tnt-off`: the TNT wrapper with noise disabled (its block-by-block forward, no heads);
- `tnt-noise`: the TNT training step (relevance heads, noise on the noise blocks, sigmoid rate penalty).
Every variant trains the whole model (`--train full`); heads-only training has no plain-timm counterpart.

    python examples/benchmarks/train_step.py --model deit_tiny_patch16_224 --batch-size 32
    python examples/benchmarks/train_step.py --model vit_small_patch16_224 --batch-size 128 --dtype bf16  # GPU
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time

import timm
import torch
import torch.nn.functional as F

from tnt_cli.engine import NoiseConfig, attach_tnt


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="deit_tiny_patch16_224", help="timm architecture (random weights)")
    p.add_argument("--img-size", type=int, default=None, help="input size (default: the model's)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=10, help="timed rounds; each times every variant once")
    p.add_argument("--steps", type=int, default=3, help="steps per variant per round")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per variant first")
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32", help="autocast dtype (CUDA)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--noise-blocks", default="0,1,2,3,4")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    kwargs = {"img_size": args.img_size} if args.img_size else {}
    torch.manual_seed(0)
    vit = timm.create_model(args.model, pretrained=False, num_classes=1000, **kwargs)
    depth = len(vit.blocks)
    blocks = tuple(int(b) for b in args.noise_blocks.split(",") if int(b) < depth)
    tnt = attach_tnt(copy.deepcopy(vit), blocks, noise=NoiseConfig(blocks=blocks))
    plain = vit
    models = {"timm": plain.to(device).train(), "tnt-off": tnt.to(device).train(), "tnt-noise": tnt}
    optims = {
        "timm": torch.optim.AdamW(plain.parameters(), lr=1e-4),
        "tnt": torch.optim.AdamW(tnt.parameters(), lr=1e-4),
    }
    in_chans, size = vit.patch_embed.proj.in_channels, vit.patch_embed.img_size
    x = torch.randn(args.batch_size, in_chans, *size, device=device)
    y = torch.randint(0, 1000, (args.batch_size,), device=device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.dtype)
    use_amp = dtype is not None and device.type == "cuda"

    def step(name: str) -> None:
        model = models[name]
        opt = optims["timm" if name == "timm" else "tnt"]
        if name != "timm":
            tnt.noise_enabled = name == "tnt-noise"
        opt.zero_grad(set_to_none=True)
        ctx = torch.autocast(device.type, dtype=dtype) if use_amp else torch.autocast(device.type, enabled=False)
        with ctx:
            loss = F.cross_entropy(model(x).float(), y)
            if name == "tnt-noise":
                loss = loss + tnt.rate_loss()
        loss.backward()
        opt.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    names = list(models)
    for name in names:
        for _ in range(args.warmup):
            step(name)
    sync()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]  # alternate, and alternate who goes first
        for name in order:
            sync()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(name)
            sync()
            times[name].append((time.perf_counter() - t0) / args.steps)
    median = {n: statistics.median(t) for n, t in times.items()}
    # per-round ratios: both variants of a round ran back to back, so slow drift in load cancels
    paired = {
        base: statistics.median(a / b for a, b in zip(times["tnt-noise"], times[base])) for base in ("timm", "tnt-off")
    }
    result = {
        "model": args.model,
        "input": [in_chans, *size],
        "batch_size": args.batch_size,
        "dtype": args.dtype if use_amp else "fp32",
        "noise_blocks": list(blocks),
        "step_s": median,
        "ratio_noise_vs_timm": median["tnt-noise"] / median["timm"],
        "ratio_noise_vs_tnt_off": median["tnt-noise"] / median["tnt-off"],
        "paired_ratio_noise_vs_timm": paired["timm"],
        "paired_ratio_noise_vs_tnt_off": paired["tnt-off"],
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "timm": timm.__version__,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.model} input {result['input']} batch {args.batch_size} {result['dtype']} on {result['device']}")
    for name in names:
        spread = f"{min(times[name]) * 1e3:.1f}-{max(times[name]) * 1e3:.1f}"
        print(f"  {name:10s} median step {median[name] * 1e3:8.1f} ms  (range {spread} ms)")
    print(f"  noise vs plain timm: {result['ratio_noise_vs_timm']:.3f}x (median of per-round ratios "
          f"{paired['timm']:.3f}x)   noise vs TNT without noise: {result['ratio_noise_vs_tnt_off']:.3f}x "
          f"({paired['tnt-off']:.3f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
