"""`tnt push` / push_folder with huggingface_hub.HfApi replaced by a recorder: nothing leaves the machine."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path
from typing import ClassVar

import huggingface_hub
import pytest
from _helpers import IO, error_line, run_cli, tiny_tnt
from huggingface_hub import constants, errors

from tnt_cli.engine import Schedule
from tnt_cli.errors import TntError
from tnt_cli.io.model_dir import save_model_dir
from tnt_cli.io.push import IGNORE_PATTERNS, push_folder, upload_plan


class Recorder:
    """Stands in for HfApi: records calls, snapshots the uploaded folder, can fail on demand."""

    calls: ClassVar[list] = []
    uploaded: ClassVar[dict[str, bytes]] = {}
    fail: ClassVar[BaseException | None] = None

    def __init__(self, token=None, **kwargs):
        Recorder.calls.append(("init", {"token": token}))

    def create_repo(self, repo_id, **kwargs):
        Recorder.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        if Recorder.fail is not None:
            raise Recorder.fail
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_branch(self, repo_id, **kwargs):
        Recorder.calls.append(("create_branch", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, *, folder_path, repo_id, **kwargs):
        Recorder.calls.append(("upload_folder", {"folder_path": folder_path, "repo_id": repo_id, **kwargs}))
        root = Path(folder_path)
        Recorder.uploaded = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
        return None


@pytest.fixture
def hub(monkeypatch):
    """Online-looking huggingface_hub with a token, HfApi recorded, and every socket connect forbidden."""
    Recorder.calls, Recorder.uploaded, Recorder.fail = [], {}, None
    monkeypatch.setattr(huggingface_hub, "HfApi", Recorder)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token_not_real")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    def no_network(*args, **kwargs):
        raise AssertionError("a test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    return Recorder


@pytest.fixture
def model_dir(tmp_path):
    model = tiny_tnt(shape=IO, schedule=Schedule(prune_layers=(1,), keep_rates=(0.5,)))
    metrics = {"finetune": {"pruned": {"top1": 0.8}}}
    return save_model_dir(tmp_path / "tiny_tnt", model, base_model="timm/vit_tiny_patch16_224.augreg_in21k",
                          metrics=metrics, training={"dataset": "fashion-mnist"})  # fmt: skip


def test_push_uploads_the_folder_in_one_commit(hub, model_dir):
    url = push_folder(model_dir, "my-org/tiny-tnt", private=True)
    assert url == "https://huggingface.co/my-org/tiny-tnt"
    names = [name for name, _ in hub.calls]
    assert names == ["init", "create_repo", "upload_folder"]
    create = hub.calls[1][1]
    assert create["private"] is True and create["exist_ok"] is True
    assert hub.calls[0][1]["token"] == "hf_test_token_not_real"
    assert {"config.json", "model.safetensors", "tnt_heads.safetensors", "README.md", "report.json"} <= set(
        hub.uploaded
    )
    config = json.loads(hub.uploaded["config.json"])
    assert config["architecture"] == "vit_tiny_patch16_224" and "tnt" in config
    card = huggingface_hub.ModelCard(hub.uploaded["README.md"].decode())
    assert card.data.library_name == "timm"
    assert card.data.base_model == "timm/vit_tiny_patch16_224.augreg_in21k"
    assert 'tnt_cli.load("hf-hub:my-org/tiny-tnt")' in card.text
    assert upload_ignores(hub) == IGNORE_PATTERNS  # the plan (--dry-run) and the upload filter alike


def upload_ignores(hub):
    return dict(hub.calls)["upload_folder"]["ignore_patterns"]


def test_upload_plan_is_huggingface_hubs_filter(model_dir):
    from huggingface_hub.utils import filter_repo_objects

    (model_dir / ".final-model").mkdir()
    (model_dir / ".final-model" / "config.json").write_text("{}")
    (model_dir / "calib").mkdir()
    (model_dir / "calib" / "schedule.json").write_text("{}")
    (model_dir / "calib" / ".DS_Store").write_text("")
    (model_dir / "x.tmp").write_text("")
    (model_dir / "__pycache__").mkdir()
    (model_dir / "__pycache__" / "a.pyc").write_text("")
    planned = [f.path for f in upload_plan(model_dir)]
    assert "calib/schedule.json" in planned and "model.safetensors" in planned
    assert not any(p.startswith((".", "__pycache__")) or "/." in p or p.endswith(".tmp") for p in planned)
    everything = sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file())
    assert planned == list(filter_repo_objects(everything, ignore_patterns=IGNORE_PATTERNS))


def test_cli_push_prints_the_url_and_dry_run_lists_files(hub, model_dir):
    result = run_cli("push", str(model_dir), "my-org/tiny-tnt", "--revision", "v1", "-m", "first")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "https://huggingface.co/my-org/tiny-tnt"
    upload = dict(hub.calls)["upload_folder"]
    assert upload["revision"] == "v1" and upload["commit_message"] == "first"

    hub.calls.clear()
    result = run_cli("push", str(model_dir), "my-org/tiny-tnt", "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert hub.calls == []
    assert "model.safetensors" in result.stdout and "config.json" in result.stdout and "KB" in result.stdout
    result = run_cli("push", str(model_dir), "my-org/tiny-tnt", "--dry-run", "--json")
    data = json.loads(result.stdout)
    sizes = {f["path"]: f["bytes"] for f in data["files"]}
    assert sizes["model.safetensors"] == (model_dir / "model.safetensors").stat().st_size
    assert data["dry_run"] is True


def test_push_refuses_what_is_not_a_model_directory(hub, model_dir, tmp_path):
    (tmp_path / "notes").mkdir()
    error_line(run_cli("push", str(tmp_path / "notes"), "my-org/x"), "no config.json")
    error_line(run_cli("push", str(tmp_path / "missing"), "my-org/x"), "no such directory")
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(model_dir / "config.json", bare / "config.json")
    error_line(run_cli("push", str(bare), "my-org/x"), "not a complete tnt model directory")
    shutil.copy(model_dir / "model.safetensors", bare / "model.safetensors")
    line = error_line(run_cli("push", str(bare), "my-org/x"), "not a complete tnt model directory")
    assert "tnt_heads.safetensors missing" in line  # without its heads file a tnt model is not worth pushing
    timm_only = tmp_path / "timm_only"
    timm_only.mkdir()
    config = json.loads((model_dir / "config.json").read_text())
    del config["tnt"]
    (timm_only / "config.json").write_text(json.dumps(config))
    shutil.copy(model_dir / "model.safetensors", timm_only / "model.safetensors")
    error_line(run_cli("push", str(timm_only), "my-org/x"), 'no "tnt" object')
    error_line(run_cli("push", str(model_dir), "not a repo"), "not a Hub repo id")
    assert hub.calls == []


def test_missing_token_and_offline(hub, model_dir, monkeypatch):
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    error_line(run_cli("push", str(model_dir), "my-org/x"), "no Hugging Face token", "hf auth login")
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_test_token_not_real")
    error_line(run_cli("push", str(model_dir), "my-org/x", "--offline"), "offline")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the variable alone is honoured too
    error_line(run_cli("push", str(model_dir), "my-org/x"), "offline")
    assert hub.calls == []


def http_error(cls, status: int):
    import httpx2

    response = httpx2.Response(status, request=httpx2.Request("POST", "https://huggingface.co/api/repos/create"))
    return cls(f"{status} Client Error", response=response)


@pytest.mark.parametrize(
    ("failure", "fragment"),
    [
        (lambda: http_error(errors.RepositoryNotFoundError, 404), "cannot write to my-org/x"),
        (lambda: http_error(errors.HfHubHTTPError, 403), "cannot write to my-org/x"),
        (lambda: http_error(errors.HfHubHTTPError, 401), "cannot write to my-org/x"),
        (lambda: http_error(errors.HfHubHTTPError, 500), "HTTP 500"),
        (lambda: __import__("httpx2").ConnectError("[Errno 111] Connection refused"), "could not reach"),
    ],
)
def test_hub_failures_are_one_line(hub, model_dir, failure, fragment):
    hub.fail = failure()
    error_line(run_cli("push", str(model_dir), "my-org/x"), fragment)
    with pytest.raises(TntError, match=fragment):
        push_folder(model_dir, "my-org/x")
