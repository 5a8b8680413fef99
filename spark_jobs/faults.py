"""Crash points for recovery tests: ``UIG_TEST_CRASH_AT=<name>`` makes the process SIGKILL itself.

The kill is the real thing (no exception handlers, no cleanup), so the tests that use it prove
the retry story of the README (Idempotent and incremental): every step is one Delta commit, and a rerun converges.
"""

from __future__ import annotations

import os
import signal


def crash_point(name: str) -> None:
    if os.environ.get("UIG_TEST_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
