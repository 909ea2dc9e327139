"""A loaded model behaves like a timm model: timm's helpers read its own config, `describe` takes it, and the
package shows its public API."""

from __future__ import annotations

import pytest
import timm.data

import tnt_cli
from tnt_cli.engine import Schedule


def test_timm_data_config_of_a_loaded_model_is_its_own(base):
    model = tnt_cli.load(base, require_trained_heads=False)  # a plain timm directory: 1x28x28, mean 0.5
    config = timm.data.resolve_model_data_config(model)
    assert config["input_size"] == (1, 28, 28) and tuple(config["mean"]) == (0.5,)
    assert model.pretrained_cfg is model.vit.pretrained_cfg and model.default_cfg == model.pretrained_cfg
    assert model.num_classes == model.vit.num_classes == 10
    transform = timm.data.create_transform(**config)  # the preprocessing README shows
    from PIL import Image

    assert tuple(transform(Image.new("L", (28, 28))).shape) == (1, 28, 28)


def test_describe_takes_a_model_object_and_leaves_it_as_it_was(tiny_dir):
    model = tnt_cli.load(tiny_dir)
    own = model.schedule
    by_path = tnt_cli.describe(tiny_dir, schedule=Schedule((1,), (0.5,)))
    by_object = tnt_cli.describe(model, schedule=Schedule((1,), (0.5,)))
    assert by_object["gmacs_pruned"] == pytest.approx(by_path["gmacs_pruned"])
    assert by_object["blocks"] == by_path["blocks"] and by_object["source"] == "TNTModel"
    assert model.schedule == own  # describing another schedule did not install it
    plain = tnt_cli.describe(model.vit)  # a plain timm ViT: dense
    assert plain["gmacs_pruned"] == pytest.approx(plain["gmacs_dense"]) == pytest.approx(by_path["gmacs_dense"])


def test_dir_shows_the_public_api():
    assert dir(tnt_cli) == sorted(tnt_cli.__all__)
    assert {"Schedule", "TNTModel", "load", "save", "describe"} <= set(dir(tnt_cli)) and "Any" not in dir(tnt_cli)
    assert all(hasattr(tnt_cli, name) for name in tnt_cli.__all__)
