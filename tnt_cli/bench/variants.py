"""The models a benchmark compares, all sharing one set of weights.

`dense` is the plain timm model (what users would deploy without TNT), so the measured speedup includes every
cost TNT adds: the block-by-block forward, scoring, top-k, gather and concatenation. `tnt_dense` is the same
TNT model at keep 1.0 (nothing pruned), which isolates that overhead (quality bar: at most 2% slower).
Peers (`--methods`: the baselines) run through `tnt_cli.methods.apply.apply_method`, at the GMACs closest to
TNT's schedule, on views that share the same backbone.
"""

from __future__ import annotations

from contextlib import ExitStack

from torch import nn

from tnt_cli.engine import Schedule, TNTModel
from tnt_cli.methods.registry import REFERENCE, REGISTRY

# The variants: the plain timm model, TNT at keep 1.0, TNT at its schedule; peers are named by their method.
DENSE, TNT_DENSE, PRUNED = "dense", "tnt_dense", "pruned"
LABELS = {
    DENSE: "dense (timm)",
    TNT_DENSE: "TNT keep 1.0",
    PRUNED: "pruned (TNT)",
    **{m.name: m.label for m in REGISTRY if m.reduces},
}

# Used when neither the flags nor the model give a pruning schedule: the paper's single-layer DeiT-S schedule.
DEFAULT_SCHEDULE = Schedule(prune_layers=(2,), keep_rates=(0.6,), sim_prune=25)


def keep_all(schedule: Schedule) -> Schedule:
    """The same prune layers at keep 1.0 and no similarity pruning: TNT's forward with nothing dropped."""
    return Schedule(prune_layers=schedule.prune_layers, keep_rates=(1.0,) * len(schedule.prune_layers))


def with_schedule(model: TNTModel, schedule: Schedule) -> TNTModel:
    """A second TNTModel over the same backbone and heads (no copies), running another schedule."""
    view = TNTModel(model.vit, model.head_blocks, noise=model.noise, head_norm=model.head_norm)
    view.heads = model.heads
    view.scorer = model.scorer
    view.set_schedule(schedule)
    return view.eval()


def build_variants(model: TNTModel, *, tnt_dense: bool = True) -> dict[str, nn.Module]:
    """name -> module, in timing order; the model's own schedule is the pruned one."""
    variants: dict[str, nn.Module] = {DENSE: model.vit.eval()}
    if tnt_dense:
        variants[TNT_DENSE] = with_schedule(model, keep_all(model.schedule))
    variants[PRUNED] = model.eval()
    return variants


def add_peers(
    model: TNTModel, variants: dict[str, nn.Module], methods: tuple[str, ...], stack: ExitStack
) -> dict[str, dict]:
    """Add each peer method at TNT's GMACs to `variants` (kept configured until `stack` closes); their compute."""
    from tnt_cli.methods.apply import apply_method

    info = {}
    for method in methods:
        if method == REFERENCE:  # TNT itself is the pruned variant
            continue
        view = with_schedule(model, model.schedule)  # the peer's scorer / schedule never touch the TNT model
        setup = stack.enter_context(apply_method(view, method, model.schedule))
        variants[method] = setup.module.eval()
        info[method] = {"gmacs": setup.gmacs, "config": setup.describe()}
    return info
