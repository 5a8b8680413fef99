"""Landing → bronze → silver transforms for behaviour events (pure DataFrame → DataFrame)."""

from __future__ import annotations

from datetime import datetime
from typing import Iterator

import pandas as pd
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from uig_common import names as C
from spark_jobs.schemas import BRONZE_EVENTS_RAW, PARSED_EVENTS
from spark_jobs.transforms.lines import Rejection, pseudonymise_user_id, split_lines, validate_line


def bronze_rows(files: DataFrame, batch_id: str, ingested_at: datetime, landing_root: str) -> DataFrame:
    """One bronze row per line of each file in a ``binaryFile`` frame, bytes kept as received.

    ``source_file`` is the path relative to ``landing_root`` so the data root can move.
    """
    prefix = "file:" + landing_root.rstrip("/") + "/"

    def split(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf in batches:
            out: dict[str, list] = {name: [] for name in BRONZE_EVENTS_RAW.fieldNames()}
            for path, content in zip(pdf["path"], pdf["content"]):
                rel = path.replace("file://", "file:")
                rel = rel[len(prefix):] if rel.startswith(prefix) else path
                for no, line in enumerate(split_lines(bytes(content)), start=1):
                    try:
                        text, valid = line.decode("utf-8"), True
                    except UnicodeDecodeError:
                        text, valid = line.decode("utf-8", errors="replace"), False
                    out[C.BATCH_ID].append(batch_id)
                    out[C.SOURCE_FILE].append(rel)
                    out[C.LINE_NO].append(no)
                    out[C.RAW_BYTES].append(line)
                    out[C.RAW_LINE].append(text)
                    out[C.BYTE_LENGTH].append(len(line))
                    out[C.UTF8_VALID].append(valid)
                    out[C.INGESTED_AT].append(pd.Timestamp(ingested_at))
            yield pd.DataFrame(out, columns=BRONZE_EVENTS_RAW.fieldNames())

    return files.select("path", "content").mapInPandas(split, BRONZE_EVENTS_RAW)


def parse_events(
    bronze: DataFrame,
    *,
    user_salt: str,
    logical_time: datetime,
    max_line_bytes: int,
    future_tolerance_seconds: int,
) -> DataFrame:
    """Validate every bronze line; valid ones get typed fields and a ``user_key``, others a reason.

    The raw user id is replaced by its keyed hash here, so it never reaches silver.
    """
    names = PARSED_EVENTS.fieldNames()

    def parse(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf in batches:
            rows = []
            for batch_id, source_file, line_no, raw, raw_line in zip(
                pdf[C.BATCH_ID], pdf[C.SOURCE_FILE], pdf[C.LINE_NO], pdf[C.RAW_BYTES], pdf[C.RAW_LINE]
            ):
                result = validate_line(
                    bytes(raw),
                    max_line_bytes=max_line_bytes,
                    logical_time=logical_time,
                    future_tolerance_seconds=future_tolerance_seconds,
                )
                lineage = (batch_id, source_file, int(line_no))
                if isinstance(result, Rejection):
                    rows.append((*lineage, *([None] * 8), result.reason, result.detail, raw_line, bytes(raw)))
                else:
                    rows.append(
                        (
                            *lineage,
                            result.event_id,
                            pseudonymise_user_id(user_salt, result.user_id),
                            result.event_type,
                            result.item_id,
                            result.query,
                            result.rating,
                            pd.Timestamp(result.ts),
                            result.source,
                            None,
                            None,
                            None,
                            None,
                        )
                    )
            frame = pd.DataFrame.from_records(rows, columns=names)
            frame[C.TS] = pd.to_datetime(frame[C.TS], utc=True)
            yield frame

    return bronze.mapInPandas(parse, PARSED_EVENTS)


def flag_unknown_items(parsed: DataFrame, items: DataFrame) -> DataFrame:
    """Give valid rows whose ``item_id`` is not in the catalog the reason ``unknown_item_id``."""
    known = items.select(F.col(C.ITEM_ID).alias("_known_item")).distinct()
    joined = parsed.join(known, parsed[C.ITEM_ID] == known["_known_item"], "left")
    unknown = F.col(C.REASON).isNull() & F.col(C.ITEM_ID).isNotNull() & F.col("_known_item").isNull()
    return joined.select(
        *[c for c in PARSED_EVENTS.fieldNames() if c not in (C.REASON, C.DETAIL, C.RAW_LINE, C.RAW_BYTES)],
        F.when(unknown, F.lit("unknown_item_id")).otherwise(F.col(C.REASON)).alias(C.REASON),
        F.when(unknown, F.concat(F.lit("item_id "), F.col(C.ITEM_ID), F.lit(" is not in silver.items")))
        .otherwise(F.col(C.DETAIL))
        .alias(C.DETAIL),
        C.RAW_LINE,
        C.RAW_BYTES,
    )


def quarantine_rows(parsed: DataFrame, bronze: DataFrame, ingested_at: datetime) -> DataFrame:
    """Rejected rows with the raw line as received (joined back from bronze) and their reason."""
    keys = [C.BATCH_ID, C.SOURCE_FILE, C.LINE_NO]
    rejected = parsed.where(F.col(C.REASON).isNotNull()).select(*keys, C.REASON, C.DETAIL)
    return rejected.join(bronze.select(*keys, C.RAW_LINE, C.RAW_BYTES), keys, "left").withColumn(
        C.INGESTED_AT, F.lit(ingested_at).cast("timestamp")
    )


def split_duplicates(valid: DataFrame, existing_events: DataFrame, batch_id: str) -> tuple[DataFrame, DataFrame]:
    """Split valid rows into (clean, duplicates) by ``event_id``.

    The first occurrence (by file, line) inside the batch wins; an ``event_id`` already stored by
    an earlier batch makes the row a duplicate of that batch. Rows already stored by *this*
    batch (a retry after a crash) stay clean, so a retried batch counts the same as the first try.
    """
    order = Window.partitionBy(C.EVENT_ID).orderBy(C.SOURCE_FILE, C.LINE_NO)
    ranked = valid.withColumn("_rank", F.row_number().over(order))
    existing = existing_events.select(C.EVENT_ID, F.col(C.BATCH_ID).alias("_stored_by"))
    firsts = ranked.where(F.col("_rank") == 1).join(existing, C.EVENT_ID, "left")
    earlier = F.col("_stored_by").isNotNull() & (F.col("_stored_by") != F.lit(batch_id))
    clean = firsts.where(~earlier).drop("_rank", "_stored_by")
    dup_cols = [C.BATCH_ID, C.SOURCE_FILE, C.LINE_NO, C.EVENT_ID]
    duplicates = (
        firsts.where(earlier)
        .select(*dup_cols, F.col("_stored_by").alias(C.DUPLICATE_OF_BATCH))
        .unionByName(
            ranked.where(F.col("_rank") > 1).select(*dup_cols, F.lit(batch_id).alias(C.DUPLICATE_OF_BATCH))
        )
    )
    return clean, duplicates


def to_silver_events(
    clean: DataFrame, *, batch_seq: int, ingested_at: datetime, watermark_before: datetime | None
) -> DataFrame:
    """Typed silver rows: event date partition, batch lineage and the late-event flag."""
    late = F.lit(False) if watermark_before is None else F.col(C.TS) < F.lit(watermark_before).cast("timestamp")
    return clean.select(
        C.EVENT_ID,
        C.USER_KEY,
        C.EVENT_TYPE,
        C.ITEM_ID,
        C.QUERY,
        C.RATING,
        C.TS,
        F.to_date(C.TS).alias(C.EVENT_DATE),
        C.SOURCE,
        late.alias(C.IS_LATE),
        C.BATCH_ID,
        F.lit(batch_seq).cast("long").alias(C.BATCH_SEQ),
        C.SOURCE_FILE,
        C.LINE_NO,
        F.lit(ingested_at).cast("timestamp").alias(C.INGESTED_AT),
    )
