"""`tnt finetune`: train TNT relevance heads (or the whole ViT) with relevance noise, and write a model directory."""

from __future__ import annotations

from dataclasses import fields
from typing import Annotated

import typer

from tnt_cli.cli import options as o
from tnt_cli.recipes import DEFAULT_RECIPE, RECIPES
from tnt_cli.train.config import TrainConfig

_D = {f.name: f.default for f in fields(TrainConfig)}
_R = RECIPES[DEFAULT_RECIPE]
_O = RECIPES["official"]
_FROM_RECIPE = "Default: the recipe's"
NOISE = "Noise"
OPTIM = "Optimisation"
AUG = "Augmentation"
RUN = "Run"
EVAL = "Evaluation"


def _opt(*names: str, help: str, panel: str, **kw):
    return typer.Option(*names, help=help, rich_help_panel=panel, **kw)


def finetune(
    model: o.ModelArg,
    data: Annotated[
        str,
        _opt(
            "--data",
            help="ImageFolder root (train/ and val/ class folders), fashion-mnist or cluttered-fashion-mnist.",
            panel=RUN,
            show_default=False,
        ),
    ],
    out: Annotated[
        str,
        _opt(
            "--out",
            "-o",
            help="Output directory (the model directory, its log and checkpoint).",
            panel=RUN,
            show_default=False,
        ),
    ],
    recipe: Annotated[
        str,
        _opt(
            "--recipe",
            help=f"Defaults for noise, training mode, distillation and the pruning pass: {DEFAULT_RECIPE} (the "
            f"study's sigmoid-drop: {_R.summary}) or official ({_O.summary}). Explicit flags override it.",
            panel=RUN,
        ),
    ] = _D["recipe"],
    method: Annotated[
        str,
        _opt(
            "--method",
            help="What to fine-tune: tnt, or a baseline trained the same way (same recipe, steps, distillation) "
            "with its own reducer in the pruning pass: random (random drop), evit (CLS-attention top-k inside the "
            "block; cls-attn is accepted), evit-fuse (EViT with the dropped tokens fused into one), tome (token "
            "merging in every block). OUT records it; evaluate, prune, calibrate and benchmark run it by default.",
            panel=RUN,
        ),
    ] = _D["method"],
    reducer: Annotated[
        str,
        _opt(
            "--reducer",
            help="tnt: what happens to the tokens the heads do not keep, in the pruning pass and in OUT's "
            "schedule: drop (the paper), merge (into their most similar kept token) or fuse (into one token).",
            panel=RUN,
        ),
    ] = _D["reducer"],
    noise_trains: Annotated[
        str,
        _opt(
            "--noise-trains",
            help="tnt: what the noisy pass trains: all (heads and backbone) or heads (the backbone then learns only "
            "from the pruning pass, never from noise it will not see when deployed).",
            panel=NOISE,
        ),
    ] = _D["noise_trains"],
    train: Annotated[
        str | None,
        _opt(
            "--train",
            help=f"heads: relevance heads only, backbone frozen; full: everything. {_FROM_RECIPE} "
            f"({_R.train}; official: {_O.train}).",
            panel=RUN,
            show_default=False,
        ),
    ] = None,
    split: Annotated[str, _opt("--split", help="Training split.", panel=RUN)] = _D["split"],
    epochs: Annotated[int, _opt("--epochs", help="Epochs.", panel=OPTIM)] = _D["epochs"],
    max_steps: Annotated[
        int | None,
        _opt(
            "--max-steps",
            help="Stop after N optimizer steps (the lr schedule is fitted to N): for short runs.",
            panel=OPTIM,
        ),
    ] = None,
    batch_size: Annotated[
        int, _opt("--batch-size", "-b", help="Images per process per micro-batch.", panel=OPTIM)
    ] = _D["batch_size"],
    accum: Annotated[int, _opt("--accum", help="Gradient accumulation steps.", panel=OPTIM)] = _D["accum"],
    lr: Annotated[
        float | None,
        _opt(
            "--lr",
            help="Base lr at global batch 512; the lr used is scaled by global batch / 512. With --train full "
            "it is the backbone's (heads: x --head-lr-scale). Default: the recipe's, "
            f"{_R.lr['heads']:g} (heads), {_R.lr['full']:g} (full).",
            panel=OPTIM,
        ),
    ] = None,
    head_lr_scale: Annotated[
        float | None,
        _opt(
            "--head-lr-scale",
            help="--train full: the relevance heads (fresh layers) train at lr x this. "
            f"{_FROM_RECIPE} ({_R.head_lr_scale:g}).",
            panel=OPTIM,
        ),
    ] = None,
    min_lr: Annotated[float, _opt("--min-lr", help="Final lr of the cosine schedule.", panel=OPTIM)] = _D["min_lr"],
    weight_decay: Annotated[
        float, _opt("--weight-decay", help="AdamW weight decay (not on norms, biases, tokens).", panel=OPTIM)
    ] = _D["weight_decay"],
    warmup_epochs: Annotated[
        float, _opt("--warmup-epochs", help="Linear warmup length in epochs (at most half the run).", panel=OPTIM)
    ] = _D["warmup_epochs"],
    clip_grad: Annotated[
        float | None, _opt("--clip-grad", help="Clip the gradient norm to this value.", panel=OPTIM)
    ] = None,
    amp: Annotated[
        str, _opt("--amp", help="auto (bf16, else fp16, on CUDA; off on CPU), bf16, fp16 or off.", panel=OPTIM)
    ] = _D["amp"],
    compile: Annotated[bool, _opt("--compile", help="torch.compile the model.", panel=OPTIM)] = False,
    seed: Annotated[int, _opt("--seed", help="Seed for heads, data order, augmentation and noise.", panel=OPTIM)] = _D[
        "seed"
    ],
    noise_blocks: Annotated[
        str | None,
        _opt(
            "--noise-blocks",
            help="Blocks after which noise is added (and heads trained), e.g. 0,1,2,3,4. Default: the recipe's "
            "(0,1,2,3; official: 0-4).",
            panel=NOISE,
        ),
    ] = None,
    sigma0: Annotated[
        float | None,
        _opt(
            "--sigma0",
            help=f"Noise scale relative to each token's RMS. {_FROM_RECIPE} ({_R.sigma0:g}; official: {_O.sigma0:g}).",
            panel=NOISE,
        ),
    ] = None,
    noise_variant: Annotated[
        str | None,
        _opt(
            "--noise-variant",
            help=f"std: sigma0*(1-alpha); var: sigma0*sqrt(1-alpha). {_FROM_RECIPE} ({_R.variant}).",
            panel=NOISE,
        ),
    ] = None,
    relevance: Annotated[
        str | None,
        _opt(
            "--relevance",
            help=f"softmax (the paper) or sigmoid with a rate penalty. {_FROM_RECIPE} ({_R.relevance}; official: "
            f"{_O.relevance}).",
            panel=NOISE,
        ),
    ] = None,
    target_rate: Annotated[
        float | None,
        _opt(
            "--target-rate",
            help=f"sigmoid form: mean alpha the penalty pulls toward. {_FROM_RECIPE} ({_R.target_rate:g}).",
            panel=NOISE,
        ),
    ] = None,
    rate_weight: Annotated[
        float | None,
        _opt(
            "--rate-weight",
            help=f"Weight of the sigmoid rate penalty. {_FROM_RECIPE} ({_R.rate_weight:g}).",
            panel=NOISE,
        ),
    ] = None,
    distill: Annotated[
        bool | None,
        _opt(
            "--distill/--no-distill",
            help="Distil to the frozen dense model's logits. Default: the recipe's (on; official: off).",
            panel=NOISE,
            show_default=False,
        ),
    ] = None,
    distill_weight: Annotated[
        float | None,
        _opt(
            "--distill-weight",
            help=f"Weight of the KL term, ADDED to the task loss. {_FROM_RECIPE} ({_R.distill:g}).",
            panel=NOISE,
        ),
    ] = None,
    distill_temp: Annotated[float, _opt("--distill-temp", help="Distillation temperature.", panel=NOISE)] = _D[
        "distill_temp"
    ],
    drop_weight: Annotated[
        float | None,
        _opt(
            "--drop-weight",
            help="Weight of the hard-pruning pass (0: off): each step also runs the model pruned by the current heads "
            "at a keep rate from --drop-keeps and adds this x its loss, so the backbone learns to work from the "
            f"tokens TNT keeps. Needs --train full. {_FROM_RECIPE} ({_R.drop_weight:g}; official: {_O.drop_weight:g}).",
            panel=NOISE,
        ),
    ] = None,
    drop_keeps: Annotated[
        str | None,
        _opt(
            "--drop-keeps",
            help="Keep rates the pruning pass draws from, one per step (seeded). "
            f"{_FROM_RECIPE} ({','.join(f'{k:g}' for k in _R.drop_keeps)}).",
            panel=NOISE,
        ),
    ] = None,
    drop_block: Annotated[
        int | None,
        _opt(
            "--drop-block",
            help="Block after which the pruning pass prunes (needs a head). Default: the first noise block after "
            "block 0 that is not the last block (1 for the default noise blocks).",
            panel=NOISE,
        ),
    ] = None,
    crop_scale: Annotated[
        str, _opt("--crop-scale", help="Random resized crop area range, min,max.", panel=AUG)
    ] = ",".join(f"{v:g}" for v in _D["scale"]),
    hflip: Annotated[float, _opt("--hflip", help="Horizontal flip probability.", panel=AUG)] = _D["hflip"],
    randaugment: Annotated[
        str | None,
        _opt("--randaugment", help="timm RandAugment policy, e.g. rand-m9-mstd0.5-inc1 (off by default).", panel=AUG),
    ] = None,
    re_prob: Annotated[float, _opt("--re-prob", help="Random erasing probability.", panel=AUG)] = _D["re_prob"],
    mixup: Annotated[float, _opt("--mixup", help="Mixup alpha (0: off).", panel=AUG)] = _D["mixup"],
    cutmix: Annotated[float, _opt("--cutmix", help="CutMix alpha (0: off).", panel=AUG)] = _D["cutmix"],
    smoothing: Annotated[float, _opt("--smoothing", help="Label smoothing.", panel=AUG)] = _D["smoothing"],
    new_classes: Annotated[
        bool,
        _opt(
            "--new-classes",
            help="Train a new classifier for DATA's classes (needs --train full). Without it DATA's classes are "
            "matched to the model's by name, and classes the model lacks are refused.",
            panel=RUN,
        ),
    ] = False,
    limit: Annotated[int | None, _opt("--limit", help="Train on a seeded subset of N images.", panel=RUN)] = None,
    workers: Annotated[int, _opt("--workers", "-w", help="DataLoader worker processes.", panel=RUN)] = _D["workers"],
    device: Annotated[str, _opt("--device", help="auto, cpu or cuda.", panel=RUN)] = _D["device"],
    val_split: Annotated[str, _opt("--val-split", help="Split for the end-of-run evaluation.", panel=EVAL)] = _D[
        "val_split"
    ],
    eval_limit: Annotated[
        int | None,
        _opt("--eval-limit", help="Evaluate on a seeded subset of N images (0: skip evaluation).", panel=EVAL),
    ] = None,
    eval_batch_size: Annotated[
        int | None, _opt("--eval-batch-size", help="Evaluation batch size (default 2 x --batch-size).", panel=EVAL)
    ] = None,
    prune_layers: o.PruneLayers = None,
    keep_rates: o.KeepRates = None,
    log_every: Annotated[int, _opt("--log-every", help="Write metrics.jsonl every N steps.", panel=RUN)] = _D[
        "log_every"
    ],
    no_progress: Annotated[bool, _opt("--no-progress", help="No progress bar.", panel=RUN)] = False,
    keep_checkpoint: Annotated[
        bool, _opt("--keep-checkpoint", help="Keep OUT/checkpoint after a finished run.", panel=RUN)
    ] = False,
    resume: Annotated[bool, _opt("--resume", help="Continue OUT's checkpoint (same settings).", panel=RUN)] = False,
    overwrite: Annotated[bool, _opt("--overwrite", help="Replace an existing OUT.", panel=RUN)] = False,
    push_to_hub: Annotated[
        str | None, _opt("--push-to-hub", help="Upload OUT to this Hub repo when done.", panel=RUN)
    ] = None,
    offline: o.Offline = False,
    json_out: o.JsonOut = False,
) -> None:
    """Fine-tune MODEL with Training Noise Tokens and write a tnt model directory to OUT.

    The default recipe (the study's pick) trains the whole model with sigmoid relevance noise (sigma0 1, target
    rate 0.3), distillation to the frozen dense model, and a hard-pruning pass at random keep rates.
    --recipe official reproduces the paper: softmax relevance, sigma0 0.02, relevance heads only (backbone
    frozen, bit-identical), no distillation, no pruning pass. Any explicit flag overrides the recipe; the
    resolved settings are recorded in OUT/config.json. The lr is scaled by global batch / 512; a checkpoint is
    written every epoch and on Ctrl-C; metrics go to OUT/metrics.jsonl. At the end the dense and the pruned model
    (default: block 2, keep 0.5; or --prune-layers/--keep-rates) are evaluated on the val split.

    Examples:

      tnt finetune models/fmnist_vit --data fashion-mnist --out runs/fmnist_tnt --max-steps 300

      tnt finetune models/fmnist_vit --data fashion-mnist --out runs/fmnist_paper --recipe official --epochs 5

      tnt finetune models/fmnist_vit --data fashion-mnist --out runs/no_drop --drop-weight 0 --no-distill

      tnt finetune hf-hub:timm/deit_small_patch16_224.fb_in1k --data /data/imagenet --out runs/deit_s_tnt

      tnt finetune runs/base --data fashion-mnist --out runs/heads --train heads --max-steps 500

      torchrun --nproc_per_node=8 -m tnt_cli finetune deit_small_patch16_224 --data /data/imagenet --out runs/x

      tnt finetune models/fmnist_vit --data fashion-mnist --out runs/fmnist_tnt --epochs 5 --resume
    """
    o.apply_offline(offline)
    from tnt_cli.cli.output import print_json, stderr
    from tnt_cli.train.trainer import finetune as run_finetune

    cfg = TrainConfig(
        model=model,
        data=data,
        out=out,
        recipe=recipe,
        method=method,
        reducer=reducer,
        noise_trains=noise_trains,
        train=train,
        noise_blocks=o.parse_int_list(noise_blocks, "--noise-blocks") if noise_blocks is not None else None,
        sigma0=sigma0,
        noise_variant=noise_variant,
        relevance=relevance,
        target_rate=target_rate,
        rate_weight=rate_weight,
        distill=distill,
        distill_weight=distill_weight,
        distill_temp=distill_temp,
        drop_weight=drop_weight,
        drop_keeps=tuple(o.parse_float_list(drop_keeps, "--drop-keeps")) if drop_keeps is not None else None,
        drop_block=drop_block,
        head_lr_scale=head_lr_scale,
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        accum=accum,
        lr=lr,
        min_lr=min_lr,
        weight_decay=weight_decay,
        warmup_epochs=warmup_epochs,
        clip_grad=clip_grad,
        amp=amp,
        compile=compile,
        seed=seed,
        split=split,
        val_split=val_split,
        limit=limit,
        scale=_pair(crop_scale),
        hflip=hflip,
        auto_augment=randaugment,
        re_prob=re_prob,
        mixup=mixup,
        cutmix=cutmix,
        smoothing=smoothing,
        new_classes=new_classes,
        workers=workers,
        device=device,
        eval_limit=eval_limit,
        eval_batch_size=eval_batch_size,
        eval_prune_layers=o.parse_int_list(prune_layers, "--prune-layers") if prune_layers else None,
        eval_keep_rates=o.parse_float_list(keep_rates, "--keep-rates") if keep_rates else None,
        log_every=log_every,
        progress=not no_progress,
        keep_checkpoint=keep_checkpoint,
    )
    if (prune_layers is None) != (keep_rates is None):
        from tnt_cli.errors import ScheduleError

        raise ScheduleError("--prune-layers and --keep-rates go together: give both, with one keep rate per layer")
    summary = run_finetune(cfg, resume=resume, overwrite=overwrite, push_to_hub=push_to_hub, console=stderr)
    if summary is None:  # DDP ranks other than 0
        return
    if json_out:
        print_json(summary)
    else:
        render(summary)


def _pair(text: str) -> tuple[float, float]:
    values = o.parse_float_list(text, "--crop-scale")
    if len(values) != 2:
        from tnt_cli.errors import TntError

        raise TntError(f"--crop-scale takes two numbers min,max, got {text!r}")
    return values[0], values[1]


def _describe_recipe(summary: dict) -> str:
    s = summary.get("settings", {})
    parts = [
        f"{s.get('method', 'tnt')}",
        f"{summary.get('recipe')}",
        f"train {s.get('train')}",
        f"{s.get('relevance')} sigma0 {s.get('sigma0'):g}",
    ]
    if s.get("distill"):
        parts.append(f"distill x{s.get('distill_weight'):g}")
    if s.get("drop_block") is not None:
        parts.append(f"pruning pass x{s.get('drop_weight'):g} at block {s.get('drop_block')}")
    return ", ".join(parts)


def render(summary: dict) -> None:
    from rich.table import Table

    from tnt_cli.cli.output import stdout

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    rows = [
        ("output", summary["out"]),
        ("recipe", _describe_recipe(summary)),
        ("steps", f"{summary['steps']} ({summary['epochs']} epochs of {summary['steps_per_epoch']} steps)"),
        (
            "global batch",
            f"{summary['global_batch']} ({summary['batch_size']} x {summary['world_size']} proc x "
            f"{summary['accum']} accum)",
        ),
        ("lr", f"{summary['lr']:.3g} (= {summary['base_lr']:g} x {summary['global_batch']}/512)"),
        ("final loss", f"{summary['final_loss']:.4f}"),
    ]
    if summary.get("url"):
        rows.append(("pushed", summary["url"]))
    for key, value in rows:
        grid.add_row(key, value)
    stdout.print(grid)
    evaluation = summary.get("evaluation")
    if not evaluation:
        return
    table = Table(title=f"{evaluation['split']} ({evaluation['images']} images)")
    for col in ("model", "top-1", "top-5", "loss"):
        table.add_column(col, justify="right" if col != "model" else "left")
    for name, key in (("dense", "dense"), (f"pruned ({evaluation['schedule']})", "pruned")):
        r = evaluation[key]
        table.add_row(name, f"{100 * r['top1']:.2f}", f"{100 * r['top5']:.2f}", f"{r['loss']:.4f}")
    stdout.print(table)
