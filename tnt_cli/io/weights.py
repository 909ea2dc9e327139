"""Reading and writing tensors safely: safetensors, and .pth pickles with weights_only=True only."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tnt_cli._version import __version__
from tnt_cli.errors import TntError, first_line

if TYPE_CHECKING:
    import torch

PRODUCER = f"tnt-token-pruning {__version__}"


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file; a truncated or corrupt file is one clear error."""
    from safetensors import safe_open

    path = Path(path)
    try:
        tensors = {}
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            metadata = dict(fh.metadata() or {})
            for key in fh.keys():  # noqa: SIM118 - safe_open handles are not mappings
                tensors[key] = fh.get_tensor(key)
    except FileNotFoundError:
        raise TntError(f"no such file: {path}") from None
    except Exception as exc:  # SafetensorError, OSError, ...: the file is not what it claims to be
        raise TntError(
            f"{path} is not a readable safetensors file (truncated or corrupt?): {first_line(exc)}"
        ) from None
    return tensors, metadata


def write_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    """save_file with contiguous CPU copies and string metadata (safetensors refuses anything else).

    Written through `atomic_file`: whole or not at all, and with the mode the user's umask gives (safetensors
    itself creates its files owner-only, 0600).
    """
    from safetensors.torch import save_file

    from tnt_cli.io.atomic import atomic_file
    from tnt_cli.io.jsonio import dumps

    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {"format": "pt", "producer": PRODUCER}
    for key, value in metadata.items():
        meta[key] = value if isinstance(value, str) else dumps(value, indent=None)
    with atomic_file(path) as tmp:
        save_file(clean, str(tmp), metadata=meta)


def read_pickle(path: str | Path) -> Any:
    """torch.load with weights_only=True; a pickle that needs code to unpickle is refused, never run.

    argparse.Namespace is allowed too: training scripts (DeiT's, the official TNT code's) store their
    arguments in checkpoints, and building a Namespace runs no code.
    """
    import pickle

    import torch

    path = Path(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TntError(f"no such file: {path}") from None
    except pickle.UnpicklingError as exc:
        match = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if match is None and ("Unsupported operand" in str(exc) or "WeightsUnpickler" not in str(exc)):
            raise TntError(f"{path} is not a readable PyTorch checkpoint: {first_line(exc)}") from None
        needs = f" ({match.group(1)})" if match else ""
        raise TntError(
            f"{path} needs code to unpickle{needs}; tnt only loads .pth files with weights_only=True: "
            "re-save it as a plain state dict (torch.save(model.state_dict(), ...)) or as safetensors"
        ) from None
    except Exception as exc:  # truncated zip, not a pickle at all, ...
        raise TntError(f"{path} is not a readable PyTorch checkpoint: {first_line(exc)}") from None


def extract_state_dict(obj: Any, path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint: itself, or under 'model' / 'state_dict' (DDP 'module.' stripped)."""
    import torch

    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state_dict", "module"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        keys = ", ".join(list(obj)[:6]) if isinstance(obj, dict) else type(obj).__name__
        raise TntError(f"{path} holds no state dict of tensors (found: {keys})")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return dict(obj)
