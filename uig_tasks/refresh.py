"""``uig refresh``: materialise the user interest graph (``gold.interest_edges``) for dirty users.

A user is dirty when a batch that ``aggregate`` has already folded into the gold affinities
brought them events the last refresh did not see (late events included: they come in a new
batch). Each dirty user's edges are recomputed from their affinities with the ``@champion`` GCN
(fold-in, no retraining; :mod:`models.interests`) and MERGEd in one commit; other users' rows
are not rewritten. Interests are genres, KG entities, the model's interest communities
(:mod:`models.communities`, written to ``gold.interest_communities`` on a full refresh) and items.
When ``@champion`` moves (a new model or a rollback), every user is refreshed so that the graph
never mixes model versions. How each dirty user's part of the graph is updated — keep, rebuild,
decay and admit — is the ``@champion`` of ``uig-update-policy`` (:mod:`models.update_policy`), per
user, recorded with its reason on every edge; without a registered policy every dirty user is
rebuilt (``fixed-shares-v1``). A new or rolled-back policy re-materialises the graph like a new
GCN. The Delta reads and writes are :mod:`spark_jobs.refresh_job`'s.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from datetime import datetime
from typing import TYPE_CHECKING, Any

from uig_tasks.config import UigConfig
from uig_tasks.locking import with_writer_lock
from uig_common.errors import UigError

if TYPE_CHECKING:
    from spark_jobs.refresh_job import RefreshProgress

log = logging.getLogger(__name__)



class RefreshError(UigError, RuntimeError):
    """The refresh cannot run yet; the message says which step to run first."""


@with_writer_lock("refresh")
def run_refresh(config: UigConfig, as_of: datetime | None = None, *, full: bool = False) -> dict[str, Any]:
    """Refresh the interest edges of dirty users (all users with ``full``) as of ``as_of``.

    ``as_of`` defaults to the time the gold affinities were last aggregated at (what an
    Asset-triggered run, which has no logical date of its own, should use).

    Returns ``{mode, as_of, dirty_users, edges_written, model_version, seconds}``; ``mode`` is
    ``full``, ``incremental`` or ``noop`` (nothing new: no table is written).
    """
    from models.interests import interest_edges, user_histories, with_communities, with_update_policy
    from spark_jobs import io, refresh_job
    from uig_common import names as C
    from uig_tasks import scorer_model

    t0 = time.perf_counter()
    spark = io.get_spark(config.spark, "uig-refresh")
    progress = refresh_job.read_progress(spark, config.lake)
    as_of = _checked_as_of(config, progress, as_of)
    scorer, version = scorer_model.load_scorer(config, C.CHAMPION_ALIAS)
    policy, policy_version = _update_policy(config)
    marker = f"{version}|{policy_version}"
    # A new (or rolled-back) champion — GCN or policy — re-materialises everyone; so does a run
    # that a kill stopped between writing a new champion's edges and its watermark (the mark
    # still names the old models).
    full = (full or progress.refreshed_batch_seq is None or progress.refreshed_model_version != marker
            or refresh_job.graph_has_other_model(spark, config.lake, str(version)))
    after = None if full else progress.refreshed_batch_seq
    result = {"mode": "full" if full else "incremental", "as_of": as_of.isoformat(), "dirty_users": 0,
              "edges_written": 0, "model_version": version, "policy_version": policy_version}

    with refresh_job.dirty_users(spark, config.lake, after_batch_seq=after,
                                 upto_batch_seq=progress.aggregated_batch_seq) as (dirty, n_dirty):
        if n_dirty == 0:
            log.info("refresh: no user has new behaviour since batch %s; nothing written", after or 0)
            return {**result, "mode": "noop", "seconds": round(time.perf_counter() - t0, 3)}
        log.info("refresh: %d dirty users (%s), model uig-gcn v%s", n_dirty, result["mode"], version)
        users = user_histories(refresh_job.read_histories(spark, config.lake, dirty), as_of)
        previous = None if progress.refreshed_as_of is None else progress.refreshed_as_of.timestamp()
        users = with_update_policy(users, scorer, policy, previous, as_of.timestamp())
        result["actions"] = dict(Counter(u.update_action for u in users))
        topics, titles = refresh_job.read_interest_inputs(spark, config.lake)
        if full:  # the model's communities become the community nodes of the graph
            refresh_job.write_communities(spark, config.lake, scorer.communities, str(version))
        edges = interest_edges(scorer, users, with_communities(topics, scorer.communities), titles)
        refresh_job.write_edges(spark, config.lake, edges, dirty, as_of=as_of, model_version=str(version),
                                policy_version=policy_version, upto_batch_seq=progress.aggregated_batch_seq,
                                models_marker=marker)

    result.update(dirty_users=n_dirty, edges_written=len(edges), seconds=round(time.perf_counter() - t0, 3))
    log.info("refresh done: %s", result)
    return result


def _update_policy(config: UigConfig) -> tuple[Any, str]:
    """``(policy, policy_version)`` of ``uig-update-policy@champion``, or ``(None, fixed-shares-v1)``
    when no policy has been registered and gated yet (the documented default rule)."""
    from uig_common import names as C
    from uig_tasks import mlflow_store, scorer_model

    try:
        policy, number = scorer_model.load_scorer(config, C.CHAMPION_ALIAS, model_name=C.POLICY_MODEL)
    except mlflow_store.ModelVersionNotFoundError:
        return None, C.DEFAULT_POLICY_VERSION
    return policy, f"{C.POLICY_MODEL} v{number}"


def _checked_as_of(config: UigConfig, progress: "RefreshProgress", as_of: datetime | None) -> datetime:
    """``as_of``, or the last aggregate's time when None; RefreshError when no aggregate ran or
    ``as_of`` is before it (the gold affinities cannot be taken back in time)."""
    aggregated = progress.aggregated_as_of
    if aggregated is None:
        raise RefreshError(f"no aggregate has run under {config.delta_dir}: run `uig ingest && uig aggregate` first")
    if as_of is None:
        return aggregated
    if as_of < aggregated:
        raise RefreshError(
            f"the gold affinities are as of {aggregated.isoformat()}, after {as_of.isoformat()}: "
            "refresh at or after the last aggregate"
        )
    return as_of
