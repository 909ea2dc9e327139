"""Alternating timing: every round runs each variant once, in reversed order every other round, so load drift and
cache or clock effects hit all of them equally. `tnt benchmark` and `tnt calibrate --measure-speed` both time here.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence

import torch

Forward = Callable[[torch.Tensor], torch.Tensor]


def synchronizer(device: str) -> Callable[[], None]:
    """CUDA work is asynchronous: a timed call must start and end with the GPU idle."""
    from tnt_cli.devices import synchronize

    if torch.device(device).type == "cuda":
        return lambda: synchronize(device)
    return lambda: None  # nothing to wait for, and nothing added to a CPU timing


def round_order(names: Sequence[str], round_index: int) -> list[str]:
    """A, B, C then C, B, A: each variant runs first and last equally often (cache, turbo and load effects)."""
    order = list(names)
    return order if round_index % 2 == 0 else order[::-1]


def time_alternating(
    variants: dict[str, Forward],
    x: torch.Tensor,
    *,
    device: str,
    warmup: int,
    iters: int,
    repeat: int = 1,
    on_step: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """Seconds per forward for each variant: `warmup` untimed rounds, then `iters` timed rounds, interleaved.

    Each timing runs the forward `repeat` times (and is divided by it), so a tiny model's forward is not timer noise.
    """
    sync = synchronizer(device)
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(warmup + iters):
        for name in round_order(names, r):
            forward = variants[name]
            sync()
            start = time.perf_counter()
            for _ in range(repeat):
                forward(x)
            sync()
            elapsed = (time.perf_counter() - start) / repeat
            if r >= warmup:
                times[name].append(elapsed)
            if on_step is not None:
                on_step()
    return times


def make_input(vit: torch.nn.Module, batch_size: int, *, device: str, channels_last: bool = False, seed: int = 0):
    """Random images of the model's own input shape (speed does not depend on pixel values)."""
    embed = vit.patch_embed
    height, width = embed.img_size
    channels = int(getattr(embed.proj, "in_channels", 3))
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, channels, height, width, generator=generator).to(device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0-100), like numpy's default."""
    data = sorted(values)
    if not data:
        return math.nan
    pos = (len(data) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def summarize(seconds: Sequence[float], batch_size: int) -> dict:
    """Throughput from the median (robust to a noisy neighbour), plus latency percentiles in ms."""
    p50 = statistics.median(seconds)
    return {
        "images_per_s": batch_size / p50,
        "latency_ms_p50": p50 * 1e3,
        "latency_ms_p90": percentile(seconds, 90) * 1e3,
        "latency_ms_min": min(seconds) * 1e3,
        "latency_ms_mean": statistics.fmean(seconds) * 1e3,
        "rounds": len(seconds),
    }
