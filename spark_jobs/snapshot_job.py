"""Read what a training run needs from the Delta tables, once, as pandas (the training snapshot's inputs).

Spark side of ``uig train``'s snapshot: item interactions from ``silver.events``, the catalog's
titles, ``gold.item_topics`` and the Delta version of every table read. The text vectors come
from ``gold.item_embeddings`` through the encode task's reader; checks and the snapshot itself
are :func:`models.snapshot.make_snapshot` (no Spark there).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from uig_common import names as C
from spark_jobs.io import read_table, table_version
from spark_jobs.settings import Lake

#: The tables a training snapshot reads; their Delta versions are recorded with the model.
SNAPSHOT_TABLES = (C.SILVER_EVENTS, C.SILVER_ITEMS, C.GOLD_ITEM_TOPICS, C.GOLD_ITEM_EMBEDDINGS)


@dataclass(frozen=True)
class TrainingTables:
    events: pd.DataFrame  # user_key, item_id, ts (epoch seconds, float)
    titles: dict[str, str]  # item_id -> title, the whole catalog
    item_topics: pd.DataFrame  # item_id, topic_id, topic_type
    versions: dict[str, int]  # table -> Delta version read


def read_training_tables(spark: SparkSession, lake: Lake) -> TrainingTables:
    """Item interactions, titles, item topics and the Delta versions of :data:`SNAPSHOT_TABLES`."""
    versions = {t: table_version(spark, lake, t) for t in SNAPSHOT_TABLES}
    # Read at the versions recorded, so they describe the data even if a writer commits meanwhile.
    events = (
        read_table(spark, lake, C.SILVER_EVENTS, versions[C.SILVER_EVENTS])
        .where(F.col(C.EVENT_TYPE).isin(*C.ITEM_EVENT_TYPES) & F.col(C.ITEM_ID).isNotNull())
        .select(C.USER_KEY, C.ITEM_ID, F.col(C.TS).cast("double").alias(C.TS))  # epoch seconds
        .toPandas()
    )
    titles = {r[C.ITEM_ID]: r[C.TITLE] for r in read_table(spark, lake, C.SILVER_ITEMS, versions[C.SILVER_ITEMS]).select(C.ITEM_ID, C.TITLE).collect()}
    topics = read_table(spark, lake, C.GOLD_ITEM_TOPICS, versions[C.GOLD_ITEM_TOPICS]).select(C.ITEM_ID, C.TOPIC_ID, C.TOPIC_TYPE).toPandas()
    return TrainingTables(events, titles, topics, versions)
