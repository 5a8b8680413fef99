"""Task functions for ingestion and aggregation: what the CLI and the Airflow DAGs call.

Each takes the config and an explicit time and returns a small JSON-able dict (for XCom).
"""

from __future__ import annotations

import logging
from datetime import datetime

from uig_tasks.config import UigConfig
from uig_tasks.locking import with_writer_lock

log = logging.getLogger(__name__)


@with_writer_lock("ingest")
def run_ingest(config: UigConfig, logical_time: datetime) -> dict[str, object]:
    """Upsert the catalog, then ingest every new complete line under landing/events (one batch)."""
    from spark_jobs.ingest_job import ingest_catalog, ingest_events
    from spark_jobs.io import get_spark

    spark = get_spark(config.spark, "uig-ingest")
    settings = config.ingest_settings()
    catalog = ingest_catalog(spark, config.lake, settings, logical_time)
    batches = [b.as_dict() for b in ingest_events(spark, config.lake, settings, logical_time)]
    totals = {
        key: sum(int(b[key]) for b in batches)  # type: ignore[arg-type]
        for key in ("n_files", "n_raw", "n_clean", "n_quarantined", "n_duplicates", "n_late")
    }
    return {"logical_time": logical_time.isoformat(), "catalog": catalog, "batches": batches, **totals}


@with_writer_lock("aggregate")
def run_aggregate(config: UigConfig, as_of: datetime, full: bool = False) -> dict[str, object]:
    """Recompute gold affinities at ``as_of`` for dirty users (or everyone with ``full``)."""
    from spark_jobs.aggregate_job import aggregate
    from spark_jobs.io import get_spark

    return aggregate(get_spark(config.spark, "uig-aggregate"), config.lake, config.aggregate_settings, as_of, full=full).as_dict()


def table_summary(config: UigConfig) -> list[dict[str, object]]:
    from spark_jobs.io import get_spark
    from spark_jobs.io import table_summary as summary

    return summary(get_spark(config.spark, "uig-tables"), config.lake)


def quarantine_report(config: UigConfig) -> dict[str, list[dict[str, object]]]:
    """Quarantined line counts by reason over all batches, conflicting duplicates, and the landing
    files the last scan skipped (with their reason) or holds unfinished lines of."""
    from pyspark.sql import functions as F

    from uig_common import names as C
    from spark_jobs.io import get_spark, read_table

    spark = get_spark(config.spark, "uig-tables")
    df = read_table(spark, config.lake, C.SILVER_QUARANTINE)
    lines = df.groupBy(C.REASON).agg(F.count("*").alias("lines")).orderBy(F.desc("lines")).collect()
    conflicts = read_table(spark, config.lake, C.SILVER_DUPLICATES).where(F.col(C.CONFLICT)).select(
        C.EVENT_ID, C.SOURCE_FILE, C.LINE_NO, C.DUPLICATE_OF_BATCH).orderBy(C.EVENT_ID).collect()
    files = read_table(spark, config.lake, C.OPS_LANDING_FILES).where(
        (F.col(C.STATUS) == "skipped") | (F.col(C.PENDING_BYTES) > 0)
    ).select(C.SOURCE_FILE, C.STATUS, C.REASON, C.DETAIL, C.PENDING_BYTES).orderBy(C.SOURCE_FILE).collect()
    return {"lines": [r.asDict() for r in lines], "conflicting_duplicates": [r.asDict() for r in conflicts],
            "landing_files": [r.asDict() for r in files]}
