"""The TNT study: fine-tune relevance heads (and optionally the backbone) in variants, evaluate pruning.

    .venv/bin/python examples/fashion_mnist/study.py --bench fashion-mnist --recipes official,sigmoid
    .venv/bin/python examples/fashion_mnist/study.py --bench cluttered-fashion-mnist --recipes default --steps 300

Each recipe fine-tunes from the shipped base model (base/<bench>/, made by train_base.py), then TNT and the
baselines (random, cls-attn, tome, from `tnt_cli.eval.baselines`) are evaluated on the FULL test set at the same
token plan (so matched GMACs; tome at the merge count r with the closest GMACs). Rows go to
results/study-<bench>.csv (appended).

Variants (see `Recipe`): relevance form softmax|sigmoid, sigma0, std|var noise, heads|full training, noise
blocks, distillation to the dense base's logits, and `drop`: an extra hard-pruning pass per step at a random keep
rate chosen by the current heads, so the backbone learns to work from the tokens TNT keeps (removal-aware
fine-tuning; the heads themselves are still trained by the noise only).
"""

from __future__ import annotations

import argparse
import copy
import csv
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, Timer, augment, cosine_lr, load_split, normalise, set_threads

from tnt_cli.engine import NoiseConfig, Schedule, TNTModel, attach_tnt

KEEPS = (0.7, 0.5, 0.3, 0.15)
PRUNE_BLOCK = 1
MULTI = ((1, 3), (0.7, 0.7), (0.5, 0.5))  # multi-layer schedules: blocks (1, 3) at these per-stage keep rates
HEAD_BLOCKS = (0, 1, 2, 3)
DEFAULT_RECIPE = "sigmoid-drop"  # the study's pick (see README Results); "official" reproduces the paper


@dataclass(frozen=True)
class Recipe:
    """One fine-tuning variant."""

    name: str
    form: str = "sigmoid"
    sigma0: float = 1.0
    variant: str = "std"
    target_rate: float = 0.3
    rate_weight: float = 1.0
    noise_blocks: tuple[int, ...] = (0, 1, 2, 3)
    train: str = "heads"  # heads | full
    distill: float = 0.0  # weight of KL(dense teacher || student) on the noisy pass
    drop: float = 0.0  # weight of the hard-pruning pass (0 = off)
    drop_keeps: tuple[float, ...] = (0.7, 0.5, 0.3, 0.15)
    mask: bool = False  # removal relaxation: after PRUNE_BLOCK, later blocks' attention keys get bias log(alpha)
    steps: int = 300
    batch: int = 128
    lr_heads: float = 3e-3
    lr_backbone: float = 2e-4
    smoothing: float = 0.1

    def noise_config(self) -> NoiseConfig:
        return NoiseConfig(
            blocks=self.noise_blocks,
            sigma0=self.sigma0,
            variant=self.variant,
            form=self.form,
            target_rate=self.target_rate,
        )

    def describe(self) -> str:
        parts = [f"{self.form}", f"s0={self.sigma0:g}", self.variant, f"train={self.train}"]
        if self.form == "sigmoid":
            parts.append(f"rate={self.target_rate:g}")
        parts.append("noise=" + "".join(map(str, self.noise_blocks)))
        if self.distill:
            parts.append(f"distill={self.distill:g}")
        if self.drop:
            parts.append(f"drop={self.drop:g}")
        if self.mask:
            parts.append("mask")
        parts.append(f"steps={self.steps}")
        return " ".join(parts)


RECIPES = {
    # the paper's formulation (official code's sigma0), heads only on a frozen backbone
    "official": Recipe("official", form="softmax", sigma0=0.02),
    "softmax-s1": Recipe("softmax-s1", form="softmax", sigma0=1.0),
    "softmax-var-s1": Recipe("softmax-var-s1", form="softmax", sigma0=1.0, variant="var"),
    "sigmoid": Recipe("sigmoid", form="sigmoid", sigma0=1.0),
    "sigmoid-s03": Recipe("sigmoid-s03", form="sigmoid", sigma0=0.3),
    "sigmoid-s2": Recipe("sigmoid-s2", form="sigmoid", sigma0=2.0),
    "sigmoid-full": Recipe("sigmoid-full", form="sigmoid", sigma0=1.0, train="full", distill=1.0),
    "sigmoid-drop": Recipe("sigmoid-drop", form="sigmoid", sigma0=1.0, train="full", distill=1.0, drop=1.0),
    "softmax-drop": Recipe("softmax-drop", form="softmax", sigma0=1.0, train="full", distill=1.0, drop=1.0),
    "mask": Recipe("mask", sigma0=1.0, train="full", distill=1.0, mask=True, rate_weight=5.0),
    "mask-drop": Recipe("mask-drop", sigma0=1.0, train="full", distill=1.0, mask=True, drop=1.0, rate_weight=5.0),
    "mask-drop-s0": Recipe("mask-drop-s0", sigma0=0.0, train="full", distill=1.0, mask=True, drop=1.0, rate_weight=5.0),
    "mask-heads": Recipe("mask-heads", sigma0=1.0, mask=True, rate_weight=5.0),
    "official-drop": Recipe("official-drop", form="softmax", sigma0=0.02, train="full", distill=1.0, drop=1.0),
}


# --------------------------------------------------------------------------- fine-tuning
def finetune(
    base: torch.nn.Module,
    recipe: Recipe,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    seed: int = 0,
    log=print,
) -> tuple[TNTModel, dict]:
    """Fine-tune a copy of `base` with TNT noise per `recipe`; returns the TNT model (eval mode) and stats."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    vit = copy.deepcopy(base)
    teacher = base.eval() if recipe.distill else None
    depth = len(vit.blocks)
    noise = recipe.noise_config()
    noise = replace(noise, blocks=tuple(b for b in noise.blocks if b < depth))
    model = attach_tnt(vit, [b for b in HEAD_BLOCKS if b < depth], noise=noise)
    full = recipe.train == "full"
    model.vit.requires_grad_(full)
    groups = [{"params": list(model.heads.parameters()), "lr": recipe.lr_heads, "weight_decay": 0.0}]
    if full:
        groups.append({"params": [p for p in model.vit.parameters()], "lr": recipe.lr_backbone, "weight_decay": 0.05})
    for g in groups:
        g["base_lr"] = g["lr"]
    opt = torch.optim.AdamW(groups)
    pad = 2 if x.shape[-1] <= 32 else 4
    timer = Timer()
    warmup = max(1, recipe.steps // 10)
    log_every = max(1, recipe.steps // 5)
    for step in range(recipe.steps):
        idx = torch.randint(0, len(x), (recipe.batch,), generator=gen)
        xb = normalise(augment(x[idx], gen, pad=pad))
        yb = y[idx]
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, recipe.steps, warmup, g["base_lr"])
        teacher_logits = None
        if teacher is not None:
            with torch.no_grad():
                teacher_logits = teacher(xb)
        model.train()
        logits = forward_masked(model, xb) if recipe.mask else model(xb)
        loss = _task_loss(logits, yb, teacher_logits, recipe)
        loss = loss + recipe.rate_weight * model.rate_loss()
        if recipe.drop:
            keep = recipe.drop_keeps[int(torch.randint(0, len(recipe.drop_keeps), (1,), generator=gen))]
            model.eval()  # eval mode = hard top-k pruning by the current heads; gradients still flow to the backbone
            model.set_schedule(Schedule((PRUNE_BLOCK,), (keep,)))
            loss = loss + recipe.drop * _task_loss(model(xb), yb, teacher_logits, recipe)
            model.set_schedule(Schedule())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % log_every == 0:
            alphas = {b: round(float(a), 3) for b, a in model.last_stats.mean_alpha.items()}
            log(
                f"  [{recipe.name}] step {step + 1}/{recipe.steps} loss {loss.item():.3f} "
                f"alpha {alphas} ({timer():.0f}s)"
            )
    model.eval()
    return model, {"train_s": timer()}


def forward_masked(model: TNTModel, x: torch.Tensor) -> torch.Tensor:
    """Training forward with TNT noise plus a soft removal: from PRUNE_BLOCK on, patch keys get log(alpha).

    alpha = sigmoid(score) at PRUNE_BLOCK. As alpha -> 0 the token disappears from every later attention (the
    class token reads the output only through attention), so the heads learn what removal costs, not what
    noise costs; the rate penalty keeps the mean alpha at the target keep rate.
    """
    from tnt_cli.engine.noise import TrainingStats, add_relevance_noise, rate_penalty, relevance_alpha

    noise = model.noise
    p = model.num_prefix_tokens
    x = model.embed(x)
    stats = TrainingStats()
    bias = None
    for i, blk in enumerate(model.vit.blocks):
        x = blk(x) if bias is None else blk(x, attn_mask=bias)
        if i in noise.blocks or i == PRUNE_BLOCK:
            prefix, patches = x[:, :p], x[:, p:]
            scores = model.relevance_scores(i, patches).float()
            alpha = relevance_alpha(scores, noise.form)
            if i == PRUNE_BLOCK:
                soft = torch.sigmoid(scores)
                stats.rate_penalties.append(rate_penalty(soft, noise.target_rate))
                log_alpha = F.logsigmoid(scores)
                bias = torch.cat([log_alpha.new_zeros(x.shape[0], p), log_alpha], dim=1)[:, None, None, :].to(x.dtype)
            elif noise.form == "sigmoid":
                stats.rate_penalties.append(rate_penalty(alpha, noise.target_rate))
            stats.mean_alpha[i] = alpha.detach().mean()
            if i in noise.blocks and noise.sigma0 > 0:
                patches = add_relevance_noise(patches, alpha, noise.sigma0, noise.variant)
                x = torch.cat([prefix, patches], dim=1)
    model.last_stats = stats
    return model.vit.forward_head(model.vit.norm(x))


def _task_loss(logits, labels, teacher_logits, recipe: Recipe) -> torch.Tensor:
    loss = F.cross_entropy(logits, labels, label_smoothing=recipe.smoothing)
    if teacher_logits is not None and recipe.distill:
        kl = F.kl_div(logits.log_softmax(-1), teacher_logits.log_softmax(-1), log_target=True, reduction="batchmean")
        loss = loss + recipe.distill * kl
    return loss


# --------------------------------------------------------------------------- evaluation
def schedules() -> list[tuple[str, Schedule]]:
    out = [(f"b{PRUNE_BLOCK} keep {k:g}", Schedule((PRUNE_BLOCK,), (k,))) for k in KEEPS]
    blocks = MULTI[0]
    for rates in MULTI[1:]:
        out.append((" + ".join(f"b{b} keep {k:g}" for b, k in zip(blocks, rates)), Schedule(blocks, rates)))
    return out


@torch.no_grad()
def accuracy(module, x: torch.Tensor, y: torch.Tensor, setup=None, batch: int = 1000) -> float:
    module.eval()
    correct = 0
    for i in range(0, len(x), batch):
        if setup is not None:
            setup.begin_batch(i)
        correct += (module(normalise(x[i : i + batch])).argmax(-1) == y[i : i + batch]).sum().item()
    return 100.0 * correct / len(x)


def evaluate_methods(
    model: TNTModel, x: torch.Tensor, y: torch.Tensor, methods=("tnt", "random", "cls-attn", "tome"), *, seed=0
) -> list[dict]:
    """Accuracy of each method at each schedule (plus dense) on (x, y); GMACs from the eval engineer's counter."""
    from tnt_cli.eval.baselines import apply_method

    rows = []
    with apply_method(model, "dense") as setup:
        rows.append(
            {
                "method": "dense",
                "schedule": "dense",
                "keep": 1.0,
                "gmacs": setup.gmacs,
                "top1": accuracy(setup.module, x, y, setup),
            }
        )
    for sched_name, sched in schedules():
        for method in methods:
            with apply_method(model, method, sched, seed=seed) as setup:
                acc = accuracy(setup.module, x, y, setup)
                row = {
                    "method": method,
                    "schedule": sched_name,
                    "keep": _final_keep(sched),
                    "gmacs": setup.gmacs,
                    "top1": acc,
                }
                if method == "tome":
                    row["tome_r"] = setup.tome_r
                rows.append(row)
    return rows


def _final_keep(s: Schedule) -> float:
    k = 1.0
    for r in s.keep_rates:
        k *= r
    return round(k, 4)


# --------------------------------------------------------------------------- driver
def run_recipe(bench: str, recipe: Recipe, *, seed: int = 0, train_limit: int | None = None, log=print) -> list[dict]:
    from train_base import load_base

    base, _ = load_base(bench)
    xtr, ytr = load_split(bench, "train", limit=train_limit)
    xte, yte = load_split(bench, "test")
    model, stats = finetune(base, recipe, xtr, ytr, seed=seed, log=log)
    rows = []
    timer = Timer()
    full = recipe.train == "full"
    methods = ("tnt", "random", "cls-attn") if full else ("tnt",)
    for row in evaluate_methods(model, xte, yte, methods, seed=seed):
        backbone = "tuned" if full else "base"
        rows.append(
            {
                "bench": bench,
                "recipe": recipe.name,
                "backbone": backbone,
                "seed": seed,
                **row,
                "train_s": round(stats["train_s"], 1),
                "desc": recipe.describe(),
            }
        )
    log(f"  [{recipe.name}] evaluated in {timer():.0f}s")
    return rows


FIELDS = [
    "bench",
    "recipe",
    "desc",
    "backbone",
    "seed",
    "method",
    "schedule",
    "keep",
    "gmacs",
    "top1",
    "tome_r",
    "train_s",
]


def append_rows(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with path.open("a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS, extrasaction="ignore")
        if new:
            w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.4f}" if isinstance(v, float) and k == "gmacs" else v) for k, v in r.items()})


def summarize(rows: list[dict]) -> str:
    """One line per schedule: TNT vs each baseline."""
    by = {}
    for r in rows:
        by.setdefault(r["schedule"], {})[r["method"]] = r["top1"]
    lines = []
    for s, m in by.items():
        lines.append(f"    {s:28s} " + "  ".join(f"{k} {v:5.2f}" for k, v in m.items()))
    return "\n".join(lines)


def run_base_baselines(bench: str, *, seed: int = 0) -> list[dict]:
    """random / cls-attn / tome on the untouched base model (they need no training)."""
    from train_base import load_base

    base, _ = load_base(bench)
    xte, yte = load_split(bench, "test")
    model = attach_tnt(base, HEAD_BLOCKS).eval()
    rows = evaluate_methods(model, xte, yte, ("random", "cls-attn", "tome"), seed=seed)
    return [
        {"bench": bench, "recipe": "baselines", "backbone": "base", "seed": seed, **r, "desc": "training-free"}
        for r in rows
    ]


def summary_markdown(paths: list[Path]) -> str:
    """A recipe x schedule table of TNT accuracy (plus baselines) from study / pipeline CSVs."""
    rows = []
    for path in paths:
        with path.open() as fh:
            rows += list(csv.DictReader(fh))
    scheds = [name for name, _ in schedules()]
    out = []
    for bench in dict.fromkeys(r["bench"] for r in rows):
        sub = [r for r in rows if r["bench"] == bench]
        out += [f"### {bench}", "", "| recipe | settings | dense | " + " | ".join(scheds) + " |"]
        out.append("|---|---|---|" + "---|" * len(scheds))
        keys = dict.fromkeys((r.get("recipe", ""), r["method"]) for r in sub)
        for recipe, method in keys:
            cells = {r["schedule"]: r for r in sub if r.get("recipe", "") == recipe and r["method"] == method}
            if method == "dense" or not cells:
                continue
            dense = next((r for r in sub if r.get("recipe", "") == recipe and r["method"] == "dense"), None)
            label = f"{recipe} / {method}" if method != "tnt" else recipe
            desc = next(iter(cells.values())).get("desc", "")
            vals = [f"{float(cells[s]['top1']):.2f}" if s in cells else "" for s in scheds]
            out.append(f"| {label} | {desc} | {float(dense['top1']):.2f} | " if dense else f"| {label} | {desc} | | ")
            out[-1] += " | ".join(vals) + " |"
        out.append("")
    return "\n".join(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", default="fashion-mnist")
    ap.add_argument("--recipes", default="official,sigmoid")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], help="override a recipe field, e.g. --set sigma0=0.5")
    ap.add_argument("--tag", default="", help="suffix for the recipe name in the CSV")
    ap.add_argument("--out", default=None)
    ap.add_argument("--summary", nargs="+", type=Path, help="print a Markdown table from these CSVs and exit")
    args = ap.parse_args(argv)
    if args.summary:
        print(summary_markdown(args.summary))
        return
    set_threads(args.threads)
    out = Path(args.out) if args.out else RESULTS / "study" / f"study-{args.bench}.csv"
    for name in args.recipes.split(","):
        if name == "baselines":
            rows = run_base_baselines(args.bench, seed=args.seed)
            append_rows(out, rows)
            print(summarize(rows), flush=True)
            continue
        recipe = RECIPES[name]
        overrides = {}
        for item in args.set:
            k, v = item.split("=", 1)
            cur = getattr(recipe, k)
            if isinstance(cur, tuple):
                overrides[k] = tuple(type(cur[0])(t) if cur else float(t) for t in v.split(":"))
            else:
                overrides[k] = type(cur)(v)
        if args.steps:
            overrides["steps"] = args.steps
        if args.tag:
            overrides["name"] = recipe.name + args.tag
        recipe = replace(recipe, **overrides)
        print(f"== {args.bench} / {recipe.name}: {recipe.describe()}", flush=True)
        rows = run_recipe(args.bench, recipe, seed=args.seed)
        append_rows(out, rows)
        print(summarize(rows), flush=True)


if __name__ == "__main__":
    main()
