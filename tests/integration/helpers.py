"""Helpers for integration tests: reading tables back and snapshotting their content."""

from __future__ import annotations

from uig_common import names as C
from spark_jobs import io


def rows(spark, config, table: str, order: list[str] | None = None) -> list[tuple]:
    """Every row of a table as sorted tuples (binary columns as bytes), for exact comparisons."""
    df = io.read_table(spark, config.lake, table)
    out = []
    for r in df.collect():
        out.append(tuple(bytes(v) if isinstance(v, (bytearray, memoryview)) else v for v in r))
    return sorted(out, key=repr)


def snapshot(spark, config) -> dict[str, list[tuple]]:
    return {t: rows(spark, config, t) for t in C.ALL_TABLES}


def versions(spark, config) -> dict[str, int]:
    return {t: io.table_version(spark, config.lake, t) for t in C.ALL_TABLES}
