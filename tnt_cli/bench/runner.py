"""Run a benchmark: build the variants, time them alternately per batch size, and assemble the report data."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterator

import torch
from torch import nn

from tnt_cli.bench import env as benv
from tnt_cli.bench.config import NOT_COMPILABLE, BenchConfig
from tnt_cli.bench.variants import DENSE, PRUNED, TNT_DENSE, add_peers, build_variants
from tnt_cli.engine import Schedule, TNTModel
from tnt_cli.errors import SettingError, SettingText, TntError, first_line
from tnt_cli.methods.registry import REFERENCE
from tnt_cli.methods.timing import make_input, summarize, time_alternating

NOISY_SPREAD = 1.5  # p90 / p50 above this: something else was competing for the device


def autocast_context(device: str, dtype: str) -> contextlib.AbstractContextManager:
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=benv.TORCH_DTYPES[dtype])  # 'cuda:1' too


def _raise_lost(exc: Exception, what: str) -> None:
    raise TntError(f"{what}: {type(exc).__name__}: {first_line(exc)}") from exc


def _compile_all(variants: dict[str, nn.Module], n_batch_sizes: int) -> dict[str, Callable]:
    """Compiled forwards (variants in NOT_COMPILABLE stay eager)."""
    import torch._dynamo as dynamo

    # dense and TNT run different code; each batch size is one more guard set per code object
    needed = max(8, 3 * n_batch_sizes + 2)
    for attr in ("recompile_limit", "cache_size_limit"):
        if hasattr(dynamo.config, attr) and getattr(dynamo.config, attr) < needed:
            setattr(dynamo.config, attr, needed)
    try:
        return {name: module if name in NOT_COMPILABLE else torch.compile(module) for name, module in variants.items()}
    except Exception as exc:
        _raise_lost(exc, "torch.compile is not available here")
        raise  # unreachable: keeps type checkers honest


def _compare_logits(eager: dict[str, nn.Module], compiled: dict[str, Callable], x: torch.Tensor, ctx) -> dict:
    """The compile contract: compiled logits equal eager ones (to float tolerance), per variant."""
    out = {}
    for name, module in eager.items():
        if name in NOT_COMPILABLE:
            continue
        with ctx():
            ref = module(x).float()
            got = compiled[name](x).float()
        diff = (ref - got).abs().max().item()
        out[name] = {
            "max_abs_diff": diff,
            "allclose": bool(torch.allclose(ref, got, rtol=1e-3, atol=1e-4)),
            "same_top1": bool((ref.argmax(-1) == got.argmax(-1)).all()),
        }
    return out


def _tensor_peak_mib(module: nn.Module, x: torch.Tensor, ctx) -> float | None:
    """The peak tensor memory of one eager forward of `module`: its parameters, buffers and activations, counted
    by torch's MemTracker (a dispatch mode), so it is this model's and not the process's (CPU has no allocator
    statistics). None when the tracker cannot run here."""
    try:
        from torch.distributed._tools.mem_tracker import MemTracker

        tracker = MemTracker()
        tracker.track_external(module, x)
        with ctx(), tracker:
            module(x)
        peak = tracker.get_tracker_snapshot("peak")
        return sum(device.get("Total", 0) for device in peak.values()) / 2**20
    except Exception:  # private torch API: a measurement we can do without
        return None


def _peak_mib(forward: Callable, x: torch.Tensor, ctx, device: str) -> float | None:
    from tnt_cli.devices import peak_memory_mib

    def run() -> None:
        with ctx():
            forward(x)

    return peak_memory_mib(device, run)


@contextlib.contextmanager
def _progress(enabled: bool, total: int) -> Iterator[Callable[[str], Callable[[], None]]]:
    """Yields `stage(description) -> step()`: timing rounds done, on stderr (tnt_cli.progress), or no-ops."""
    from tnt_cli.progress import Progress

    with Progress("benchmark", total=total, unit="round", enabled=enabled) as bar:

        def stage(description: str) -> Callable[[], None]:
            bar.update(description=description)
            return bar.advance

        yield stage


def run_benchmark(
    model: TNTModel,
    config: BenchConfig,
    *,
    source: str | None = None,
    progress: bool = True,
) -> dict:
    """Time dense and pruned (and TNT at keep 1.0, and the peer methods) alternately at every batch size."""
    with contextlib.ExitStack() as stack:
        return _run(model, config, source, progress, stack)


def benchmark_model(
    model: str,
    config: BenchConfig,
    *,
    schedule: Schedule | None = None,
    random_weights: bool = False,
    progress: bool = True,
    on_note: Callable[[str], None] | None = None,
) -> dict:
    """Load MODEL and benchmark it at `schedule` (default: its own, else `DEFAULT_SCHEDULE`); the report.

    Speed does not depend on what the heads learned, so untrained heads are fine for timing.
    """
    from tnt_cli.bench.variants import DEFAULT_SCHEDULE
    from tnt_cli.errors import ScheduleError
    from tnt_cli.io.sources import install_schedule, load_model

    loaded = load_model(model, random_weights=random_weights, schedule=schedule, require_trained_heads=False)
    if schedule is None and loaded.model.schedule.is_dense:
        if on_note is not None:
            on_note(f"no pruning schedule given: using {DEFAULT_SCHEDULE.describe()}")
        try:
            install_schedule(loaded, DEFAULT_SCHEDULE, require_trained_heads=False)
        except ScheduleError as exc:
            raise SettingError(
                "the default schedule does not fit this model ({reason}): give {schedule}",
                reason=str(exc),
            ) from None
    report = run_benchmark(loaded.model, config, source=loaded.source, progress=progress)
    report["heads_trained"] = loaded.heads_trained  # the truth: False for --random-weights
    return report


def _run(model: TNTModel, config: BenchConfig, source: str | None, progress: bool, stack: contextlib.ExitStack):
    from tnt_cli.analysis import describe_model

    device = benv.resolve_device(config.device)
    on_gpu = torch.device(device).type == "cuda"
    threads = benv.set_threads(device, config.threads)
    warmup, iters = config.warmup_for(device), config.iters_for(device)
    description = describe_model(model)
    gmacs_dense, gmacs_pruned = description["gmacs_dense"], description["gmacs_pruned"]
    gmacs_ratio = gmacs_dense / gmacs_pruned

    model.eval().to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    eager = build_variants(model, tnt_dense=config.tnt_dense)
    peers = add_peers(model, eager, tuple(config.methods), stack)
    method_gmacs = {REFERENCE: gmacs_pruned, **{m: info["gmacs"] for m, info in peers.items()}}
    notes = [
        f"{m} runs eager when the others are compiled: {NOT_COMPILABLE[m]}"
        for m in peers
        if config.compile and m in NOT_COMPILABLE
    ]
    ctx = lambda: autocast_context(device, config.dtype)  # noqa: E731 - a fresh context per use

    results, warnings = [], []
    compile_check = None
    rounds = (warmup + iters) * len(eager) * len(config.batch_sizes)
    with torch.inference_mode():
        probe = make_input(model.vit, 1, device=device, channels_last=config.channels_last, seed=config.seed)
        for name, module in eager.items():  # a clear message when the dtype cannot run here, before timing
            try:
                with ctx():
                    module(probe)
            except Exception as exc:
                _raise_lost(exc, f"{config.dtype} inference of the {name} model failed on {device}")
    with torch.inference_mode(), _progress(progress, rounds) as stage:
        forwards: dict[str, Callable] = dict(eager)
        if config.compile:
            forwards = _compile_all(eager, len(config.batch_sizes))
            first = make_input(
                model.vit, config.batch_sizes[0], device=device, channels_last=config.channels_last, seed=config.seed
            )
            try:
                compile_check = _compare_logits(eager, forwards, first, ctx)
            except TntError:
                raise
            except Exception as exc:
                _raise_lost(exc, "torch.compile failed")
            for name, check in compile_check.items():
                if not check["allclose"]:
                    warnings.append(f"compiled {name} logits differ from eager by {check['max_abs_diff']:.3g}")

        def timed(forward: Callable) -> Callable[[torch.Tensor], torch.Tensor]:
            def call(x: torch.Tensor) -> torch.Tensor:
                with ctx():
                    return forward(x)

            return call

        for batch in config.batch_sizes:
            x = make_input(model.vit, batch, device=device, channels_last=config.channels_last, seed=config.seed)
            step = stage(f"batch {batch}")
            try:
                times = time_alternating(
                    {name: timed(f) for name, f in forwards.items()},
                    x,
                    device=device,
                    warmup=warmup,
                    iters=iters,
                    on_step=step,
                )
            except torch.cuda.OutOfMemoryError:
                raise SettingError(
                    "out of GPU memory at batch size {batch}: use smaller {batch_sizes}", batch=batch
                ) from None
            except RuntimeError as exc:
                if "out of memory" in str(exc).lower() or "can't allocate memory" in str(exc).lower():
                    raise SettingError(
                        "out of memory at batch size {batch}: use smaller {batch_sizes}", batch=batch
                    ) from None
                raise
            row = _batch_row(batch, times, gmacs_ratio, gmacs_dense, method_gmacs)
            if on_gpu:
                for name, forward in forwards.items():
                    row["variants"][name]["peak_memory_mib"] = _peak_mib(forward, x, ctx, device)
            else:
                for name, module in eager.items():
                    row["variants"][name]["peak_memory_mib"] = _tensor_peak_mib(module, x, ctx)
            warnings.extend(_row_warnings(row))
            results.append(row)
            del x

    return {
        "kind": "tnt-benchmark",
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model": source,
        "architecture": description.get("model_name") or description["architecture"],
        "schedule": model.schedule.to_dict(),
        "schedule_text": model.schedule.describe(),
        "tokens_per_block": [row["tokens"] for row in description["blocks"]],
        "environment": benv.environment(device, threads),
        "settings": {
            "dtype": config.dtype,
            "compile": config.compile,
            "channels_last": config.channels_last,
            "batch_sizes": list(config.batch_sizes),
            "methods": list(config.methods),
            "warmup": warmup,
            "iters": iters,
            "threads": threads,
            "timing": "alternating rounds (order reversed every other round); throughput from the median",
            "inference_mode": True,
        },
        "gmacs": {"dense": gmacs_dense, "pruned": gmacs_pruned, "ratio": gmacs_ratio, "methods": method_gmacs},
        "methods": {
            REFERENCE: {"gmacs": gmacs_pruned, "config": model.schedule.describe()},
            **peers,
        },
        "matching": "each peer at the GMACs closest to TNT's schedule (tnt_cli.methods.apply.apply_method)",
        "notes": notes,
        "memory": "cuda max_memory_allocated per variant"
        if on_gpu
        else "tensor memory of one eager forward per variant (parameters, buffers, activations; torch MemTracker)",
        "results": results,
        "compile_check": compile_check,
        "peak_rss_mib": benv.peak_rss_mib(),
        "warnings": warnings,
    }


def _batch_row(
    batch: int,
    times: dict[str, list[float]],
    gmacs_ratio: float,
    gmacs_dense: float | None = None,
    method_gmacs: dict[str, float] | None = None,
) -> dict:
    stats = {name: summarize(seconds, batch) for name, seconds in times.items()}
    speedup = stats[PRUNED]["images_per_s"] / stats[DENSE]["images_per_s"]
    row = {
        "batch_size": batch,
        "variants": stats,
        "speedup": speedup,
        "gmacs_ratio": gmacs_ratio,
        "efficiency": speedup / gmacs_ratio,
    }
    methods = {}
    for method, gmacs in (method_gmacs or {}).items():
        name = PRUNED if method == REFERENCE else method  # TNT is timed as the pruned variant
        method_speedup = stats[name]["images_per_s"] / stats[DENSE]["images_per_s"]
        methods[method] = {
            "variant": name,
            "gmacs": gmacs,
            "gmacs_ratio": gmacs_dense / gmacs,
            "speedup": method_speedup,
            "efficiency": method_speedup / (gmacs_dense / gmacs),
            "vs_tnt": method_speedup / speedup,  # > 1: this method is faster than TNT here
        }
    if len(methods) > 1:
        row["methods"] = methods
    if TNT_DENSE in stats:
        # positive: TNT at keep 1.0 is this many percent slower than plain timm
        row["tnt_dense_overhead_pct"] = (stats[DENSE]["images_per_s"] / stats[TNT_DENSE]["images_per_s"] - 1) * 100
    return row


def _row_warnings(row: dict) -> list[str]:
    batch = row["batch_size"]
    out = []
    if row["speedup"] < 1:
        out.append(
            f"batch {batch}: pruned is slower than dense (speedup {row['speedup']:.2f}x): pruning does not pay here"
        )
    for method, m in row.get("methods", {}).items():
        if method != REFERENCE and m["vs_tnt"] > 1:
            out.append(
                f"batch {batch}: {method} is faster than tnt ({m['speedup']:.2f}x vs {row['speedup']:.2f}x over dense)"
            )
    spread = max(v["latency_ms_p90"] / v["latency_ms_p50"] for v in row["variants"].values())
    if spread > NOISY_SPREAD:
        out.append(
            SettingText(
                "batch {batch}: noisy timings (p90 is {spread:.1f}x p50): other load on the device? raise {iters}",
                batch=batch, spread=spread,
            )
        )  # fmt: skip
    return out
