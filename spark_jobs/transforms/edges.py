"""The interest-edge rule of a refresh (pure DataFrame → DataFrame): what a refreshed user's rows of
``gold.interest_edges`` become, given the rows they had and the edges just computed."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from uig_common import names as C
from spark_jobs.schemas import TABLE_SCHEMAS

EDGE_KEY = (C.USER_KEY, C.INTEREST_TYPE, C.INTEREST_ID)


def edges_after_refresh(current: DataFrame, new_edges: DataFrame, as_of: Column) -> DataFrame:
    """The refreshed users' new rows: ``new_edges`` (every row stamped ``as_of``) merged with
    ``current``, the rows those users have now.

    A new edge keeps ``previous_weight`` null; a kept one gets the old weight as ``previous_weight``
    (so readers see the change); an *active* edge that fell out becomes ``dropped`` (weight 0,
    rank null, the old weight kept as ``previous_weight``, stamped ``as_of``); an edge dropped by an
    earlier refresh that is still out is gone. Rows already stamped ``as_of`` are a retry of this
    refresh: they keep their ``previous_weight`` and their ``dropped`` mark, so a retry changes nothing.
    ``current`` must hold only refreshed users (rows of users absent from ``new_edges`` are dropped).
    """
    cols = TABLE_SCHEMAS[C.GOLD_INTEREST_EDGES].fieldNames()
    old = current.select(*EDGE_KEY, *[F.col(c).alias(f"_old_{c}") for c in cols if c not in EDGE_KEY])
    new = new_edges.select(*cols).withColumn("_new", F.lit(True))
    joined = new.join(old, list(EDGE_KEY), "full_outer")

    def old_col(name: str) -> Column:
        return F.col(f"_old_{name}")

    same_run = old_col(C.AS_OF) == as_of
    is_new = F.col("_new").isNotNull()
    was_active = old_col(C.EDGE_STATUS) == C.EDGE_ACTIVE
    previous = (F.when(same_run, old_col(C.PREVIOUS_WEIGHT))
                .when(was_active, old_col(C.WEIGHT)))
    dropped = {C.EDGE_STATUS: F.lit(C.EDGE_DROPPED), C.PREVIOUS_WEIGHT: old_col(C.WEIGHT), C.WEIGHT: F.lit(0.0),
               C.RANK: F.lit(None).cast("int"), C.AS_OF: as_of, C.REFRESHED_AT: as_of}

    def column(name: str) -> Column:
        if name in EDGE_KEY:
            return F.col(name)
        if name == C.PREVIOUS_WEIGHT:
            kept = F.when(is_new, previous)
        else:
            kept = F.when(is_new, F.col(name))
        gone = dropped.get(name, old_col(name))
        return (kept.when(~is_new & was_active, gone)
                .otherwise(old_col(name)).cast(TABLE_SCHEMAS[C.GOLD_INTEREST_EDGES][name].dataType).alias(name))

    keep = is_new | was_active | same_run  # an earlier refresh's dropped edge, still out, is gone
    return joined.where(keep).select(*[column(c) for c in cols])

