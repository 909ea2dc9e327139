"""Atomic, resumable training checkpoints: OUT/checkpoint/last.pt (+ a small JSON beside it for people).

Everything a resumed run needs to continue exactly: model (backbone and heads), optimizer, scheduler, AMP
scaler, RNG states (python, numpy, torch, CUDA), epoch and optimizer steps done. The data order is a function
of (seed, epoch), so the position in the epoch is just the step count. Saved with plain types and tensors
only, so it loads with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import torch

from tnt_cli.errors import SettingError, first_line
from tnt_cli.io.atomic import atomic_write_bytes, atomic_write_json
from tnt_cli.io.names import CHECKPOINT

CHECKPOINT_DIR = CHECKPOINT
CHECKPOINT_FILE = "last.pt"
FORMAT = 1


def checkpoint_path(out: str | Path) -> Path:
    return Path(out) / CHECKPOINT_DIR / CHECKPOINT_FILE


def rng_state() -> dict:
    np_kind, np_keys, np_pos, np_gauss, np_cached = np.random.get_state()
    state = {
        "python": _tuplify(random.getstate()),
        "numpy": (np_kind, torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_gauss), float(np_cached)),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_tuplify(state["python"]))
    kind, keys, pos, gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():  # the GPUs this machine has (a resume may see fewer)
        for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)


def restore_scaler(scaler: torch.amp.GradScaler, state: dict) -> None:
    """Load a GradScaler's saved state. An empty one (the run did not scale: fp32 or bf16, e.g. made on the CPU)
    leaves the scaler fresh, where torch would refuse it when this run scales (fp16 on an older GPU)."""
    if state:
        scaler.load_state_dict(state)


def _tuplify(value):
    return tuple(_tuplify(v) for v in value) if isinstance(value, (list, tuple)) else value


def save_checkpoint(out: str | Path, state: dict, summary: dict) -> Path:
    """Write the checkpoint atomically (temp file + fsync + rename), then its JSON summary."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    path = atomic_write_bytes(checkpoint_path(out), buffer.getvalue())
    atomic_write_json(path.with_name("state.json"), summary)
    return path


def load_checkpoint(out: str | Path, map_location: str | torch.device = "cpu") -> dict:
    path = checkpoint_path(out)
    if not path.exists():
        raise SettingError("{resume}: no checkpoint at {path}", path=path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {first_line(exc)}"
        raise SettingError("{resume}: cannot read {path}: {reason}", path=path, reason=reason) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise SettingError("{resume}: {path} is not a tnt checkpoint of format {format}", path=path, format=FORMAT)
    return state
