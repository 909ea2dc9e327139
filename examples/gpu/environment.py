"""What the acceptance run ran on: GPUs, driver, CUDA, torch and friends, onnxruntime's providers, the CPU.

    python examples/gpu/environment.py --out env.json [--require-cuda]

Prints the JSON it writes. With --require-cuda it exits 1 (after writing) when torch sees no CUDA GPU, so the
acceptance summary says plainly that the CUDA parts could not run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

ENV_SHOWN = ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "TORCHDYNAMO_DISABLE", "TORCHINDUCTOR_COMPILE_THREADS")


def version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except Exception:  # not installed, or broken: the report says so rather than the script failing
        return None


def nvidia_smi() -> list[dict] | str | None:
    """One dict per GPU from nvidia-smi (driver, memory, clocks), its error text, or None when it is absent."""
    if shutil.which("nvidia-smi") is None:
        return None
    fields = ("name", "driver_version", "memory.total", "compute_cap", "clocks.max.sm", "power.limit")
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout  # fmt: skip
    except (subprocess.SubprocessError, OSError) as exc:
        return f"nvidia-smi failed: {exc}"
    return [dict(zip(fields, (v.strip() for v in line.split(",")))) for line in out.strip().splitlines()]


def torch_side() -> dict:
    import torch

    info: dict = {
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "threads": torch.get_num_threads(),
        "nccl_available": torch.distributed.is_available() and torch.distributed.is_nccl_available(),
    }
    if info["cuda_available"]:
        info["cudnn"] = torch.backends.cudnn.version()
        info["gpus"] = []
        for i in range(info["gpu_count"]):
            props = torch.cuda.get_device_properties(i)
            info["gpus"].append({"name": props.name, "capability": f"{props.major}.{props.minor}",
                                 "memory_gib": round(props.total_memory / 2**30, 1),
                                 "multiprocessors": props.multi_processor_count})  # fmt: skip
    return info


def onnxruntime_side() -> dict:
    try:
        import onnxruntime as ort
    except Exception as exc:
        return {"onnxruntime": None, "error": f"{type(exc).__name__}: {exc}"}
    return {"onnxruntime": ort.__version__, "providers": ort.get_available_providers(), "device": ort.get_device()}


def environment() -> dict:
    from tnt_cli._version import __version__

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("model name"))
    return {
        "tnt": __version__,
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        **torch_side(),
        "nvidia_smi": nvidia_smi(),
        "versions": {m: version(m) for m in ("timm", "triton", "safetensors", "huggingface_hub", "numpy", "onnx")},
        **onnxruntime_side(),
        "env": {k: v for k, v in os.environ.items() if k in ENV_SHOWN},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--require-cuda", action="store_true")
    args = parser.parse_args(argv)
    env = environment()
    text = json.dumps(env, indent=2)
    args.out.write_text(text + "\n")
    print(text)
    if args.require_cuda and not env["cuda_available"]:
        print("error: torch sees no CUDA GPU: the CUDA parts cannot run here (use --tiny for a CPU run)",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
