"""Which timm ViT a bare state dict belongs to, and how TNT's own tensors inside it map to relevance heads.

A `.pth` carries no architecture. For ViT/DeiT state dicts we read it from tensor shapes: width and patch size
(patch embedding), depth (block count), prefix tokens (cls / dist / register tokens), input size (position
table), classes (head), MLP ratio, qkv bias, LayerScale, fc_norm. The one thing shapes cannot tell is the number
of attention heads: we use the DeiT/ViT convention of 64 channels per head (Ti 192/3, S 384/6, B 768/12,
L 1024/16) and ask for `arch` otherwise.

Official TNT checkpoints (github.com/mx-ethan-rao/tnt) are DeiT state dicts plus `alpha_heads.{i}` (one
Linear(D, 1) per block; head i scores the raw output of block i, with no normalisation at deployment) and
`alpha_norm` (a LayerNorm used only while training). The official code trains heads 0-4 only and prunes only
there, so those become TNT heads at blocks 0-4 (head_norm off); the untrained rest and alpha_norm are dropped.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tnt_cli.errors import TntError

if TYPE_CHECKING:
    import torch

HEAD_DIM = 64
OFFICIAL_TRAINED_HEADS = 5  # the official code adds noise (and so trains heads) after blocks 0-4 only
DEIT_SIZES = {192: "tiny", 384: "small", 768: "base"}


@dataclass
class SplitState:
    """A checkpoint split into the backbone's tensors and TNT heads (keyed by block)."""

    backbone: dict[str, torch.Tensor]
    heads: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    layout: str = "timm"  # "timm" (no heads), "official" (alpha_heads), "tnt" (heads.* / vit.*)
    dropped: list[str] = field(default_factory=list)


def split_checkpoint(state: dict[str, torch.Tensor]) -> SplitState:
    """Separate backbone keys from TNT heads, recognising the official and tnt layouts."""
    if any(k.startswith("alpha_heads.") for k in state):
        return _split_official(state)
    heads = _group_heads(state, "heads.")
    head_keys = {f"heads.{b}.{name}" for b, tensors in heads.items() for name in tensors}
    if any(k.startswith("vit.") for k in state):  # torch.save(tnt_model.state_dict())
        backbone = {k[len("vit.") :]: v for k, v in state.items() if k.startswith("vit.")}
    else:  # a tnt directory's backbone plus its heads file
        backbone = {k: v for k, v in state.items() if k not in head_keys}
    return SplitState(backbone, heads, layout="tnt" if heads else "timm")


def _split_official(state: dict[str, torch.Tensor]) -> SplitState:
    all_heads = _group_heads(state, "alpha_heads.")
    heads = {b: h for b, h in all_heads.items() if b < OFFICIAL_TRAINED_HEADS}
    backbone = {k: v for k, v in state.items() if not k.startswith(("alpha_heads.", "alpha_norm."))}
    dropped = sorted({k.split(".")[0] for k in state if k.startswith("alpha_norm.")})
    dropped += [f"alpha_heads.{b}" for b in sorted(set(all_heads) - set(heads))]
    return SplitState(backbone, heads, layout="official", dropped=dropped)


def _group_heads(state: dict[str, torch.Tensor], prefix: str) -> dict[int, dict[str, torch.Tensor]]:
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)\.(weight|bias)$")
    heads: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        match = pattern.match(key)
        if match:
            heads.setdefault(int(match.group(1)), {})[match.group(2)] = value
    return heads


def check_head_widths(heads: dict[int, dict[str, torch.Tensor]], width: int, where: str) -> None:
    """Each head must be Linear(width, 1): refuse heads made for another backbone."""
    for block, tensors in sorted(heads.items()):
        weight = tensors.get("weight")
        bias = tensors.get("bias")
        if weight is None or bias is None:
            raise TntError(f"{where}: relevance head at block {block} is incomplete (needs weight and bias)")
        if tuple(weight.shape) != (1, width) or tuple(bias.shape) != (1,):
            raise TntError(
                f"{where}: relevance head at block {block} has shape {tuple(weight.shape)} but the backbone's "
                f"width is {width} (expected (1, {width})): the heads belong to another model"
            )


def infer_vit(state: dict[str, torch.Tensor], where: str) -> tuple[str, dict]:
    """(timm entry point, model_args) rebuilding the ViT/DeiT whose state dict this is."""
    proj = state.get("patch_embed.proj.weight")
    if proj is None or proj.ndim != 4:
        raise TntError(
            f"{where} is not a ViT/DeiT state dict (no patch_embed.proj.weight): tnt supports timm "
            "VisionTransformer models (if the keys are timm's, give the architecture: arch= in the Python API)"
        )
    width, in_chans, ph, pw = (int(s) for s in proj.shape)
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"^blocks\.(\d+)\.", k))}
    if not blocks:
        raise TntError(f"{where} has no transformer blocks (blocks.N.*)")
    depth = max(blocks) + 1
    if width % HEAD_DIM:
        raise TntError(
            f"{where}: cannot tell the number of attention heads for width {width} (not a multiple of {HEAD_DIM}): "
            "put a timm config.json beside it (timm's save_for_hf layout), or give the architecture (arch= in the "
            "Python API)"
        )
    distilled = "dist_token" in state
    has_cls = "cls_token" in state
    registers = int(state["reg_token"].shape[1]) if "reg_token" in state else 0
    prefix = int(has_cls) + int(distilled) + registers
    pos = state.get("pos_embed")
    if pos is None:
        raise TntError(f"{where} has no pos_embed: give the architecture (arch= in the Python API)")
    n_pos = int(pos.shape[1])
    grid, no_embed_class = _grid(n_pos, prefix)
    if grid is None:
        raise TntError(f"{where}: position table of {n_pos} entries is not a square patch grid plus prefix tokens")
    args: dict = {
        "img_size": grid * ph,
        "patch_size": ph if ph == pw else (ph, pw),
        "in_chans": in_chans,
        "embed_dim": width,
        "depth": depth,
        "num_heads": width // HEAD_DIM,
        "num_classes": int(state["head.weight"].shape[0]) if "head.weight" in state else 0,
        "qkv_bias": "blocks.0.attn.qkv.bias" in state,
        "class_token": has_cls,
    }
    fc1 = state.get("blocks.0.mlp.fc1.weight")
    if fc1 is not None:
        args["mlp_ratio"] = int(fc1.shape[0]) / width
    if registers:
        args["reg_tokens"] = registers
    if no_embed_class:
        args["no_embed_class"] = True
    if "blocks.0.ls1.gamma" in state:
        args["init_values"] = 1e-5  # any value: the loaded gamma replaces it
    if "fc_norm.weight" in state or not has_cls:
        args["global_pool"] = "avg"
    if "fc_norm.weight" in state:
        args["fc_norm"] = True
    if "norm_pre.weight" in state:
        args["pre_norm"] = True
    if "blocks.0.attn.q_norm.weight" in state:
        args["qk_norm"] = True
    return _entry_point(args, distilled), args


def _grid(n_pos: int, prefix: int) -> tuple[int | None, bool]:
    for n, no_embed_class in ((n_pos - prefix, False), (n_pos, True)):
        side = math.isqrt(max(n, 0))
        if n > 0 and side * side == n:
            return side, no_embed_class
    return None, False


def _entry_point(args: dict, distilled: bool) -> str:
    """A DeiT entry point (official TNT checkpoints are DeiTs): its pretrained_cfg gives the right transforms."""
    size = DEIT_SIZES.get(args["embed_dim"], "base")
    img = 384 if args["img_size"] == 384 and size == "base" else 224
    kind = "_distilled" if distilled else ""
    return f"deit_{size}{kind}_patch16_{img}"
