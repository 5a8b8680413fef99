"""How DAG tasks treat UIG's own errors: a named ``UigError`` fails the task at once, with its message.

A named error means a person has to act (bad params, a missing snapshot, a batch that does not
add up); retrying the same input would only repeat it, so the task fails without retries and the
log's last line is the error's actionable message. Any other exception is unexpected and keeps
the DAG's retry policy and its traceback, and so does a ``UigError`` marked ``retryable`` (a data
root busy with another writer: a later try can succeed).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def fail_fast_on_uig_error(func: F) -> F:
    """Wrap a task body so that a ``UigError`` becomes ``AirflowFailException`` (no retry)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from airflow.sdk.exceptions import AirflowFailException

        from uig_common.errors import UigError

        try:
            return func(*args, **kwargs)
        except UigError as exc:
            if exc.retryable:  # e.g. the data root stayed busy: a later try can succeed
                raise
            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc

    return wrapper  # type: ignore[return-value]
