"""Task: encode the catalog into ``gold.item_embeddings`` (silver.items -> text encoder -> Delta).

Incremental by content: an item is (re-)encoded only when it has no vector for the current
encoder version or its ``content_hash`` differs from the one its vector was made from, so a
repeated run encodes nothing and commits nothing. Vectors of older encoder versions stay in
the table under their own ``encoder_version`` key until someone removes them.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np

from uig_tasks.config import UigConfig
from uig_tasks.locking import with_writer_lock
from uig_common.errors import NotFoundError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

# Items handed to the encoder per progress-log line (the encoder batches inside each chunk).
_LOG_CHUNK = 512


class EmbeddingsNotFoundError(NotFoundError):
    """``gold.item_embeddings`` holds no vectors for the requested encoder version."""


@with_writer_lock("encode")
def run_encode(config: UigConfig, encoded_at: datetime, batch_size: int = 64) -> dict[str, object]:
    """Encode new and changed items of ``silver.items`` and MERGE them into ``gold.item_embeddings``.

    Returns ``{encoder_version, encoded, skipped, total, seconds, encode_seconds, device}``:
    ``seconds`` is the whole task, ``encode_seconds`` the model time alone (load excluded).
    """
    from pyspark.sql import functions as F

    from uig_common import names as C
    from spark_jobs.io import get_spark, merge_upsert, read_table
    from spark_jobs.schemas import GOLD_ITEM_EMBEDDINGS

    from models.text_encoder import EncoderInputError, TextEncoder, default_device, item_encoder_version, item_text

    if batch_size < 1:
        raise EncoderInputError(f"batch_size must be >= 1, got {batch_size}")
    t0 = time.perf_counter()
    version = item_encoder_version()
    spark = get_spark(config.spark, "uig-encode")
    items = (
        read_table(spark, config.lake, C.SILVER_ITEMS)
        .select(C.ITEM_ID, C.TITLE, C.GENRES, C.YEAR, C.ENTITIES, C.CONTENT_HASH)
        .toPandas()
    )
    stored = {
        r[C.ITEM_ID]: r[C.CONTENT_HASH]
        for r in read_table(spark, config.lake, C.GOLD_ITEM_EMBEDDINGS)
        .where(F.col(C.ENCODER_VERSION) == version)
        .select(C.ITEM_ID, C.CONTENT_HASH)
        .collect()
    }
    todo = items[[stored.get(i) != h for i, h in zip(items[C.ITEM_ID], items[C.CONTENT_HASH])]]
    result: dict[str, object] = {
        "encoder_version": version,
        "encoded": len(todo),
        "skipped": len(items) - len(todo),
        "total": len(items),
        "seconds": 0.0,
        "encode_seconds": 0.0,
        "device": default_device(),
    }
    if todo.empty:
        log.info("all %d items already encoded with %s: nothing to write", len(items), version)
        result["seconds"] = round(time.perf_counter() - t0, 3)
        return result

    log.info("encoding %d of %d items (%d new, others changed) with %s", len(todo), len(items),
             sum(1 for i in todo[C.ITEM_ID] if i not in stored), version)
    texts = [
        item_text(r[C.TITLE], r[C.GENRES], r[C.YEAR], r[C.ENTITIES])
        for r in todo[[C.TITLE, C.GENRES, C.YEAR, C.ENTITIES]].to_dict("records")
    ]
    encoder = TextEncoder()
    t_enc = time.perf_counter()
    chunks = []
    for start in range(0, len(texts), _LOG_CHUNK):
        chunks.append(encoder.encode(texts[start : start + _LOG_CHUNK], batch_size=batch_size))
        done = min(start + _LOG_CHUNK, len(texts))
        log.info("encoded %d/%d items (%.0f items/s on %s)", done, len(texts),
                 done / max(time.perf_counter() - t_enc, 1e-9), encoder.device)
    vectors = np.concatenate(chunks)
    encode_seconds = time.perf_counter() - t_enc

    import pandas as pd

    rows = pd.DataFrame(
        {
            C.ITEM_ID: todo[C.ITEM_ID].to_numpy(),
            C.ENCODER_VERSION: version,
            C.CONTENT_HASH: todo[C.CONTENT_HASH].to_numpy(),
            C.EMBEDDING: list(vectors),
            C.ENCODED_AT: pd.Timestamp(encoded_at),
        }
    )
    df = spark.createDataFrame(rows, GOLD_ITEM_EMBEDDINGS)
    merge_upsert(spark, config.lake, C.GOLD_ITEM_EMBEDDINGS, df, [C.ITEM_ID, C.ENCODER_VERSION], local_source=True)
    result.update(
        device=encoder.device,
        encode_seconds=round(encode_seconds, 3),
        seconds=round(time.perf_counter() - t0, 3),
    )
    log.info("merged %d item vectors into gold.item_embeddings (%.1f items/s encoding, %.1fs in all)",
             len(todo), len(todo) / max(encode_seconds, 1e-9), result["seconds"])
    return result


def load_item_embeddings(
    spark: "SparkSession", config: UigConfig, encoder_version: str | None = None
) -> tuple[list[str], np.ndarray]:
    """``(item_ids, vectors)`` of one encoder version (default: the current one), sorted by item_id.

    ``vectors`` is float32 ``[n, dim]``, row ``i`` belonging to ``item_ids[i]``; item ids sort
    as strings, so map them to model indices explicitly rather than assuming numeric order.
    """
    from pyspark.sql import functions as F

    from uig_common import names as C
    from spark_jobs.io import read_table

    from models.text_encoder import item_encoder_version

    version = encoder_version or item_encoder_version()
    pdf = (
        read_table(spark, config.lake, C.GOLD_ITEM_EMBEDDINGS)
        .where(F.col(C.ENCODER_VERSION) == version)
        .select(C.ITEM_ID, C.EMBEDDING)
        .toPandas()
    )
    if pdf.empty:
        raise EmbeddingsNotFoundError(
            f"gold.item_embeddings has no vectors for encoder version {version!r} under "
            f"{config.delta_dir}; run `uig encode` (after `uig ingest`) first"
        )
    pdf = pdf.sort_values(C.ITEM_ID, kind="stable")
    vectors = np.stack([np.asarray(v, dtype=np.float32) for v in pdf[C.EMBEDDING]])
    return pdf[C.ITEM_ID].tolist(), vectors
