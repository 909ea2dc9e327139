"""Where output goes: results and JSON on stdout, progress and notes on stderr."""

from __future__ import annotations

from typing import Any

from rich.console import Console

stdout = Console(highlight=False)
stderr = Console(stderr=True, highlight=False)


def print_json(data: Any) -> None:
    """JSON on stdout, nothing else (so `--json | jq` works); non-finite numbers are null."""
    from tnt_cli.io.jsonio import dumps

    print(dumps(data))
