"""Upload a model directory to the Hugging Face Hub: create the repo, one commit, the URL back.

Used by `tnt push` and by every command's `--push-to-hub REPO`. The card is uploaded as written (README.md
with `base_model`): `ModelCard.validate()` would need the network, and timm's push_to_hf_hub writes no
base_model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tnt_cli.errors import TntError
from tnt_cli.io.hub import REPO_ID, hub_error, offline_refusal
from tnt_cli.io.offline import is_offline

# what never goes to the Hub: hidden files and folders (tnt's staging directories, .git, .cache), temporaries
IGNORE_PATTERNS = [".*", "*/.*", "__pycache__/", "*/__pycache__/", "*.partial", "*.tmp"]


@dataclass(frozen=True)
class UploadFile:
    path: str  # relative, posix
    size: int


def upload_plan(model_dir: str | Path) -> list[UploadFile]:
    """The files `upload_folder` sends: huggingface_hub's own filter with the same patterns as the upload.

    A file that is a link resolving outside MODEL_DIR (a planted `notes.txt -> ~/.ssh/id_rsa`, or a Hub cache
    snapshot's links into its blobs) is refused: uploading it would publish a file that is not the directory's.
    """
    from huggingface_hub.utils import filter_repo_objects

    root = Path(model_dir)
    inside = root.resolve()
    paths = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    kept = list(filter_repo_objects(paths, ignore_patterns=IGNORE_PATTERNS))
    for rel in kept:
        real = (root / rel).resolve()
        if not real.is_relative_to(inside):
            raise TntError(f"{root / rel} is a link to {real}, outside {root}: tnt push uploads only the "
                           "directory's own files (remove the link, or copy the file into the directory)")  # fmt: skip
    return [UploadFile(rel, (root / rel).stat().st_size) for rel in kept]


def check_model_dir(model_dir: str | Path) -> Path:
    """Refuse anything that is not a complete tnt model directory (config.json with "tnt", weights, heads)."""
    from tnt_cli.io.model_dir import HEADS, WEIGHTS, read_config

    path = Path(model_dir)
    if not path.exists():
        raise TntError(f"no such directory: {path}")
    if not path.is_dir():
        raise TntError(f"{path} is not a directory: push uploads a model directory written by tnt")
    tnt = read_config(path).get("tnt")
    if not isinstance(tnt, dict):
        raise TntError(
            f'{path} is a plain timm model directory, not a tnt one (config.json has no "tnt" object): `tnt prune` '
            "makes a tnt model of it; `hf upload` uploads it as it is"
        )
    heads = tnt.get("heads_file", HEADS)
    missing = [name for name in (WEIGHTS, heads) if not (path / name).is_file()]
    if missing:
        raise TntError(f"{path} is not a complete tnt model directory: {' and '.join(missing)} missing")
    return path


def check_repo_id(repo: str) -> str:
    repo = repo[len("hf-hub:") :] if repo.startswith("hf-hub:") else repo
    if not REPO_ID.match(repo):
        raise TntError(f"{repo!r} is not a Hub repo id: write org/name (or user/name)")
    return repo


def check_push_target(repo: str) -> str:
    """Everything about a push that can be checked before the work that produces the directory: the repo id,
    offline mode and a token. Returns the repo id."""
    repo = check_repo_id(repo)
    if is_offline():
        raise offline_refusal("cannot push to the Hugging Face Hub")
    import huggingface_hub

    if not huggingface_hub.get_token():
        raise TntError("no Hugging Face token: set HF_TOKEN or run `hf auth login`, then push again")
    return repo


def push_folder(
    model_dir: str | Path,
    repo: str,
    private: bool = False,
    dry_run: bool = False,
    commit_message: str | None = None,
    revision: str | None = None,
) -> str:
    """Create REPO (if needed) and upload MODEL_DIR in one commit; returns the repo URL.

    With `dry_run` nothing is sent and no token is needed: call `upload_plan` to list the files.
    """
    path = check_model_dir(model_dir)
    upload_plan(path)  # refuses a link out of the directory (also for a dry run) before anything else
    repo = check_repo_id(repo)
    url = f"https://huggingface.co/{repo}"
    if dry_run:
        return url
    check_push_target(repo)
    import huggingface_hub

    token = huggingface_hub.get_token()
    fill_repo_in_card(path, repo)
    api = huggingface_hub.HfApi(token=token)
    try:
        repo_url = api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
        if revision:
            api.create_branch(repo, branch=revision, exist_ok=True, repo_type="model")
        api.upload_folder(
            folder_path=str(path),
            repo_id=repo,
            repo_type="model",
            revision=revision,
            commit_message=commit_message or f"Upload {path.name} with tnt",
            ignore_patterns=IGNORE_PATTERNS,
        )
    except Exception as exc:
        mapped = hub_error(exc, repo, upload=True)
        if mapped is None:  # unknown: keeps its type for the last-resort handler
            raise
        raise mapped from None
    return str(getattr(repo_url, "url", None) or url)


def fill_repo_in_card(model_dir: Path, repo: str) -> None:
    """Replace the card's `<this repo>` placeholders with the repo it is pushed to (README rewritten atomically)."""
    from tnt_cli.io.atomic import atomic_write_text
    from tnt_cli.io.card import REPO_PLACEHOLDER

    card = model_dir / "README.md"
    if card.is_file():
        text = card.read_text(encoding="utf-8")
        if REPO_PLACEHOLDER in text:
            atomic_write_text(card, text.replace(REPO_PLACEHOLDER, repo))
