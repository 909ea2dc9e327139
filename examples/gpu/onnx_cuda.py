"""Run an exported tnt ONNX file in onnxruntime's CUDA provider, against its CPU provider on the same input.

    python examples/gpu/onnx_cuda.py MODEL.onnx --out onnx-cuda.json

`tnt export` already checked the file against PyTorch on the CPU provider. This adds the GPU: the provider the
session really ran on (onnxruntime falls back to the CPU silently when CUDA cannot load), the largest logit
difference from the CPU provider, and each provider's median latency. Exit 0 with "cuda_provider": false when
this onnxruntime has no CUDA provider (the acceptance summary notes it); exit 1 when the CUDA provider is there but
fails, falls back or disagrees.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"
ATOL = 1e-2  # CUDA kernels (TF32 matmuls by default in onnxruntime) vs the CPU provider, on logits of size ~1


def session(path: Path, provider: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    providers = [provider, CPU] if provider != CPU else [CPU]
    return ort.InferenceSession(str(path), options, providers=providers)


def median_ms(sess, feed: dict, runs: int = 20) -> float:
    sess.run(None, feed)  # warm-up (CUDA: kernels and memory arenas)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def check(path: Path) -> tuple[dict, bool]:
    import onnxruntime as ort

    report: dict = {"file": str(path), "onnxruntime": ort.__version__, "providers": ort.get_available_providers()}
    report["cuda_provider"] = CUDA in report["providers"]
    cpu = session(path, CPU)
    spec = cpu.get_inputs()[0]
    shape = [d if isinstance(d, int) else 2 for d in spec.shape]
    feed = {spec.name: np.random.default_rng(0).standard_normal(shape, dtype=np.float32)}
    expected = cpu.run(None, feed)[0]
    report.update(input_shape=shape, cpu_ms=median_ms(cpu, feed))
    if not report["cuda_provider"]:
        return report, True
    try:
        gpu = session(path, CUDA)
    except Exception as exc:
        report["error"] = f"the CUDA provider failed to start: {type(exc).__name__}: {exc}"
        return report, False
    report["session_providers"] = gpu.get_providers()
    if report["session_providers"][0] != CUDA:
        report["error"] = f"onnxruntime fell back to {report['session_providers'][0]}"
        return report, False
    got = gpu.run(None, feed)[0]
    diff = float(np.abs(got - expected).max())
    same_top1 = bool((got.argmax(-1) == expected.argmax(-1)).all())
    report.update(max_abs_diff_vs_cpu=diff, same_top1=same_top1, atol=ATOL, cuda_ms=median_ms(gpu, feed))
    if diff > ATOL or not same_top1:
        report["error"] = f"CUDA logits differ from the CPU provider's by {diff:.3g} (atol {ATOL})"
        return report, False
    return report, True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    report, ok = check(args.model)
    text = json.dumps(report, indent=2)
    args.out.write_text(text + "\n")
    print(text)
    if not ok:
        print(f"error: {report['error']}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
