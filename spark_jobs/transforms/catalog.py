"""Item and user catalog transforms: typed rows plus a content hash that detects real changes."""

from __future__ import annotations

import hashlib
from datetime import datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from uig_common import names as C


def items_from_landing(raw: DataFrame, updated_at: datetime) -> DataFrame:
    """Typed catalog rows; ``content_hash`` covers every field the text encoder reads."""
    entities = F.coalesce(F.col(C.ENTITIES), F.array().cast("array<struct<relation:string,entity_id:string>>"))
    genres = F.coalesce(F.col(C.GENRES), F.array().cast("array<string>"))
    typed = raw.select(
        F.col(C.ITEM_ID).cast("string").alias(C.ITEM_ID),
        F.col(C.TITLE).cast("string").alias(C.TITLE),
        genres.alias(C.GENRES),
        F.col(C.YEAR).cast("int").alias(C.YEAR),
        F.array_sort(entities).alias(C.ENTITIES),
    )
    content = F.to_json(F.struct(C.TITLE, C.GENRES, C.YEAR, C.ENTITIES))
    return typed.withColumn(C.CONTENT_HASH, F.sha2(content, 256)).withColumn(
        C.UPDATED_AT, F.lit(updated_at).cast("timestamp")
    )


def user_key_column(user_id: Column, user_salt: str) -> Column:
    """:func:`spark_jobs.transforms.lines.pseudonymise_user_id` as a Spark expression: HMAC-SHA256
    (RFC 2104) of the id's UTF-8 bytes under the salt, built from ``sha2`` so no Python worker is
    started (the catalog is hashed on every ingest). Equal keys, tested against the Python one."""
    key = user_salt.encode()
    if len(key) > 64:  # SHA-256's block size: longer keys are hashed first
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    inner_pad, outer_pad = bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)
    inner = F.unhex(F.sha2(F.concat(F.lit(bytearray(inner_pad)), user_id.cast("string").cast("binary")), 256))
    return F.substring(F.sha2(F.concat(F.lit(bytearray(outer_pad)), inner), 256), 1, 32)


def users_from_landing(raw: DataFrame, user_salt: str, updated_at: datetime) -> DataFrame:
    """Pseudonymised user attributes: raw ids become keyed hashes, nothing finer than a region."""
    typed = raw.select(
        user_key_column(F.col(C.USER_ID), user_salt).alias(C.USER_KEY),
        F.col(C.AGE).cast("int").alias(C.AGE),
        F.col(C.GENDER).cast("string").alias(C.GENDER),
        F.col(C.OCCUPATION).cast("string").alias(C.OCCUPATION),
        F.col(C.REGION).cast("string").alias(C.REGION),
    )
    content = F.to_json(F.struct(C.AGE, C.GENDER, C.OCCUPATION, C.REGION))
    return typed.withColumn(C.CONTENT_HASH, F.sha2(content, 256)).withColumn(
        C.UPDATED_AT, F.lit(updated_at).cast("timestamp")
    )
