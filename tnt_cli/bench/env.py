"""Where a benchmark ran: device, dtype support, threads and library versions, for the report."""

from __future__ import annotations

import platform
import resource
import sys
from pathlib import Path

import torch

from tnt_cli import devices

TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str) -> str:
    """The device name the benchmark runs on ('cpu', 'cuda', 'cuda:1')."""
    return str(devices.resolve_device(device))


def set_threads(device: str, threads: int | None) -> int:
    """Fix the CPU thread count for the whole run (timings are meaningless if it drifts)."""
    if threads is not None:
        torch.set_num_threads(threads)
    elif device == "cpu":
        torch.set_num_threads(torch.get_num_threads())
    return torch.get_num_threads()


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_count() -> int | None:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    return cpu_name()


def peak_rss_mib() -> float:
    """This process's resident-set high-water mark (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def environment(device: str, threads: int) -> dict:
    import timm

    from tnt_cli._version import __version__

    env = {
        "device": device,
        "device_name": device_name(device),
        "cpu": cpu_name(),
        "cpu_count": cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "tnt": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if torch.device(device).type == "cuda":
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
        env["float32_matmul_precision"] = torch.get_float32_matmul_precision()  # 'high': fp32 matmuls use TF32
    return env
