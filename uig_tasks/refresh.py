"""``uig refresh``: materialise the user interest graph (``gold.interest_edges``) for dirty users.

A user is dirty when a batch that ``aggregate`` has already folded into the gold affinities
brought them events the last refresh did not see (late events included: they come in a new
batch). Each dirty user's edges are recomputed from their affinities with the ``@champion`` GCN
(fold-in, no retraining; :mod:`models.interests`) and MERGEd in one commit; other users' rows
are not rewritten. Interests are genres, KG entities, the model's interest communities
(:mod:`models.communities`, written to ``gold.interest_communities`` on a full refresh) and items. When ``@champion`` moves (a new model or a rollback), every user is refreshed
so that the graph never mixes model versions.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Any

from uig_tasks.config import UigConfig
from uig_common.errors import UigError

log = logging.getLogger(__name__)

PIPELINE = "refresh"
#: Version of the edge-update rule; the learned update policy (DQN) will replace this fixed one.
POLICY_VERSION = "fixed-shares-v1"


class RefreshError(UigError, RuntimeError):
    """The refresh cannot run yet; the message says which step to run first."""


def run_refresh(config: UigConfig, as_of: datetime | None = None, *, full: bool = False) -> dict[str, Any]:
    """Refresh the interest edges of dirty users (all users with ``full``) as of ``as_of``.

    ``as_of`` defaults to the time the gold affinities were last aggregated at (what an
    Asset-triggered run, which has no logical date of its own, should use).

    Returns ``{mode, as_of, dirty_users, edges_written, model_version, seconds}``; ``mode`` is
    ``full``, ``incremental`` or ``noop`` (nothing new: no table is written).
    """
    from pyspark.sql import functions as F

    from models.communities import Community
    from models.interests import UserHistory, interest_edges
    from uig_common import names as C
    from spark_jobs import io
    from spark_jobs.schemas import OPS_WATERMARKS, TABLE_SCHEMAS
    from uig_tasks import scorer_model

    t0 = time.perf_counter()
    spark = io.get_spark(config.spark, "uig-refresh")
    marks = {r[C.PIPELINE]: r for r in io.read_table(spark, config.lake, C.OPS_WATERMARKS).collect()}
    aggregated = marks.get("aggregate")
    if aggregated is None or aggregated[C.AS_OF] is None:
        raise RefreshError(f"no aggregate has run under {config.delta_dir}: run `uig ingest && uig aggregate` first")
    aggregate_as_of = aggregated[C.AS_OF].replace(tzinfo=timezone.utc)
    as_of = aggregate_as_of if as_of is None else as_of
    if as_of < aggregate_as_of:
        raise RefreshError(
            f"the gold affinities are as of {aggregate_as_of.isoformat()}, after {as_of.isoformat()}: "
            "refresh at or after the last aggregate"
        )
    scorer, version = scorer_model.load_scorer(config, C.CHAMPION_ALIAS)
    upto = int(aggregated[C.LAST_BATCH_SEQ])
    previous = marks.get(PIPELINE)
    edges_table = io.read_table(spark, config.lake, C.GOLD_INTEREST_EDGES)
    active = edges_table.where(F.col(C.EDGE_STATUS) == C.EDGE_ACTIVE)
    other_model = active.where(F.col(C.MODEL_VERSION) != str(version)).limit(1).count() > 0
    if previous is None or other_model:
        full = True

    events = io.read_table(spark, config.lake, C.SILVER_EVENTS)
    if full:
        dirty = events.select(C.USER_KEY).distinct()
    else:
        dirty = (
            events.where((F.col(C.BATCH_SEQ) > int(previous[C.LAST_BATCH_SEQ])) & (F.col(C.BATCH_SEQ) <= upto))
            .select(C.USER_KEY).distinct()
        )
    dirty = dirty.persist()
    n_dirty = dirty.count()
    if n_dirty == 0:
        dirty.unpersist()
        log.info("refresh: no user has new behaviour since batch %s; nothing written",
                 previous[C.LAST_BATCH_SEQ] if previous else 0)
        return {"mode": "noop", "as_of": as_of.isoformat(), "dirty_users": 0, "edges_written": 0,
                "model_version": version, "seconds": round(time.perf_counter() - t0, 3)}

    affinity = (
        io.read_table(spark, config.lake, C.GOLD_USER_ITEM_AFFINITY)
        .join(dirty, C.USER_KEY, "left_semi")
        .select(C.USER_KEY, C.ITEM_ID, C.WEIGHT, C.N_EVENTS, "n_rate")
        .toPandas()
        .sort_values([C.USER_KEY, C.WEIGHT, C.ITEM_ID], ascending=[True, False, True], kind="stable")
    )
    users = [
        UserHistory(str(user), tuple(group[C.ITEM_ID].astype(str)), tuple(group[C.WEIGHT].astype(float)),
                    verb="rated" if (group["n_rate"] == group[C.N_EVENTS]).all() else "interacted with")
        for user, group in affinity.groupby(C.USER_KEY, sort=True)
    ]
    communities = [Community.from_dict(c) for c in scorer.communities]
    topics, titles, names = interest_inputs(spark, config, scorer)
    log.info("refresh: %d dirty users (%s), model uig-gcn v%s", n_dirty, "all" if full else "incremental", version)

    if full:  # the model's communities become the community nodes of the graph
        nodes = [(c.community_id, c.name, list(c.top_genres), list(c.members), len(c.members), str(version))
                 for c in communities]
        io.overwrite(spark, config.lake, C.GOLD_INTEREST_COMMUNITIES,
                     spark.createDataFrame(nodes, TABLE_SCHEMAS[C.GOLD_INTEREST_COMMUNITIES]))
    edges = interest_edges(scorer, users, topics, titles, topic_names=names)
    stamp = as_of.astimezone(timezone.utc).replace(tzinfo=None)
    edges = edges.assign(**{
        C.EDGE_STATUS: C.EDGE_ACTIVE, C.PREVIOUS_WEIGHT: None, C.MODEL_VERSION: str(version),
        C.POLICY_VERSION: POLICY_VERSION, C.AS_OF: stamp, C.REFRESHED_AT: stamp,
    })
    schema = TABLE_SCHEMAS[C.GOLD_INTEREST_EDGES]
    rows = [tuple(_plain(v) for v in row) for row in edges[schema.fieldNames()].itertuples(index=False)]
    new_edges = spark.createDataFrame(rows, schema)
    io.merge_interest_edges(spark, config.lake, new_edges, dirty, as_of)
    history = TABLE_SCHEMAS[C.GOLD_INTEREST_HISTORY].fieldNames()
    io.merge_upsert(spark, config.lake, C.GOLD_INTEREST_HISTORY, new_edges.select(*history),
                    [C.USER_KEY, C.INTEREST_TYPE, C.INTEREST_ID, C.AS_OF], insert_only=True)
    dirty.unpersist()

    mark = {C.PIPELINE: PIPELINE, C.LAST_BATCH_SEQ: upto, C.MAX_EVENT_TS: None, C.AS_OF: as_of, C.UPDATED_AT: as_of}
    io.merge_upsert(spark, config.lake, C.OPS_WATERMARKS, spark.createDataFrame([mark], OPS_WATERMARKS), [C.PIPELINE])
    result = {"mode": "full" if full else "incremental", "as_of": as_of.isoformat(), "dirty_users": n_dirty,
              "edges_written": len(edges), "model_version": version, "seconds": round(time.perf_counter() - t0, 3)}
    log.info("refresh done: %s", result)
    return result


def interest_inputs(spark: Any, config: UigConfig, scorer: Any) -> tuple[Any, dict[str, str], dict[str, str]]:
    """What :func:`models.interests.interest_edges` needs besides histories: item topics (catalog
    topics plus the model's communities), item titles, and the display names of the communities."""
    import pandas as pd

    from models.communities import Community, community_topics
    from uig_common import names as C
    from spark_jobs import io

    communities = [Community.from_dict(c) for c in scorer.communities]
    topics = pd.concat([
        io.read_table(spark, config.lake, C.GOLD_ITEM_TOPICS).select(C.ITEM_ID, C.TOPIC_ID, C.TOPIC_TYPE).toPandas(),
        community_topics(communities),
    ], ignore_index=True)
    items = io.read_table(spark, config.lake, C.SILVER_ITEMS).select(C.ITEM_ID, C.TITLE).collect()
    names = {f"community:{c.community_id}": c.name for c in communities}
    return topics, {r[C.ITEM_ID]: r[C.TITLE] for r in items}, names


def _plain(value: Any) -> Any:
    """A pandas/numpy cell as the plain Python value Spark's createDataFrame accepts (None for missing)."""
    import numpy as np
    import pandas as pd

    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, np.generic):
        return value.item()
    return value
