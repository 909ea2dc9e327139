"""TNT on a timm VisionTransformer: relevance heads, training noise and scheduled token pruning.

`TNTModel` holds the timm model untouched (same parameters, same state-dict keys) plus a small set of
relevance heads, and re-runs the timm forward block by block so it can act between blocks:
- training mode: nothing is dropped; patch tokens after each noise block get relevance-scaled noise;
- eval mode: after each scheduled block only the top patch tokens by relevance stay (static top-k + gather);
  the schedule's reducer drops the others, merges them into the kept ones or fuses them into one token.
Prefix tokens (class, distillation, registers) are never scored, noised or pruned and always come first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tnt_cli.engine.noise import (
    NoiseConfig,
    TrainingStats,
    add_relevance_noise,
    rate_penalty,
    relevance_alpha,
)
from tnt_cli.engine.reducers import fuse_tokens, merge_into_kept, size_bias, split_by_score, weighted_mean
from tnt_cli.engine.schedule import BEFORE_BLOCKS, Schedule, Stage, TokenPlan, plan_tokens
from tnt_cli.engine.tokens import gather_tokens, partition, similarity_keep_index, top_index
from tnt_cli.errors import ScheduleError, TntError

# A scorer ranks patch tokens at a stage: (model, block, block input, block output) -> scores (B, n_patches).
# The relevance heads are the default; baselines (random, CLS attention) plug in here.
Scorer = Callable[["TNTModel", int, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class StageTrace:
    """What one stage did, for visualisation: original patch positions kept, and the scores used.

    A kept token reports its own position (with merge it also holds the tokens merged into it); a fused token
    stands for no single patch and reports -1.
    """

    block: int
    kept_positions: torch.Tensor  # (B, n_out) indices into the original patch grid, -1: a fused token
    scores: torch.Tensor | None  # (B, n_in) scores of the tokens entering the stage, or None
    positions_in: torch.Tensor  # (B, n_in) original positions of the tokens entering the stage (-1: fused)


def check_supported(vit: nn.Module) -> None:
    """Refuse models the engine cannot run faithfully, with a message that says why."""
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(vit, VisionTransformer):
        raise TntError(
            f"{type(vit).__name__} is not supported: tnt works on timm VisionTransformer models "
            "(ViT, DeiT, distilled DeiT, ViTs with registers)"
        )


class TNTModel(nn.Module):
    """A timm ViT with TNT relevance heads and a deployment schedule."""

    def __init__(
        self,
        vit: nn.Module,
        head_blocks: Iterable[int] | None = None,
        *,
        noise: NoiseConfig | None = None,
        schedule: Schedule | None = None,
        head_norm: bool = True,
    ) -> None:
        super().__init__()
        check_supported(vit)
        self.vit = vit
        depth = len(vit.blocks)
        if head_blocks is None:  # as `attach_tnt`: heads on the noise blocks (default: NoiseConfig()'s) the model has
            head_blocks = [b for b in (noise or NoiseConfig()).blocks if b < depth]
        blocks = sorted({int(b) for b in head_blocks})
        for b in blocks:
            if not 0 <= b < depth:
                raise ScheduleError(f"head block {b} is out of range: this model has blocks 0-{depth - 1}")
        self.head_norm = head_norm
        self.heads = nn.ModuleDict({str(b): nn.Linear(vit.embed_dim, 1) for b in blocks})
        for head in self.heads.values():
            nn.init.normal_(head.weight, std=0.02)
            nn.init.zeros_(head.bias)
        reference = next(vit.parameters(), None)
        if reference is not None:  # heads live where the backbone lives
            self.heads.to(device=reference.device, dtype=reference.dtype)
        self.noise = noise or NoiseConfig(blocks=tuple(b for b in blocks if b in NoiseConfig().blocks))
        missing = [b for b in self.noise.blocks if str(b) not in self.heads]
        if missing:
            raise ScheduleError(f"noise blocks {missing} have no relevance head (heads at blocks {blocks})")
        self.noise_enabled = True
        self.scorer: Scorer | None = None
        self.last_stats = TrainingStats()
        self._plans: dict[int, TokenPlan] = {}
        self._partitions: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}
        self.schedule = Schedule()
        self.set_schedule(schedule or Schedule())
        self.train(vit.training)  # follow the wrapped model's mode, so eval models prune rather than noise

    # ----------------------------------------------------------------- introspection
    @property
    def num_prefix_tokens(self) -> int:
        return int(self.vit.num_prefix_tokens)

    @property
    def depth(self) -> int:
        return len(self.vit.blocks)

    @property
    def num_patches(self) -> int:
        return int(self.vit.patch_embed.num_patches)

    @property
    def head_blocks(self) -> tuple[int, ...]:
        return tuple(sorted(int(b) for b in self.heads))

    @property
    def plan(self) -> TokenPlan:
        """The token plan for the model's native input size."""
        return self._plan_for(self.num_patches)

    # timm's helpers (`timm.data.resolve_model_data_config`, validate.py) read these off the model: the backbone's,
    # so a wrapped 1x28x28 model is not taken for timm's 3x224x224 default
    @property
    def pretrained_cfg(self) -> dict:
        return getattr(self.vit, "pretrained_cfg", None) or {}

    @property
    def default_cfg(self) -> dict:
        return self.pretrained_cfg

    @property
    def num_classes(self) -> int:
        return int(self.vit.num_classes)

    def head_state_dict(self) -> dict[str, torch.Tensor]:
        """TNT's own tensors, kept apart from the backbone's so timm can load the backbone strictly."""
        return {f"heads.{k}": v for k, v in self.heads.state_dict().items()}

    # ----------------------------------------------------------------- schedule
    def set_schedule(self, schedule: Schedule) -> TNTModel:
        """Validate and install a deployment schedule; returns self for chaining."""
        if self.scorer is None:
            missing = [b for b in schedule.prune_layers if str(b) not in self.heads]
            if missing:
                have = ", ".join(map(str, self.head_blocks)) or "none"
                raise ScheduleError(f"no relevance head at block {missing[0]} (this model has heads at blocks {have})")
        plan = plan_tokens(schedule, num_patches=self.num_patches, num_prefix=self.num_prefix_tokens, depth=self.depth)
        self.schedule = schedule
        self._plans = {self.num_patches: plan}
        self._partitions = {}
        for stage in plan.stages:  # made here, not in forward: a torch.Generator would break a compiled graph
            if stage.sim_r:
                self._partition(stage.n_relevance or stage.n_in, torch.device("cpu"))
        return self

    def _plan_for(self, num_patches: int) -> TokenPlan:
        num_patches = int(num_patches)  # a traced size (ONNX export) must hit the same cache entry
        plan = self._plans.get(num_patches)
        if plan is None:  # dynamic image size: plan once per patch count
            plan = plan_tokens(
                self.schedule, num_patches=num_patches, num_prefix=self.num_prefix_tokens, depth=self.depth
            )
            self._plans[num_patches] = plan
        return plan

    def _partition(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        n = int(n)
        key = (n, str(device))
        part = self._partitions.get(key)
        if part is None:
            cpu = self._partitions.get((n, "cpu"))
            if cpu is None:
                cpu = self._partitions[(n, "cpu")] = partition(n, self.schedule.sim_seed)
            part = (cpu[0].to(device), cpu[1].to(device))
            self._partitions[key] = part
        return part

    # ----------------------------------------------------------------- relevance
    def relevance_scores(self, block: int, patches: torch.Tensor) -> torch.Tensor:
        """Head scores s_i for the patch tokens after `block`: (B, N, D) -> (B, N)."""
        head = self.heads[str(block)]
        if self.head_norm:
            patches = F.layer_norm(patches, (self.vit.embed_dim,))  # a constant width keeps export static
        return head(patches).squeeze(-1)

    # ----------------------------------------------------------------- forward
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Final tokens (after the last norm). With merge/fuse their sizes are lost: `forward` keeps them."""
        return self._forward_tokens(x, trace=None)[0]

    def forward_head(
        self, x: torch.Tensor, pre_logits: bool = False, sizes: torch.Tensor | None = None
    ) -> torch.Tensor:
        """timm's head; with token `sizes` (merge/fuse) average pooling counts a token as the patches it holds."""
        vit = self.vit
        pool = getattr(vit, "global_pool", None)
        weighted = getattr(vit, "attn_pool", None) is None and pool in ("avg", "avgmax")
        if sizes is None or not weighted or getattr(vit, "head_dist", None) is not None:
            return vit.forward_head(x, pre_logits=pre_logits)
        p = self.num_prefix_tokens
        tokens = x[:, p:]
        if getattr(vit, "pool_include_prefix", False):
            tokens, sizes = x, torch.cat([sizes.new_ones(x.shape[0], p, 1), sizes], dim=1)
        pooled = weighted_mean(tokens, sizes)
        if pool == "avgmax":
            pooled = 0.5 * (tokens.amax(dim=1) + pooled)
        pooled = vit.head_drop(vit.fc_norm(pooled))
        return pooled if pre_logits else vit.head(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, sizes = self._forward_tokens(x, trace=None)
        return self.forward_head(tokens, sizes=sizes)

    def forward_traced(self, x: torch.Tensor) -> tuple[torch.Tensor, list[StageTrace]]:
        """Logits plus, per pruning stage, which original patches survived (eval mode)."""
        trace: list[StageTrace] = []
        tokens, sizes = self._forward_tokens(x, trace=trace)
        return self.forward_head(tokens, sizes=sizes), trace

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """timm's token embedding: patches, prefix tokens, positions, pre-norm (the input of block 0)."""
        vit = self.vit
        x = vit.patch_embed(x)
        x = vit._pos_embed(x)
        x = vit.patch_drop(x)
        return vit.norm_pre(x)

    def forward_pruned(self, x: torch.Tensor) -> torch.Tensor:
        """Logits with the schedule's hard pruning and reducer, also in training mode (gradients reach the backbone).

        Fine-tuning uses it for an extra pass that teaches the backbone to work from the tokens the heads keep
        (and, with merge/fuse, from what the left-out tokens were merged into).
        """
        tokens, sizes = self._forward_tokens(x, trace=None, prune=True)
        return self.forward_head(tokens, sizes=sizes)

    def _forward_tokens(
        self, x: torch.Tensor, trace: list[StageTrace] | None, prune: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self.embed(x)
        p = self.num_prefix_tokens
        if self.training and not prune:
            return self.vit.norm(self._forward_train(x, p)), None
        plan = self._plan_for(x.shape[1] - p)
        positions = sizes = None
        if trace is not None:
            positions = torch.arange(plan.num_patches, device=x.device).unsqueeze(0).expand(x.shape[0], -1)
        before = plan.stage_by_block.get(BEFORE_BLOCKS)
        if before is not None:
            x, positions, sizes = self.apply_stage(before, x, x, positions, trace)
        x, sizes = self.run_blocks(x, 0, plan=plan, sizes=sizes, positions=positions, trace=trace)
        return self.vit.norm(x), sizes

    def run_blocks(
        self,
        x: torch.Tensor,
        start: int = 0,
        *,
        plan: TokenPlan | None = None,
        sizes: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        trace: list[StageTrace] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Blocks `start`.. on tokens `x` (the input of block `start`), each followed by its scheduled stage.

        `sizes` (B, n_patches, 1) are the patch tokens' sizes once a stage has merged or fused (None before);
        with sizes every block gets proportional attention. `plan` defaults to the native input size's.
        Returns the last block's output and the sizes.
        """
        stages = (self.plan if plan is None else plan).stage_by_block
        p = self.num_prefix_tokens
        bias = None if sizes is None else size_bias(p, sizes, x.dtype)
        for i in range(start, self.depth):
            x_in = x
            x = self.vit.blocks[i](x) if bias is None else self.vit.blocks[i](x, attn_mask=bias)
            if i in stages:
                x, positions, sizes = self.apply_stage(stages[i], x, x_in, positions, trace, sizes)
                bias = None if sizes is None else size_bias(p, sizes, x.dtype)
        return x, sizes

    def _forward_train(self, x: torch.Tensor, p: int) -> torch.Tensor:
        stats = TrainingStats()
        noisy = set(self.noise.blocks) if self.noise_enabled else set()
        for i, blk in enumerate(self.vit.blocks):
            x = blk(x)
            if i in noisy:
                x = self._add_noise(i, x, self.noise.target_rate, stats)
        self.last_stats = stats
        return x

    def _add_noise(self, block: int, x: torch.Tensor, keep: float, stats: TrainingStats) -> torch.Tensor:
        """Relevance noise on the patch tokens of `x` (block `block`'s output), scored by that block's head; `keep`
        is the rate the sigmoid's penalty pulls toward and where the rank relevance cuts."""
        noise, p = self.noise, self.num_prefix_tokens
        prefix, patches = x[:, :p], x[:, p:]
        alpha = relevance_alpha(self.relevance_scores(block, patches).float(), noise.relevance, keep)
        if noise.relevance == "sigmoid":
            stats.rate_penalties.append(rate_penalty(alpha, keep))
        stats.mean_alpha[block] = alpha.detach().mean()
        patches = add_relevance_noise(patches, alpha, noise.sigma0, noise.noise_variant)
        return torch.cat([prefix, patches], dim=1)

    def forward_dense(self, x: torch.Tensor, taps: Iterable[int] = ()) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Logits of the plain dense forward (no noise, no pruning, in either mode) and the tokens after each block
        in `taps`: the anchored training step's clean pass, whose activations the heads' noisy pass starts from."""
        wanted = set(taps)
        tapped: dict[int, torch.Tensor] = {}
        x = self.embed(x)
        for i, blk in enumerate(self.vit.blocks):
            x = blk(x)
            if i in wanted:
                tapped[i] = x
        return self.forward_head(self.vit.norm(x)), tapped

    def forward_noisy_from(self, x: torch.Tensor, start: int, keeps: dict[int, float]) -> torch.Tensor:
        """Logits from `x`, the tokens after block `start`, with relevance noise after every block in `keeps`
        (block -> keep rate, all >= `start`) and nothing dropped: the heads' noisy pass of the anchored step.

        Called with the backbone's parameters detached (`torch.func.functional_call`), its gradient reaches the
        heads only. The statistics (mean alpha, sigmoid's rate penalties) go to `last_stats`.
        """
        stats = TrainingStats()
        for i in range(start, self.depth):
            if i > start:
                x = self.vit.blocks[i](x)
            if i in keeps:
                x = self._add_noise(i, x, keeps[i], stats)
        self.last_stats = stats
        return self.forward_head(self.vit.norm(x))

    def rate_loss(self) -> torch.Tensor | float:
        """Sum of sigmoid relevance's rate penalties from the last training forward (0.0 for softmax)."""
        penalties = self.last_stats.rate_penalties
        return torch.stack(penalties).sum() if penalties else 0.0

    def apply_stage(
        self,
        stage: Stage,
        x: torch.Tensor,
        x_in: torch.Tensor,
        positions: torch.Tensor | None = None,
        trace: list[StageTrace] | None = None,
        sizes: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Run one pruning stage on `x` (the output of `stage.block`; `x_in` its input, for attention scorers).

        Returns (tokens, positions, sizes). `positions` (original patch index of every current patch token,
        -1 for a fused token) is carried along when tracing; `sizes` once a stage merges or fuses (see
        engine/reducers.py), else they stay None and the stage is the plain top-k + gather.
        """
        p = self.num_prefix_tokens
        prefix, patches = x[:, :p], x[:, p:]
        scores = index = others = None
        if stage.n_reduced:
            scores = self._stage_scores(stage.block, x_in, x)
            index, others = split_by_score(scores, stage.n_relevance)
            if sizes is None:
                sizes = torch.ones(patches.shape[0], patches.shape[1], 1, device=patches.device)  # float32
        elif stage.n_relevance is not None:
            scores = self._stage_scores(stage.block, x_in, x)
            index = top_index(scores, stage.n_relevance)
        if stage.sim_r:
            candidates = patches if index is None else gather_tokens(patches, index)
            part_a, part_b = self._partition(candidates.shape[1], candidates.device)
            sim_index = similarity_keep_index(candidates, stage.sim_r, part_a, part_b)
            index = sim_index if index is None else torch.gather(index, 1, sim_index)
        kept = patches if index is None else gather_tokens(patches, index)
        kept_sizes = sizes if sizes is None or index is None else gather_tokens(sizes, index)
        if others is not None:
            left_out, left_sizes = gather_tokens(patches, others), gather_tokens(sizes, others)
            if stage.reducer == "merge":
                kept, kept_sizes = merge_into_kept(kept, kept_sizes, left_out, left_sizes, stage.merge_threshold)
            else:
                fused, fused_size = fuse_tokens(left_out, left_sizes)
                kept, kept_sizes = torch.cat([kept, fused], dim=1), torch.cat([kept_sizes, fused_size], dim=1)
        if positions is not None and index is not None:
            positions_in = positions
            positions = torch.gather(positions, 1, index)
            if stage.n_out > stage.n_kept:  # the fused token stands for no single patch
                positions = torch.cat([positions, positions.new_full((positions.shape[0], 1), -1)], dim=1)
            if trace is not None:
                trace.append(StageTrace(stage.block, positions, scores, positions_in))
        return torch.cat([prefix, kept], dim=1), positions, kept_sizes

    def _stage_scores(self, block: int, x_in: torch.Tensor, x_out: torch.Tensor) -> torch.Tensor:
        if self.scorer is not None:
            return self.scorer(self, block, x_in, x_out)
        return self.relevance_scores(block, x_out[:, self.num_prefix_tokens :])


def attach_tnt(
    vit: nn.Module,
    head_blocks: Iterable[int] | None = None,
    *,
    noise: NoiseConfig | None = None,
    schedule: Schedule | None = None,
    head_norm: bool = True,
) -> TNTModel:
    """Wrap a timm ViT with TNT heads: on the noise blocks and every scheduled block (default: `NoiseConfig()`'s)."""
    depth = len(vit.blocks)
    noise = noise or NoiseConfig(blocks=tuple(b for b in NoiseConfig().blocks if b < depth))
    blocks = set(head_blocks) if head_blocks is not None else set(noise.blocks)
    if schedule is not None and head_blocks is None:
        blocks |= {b for b in schedule.prune_layers if 0 <= b < depth}
    noise = NoiseConfig(**{**noise.to_dict(), "blocks": tuple(b for b in noise.blocks if b in blocks)})
    return TNTModel(vit, sorted(blocks), noise=noise, schedule=schedule, head_norm=head_norm)
