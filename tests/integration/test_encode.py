"""Encoding the real catalog into gold.item_embeddings: complete, incremental, idempotent."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pytest
from pyspark.sql import functions as F

from models.text_encoder import EMBEDDING_DIM, TextEncoder, item_encoder_version, item_text
from uig_common import names as C
from spark_jobs import io
from spark_jobs.ingest_job import ingest_catalog
from tests.conftest import FIRST_DAY
from uig_tasks.encode import EmbeddingsNotFoundError, load_item_embeddings, run_encode
from uig_tasks.movielens import prepare

pytestmark = pytest.mark.integration

BATCH_TIME = datetime(1997, 10, 16, tzinfo=timezone.utc)
N_ITEMS = 1682  # MovieLens-100k catalog


def test_encode_is_complete_then_incremental(spark, config):
    prepare(config.landing_dir, day=FIRST_DAY)
    ingest_catalog(spark, config.lake, config.ingest_settings(), BATCH_TIME)
    with pytest.raises(EmbeddingsNotFoundError, match="uig encode"):
        load_item_embeddings(spark, config)

    first = run_encode(config, datetime(1997, 10, 16, 1, tzinfo=timezone.utc))
    assert (first["encoded"], first["skipped"], first["total"]) == (N_ITEMS, 0, N_ITEMS)
    assert first["encoder_version"] == item_encoder_version()
    print(f"\nencode throughput: {N_ITEMS / first['encode_seconds']:.0f} items/s on {first['device']} "
          f"({first['encode_seconds']}s encoding, {first['seconds']}s task)")

    table = io.read_table(spark, config.lake, C.GOLD_ITEM_EMBEDDINGS)
    assert table.count() == N_ITEMS
    assert table.select(C.ITEM_ID, C.ENCODER_VERSION).distinct().count() == N_ITEMS
    silver_hash = {r[C.ITEM_ID]: r[C.CONTENT_HASH] for r in io.read_table(spark, config.lake, C.SILVER_ITEMS).collect()}
    gold_hash = {r[C.ITEM_ID]: r[C.CONTENT_HASH] for r in table.collect()}
    assert gold_hash == silver_hash
    ids, vectors = load_item_embeddings(spark, config)
    assert ids == sorted(silver_hash) and vectors.shape == (N_ITEMS, EMBEDDING_DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # the vector is the one of the item's text as landed: nothing (e.g. entities) lost on the way
    landed = json.loads((config.landing_dir / "catalog" / "items" / "items.jsonl").read_text().splitlines()[0])
    expected = item_text(landed["title"], landed["genres"], landed["year"], landed["entities"])
    assert "award" in expected
    np.testing.assert_allclose(vectors[ids.index(landed["item_id"])], TextEncoder().encode([expected])[0], atol=1e-5)

    # nothing changed: nothing encoded, no commit at all
    version = io.table_version(spark, config.lake, C.GOLD_ITEM_EMBEDDINGS)
    again = run_encode(config, datetime(1997, 10, 17, tzinfo=timezone.utc))
    assert (again["encoded"], again["skipped"]) == (0, N_ITEMS)
    assert io.table_version(spark, config.lake, C.GOLD_ITEM_EMBEDDINGS) == version

    # one title changes: exactly that item is re-encoded, in one commit
    items_file = config.landing_dir / "catalog" / "items" / "items.jsonl"
    lines = [json.loads(line) for line in items_file.read_text().splitlines()]
    changed_id = lines[0]["item_id"]
    lines[0]["title"] = "Toy Story (Special Edition)"
    items_file.write_text("".join(json.dumps(i) + "\n" for i in lines))
    assert ingest_catalog(spark, config.lake, config.ingest_settings(), BATCH_TIME)["items_changed"] == 1
    third = run_encode(config, datetime(1997, 10, 18, tzinfo=timezone.utc))
    assert (third["encoded"], third["skipped"]) == (1, N_ITEMS - 1)
    assert io.table_version(spark, config.lake, C.GOLD_ITEM_EMBEDDINGS) == version + 1

    ids2, vectors2 = load_item_embeddings(spark, config)
    assert ids2 == ids
    moved = [ids[i] for i in np.flatnonzero(np.abs(vectors2 - vectors).max(axis=1) > 0)]
    assert moved == [changed_id]
    row = table.where(F.col(C.ITEM_ID) == changed_id).collect()[0]
    assert row[C.CONTENT_HASH] != gold_hash[changed_id]
    assert row[C.ENCODED_AT] == datetime(1997, 10, 18)  # naive UTC, as PySpark returns it
    assert table.where(F.col(C.ENCODED_AT) > datetime(1997, 10, 16, 1)).count() == 1
