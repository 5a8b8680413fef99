"""Aggregate job: silver events → gold user–item and user–topic affinities at ``as_of``.

Incremental by default: only users with new events since the ``aggregate`` watermark are
recomputed (one atomic MERGE per table); rows of other users keep their older ``as_of`` and are
brought to any later time with :func:`spark_jobs.transforms.aggregate.decay_to`. When more than
``max_dirty_fraction`` of all users are dirty, the tables are rewritten whole instead (mode
``full``): the same rows, and cheaper than a MERGE that updates most of a large table.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from spark_jobs import columns as C
from spark_jobs import io
from spark_jobs.faults import crash_point
from spark_jobs.schemas import OPS_WATERMARKS
from spark_jobs.transforms.aggregate import dirty_users, item_topics, user_item_affinity, user_topic_affinity
from uig_tasks.config import UigConfig

log = logging.getLogger(__name__)


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


def _refresh_item_topics(spark: SparkSession, config: UigConfig):
    """Rewrite gold.item_topics only when the catalog produces different edges."""
    fresh = item_topics(io.read_table(spark, config, C.SILVER_ITEMS), kg_min_items=config.kg_min_items).persist()
    stored = io.read_table(spark, config, C.GOLD_ITEM_TOPICS)
    cols = stored.columns
    if fresh.select(*cols).exceptAll(stored).count() or stored.exceptAll(fresh.select(*cols)).count():
        io.overwrite(spark, config, C.GOLD_ITEM_TOPICS, fresh)
    fresh.unpersist()
    return io.read_table(spark, config, C.GOLD_ITEM_TOPICS)


def aggregate(spark: SparkSession, config: UigConfig, as_of: datetime, *, full: bool = False) -> AggregateResult:
    events = io.read_table(spark, config, C.SILVER_EVENTS)
    last_seq = int(events.agg(F.max(C.BATCH_SEQ)).collect()[0][0] or 0)
    wm_rows = io.read_table(spark, config, C.OPS_WATERMARKS).where(F.col(C.PIPELINE) == "aggregate").collect()
    wm = wm_rows[0] if wm_rows else None
    previous_as_of = wm[C.AS_OF] if wm else None
    if wm is None or previous_as_of is None or as_of < previous_as_of.replace(tzinfo=timezone.utc):
        full = True  # first run, or going back in time: every user's window changes

    topics = _refresh_item_topics(spark, config)
    params = dict(as_of=as_of, half_life_days=config.half_life_days, weights=config.event_weights)

    dirty = None
    if not full:
        dirty = dirty_users(
            events, after_batch_seq=int(wm[C.LAST_BATCH_SEQ]), previous_as_of=previous_as_of, as_of=as_of
        ).persist()
        n_dirty = dirty.count()
        n_users = events.select(C.USER_KEY).distinct().count()
        if n_dirty > config.max_dirty_fraction * n_users:
            # MERGE-ing most rows costs more than rewriting them; the tables end up equal either way.
            log.info("aggregate: %d of %d users dirty (> %.0f%%): rewriting instead of merging",
                     n_dirty, n_users, 100 * config.max_dirty_fraction)
            dirty.unpersist()
            dirty, full = None, True

    if full:
        mode = "full"
        user_items = user_item_affinity(events, **params)
        io.overwrite(spark, config, C.GOLD_USER_ITEM_AFFINITY, user_items)
        crash_point("after_user_item")
        io.overwrite(
            spark, config, C.GOLD_USER_TOPIC_AFFINITY,
            user_topic_affinity(io.read_table(spark, config, C.GOLD_USER_ITEM_AFFINITY), topics),
        )
        n_dirty = events.select(C.USER_KEY).distinct().count()
    else:
        assert dirty is not None
        mode = "incremental" if n_dirty else "noop"
        if n_dirty:
            user_items = user_item_affinity(events.join(dirty, C.USER_KEY, "left_semi"), **params)
            io.replace_groups(
                spark, config, C.GOLD_USER_ITEM_AFFINITY, user_items, [C.USER_KEY, C.ITEM_ID], C.USER_KEY, dirty
            )
            crash_point("after_user_item")
            fresh = io.read_table(spark, config, C.GOLD_USER_ITEM_AFFINITY).join(dirty, C.USER_KEY, "left_semi")
            io.replace_groups(
                spark, config, C.GOLD_USER_TOPIC_AFFINITY, user_topic_affinity(fresh, topics),
                [C.USER_KEY, C.TOPIC_ID, C.TOPIC_TYPE], C.USER_KEY, dirty,
            )
        dirty.unpersist()

    wm_row = {C.PIPELINE: "aggregate", C.LAST_BATCH_SEQ: last_seq, C.MAX_EVENT_TS: None, C.AS_OF: as_of, C.UPDATED_AT: as_of}
    io.merge_upsert(spark, config, C.OPS_WATERMARKS, spark.createDataFrame([wm_row], OPS_WATERMARKS), [C.PIPELINE])
    result = AggregateResult(
        mode=mode,
        as_of=as_of.isoformat(),
        dirty_users=n_dirty,
        user_item_rows=io.read_table(spark, config, C.GOLD_USER_ITEM_AFFINITY).count(),
        user_topic_rows=io.read_table(spark, config, C.GOLD_USER_TOPIC_AFFINITY).count(),
        last_batch_seq=last_seq,
    )
    log.info("aggregate done: %s", result)
    return result
