"""Offline mode for the Hugging Face Hub.

huggingface_hub reads HF_HUB_OFFLINE once, when it is first imported (importing timm imports it), so the
`--offline` flag must set the variable before anything imports timm. Commands call `set_offline` first thing.
When the Hub cannot be reached, loading runs in `forced_offline` (see `tnt_cli.io.hub.hub_access`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

TRUE_VALUES = {"1", "on", "yes", "true"}
_forced = False  # offline only because the Hub was unreachable (`forced_offline`)


def set_offline(enabled: bool = True) -> None:
    """Turn Hub offline mode on for this process (no-op when `enabled` is false: the environment decides)."""
    if not enabled:
        return
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:  # already imported (e.g. in tests or the Python API): update its cached flag
        constants.HF_HUB_OFFLINE = True


def is_offline() -> bool:
    """True when HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set, or huggingface_hub already runs offline."""
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None and getattr(constants, "HF_HUB_OFFLINE", False):
        return True
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in TRUE_VALUES


@contextmanager
def forced_offline() -> Iterator[None]:
    """Offline mode for the duration (the Hub was found unreachable): cached files still load, the rest fails at
    once instead of after huggingface_hub's retries. The process's own setting is put back afterwards."""
    global _forced
    constants = sys.modules.get("huggingface_hub.constants")
    saved_env, saved_flag = os.environ.get("HF_HUB_OFFLINE"), getattr(constants, "HF_HUB_OFFLINE", None)
    set_offline(True)
    _forced = True
    try:
        yield
    finally:
        _forced = False
        if saved_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved_env
        if constants is not None:
            constants.HF_HUB_OFFLINE = saved_flag


def offline_forced() -> bool:
    """True inside `forced_offline`: offline because the Hub could not be reached, not because the user asked."""
    return _forced
