"""`tnt push`: upload a model directory to the Hugging Face Hub."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tnt_cli.cli import options as o
from tnt_cli.cli.output import print_json, stderr, stdout


def push(
    model_dir: Annotated[
        Path,
        typer.Argument(
            help="A tnt model directory (what finetune, prune and tnt_cli.save write); a plain timm directory is "
            "refused: upload that with `hf upload`.",
            show_default=False,
        ),
    ],
    repo: Annotated[str, typer.Argument(help="Hub repo id, org/name.", show_default=False)],
    private: Annotated[bool, typer.Option("--private", help="Create the repo private (if it does not exist).")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be uploaded, with sizes; send nothing.")
    ] = False,
    revision: Annotated[
        str | None, typer.Option("--revision", help="Branch to commit to (created if missing).", show_default=False)
    ] = None,
    message: Annotated[str | None, typer.Option("--message", "-m", help="Commit message.", show_default=False)] = None,
    offline: o.Offline = False,
    json_out: o.JsonOut = False,
) -> None:
    """Create REPO on the Hugging Face Hub if needed and upload MODEL_DIR in one commit; print its URL.

    Needs a token with write access: HF_TOKEN, or `hf auth login`.

    Examples:

      tnt push models/deit_s_3.2g my-org/deit_s_3.2g

      tnt push models/deit_s_3.2g my-org/deit_s_3.2g --private --dry-run
    """
    o.apply_offline(offline)
    from tnt_cli.io.push import push_folder, upload_plan

    url = push_folder(model_dir, repo, private=private, dry_run=dry_run, commit_message=message, revision=revision)
    files = upload_plan(model_dir)
    total = sum(f.size for f in files)
    if json_out:
        print_json(
            {
                "url": url,
                "repo": repo,
                "dry_run": dry_run,
                "private": private,
                "revision": revision,
                "files": [{"path": f.path, "bytes": f.size} for f in files],
                "bytes": total,
            }
        )
        return
    if dry_run:
        for f in files:
            stdout.print(f"{human(f.size):>10}  {f.path}", soft_wrap=True)
        stdout.print(f"{human(total):>10}  total, {len(files)} files", soft_wrap=True)
        stdout.print(f"dry run: nothing uploaded; `tnt push` without --dry-run sends them to {url}", soft_wrap=True)
        return
    stderr.print(f"uploaded {len(files)} files ({human(total)})")
    stdout.print(url, soft_wrap=True)


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"  # pragma: no cover
