"""A timm ViT block split open between attention and MLP, where ToMe merges and EViT prunes, and its MACs.

`attention` re-runs timm's `Attention.forward` (qkv, q/k norms, fused or explicit attention, scale norm, gate,
projection) but also returns q and k, which ToMe matches on and EViT scores with. The MAC counts are
`tnt_cli.engine.gmacs`'s (fvcore's rules) with the block cut in two (`attention_macs`, `mlp_macs`), so attention
and MLP can run on different token counts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tnt_cli.engine.gmacs import attention_inner_dim, attention_macs, embed_macs, head_macs, mlp_macs
from tnt_cli.errors import TntError

_BLOCK_PARTS = ("norm1", "attn", "ls1", "drop_path1", "norm2", "mlp", "ls2", "drop_path2")
_ATTN_PARTS = ("qkv", "q_norm", "k_norm", "attn_drop", "norm", "proj", "proj_drop", "num_heads", "head_dim")


def check_blocks(vit: nn.Module, method: str) -> None:
    """Refuse blocks that are not timm's pre-norm `Block` with standard `Attention` (one line, says why)."""
    for i, block in enumerate(vit.blocks):
        attn = getattr(block, "attn", None)
        if (
            any(not hasattr(block, name) for name in _BLOCK_PARTS)
            or any(not hasattr(attn, name) for name in _ATTN_PARTS)
            or not isinstance(attn.qkv, nn.Linear)
        ):
            raise TntError(
                f"{method} needs timm's standard ViT blocks (norm1, attn.qkv, ls1, norm2, mlp, ls2); "
                f"block {i} is a {type(block).__name__} with {type(attn).__name__}"
            )


def attention(
    attn: nn.Module, y: torch.Tensor, bias: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """timm's attention on normed tokens y (B, T, D) -> (output (B, T, D), q, k (B, H, T, hd)).

    `bias` (B, T) is added to every query's logits for each key (ToMe's log(size)).
    """
    b, t, _ = y.shape
    heads, head_dim = attn.num_heads, attn.head_dim
    gate = attn.gate(y).sigmoid() if getattr(attn, "gate", None) is not None else None
    q, k, v = attn.qkv(y).reshape(b, t, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    mask = None if bias is None else bias[:, None, None, :].to(q.dtype)
    if getattr(attn, "fused_attn", True):
        p = attn.attn_drop.p if attn.training else 0.0
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
    else:
        logits = (q * attn.scale) @ k.transpose(-2, -1)
        if mask is not None:
            logits = logits + mask
        x = attn.attn_drop(logits.softmax(dim=-1)) @ v
    x = attn.norm(x.transpose(1, 2).reshape(b, t, heads * head_dim))
    if gate is not None:
        x = x * gate
    return attn.proj_drop(attn.proj(x)), q, k


def attention_residual(block: nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None):
    """x + drop_path1(ls1(attn(norm1(x)))), plus the normed input, q and k."""
    y = block.norm1(x)
    out, q, k = attention(block.attn, y, bias)
    return x + block.drop_path1(block.ls1(out)), y, q, k


def mlp_residual(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))


def cls_attention(attn: nn.Module, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The class token's attention to every token, averaged over heads: (B, T), each row sums to 1.

    The same softmax(q k^T * scale) row the block's attention used (computed again for the one query, so the
    block keeps its fused kernel).
    """
    logits = (q[:, :, :1] * attn.scale) @ k.transpose(-2, -1)  # (B, H, 1, T)
    return logits.softmax(dim=-1).mean(dim=1)[:, 0]


# --------------------------------------------------------------------------- MACs
class BlockCosts:
    """Per-block MAC coefficients, so the matching searches cost thousands of plans in microseconds.

    attention(T) = a * T + 2 * inner * T^2 and mlp(T) = m * T, exactly `attention_macs` / `mlp_macs`.
    """

    def __init__(self, vit: nn.Module) -> None:
        dim = int(vit.embed_dim)
        self.vit = vit
        self.inner = [attention_inner_dim(b, dim) for b in vit.blocks]
        self.head_dim = [int(b.attn.head_dim) for b in vit.blocks]
        self.attn_lin = [attention_macs(b, 1, dim) - 2 * i for b, i in zip(vit.blocks, self.inner)]
        self.mlp_lin = [mlp_macs(b, 1, dim) for b in vit.blocks]
        self.embed = embed_macs(vit)
        self.dim = dim

    def attention(self, i: int, tokens: int) -> int:
        return self.attn_lin[i] * tokens + 2 * self.inner[i] * tokens * tokens

    def mlp(self, i: int, tokens: int) -> int:
        return self.mlp_lin[i] * tokens

    def head(self, tokens: int) -> int:
        return head_macs(self.vit, tokens)
