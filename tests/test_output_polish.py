"""Output polish: small models keep their GMACs digits, a limit that covers the split is no subset, benchmark
memory is the model's, and push says what it uploads."""

from __future__ import annotations

import json

from _helpers import error_line, run_cli


def test_info_prints_small_gmacs_with_their_digits(tiny_dir):
    result = run_cli("info", tiny_dir, "--prune-layers", "1", "--keep-rates", "0.5")
    assert result.exit_code == 0, result.stderr
    data = json.loads(run_cli("info", tiny_dir, "--prune-layers", "1", "--keep-rates", "0.5", "--json").stdout)
    rows = {line.split("  ")[0]: line.split()[-1] for line in result.stdout.splitlines() if line.startswith("GMACs")}
    assert rows == {"GMACs dense": f"{data['gmacs_dense']:.3g}", "GMACs pruned": f"{data['gmacs_pruned']:.3g}"}
    assert "0.00 " not in result.stdout and "0.000 " not in result.stdout


def test_a_limit_covering_the_split_is_not_a_subset(tiny_dir):
    args = ("evaluate", tiny_dir, "--data", "fashion-mnist", "--split", "test", "--batch-size", "500")
    whole = run_cli(*args, "--limit", "20000")
    assert whole.exit_code == 0, whole.stderr
    assert "fashion-mnist (test): 10000 images" in whole.stdout and "subset" not in whole.stdout
    part = run_cli(*args, "--limit", "300")
    assert "300 images (seeded subset of 10000, seed 0)" in " ".join(part.stdout.split())
    assert json.loads(run_cli(*args, "--limit", "300", "--json").stdout)["limit"] == 300


def test_benchmark_memory_is_the_models_own_on_cpu(tiny_dir):
    result = run_cli("benchmark", tiny_dir, "--prune-layers", "1", "--keep-rates", "0.5", "--batch-sizes", "1,32",
                     "--iters", "2", "--warmup", "1", "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert "MemTracker" in report["memory"]
    import tnt_cli

    model = tnt_cli.load(tiny_dir)
    weights_mib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    small, large = report["results"]
    for row in report["results"]:
        for variant in row["variants"].values():
            assert weights_mib <= variant["peak_memory_mib"] < 50  # a tiny model; the process holds ~700 MiB
    assert small["variants"]["dense"]["peak_memory_mib"] < large["variants"]["dense"]["peak_memory_mib"]


def test_push_refuses_a_plain_timm_directory_and_its_help_says_so(base, tmp_path):
    line = error_line(run_cli("push", base, "org/name", "--dry-run"))
    assert "is a plain timm model directory, not a tnt one" in line and "hf upload" in line
    help_text = " ".join(run_cli("push", "--help").stdout.replace("│", " ").split())  # rich's box, unwrapped
    assert "save_for_hf" not in help_text and "a plain timm directory is refused" in help_text
