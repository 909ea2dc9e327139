"""The names of the token-reduction methods, declared once (no torch import, so the CLI and configs can use it).

`tnt` is the paper's method; the baselines are `random`, `evit` (+ `evit-fuse`) and `tome`; `dense` reduces nothing.
`cls-attn`, the name of our first EViT-style scorer, is accepted for `evit`.
"""

from __future__ import annotations

METHODS = ("tnt", "random", "evit", "evit-fuse", "tome", "dense")
# The methods that reduce tokens, so can be fine-tuned (`tnt finetune --method`) and swept (`tnt calibrate`).
REDUCING_METHODS = tuple(m for m in METHODS if m != "dense")
ALIASES = {"cls-attn": "evit"}


def canonical(name: str) -> str:
    """A method name with its alias resolved (unknown names come back unchanged, for the caller to refuse)."""
    return ALIASES.get(name, name)
