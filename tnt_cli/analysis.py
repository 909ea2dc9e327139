"""What a schedule costs and saves on a model: the numbers behind `tnt info` and model cards."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tnt_cli.engine import TNTModel


def describe_model(model: TNTModel) -> dict[str, Any]:
    """Architecture, sizes, token plan and GMACs dense vs pruned, as plain data."""
    from tnt_cli.engine import Schedule
    from tnt_cli.engine.gmacs import count_macs
    from tnt_cli.engine.schedule import plan_tokens

    vit = model.vit
    plan = model.plan
    dense_plan = plan_tokens(
        Schedule(), num_patches=model.num_patches, num_prefix=model.num_prefix_tokens, depth=model.depth
    )
    dense = count_macs(vit, dense_plan, head_norm=model.head_norm)
    pruned = count_macs(vit, plan, head_norm=model.head_norm)
    backbone_params = sum(p.numel() for p in vit.parameters())
    head_params = sum(p.numel() for p in model.heads.parameters())
    blocks = [
        {
            "block": i,
            "tokens": n,
            "patch_tokens": n - plan.num_prefix,
            "gmacs": macs / 1e9,
            "dense_gmacs": dense_macs / 1e9,
        }
        for i, (n, macs, dense_macs) in enumerate(zip(pruned.tokens_per_block, pruned.blocks, dense.blocks))
    ]
    return {
        "architecture": type(vit).__name__,
        "model_name": getattr(vit, "default_cfg", {}).get("architecture")
        or getattr(vit, "pretrained_cfg", {}).get("architecture"),
        "input_size": list(vit.patch_embed.img_size) if hasattr(vit.patch_embed, "img_size") else None,
        "patch_size": list(vit.patch_embed.patch_size),
        "embed_dim": int(vit.embed_dim),
        "depth": model.depth,
        "num_heads": int(vit.blocks[0].attn.num_heads) if hasattr(vit.blocks[0], "attn") else None,
        "num_classes": int(getattr(vit, "num_classes", 0)),
        "global_pool": getattr(vit, "global_pool", None),
        "params": backbone_params,
        "tnt_head_params": head_params,
        "prefix_tokens": model.num_prefix_tokens,
        "patch_tokens": model.num_patches,
        "head_blocks": list(model.head_blocks),
        "schedule": model.schedule.to_dict(),
        "schedule_text": model.schedule.describe(),
        "final_patch_tokens": plan.final_patches,
        "blocks": blocks,
        "gmacs_dense": dense.gmacs,
        "gmacs_pruned": pruned.gmacs,
        "gmacs_ratio": pruned.gmacs / dense.gmacs,
        "pruning_overhead_gmacs": pruned.pruning / 1e9,
    }
