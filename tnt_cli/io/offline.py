"""Offline mode for the Hugging Face Hub.

huggingface_hub reads HF_HUB_OFFLINE once, when it is first imported (importing timm imports it), so the
`--offline` flag must set the variable before anything imports timm. Commands call `set_offline` first thing.
"""

from __future__ import annotations

import os
import sys

TRUE_VALUES = {"1", "on", "yes", "true"}


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
