"""`tnt benchmark`: report files, JSON agreement, compile, bad input, and the timing/summary arithmetic.

Nothing here asserts on measured speed (the machine is shared); timing tests use fake clocks or tiny models.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from _helpers import error_line, run_cli, tiny_tnt

from tnt_cli.bench import BenchConfig, parse_batch_sizes, run_benchmark
from tnt_cli.bench.report import to_markdown, write_reports
from tnt_cli.bench.runner import _batch_row, _row_warnings
from tnt_cli.bench.variants import DENSE, PRUNED, TNT_DENSE, build_variants, keep_all
from tnt_cli.engine import Schedule
from tnt_cli.errors import TntError
from tnt_cli.methods import timing as btiming

TINY_SCHEDULE = Schedule(prune_layers=(1,), keep_rates=(0.5,), sim_prune=4)
TINY_MODEL = {"schedule": TINY_SCHEDULE, "depth": 3}  # the helpers' tiny TNT model, one block fewer: quick timing
FAST = ["--batch-sizes", "1,3", "--warmup", "0", "--iters", "2", "--threads", "1"]
SCHEDULE_FLAGS = ["--prune-layers", "1", "--keep-rates", "0.5", "--sim-prune", "4"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    """MODEL for `tnt benchmark`: a tiny TNT model saved as a tnt model directory by the product's own save path."""
    import tnt_cli

    model = tiny_tnt(**TINY_MODEL)
    return str(tnt_cli.save(model, tmp_path_factory.mktemp("bench") / "tiny"))


@pytest.fixture
def cli(monkeypatch):
    """Invoke `tnt benchmark ARGS` in-process, offline, with a wide terminal."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("COLUMNS", "160")
    monkeypatch.delenv("TNT_DEBUG", raising=False)
    return lambda *args: run_cli("benchmark", *args)


# --------------------------------------------------------------------------------------------- end to end
def test_tiny_benchmark_writes_parseable_reports_and_json_agrees(cli, tiny, tmp_path):
    out = tmp_path / "bench"
    result = cli(tiny, *SCHEDULE_FLAGS, *FAST, "--out", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    printed = json.loads(result.stdout)  # JSON alone on stdout
    assert "batch 3: " in result.stderr and " round (100%)" in result.stderr  # progress on stderr, also with --json
    written = json.loads((out / "report.json").read_text())
    assert printed == written
    assert [row["batch_size"] for row in written["results"]] == [1, 3]
    for row in written["results"]:
        assert set(row["variants"]) == {DENSE, TNT_DENSE, PRUNED}
        for stats in row["variants"].values():
            assert stats["rounds"] == 2
            assert stats["images_per_s"] == pytest.approx(row["batch_size"] / (stats["latency_ms_p50"] / 1e3))
            assert stats["latency_ms_p50"] <= stats["latency_ms_p90"]
        speedup = row["variants"][PRUNED]["images_per_s"] / row["variants"][DENSE]["images_per_s"]
        assert row["speedup"] == pytest.approx(speedup)
        assert row["efficiency"] == pytest.approx(speedup / written["gmacs"]["ratio"])
    assert written["gmacs"]["dense"] > written["gmacs"]["pruned"] > 0
    assert written["environment"]["threads"] == 1
    assert written["settings"]["dtype"] == "fp32" and written["settings"]["compile"] is False
    assert written["schedule"] == TINY_SCHEDULE.to_dict()
    for key in ("device_name", "torch", "timm"):
        assert written["environment"][key]
    md = (out / "report.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| batch |") and len(table) == 1 + 2  # header + one row per batch size
    assert [line.split("|")[1].strip() for line in table[1:]] == ["1", "3"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left behind


def test_terminal_table_without_json(cli, tiny):
    result = cli(tiny, *SCHEDULE_FLAGS, *FAST, "--no-tnt-dense")
    assert result.exit_code == 0, result.stderr
    assert "pruned (TNT)" in result.stdout and "dense (timm)" in result.stdout
    assert "TNT keep 1.0" not in result.stdout


def test_real_timm_name_with_random_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ["benchmark", "vit_tiny_patch16_224", "--random-weights", "--batch-sizes", "1", "--warmup", "0"]
    result = run_cli(*args, "--iters", "1", "--threads", "1", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["gmacs"]["dense"] == pytest.approx(1.26, abs=0.01)  # default schedule: block 2 keep 0.6 r 25
    assert report["schedule_text"] == "block 2 keep 0.6, r 25"
    assert report["heads_trained"] is False  # random heads: the report says so (issue 24: one meaning per name)


@pytest.mark.slow
def test_compile_on_cpu_gives_the_same_logits(cli, tiny, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_COMPILE_THREADS", "1")
    torch._dynamo.reset()
    args = ["--batch-sizes", "2", "--warmup", "0", "--iters", "1", "--threads", "1", "--no-tnt-dense"]
    result = cli(tiny, *SCHEDULE_FLAGS, *args, "--compile", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["settings"]["compile"] is True
    check = report["compile_check"]
    assert set(check) == {DENSE, PRUNED}
    for name in (DENSE, PRUNED):
        assert check[name]["allclose"] and check[name]["same_top1"]
        assert check[name]["max_abs_diff"] < 1e-4
    assert not [w for w in report["warnings"] if "compiled" in w]


# --------------------------------------------------------------------------------------------- model directories
def test_out_model_dir_updates_the_card_without_clobbering_its_report(cli, tmp_path):
    from tnt_cli.io.model_dir import save_model_dir

    model_dir = save_model_dir(tmp_path / "m", tiny_tnt(**TINY_MODEL), base_model=None, metrics={"top1": 0.5})
    result = cli(str(model_dir), *SCHEDULE_FLAGS, *FAST, "--update-card", "--json")
    assert result.exit_code == 0, result.stderr
    printed = json.loads(result.stdout)
    model_report = json.loads((model_dir / "report.json").read_text())
    assert model_report["top1"] == 0.5  # the model's own metrics survive
    bench = model_report["benchmark"]
    assert [b["speedup"] for b in bench["batches"]] == [row["speedup"] for row in printed["results"]]
    assert "benchmark" in (model_dir / "README.md").read_text().lower()

    result = cli(str(model_dir), *SCHEDULE_FLAGS, *FAST, "--out", str(model_dir))
    assert result.exit_code == 0, result.stderr
    assert json.loads((model_dir / "benchmark.json").read_text())["kind"] == "tnt-benchmark"
    assert (model_dir / "benchmark.md").read_text().startswith("**tnt benchmark**")
    assert json.loads((model_dir / "report.json").read_text())["top1"] == 0.5


# --------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--batch-sizes", "0"], "batch size 0"),
        (["--batch-sizes", "1,x"], "--batch-sizes"),
        (["--batch-sizes", ""], "--batch-sizes"),
        (["--dtype", "fp64"], "--dtype"),
        (["--device", "tpu"], "--device"),
        (["--iters", "0"], "--iters"),
        (["--threads", "0"], "--threads"),
        (["--warmup", "-1"], "--warmup"),
        (["--prune-layers", "1"], "--keep-rates"),
    ],
)
def test_bad_input_is_one_line(cli, tiny, tmp_path, args, needle):
    out = tmp_path / "never"
    assert needle in error_line(cli(tiny, *args, "--out", str(out)))
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_one_line(cli, tiny):
    error_line(cli(tiny, *SCHEDULE_FLAGS, "--device", "cuda"), "no CUDA GPU")


def test_unsupported_dtype_is_one_clear_line(cli, tiny, monkeypatch):
    """A torch build without half-precision CPU kernels fails the probe forward: one line naming the dtype.

    Patched: this machine's torch has those kernels, so no real input reaches the failure."""
    import contextlib

    from tnt_cli.bench import runner

    @contextlib.contextmanager
    def broken(device, dtype):
        if dtype == "fp16":
            raise RuntimeError("\"addmm_impl_cpu_\" not implemented for 'Half'\nmore detail")
        yield

    monkeypatch.setattr(runner, "autocast_context", broken)
    line = error_line(cli(tiny, *SCHEDULE_FLAGS, *FAST, "--dtype", "fp16"))
    assert line.startswith("error: fp16 inference of the dense model failed on cpu") and "Half" in line


def test_update_card_needs_a_model_dir(cli):
    result = cli("vit_tiny_patch16_224", *SCHEDULE_FLAGS, *FAST, "--update-card")  # a timm name, not a directory
    assert result.exit_code == 1 and "model directory" in result.stderr


# --------------------------------------------------------------------------------------------- units
def test_parse_batch_sizes():
    assert parse_batch_sizes("1, 32,128,32") == (1, 32, 128)
    for bad in ("", "0", "-4", "2.5", "a"):
        with pytest.raises(TntError):
            parse_batch_sizes(bad)
    with pytest.raises(TntError):
        BenchConfig(dtype="int8")


def test_alternating_order_and_counts(monkeypatch):
    calls: list[str] = []
    clock = iter(float(i) for i in range(1000))
    monkeypatch.setattr(btiming.time, "perf_counter", lambda: next(clock))
    variants = {name: (lambda x, name=name: calls.append(name)) for name in "abc"}
    times = btiming.time_alternating(variants, torch.zeros(1), device="cpu", warmup=1, iters=3)
    assert calls == list("abc" + "cba" + "abc" + "cba")
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert all(t == 1.0 for v in times.values() for t in v)  # each call spans exactly one fake tick


def test_row_arithmetic_and_slowdown_warning():
    times = {DENSE: [0.2, 0.2, 0.4], TNT_DENSE: [0.21, 0.21, 0.21], PRUNED: [0.1, 0.1, 0.1]}
    row = _batch_row(8, times, gmacs_ratio=2.5)
    assert row["variants"][DENSE]["images_per_s"] == pytest.approx(40.0)
    assert row["speedup"] == pytest.approx(2.0) and row["efficiency"] == pytest.approx(0.8)
    assert row["tnt_dense_overhead_pct"] == pytest.approx(5.0)
    assert row["variants"][DENSE]["latency_ms_p90"] == pytest.approx(360.0)
    assert not [w for w in _row_warnings(row) if "slower" in w]
    slow = _batch_row(8, {DENSE: [0.1], PRUNED: [0.12]}, gmacs_ratio=1.4)
    assert any("slower than dense" in w for w in _row_warnings(slow))


def test_noisy_timing_warning_names_iters_for_each_audience():
    from tnt_cli.cli._errors import spelled

    noisy = [0.1] * 8 + [1.0, 1.0]  # p90 is several times p50
    (warning,) = [w for w in _row_warnings(_batch_row(4, {DENSE: noisy, PRUNED: [0.05] * 10}, 2.0)) if "noisy" in w]
    assert warning.endswith("other load on the device? raise iters")  # what Python callers and report.json see
    assert spelled(warning).endswith("other load on the device? raise --iters")  # what `tnt benchmark` prints
    assert spelled(warning).startswith("batch 4: noisy timings (p90 is ")


def test_keep_one_variant_shares_weights_and_matches_timm():
    model = tiny_tnt(**TINY_MODEL)
    variants = build_variants(model)
    assert variants[TNT_DENSE].vit is model.vit and variants[TNT_DENSE].heads is model.heads
    assert variants[TNT_DENSE].schedule == keep_all(TINY_SCHEDULE) and variants[PRUNED] is model
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(variants[TNT_DENSE](x), variants[DENSE](x))


def test_reports_are_replaced_atomically(tmp_path, monkeypatch):
    config = BenchConfig(batch_sizes=(2,), warmup=0, iters=1, threads=1)
    report = run_benchmark(tiny_tnt(**TINY_MODEL), config, progress=False)
    json_path, _ = write_reports(tmp_path, report)
    before = json_path.read_text()

    from tnt_cli.io import atomic

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", fail)
    with pytest.raises(OSError):
        write_reports(tmp_path, {**report, "model": "changed"})
    assert json_path.read_text() == before  # the old report is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json", "report.md"]
    assert to_markdown(report) == (tmp_path / "report.md").read_text()


def test_output_is_not_a_directory(tmp_path):
    config = BenchConfig(batch_sizes=(1,), warmup=0, iters=1, threads=1)
    report = run_benchmark(tiny_tnt(**TINY_MODEL), config, progress=False)
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(TntError, match="not a directory"):
        write_reports(target, report)
    assert Path(os.fspath(target)).read_text() == "x"


# --------------------------------------------------------------------------------------------- peer methods
def test_methods_are_timed_at_matched_gmacs_in_one_run(cli, tiny, tmp_path):
    out = tmp_path / "bench"
    args = ["--methods", "tome,cls-attn,evit-fuse,random", "--no-tnt-dense", "--out", str(out), "--json"]
    result = cli(tiny, *SCHEDULE_FLAGS, *FAST, *args)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    methods = ("tnt", "tome", "evit", "evit-fuse", "random")
    assert report["settings"]["methods"] == list(methods)
    model = tiny_tnt(**TINY_MODEL)
    from tnt_cli.methods.apply import method_gmacs

    for method in methods:  # the same matching rule as evaluate
        assert report["gmacs"]["methods"][method] == pytest.approx(method_gmacs(model, method, TINY_SCHEDULE))
    for row in report["results"]:
        assert set(row["variants"]) == {DENSE, PRUNED, "tome", "evit", "evit-fuse", "random"}
        dense = row["variants"][DENSE]["images_per_s"]
        assert list(row["methods"]) == list(methods)
        for m in row["methods"].values():
            variant = row["variants"][m["variant"]]
            assert variant["rounds"] == 2
            assert m["speedup"] == pytest.approx(variant["images_per_s"] / dense)
            assert m["efficiency"] == pytest.approx(m["speedup"] * m["gmacs"] / report["gmacs"]["dense"])
            assert m["vs_tnt"] == pytest.approx(m["speedup"] / row["speedup"])
    markdown = (out / "report.md").read_text()
    assert "| ToMe |" in markdown and "| EViT + fusion |" in markdown and "tome r " in markdown


def test_unknown_method_is_one_line(cli, tiny):
    error_line(cli(tiny, *FAST, "--methods", "tome,magic"), "unknown method 'magic' in --methods")


def test_peers_share_the_weights_and_give_their_own_logits():
    from contextlib import ExitStack

    from tnt_cli.bench.variants import add_peers
    from tnt_cli.methods.apply import apply_method

    model = tiny_tnt(**TINY_MODEL)
    variants = build_variants(model)
    x = torch.randn(2, 3, 32, 32)
    with ExitStack() as stack, torch.no_grad():
        add_peers(model, variants, ("tnt", "tome", "evit", "random"), stack)
        assert model.scorer is None  # the random peer's scorer lives on a view
        assert variants["tome"].model.vit is model.vit and variants["random"].model.vit is model.vit
        for method in ("tome", "evit"):
            with apply_method(model, method) as setup:
                assert torch.equal(variants[method](x), setup.module(x))
        assert torch.equal(variants[PRUNED](x), model(x))


@pytest.mark.slow
def test_compile_with_peers(cli, tiny, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_COMPILE_THREADS", "1")
    torch._dynamo.reset()
    args = ["--batch-sizes", "2", "--warmup", "0", "--iters", "1", "--threads", "1", "--no-tnt-dense"]
    result = cli(tiny, *SCHEDULE_FLAGS, *args, "--methods", "tome,evit,random", "--compile", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    check = report["compile_check"]
    assert set(check) == {DENSE, PRUNED, "tome", "evit"}  # random runs eager (and says so)
    assert all(c["allclose"] and c["same_top1"] for c in check.values()), check
    assert any(note.startswith("random runs eager") for note in report["notes"])
