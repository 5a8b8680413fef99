"""One error family: every error UIG raises on purpose derives from :class:`UigError`.

The CLI and the DAG tasks catch ``UigError`` by type and show its message (written for the
person who has to act on it); anything else is a bug and keeps its traceback. Subclasses also
derive from the built-in exception whose meaning they share (``ValueError`` for bad input,
``LookupError`` for something that is not there, ``RuntimeError`` for a broken invariant), so
callers that already catch those keep working.
"""

from __future__ import annotations


class UigError(Exception):
    """Base class of every named UIG error: its message says what to do about it."""

    #: True where the same call can succeed later unchanged (e.g. a busy data root): DAG tasks
    #: keep their retries for these instead of failing at once.
    retryable: bool = False


class InputError(UigError, ValueError):
    """A value a user passed (flag, param, file content) is invalid."""


class NotFoundError(UigError, LookupError):
    """Something the user named (a user, a model version, a snapshot, a table) does not exist."""
