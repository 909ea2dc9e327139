"""Hugging Face Hub access for loading: ids, downloads, and the Hub's many errors as one line each."""

from __future__ import annotations

import re
from pathlib import Path

from tnt_cli.errors import SettingError, TntError, first_line
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


def hub_error(exc: BaseException, what: str, *, upload: bool = False) -> TntError | None:
    """A one-line TntError for a Hub or network failure; None if `exc` is something else.

    The one mapping of the Hub's errors, for both directions: fetching `what` (a model or data spec), or, with
    `upload`, pushing to the repo `what`.
    """
    from huggingface_hub import errors

    if isinstance(exc, TntError):
        return exc
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if upload:
        if isinstance(exc, errors.OfflineModeIsEnabled):
            return offline_refusal("cannot push to the Hugging Face Hub")
        if isinstance(exc, errors.RepositoryNotFoundError) or status in (401, 403):
            return TntError(
                f"cannot write to {what}: the token has no write access to it (check the org name, and that the "
                "token from HF_TOKEN / `hf auth login` has write permission)"
            )
    elif isinstance(exc, (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled)):
        home = _hf_home()
        if is_offline():
            return SettingError(
                "{what} is not in the local Hugging Face cache ({home}) and offline mode is on: "
                "download it once online, or unset HF_HUB_OFFLINE / drop {offline}",
                what=what,
                home=home,
            )
        return TntError(
            f"could not reach the Hugging Face Hub for {what} (network down?) and it is not cached in {home}"
        )
    elif isinstance(exc, errors.GatedRepoError):
        return TntError(f"{what} is gated: accept its terms on huggingface.co and log in (`hf auth login` or HF_TOKEN)")
    elif isinstance(exc, errors.RepositoryNotFoundError):
        return TntError(
            f"{what} was not found on the Hugging Face Hub (if it is private, log in with `hf auth login` or HF_TOKEN)"
        )
    elif isinstance(exc, errors.RevisionNotFoundError):
        return TntError(f"{what}: that revision does not exist on the Hub")
    elif isinstance(exc, errors.EntryNotFoundError):
        return TntError(f"{what}: file not found in the repository")
    if isinstance(exc, errors.HfHubHTTPError):
        target = f"the upload to {what}" if upload else what
        return TntError(f"the Hugging Face Hub refused {target} (HTTP {status or '?'}): {first_line(exc)}")
    if is_network_error(exc):
        if upload:
            return TntError(f"could not reach the Hugging Face Hub to push {what}: {first_line(exc)} (network down?)")
        return TntError(f"network error while fetching {what} from the Hugging Face Hub: {first_line(exc)}")
    return None


def offline_refusal(what_fails: str) -> SettingError:
    """Offline mode (HF_HUB_OFFLINE, or the `offline` setting) stops something that needs the network."""
    return SettingError("offline mode is on (HF_HUB_OFFLINE / {offline}): {what_fails}", what_fails=what_fails)


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
