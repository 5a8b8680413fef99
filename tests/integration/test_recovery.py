"""A task SIGKILLed mid-write leaves every table as it was, and the retry completes exactly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest

from uig_common import names as C
from spark_jobs import io
from tests.conftest import FIRST_DAY
from uig_tasks.movielens import prepare
from uig_tasks.pipeline import run_ingest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LOGICAL = "1997-10-16T00:00:00Z"
EVENTS_ON_FIRST_DAY = 915


def start_ingest(config, crash_at: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "UIG_USER_SALT": config.user_salt, "PYTHONUNBUFFERED": "1"}
    if crash_at:
        env["UIG_TEST_CRASH_AT"] = crash_at
    cmd = [sys.executable, "-m", "uig_tasks.cli", "--data-root", str(config.data_root), "ingest", "--logical-time", LOGICAL]
    # Own process group: killing it kills the Spark JVM too, as a killed Airflow task would.
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def assert_exactly_once(spark, config, result) -> None:
    [batch] = result["batches"]
    assert batch["resumed"] is True
    assert (batch["n_raw"], batch["n_clean"], batch["n_quarantined"], batch["n_duplicates"]) == (EVENTS_ON_FIRST_DAY, EVENTS_ON_FIRST_DAY, 0, 0)
    for table in (C.BRONZE_EVENTS_RAW, C.SILVER_EVENTS):
        assert io.read_table(spark, config.lake, table).count() == EVENTS_ON_FIRST_DAY, table
    statuses = [r[C.STATUS] for r in io.read_table(spark, config.lake, C.OPS_BATCHES).collect()]
    assert statuses == ["committed"]
    assert run_ingest(config, datetime(1997, 10, 16, tzinfo=timezone.utc))["batches"] == []


@pytest.mark.parametrize("crash_at", ["after_bronze", "after_silver"])
def test_crash_between_commits_then_retry(spark, config, crash_at):
    prepare(config.landing_dir, day=FIRST_DAY)
    proc = start_ingest(config, crash_at)
    out = proc.communicate(timeout=600)[0].decode(errors="replace")
    assert proc.returncode == -signal.SIGKILL, out[-2000:]
    assert io.read_table(spark, config.lake, C.OPS_BATCHES).collect()[0][C.STATUS] == "started"

    result = run_ingest(config, datetime(1997, 10, 16, tzinfo=timezone.utc))
    assert_exactly_once(spark, config, result)


def test_sigkill_during_the_silver_delta_commit(spark, config):
    """Kill the process group the moment the MERGE's first data file lands, before its log entry."""
    prepare(config.landing_dir, day=FIRST_DAY)
    silver = config.delta_dir / "silver" / "events"
    proc = start_ingest(config)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if silver.exists() and any(silver.rglob("*.parquet")):
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the ingest finished before the kill: nothing was tested"

    # Whatever the kill hit, the table is at a committed version: before the MERGE (no rows,
    # orphan files ignored) or after it (all rows); never half a batch.
    assert io.read_table(spark, config.lake, C.SILVER_EVENTS).count() in (0, EVENTS_ON_FIRST_DAY)
    result = run_ingest(config, datetime(1997, 10, 16, tzinfo=timezone.utc))
    assert_exactly_once(spark, config, result)
