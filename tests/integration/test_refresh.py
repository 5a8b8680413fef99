"""``uig refresh`` / ``uig user`` / ``uig recommend`` on real MovieLens days, real Delta, the real registry.

One data root (MovieLens up to ``TRAIN_UNTIL``, a short-trained ``@champion``) is refreshed in
full, then the next day lands and only its users are refreshed; the tests read what that left.
"""

from __future__ import annotations

import json
import math
import shutil
import threading
from datetime import datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from uig_common import names as C
from spark_jobs import io, refresh_job
from tests.conftest import TRAIN_UNTIL
from uig_tasks.cli import main
from uig_tasks import refresh as refresh_module
from uig_tasks.config import UigConfig
from uig_tasks.locking import writer_lock
from uig_tasks.movielens import event_file, prepare
from uig_tasks.pipeline import run_aggregate, run_ingest
from uig_tasks.refresh import Refresher, RefreshError, run_refresh
from uig_tasks.train import run_train

pytestmark = pytest.mark.integration

CORE = [C.USER_KEY, C.INTEREST_TYPE, C.INTEREST_ID, C.WEIGHT, C.RANK, C.EXPLANATION, C.MODEL_VERSION]


def end_of(day) -> datetime:
    return datetime.combine(day, time.max, tzinfo=timezone.utc)  # as the trainable_root fixture aggregates


def all_columns(spark, config: UigConfig) -> dict[tuple, tuple]:
    """Every column of every edge row (refreshed_at included), by key."""
    return {tuple(r[:3]): tuple(r[3:]) for r in io.read_table(spark, config.lake, C.GOLD_INTEREST_EDGES).collect()}


def edges(spark, config: UigConfig, active_only: bool = False) -> dict[tuple, tuple]:
    table = io.read_table(spark, config.lake, C.GOLD_INTEREST_EDGES)
    if active_only:
        table = table.where(f"{C.EDGE_STATUS} = 'active'")
    return {tuple(r[:3]): tuple(round(v, 12) if isinstance(v, float) else v for v in r[3:])
            for r in table.select(*CORE).collect()}


@pytest.fixture(scope="module")
def refreshed(spark, trainable_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("refreshed") / "data"
    shutil.copytree(trainable_root, root)
    config = UigConfig.from_env(data_root=root, user_salt="test-salt")
    with pytest.raises(Exception, match="no @champion yet"):
        run_refresh(config, end_of(TRAIN_UNTIL))
    run_train(config, datetime(2026, 1, 1, tzinfo=timezone.utc), {"epochs": 2, "dim": 16, "seed": 0})
    refresher = Refresher(config, keep_warm=True)  # one warm refresher for both refreshes, as a long-lived worker runs them
    first = refresher.refresh(end_of(TRAIN_UNTIL))
    before = edges(spark, config)
    rows_before = all_columns(spark, config)
    versions_before = io.table_version(spark, config.lake, C.GOLD_INTEREST_EDGES)

    day = TRAIN_UNTIL + timedelta(days=1)
    while prepare(config.landing_dir, day=day).events == 0:
        day += timedelta(days=1)
    run_ingest(config, end_of(day))
    run_aggregate(config, end_of(day))
    second = refresher.refresh(end_of(day))
    refresher.close()  # its background warm-up ends before the tests read the root
    raw_ids = sorted({json.loads(line)["user_id"] for line in event_file(config.landing_dir, day).read_text().splitlines()})
    return {"config": config, "first": first, "second": second, "before": before, "rows_before": rows_before, "day": day,
            "raw_ids": raw_ids, "version_after_first": versions_before, "refresher": refresher}


def test_first_refresh_covers_every_user_with_explained_edges(spark, refreshed) -> None:
    config, first = refreshed["config"], refreshed["first"]
    assert first["mode"] == "full" and first["model_version"] == 1
    users = io.read_table(spark, config.lake, C.SILVER_EVENTS).where(f"{C.EVENT_DATE} <= '{TRAIN_UNTIL}'")
    n_users = users.select(C.USER_KEY).distinct().count()
    assert first["dirty_users"] == n_users
    before = refreshed["before"]
    assert len({k[0] for k in before}) == n_users and len(before) == first["edges_written"]
    kinds = {k[1] for k in before}
    assert kinds == {"genre", "entity", "community", "item"}
    for (user, kind, interest), (weight, rank, explanation, model) in list(before.items())[:200]:
        assert 0 < weight <= 1 and rank >= 1 and model == "1"
        assert "←" in explanation and ("rated" in explanation or "recommended" in explanation or "close to" in explanation)


def test_incremental_refresh_touches_only_the_new_days_users(spark, refreshed, monkeypatch) -> None:
    config, second, before = refreshed["config"], refreshed["second"], refreshed["before"]
    day_users = {
        r[0] for r in io.read_table(spark, config.lake, C.SILVER_EVENTS)
        .where(f"{C.EVENT_DATE} = '{refreshed['day']}'").select(C.USER_KEY).distinct().collect()
    }
    assert second["mode"] == "incremental" and second["dirty_users"] == len(day_users) > 0
    # the day's users as the aggregate's watermark note names them, and as silver.events holds them:
    # the keys of the new events made distinct on the driver, or by a distinct in Spark
    marks = DeltaTable.forPath(spark, config.lake.path(C.GOLD_INTEREST_EDGES)).history().where("userMetadata IS NOT NULL")
    since, upto = (refresh_job.RefreshMark.from_note(r["version"], r["userMetadata"]).batch_seq  # type: ignore[union-attr]
                   for r in marks.orderBy("version").collect()[-2:])
    real_noted, noted = io.noted_new_event_users, []

    def noted_and_kept(*args, **kwargs) -> list[str] | None:
        noted.append(real_noted(*args, **kwargs))
        return noted[-1]

    monkeypatch.setattr(io, "noted_new_event_users", noted_and_kept)
    found = [refresh_job.dirty_users(spark, config.lake, after_batch_seq=since, upto_batch_seq=upto)]
    assert noted == found  # read from the note
    monkeypatch.setattr(io, "noted_new_event_users", lambda *args, **kwargs: None)
    found.append(refresh_job.dirty_users(spark, config.lake, after_batch_seq=since, upto_batch_seq=upto))
    monkeypatch.setattr(refresh_job, "DIRTY_EVENTS_ON_DRIVER", 1)
    found.append(refresh_job.dirty_users(spark, config.lake, after_batch_seq=since, upto_batch_seq=upto))
    assert found == [sorted(day_users)] * 3
    assert refreshed["refresher"].model_loads == 1  # the warm refresher kept @champion between the refreshes
    after = all_columns(spark, config)
    untouched = {k: v for k, v in refreshed["rows_before"].items() if k[0] not in day_users}
    assert {k: v for k, v in after.items() if k[0] not in day_users} == untouched  # not rewritten, to the column
    changed = {k: v for k, v in after.items() if k[0] in day_users}
    status, previous = C.EDGE_STATUS, C.PREVIOUS_WEIGHT
    columns = io.read_table(spark, config.lake, C.GOLD_INTEREST_EDGES).columns[3:]
    kept = [v for k, v in changed.items() if k in before and v[columns.index(status)] == "active"]
    assert all(v[columns.index(previous)] == pytest.approx(before[k][0]) for k, v in changed.items()
               if k in before and v[columns.index(status)] == "active")
    assert kept  # returning users keep some interests, with their previous weight
    stamps = io.read_table(spark, config.lake, C.GOLD_INTEREST_EDGES).groupBy(C.AS_OF).count().collect()
    assert {r[C.AS_OF].date() for r in stamps} <= {TRAIN_UNTIL, refreshed["day"]}
    history = io.read_table(spark, config.lake, C.GOLD_INTEREST_HISTORY)
    recorded = history.where(history[C.AS_OF] == io.timestamp_literal(end_of(refreshed["day"])))
    assert {r[0] for r in recorded.select(C.USER_KEY).distinct().collect()} == day_users
    assert recorded.count() == second["edges_written"]
    # a refresh's first history rows are appended, not MERGEd
    assert DeltaTable.forPath(spark, config.lake.path(C.GOLD_INTEREST_HISTORY)).history(1).collect()[0]["operation"] == "WRITE"
    # what the warm refresher kept of the history (so its next run queries nothing) is what a query finds
    assert refreshed["refresher"]._history == refresh_job.history_state(spark, config.lake)


def test_incremental_equals_a_full_refresh_and_a_repeat_is_a_noop(spark, refreshed, tmp_path, monkeypatch) -> None:
    config = refreshed["config"]
    version = io.table_version(spark, config.lake, C.GOLD_INTEREST_EDGES)
    again = run_refresh(config, end_of(refreshed["day"]))
    assert again["mode"] == "noop" and again["dirty_users"] == 0
    assert io.table_version(spark, config.lake, C.GOLD_INTEREST_EDGES) == version  # nothing written

    copy_root = tmp_path / "full"
    shutil.copytree(config.data_root, copy_root)
    full_config = UigConfig.from_env(data_root=copy_root, user_salt="test-salt")
    # scored a few users at a time, staged, and written in one commit (what a large graph's full refresh does)
    monkeypatch.setattr(refresh_module, "SCORE_CHUNK_USERS", 40)
    monkeypatch.setattr(refresh_job, "EDGES_PER_FILE", 500)  # files no larger than a compaction's
    warmed: list[str] = []
    real_warm = refresh_job.warm_edges

    def warm_and_note(spark_, lake) -> None:  # the real warm-up, noting the thread it runs on and a failure
        warmed.append(threading.current_thread().name)
        try:
            real_warm(spark_, lake)
        except Exception as exc:  # the refresher only logs it
            warmed.append(f"failed: {exc}")
            raise

    monkeypatch.setattr(refresh_job, "warm_edges", warm_and_note)
    refresher = Refresher(full_config, keep_warm=True)
    full = refresher.refresh(end_of(refreshed["day"]), full=True)
    refresher.close()
    assert warmed == [refresh_module.WARM_THREAD]  # after the edge commit, in the background
    assert refresher.refresh()["mode"] == "noop"
    refresher.close()
    assert warmed == [refresh_module.WARM_THREAD]  # nothing written: nothing to warm
    assert full["mode"] == "full" and full["dirty_users"] > 2 * 40
    assert edges(spark, full_config, active_only=True) == edges(spark, config, active_only=True)
    assert full["edges_written"] == len(edges(spark, full_config, active_only=True))
    stamp = end_of(refreshed["day"]).replace(tzinfo=None)  # staged by Arrow, read back as the same UTC instant
    stamps = (io.read_table(spark, full_config.lake, C.GOLD_INTEREST_EDGES).where(F.col(C.EDGE_STATUS) == C.EDGE_ACTIVE)
              .select(C.AS_OF, C.REFRESHED_AT).distinct())
    assert [tuple(r) for r in stamps.collect()] == [(stamp, stamp)]
    assert not Path(full_config.lake.scratch(refresh_job.STAGED_EDGES)).exists()  # the staged rows are gone
    # one range of user keys per file, 500 rows at most (a user's rows may end one file and begin the next)
    ranges = file_key_ranges(spark, full_config)
    assert len(ranges) >= math.ceil(len(edges(spark, full_config)) / 500)
    assert all(high <= low for (_, high), (low, _) in zip(ranges, ranges[1:]))


def file_key_ranges(spark, config: UigConfig) -> list[tuple[str, str]]:
    """(smallest, largest) user_key of each file of the edge table, in key order."""
    by_file = (io.read_table(spark, config.lake, C.GOLD_INTEREST_EDGES).groupBy(F.input_file_name())
               .agg(F.min(C.USER_KEY), F.max(C.USER_KEY)).collect())
    return sorted((r[1], r[2]) for r in by_file)


def last_checkpoint(config: UigConfig, table: str) -> int | None:
    """The version of ``table``'s last Delta checkpoint, from the file Delta names it in."""
    pointer = Path(config.lake.path(table), "_delta_log", "_last_checkpoint")
    return json.loads(pointer.read_text())["version"] if pointer.exists() else None


def test_the_edge_table_is_compacted_by_user_key_its_rows_and_mark_unchanged(spark, refreshed, tmp_path,
                                                                             monkeypatch) -> None:
    root = tmp_path / "data"
    shutil.copytree(refreshed["config"].data_root, root)
    config = UigConfig.from_env(data_root=root, user_salt="test-salt")
    table = C.GOLD_INTEREST_EDGES
    assert io.commits_since_rewrite(spark, config.lake, table, depth=10) == 1  # the incremental after the full
    rows, noted = all_columns(spark, config), io.last_noted_commit(spark, config.lake, table)
    monkeypatch.setattr(refresh_job, "COMPACT_AFTER_COMMITS", 1)
    per_file = len(rows) // 3 + 1  # three files
    monkeypatch.setattr(refresh_job, "EDGES_PER_FILE", per_file)
    monkeypatch.setattr(refresh_job, "CHECKPOINT_AFTER_COMMITS", 1)
    refreshed_tables = (table, C.GOLD_INTEREST_HISTORY)
    for each in refreshed_tables:  # Delta's own checkpoint interval is left as a backstop only
        properties = DeltaTable.forPath(spark, config.lake.path(each)).detail().collect()[0]["properties"]
        assert properties["delta.checkpointInterval"] == "100"

    # a warm refresher compacts between refreshes only when no other writer holds the lock
    refresher = Refresher(config, keep_warm=True)
    with writer_lock(config, "another writer"):
        beside = threading.Thread(target=refresher._between_refreshes)
        beside.start()
        beside.join()
    assert refresher.compactions == 0 and refresh_job.edges_due_for_compaction(spark, config.lake)
    # a checkpoint writes no commit: it needs no lock
    assert refresher.checkpoints == 2 and all(
        last_checkpoint(config, each) == io.table_version(spark, config.lake, each) for each in refreshed_tables)
    refresher._between_refreshes()
    assert refresher.compactions == 1 and not refresh_job.edges_due_for_compaction(spark, config.lake)
    assert refresher.checkpoints == 3 and last_checkpoint(config, table) == io.table_version(spark, config.lake, table)

    assert all_columns(spark, config) == rows  # every row as it was, to the column
    assert io.last_noted_commit(spark, config.lake, table) == noted  # the last refresh's mark stands
    assert io.commits_since_rewrite(spark, config.lake, table, depth=10) == 0
    ranges = file_key_ranges(spark, config)
    assert len(ranges) == 3
    assert all(high < low for (_, high), (low, _) in zip(ranges, ranges[1:]))  # one key range per file
    assert run_refresh(config, end_of(refreshed["day"]))["mode"] == "noop"  # nothing new: the mark still says so

    # a refresher that is not kept warm compacts after its write, inside its refresh
    day = refreshed["day"] + timedelta(days=1)
    while prepare(config.landing_dir, day=day).events == 0:
        day += timedelta(days=1)
    run_ingest(config, end_of(day))
    run_aggregate(config, end_of(day))
    result = run_refresh(config, end_of(day))
    assert result["mode"] == "incremental" and {"compact", "checkpoint"} <= result["seconds_by_step"].keys()
    assert io.commits_since_rewrite(spark, config.lake, table, depth=10) == 0
    assert all(last_checkpoint(config, each) == io.table_version(spark, config.lake, each) for each in refreshed_tables)


def test_commits_since_a_rewrite_read_from_the_history_where_the_commit_files_cannot_be(spark, refreshed,
                                                                                      monkeypatch) -> None:
    config, table = refreshed["config"], C.GOLD_INTEREST_EDGES

    def unreadable(*args, **kwargs):
        raise AttributeError("no such internal API")

    with monkeypatch.context() as patched:  # the commit files alone
        patched.setattr(DeltaTable, "history", unreadable)
        from_files = io.commits_since_rewrite(spark, config.lake, table, depth=10)
    monkeypatch.setattr(io, "_commit_infos", unreadable)
    assert io.commits_since_rewrite(spark, config.lake, table, depth=10) == from_files >= 1


def test_the_aggregate_watermark_is_read_from_its_commit_note_as_the_table_holds_it(spark, config) -> None:
    lake = config.lake
    assert io.noted_watermark(spark, lake, C.PIPELINE_AGGREGATE) is None  # nothing written yet
    io.write_watermark(spark, lake, C.PIPELINE_AGGREGATE, last_batch_seq=3,
                       as_of=datetime(2024, 1, 2, 23, 59, 59, 999999, tzinfo=timezone.utc),
                       updated_at=datetime(2024, 1, 3, 1, tzinfo=timezone(timedelta(hours=2))), users=1234)
    io.write_watermark(spark, lake, C.PIPELINE_INGEST, last_batch_seq=5,  # a later commit, of another pipeline
                       max_event_ts=datetime(2024, 1, 3, 8), updated_at=datetime(2024, 1, 3, 9, tzinfo=timezone.utc))
    table = io.read_watermarks(spark, lake)
    assert io.noted_watermark(spark, lake, C.PIPELINE_AGGREGATE) == table[C.PIPELINE_AGGREGATE]
    assert io.noted_watermark(spark, lake, C.PIPELINE_INGEST) == table[C.PIPELINE_INGEST]
    assert table[C.PIPELINE_AGGREGATE][C.UPDATED_AT] == datetime(2024, 1, 2, 23)  # naive UTC, as the table reads
    assert (io.noted_users(spark, lake, C.PIPELINE_AGGREGATE), io.noted_users(spark, lake, C.PIPELINE_INGEST)) == (
        1234, None)  # the count is in the aggregate's note only

    progress = refresh_job.read_progress(spark, lake)
    assert (progress.aggregated_batch_seq, progress.aggregated_as_of) == (
        3, datetime(2024, 1, 2, 23, 59, 59, 999999, tzinfo=timezone.utc))
    # a commit without a watermark note (a fix by hand) comes first: the table is read instead
    spark.sql(f"UPDATE delta.`{lake.path(C.OPS_WATERMARKS)}` SET {C.LAST_BATCH_SEQ} = 4 "
              f"WHERE {C.PIPELINE} = '{C.PIPELINE_AGGREGATE}'")
    assert io.noted_watermark(spark, lake, C.PIPELINE_AGGREGATE) is None
    assert io.noted_users(spark, lake, C.PIPELINE_AGGREGATE) is None
    assert refresh_job.read_progress(spark, lake, progress).aggregated_batch_seq == 4


@pytest.mark.parametrize("rewrite_all", [False, True], ids=["replace-users", "rewrite-table"])
def test_edges_that_fall_out_are_marked_dropped_then_deleted(spark, tmp_path, rewrite_all) -> None:
    """The edge rule on hand-written edges: kept → previous weight, gone → dropped, still gone → deleted;
    another user's rows are never changed, whether the users' rows are replaced or the table rewritten."""
    from spark_jobs.schemas import TABLE_SCHEMAS

    config = UigConfig.from_env(data_root=tmp_path / "data", user_salt="test-salt")
    schema = TABLE_SCHEMAS[C.GOLD_INTEREST_EDGES]

    def refresh(day: int, weights: dict[str, float], version: str = "1") -> None:
        as_of = datetime(2020, 1, day, tzinfo=timezone.utc)
        rows = [("u", "genre", g, g, w, r, f"{g} ←", "active", None, version, "p", "rebuild", "default rule",
                 as_of.replace(tzinfo=None), as_of.replace(tzinfo=None)) for r, (g, w) in enumerate(weights.items(), start=1)]
        refresh_job.replace_user_edges(spark, config.lake, spark.createDataFrame(rows, schema), ["u"], as_of,
                                       rewrite_all=rewrite_all)

    def state() -> dict[str, tuple]:
        return {r[C.INTEREST_ID]: (r[C.EDGE_STATUS], r[C.WEIGHT], r[C.PREVIOUS_WEIGHT])
                for r in io.read_table(spark, config.lake, C.GOLD_INTEREST_EDGES).where(F.col(C.USER_KEY) == "u").collect()}

    other = [("v", "genre", "x", "x", 0.9, 1, "x ←", "dropped", 0.8, "1", "p", "rebuild", "default rule",
              datetime(2019, 1, 1), datetime(2019, 1, 1))]
    io.append(spark, config.lake, C.GOLD_INTEREST_EDGES, spark.createDataFrame(other, schema))

    refresh(1, {"x": 0.5, "y": 0.3})
    assert state() == {"x": ("active", 0.5, None), "y": ("active", 0.3, None)}
    refresh(2, {"y": 0.4, "z": 0.2})
    assert state() == {"x": ("dropped", 0.0, 0.5), "y": ("active", 0.4, 0.3), "z": ("active", 0.2, None)}
    refresh(2, {"y": 0.4, "z": 0.2})  # a retried refresh of the same as_of changes nothing
    assert state() == {"x": ("dropped", 0.0, 0.5), "y": ("active", 0.4, 0.3), "z": ("active", 0.2, None)}
    refresh(2, {"z": 0.3})  # recomputed differently at the same as_of (e.g. --full after a change): y drops
    assert state() == {"x": ("dropped", 0.0, 0.5), "y": ("dropped", 0.0, 0.4), "z": ("active", 0.3, None)}
    refresh(2, {"y": 0.4, "z": 0.2})
    refresh(3, {"y": 0.4, "z": 0.2})
    assert state() == {"y": ("active", 0.4, 0.4), "z": ("active", 0.2, 0.2)}
    assert [tuple(r) for r in io.read_table(spark, config.lake, C.GOLD_INTEREST_EDGES).where(F.col(C.USER_KEY) == "v")
            .collect()] == other  # a dropped edge of a user not refreshed stays, as it was


def test_refresh_before_the_last_aggregate_is_refused(refreshed) -> None:
    with pytest.raises(RefreshError, match="refresh at or after the last aggregate"):
        run_refresh(refreshed["config"], end_of(TRAIN_UNTIL))


def test_user_shows_changes_and_unknown_users_exit_1(refreshed, capsys, monkeypatch) -> None:
    monkeypatch.setenv("UIG_USER_SALT", "test-salt")  # the salt the data root was ingested with
    config, raw = refreshed["config"], refreshed["raw_ids"][0]
    root = ["--data-root", str(config.data_root)]
    assert main([*root, "--json", "user", raw]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model_versions"] == ["1"] and report["policy_versions"]
    assert report["refreshed_as_of"].startswith(str(refreshed["day"]))
    changes = {e["change"] for edges_ in report["interests"].values() for e in edges_}
    assert changes <= {"new", "↑", "↓", "=", "dropped"} and changes
    png = config.data_root / "user.png"
    assert main([*root, "user", report["user_key"], "--png", str(png)]) == 0  # the key works as well as the raw id
    text = capsys.readouterr().out
    assert "genre" in text and "community" in text and "←" in text and f"wrote {png}" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000

    assert main([*root, "user", "no-such-user"]) == 1
    assert "no events for user 'no-such-user'" in capsys.readouterr().err


def test_recommend_for_a_cold_user_of_the_new_day(refreshed, capsys, monkeypatch) -> None:
    """A user whose first events are on the new day (never seen in training) gets explained items."""
    monkeypatch.setenv("UIG_USER_SALT", "test-salt")
    config = refreshed["config"]
    earlier = {json.loads(line)["user_id"] for path in (config.landing_dir / "events").glob("date=*/*.jsonl")
               if path.parent.name < f"date={refreshed['day']}" for line in path.read_text().splitlines()}
    cold = [u for u in refreshed["raw_ids"] if u not in earlier]
    assert cold, "the new day should bring at least one new user"
    assert main(["--data-root", str(config.data_root), "--json", "recommend", cold[0], "-k", "5"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["items"]) == 5 and result["history_items"] > 0
    assert all("close to" in item["reason"] for item in result["items"])
    assert result["source"].startswith("interest graph")  # the refresh stored 10 item edges
    assert main(["--data-root", str(config.data_root), "--json", "recommend", cold[0], "-k", "15"]) == 0
    live = json.loads(capsys.readouterr().out)
    assert live["source"].startswith("live") and len(live["items"]) == 15
    assert [i["item_id"] for i in live["items"][:5]] == [i["item_id"] for i in result["items"]]


def test_moving_the_champion_re_materialises_every_user(spark, refreshed, monkeypatch) -> None:
    """A new @champion (or a rollback) at the same as_of rewrites every user's edges with that version;
    a warm refresher (and `uig refresh --watch`) notices the move."""
    from uig_tasks import mlflow_store
    from uig_tasks.train import latest_snapshot, train_candidate

    config, refresher = refreshed["config"], refreshed["refresher"]
    loads = refresher.model_loads
    other = train_candidate(config, latest_snapshot(config), {"epochs": 1, "dim": 8, "seed": 1})
    mlflow_store.set_champion(config, other["version"], reason="test: newer model")
    moved = refresher.refresh()  # warm: notices the alias moved; as of the last aggregate, as the previous refresh
    assert moved["mode"] == "full" and moved["model_version"] == other["version"]
    assert refresher.model_loads == loads + 1
    active = io.read_table(spark, config.lake, C.GOLD_INTEREST_EDGES).where(f"{C.EDGE_STATUS} = 'active'")
    versions = {r[0] for r in active.select(C.MODEL_VERSION).distinct().collect()}
    assert versions == {str(other["version"])}

    mlflow_store.set_champion(config, 1, reason="test: rollback")
    monkeypatch.setenv("UIG_USER_SALT", "test-salt")
    assert main(["--data-root", str(config.data_root), "refresh", "--watch", "0.1", "--max-runs", "1"]) == 0
    back = refresher.refresh()  # the watcher re-materialised the rollback: nothing left to do
    assert back["mode"] == "noop" and back["model_version"] == 1 and refresher.model_loads == loads + 2
    assert edges(spark, config, active_only=True) == {
        k: v for k, v in edges(spark, config, active_only=True).items() if v[-1] == "1"
    }
    communities = io.read_table(spark, config.lake, C.GOLD_INTEREST_COMMUNITIES)
    assert {r[0] for r in communities.select(C.MODEL_VERSION).distinct().collect()} <= {"1"}


@pytest.mark.slow
def test_the_update_policy_is_applied_per_user_recorded_on_edges_and_rolled_back(spark, refreshed, capsys,
                                                                                  monkeypatch) -> None:
    """`uig train-policy` registers and gates a policy; refresh applies it per dirty user; a policy
    rollback re-materialises every user like a GCN rollback."""
    from uig_tasks import mlflow_store
    from uig_tasks.policy import train_policy

    monkeypatch.setenv("UIG_USER_SALT", "test-salt")  # the salt the data root was ingested with
    config = refreshed["config"]
    stamped = io.read_table(spark, config.lake, C.GOLD_INTEREST_EDGES).where(f"{C.EDGE_STATUS} = 'active'")
    assert {r[0] for r in stamped.select(C.POLICY_VERSION).distinct().collect()} == {C.DEFAULT_POLICY_VERSION}

    first = train_policy(config, episodes=1, seed=0)
    assert first["version"] == 1 and first["promoted"] and first["eval_user_steps"] > 0
    assert {"dqn", "bandit", "fixed:rebuild", "fixed:keep"} <= set(first["mean_reward"])
    assert first["churn_cost"] == config.policy_churn_cost and first["mean_churn"]["fixed:keep"] == 0
    applied = run_refresh(config)
    assert applied["mode"] == "full" and applied["policy_version"] == f"{C.POLICY_MODEL} v1"
    assert sum(applied["actions"].values()) == applied["dirty_users"]
    active = io.read_table(spark, config.lake, C.GOLD_INTEREST_EDGES).where(f"{C.EDGE_STATUS} = 'active'")
    rows = active.select(C.POLICY_VERSION, C.UPDATE_ACTION, C.UPDATE_REASON).distinct().collect()
    assert {r[0] for r in rows} == {f"{C.POLICY_MODEL} v1"} and all(r[1] and r[2] for r in rows)
    assert run_refresh(config)["mode"] == "noop"  # same models, nothing new

    assert main(["--data-root", str(config.data_root), "--json", "user", refreshed["raw_ids"][0]]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["update_action"] and report["update_reason"]
    assert main(["--data-root", str(config.data_root), "--json", "models", "--model", C.POLICY_MODEL]) == 0
    assert json.loads(capsys.readouterr().out)[0]["aliases"] == "champion"

    # the same held-out split (this small root has few user-steps), through the command line
    assert main(["--data-root", str(config.data_root), "train-policy", "--episodes", "2", "--churn-cost", "0.02"]) == 0
    printed = capsys.readouterr().out
    assert f"{C.POLICY_MODEL} version 2" in printed and "0.02 x churn" in printed and "NDCG@10" in printed
    mlflow_store.set_champion(config, 2, model_name=C.POLICY_MODEL, reason="test: other policy")
    assert run_refresh(config)["policy_version"] == f"{C.POLICY_MODEL} v2"
    mlflow_store.set_champion(config, 1, model_name=C.POLICY_MODEL, reason="test: rollback")
    back = run_refresh(config)
    assert back["mode"] == "full" and back["policy_version"] == f"{C.POLICY_MODEL} v1"
    active = io.read_table(spark, config.lake, C.GOLD_INTEREST_EDGES).where(f"{C.EDGE_STATUS} = 'active'")
    assert {r[0] for r in active.select(C.POLICY_VERSION).distinct().collect()} == {f"{C.POLICY_MODEL} v1"}
