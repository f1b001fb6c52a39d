"""Errors a user can cause and fix. The CLI prints them as one line and exits 2, never a traceback."""


class UserError(Exception):
    """An expected mistake in input, config or command line; the message says what and where."""


class StageFailed(Exception):
    """A pipeline task failed; the message names the task log that holds the full traceback."""


class StaleOutput(UserError):
    """A finished output whose input changed since it was made. Alone, a stage refuses (rerun with
    --force); ``synthweb run`` redoes it, and so everything downstream of a redone stage."""
