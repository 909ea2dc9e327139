"""Errors users can act on. The CLI prints their message as one line and exits non-zero."""


class TntError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class ScheduleError(TntError):
    """A pruning schedule that cannot run on the given model."""
