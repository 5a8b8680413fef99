"""One writer at a time per data root: an advisory ``flock`` on ``<data_root>/.writer.lock``.

Every task that writes Delta tables (ingest, aggregate, encode, refresh) runs inside
:func:`writer_lock` (or under the :func:`with_writer_lock` decorator). Two such tasks on the same
data root, from the CLI, Airflow or both, run one after the other instead of racing into a Delta
concurrency exception: the second one waits up to ``lock_timeout_seconds``, logging who it waits
for, then fails with :class:`DataRootBusyError`, whose message names the holder.

Why ``flock``: the kernel releases it when the holder's last descriptor closes, so a task that
is SIGKILLed (or whose machine reboots) never leaves a stale lock behind; the file's content
(pid, task, host, since when) only says who holds it, it is not the lock. The descriptor is not
inherited by child processes (Python opens it close-on-exec), so a Spark JVM that outlives its
killed driver does not hold it either. The lock works on one machine's file system (and on NFS
where the server supports locks); object-storage lakes need a lock service instead.

Within one thread the lock is re-entrant, so a writer task may call another.
"""

from __future__ import annotations

import fcntl
import functools
import json
import logging
import os
import socket
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, ParamSpec, TypeVar

from uig_common.errors import UigError
from uig_tasks.config import UigConfig
from uig_tasks.datadir import prepare_data_root

log = logging.getLogger(__name__)

LOCK_FILE = ".writer.lock"

P = ParamSpec("P")
R = TypeVar("R")

_held: dict[tuple[str, int], int] = {}  # (lock file, thread) -> nesting depth


class DataRootBusyError(UigError, TimeoutError):
    """Another task held the data root's writer lock for longer than ``lock_timeout_seconds``."""

    retryable = True  # the holder finishes eventually: a later try can succeed


def lock_path(config: UigConfig) -> Path:
    return config.data_root / LOCK_FILE


def describe_holder(path: Path) -> str:
    """Who holds the lock at ``path``, as its holder wrote it (``an unknown process`` if unreadable)."""
    try:
        info = json.loads(path.read_text() or "{}")
        return f"pid {info['pid']} on {info['host']} (uig {info['task']}, since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "an unknown process"


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _acquire(fd: int, path: Path, task: str, timeout: float, poll_seconds: float) -> None:
    if _try_lock(fd):
        return
    deadline = time.monotonic() + timeout
    holder = describe_holder(path)
    log.info("uig %s: waiting for %s to release %s (up to %gs)", task, holder, path, timeout)
    while time.monotonic() < deadline:
        time.sleep(max(0.0, min(poll_seconds, deadline - time.monotonic())))
        if _try_lock(fd):
            return
        now_holding = describe_holder(path)
        if now_holding != holder:
            holder = now_holding
            log.info("uig %s: waiting for %s", task, holder)
    raise DataRootBusyError(
        f"data root {path.parent} is busy: {describe_holder(path)} holds its writer lock ({path}); "
        f"uig {task} waited {timeout:g}s. Run it again when that task has finished, or raise "
        "UIG_LOCK_TIMEOUT_SECONDS"
    )


@contextmanager
def writer_lock(
    config: UigConfig, task: str, *, poll_seconds: float = 0.5, timeout: float | None = None
) -> Iterator[None]:
    """Hold the data root's writer lock for the block (prepares the data root first).

    Waits up to ``timeout`` (default ``config.lock_timeout_seconds``; 0: not at all) for another
    holder, then raises :class:`DataRootBusyError`.
    """
    prepare_data_root(config)
    path = lock_path(config)
    key = (str(path.resolve()), threading.get_ident())
    if key in _held:  # this thread holds it already
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o660)
    try:
        _acquire(fd, path, task, config.lock_timeout_seconds if timeout is None else timeout, poll_seconds)
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "task": task,
                  "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        _held[key] = 1
        try:
            yield
        finally:
            del _held[key]
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the flock


def with_writer_lock(task: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a task function whose first argument is the ``UigConfig``: it runs under :func:`writer_lock`."""

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            config = args[0] if args else kwargs["config"]
            if not isinstance(config, UigConfig):
                raise TypeError(f"{func.__qualname__}: the first argument must be a UigConfig, got {type(config).__name__}")
            with writer_lock(config, task):
                return func(*args, **kwargs)

        return wrapper

    return decorate
