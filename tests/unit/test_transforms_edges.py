"""The refresh's edge rule on hand-written frames, each case worked out by hand."""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import functions as F

from uig_common import names as C
from spark_jobs.schemas import TABLE_SCHEMAS
from spark_jobs.transforms.edges import edges_after_refresh

SCHEMA = TABLE_SCHEMAS[C.GOLD_INTEREST_EDGES]
EARLIER, NOW = datetime(2020, 1, 1), datetime(2020, 1, 2)


def edge(interest: str, weight: float, status: str = "active", previous: float | None = None,
         stamp: datetime = EARLIER, rank: int | None = 1) -> tuple:
    return ("u", "genre", interest, interest, weight, rank, f"{interest} ←", status, previous, "1", "p",
            "rebuild", "default rule", stamp, stamp)


def test_each_case_of_the_rule(spark) -> None:
    current = spark.createDataFrame([
        edge("kept", 0.5),  # in the new edges: its weight becomes previous_weight
        edge("gone", 0.3),  # active, not in the new edges: dropped, weight 0, rank null
        edge("long-gone", 0.0, "dropped", 0.2, rank=None),  # dropped before and still out: deleted
        edge("retried", 0.6, previous=0.1, stamp=NOW),  # stamped NOW: a retry keeps its previous weight
        edge("dropped-now", 0.0, "dropped", 0.4, stamp=NOW, rank=None),  # dropped by this very refresh: kept
    ], SCHEMA)
    new = spark.createDataFrame([edge("kept", 0.7, stamp=NOW), edge("retried", 0.6, stamp=NOW),
                                 edge("new", 0.9, stamp=NOW, rank=2)], SCHEMA)
    out = {r[C.INTEREST_ID]: r for r in edges_after_refresh(current, new, F.lit(NOW)).collect()}
    got = {k: (r[C.EDGE_STATUS], r[C.WEIGHT], r[C.PREVIOUS_WEIGHT], r[C.RANK], r[C.AS_OF]) for k, r in out.items()}
    assert got == {
        "kept": ("active", 0.7, 0.5, 1, NOW),
        "gone": ("dropped", 0.0, 0.3, None, NOW),
        "retried": ("active", 0.6, 0.1, 1, NOW),
        "dropped-now": ("dropped", 0.0, 0.4, None, NOW),
        "new": ("active", 0.9, None, 2, NOW),
    }
    assert out["gone"][C.INTEREST_NAME] == "gone" and out["gone"][C.REFRESHED_AT] == NOW  # the rest kept from the old row
    assert list(out["new"].asDict()) == SCHEMA.fieldNames()
