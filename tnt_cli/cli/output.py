"""Where output goes: results and JSON on stdout, progress and notes on stderr.

Both consoles show untrusted text (paths, file and class names) as it is: no markup, control characters escaped
(`tnt_cli.terminal`).
"""

from __future__ import annotations

from typing import Any

from tnt_cli.terminal import console

stdout = console()
stderr = console(stderr=True)


def print_json(data: Any) -> None:
    """JSON on stdout, nothing else (so `--json | jq` works); non-finite numbers are null."""
    from tnt_cli.io.jsonio import dumps

    print(dumps(data))
