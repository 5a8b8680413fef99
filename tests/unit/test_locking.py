"""The data root's writer lock: one holder at a time, a clear error on timeout, no stale lock after SIGKILL."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from uig_common.errors import UigError
from uig_tasks.config import UigConfig
from uig_tasks.locking import DataRootBusyError, lock_path, with_writer_lock, writer_lock

REPO = Path(__file__).resolve().parents[2]


def cfg(tmp_path: Path, timeout: float) -> UigConfig:
    return UigConfig.from_env({}, data_root=tmp_path / "data", lock_timeout_seconds=timeout)


def hold_in_subprocess(config: UigConfig, seconds: float) -> subprocess.Popen:
    """Another process takes the lock as task ``ingest``, holds it ``seconds``, then exits."""
    code = textwrap.dedent(f"""
        import time
        from uig_tasks.config import UigConfig
        from uig_tasks.locking import writer_lock
        with writer_lock(UigConfig.from_env({{}}, data_root={str(config.data_root)!r}), "ingest"):
            print("held", flush=True)
            time.sleep({seconds})
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_times_out_with_a_message_naming_the_holder(tmp_path: Path) -> None:
    config = cfg(tmp_path, timeout=0.3)
    holder = hold_in_subprocess(config, 30)
    try:
        t0 = time.monotonic()
        with pytest.raises(DataRootBusyError) as caught:
            with writer_lock(config, "aggregate", poll_seconds=0.05):
                pytest.fail("the lock was taken twice")
        assert 0.3 <= time.monotonic() - t0 < 5
    finally:
        holder.kill()
        holder.wait()
    message = str(caught.value)
    assert f"pid {holder.pid}" in message and "uig ingest" in message and str(config.data_root) in message
    assert isinstance(caught.value, UigError) and caught.value.retryable


def test_a_waiting_writer_logs_the_holder_and_gets_the_lock_when_it_is_released(tmp_path: Path, caplog) -> None:
    config = cfg(tmp_path, timeout=60)
    holder = hold_in_subprocess(config, 1.0)
    caplog.set_level(logging.INFO, logger="uig_tasks.locking")
    t0 = time.monotonic()
    with writer_lock(config, "aggregate", poll_seconds=0.05):
        waited = time.monotonic() - t0
        assert f'"pid": {os.getpid()}' in lock_path(config).read_text()
    holder.wait(timeout=30)
    assert 0.3 < waited < 30
    assert f"waiting for pid {holder.pid}" in caplog.text and "(uig ingest, since " in caplog.text
    assert lock_path(config).read_text() == ""  # released: no holder to report


def test_a_sigkilled_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    config = cfg(tmp_path, timeout=0)
    holder = hold_in_subprocess(config, 600)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert str(holder.pid) in lock_path(config).read_text()  # what it wrote stays; the lock does not
    with writer_lock(config, "ingest"):
        pass


def test_the_lock_is_reentrant_in_one_thread_and_the_decorator_uses_the_config(tmp_path: Path) -> None:
    config = cfg(tmp_path, timeout=0)

    @with_writer_lock("outer")
    def outer(config: UigConfig) -> str:
        return inner(config)

    @with_writer_lock("inner")
    def inner(config: UigConfig) -> str:
        return lock_path(config).read_text()

    assert '"task": "outer"' in outer(config)
    with pytest.raises(TypeError, match="UigConfig"):
        inner("not a config")  # type: ignore[arg-type]


def test_the_lock_prepares_a_private_data_root(tmp_path: Path) -> None:
    config = cfg(tmp_path, timeout=0)
    with writer_lock(config, "ingest"):
        pass
    assert config.data_root.stat().st_mode & 0o777 == 0o750
    assert lock_path(config).stat().st_mode & 0o007 == 0
    assert os.umask(0o027) & 0o027 == 0o027  # the process umask was restricted (read it back)


def test_lock_timeout_is_validated(tmp_path: Path) -> None:
    from uig_tasks.config import ConfigError

    with pytest.raises(ConfigError, match="lock_timeout_seconds"):
        cfg(tmp_path, timeout=-1)
    assert UigConfig.from_env({"UIG_LOCK_TIMEOUT_SECONDS": "2.5"}).lock_timeout_seconds == 2.5
