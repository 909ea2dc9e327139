"""Every command's settings are declared once (`tnt_cli.settings.setting`): calibrate's and benchmark's options come
from their dataclasses as finetune's do, the settings several commands share (MODEL, --data, --device, ...) have
one declaration, and --device takes cuda:N everywhere."""

from __future__ import annotations

import pytest
from _helpers import error_line, run_cli
from typer.main import get_command

from tnt_cli.bench.config import BenchConfig
from tnt_cli.cli.app import COMMANDS, app
from tnt_cli.errors import SettingError
from tnt_cli.eval.grid import Calibration
from tnt_cli.settings import SHARED, declarations
from tnt_cli.train.config import SETTINGS

OTHER_MEANINGS = {("visualize", "data")}  # visualize's --data only names the classes
DECLARED = {"finetune": SETTINGS, "calibrate": declarations(Calibration), "benchmark": declarations(BenchConfig)}


def options(name: str) -> dict:
    command = get_command(app).commands[name]
    return {opt: p for p in command.params for opt in getattr(p, "opts", [])}


@pytest.mark.parametrize("name", DECLARED)
def test_options_come_from_the_declarations(name):
    """Each declared setting is an option with the declaration's flag, help and default: nothing restated."""
    found = options(name)
    arguments = {p.name: p for p in get_command(app).commands[name].params if p.param_type_name == "argument"}
    for s in DECLARED[name]:
        param = arguments[s.name] if s.argument else found[s.flag]
        assert param.help.startswith(s.help), (s.name, param.help)
        if s.parse is None and not s.required and s.flag.startswith("--") and not s.flag.startswith("--no-"):
            assert param.default == s.default, (s.name, param.default, s.default)


@pytest.mark.parametrize("shared", ["model", "data", "device", "batch_size", "workers", "split", "seed"])
def test_a_shared_setting_is_one_declaration(shared):
    """Wherever a command takes a shared setting under its flag, it shows the same choices and help."""
    s = SHARED[shared]
    seen = []
    for name in COMMANDS:
        params = get_command(app).commands[name].params
        param = next((p for p in params if p.name == shared and p.param_type_name == "argument"), None)
        param = param or options(name).get(s.flag)
        if param is not None and (name, shared) not in OTHER_MEANINGS:
            seen.append((name, param.metavar, param.help))
    commands = {name for name, _, _ in seen}
    assert len(commands) >= (2 if shared != "model" else len(COMMANDS) - 2), seen  # compare and push take others
    if shared in ("device", "model", "data", "workers"):
        assert len({(metavar, text) for _, metavar, text in seen}) == 1, seen


def test_device_accepts_cuda_n_everywhere():
    assert BenchConfig(device="cuda:1").device == "cuda:1"
    with pytest.raises(SettingError, match=r"^device must be one of auto, cpu, cuda, cuda:N, got 'gpu'$"):
        BenchConfig(device="gpu")
    assert "cuda:N" in SHARED["device"].help


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("command", ["benchmark", "evaluate", "calibrate"])
def test_cuda_n_without_a_gpu_is_refused_for_the_right_reason(command, tmp_path):
    args = {"benchmark": ["deit_tiny_patch16_224", "--random-weights"],
            "evaluate": ["deit_tiny_patch16_224", "--random-weights", "--data", "fashion-mnist"],
            "calibrate": ["deit_tiny_patch16_224", "--random-weights", "--data", "fashion-mnist", "-o", tmp_path / "c"]}
    error_line(run_cli(command, *args[command], "--device", "cuda:1"), "--device cuda:1", "no CUDA")  # fmt: skip


def test_no_setting_is_spelled_two_ways():
    from tnt_cli.cli._errors import DECLARED as ALL

    spellings: dict[str, set[str]] = {}
    for s in ALL:
        spellings.setdefault(s.name, set()).add(s.flag)
    assert {name: flags for name, flags in spellings.items() if len(flags) > 1} == {}
