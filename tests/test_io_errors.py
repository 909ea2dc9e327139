"""Refused inputs: each gives one `error:` line on stderr and a non-zero exit, through the real CLI."""

from __future__ import annotations

import json
import os

import pytest
import torch
from _helpers import IO, error_line, run_cli, tiny_tnt, tiny_vit

from tnt_cli.engine import Schedule
from tnt_cli.io.model_dir import save_model_dir


class NeedsCode:
    """Pickled by reference: unpickling it would import and run this module."""

    def __init__(self) -> None:
        self.value = 1


def saved(tmp_path):
    return save_model_dir(tmp_path / "m", tiny_tnt(shape=IO, schedule=Schedule((1,), (0.5,))), base_model=None)


def test_missing_path(tmp_path):
    error_line(run_cli("info", str(tmp_path / "nope")), "no such file or directory")
    error_line(run_cli("info", "./missing/model.pth"), "no such file or directory")
    error_line(run_cli("info", "someorg/some-model"), "hf-hub:someorg/some-model")


def test_unknown_timm_name():
    error_line(run_cli("info", "not_a_timm_model_xyz"), "unknown timm model")


def test_hub_id_not_cached_while_offline(offline_hub):
    error_line(run_cli("info", "hf-hub:org/not-cached"), "hf-hub:org/not-cached", "offline")
    error_line(run_cli("info", "hf-hub:bad id"), "not a Hub model id")


def test_truncated_and_corrupt_safetensors(tmp_path):
    out = saved(tmp_path)
    data = (out / "model.safetensors").read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    error_line(run_cli("info", str(tmp_path / "trunc.safetensors")), "truncated or corrupt")
    (tmp_path / "junk.safetensors").write_bytes(b"\x07" * 64)
    error_line(run_cli("info", str(tmp_path / "junk.safetensors")), "truncated or corrupt")
    (out / "model.safetensors").write_bytes(data[:-100])  # a truncated file inside a model directory
    error_line(run_cli("info", str(out)), "model.safetensors", "truncated or corrupt")


def test_pth_that_needs_code_to_unpickle(tmp_path):
    torch.save({"model": tiny_vit(shape=IO).state_dict(), "extra": NeedsCode()}, tmp_path / "evil.pth")
    line = error_line(run_cli("info", str(tmp_path / "evil.pth")), "needs code to unpickle")
    assert "NeedsCode" in line and "weights_only" in line
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    error_line(run_cli("info", str(tmp_path / "broken.pth")), "not a readable PyTorch checkpoint")


def test_config_from_an_unsupported_architecture(tmp_path):
    import timm
    from timm.models import save_for_hf

    resnet = timm.create_model("resnet10t", pretrained=False, num_classes=3)
    save_for_hf(resnet, str(tmp_path / "resnet"), safe_serialization=True)
    error_line(run_cli("info", str(tmp_path / "resnet")), "not supported")
    out = saved(tmp_path)
    config = json.loads((out / "config.json").read_text())
    config["architecture"] = "my_custom_net"
    (out / "config.json").write_text(json.dumps(config))
    error_line(run_cli("info", str(out)), "my_custom_net", "does not know")


def test_heads_whose_width_does_not_match_the_backbone(tmp_path):
    from safetensors.torch import save_file

    out = saved(tmp_path)
    wrong = {f"heads.{b}.weight": torch.zeros(1, 32) for b in (0, 1, 2)}
    wrong.update({f"heads.{b}.bias": torch.zeros(1) for b in (0, 1, 2)})
    save_file(wrong, str(out / "tnt_heads.safetensors"))
    error_line(run_cli("info", str(out)), "width is 64")


def test_directory_without_weights_or_config(tmp_path):
    out = saved(tmp_path)
    (out / "model.safetensors").unlink()
    error_line(run_cli("info", str(out)), "no weights")
    (tmp_path / "empty").mkdir()
    error_line(run_cli("info", str(tmp_path / "empty")), "no config.json")


def test_library_errors_name_settings_the_cli_names_flags(tmp_path):
    """One error, two audiences: Python API users see the parameter name, the CLI line the flag."""
    import tnt_cli
    from tnt_cli.cli._errors import describe
    from tnt_cli.errors import SettingError

    out = saved(tmp_path)
    with pytest.raises(SettingError) as caught:
        tnt_cli.load(out, random_weights=True)
    message = str(caught.value)
    assert message.startswith("random_weights applies to timm model names only") and "--" not in message
    assert describe(caught.value)[0].startswith("--random-weights applies to timm model names only")
    export = ["export", str(out), "--random-weights", "--onnx", str(tmp_path / "m.onnx")]
    error_line(run_cli(*export), "--random-weights applies to timm model names only")


def test_atomic_file_replaces_only_on_success(tmp_path):
    from tnt_cli.io.atomic import atomic_file

    target = tmp_path / "model.onnx"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("export failed")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    with atomic_file(target) as tmp:
        assert tmp.name.startswith(f".model.onnx.partial-{os.getpid()}-")  # clean_stale can tell a dead run's
        tmp.write_text("new")
    mask = os.umask(0)
    os.umask(mask)
    assert target.read_text() == "new" and (target.stat().st_mode & 0o777) == 0o666 & ~mask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
