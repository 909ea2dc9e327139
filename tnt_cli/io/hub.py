"""Hugging Face Hub access for loading: ids, downloads, and the Hub's many errors as one line each."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tnt_cli.errors import SettingError, TntError, first_line
from tnt_cli.io.offline import forced_offline, is_offline, offline_forced

HUB_PREFIX = "hf-hub:"
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# huggingface_hub retries a failed request 5 times (about 25 s) before it falls back to the cache: one probe,
# without retries, answers first
PROBE_TIMEOUT_S = 3.0
PROBE_MEMORY_S = 60.0  # an unreachable Hub is not asked again for this long
_probe: tuple[float, bool] | None = None  # (when, reachable)


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the Hub's endpoint answers at all (any HTTP status), within `timeout` seconds, through
    huggingface_hub's own client (its proxies and HF_ENDPOINT). A success is remembered for the process."""
    global _probe
    if _probe is not None and (_probe[1] or time.monotonic() - _probe[0] < PROBE_MEMORY_S):
        return _probe[1]
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    answered: list[bool] = []

    def head() -> None:
        try:
            get_session().head(constants.ENDPOINT, timeout=timeout)
            answered.append(True)
        except Exception:  # DNS, refused, timed out, TLS, proxy: all mean "not reachable from here"
            answered.append(False)

    worker = threading.Thread(target=head, daemon=True)  # a DNS lookup ignores the timeout: the thread bounds it
    worker.start()
    worker.join(timeout + 0.5)
    _probe = (time.monotonic(), bool(answered and answered[0]))
    return _probe[1]


@contextmanager
def hub_access() -> Iterator[None]:
    """Around anything that may download from the Hub: when it cannot be reached, run offline (cached files load,
    anything else fails at once with `hub_error`'s unreachable line) instead of waiting out the retries."""
    if is_offline() or hub_reachable():
        yield
        return
    with forced_offline():
        yield


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


def hub_error(exc: BaseException, what: str, *, upload: bool = False, timm_name: bool = False) -> TntError | None:
    """A one-line TntError for a Hub or network failure; None if `exc` is something else.

    The one mapping of the Hub's errors, for both directions: fetching `what` (a model or data spec), or, with
    `upload`, pushing to the repo `what`. `timm_name`: `what` is a timm name, which `random_weights` builds
    without any download.
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
        shapes = "; for shapes and speed work {random_weights} needs no download" if timm_name else ""
        if is_offline() and not offline_forced():
            return SettingError(
                "{what} is not in the local Hugging Face cache ({home}) and offline mode is on: "
                "download it once online, or unset HF_HUB_OFFLINE / drop {offline}" + shapes,
                what=what,
                home=home,
            )
        return SettingError(
            "could not reach the Hugging Face Hub ({endpoint}) for {what}, and it is not in the local cache "
            "({home}): download it once where the Hub is reachable (then {offline} runs from the cache)" + shapes,
            what=what,
            home=home,
            endpoint=_endpoint(),
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


def peek_config(repo: str) -> dict | None:
    """A Hub repo's config.json, from the local cache, else in one request when the Hub is reachable; None when
    neither has it (for messages only: it never raises)."""
    import json

    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    try:
        path = try_to_load_from_cache(repo, "config.json")
        if not isinstance(path, str) and not is_offline() and hub_reachable():
            path = hf_hub_download(repo, "config.json", etag_timeout=PROBE_TIMEOUT_S)
        config = json.loads(Path(path).read_text()) if isinstance(path, str) else None
    except Exception:  # not found, gated, a network error: nothing to tell
        return None
    return config if isinstance(config, dict) else None


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


def _endpoint() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.ENDPOINT)
    except Exception:  # pragma: no cover - only the message suffers
        return "huggingface.co"


def _hf_home() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover - only the message suffers
        return "the Hugging Face cache"
