"""Item and user catalog transforms: typed rows plus a content hash that detects real changes."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from uig_common import names as C
from spark_jobs.transforms.lines import pseudonymise_user_id


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


def users_from_landing(raw: DataFrame, user_salt: str, updated_at: datetime) -> DataFrame:
    """Pseudonymised user attributes: raw ids become keyed hashes, nothing finer than a region."""

    @F.pandas_udf("string")
    def user_key(ids: pd.Series) -> pd.Series:
        return ids.map(lambda v: pseudonymise_user_id(user_salt, str(v)))

    typed = raw.select(
        user_key(F.col(C.USER_ID).cast("string")).alias(C.USER_KEY),
        F.col(C.AGE).cast("int").alias(C.AGE),
        F.col(C.GENDER).cast("string").alias(C.GENDER),
        F.col(C.OCCUPATION).cast("string").alias(C.OCCUPATION),
        F.col(C.REGION).cast("string").alias(C.REGION),
    )
    content = F.to_json(F.struct(C.AGE, C.GENDER, C.OCCUPATION, C.REGION))
    return typed.withColumn(C.CONTENT_HASH, F.sha2(content, 256)).withColumn(
        C.UPDATED_AT, F.lit(updated_at).cast("timestamp")
    )
