"""A task SIGKILLed mid-write leaves every table as it was, and the retry completes exactly.

Ingest, aggregate and refresh are each killed at every commit point (``spark_jobs.faults``); the
rerun must give the tables an uninterrupted run gives (and find the writer lock free).
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from uig_common import names as C
from spark_jobs import io, refresh_job
from tests.conftest import FIRST_DAY, SECOND_DAY
from tests.integration.helpers import rounded, rows, run_until_killed, start_uig
from uig_common.timeutil import parse_time
from uig_tasks.config import UigConfig
from uig_tasks.movielens import prepare
from uig_tasks.pipeline import run_aggregate, run_ingest
from uig_tasks.refresh import run_refresh
from uig_tasks.train import run_train

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LOGICAL = "1997-10-16T00:00:00Z"
EVENTS_ON_FIRST_DAY = 915


def start_ingest(config, crash_at: str | None = None):
    return start_uig(config, "ingest", "--logical-time", LOGICAL, crash_at=crash_at)


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


# --- aggregate -----------------------------------------------------------------------------

AGGREGATE_TABLES = (C.GOLD_ITEM_TOPICS, C.GOLD_USER_ITEM_AFFINITY, C.GOLD_USER_TOPIC_AFFINITY)
#: Aggregation must stay incremental on the second day, whatever share of users it touches.
AGGREGATE_ENV = {"UIG_MAX_DIRTY_FRACTION": "1", "UIG_LOCK_TIMEOUT_SECONDS": "0"}


def private_config(root: Path) -> UigConfig:
    """Like the ``config`` fixture; a lock a killed run left held would fail the rerun at once."""
    return UigConfig.from_env(data_root=root, user_salt="test-salt", max_dirty_fraction=1.0, lock_timeout_seconds=0)


def copy_root(source: UigConfig, root: Path) -> UigConfig:
    shutil.copytree(source.data_root, root)
    return private_config(root)


def as_of(day: date) -> datetime:
    return parse_time(day.isoformat(), end_of_day=True)  # what `uig aggregate --as-of DAY` means


def aggregate_state(spark, config) -> dict[str, object]:
    state: dict[str, object] = {t: rounded(rows(spark, config, t)) for t in AGGREGATE_TABLES}
    state["watermark"] = io.read_watermarks(spark, config.lake).get(C.PIPELINE_AGGREGATE)
    return state


@pytest.fixture(scope="module")
def aggregate_cases(spark, tmp_path_factory) -> dict[str, tuple[UigConfig, date, dict[str, object]]]:
    """Two starting points and the state an uninterrupted aggregate reaches from each.

    ``first``: one day ingested, never aggregated (the run is ``full``, item topics written);
    ``next``: that day aggregated, the next day ingested (the run is ``incremental``).
    """
    base = tmp_path_factory.mktemp("aggregate-recovery")
    first = private_config(base / "first")
    prepare(first.landing_dir, day=FIRST_DAY)
    run_ingest(first, as_of(FIRST_DAY))
    following = copy_root(first, base / "next")
    run_aggregate(following, as_of(FIRST_DAY))
    prepare(following.landing_dir, day=SECOND_DAY)
    run_ingest(following, as_of(SECOND_DAY))
    cases = {}
    for name, source, day, mode in (("first", first, FIRST_DAY, "full"), ("next", following, SECOND_DAY, "incremental")):
        reference = copy_root(source, base / f"{name}-reference")
        assert run_aggregate(reference, as_of(day))["mode"] == mode
        cases[name] = (source, day, aggregate_state(spark, reference))
    return cases


@pytest.mark.parametrize(("case", "crash_at"), [
    ("first", "after_item_topics"), ("first", "after_user_item"), ("first", "after_user_topic"),
    ("next", "after_user_item"), ("next", "after_user_topic"), ("next", "after_watermark"),
])
def test_aggregate_killed_at_each_commit_point_converges(spark, aggregate_cases, tmp_path, case, crash_at):
    source, day, expected = aggregate_cases[case]
    config = copy_root(source, tmp_path / "data")
    run_until_killed(config, crash_at, "aggregate", "--as-of", day.isoformat(), env=AGGREGATE_ENV)

    run_aggregate(config, as_of(day))
    assert aggregate_state(spark, config) == expected


# --- refresh -------------------------------------------------------------------------------

REFRESH_TABLES = (C.GOLD_INTEREST_COMMUNITIES, C.GOLD_INTEREST_EDGES, C.GOLD_INTEREST_HISTORY)


def refresh_state(spark, config) -> dict[str, object]:
    # Scores come from torch in two processes: compare them to 6 digits.
    state: dict[str, object] = {t: rounded(rows(spark, config, t), 6) for t in REFRESH_TABLES}
    mark = refresh_job.read_progress(spark, config.lake).refreshed
    state["mark"] = None if mark is None else (mark.batch_seq, mark.models, mark.as_of)  # its edge version may differ
    return state


@pytest.fixture(scope="module")
def refresh_case(spark, trainable_root: Path, tmp_path_factory) -> tuple[UigConfig, dict[str, object]]:
    """A data root with a (briefly) trained @champion and no refresh yet, and the state a first,
    uninterrupted (full) refresh leaves."""
    base = tmp_path_factory.mktemp("refresh-recovery")
    trained = copy_root(private_config(trainable_root), base / "trained")
    run_train(trained, datetime(2026, 1, 1, tzinfo=timezone.utc), {"epochs": 1, "dim": 8})
    reference = copy_root(trained, base / "reference")  # MLflow artifacts stay under "trained"
    assert run_refresh(reference)["mode"] == "full"
    return trained, refresh_state(spark, reference)


@pytest.mark.parametrize("crash_at", ["after_communities", "after_edges", "after_history"])
def test_refresh_killed_at_each_commit_point_converges(spark, refresh_case, tmp_path, crash_at):
    source, expected = refresh_case
    config = copy_root(source, tmp_path / "data")
    run_until_killed(config, crash_at, "refresh", env={"UIG_LOCK_TIMEOUT_SECONDS": "0"})

    run_refresh(config)
    assert refresh_state(spark, config) == expected
