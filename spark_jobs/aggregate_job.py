"""Aggregate job: silver events → gold user–item and user–topic affinities at ``as_of``.

Incremental by default: only users with new events since the ``aggregate`` watermark are
recomputed (one atomic ``replaceWhere`` overwrite of their rows per table); rows of other users
keep their older ``as_of`` and are brought to any later time with :func:`spark_jobs.transforms.aggregate.decay_to`. When more than
``max_dirty_fraction`` of all users are dirty, the tables are rewritten whole instead (mode
``full``): the same rows, and cheaper than replacing most rows of a large table one user at a time.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from uig_common import names as C
from spark_jobs import io
from spark_jobs.faults import crash_point
from spark_jobs.schemas import TABLE_SCHEMAS
from spark_jobs.settings import AggregateSettings, Lake
from spark_jobs.transforms.aggregate import HAS_NEW_EVENTS, dirty_users, item_topics, user_item_affinity, user_topic_affinity

log = logging.getLogger(__name__)

#: An incremental run names the users with events in the batches it took in its watermark commit's
#: note when they are at most this many (about 35 bytes each): a refresh then finds its dirty users
#: there (:func:`spark_jobs.io.noted_new_event_users`) instead of querying silver.events.
NOTED_USERS = 1_000


@dataclass(frozen=True)
class AggregateResult:
    mode: str  # "full" | "incremental" | "noop"
    as_of: str
    dirty_users: int
    user_item_rows: int
    user_topic_rows: int
    last_batch_seq: int

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _refresh_item_topics(spark: SparkSession, lake: Lake, kg_min_items: int):
    """gold.item_topics of the current catalog: rewritten (schema migrated too) only when
    ``silver.items`` or ``kg_min_items`` moved since the last rewrite, which each rewrite notes in
    its commit — a run with new events and the same catalog reads no catalog row."""
    made_from = json.dumps({"silver_items_version": io.table_version(spark, lake, C.SILVER_ITEMS),
                            "kg_min_items": kg_min_items}, sort_keys=True)
    stored = io.read_table(spark, lake, C.GOLD_ITEM_TOPICS)
    if stored.columns == TABLE_SCHEMAS[C.GOLD_ITEM_TOPICS].fieldNames() and \
            io.last_commit_note(spark, lake, C.GOLD_ITEM_TOPICS) == made_from:
        return stored
    fresh = item_topics(io.read_table(spark, lake, C.SILVER_ITEMS), kg_min_items=kg_min_items)
    io.overwrite(spark, lake, C.GOLD_ITEM_TOPICS, fresh, overwrite_schema=True, commit_note=made_from)
    return io.read_table(spark, lake, C.GOLD_ITEM_TOPICS)


def aggregate(
    spark: SparkSession, lake: Lake, settings: AggregateSettings, as_of: datetime, *, full: bool = False
) -> AggregateResult:
    events = io.read_table(spark, lake, C.SILVER_EVENTS)
    last_seq = int(events.agg(F.max(C.BATCH_SEQ)).collect()[0][0] or 0)
    wm = io.read_watermark(spark, lake, C.PIPELINE_AGGREGATE)
    previous_as_of = wm[C.AS_OF] if wm else None
    if wm is None or previous_as_of is None or as_of < previous_as_of.replace(tzinfo=timezone.utc):
        full = True  # first run, or going back in time: every user's window changes

    topics = _refresh_item_topics(spark, lake, settings.kg_min_items)
    crash_point("after_item_topics")  # recovery tests kill the run at each commit point
    # Every write of gold.user_topic_affinity notes the item topics it used; other ones (a new
    # catalog, another kg_min_items, even if an earlier run died right after rewriting them)
    # change every user's topic rows, not only the dirty users'.
    topics_note = json.dumps({"item_topics_version": io.table_version(spark, lake, C.GOLD_ITEM_TOPICS)})
    if io.last_commit_note(spark, lake, C.GOLD_USER_TOPIC_AFFINITY) != topics_note:
        full = True
    params = dict(as_of=as_of, half_life_days=settings.half_life_days, weights=settings.event_weights)

    dirty, with_new_events, n_users, counted_users = None, [], None, None
    if not full:
        dirty = dirty_users(
            events, after_batch_seq=int(wm[C.LAST_BATCH_SEQ]), previous_as_of=previous_as_of, as_of=as_of
        ).persist()
        dirty_rows = dirty.collect()
        dirty_keys = sorted(r[C.USER_KEY] for r in dirty_rows)
        with_new_events = [r[C.USER_KEY] for r in dirty_rows if r[HAS_NEW_EVENTS]]
        n_dirty = len(dirty_keys)
        # The users a run counted are a lower bound on the users now (users are only added), so
        # the whole table's users are counted again (1.3 s at 2M events) only where that bound
        # leaves the choice open.
        n_users = io.noted_users(spark, lake, C.PIPELINE_AGGREGATE)
        if n_users is None or n_dirty > settings.max_dirty_fraction * n_users:
            n_users = counted_users = events.select(C.USER_KEY).distinct().count()
        if n_dirty > settings.max_dirty_fraction * n_users:
            # replacing most rows costs more than rewriting them all; the tables end up equal either way.
            log.info("aggregate: %d of %d users dirty (> %.0f%%): rewriting instead of merging",
                     n_dirty, n_users, 100 * settings.max_dirty_fraction)
            dirty.unpersist()
            dirty, full = None, True

    if full:
        mode = "full"
        user_items = user_item_affinity(events, **params)
        io.overwrite(spark, lake, C.GOLD_USER_ITEM_AFFINITY, user_items)
        crash_point("after_user_item")
        stored = io.read_table(spark, lake, C.GOLD_USER_ITEM_AFFINITY)
        io.overwrite(
            spark, lake, C.GOLD_USER_TOPIC_AFFINITY,
            # the count of a whole Delta table comes from its log: no Spark job
            user_topic_affinity(stored, topics, user_item_rows=stored.count()),
            commit_note=topics_note,
        )
        crash_point("after_user_topic")
        # every user is dirty: counted here unless the choice to rewrite instead counted them
        if counted_users is None:
            counted_users = events.select(C.USER_KEY).distinct().count()
        n_dirty = n_users = counted_users
    else:
        assert dirty is not None
        mode = "incremental" if n_dirty else "noop"
        if n_dirty:
            # A few users' rows (reached through broadcast joins) are recomputed and replaced as
            # queries of a few rows, as a small refresh's edges are.
            with io.few_rows(spark, n_dirty):
                # cached as the user-item write computes them, so the topic rows are made from
                # them, not from a scan of the whole user-item table that finds them again
                fresh = user_item_affinity(events.join(F.broadcast(dirty), C.USER_KEY, "left_semi"), **params).persist()
                before = io.table_version(spark, lake, C.GOLD_USER_ITEM_AFFINITY)
                io.replace_groups(spark, lake, C.GOLD_USER_ITEM_AFFINITY, fresh, C.USER_KEY, dirty_keys)
                crash_point("after_user_item")
                # more users than a query of a few rows: as many tasks as their rows need, which the
                # commit that wrote them counted (counting them again was a job over the whole
                # table: 2.3 s for 2,000 of 50,000 users); counted where that commit says nothing
                rows = None
                if n_dirty > io.FEW_USERS:
                    rows = io.rows_added(spark, lake, C.GOLD_USER_ITEM_AFFINITY, before + 1)
                    rows = fresh.count() if rows is None else rows
                io.replace_groups(spark, lake, C.GOLD_USER_TOPIC_AFFINITY,
                                  user_topic_affinity(fresh, topics, user_item_rows=rows),
                                  C.USER_KEY, dirty_keys, commit_note=topics_note)
                crash_point("after_user_topic")
                fresh.unpersist()
        dirty.unpersist()

    # a refresh finds the users of the batches this run took in its note (no query of silver.events)
    noted = None if full or len(with_new_events) > NOTED_USERS else (int(wm[C.LAST_BATCH_SEQ]), with_new_events)
    io.write_watermark(spark, lake, C.PIPELINE_AGGREGATE, last_batch_seq=last_seq, as_of=as_of, updated_at=as_of,
                       new_event_users=noted, users=n_users)
    crash_point("after_watermark")
    result = AggregateResult(
        mode=mode,
        as_of=as_of.isoformat(),
        dirty_users=n_dirty,
        user_item_rows=io.read_table(spark, lake, C.GOLD_USER_ITEM_AFFINITY).count(),
        user_topic_rows=io.read_table(spark, lake, C.GOLD_USER_TOPIC_AFFINITY).count(),
        last_batch_seq=last_seq,
    )
    log.info("aggregate done: %s", result)
    return result
