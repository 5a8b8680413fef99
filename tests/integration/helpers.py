"""Helpers for integration tests: reading tables back, snapshotting their content, running ``uig`` killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from uig_common import names as C
from spark_jobs import io


def rows(spark, config, table: str, order: list[str] | None = None) -> list[tuple]:
    """Every row of a table as sorted tuples (binary columns as bytes), for exact comparisons."""
    df = io.read_table(spark, config.lake, table)
    out = []
    for r in df.collect():
        out.append(tuple(bytes(v) if isinstance(v, (bytearray, memoryview)) else v for v in r))
    return sorted(out, key=repr)


def snapshot(spark, config) -> dict[str, list[tuple]]:
    return {t: rows(spark, config, t) for t in C.ALL_TABLES}


def versions(spark, config) -> dict[str, int]:
    return {t: io.table_version(spark, config.lake, t) for t in C.ALL_TABLES}


def rounded(table_rows: list[tuple], digits: int = 9) -> list[tuple]:
    """Rows with every float rounded (sums over Spark partitions may differ in the last bits)."""
    return sorted((tuple(round(v, digits) if isinstance(v, float) else v for v in r) for r in table_rows), key=repr)


def start_uig(config, *args: str, crash_at: str | None = None, env: dict[str, str] | None = None):
    """``uig --data-root <root> ARGS`` in its own process group (so a kill reaches its Spark JVM too,
    as for a killed Airflow task); ``crash_at`` names the crash point where it SIGKILLs itself."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    if config.user_salt:
        full_env["UIG_USER_SALT"] = config.user_salt
    if crash_at:
        full_env["UIG_TEST_CRASH_AT"] = crash_at
    cmd = [sys.executable, "-m", "uig_tasks.cli", "--data-root", str(config.data_root), *args]
    return subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def run_until_killed(config, crash_at: str, *args: str, env: dict[str, str] | None = None) -> None:
    """Run ``uig ARGS`` until it SIGKILLs itself at ``crash_at``; then its whole process group goes too."""
    proc = start_uig(config, *args, crash_at=crash_at, env=env)
    out = proc.communicate(timeout=1200)[0].decode(errors="replace")
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the JVM it started, if still there
    except ProcessLookupError:
        pass
    assert proc.returncode == -signal.SIGKILL, f"`uig {' '.join(args)}` did not die at {crash_at}:\n{out[-3000:]}"
