"""Aggregation on real Spark + Delta: incremental (dirty users only) equals a full rebuild."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta, timezone

import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from uig_common import names as C
from spark_jobs import io
from spark_jobs.transforms.aggregate import decay_to, item_topics, user_item_affinity, user_topic_affinity
from tests.conftest import FIRST_DAY, SECOND_DAY, THIRD_DAY
from tests.integration.helpers import rows, versions
from uig_tasks.movielens import event_file, prepare
from uig_tasks.pipeline import run_aggregate, run_ingest

pytestmark = pytest.mark.integration

T2 = datetime(1997, 9, 21, 23, 59, 59, tzinfo=timezone.utc)
T3 = datetime(1997, 9, 22, 23, 59, 59, tzinfo=timezone.utc)


def rounded(table_rows: list[tuple], weight_index: int) -> list[tuple]:
    return sorted(tuple(round(v, 9) if i == weight_index else v for i, v in enumerate(r)) for r in table_rows)


@pytest.mark.parametrize("few_users", [io.FEW_USERS, 0], ids=["as-few-rows", "as-many-users"])
def test_incremental_equals_full_rebuild(spark, config, monkeypatch, few_users):
    """``as-many-users``: the dirty users are more than a query of a few rows handles
    (:data:`spark_jobs.io.FEW_USERS`), so the session's settings and a count of their rows plan it."""
    monkeypatch.setattr(io, "FEW_USERS", few_users)
    prepare(config.landing_dir, until=SECOND_DAY)
    run_ingest(config, T2)
    first = run_aggregate(config, T2)
    assert first["mode"] == "full"
    topics_version = io.table_version(spark, config.lake, C.GOLD_ITEM_TOPICS)

    # Day 3 lands, plus one late event for a day-1 user, dated day 1.
    prepare(config.landing_dir, day=THIRD_DAY)
    day1 = json.loads(event_file(config.landing_dir, FIRST_DAY).read_text().splitlines()[0])
    late = {**day1, "event_id": "late-like-1", "event_type": "like", "item_id": "50"}
    late.pop("rating")
    path = config.landing_dir / "events" / "late" / "late.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(late) + "\n")
    run_ingest(config, T3)

    second = run_aggregate(config, T3)
    assert io.table_version(spark, config.lake, C.GOLD_ITEM_TOPICS) == topics_version  # same catalog: not rewritten
    events = io.read_table(spark, config.lake, C.SILVER_EVENTS)
    day3_users = events.where(F.col(C.EVENT_DATE) == THIRD_DAY).select(C.USER_KEY).distinct().count()
    late_user = events.where(F.col(C.EVENT_ID) == "late-like-1").collect()[0][C.USER_KEY]
    assert second["mode"] == "incremental"
    assert day3_users <= second["dirty_users"] <= day3_users + 1
    assert second["dirty_users"] < events.select(C.USER_KEY).distinct().count()
    # its watermark's note names the users with events in the batches it took (a refresh's dirty users)
    new_batches = events.where(F.col(C.BATCH_SEQ) > first["last_batch_seq"]).select(C.USER_KEY).distinct()
    new_users = sorted(r[0] for r in new_batches.collect())
    assert late_user in new_users and len(new_users) == day3_users + 1

    def noted(after: int) -> list[str] | None:
        return io.noted_new_event_users(spark, config.lake, C.PIPELINE_AGGREGATE, after_batch_seq=after,
                                        upto_batch_seq=second["last_batch_seq"])

    assert noted(first["last_batch_seq"]) == new_users
    assert noted(first["last_batch_seq"] - 1) is None  # reaches into the first (full) run, which names none
    # The dirty users' old rows were marked deleted (deletion vectors), no file was rewritten.
    for table in (C.GOLD_USER_ITEM_AFFINITY, C.GOLD_USER_TOPIC_AFFINITY):
        metrics = DeltaTable.forPath(spark, config.lake.path(table)).history(1).collect()[0]["operationMetrics"]
        assert int(metrics["numDeletedRows"]) > 0 and int(metrics["numRemovedFiles"]) == 0, (table, metrics)

    # Users without new events were not rewritten: their rows still carry the old as_of.
    stored_items = io.read_table(spark, config.lake, C.GOLD_USER_ITEM_AFFINITY)
    as_of_by_user = {r[C.USER_KEY]: r[C.AS_OF] for r in stored_items.select(C.USER_KEY, C.AS_OF).distinct().collect()}
    assert as_of_by_user[late_user] == T3.replace(tzinfo=None)
    assert sum(1 for v in as_of_by_user.values() if v == T2.replace(tzinfo=None)) == len(as_of_by_user) - second["dirty_users"]

    # Brought to T3, the incremental tables equal a full rebuild at T3.
    params = dict(as_of=T3, half_life_days=config.half_life_days)
    full_items = user_item_affinity(events, weights=config.event_weights, **params)
    topics = item_topics(io.read_table(spark, config.lake, C.SILVER_ITEMS), kg_min_items=config.kg_min_items)
    full_topics = user_topic_affinity(full_items, topics)
    inc_items = decay_to(stored_items, **params)
    inc_topics = decay_to(io.read_table(spark, config.lake, C.GOLD_USER_TOPIC_AFFINITY), **params)
    widx = stored_items.columns.index(C.WEIGHT)
    assert rounded([tuple(r) for r in inc_items.collect()], widx) == rounded([tuple(r) for r in full_items.select(*stored_items.columns).collect()], widx)
    tcols = io.read_table(spark, config.lake, C.GOLD_USER_TOPIC_AFFINITY).columns
    tidx = tcols.index(C.WEIGHT)
    assert rounded([tuple(r) for r in inc_topics.collect()], tidx) == rounded([tuple(r) for r in full_topics.select(*tcols).collect()], tidx)

    # A repeated run is a no-op that rewrites nothing.
    before = {t: rows(spark, config, t) for t in (C.GOLD_USER_ITEM_AFFINITY, C.GOLD_USER_TOPIC_AFFINITY)}
    gold_versions = {t: v for t, v in versions(spark, config).items() if t.startswith("gold.")}
    assert run_aggregate(config, T3)["mode"] == "noop"
    assert {t: rows(spark, config, t) for t in before} == before
    assert {t: v for t, v in versions(spark, config).items() if t.startswith("gold.")} == gold_versions

    # Another setting of the catalog's topics rewrites them (once), and every user's topic rows
    # with them, though no user is dirty.
    stricter = dataclasses.replace(config, kg_min_items=config.kg_min_items + 5)
    assert run_aggregate(stricter, T3)["mode"] == "full"
    assert io.table_version(spark, config.lake, C.GOLD_ITEM_TOPICS) == gold_versions[C.GOLD_ITEM_TOPICS] + 1
    expected = item_topics(io.read_table(spark, config.lake, C.SILVER_ITEMS), kg_min_items=stricter.kg_min_items)
    assert sorted(io.read_table(spark, config.lake, C.GOLD_ITEM_TOPICS).collect(), key=repr) == sorted(
        expected.collect(), key=repr)
    topic_keys = [C.TOPIC_ID, C.TOPIC_TYPE]
    users_topics = io.read_table(spark, config.lake, C.GOLD_USER_TOPIC_AFFINITY).select(*topic_keys).distinct()
    assert users_topics.join(expected, topic_keys, "left_anti").count() == 0  # no topic of the old setting is left
    # A commit without a note (here a table property; OPTIMIZE alike) does not force a rewrite.
    spark.sql(f"ALTER TABLE delta.`{config.lake.path(C.GOLD_USER_TOPIC_AFFINITY)}` "
              "SET TBLPROPERTIES ('uig.test' = 'maintenance')")
    assert run_aggregate(stricter, T3)["mode"] == "noop"
    assert io.table_version(spark, config.lake, C.GOLD_ITEM_TOPICS) == gold_versions[C.GOLD_ITEM_TOPICS] + 1


def test_mostly_dirty_incremental_run_rewrites_whole_tables(spark, config):
    """Past ``max_dirty_fraction`` dirty users the run rewrites instead of merging; rows are those of a full run."""
    prepare(config.landing_dir, until=SECOND_DAY)
    run_ingest(config, T2)
    run_aggregate(config, T2)
    prepare(config.landing_dir, day=THIRD_DAY)
    run_ingest(config, T3)

    result = run_aggregate(config.with_overrides(max_dirty_fraction=0.0), T3)
    events = io.read_table(spark, config.lake, C.SILVER_EVENTS)
    assert result["mode"] == "full"
    assert result["dirty_users"] == events.select(C.USER_KEY).distinct().count()
    stored = io.read_table(spark, config.lake, C.GOLD_USER_ITEM_AFFINITY)
    assert {r[C.AS_OF] for r in stored.select(C.AS_OF).distinct().collect()} == {T3.replace(tzinfo=None)}
    full_items = user_item_affinity(events, as_of=T3, half_life_days=config.half_life_days, weights=config.event_weights)
    widx = stored.columns.index(C.WEIGHT)
    assert rounded([tuple(r) for r in stored.collect()], widx) == rounded(
        [tuple(r) for r in full_items.select(*stored.columns).collect()], widx
    )


def test_incremental_run_counts_users_only_where_the_noted_count_leaves_the_choice_open(spark, config):
    """A run notes the users it counted; a later incremental run that is far below
    ``max_dirty_fraction`` of that lower bound does not count them again (its note carries the old
    count), and one that the bound leaves open counts them."""
    prepare(config.landing_dir, until=SECOND_DAY)
    run_ingest(config, T2)
    assert run_aggregate(config, T2)["mode"] == "full"
    events = io.read_table(spark, config.lake, C.SILVER_EVENTS)
    users_then = events.select(C.USER_KEY).distinct().count()
    assert io.noted_users(spark, config.lake, C.PIPELINE_AGGREGATE) == users_then

    prepare(config.landing_dir, day=THIRD_DAY)
    run_ingest(config, T3)
    users_now = io.read_table(spark, config.lake, C.SILVER_EVENTS).select(C.USER_KEY).distinct().count()
    assert users_now > users_then  # the third day brings new users, so a count would show
    result = run_aggregate(config, T3)
    assert result["mode"] == "incremental"
    assert result["dirty_users"] <= config.max_dirty_fraction * users_then
    assert io.noted_users(spark, config.lake, C.PIPELINE_AGGREGATE) == users_then  # not counted again

    # a fraction the bound cannot settle (any dirty user is more than 0 % of the users): they are
    # counted, the run rewrites, and its note holds the count
    t4 = T3 + timedelta(days=1)
    prepare(config.landing_dir, day=THIRD_DAY + timedelta(days=1))
    run_ingest(config, t4)
    assert run_aggregate(config.with_overrides(max_dirty_fraction=0.0), t4)["mode"] == "full"
    users_last = io.read_table(spark, config.lake, C.SILVER_EVENTS).select(C.USER_KEY).distinct().count()
    assert io.noted_users(spark, config.lake, C.PIPELINE_AGGREGATE) == users_last
