"""The `tnt` Typer app: registers one module per command and turns errors into one clear line."""

from __future__ import annotations

import os
import sys

import click
import typer
from typer.core import TyperGroup

from tnt_cli._version import __version__
from tnt_cli.cli._errors import one_line
from tnt_cli.cli.command import TntCommand, hide_flag_types
from tnt_cli.cli.command import running_click as typer_click

# Raised by click/typer for usage errors, --help, exits and aborts: they have their own handling.
PASS_THROUGH = (
    click.ClickException,
    click.exceptions.Exit,
    click.Abort,
    typer_click.exceptions.ClickException,
    typer.Exit,
    typer.Abort,
    SystemExit,
)


def fail(message: str, code: int = 1) -> None:
    """`error: <one line>` on stderr and exit (printed here: typer would draw its own multi-line panel)."""
    click.echo(f"error: {one_line(message)}", err=True)
    raise SystemExit(code) from None


EXIT_PIPE_CLOSED = 141  # 128 + SIGPIPE: what a shell reports for `cat big | head`'s cat


def stdout_closed() -> bool:
    """True when stdout is a pipe whose reader has gone (`| head`): writing to it can only fail."""
    import select

    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no real stdout (captured by a test runner, closed)
        return False


def quiet_exit() -> None:
    """The reader of stdout went away: nothing left to say to it, so exit without a message or a traceback.

    stdout is pointed at /dev/null first, so Python's final flush of what is still buffered cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    raise SystemExit(EXIT_PIPE_CLOSED)


def _usage_line(exc) -> str:
    """A click usage error as one line, with where to read the command's options."""
    message = one_line(exc.format_message())
    ctx = getattr(exc, "ctx", None)
    where = f" (see `{ctx.command_path} --help`)" if ctx is not None and ctx.command_path else ""
    return f"{message}{where}"


class TntGroup(TyperGroup):
    """Catches errors from any command so users see one line (TNT_DEBUG=1 shows the traceback).

    What is printed and the exit code come from one table, `tnt_cli.cli._errors`: user errors exit 1, usage
    errors 2, internal errors (bugs) 3, Ctrl-C 130, SIGTERM 143 (handled like Ctrl-C by every command:
    `tnt_cli.stopping`). A reader that closed stdout (`tnt ... --json | head -c 10`) ends the command quietly
    with 141, as SIGPIPE ends other Unix tools.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        from tnt_cli.stopping import sigterm_as_interrupt

        try:
            with sigterm_as_interrupt():
                code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
                sys.stdout.flush()  # here, not at exit: a closed pipe is then caught below
        except BrokenPipeError:
            if not stdout_closed():
                raise
            quiet_exit()
        except (click.exceptions.UsageError, typer_click.exceptions.UsageError) as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # the help was printed: nothing to add
                raise SystemExit(exc.exit_code) from None
            fail(_usage_line(exc), 2)
        except (click.exceptions.ClickException, typer_click.exceptions.ClickException) as exc:
            fail(exc.format_message(), exc.exit_code)
        except (click.Abort, typer.Abort) as exc:  # stopped before the command ran (click turns it into Abort)
            from tnt_cli.cli._errors import describe

            fail(*describe(exc.__context__ if isinstance(exc.__context__, KeyboardInterrupt) else KeyboardInterrupt()))
        raise SystemExit(code if isinstance(code, int) else 0)

    def format_help(self, ctx: click.Context, formatter) -> None:
        hide_flag_types(self.get_params(ctx))
        super().format_help(ctx, formatter)

    def invoke(self, ctx: click.Context):
        from tnt_cli.cli._errors import describe

        try:
            return super().invoke(ctx)
        except PASS_THROUGH:
            raise
        except BrokenPipeError:
            if not stdout_closed():
                raise
            quiet_exit()
        except (Exception, KeyboardInterrupt) as exc:
            if os.environ.get("TNT_DEBUG"):
                raise
            message, code = describe(exc, ctx.invoked_subcommand)
            fail(message, code)


app = typer.Typer(
    cls=TntGroup,
    name="tnt",
    help="Training Noise Token (TNT) pruning for timm Vision Transformers: fine-tune, calibrate, prune, "
    "evaluate and benchmark ViTs that run on fewer tokens.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def version_line() -> str:
    """tnt's version and those of what it runs on, for bug reports: read from the installed packages' metadata,
    so torch and timm are not imported."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for package in ("torch", "timm", "huggingface_hub"):
        try:
            parts.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            parts.append(f"{package} not installed")
    return f"tnt {__version__} ({', '.join(parts)}, Python {platform.python_version()})"


def _version(value: bool) -> None:
    if value:
        typer.echo(version_line())
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", "-V", callback=_version, is_eager=True, help="Print the version (and torch's, timm's)."
    ),
    offline: bool = typer.Option(
        False, "--offline", help="Use only the local Hugging Face cache (same as HF_HUB_OFFLINE=1)."
    ),
) -> None:
    """tnt: Training Noise Token pruning."""
    if offline:  # before any command imports timm / huggingface_hub, which read the flag once
        from tnt_cli.io.offline import set_offline

        set_offline(True)


# One module per command: tnt_cli/cli/<name>.py defines a function <name>. Modules import torch lazily.
COMMANDS = ("info", "finetune", "calibrate", "prune", "evaluate", "compare", "benchmark", "visualize", "export",
            "push")  # fmt: skip


def _register() -> None:
    import importlib

    for name in COMMANDS:
        module = importlib.import_module(f"tnt_cli.cli.{name}")
        app.command(name, no_args_is_help=True, cls=TntCommand)(getattr(module, name))


_register()


def main() -> None:
    """Console-script entry point."""
    sys.exit(app())
