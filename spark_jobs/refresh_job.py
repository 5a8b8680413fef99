"""Refresh job: the Delta reads and writes of ``uig refresh`` (the edges themselves are computed by
:mod:`models.interests`, outside Spark).

Reads: the ``aggregate`` watermark, the last refresh's progress note, the users with behaviour the
last refresh did not see, their affinities, the item topics and titles. Writes, in this order: the
model's interest communities (full refresh only), the dirty users' edges in ONE commit whose note is
the refresh's progress (the batches and models it covered: the edges and the mark that says what
they reflect cannot disagree), then their history rows. A refresh killed before the edge commit is
redone whole by the next run; one killed after it has its history rows recorded from the edges
(:func:`repair_history`).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from spark_jobs import io
from spark_jobs.faults import crash_point
from spark_jobs.schemas import TABLE_PROPERTIES, TABLE_SCHEMAS
from spark_jobs.settings import Lake
from spark_jobs.transforms.edges import edges_after_refresh
from uig_common import names as C
from uig_common.timeutil import naive_utc

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

#: Up to this many new events, the keys of a refresh's dirty users are collected as they come and
#: made distinct on the driver: no shuffle, where a ``distinct`` takes two stages and a shuffle
#: (0.45 against 0.60 s to find one user here; a limit over many files may take a few jobs); a
#: larger increment scans its events twice, for the limit and for its ``distinct``.
DIRTY_EVENTS_ON_DRIVER = 10_000

#: Above this many dirty users the edge table is rewritten whole instead of replacing the users'
#: rows by a ``user_key IN (...)`` predicate (a predicate of tens of thousands of keys costs more
#: to plan than the rewrite).
MAX_LISTED_USERS = 25_000


HISTORY_KEY = (C.USER_KEY, C.INTEREST_TYPE, C.INTEREST_ID, C.AS_OF)

#: The scratch folder where a chunked refresh stages its edge rows before the one edge commit.
STAGED_EDGES = "refresh_edges"

#: The edge table is compacted (:func:`compact_edges`) once this many commits came after its last
#: whole rewrite: each incremental refresh adds a file of its users' rows, whose keys lie anywhere
#: in the key order, and every later replace of one user must open all such files.
COMPACT_AFTER_COMMITS = 8

#: Edge rows per file of a compacted edge table (one range of user keys each; about 5 MB).
EDGES_PER_FILE = 50_000

#: A refresher writes the checkpoints of the tables that set Delta's own interval high (the edge
#: and history tables: ``spark_jobs.schemas.TABLE_PROPERTIES``) once this many commits came after
#: the last one (Delta's default interval).
CHECKPOINT_AFTER_COMMITS = 10
CHECKPOINTED_BY_REFRESHER = tuple(t for t, p in TABLE_PROPERTIES.items() if "delta.checkpointInterval" in p)


@dataclass(frozen=True)
class RefreshMark:
    """The progress note of the last completed refresh, kept on its edge commit."""

    edges_version: int  # the gold.interest_edges version that carries the note
    batch_seq: int  # the last aggregated batch it covered
    models: str  # the models it used (GCN|policy): a change of either re-materialises the graph
    as_of: datetime  # aware UTC

    @classmethod
    def from_note(cls, version: int, note: str) -> "RefreshMark | None":
        try:
            mark = json.loads(note)["refresh"]
            return cls(version, int(mark["batch_seq"]), str(mark["models"]), datetime.fromisoformat(mark["as_of"]))
        except (ValueError, KeyError, TypeError):  # a note of something else: no refresh recorded
            return None


def refresh_note(batch_seq: int, models: str, as_of: datetime) -> str:
    """The commit note of a refresh's edge commit: what :meth:`RefreshMark.from_note` reads back."""
    return json.dumps({"refresh": {"batch_seq": batch_seq, "models": models, "as_of": as_of.isoformat()}})


@dataclass(frozen=True)
class RefreshProgress:
    """How far ``aggregate`` (``ops.watermarks``) and the last completed refresh got."""

    aggregated_as_of: datetime | None  # None: no aggregate has run
    aggregated_batch_seq: int
    refreshed: RefreshMark | None  # None: never refreshed
    edges_table_version: int  # gold.interest_edges' version when the mark was read
    watermarks_version: int  # ops.watermarks' version when the aggregate's mark was read


@dataclass(frozen=True)
class HistoryState:
    """``gold.interest_history`` at one Delta version: its newest ``as_of`` (naive UTC; None when
    empty) and the edge version whose rows its last write recorded (None: not known)."""

    version: int
    newest_as_of: datetime | None
    edges_version: int | None


def history_state(spark: "SparkSession", lake: Lake, known: HistoryState | None = None) -> HistoryState:
    """The history's state; ``known`` is reused while the version is unchanged. Read from the last
    write's commit note, or from the rows where no write left one."""
    version = io.table_version(spark, lake, C.GOLD_INTEREST_HISTORY)
    if known is not None and known.version == version:
        return known
    noted = io.last_noted_commit(spark, lake, C.GOLD_INTEREST_HISTORY)
    if noted is not None:
        try:
            note = json.loads(noted[1])["history"]
            newest = note["newest_as_of"]
            return HistoryState(version, None if newest is None else datetime.fromisoformat(newest),
                                int(note["edges_version"]))
        except (ValueError, KeyError, TypeError):
            pass
    newest = io.read_table(spark, lake, C.GOLD_INTEREST_HISTORY).agg(F.max(C.AS_OF)).collect()[0][0]
    return HistoryState(version, newest, None)


def read_progress(spark: "SparkSession", lake: Lake, known: RefreshProgress | None = None) -> RefreshProgress:
    """The aggregate's watermark (from its commit's note, :func:`io.noted_watermark`, where it has
    one) and the last refresh's mark; what ``known`` read of either is reused while its table is
    still at the version it was read at (a warm refresher asks often)."""
    watermarks = io.table_version(spark, lake, C.OPS_WATERMARKS)
    if known is not None and known.watermarks_version == watermarks:
        aggregated_as_of, aggregated_batch_seq = known.aggregated_as_of, known.aggregated_batch_seq
    else:
        aggregated = io.read_watermark(spark, lake, C.PIPELINE_AGGREGATE, version=watermarks) or {}
        as_of = aggregated.get(C.AS_OF)
        aggregated_as_of = None if as_of is None else as_of.replace(tzinfo=timezone.utc)  # type: ignore[union-attr]
        aggregated_batch_seq = int(aggregated.get(C.LAST_BATCH_SEQ) or 0)  # type: ignore[arg-type]
    edges = io.table_version(spark, lake, C.GOLD_INTEREST_EDGES)
    if known is not None and known.edges_table_version == edges:
        refreshed = known.refreshed
    else:
        noted = io.last_noted_commit(spark, lake, C.GOLD_INTEREST_EDGES)
        refreshed = None if noted is None else RefreshMark.from_note(*noted)
    return RefreshProgress(aggregated_as_of, aggregated_batch_seq, refreshed, edges, watermarks)


def dirty_users(
    spark: "SparkSession", lake: Lake, *, after_batch_seq: int | None, upto_batch_seq: int,
    watermarks_version: int | None = None,
) -> list[str]:
    """The user_keys (sorted) of users with events in batches ``(after_batch_seq, upto_batch_seq]``
    (every user when ``after_batch_seq`` is None).

    Read from the aggregate's watermark notes up to ``watermarks_version`` where they name those
    users (:func:`io.noted_new_event_users`: no Spark job); else from silver.events, where the keys
    of up to :data:`DIRTY_EVENTS_ON_DRIVER` new events are made distinct on the driver and more
    take a ``distinct`` in Spark."""
    if after_batch_seq is not None:
        noted = io.noted_new_event_users(spark, lake, C.PIPELINE_AGGREGATE, after_batch_seq=after_batch_seq,
                                         upto_batch_seq=upto_batch_seq, version=watermarks_version)
        if noted is not None:
            return noted
    events = io.read_table(spark, lake, C.SILVER_EVENTS)
    if after_batch_seq is not None:
        events = events.where((F.col(C.BATCH_SEQ) > after_batch_seq) & (F.col(C.BATCH_SEQ) <= upto_batch_seq))
        few = events.select(C.USER_KEY).limit(DIRTY_EVENTS_ON_DRIVER + 1).collect()
        if len(few) <= DIRTY_EVENTS_ON_DRIVER:
            return sorted({r[0] for r in few})
    return sorted(r[0] for r in events.select(C.USER_KEY).distinct().collect())


def user_frame(spark: "SparkSession", user_keys: Sequence[str]) -> "DataFrame":
    """``user_keys`` as a one-column frame of local data (through Arrow): later joins and the edge
    MERGE use it without re-planning the scan that found the users."""
    import pandas as pd

    schema = StructType([StructField(C.USER_KEY, StringType(), nullable=False)])
    return spark.createDataFrame(pd.DataFrame({C.USER_KEY: pd.Series(list(user_keys), dtype="object")}), schema)


def of_users(spark: "SparkSession", rows: "DataFrame", user_keys: Sequence[str]) -> "DataFrame":
    """``rows`` of ``user_keys``: a filter on the keys (no join; file statistics can skip files) up
    to :data:`MAX_LISTED_USERS` of them, a semi-join with them as local data above that."""
    if len(user_keys) <= MAX_LISTED_USERS:
        return rows.where(io.in_list(C.USER_KEY, user_keys))
    return rows.join(user_frame(spark, user_keys), C.USER_KEY, "left_semi")


def read_histories(spark: "SparkSession", lake: Lake, user_keys: Sequence[str]) -> "pd.DataFrame":
    """The gold affinities of ``user_keys``: user_key, item_id, weight, n_events, n_rate, last_ts."""
    affinities = io.read_table(spark, lake, C.GOLD_USER_ITEM_AFFINITY)
    return (of_users(spark, affinities, user_keys)
            .select(C.USER_KEY, C.ITEM_ID, C.WEIGHT, C.N_EVENTS, "n_rate", C.LAST_TS)
            .toPandas())


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


def edge_frame(edges: "pd.DataFrame", *, as_of: datetime, model_version: str, policy_version: str) -> "pd.DataFrame":
    """``edges`` (user_key, interest_type, interest_id, interest_name, weight, rank, explanation,
    update_action, update_reason: :func:`models.interests.interest_edges`) as active rows of
    ``gold.interest_edges`` in pandas, every row stamped ``as_of`` (also its ``refreshed_at``:
    reruns give equal rows)."""
    stamp = naive_utc(as_of)
    stamped = edges.assign(**{
        C.EDGE_STATUS: C.EDGE_ACTIVE, C.PREVIOUS_WEIGHT: None, C.MODEL_VERSION: model_version,
        C.POLICY_VERSION: policy_version, C.AS_OF: stamp, C.REFRESHED_AT: stamp,
    })
    columns = TABLE_SCHEMAS[C.GOLD_INTEREST_EDGES].fieldNames()
    return stamped[columns].astype({C.WEIGHT: "float64", C.PREVIOUS_WEIGHT: "float64", C.RANK: "int32"})


def edge_rows(spark: "SparkSession", frame: "pd.DataFrame") -> "DataFrame":
    """An :func:`edge_frame` as a Spark frame (through Arrow: no Python loop over the rows). Its
    rows travel inside the tasks that read them: for a few users' edges, not for a large graph's
    (:func:`stage_edges`)."""
    return spark.createDataFrame(frame, TABLE_SCHEMAS[C.GOLD_INTEREST_EDGES])


def stage_edges(spark: "SparkSession", lake: Lake, frames: Iterable["pd.DataFrame"]) -> "DataFrame":
    """Write each :func:`edge_frame` (the edges of one chunk of users) to a staging folder as it
    comes, one Parquet file each, and read them back as one frame: a refresh of more users than
    the driver holds at once (every user of a large graph) still makes its ONE edge commit, with
    the edges of one chunk in memory at a time. The files are written by Arrow, not by Spark: rows
    made on the driver and written by Spark travel inside a task, which the driver serialises whole
    (a 2 GB driver ran out of heap doing so for 750,000 rows). Whatever a killed run left there
    is removed first; :func:`drop_staged_edges` removes it after the commit."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyspark.sql.pandas.types import to_arrow_schema

    schema = TABLE_SCHEMAS[C.GOLD_INTEREST_EDGES]
    arrow_schema = to_arrow_schema(schema, timezone="UTC")  # the frames' naive stamps are UTC
    path = Path(lake.scratch(STAGED_EDGES))
    drop_staged_edges(lake)
    path.mkdir(parents=True)
    for number, frame in enumerate(frames):
        pq.write_table(pa.Table.from_pandas(frame, schema=arrow_schema, preserve_index=False),
                       path / f"part-{number:05d}.parquet")
    return spark.read.schema(schema).parquet(str(path))


def drop_staged_edges(lake: Lake) -> None:
    """Remove what :func:`stage_edges` wrote, once the edge commit no longer needs it."""
    shutil.rmtree(lake.scratch(STAGED_EDGES), ignore_errors=True)


def write_edges(
    spark: "SparkSession",
    lake: Lake,
    new_edges: "DataFrame",
    user_keys: Sequence[str],
    *,
    as_of: datetime,
    upto_batch_seq: int,
    models_marker: str,
    known_history: HistoryState | None = None,
    rewrite_all: bool = False,
) -> tuple[RefreshMark, HistoryState]:
    """Make the rows of ``user_keys`` in ``gold.interest_edges`` follow ``new_edges`` (:func:`edge_rows`
    stamped ``as_of``) in ONE commit noted with this refresh's :class:`RefreshMark`, then record
    the edges in ``gold.interest_history``.

    The history rows are appended, only those not stored yet when a row can carry ``as_of``
    already (first write wins). ``known_history`` is what the last call in
    this process returned: while the table is still at that version it is not read again (what a
    warm refresher saves on every run). ``rewrite_all`` rewrites the whole edge table (a full
    refresh) instead of replacing the users' rows. The mark records ``upto_batch_seq`` and
    ``models_marker``: the models this refresh used, so a change of either re-materialises the graph.
    """
    utc = as_of.astimezone(timezone.utc)
    note = refresh_note(int(upto_batch_seq), models_marker, utc)
    replace_user_edges(spark, lake, new_edges, user_keys, utc, commit_note=note, rewrite_all=rewrite_all)
    mark = RefreshMark(io.table_version(spark, lake, C.GOLD_INTEREST_EDGES), int(upto_batch_seq), models_marker, utc)
    crash_point("after_edges")
    history = record_history(spark, lake, new_edges, utc, mark.edges_version, known_history)
    crash_point("after_history")
    return mark, history


def warm_edges(spark: "SparkSession", lake: Lake) -> None:
    """Bring ``gold.interest_edges``' latest Delta state (its file list and their statistics) into
    this process's memory: the state reconstruction the next :func:`replace_user_edges` would
    otherwise begin with (a few Spark jobs: 0.8 of the 1.8 s a one-user edge commit took here).
    A query for a user key no user has (keys are digests, never empty) reads the state and skips
    every file. It only reads (and the table exists: a refresh wrote it), so it may run in a
    background thread beside the next batch's writes."""
    io.read_table(spark, lake, C.GOLD_INTEREST_EDGES).where(F.col(C.USER_KEY) == "").count()


def edges_due_for_compaction(spark: "SparkSession", lake: Lake) -> bool:
    """Whether :data:`COMPACT_AFTER_COMMITS` commits came after the edge table's last whole rewrite
    (read from its commit files, no Spark job)."""
    since = io.commits_since_rewrite(spark, lake, C.GOLD_INTEREST_EDGES, depth=COMPACT_AFTER_COMMITS)
    return since >= COMPACT_AFTER_COMMITS


def compact_edges(spark: "SparkSession", lake: Lake) -> int:
    """Rewrite ``gold.interest_edges`` with one range of user keys per file (:func:`io.compact`), rows
    unchanged: a one-user replace then opens one file. Its commit carries no note, so the last
    refresh's mark stands. Returns the number of files written."""
    return io.compact(spark, lake, C.GOLD_INTEREST_EDGES, C.USER_KEY, EDGES_PER_FILE)


def checkpoint_refreshed_tables(spark: "SparkSession", lake: Lake) -> list[str]:
    """Write the checkpoint of the edge and history tables where :data:`CHECKPOINT_AFTER_COMMITS`
    commits came after their last one (:func:`io.checkpoint`); the tables checkpointed."""
    return [table for table in CHECKPOINTED_BY_REFRESHER if io.checkpoint(spark, lake, table, CHECKPOINT_AFTER_COMMITS)]


def replace_user_edges(
    spark: "SparkSession", lake: Lake, new_edges: "DataFrame", user_keys: Sequence[str], as_of: datetime,
    *, commit_note: str | None = None, rewrite_all: bool = False,
) -> None:
    """Make the rows of ``user_keys`` in ``gold.interest_edges`` follow ``new_edges`` (all stamped
    ``as_of``) by the rule of :func:`spark_jobs.transforms.edges.edges_after_refresh`, in ONE commit.

    Only those users' rows are replaced (a ``replaceWhere`` on their keys; with deletion vectors
    the old rows are marked, not every file copied); other users' rows are never rewritten. With
    ``rewrite_all``, or more than :data:`MAX_LISTED_USERS` users, the table is rewritten whole,
    other users' rows copied as they are.
    """
    table = C.GOLD_INTEREST_EDGES
    current = io.read_table(spark, lake, table)
    stamp = io.timestamp_literal(as_of)
    refreshed = edges_after_refresh(of_users(spark, current, user_keys), new_edges, stamp)
    if rewrite_all or len(user_keys) > MAX_LISTED_USERS:
        others = current.join(user_frame(spark, user_keys), C.USER_KEY, "left_anti")
        # each file holds one range of user keys (a user's rows may run on into the next file) and
        # no more rows than a compaction leaves in one, so a later replace of a few users' rows
        # finds them in a few small files by their statistics and marks rows there only (1,500,000
        # edges: a one-user replace took 1.7 s on files of mixed keys, 0.95 s on ranges; on 4 files
        # of ranges 1.49 s, on 30 of them 1.32 s)
        rows = io.in_key_ranges(refreshed.unionByName(others), C.USER_KEY)
        io.overwrite(spark, lake, table, rows, commit_note=commit_note, rows_per_file=EDGES_PER_FILE)
    else:
        with io.few_rows(spark, len(user_keys)):
            io.replace_groups(spark, lake, table, refreshed, C.USER_KEY, list(user_keys), commit_note=commit_note)


def record_history(
    spark: "SparkSession", lake: Lake, edges: "DataFrame", as_of: datetime, edges_version: int,
    known: HistoryState | None = None,
) -> HistoryState:
    """Add ``edges`` (active edges stamped ``as_of``) to ``gold.interest_history``, the commit
    noted with ``edges_version`` (the edge commit they come from) and the newest ``as_of``."""
    rows = edges.select(*TABLE_SCHEMAS[C.GOLD_INTEREST_HISTORY].fieldNames())
    stamp = naive_utc(as_of)
    newest = history_state(spark, lake, known).newest_as_of
    after = stamp if newest is None else max(newest, stamp)
    note = json.dumps({"history": {"edges_version": edges_version, "newest_as_of": after.isoformat()}})
    if newest is not None and newest >= stamp:
        # a row may carry this as_of already (a retry of this refresh, or an as_of older than the
        # newest): add only the missing rows, so the first write wins
        stored = io.read_table(spark, lake, C.GOLD_INTEREST_HISTORY).where(
            F.col(C.AS_OF) == io.timestamp_literal(as_of))
        rows = rows.join(stored.select(*HISTORY_KEY), list(HISTORY_KEY), "left_anti")
    # Delta commits nothing when no row is added: the note then stays behind, and the next cold
    # refresher's check finds nothing to add again
    io.append(spark, lake, C.GOLD_INTEREST_HISTORY, rows, commit_note=note)
    return HistoryState(io.table_version(spark, lake, C.GOLD_INTEREST_HISTORY), after, edges_version)


def repair_history(spark: "SparkSession", lake: Lake, mark: RefreshMark) -> HistoryState:
    """Record the history rows of the refresh ``mark`` names when the history's last write does not
    name its edge commit — a kill stopped it between its edge commit and its history write (or its
    write added no row, so made no commit): they are its active edges stamped with its ``as_of``."""
    log.warning("the history names no write of the refresh as of %s: recording its edges' rows", mark.as_of)
    edges = io.read_table(spark, lake, C.GOLD_INTEREST_EDGES).where(
        (F.col(C.AS_OF) == io.timestamp_literal(mark.as_of)) & (F.col(C.EDGE_STATUS) == C.EDGE_ACTIVE))
    return record_history(spark, lake, edges, mark.as_of, mark.edges_version)
