"""Help screens that read well at 80-120 columns: choices shown, arguments named as the text names them, prose that
wraps at the terminal's width, and examples that paste as one command."""

from __future__ import annotations

import pytest
from _helpers import run_cli

from tnt_cli.cli.app import COMMANDS

WIDTHS = (80, 100, 120)
CHOICES = {
    "finetune": ["--method [tnt|random|evit|evit-fuse|tome]", "--recipe [default|official]", "--train [heads|full]",
                 "--reducer [drop|merge|fuse]"],
    "evaluate": ["--method [auto|tnt|random|evit|evit-fuse|tome|dense]", "--reducer [drop|merge|fuse]"],
    "visualize": ["--method [auto|tnt|random|evit]"],
    "calibrate": ["--reducer [drop|merge|fuse]"],
    "benchmark": ["--dtype [fp32|bf16|fp16]"],
}  # fmt: skip
ARGUMENTS = {"compare": "MODELS...", "push": "MODEL_DIR REPO", "visualize": "MODEL IMAGES..."}


def help_screen(name: str, width: int, monkeypatch) -> list[str]:
    monkeypatch.setenv("COLUMNS", str(width))
    result = run_cli(name, "--help")
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def description(lines: list[str]) -> list[str]:
    """The text between the usage line and the first panel."""
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("Usage:")) + 1
    end = next(i for i, line in enumerate(lines) if line.lstrip().startswith("╭"))
    return lines[start:end]


def paragraphs(lines: list[str]) -> list[list[str]]:
    out: list[list[str]] = [[]]
    for line in lines:
        if line.strip():
            out[-1].append(line.rstrip())
        elif out[-1]:
            out.append([])
    return [p for p in out if p]


def is_example(paragraph: list[str]) -> bool:
    return paragraph[0].strip().startswith(("tnt ", "torchrun ", "Examples:"))


@pytest.mark.parametrize("name", CHOICES)
def test_choices_are_shown(name, monkeypatch):
    text = " ".join(" ".join(help_screen(name, 200, monkeypatch)).split())  # one line, single spaces
    for option in CHOICES[name]:
        flag, choices = option.split(" ")
        assert f"{flag} {choices}" in text or f"{flag} -{flag[2]} {choices}" in text, option


@pytest.mark.parametrize("name", COMMANDS)
def test_the_usage_line_names_the_arguments(name, monkeypatch):
    usage = next(line for line in help_screen(name, 120, monkeypatch) if "Usage:" in line)
    assert "{" not in usage, usage
    assert usage.rstrip().endswith(ARGUMENTS.get(name, "MODEL")), usage


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", COMMANDS)
def test_descriptions_wrap_at_the_terminal_width(name, width, monkeypatch):
    """A prose paragraph's lines all reach the right margin but its last: no line ends early (a docstring's line
    break kept), which reads ragged."""
    for paragraph in paragraphs(description(help_screen(name, width, monkeypatch))):
        if is_example(paragraph):
            continue
        for line in paragraph[:-1]:
            assert len(line) > width - 20, f"ragged at {width} columns: {line!r}"


@pytest.mark.parametrize("name", COMMANDS)
def test_examples_paste_as_one_command(name, monkeypatch):
    """At 80 columns every example is one line that starts a command: copied, it runs as written."""
    lines = description(help_screen(name, 80, monkeypatch))
    start = next((i for i, line in enumerate(lines) if line.strip() == "Examples:"), None)
    assert start is not None, "no examples"
    examples = [line.strip() for line in lines[start + 1 :] if line.strip()]
    assert examples
    for line in examples:
        assert line.startswith(("tnt ", "torchrun ")) and not line.endswith("\\"), line


@pytest.mark.parametrize("argv", [["--help"], ["finetune", "--help"], ["compare", "--help"]])
def test_help_imports_neither_torch_nor_timm(argv):
    """`tnt --help` stays instant: help screens are built from torch-free declarations (speed goals live in
    benchmarks; what is imported is the part a test can hold)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "tnt_cli", *argv], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert "Usage" in proc.stdout and not imported & {"torch", "timm"}
