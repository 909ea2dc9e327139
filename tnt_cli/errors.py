"""Errors users can act on. The CLI prints their message as one line and exits non-zero.

Library errors say what is wrong in neutral words (they are raised to Python API users too); the CLI's error
table (`tnt_cli.cli._errors`) adds the flag that fixes it and picks the exit code.
"""


class TntError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class ScheduleError(TntError):
    """A pruning schedule that cannot run on the given model."""


class Interrupted(TntError):
    """The user stopped the run (Ctrl-C / SIGTERM); whatever could be saved was saved."""


class ClassMismatch(TntError):
    """The data's classes do not map onto the model's classes."""
