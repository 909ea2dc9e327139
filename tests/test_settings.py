"""Each fine-tuning setting is declared once (`TrainConfig`'s fields): its `tnt finetune` option, its resume rule,
its saved key, its recipe default and its flag in error messages all derive from that one declaration.

In-process and tiny: no data set is read (the CLI refusals stop before any model is loaded).
"""

from __future__ import annotations

import json
from dataclasses import fields

import pytest
from _helpers import FMNIST, error_line, run_cli, tiny_vit
from typer.main import get_command

from tnt_cli.cli._errors import FLAG_SPELLING, describe
from tnt_cli.cli.app import app
from tnt_cli.cli.declared import argv_from, parameter_name, settings_from
from tnt_cli.cli.finetune import RUN_FLAGS
from tnt_cli.engine import NoiseConfig, attach_tnt
from tnt_cli.errors import SettingError
from tnt_cli.recipes import DEFAULT_RECIPE, RECIPES, Recipe
from tnt_cli.settings import shown
from tnt_cli.train.config import SETTINGS, TRAJECTORY, TrainConfig, recipe_settings
from tnt_cli.train.resume import resume_mismatch


def cfg(**kw) -> TrainConfig:
    return TrainConfig(model="m", data="fashion-mnist", out="o", **kw)


def test_every_setting_has_one_declaration_that_yields_its_option_resume_rule_and_saved_key():
    command = get_command(app).commands["finetune"]
    params = {p.name: p for p in command.params}
    # the command's parameters are exactly the declared settings plus the run flags, nothing restated by hand
    assert sorted(params) == sorted([parameter_name(s) for s in SETTINGS] + list(RUN_FLAGS))
    assert [f.name for f in fields(TrainConfig)] == [s.name for s in SETTINGS]
    for s in SETTINGS:
        param = params[parameter_name(s)]
        assert param.help == s.help_text() and param.help.startswith(s.help), s.name
        if s.argument:
            assert param.param_type_name == "argument" and param.required
            continue
        assert s.flag in param.opts and param.rich_help_panel == s.panel, s.name
        assert s.short is None or s.short in param.opts
        if s.required:
            assert param.required
        elif parameter_name(s) != s.name:  # a switch on by default is given as --no-<name>
            assert param.default is False and s.default is True
        else:
            assert param.default == (shown(s.default) if s.parse and s.default is not None else s.default), s.name
        # the error table spells the setting as its flag
        assert FLAG_SPELLING[s.name] == s.flag
    assert "--no-distill" in params["distill"].secondary_opts  # on, off, or (not given) the recipe's
    assert params["sigma0"].help.endswith("Default: the recipe's (1; official: 0.02).")

    # the saved key is the name; the resume rule is the declaration's
    base = cfg()
    saved = base.to_dict()
    assert list(saved) == [s.name for s in SETTINGS]
    assert tuple(s.name for s in SETTINGS if s.resume) == TRAJECTORY
    for s in SETTINGS:
        changed = resume_mismatch({**saved, s.name: "something else"}, base)
        assert (changed is not None) == s.resume, s.name
        if changed is not None:
            assert set(changed.settings) == {"resume", s.name}
            assert describe(changed)[0].startswith(f"--resume: {s.flag} is ")
    # the recipe summary (Trainer.settings) is the declared subset, as saved
    assert recipe_settings(base) == {s.name: saved[s.name] for s in SETTINGS if s.summary}


def test_settings_left_unset_take_the_recipes_value_under_the_same_name():
    recipe_fields = {f.name for f in fields(Recipe)}
    from_recipe = [s for s in SETTINGS if s.from_recipe]
    assert {s.name for s in from_recipe} <= recipe_fields
    for name, recipe in RECIPES.items():
        c = cfg(recipe=name)
        for s in from_recipe:
            expected = recipe.lr[c.train] if s.name == "lr" else getattr(recipe, s.name)
            assert getattr(c, s.name) == expected, (name, s.name)


def test_the_engines_default_noise_is_the_default_recipes():
    default = RECIPES[DEFAULT_RECIPE]
    assert default == Recipe(summary=default.summary)  # the default recipe is `Recipe()`: one declaration
    assert NoiseConfig() == cfg().noise()
    assert attach_tnt(tiny_vit(shape=FMNIST)).noise == NoiseConfig()  # 4 blocks: all the default noise blocks fit
    official = cfg(recipe="official").noise()
    assert (official.relevance, official.sigma0, official.blocks) == ("softmax", 0.02, (0, 1, 2, 3, 4))


def test_a_setting_error_reads_with_the_python_name_and_the_cli_prints_the_flag(tmp_path):
    with pytest.raises(SettingError) as caught:
        cfg(scale=(0.9, 0.5))
    assert str(caught.value) == "scale must be two numbers 0 < min <= max <= 1"
    assert describe(caught.value)[0] == "--crop-scale must be two numbers 0 < min <= max <= 1"
    with pytest.raises(SettingError, match=r"^eval_prune_layers and eval_keep_rates go together"):
        cfg(eval_prune_layers=(2,))
    cases = [
        (("--crop-scale", "0.9,0.5"), "error: --crop-scale must be two numbers 0 < min <= max <= 1"),
        (("--crop-scale", "0.5"), "error: --crop-scale takes two numbers min,max, got '0.5'"),
        (("--noise-blocks", "1,x"), "error: --noise-blocks takes whole numbers separated by commas, got '1,x'"),
        (("--drop-keeps", "a"), "error: --drop-keeps takes numbers separated by commas, got 'a'"),
        (("--warmup-epochs", "nan"), "error: --warmup-epochs must be a finite number, got nan"),
        (("--relevance", "bogus"), "error: --relevance must be one of softmax, sigmoid, rank, got 'bogus'"),
        (("--noise-variant", "x"), "error: --noise-variant must be one of std, var, got 'x'"),
        (("--sigma0", "-1"), "error: --sigma0 must be >= 0, got -1"),
        (("--target-rate", "0"), "error: --target-rate must be in (0, 1], got 0"),
        (("--prune-layers", "1"), "error: --prune-layers and --keep-rates go together: give both, with one keep "
                                  "rate per layer"),
        (("--method", "tome", "--reducer", "merge"), "error: --reducer merge is TNT's; --method tome has its own "
                                                     "reducer"),
    ]  # fmt: skip
    for args, line in cases:
        result = run_cli("finetune", "m", "--data", "fashion-mnist", "--out", tmp_path / "o", *args)
        assert error_line(result) == line, args
    assert not (tmp_path / "o").exists()


def test_noise_saved_by_tnt_0_1_still_loads(tmp_path):
    from tnt_cli.io.model_dir import save_model_dir
    from tnt_cli.io.sources import load_model

    noise = NoiseConfig(blocks=(0, 1), sigma0=0.02, noise_variant="var", relevance="softmax")
    out = save_model_dir(tmp_path / "m", attach_tnt(tiny_vit(shape=FMNIST), noise=noise), base_model=None)
    config = json.loads((out / "config.json").read_text())
    assert config["tnt"]["noise"] == {"blocks": [0, 1], "sigma0": 0.02, "noise_variant": "var",
                                      "relevance": "softmax", "target_rate": 0.3}  # fmt: skip
    # tnt 0.1 wrote the relevance form and the noise variant as `form` and `variant`
    config["tnt"]["noise"] = {"blocks": [0, 1], "sigma0": 0.02, "variant": "var", "form": "softmax",
                              "target_rate": 0.3}  # fmt: skip
    (out / "config.json").write_text(json.dumps(config))
    assert load_model(str(out), require_trained_heads=False).model.noise == noise
    # and a 0.1 checkpoint's training config (with its unused `extra`) still reads
    old = {**cfg().to_dict(), "extra": {}}
    assert TrainConfig.from_dict(old).to_dict() == cfg().to_dict()


def test_settings_written_as_a_command_line_parse_back_to_the_same_config():
    """`argv_from` is `settings_from` reversed: switches either way, the negated --no-progress, lists, exact floats."""
    values = {"model": "m", "data": "fashion-mnist", "out": "o", "distill": False, "new_classes": True,
              "train": "full", "progress": False, "compile": False, "noise_blocks": (0, 2), "scale": (0.6, 1.0),
              "warmup_epochs": 0.03, "lr": 1.2345678e-4, "max_steps": 3, "drop_block": None}  # fmt: skip
    argv = argv_from(SETTINGS, values)
    assert argv[0] == "m" and "--no-distill" in argv and "--no-progress" in argv and "--compile" not in argv
    assert argv[argv.index("--noise-blocks") + 1] == "0,2" and argv[argv.index("--crop-scale") + 1] == "0.6,1"
    assert argv_from(SETTINGS, {"distill": True, "progress": True}) == ["--distill"]
    finetune = get_command(app).commands["finetune"]
    parsed = finetune.make_context("finetune", list(argv)).params  # what the command would be called with
    assert TrainConfig(**settings_from(SETTINGS, parsed)) == TrainConfig(**values)
