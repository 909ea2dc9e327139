"""`--device auto|cpu|cuda[:N]` turned into a torch device (one message for a missing GPU), and the few calls that
differ between the CPU and CUDA (waiting for queued work, peak memory, pinned host memory) in one place, each safe
on a CPU-only machine."""

from __future__ import annotations

from collections.abc import Callable

import torch

from tnt_cli.errors import SettingError, TntError


def resolve_device(requested: str) -> torch.device:
    """'auto' picks CUDA when available, else the CPU; a CUDA request without that GPU is a clear error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise SettingError(
            "{device} {requested} was requested but no CUDA device is available (torch sees no CUDA GPU): "
            "use {device} cpu",
            requested=requested,
        )
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise TntError(f"unknown device {requested!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise SettingError("{device} {requested}: torch sees {count} CUDA GPU(s), numbered from 0",
                           requested=requested, count=torch.cuda.device_count())  # fmt: skip
    return device


def synchronize(device: str | torch.device) -> None:
    """Wait for queued CUDA work, so a timer around a forward measures the forward (a no-op on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pin_memory(device: str | torch.device) -> bool:
    """Whether a DataLoader feeding `device` should pin its batches: only for CUDA (pinned pages are wasted on a
    CPU run, also on a machine that has a GPU)."""
    return torch.device(device).type == "cuda"


def peak_memory_mib(device: str | torch.device, run: Callable[[], object]) -> float | None:
    """The most GPU memory `device` held while `run()` ran (allocated by torch, MiB); None on the CPU, where
    `run` is not called (torch keeps no such counter there)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    run()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def native_bf16(device: str | torch.device) -> bool:
    """Whether `device` computes in bfloat16 natively (CUDA compute capability 8.0+, Ampere on; ROCm GPUs). Older
    GPUs only emulate it, slowly, which `torch.cuda.is_bf16_supported()` counts as support."""
    device = torch.device(device)
    if device.type != "cuda":
        return False
    return bool(torch.version.hip) or torch.cuda.get_device_capability(device)[0] >= 8
