"""Errors that reach users.

`InvalidInput` is a usage error: the message is written for a person, names the
field or line at fault and what would be valid; the CLI prints it without a
traceback and exits 2. Nothing has run and nothing was recorded when it is raised.
"""

from __future__ import annotations


class NbjobsError(Exception):
    """Base of every error nbjobs raises on purpose."""


class InvalidInput(NbjobsError):
    """Bad input from a user: a spec, a notebook, a parameter, a path, a flag."""

    exit_code = 2


class ParameterError(InvalidInput):
    """A parameter name or value that cannot be injected."""


class NotFound(InvalidInput):
    """A job, run or other record that does not exist."""


class Conflict(InvalidInput):
    """A request that the job's current state does not allow (cancel an ended job, ...)."""
