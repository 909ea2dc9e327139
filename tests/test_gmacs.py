"""The analytic GMACs counter against torch's FlopCounterMode and the official TNT README numbers."""

from __future__ import annotations

import pytest
import timm
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from tnt_cli.engine import Schedule, attach_tnt, plan_tokens
from tnt_cli.engine.gmacs import count_macs


def measured_macs(module: torch.nn.Module, img_size: int = 224) -> int:
    """MACs torch counts for one image with math attention (FLOPs / 2), on the module's device."""
    device = next(module.parameters()).device
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        module(torch.randn(1, 3, img_size, img_size, device=device))
    return counter.get_total_flops() // 2


def dense_plan(model):
    return plan_tokens(Schedule(), num_patches=model.num_patches, num_prefix=model.num_prefix_tokens, depth=model.depth)


@pytest.fixture(scope="module")
def full_size():
    """Full-size models on the meta device: shapes without weights, so building and counting take milliseconds.

    FlopCounterMode counts from shapes, and running the TNT engine on meta tensors also shows it needs no
    data-dependent shapes.
    """
    cache = {}

    def get(name):
        if name not in cache:
            with torch.device("meta"):
                cache[name] = timm.create_model(name, pretrained=False).eval()
        return cache[name]

    return get


@pytest.mark.parametrize(
    ("name", "official"),
    [
        ("deit_tiny_patch16_224", 1.26),
        ("vit_small_patch16_224", 4.61),
        ("deit_small_distilled_patch16_224", 4.63),
    ],
)
def test_dense_count_matches_flop_counter_within_one_percent(full_size, name, official):
    vit = full_size(name)
    model = attach_tnt(vit)
    report = count_macs(vit, dense_plan(model))
    measured = measured_macs(vit)
    # the counter adds LayerNorms (fvcore convention) that FlopCounterMode ignores: small, but above zero
    assert report.total >= measured
    assert report.total == pytest.approx(measured, rel=0.01)
    assert round(report.gmacs, 2) == pytest.approx(official, abs=0.011)  # the numbers papers print
    assert sum(report.blocks) > 0.9 * report.total and len(report.blocks) == 12


@pytest.mark.parametrize(
    ("name", "schedule"),
    [
        ("deit_small_distilled_patch16_224", Schedule((2,), (0.6,), sim_prune=25)),
        ("deit_small_distilled_patch16_224", Schedule((3, 6, 9), (0.7, 0.7, 0.7), sim_prune=16)),
        ("deit_tiny_patch16_224", Schedule((1, 4), (0.5, 0.5))),
    ],
)
def test_pruned_count_matches_flop_counter_of_the_pruned_model(full_size, name, schedule):
    vit = full_size(name)
    model = attach_tnt(vit, schedule=schedule).to("meta").eval()  # the new heads join the meta backbone
    report = count_macs(vit, model.plan)
    measured = measured_macs(model)  # includes the heads and the similarity matmul as executed
    assert report.total == pytest.approx(measured, rel=0.01)
    dense = count_macs(vit, dense_plan(model))
    assert report.total < 0.9 * dense.total
    assert report.pruning > 0


def test_official_deit_small_distilled_schedule(full_size):
    """The official TNT README: DeiT-S-distilled 4.63 GMACs dense, 3.20 for block 2 / keep 0.6 / r 25."""
    model = attach_tnt(full_size("deit_small_distilled_patch16_224"), schedule=Schedule((2,), (0.6,), sim_prune=25))
    assert f"{count_macs(model.vit, dense_plan(model)).gmacs:.2f}" == "4.63"
    assert f"{count_macs(model.vit, model.plan).gmacs:.2f}" == "3.20"


def test_per_block_counts_shrink_with_the_tokens(tiny_vit):
    model = attach_tnt(tiny_vit("vit"), schedule=Schedule((1,), (0.5,)))
    report = count_macs(model.vit, model.plan)
    assert report.tokens_per_block == [65, 65, 33, 33]
    assert report.blocks[0] == report.blocks[1] > report.blocks[2] == report.blocks[3]
    # one block on n tokens, width d, mlp 4d: 12 n d^2 in Linears + 2 n^2 d in attention + 2 LayerNorms (5 n d)
    n, d = 33, 32
    assert report.blocks[2] == 12 * n * d * d + 2 * n * n * d + 2 * 5 * n * d


@pytest.mark.parametrize(
    ("name", "schedule"),
    [
        ("deit_small_patch16_224", Schedule((2,), (0.5,), reducer="merge")),
        ("deit_small_patch16_224", Schedule((2,), (0.3,), reducer="fuse")),
        ("deit_small_distilled_patch16_224", Schedule((2,), (0.6,), sim_prune=25, reducer="merge")),
        ("deit_small_distilled_patch16_224", Schedule((3, 6, 9), (0.7, 0.7, 0.7), sim_prune=16, reducer="fuse")),
        ("deit_tiny_patch16_224", Schedule((1, 4), (0.5, 0.5), reducer="merge")),
        ("deit_tiny_patch16_224", Schedule((1, 4, 7), (0.5, 0.5, 0.5), reducer="fuse")),
    ],
    ids=lambda v: v.describe() if isinstance(v, Schedule) else v,
)
def test_reducer_count_matches_flop_counter(full_size, name, schedule):
    """merge's similarity matrix and the extra fused token in later blocks are in the count, as executed."""
    vit = full_size(name)
    model = attach_tnt(vit, schedule=schedule).to("meta").eval()
    report = count_macs(vit, model.plan)
    measured = measured_macs(model)
    assert report.total == pytest.approx(measured, rel=0.01)
    drop = count_macs(vit, attach_tnt(vit, schedule=Schedule(**{**schedule.to_dict(), "reducer": "drop"})).plan)
    assert report.pruning > drop.pruning  # merging costs something on top of the heads


def test_merge_similarity_matrix_is_counted_exactly(tiny_vit):
    """64 patches, keep 0.25 at block 1: 48 left-out tokens against 16 kept ones, width 32."""
    drop = attach_tnt(tiny_vit("vit"), schedule=Schedule((1,), (0.25,)))
    merge = attach_tnt(tiny_vit("vit"), schedule=Schedule((1,), (0.25,), reducer="merge"))
    fuse = attach_tnt(tiny_vit("vit"), schedule=Schedule((1,), (0.25,), reducer="fuse"))
    base = count_macs(drop.vit, drop.plan)
    merged = count_macs(merge.vit, merge.plan)
    fused = count_macs(fuse.vit, fuse.plan)
    d = 32
    assert merged.pruning - base.pruning == 48 * 16 * d + 64 * d  # similarity matrix + weighted sums
    assert merged.blocks == base.blocks
    assert fused.pruning - base.pruning == 48 * d
    assert fused.tokens_per_block == [65, 65, 18, 18]
    assert fused.blocks[2] == 12 * 18 * d * d + 2 * 18 * 18 * d + 2 * 5 * 18 * d  # one more token in every block
