"""Hugging Face Hub access for loading: ids, downloads, and the Hub's many errors as one line each."""

from __future__ import annotations

import re
from pathlib import Path

from tnt_cli.errors import TntError
from tnt_cli.io.offline import is_offline

HUB_PREFIX = "hf-hub:"
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def parse_hub_spec(spec: str) -> tuple[str, str | None]:
    """'hf-hub:org/name[@rev]' -> ('org/name', rev or None), refusing malformed ids."""
    body = spec[len(HUB_PREFIX) :] if spec.startswith(HUB_PREFIX) else spec
    repo, _, revision = body.partition("@")
    if not REPO_ID.match(repo) or "@" in revision:
        raise TntError(f"{spec!r} is not a Hub model id: write hf-hub:org/name or hf-hub:org/name@revision")
    return repo, revision or None


def hub_model_id(value: object) -> str | None:
    """`value` as a Hub model id (`org/name`) for `base_model`, or None for local paths and anything else.

    Accepts `hf-hub:org/name[@rev]` (prefix and revision dropped): the Hub's `base_model` takes bare ids only.
    """
    if not isinstance(value, str):
        return None
    repo = value.removeprefix(HUB_PREFIX).split("@")[0]
    if not REPO_ID.match(repo) or (not value.startswith(HUB_PREFIX) and Path(value).expanduser().exists()):
        return None
    return repo


def hub_error(exc: BaseException, what: str) -> TntError | None:
    """A one-line TntError for a Hub or network failure while fetching `what`; None if `exc` is something else."""
    from huggingface_hub import errors

    home = _hf_home()
    if isinstance(exc, (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled)):
        if is_offline():
            return TntError(
                f"{what} is not in the local Hugging Face cache ({home}) and offline mode is on: "
                "download it once online, or unset HF_HUB_OFFLINE / drop --offline"
            )
        return TntError(
            f"could not reach the Hugging Face Hub for {what} (network down?) and it is not cached in {home}"
        )
    if isinstance(exc, errors.GatedRepoError):
        return TntError(f"{what} is gated: accept its terms on huggingface.co and log in (`hf auth login` or HF_TOKEN)")
    if isinstance(exc, errors.RepositoryNotFoundError):
        return TntError(
            f"{what} was not found on the Hugging Face Hub (if it is private, log in with `hf auth login` or HF_TOKEN)"
        )
    if isinstance(exc, errors.RevisionNotFoundError):
        return TntError(f"{what}: that revision does not exist on the Hub")
    if isinstance(exc, errors.EntryNotFoundError):
        return TntError(f"{what}: file not found in the repository")
    if isinstance(exc, errors.HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        return TntError(f"the Hugging Face Hub refused {what} (HTTP {status or '?'}): {_first_line(exc)}")
    if is_network_error(exc):
        return TntError(f"network error while fetching {what} from the Hugging Face Hub: {_first_line(exc)}")
    return None


def is_network_error(exc: BaseException) -> bool:
    """Connection failures from httpx (huggingface_hub 1.x/2.x), requests or the socket layer."""
    module = type(exc).__module__ or ""
    if module.split(".")[0] in {"httpx", "httpx2", "httpcore", "requests", "urllib3"}:
        return True
    return isinstance(exc, (ConnectionError, TimeoutError)) and not isinstance(exc, FileNotFoundError)


def download(repo: str, filename: str, revision: str | None, *, what: str) -> Path:
    """hf_hub_download with errors turned into one line (honours HF_HUB_OFFLINE and the cache)."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, filename, revision=revision, local_files_only=is_offline()))
    except Exception as exc:
        mapped = hub_error(exc, what)
        if mapped is None:
            raise
        raise mapped from None


def download_first(repo: str, filenames: tuple[str, ...], revision: str | None, *, what: str) -> Path:
    """The first of `filenames` the repository has (weights: safetensors before pickles)."""
    from huggingface_hub import errors, hf_hub_download

    for name in filenames:
        try:
            return Path(hf_hub_download(repo, name, revision=revision, local_files_only=is_offline()))
        except errors.EntryNotFoundError:  # remote 404, or not in the cache while offline
            continue
        except Exception as exc:
            mapped = hub_error(exc, what)
            if mapped is None:
                raise
            raise mapped from None
    if is_offline():
        raise TntError(
            f"{what}: none of {', '.join(filenames)} is in the local Hugging Face cache ({_hf_home()}) "
            "and offline mode is on"
        )
    raise TntError(f"{what} has none of {', '.join(filenames)}")


def _hf_home() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover - only the message suffers
        return "the Hugging Face cache"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
