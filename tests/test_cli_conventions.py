"""One set of CLI conventions on every command: flags shown as flags, the same short options, --offline wherever
a model is loaded, a Python API with real keyword parameters, and --sim-prune described as it works."""

from __future__ import annotations

import inspect

import pytest
from _helpers import FMNIST, IO, run_cli, tiny_tnt, tiny_vit
from typer.main import get_command

import tnt_cli
from tnt_cli.cli.app import COMMANDS, app

SHORT = {"--out": "-o", "--json": "-j", "--batch-size": "-b"}
# Every command loads a model (push uploads one; --offline there checks that nothing needs the network first).
LOADS_A_MODEL = COMMANDS


def command(name: str):
    return get_command(app).commands[name]


def options(name: str) -> list:
    return [p for p in command(name).params if p.param_type_name == "option"]


@pytest.mark.parametrize("name", ["", *COMMANDS])
def test_help_shows_flags_without_a_bool_type(name, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    result = run_cli(name, "--help") if name else run_cli("--help")
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output
    assert "--help" in result.output


@pytest.mark.parametrize("name", COMMANDS)
def test_the_same_short_option_for_the_same_long_option(name):
    for param in options(name):
        for long, short in SHORT.items():
            if long in param.opts:
                assert short in param.opts, f"tnt {name} {long} lacks {short}"
            elif short in param.opts:
                raise AssertionError(f"tnt {name} uses {short} for {param.opts[0]}, not {long}")


@pytest.mark.parametrize("name", LOADS_A_MODEL)
def test_offline_is_accepted_by_every_command_that_loads_a_model(name):
    offline = [p for p in options(name) if "--offline" in p.opts]
    assert len(offline) == 1 and offline[0].is_flag


def test_offline_after_the_command_sets_hf_hub_offline(monkeypatch, tmp_path):
    import tnt_cli.io.offline as offline_mod
    import tnt_cli.io.sources  # noqa: F401  imported before the patch, so its own `set_offline` stays the real one

    calls = []
    monkeypatch.setattr(offline_mod, "set_offline", lambda value: calls.append(value))
    result = run_cli("info", "deit_tiny_patch16_224", "--offline", "--json")
    assert result.exit_code == 0, result.output
    assert True in calls


@pytest.mark.parametrize("fn", [tnt_cli.load, tnt_cli.save])
def test_python_api_has_real_keyword_parameters(fn):
    params = inspect.signature(fn).parameters.values()
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    assert [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def test_api_keywords_reach_the_loader(tmp_path, monkeypatch):
    """Each keyword of `tnt_cli.load` changes what the real loader does."""
    import os

    import torch
    from huggingface_hub import constants
    from timm.models._hub import save_config_for_hf

    from tnt_cli.errors import TntError

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    model = tnt_cli.load("vit_tiny_patch16_224", random_weights=True, offline=True)  # a timm name, no download
    assert os.environ["HF_HUB_OFFLINE"] == "1" and constants.HF_HUB_OFFLINE is True  # offline=True
    assert model.vit.patch_embed.num_patches == 196 and len(model.head_blocks) > 0  # random_weights=True
    saved = tnt_cli.save(tiny_tnt(shape=IO), tmp_path / "saved")
    with pytest.raises(TntError, match="timm model names only"):
        tnt_cli.load(saved, random_weights=True)
    vit = tiny_vit(shape=IO, embed_dim=48, num_heads=2)  # a width tnt cannot infer from a bare .pth
    torch.save({"state_dict": vit.state_dict()}, tmp_path / "w.pth")
    with pytest.raises(TntError, match="give the architecture"):
        tnt_cli.load(tmp_path / "w.pth")
    save_config_for_hf(vit, str(tmp_path / "arch.json"))
    assert tnt_cli.load(tmp_path / "w.pth", arch=str(tmp_path / "arch.json")).vit.embed_dim == 48  # arch=
    with pytest.raises(TypeError):
        tnt_cli.load("somewhere", randomweights=True)  # a typo is an error, not silently ignored


def test_sim_prune_help_says_what_r_does_with_one_prune_layer():
    (param,) = [p for p in options("info") if "--sim-prune" in p.opts]
    text = " ".join(param.help.split())
    assert "not how many" in text and "before block 0" in text


def test_model_card_says_what_r_does(tmp_path):
    from tnt_cli.io.card import _sim_prune_note

    one = _sim_prune_note({"prune_layers": [2], "keep_rates": [0.6], "sim_prune": 25})
    assert "changes which tokens stay, not how many" in one and "drops" not in one
    several = _sim_prune_note({"prune_layers": [2, 4], "keep_rates": [0.8, 0.8], "sim_prune": 8})
    assert "drops 8 tokens from the patch embeddings before block 0" in several

    import tnt_cli
    from tnt_cli.engine import Schedule, attach_tnt

    model = attach_tnt(tiny_vit(shape=FMNIST), (0, 1, 2), schedule=Schedule((2,), (0.6,), sim_prune=3))
    card = (tnt_cli.save(model, tmp_path / "m") / "README.md").read_text()
    assert "changes which tokens stay, not how many" in card  # the rendered card carries the sentence


def test_one_prune_layer_with_r_keeps_as_many_tokens_as_without():
    """What the help and the card claim, checked on the token plan itself."""
    from tnt_cli.engine.schedule import Schedule, plan_tokens

    def final(schedule):
        return plan_tokens(schedule, num_patches=196, num_prefix=1, depth=12).final_patches

    assert final(Schedule((2,), (0.6,), sim_prune=25)) == final(Schedule((2,), (0.6,))) == 117
    assert final(Schedule((2, 4), (0.8, 0.8), sim_prune=8)) == int(int((196 - 8) * 0.8) * 0.8)
