"""Ingest job: landing files → bronze → silver, incrementally and idempotently.

A *batch* is the set of new complete lines the landing scan found (byte ranges of landing files,
:mod:`spark_jobs.landing`). Its id is derived from those ranges; it is registered in
``ops.batches`` before any data is written and marked ``committed`` last, so a run that dies
part-way is resumed with exactly the same bytes on the next run (or abandoned and re-planned if
they left landing before bronze held them), and every step (one Delta commit each) converges to
the same tables.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Mapping

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from uig_common import names as C
from uig_common.errors import InputError, UigError
from spark_jobs import io
from spark_jobs.faults import crash_point
from spark_jobs.landing import LandingScan, Segment, catalog_files, scan_landing, segment_is_intact
from spark_jobs.schemas import OPS_BATCHES, OPS_LANDING_FILES, SEGMENT, TABLE_SCHEMAS
from spark_jobs.settings import IngestSettings, Lake
from spark_jobs.transforms.lines import split_lines
from spark_jobs.transforms.catalog import items_from_landing, users_from_landing
from spark_jobs.transforms.ingest import (
    bronze_rows,
    clean_rows,
    duplicate_rows,
    flag_unknown_items,
    mark_duplicates,
    parse_events,
    quarantine_rows,
    to_silver_events,
)

log = logging.getLogger(__name__)

ITEMS_SUBDIR = "catalog/items"
USERS_SUBDIR = "catalog/users"


class BatchAccountingError(UigError, RuntimeError):
    """raw != clean + quarantined + duplicates for a batch: a line was lost or counted twice."""


@dataclass(frozen=True)
class BatchResult:
    batch_id: str
    batch_seq: int
    n_files: int
    n_raw: int
    n_clean: int
    n_quarantined: int
    n_duplicates: int
    n_late: int
    resumed: bool

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def batch_id_for(segments: list[Segment], logical_time: datetime) -> str:
    """Derived from the byte ranges the batch ingests, so a re-planned batch gets a new id."""
    plan = "\n".join(f"{s.source_file}\t{s.start_byte}\t{s.end_byte}\t{s.sha256}" for s in segments)
    return f"{logical_time:%Y%m%dT%H%M%S}-{hashlib.sha256(plan.encode()).hexdigest()[:12]}"


def _segments_of(batch: Mapping[str, object]) -> list[Segment]:
    return [Segment(**(s.asDict() if hasattr(s, "asDict") else dict(s))) for s in batch[C.SEGMENTS] or []]  # type: ignore[union-attr]


def _ingested_segments(batches: list) -> dict[str, Segment]:
    """The latest segment of each landing file over every batch that still counts (not abandoned)."""
    latest: dict[str, Segment] = {}
    for batch in sorted(batches, key=lambda b: b[C.BATCH_SEQ]):
        if batch[C.STATUS] == C.BATCH_ABANDONED:
            continue
        for segment in _segments_of(batch):
            latest[segment.source_file] = segment
    return latest


def _record_scan(spark: SparkSession, lake: Lake, scan: LandingScan, scanned_at: datetime) -> None:
    """Replace ``ops.landing_files`` with this scan's report (one commit; nothing is skipped silently)."""
    rows = [(f.source_file, f.status, f.reason, f.detail, f.size, f.ingested_bytes, f.pending_bytes)
            for f in scan.files]
    stored = {tuple(r)[:-1] for r in io.read_table(spark, lake, C.OPS_LANDING_FILES).collect()}
    if stored != set(rows):  # an unchanged landing folder writes nothing (not even an empty commit)
        frame = spark.createDataFrame([(*r, scanned_at) for r in rows], OPS_LANDING_FILES)
        io.overwrite(spark, lake, C.OPS_LANDING_FILES, frame)
    for f in scan.skipped:
        log.warning("landing file skipped: %s (%s: %s)", f.source_file, f.reason, f.detail)


# --- catalog ----------------------------------------------------------------------------
ITEM_SCHEMA = "item_id string, title string, genres array<string>, year int, entities array<struct<relation:string,entity_id:string>>"
USER_SCHEMA = "user_id string, age int, gender string, occupation string, region string"


#: Part of every catalog note: bump it when the landing → silver catalog transform changes
#: without a schema change, so unchanged files are compared (and upserted) again once.
CATALOG_NOTE_VERSION = 1


def _catalog_note(table: str, files: list[tuple[str, bytes]], schema: str, secret: str = "") -> str:
    """What a catalog upsert was made from: the files' names and bytes, the schemas and the salt
    (``secret``), digested. Kept as the upsert's Delta commit note (:func:`io.last_commit_note`)."""
    digest = hashlib.sha256(f"{CATALOG_NOTE_VERSION}|{table}|{schema}|{TABLE_SCHEMAS[table].simpleString()}".encode())
    digest.update(hashlib.sha256(secret.encode()).digest())
    for name, data in files:
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return f"catalog-files:{digest.hexdigest()}"


def _catalog_rows(spark: SparkSession, files: list[tuple[str, bytes]], schema: str) -> DataFrame:
    """Rows of the catalog's JSON-lines files (name, bytes), with ``_file``."""
    lines = [(name, line.decode("utf-8", "replace")) for name, data in files for line in split_lines(data)
             if line.strip()]
    raw = spark.createDataFrame(lines, "_file string, _json string")
    return raw.select(F.from_json("_json", schema).alias("r"), "_file").select("r.*", "_file")


def _latest_per_key(df: DataFrame, key: str) -> DataFrame:
    """One row per key; when several landing files carry a key, the last file (by name) wins."""
    w = Window.partitionBy(key).orderBy(F.col("_file").desc())
    return df.withColumn("_r", F.row_number().over(w)).where("_r = 1").drop("_r", "_file")


def _upsert_catalog(
    spark: SparkSession, lake: Lake, folder: Path, table: str, schema: str, key: str,
    to_rows: Callable[[DataFrame], DataFrame], secret: str = "",
) -> tuple[int, int] | None:
    """(rows changed, rows in ``table``) after upserting the catalog files of ``folder`` (regular
    files only, links not followed) through ``to_rows``; None when the folder has none. Files
    equal to those of the table's last upsert (its commit note) are not read into Spark at all."""
    files = [(name, path.read_bytes()) for name, path in catalog_files(folder)]
    if not files:
        return None
    note = _catalog_note(table, files, schema, secret)
    changed = 0
    if io.last_commit_note(spark, lake, table) == note:
        log.info("catalog %s: files unchanged since the last upsert; not compared", folder.name)
    else:
        changed = _upsert_changed(spark, lake, table, to_rows(_catalog_rows(spark, files, schema)), key, note)
    return changed, io.read_table(spark, lake, table).count()


def ingest_catalog(spark: SparkSession, lake: Lake, settings: IngestSettings, logical_time: datetime) -> dict[str, int]:
    """Upsert items and users (MERGE, updating a row only when its content hash changed).

    A table whose last commit is the upsert of the very same files (same bytes, schemas and salt:
    its commit note) is not compared again: a run with new events only pays nothing for the catalog.
    (An upsert that changes no row makes no commit, so files edited back and forth, or a table last
    written before notes existed, are compared on every run until a row changes: the old cost.)
    """
    items_dir, users_dir = settings.landing_dir / ITEMS_SUBDIR, settings.landing_dir / USERS_SUBDIR

    def item_rows(items: DataFrame) -> DataFrame:
        bad = items.where(F.col(C.ITEM_ID).isNull() | F.col(C.TITLE).isNull()).count()
        if bad:
            raise InputError(f"{bad} item rows in {items_dir} have no item_id or title; fix the catalog files")
        return items_from_landing(_latest_per_key(items, C.ITEM_ID), logical_time)

    def user_rows(users: DataFrame) -> DataFrame:
        users = users.where(F.col(C.USER_ID).isNotNull())
        return users_from_landing(_latest_per_key(users, C.USER_ID), settings.user_salt, logical_time)

    counts: dict[str, int] = {}
    items = _upsert_catalog(spark, lake, items_dir, C.SILVER_ITEMS, ITEM_SCHEMA, C.ITEM_ID, item_rows)
    if items is not None:
        counts["items_changed"], counts["items"] = items
    users = _upsert_catalog(spark, lake, users_dir, C.SILVER_USERS, USER_SCHEMA, C.USER_KEY, user_rows,
                            settings.user_salt)
    if users is not None:
        counts["users_changed"], counts["users"] = users
    return counts


# --- events -----------------------------------------------------------------------------
def _ingest_watermark(spark: SparkSession, lake: Lake) -> datetime | None:
    """Newest event time of all committed batches (the ``ingest`` row of ops.watermarks mirrors it)."""
    batches = io.read_table(spark, lake, C.OPS_BATCHES).where(F.col(C.STATUS) == C.BATCH_COMMITTED)
    return batches.agg(F.max(C.MAX_EVENT_TS)).collect()[0][0]


def _write_batch_row(spark: SparkSession, lake: Lake, row: dict[str, object]) -> None:
    full = {name: row.get(name) for name in OPS_BATCHES.fieldNames()}
    df = spark.createDataFrame([full], OPS_BATCHES)
    io.merge_upsert(spark, lake, C.OPS_BATCHES, df, [C.BATCH_ID], local_source=True)


def _upsert_changed(spark: SparkSession, lake: Lake, table: str, rows: DataFrame, key: str, note: str) -> int:
    """MERGE only rows whose content hash differs from what is stored (the commit noted ``note``);
    returns how many. Into an empty table (the first ingest) the rows are appended: the same rows
    in one commit, without a MERGE's scan and join. (Two appends never conflict in Delta where two
    MERGEs would; the data root's writer lock is what keeps a second first ingest out.)"""
    stored = io.read_table(spark, lake, table).select(key, C.CONTENT_HASH)
    changed = rows.join(stored, [key, C.CONTENT_HASH], "left_anti").persist()
    n = changed.count()
    if n and io.has_rows(spark, lake, table, F.lit(True)):
        io.merge_upsert(spark, lake, table, changed, [key], commit_note=note)
    elif n:
        io.append(spark, lake, table, changed, commit_note=note)
    changed.unpersist()
    return n


def ingest_events(spark: SparkSession, lake: Lake, settings: IngestSettings, logical_time: datetime) -> list[BatchResult]:
    """Resume any unfinished batch, then ingest every new complete line under landing as one batch.

    What is new is decided by :func:`spark_jobs.landing.scan_landing` against the segments of
    earlier batches (byte offsets and a hash per file), so lines appended to a file after it was
    ingested are picked up exactly once; every entry's fate is written to ``ops.landing_files``.
    """
    batches = [b.asDict() for b in io.read_table(spark, lake, C.OPS_BATCHES).collect()]
    results: list[BatchResult] = []
    unfinished = (b for b in batches if b[C.STATUS] not in (C.BATCH_COMMITTED, C.BATCH_ABANDONED))
    for row in sorted(unfinished, key=lambda b: b[C.BATCH_SEQ]):
        result = _resume_batch(spark, lake, settings, row)
        if result is None:
            row[C.STATUS] = C.BATCH_ABANDONED
        else:
            results.append(result)

    scan = scan_landing(settings.landing_dir, _ingested_segments(batches))
    _record_scan(spark, lake, scan, logical_time)
    if not scan.segments:
        pending = sum(f.pending_bytes for f in scan.files)
        log.info("no new complete lines in landing (%d files; %d skipped; %d bytes of unfinished lines wait)",
                 len(scan.files), len(scan.skipped), pending)
        return results
    batch = {
        C.BATCH_ID: batch_id_for(scan.segments, logical_time),
        C.BATCH_SEQ: max((b[C.BATCH_SEQ] for b in batches), default=0) + 1,
        C.LOGICAL_TIME: logical_time,
        C.FILES: sorted({s.source_file for s in scan.segments}),
        C.SEGMENTS: [s.as_dict() for s in scan.segments],
        C.STATUS: C.BATCH_STARTED,
        C.MAX_EVENT_TS + "_before": _ingest_watermark(spark, lake),
    }
    _write_batch_row(spark, lake, batch)
    crash_point("after_register")
    results.append(_run_batch(spark, lake, settings, batch, resumed=False))
    return results


def _resume_batch(spark: SparkSession, lake: Lake, settings: IngestSettings, batch: dict) -> BatchResult | None:
    """Finish a batch a killed run left behind; None (batch abandoned) if its bytes are gone from landing."""
    has_bronze = io.has_rows(spark, lake, C.BRONZE_EVENTS_RAW, F.col(C.BATCH_ID) == batch[C.BATCH_ID])
    if not has_bronze and not all(segment_is_intact(settings.landing_dir, s) for s in _segments_of(batch)):
        log.warning("abandoning unfinished batch %s: its landing bytes changed before bronze held them; "
                    "the files are planned again", batch[C.BATCH_ID])
        _write_batch_row(spark, lake, {**batch, C.STATUS: C.BATCH_ABANDONED})
        return None
    log.warning("resuming unfinished batch %s (%d files)", batch[C.BATCH_ID], len(batch[C.FILES]))
    return _run_batch(spark, lake, settings, batch, resumed=True, bronze_done=bool(has_bronze))


#: A batch of at most this many landing lines looks up only its own event ids among the stored
#: ones (:func:`~spark_jobs.transforms.ingest.mark_duplicates` ``few_rows``): a broadcast of a
#: few MB of ids at most.
FEW_LINES = 100_000


def _batch_lines(batch: Mapping[str, object]) -> int:
    """Landing lines of ``batch``, from its segments' line numbers (no Spark job)."""
    return sum(s.last_line_no - s.first_line_no + 1 for s in _segments_of(batch))


#: Landing bytes one bronze task reads (and so about one bronze file's worth of lines).
BRONZE_TASK_BYTES = 64 * 2**20


def _bronze_tasks(spark: SparkSession, segments: list[dict]) -> int:
    """How many tasks read a batch's segments into bronze: Spark's default parallelism (the
    configured shuffle partitions), more only past ``BRONZE_TASK_BYTES`` a task; each task writes
    one bronze file, so a batch of many small landing files does not become as many small files."""
    total = sum(int(s["end_byte"]) - int(s["start_byte"]) for s in segments)
    parallelism = spark.sparkContext.defaultParallelism
    return max(1, min(len(segments), max(parallelism, total // BRONZE_TASK_BYTES + 1)))


def _replace_batch_rows(
    spark: SparkSession, lake: Lake, table: str, rows: DataFrame, where_batch: str, *, resumed: bool
) -> None:
    """Replace ``table``'s rows of a batch with ``rows`` (one commit). A first try with no such
    rows (most batches quarantine nothing and repeat no event) writes no commit: no try before it
    can have left rows of its batch. A resumed batch always writes, replacing what its killed try
    left. ``rows`` come from cached rows, so counting them costs little; a count (not a ``limit``,
    whose jobs grow from one partition) also fills that cache with every task at once."""
    if resumed or rows.count() > 0:
        io.overwrite(spark, lake, table, rows, where_batch)


def _run_batch(
    spark: SparkSession, lake: Lake, settings: IngestSettings, batch: dict, resumed: bool, bronze_done: bool = False
) -> BatchResult:
    batch_id, seq = batch[C.BATCH_ID], int(batch[C.BATCH_SEQ])
    logical_time: datetime = batch[C.LOGICAL_TIME]
    files: list[str] = list(batch[C.FILES])
    in_batch = F.col(C.BATCH_ID) == F.lit(batch_id)
    where_batch = f"{C.BATCH_ID} = '{batch_id}'"
    landing = str(settings.landing_dir.resolve())
    log.info("batch %s (seq %d): %d files", batch_id, seq, len(files))

    # 1. bronze: every line as received (files read on the executors, segments spread over _bronze_tasks).
    if not bronze_done:
        segments = [s.as_dict() for s in _segments_of(batch)]
        plan = spark.createDataFrame(segments, SEGMENT).repartition(_bronze_tasks(spark, segments))
        io.overwrite(spark, lake, C.BRONZE_EVENTS_RAW,
                     bronze_rows(plan, batch_id, logical_time, landing, settings.max_line_bytes), where_batch)
    crash_point("after_bronze")

    # 2. validate, pseudonymise, check items.
    bronze = io.read_table(spark, lake, C.BRONZE_EVENTS_RAW).where(in_batch)
    parsed = parse_events(
        bronze,
        user_salt=settings.user_salt,
        logical_time=logical_time,
        max_line_bytes=settings.max_line_bytes,
        future_tolerance_seconds=settings.future_tolerance_seconds,
    )
    flagged = flag_unknown_items(parsed, io.read_table(spark, lake, C.SILVER_ITEMS)).persist()
    marked: DataFrame | None = None  # the valid rows marked for de-duplication, made once for both writes
    try:
        _replace_batch_rows(spark, lake, C.SILVER_QUARANTINE, quarantine_rows(flagged, logical_time), where_batch,
                            resumed=resumed)
        crash_point("after_quarantine")

        # 3. de-duplicate against this batch and every earlier one, then insert.
        valid = flagged.where(F.col(C.REASON).isNull())
        few = _batch_lines(batch) <= FEW_LINES
        marked = mark_duplicates(valid, io.read_table(spark, lake, C.SILVER_EVENTS), batch_id, few_rows=few).persist()
        _replace_batch_rows(
            spark,
            lake,
            C.SILVER_DUPLICATES,
            duplicate_rows(marked, batch_id).withColumn(C.INGESTED_AT, F.lit(logical_time).cast("timestamp")),
            where_batch,
            resumed=resumed,
        )
        crash_point("after_duplicates")
        silver = to_silver_events(
            clean_rows(marked, batch_id), batch_seq=seq, ingested_at=logical_time,
            watermark_before=batch.get(C.MAX_EVENT_TS + "_before"),
        )
        if io.has_rows(spark, lake, C.SILVER_EVENTS, in_batch):  # a retry: the rows stored stay (first write wins)
            io.merge_upsert(spark, lake, C.SILVER_EVENTS, silver, [C.EVENT_ID], insert_only=True)
        else:  # no row of this batch is stored, and clean_rows left out every id an earlier one stored:
            io.append(spark, lake, C.SILVER_EVENTS, silver)  # the same insert without joining the whole table
        crash_point("after_silver")
    finally:
        flagged.unpersist()
        if marked is not None:
            marked.unpersist()

    # 4. account for every line, from what the tables now hold.
    n_raw = io.read_table(spark, lake, C.BRONZE_EVENTS_RAW).where(in_batch).count()
    stored = io.read_table(spark, lake, C.SILVER_EVENTS).where(in_batch)
    agg = stored.agg(F.count("*").alias("n"), F.sum(F.col(C.IS_LATE).cast("long")).alias("late"), F.max(C.TS).alias("mx")).collect()[0]
    n_clean, n_late, max_ts = int(agg["n"]), int(agg["late"] or 0), agg["mx"]
    n_quarantined = io.read_table(spark, lake, C.SILVER_QUARANTINE).where(in_batch).count()
    n_duplicates = io.read_table(spark, lake, C.SILVER_DUPLICATES).where(in_batch).count()
    counts = {C.N_RAW: n_raw, C.N_CLEAN: n_clean, C.N_QUARANTINED: n_quarantined, C.N_DUPLICATES: n_duplicates, C.N_LATE: n_late}
    if n_raw != n_clean + n_quarantined + n_duplicates:
        _write_batch_row(spark, lake, {**batch, **counts, C.STATUS: C.BATCH_ACCOUNTING_FAILED, C.MAX_EVENT_TS: max_ts})
        raise BatchAccountingError(
            f"batch {batch_id}: raw={n_raw} but clean={n_clean} + quarantined={n_quarantined} + "
            f"duplicates={n_duplicates} = {n_clean + n_quarantined + n_duplicates}. "
            "Lines were lost or counted twice; the batch is not committed. Inspect bronze.events_raw "
            f"where batch_id = '{batch_id}' against silver.events / silver.quarantine / silver.duplicates."
        )

    # 5. commit the batch, then move the ingest watermark.
    _write_batch_row(spark, lake, {**batch, **counts, C.STATUS: C.BATCH_COMMITTED, C.MAX_EVENT_TS: max_ts})
    crash_point("after_commit")
    io.write_watermark(spark, lake, C.PIPELINE_INGEST, last_batch_seq=seq,
                       max_event_ts=_ingest_watermark(spark, lake), updated_at=logical_time)
    result = BatchResult(batch_id, seq, len(files), n_raw, n_clean, n_quarantined, n_duplicates, n_late, resumed)
    log.info("batch %s committed: %s", batch_id, result)
    return result

