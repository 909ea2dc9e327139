"""`--device auto|cpu|cuda[:N]` turned into a torch device (one message for a missing GPU), and waiting for it."""

from __future__ import annotations

import torch

from tnt_cli.errors import SettingError, TntError


def resolve_device(requested: str) -> torch.device:
    """'auto' picks CUDA when available, else the CPU; a CUDA request without a GPU is a clear error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise SettingError(
            "{device} {requested} was requested but no CUDA device is available (torch sees no CUDA GPU): "
            "use {device} cpu",
            requested=requested,
        )
    try:
        return torch.device(requested)
    except RuntimeError:
        raise TntError(f"unknown device {requested!r}: use auto, cpu, cuda or cuda:N") from None


def synchronize(device: str | torch.device) -> None:
    """Wait for queued CUDA work, so a timer around a forward measures the forward (a no-op on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
