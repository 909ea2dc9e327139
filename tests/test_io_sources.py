"""The MODEL resolver: directories, the Hub (offline, from a cache built on disk), files, official checkpoints."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _helpers import IO, fake_hf_cache, images, tiny_tnt, tiny_vit

from tnt_cli.engine import Schedule
from tnt_cli.errors import TntError
from tnt_cli.io.model_dir import save_model_dir
from tnt_cli.io.sources import load_model

SHA = "0123456789abcdef0123456789abcdef01234567"


def saved_dir(tmp_path: Path, schedule=None) -> tuple[Path, object]:
    model = tiny_tnt(shape=IO, schedule=schedule or Schedule(prune_layers=(1,), keep_rates=(0.5,)))
    return save_model_dir(tmp_path / "saved", model, base_model="timm/tiny-base"), model


def timm_dir(tmp_path: Path, vit) -> Path:
    from timm.models import save_for_hf

    out = tmp_path / "timm_dir"
    save_for_hf(vit, str(out), safe_serialization=True)
    return out


# ----------------------------------------------------------------------------- directories
def test_timm_layout_directory_gets_fresh_untrained_heads(tmp_path):
    vit = tiny_vit(shape=IO)
    loaded = load_model(timm_dir(tmp_path, vit))
    assert not loaded.heads_trained and loaded.model.schedule == Schedule()
    x = images()
    with torch.no_grad():
        assert torch.equal(loaded.model(x), vit(x))
    with pytest.raises(TntError, match="no trained relevance heads"):
        load_model(tmp_path / "timm_dir", schedule=Schedule(prune_layers=(1,), keep_rates=(0.5,)))


def test_local_dir_prefix_and_schedule_override(tmp_path):
    out, model = saved_dir(tmp_path)
    other = Schedule(prune_layers=(0,), keep_rates=(0.25,))
    loaded = load_model(f"local-dir:{out}", schedule=other)
    assert loaded.model.schedule == other
    model.set_schedule(other)
    x = images()
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))


# ----------------------------------------------------------------------------- the Hub, offline
def test_hub_offline_from_cache_tnt_and_timm_layouts(tmp_path, offline_hub):
    out, model = saved_dir(tmp_path)
    fake_hf_cache(offline_hub, "org/tiny-tnt", out, sha=SHA)
    x = images()
    for spec in ("hf-hub:org/tiny-tnt", f"hf-hub:org/tiny-tnt@{SHA}"):
        loaded = load_model(spec)
        assert loaded.source == spec and loaded.base_model == "timm/tiny-base"
        assert loaded.model.schedule == model.schedule and loaded.heads_trained
        with torch.no_grad():
            assert torch.equal(loaded.model(x), model(x))
    vit = tiny_vit(shape=IO, seed=3)
    fake_hf_cache(offline_hub, "org/tiny-timm", timm_dir(tmp_path, vit))
    loaded = load_model("hf-hub:org/tiny-timm")
    assert loaded.base_model == "org/tiny-timm" and not loaded.heads_trained
    with torch.no_grad():
        assert torch.equal(loaded.model(x), vit(x))
    with pytest.raises(TntError, match=r"not in the local Hugging Face cache .* offline mode is on"):
        load_model("hf-hub:org/never-downloaded")


def test_hub_offline_in_a_fresh_process_via_the_cli(tmp_path):
    """HF_HUB_OFFLINE is read when huggingface_hub is imported: check the real thing in a new process."""
    out, _ = saved_dir(tmp_path)
    home = tmp_path / "hf_home"
    fake_hf_cache(home, "org/tiny-tnt", out)
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "tnt_cli", "info", "hf-hub:org/tiny-tnt", "--json"],
        capture_output=True, text=True, env=env, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["source"] == "hf-hub:org/tiny-tnt"
    assert data["head_blocks"] == [0, 1, 2]
    assert data["schedule"]["prune_layers"] == [1] and data["schedule"]["keep_rates"] == [0.5]


def test_offline_flag_sets_the_environment(monkeypatch):
    from huggingface_hub import constants

    from tnt_cli.io.offline import is_offline, set_offline

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert not is_offline()
    set_offline(True)
    assert os.environ["HF_HUB_OFFLINE"] == "1" and constants.HF_HUB_OFFLINE is True and is_offline()


# ----------------------------------------------------------------------------- files
def official_checkpoint(path: Path, depth: int = 6, seed: int = 0) -> tuple[Path, object, dict]:
    """A DeiT-distilled state dict plus alpha_heads / alpha_norm, saved as the official training script does."""
    vit = tiny_vit("deit_distilled", seed, shape=IO, depth=depth)
    gen = torch.Generator().manual_seed(seed + 7)
    heads = {i: (torch.randn(1, 64, generator=gen), torch.randn(1, generator=gen)) for i in range(depth)}
    state = dict(vit.state_dict())
    for i, (w, b) in heads.items():
        state[f"alpha_heads.{i}.weight"], state[f"alpha_heads.{i}.bias"] = w, b
    state["alpha_norm.weight"], state["alpha_norm.bias"] = torch.ones(64), torch.zeros(64)
    args = argparse.Namespace(model="deit_tiny_distilled_patch16_224", pru_loc=["2"], keep_rate=["0.6"], sim_pru=25)
    torch.save({"model": state, "epoch": 3, "args": args, "optimizer": {"state": {}, "param_groups": []}}, path)
    return path, vit, heads


def test_official_checkpoint_imports_and_its_heads_drive_pruning(tmp_path):
    path, vit, heads = official_checkpoint(tmp_path / "checkpoint.pth")
    loaded = load_model(path, schedule=Schedule(prune_layers=(1,), keep_rates=(0.5,)))
    model = loaded.model
    assert loaded.heads_trained and model.head_blocks == (0, 1, 2, 3, 4)  # the official code trains 0-4 only
    assert model.head_norm is False and model.noise.relevance == "softmax" and model.noise.sigma0 == 0.02
    assert any("alpha_heads.5" in note for note in loaded.notes)
    assert any("inferred" in note for note in loaded.notes)

    x = images(4, seed=5)
    captured = {}
    hook = vit.blocks[1].register_forward_hook(lambda mod, inp, out: captured.setdefault("x", out))
    with torch.no_grad():
        vit(x)
        _, trace = model.forward_traced(x)
    hook.remove()
    patches = captured["x"][:, 2:]  # after cls + dist tokens
    w, b = heads[1]
    expected = torch.topk(patches @ w.T.squeeze(-1) + b, k=8, dim=1).indices
    assert trace[0].block == 1
    assert torch.equal(trace[0].kept_positions.sort(dim=1).values, expected.sort(dim=1).values)
    # the same checkpoint with head 1 negated keeps exactly the other half: the heads decide, nothing else
    checkpoint = torch.load(path, weights_only=False)
    checkpoint["model"]["alpha_heads.1.weight"] = -w
    checkpoint["model"]["alpha_heads.1.bias"] = -b
    torch.save(checkpoint, tmp_path / "flipped.pth")
    flipped = load_model(tmp_path / "flipped.pth", schedule=Schedule(prune_layers=(1,), keep_rates=(0.5,))).model
    with torch.no_grad():
        _, flipped_trace = flipped.forward_traced(x)
    for kept, other in zip(trace[0].kept_positions, flipped_trace[0].kept_positions):
        assert sorted(set(kept.tolist()) | set(other.tolist())) == list(range(16))
        assert not set(kept.tolist()) & set(other.tolist())

    model.set_schedule(Schedule())
    with torch.no_grad():
        assert torch.equal(model(x), vit(x))


def test_official_import_survives_save_and_reload(tmp_path):
    path, _, _ = official_checkpoint(tmp_path / "checkpoint.pth", depth=3)
    schedule = Schedule(prune_layers=(2,), keep_rates=(0.5,))
    loaded = load_model(path, schedule=schedule)
    first = loaded.model
    out = save_model_dir(tmp_path / "imported", first, base_model=None, provenance=loaded.provenance)
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"].startswith("deit_") and "distilled" in config["architecture"]
    assert config["model_args"]["embed_dim"] == 64 and config["model_args"]["depth"] == 3
    assert "official" in config["tnt"]["imported_from"] and config["tnt"]["head_norm"] is False
    again = load_model(out).model
    x = images()
    with torch.no_grad():
        assert torch.equal(first(x), again(x))


def test_official_state_dict_as_bare_dict_and_as_safetensors(tmp_path):
    from safetensors.torch import save_file

    _, vit, _ = official_checkpoint(tmp_path / "c.pth", depth=3)
    state = torch.load(tmp_path / "c.pth", weights_only=False)["model"]  # our own file: fine to unpickle fully
    torch.save(state, tmp_path / "bare.pth")
    save_file(state, str(tmp_path / "official.safetensors"))
    x = images()
    for name in ("bare.pth", "official.safetensors"):
        loaded = load_model(tmp_path / name)
        assert loaded.model.head_blocks == (0, 1, 2) and loaded.heads_trained
        with torch.no_grad():
            assert torch.equal(loaded.model(x), vit(x))


def test_pth_of_an_uninferable_width_needs_arch(tmp_path):
    from timm.models._hub import save_config_for_hf

    vit = tiny_vit(shape=IO, embed_dim=48, num_heads=2)
    torch.save({"state_dict": vit.state_dict()}, tmp_path / "w.pth")
    with pytest.raises(TntError, match="give the architecture") as raised:
        load_model(tmp_path / "w.pth")
    assert "--arch" not in str(raised.value)  # no command has an --arch option
    save_config_for_hf(vit, str(tmp_path / "arch.json"))
    loaded = load_model(tmp_path / "w.pth", arch=str(tmp_path / "arch.json"))
    x = images()
    with torch.no_grad():
        assert torch.equal(loaded.model(x), vit(x))


def test_safetensors_files(tmp_path):
    from safetensors.torch import save_file

    out, model = saved_dir(tmp_path)
    x = images()
    inside = load_model(out / "model.safetensors")  # inside a tnt directory: the directory, heads included
    assert inside.heads_trained and inside.model.schedule == model.schedule
    lone = tmp_path / "lone.safetensors"
    lone.write_bytes((out / "model.safetensors").read_bytes())  # metadata names the architecture
    alone = load_model(lone)
    assert not alone.heads_trained
    with torch.no_grad():
        assert torch.equal(inside.model(x), model(x))
        assert torch.equal(alone.model(x), model.vit(x))
    save_file(dict(model.vit.state_dict()), str(tmp_path / "plain.safetensors"))
    with pytest.raises(TntError, match=r"directory .* config\.json"):
        load_model(tmp_path / "plain.safetensors")


def test_random_weights_only_for_timm_names(tmp_path):
    out, _ = saved_dir(tmp_path)
    with pytest.raises(TntError, match="timm model names only"):
        load_model(out, random_weights=True)


def test_pth_of_a_tnt_state_dict_keeps_its_heads(tmp_path):
    schedule = Schedule(prune_layers=(1,), keep_rates=(0.5,))
    model = tiny_tnt(shape=IO, schedule=schedule)
    torch.save(model.state_dict(), tmp_path / "tnt.pth")
    loaded = load_model(tmp_path / "tnt.pth", schedule=schedule)
    assert loaded.heads_trained and loaded.model.head_blocks == (0, 1, 2)
    x = images()
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))
