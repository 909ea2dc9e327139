"""Offline and typo errors are fast: a timm name without cached weights, an unreachable Hub, a transformers repo id
each answer in seconds with one line that says what to do instead."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from _helpers import error_line, run_cli

TRANSFORMERS_CONFIG = {"architectures": ["ViTForImageClassification"], "model_type": "vit", "image_size": 224}


def test_unreachable_hub_answers_in_seconds_with_what_to_do(tmp_path):
    """huggingface_hub alone retries 5 times (about 25 s per file) before it gives up: tnt asks once."""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "http://127.0.0.1:9"}  # nothing listens
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("HF_HUB_CACHE", None)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "tnt_cli", "evaluate", "vit_tiny_patch16_224", "--data",
                           "fashion-mnist"], capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    seconds = time.monotonic() - started
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("error: could not reach the Hugging Face Hub (http://127.0.0.1:9)")
    assert "--random-weights" in lines[0] and "--offline" in lines[0]
    assert seconds < 15, seconds  # python + torch start-up included


def test_offline_timm_name_without_weights_suggests_random_weights(offline_hub):
    result = run_cli("evaluate", "vit_tiny_patch16_224", "--data", "fashion-mnist")
    error_line(result, "not in the local Hugging Face cache", "--random-weights")


def transformers_repo(home, repo: str) -> None:
    from _helpers import fake_hf_cache

    files = home.parent / "transformers-files"
    files.mkdir(exist_ok=True)
    (files / "config.json").write_text(json.dumps(TRANSFORMERS_CONFIG))
    (files / "model.safetensors").write_bytes(b"")
    fake_hf_cache(home, repo, files)


def test_a_transformers_repo_is_named_as_such_with_the_timm_model_to_use(offline_hub):
    transformers_repo(offline_hub, "google/vit-base-patch16-224")
    for spec in ("google/vit-base-patch16-224", "hf-hub:google/vit-base-patch16-224"):
        line = error_line(run_cli("info", spec))
        assert f"error: {spec} is a transformers model (ViTForImageClassification), not a timm model" in line
        assert "use timm's vit_base_patch16_224" in line and "write hf-hub:" not in line


def test_an_unknown_org_name_says_how_to_write_a_hub_model(offline_hub):
    line = error_line(run_cli("info", "someone/some-model"))
    assert line == "error: no such file or directory: someone/some-model (for a timm model on the Hub: write " \
                   "hf-hub:someone/some-model)"  # fmt: skip
