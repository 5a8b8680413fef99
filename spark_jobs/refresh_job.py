"""Refresh job: the Delta reads and writes of ``uig refresh`` (the edges themselves are computed by
:mod:`models.interests`, outside Spark).

Reads: the ``aggregate`` and ``refresh`` watermarks, the users with behaviour the last refresh did
not see, their affinities, the item topics and titles. Writes, in this order: the model's interest
communities (full refresh only), the dirty users' edges (one MERGE), their history rows (an append), and the
``refresh`` watermark last, so a refresh killed part-way is redone whole by the next run.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from spark_jobs import io
from spark_jobs.faults import crash_point
from spark_jobs.schemas import TABLE_SCHEMAS
from spark_jobs.settings import Lake
from uig_common import names as C

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefreshProgress:
    """How far ``aggregate`` and the last refresh got (``ops.watermarks``)."""

    aggregated_as_of: datetime | None  # None: no aggregate has run
    aggregated_batch_seq: int
    refreshed_batch_seq: int | None  # None: never refreshed
    refreshed_model_version: str | None  # the models the last completed refresh used (GCN|policy)
    refreshed_as_of: datetime | None  # the as-of of the last completed refresh


@dataclass(frozen=True)
class HistoryState:
    """``gold.interest_history`` at one Delta version: its newest ``as_of`` (naive UTC; None when empty)."""

    version: int
    newest_as_of: datetime | None


def history_state(spark: "SparkSession", lake: Lake, known: HistoryState | None = None) -> HistoryState:
    """The history's version and newest ``as_of``; ``known`` is reused while the version is unchanged."""
    version = io.table_version(spark, lake, C.GOLD_INTEREST_HISTORY)
    if known is not None and known.version == version:
        return known
    newest = io.read_table(spark, lake, C.GOLD_INTEREST_HISTORY).agg(F.max(C.AS_OF)).collect()[0][0]
    return HistoryState(version, newest)


def read_progress(spark: "SparkSession", lake: Lake) -> RefreshProgress:
    marks = io.read_watermarks(spark, lake)
    aggregated = marks.get(C.PIPELINE_AGGREGATE) or {}
    refreshed = marks.get(C.PIPELINE_REFRESH)
    as_of = aggregated.get(C.AS_OF)
    return RefreshProgress(
        aggregated_as_of=None if as_of is None else as_of.replace(tzinfo=timezone.utc),  # type: ignore[union-attr]
        aggregated_batch_seq=int(aggregated.get(C.LAST_BATCH_SEQ) or 0),  # type: ignore[arg-type]
        refreshed_batch_seq=None if refreshed is None else int(refreshed[C.LAST_BATCH_SEQ]),  # type: ignore[arg-type]
        refreshed_model_version=None if refreshed is None else refreshed.get(C.MODEL_VERSION),  # type: ignore[arg-type]
        refreshed_as_of=None if refreshed is None or refreshed.get(C.AS_OF) is None
        else refreshed[C.AS_OF].replace(tzinfo=timezone.utc),  # type: ignore[union-attr]
    )


def graph_has_other_model(spark: "SparkSession", lake: Lake, model_version: str) -> bool:
    """Whether an active edge of ``gold.interest_edges`` comes from another model version."""
    other = (F.col(C.EDGE_STATUS) == C.EDGE_ACTIVE) & (F.col(C.MODEL_VERSION) != model_version)
    return io.has_rows(spark, lake, C.GOLD_INTEREST_EDGES, other)


def dirty_users(spark: "SparkSession", lake: Lake, *, after_batch_seq: int | None, upto_batch_seq: int) -> list[str]:
    """The user_keys (sorted) of users with events in batches ``(after_batch_seq, upto_batch_seq]``
    (every user when ``after_batch_seq`` is None)."""
    events = io.read_table(spark, lake, C.SILVER_EVENTS)
    if after_batch_seq is not None:
        events = events.where((F.col(C.BATCH_SEQ) > after_batch_seq) & (F.col(C.BATCH_SEQ) <= upto_batch_seq))
    return sorted(r[0] for r in events.select(C.USER_KEY).distinct().collect())


def user_frame(spark: "SparkSession", user_keys: Sequence[str]) -> "DataFrame":
    """``user_keys`` as a one-column frame of local data (through Arrow): later joins and the edge
    MERGE use it without re-planning the scan that found the users."""
    import pandas as pd

    schema = StructType([StructField(C.USER_KEY, StringType(), nullable=False)])
    return spark.createDataFrame(pd.DataFrame({C.USER_KEY: pd.Series(list(user_keys), dtype="object")}), schema)


def read_histories(spark: "SparkSession", lake: Lake, users: "DataFrame") -> "pd.DataFrame":
    """The gold affinities of ``users``: user_key, item_id, weight, n_events, n_rate, last_ts."""
    return (
        io.read_table(spark, lake, C.GOLD_USER_ITEM_AFFINITY)
        .join(users, C.USER_KEY, "left_semi")
        .select(C.USER_KEY, C.ITEM_ID, C.WEIGHT, C.N_EVENTS, "n_rate", C.LAST_TS)
        .toPandas()
    )


def read_interest_inputs(spark: "SparkSession", lake: Lake) -> tuple["pd.DataFrame", dict[str, str]]:
    """What an interest edge is made of besides a history: the catalog's item topics (item_id,
    topic_id, topic_type, topic_name) and every item's title."""
    topics = io.read_table(spark, lake, C.GOLD_ITEM_TOPICS)
    if C.TOPIC_NAME not in topics.columns:  # written before topics had display names
        log.warning("gold.item_topics has no display names yet: run `uig aggregate` to name KG entities")
        topics = topics.withColumn(C.TOPIC_NAME, F.lit(None).cast("string"))
    titles = io.read_table(spark, lake, C.SILVER_ITEMS).select(C.ITEM_ID, C.TITLE).collect()
    return (topics.select(C.ITEM_ID, C.TOPIC_ID, C.TOPIC_TYPE, C.TOPIC_NAME).toPandas(),
            {r[C.ITEM_ID]: r[C.TITLE] for r in titles})


def write_communities(
    spark: "SparkSession", lake: Lake, communities: Sequence[Mapping[str, Any]], model_version: str
) -> None:
    """Replace ``gold.interest_communities`` with the model's communities (``Community.to_dict`` rows)."""
    rows = [(c[C.COMMUNITY_ID], c[C.NAME], list(c[C.TOP_GENRES]), list(c[C.MEMBERS]), len(c[C.MEMBERS]), model_version)
            for c in communities]
    io.overwrite(spark, lake, C.GOLD_INTEREST_COMMUNITIES,
                 spark.createDataFrame(rows, TABLE_SCHEMAS[C.GOLD_INTEREST_COMMUNITIES]))
    crash_point("after_communities")  # recovery tests kill the run at each commit point


def write_edges(
    spark: "SparkSession",
    lake: Lake,
    edges: "pd.DataFrame",
    users: "DataFrame",
    *,
    as_of: datetime,
    model_version: str,
    policy_version: str,
    upto_batch_seq: int,
    models_marker: str | None = None,
    known_history: "HistoryState | None" = None,
) -> "HistoryState":
    """Make ``users``' rows of ``gold.interest_edges`` equal ``edges`` (one MERGE, see
    :func:`spark_jobs.io.merge_interest_edges`), record them in ``gold.interest_history``, then
    move the ``refresh`` watermark to ``upto_batch_seq``.

    The history rows are appended when no row can carry ``as_of`` yet (its newest ``as_of`` is
    older), else MERGEd insert-only (a retry of a refresh killed before its watermark: the rows it
    recorded stay, first write wins). ``known_history`` is what the last call in this process
    returned: while the table is still at that version, its newest ``as_of`` is not queried again
    (what a warm refresher saves on every run).

    ``edges`` has user_key, interest_type, interest_id, interest_name, weight, rank, explanation,
    update_action, update_reason; every row is stamped ``as_of`` (also its ``refreshed_at``: reruns
    give equal rows). The watermark records ``models_marker`` (default ``model_version``): the
    models this refresh used, so a change of either re-materialises the graph.
    """
    stamp = as_of.astimezone(timezone.utc).replace(tzinfo=None)
    stamped = edges.assign(**{
        C.EDGE_STATUS: C.EDGE_ACTIVE, C.PREVIOUS_WEIGHT: None, C.MODEL_VERSION: model_version,
        C.POLICY_VERSION: policy_version, C.AS_OF: stamp, C.REFRESHED_AT: stamp,
    })
    schema = TABLE_SCHEMAS[C.GOLD_INTEREST_EDGES]
    frame = stamped[schema.fieldNames()].astype({C.WEIGHT: "float64", C.PREVIOUS_WEIGHT: "float64", C.RANK: "int32"})
    new_edges = spark.createDataFrame(frame, schema)  # through Arrow: no Python loop over the rows
    io.merge_interest_edges(spark, lake, new_edges, users, as_of)
    crash_point("after_edges")
    history = new_edges.select(*TABLE_SCHEMAS[C.GOLD_INTEREST_HISTORY].fieldNames())
    newest = history_state(spark, lake, known_history).newest_as_of
    if newest is not None and newest >= stamp:
        # a row may carry this as_of (a retry of this refresh, or an as_of older than the newest)
        io.merge_upsert(spark, lake, C.GOLD_INTEREST_HISTORY, history,
                        [C.USER_KEY, C.INTEREST_TYPE, C.INTEREST_ID, C.AS_OF], insert_only=True)
    else:  # no row carries this as_of, so none can match: an append is the same MERGE without the join
        io.append(spark, lake, C.GOLD_INTEREST_HISTORY, history)
    written = HistoryState(io.table_version(spark, lake, C.GOLD_INTEREST_HISTORY),
                           stamp if newest is None else max(newest, stamp))
    crash_point("after_history")
    io.write_watermark(spark, lake, C.PIPELINE_REFRESH, last_batch_seq=upto_batch_seq, as_of=as_of, updated_at=as_of,
                       model_version=models_marker or model_version)
    crash_point("after_watermark")
    return written
