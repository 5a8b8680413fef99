"""``uig refresh``: materialise the user interest graph (``gold.interest_edges``) for dirty users.

A user is dirty when a batch that ``aggregate`` has already folded into the gold affinities
brought them events the last refresh did not see (late events included: they come in a new
batch). Each dirty user's edges are recomputed from their affinities with the ``@champion`` GCN
(fold-in, no retraining; :mod:`models.interests`) and replace their rows in one commit, noted with
how far the refresh got; other users' rows are not rewritten. Interests are genres, KG entities,
the model's interest communities (:mod:`models.communities`, written to
``gold.interest_communities`` on a full refresh) and items.
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
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from uig_tasks.config import UigConfig
from uig_tasks.locking import DataRootBusyError, writer_lock
from uig_common.errors import UigError

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

    from spark_jobs.refresh_job import HistoryState, RefreshProgress

log = logging.getLogger(__name__)

#: Dirty users scored at once: their histories and edges are what the driver holds (about 30 edges
#: a user); a refresh of more users stages each chunk's edges and still makes one edge commit.
SCORE_CHUNK_USERS = 25_000

#: The background warm-up's thread (``Refresher(keep_warm=True)``), and how long a refresh waits
#: for it before going on beside it.
WARM_THREAD, WARM_WAIT_SECONDS = "uig-refresh-warm", 120


class RefreshError(UigError, RuntimeError):
    """The refresh cannot run yet; the message says which step to run first."""


def run_refresh(config: UigConfig, as_of: datetime | None = None, *, full: bool = False) -> dict[str, Any]:
    """Refresh the interest edges of dirty users (all users with ``full``) as of ``as_of``, once:
    a :class:`Refresher` that lives for one call (what the CLI and a DAG task run)."""
    return Refresher(config).refresh(as_of, full=full)


class Refresher:
    """Refreshes one data root again and again in one process, without the fixed cost of a cold
    start: it keeps the Spark session, the ``@champion`` GCN and update policy (reloaded only when
    an alias moves) and the catalog's topics and titles (reread only when their Delta table has a
    new version). A long-lived worker (``uig refresh --watch``, a warm DAG worker, the streaming
    path) pays the per-user cost alone. Each :meth:`refresh` holds the data root's writer lock.

    After enough incremental edge commits a refresh compacts the edge table by user key
    (:func:`spark_jobs.refresh_job.compact_edges`), so a one-user replace keeps opening one file,
    and it writes the Delta checkpoints of the tables it commits to, where due, which Delta would
    otherwise write inside a commit. With ``keep_warm`` both happen between refreshes instead, in a
    background thread that then reads the new edge table's Delta state into memory
    (:func:`spark_jobs.refresh_job.warm_edges`), so that the next refresh's edge commit waits for
    none of them; the compaction holds the writer lock (it is skipped when another writer holds
    it), and the next refresh (or :meth:`close`) waits for that thread first."""

    def __init__(self, config: UigConfig, *, keep_warm: bool = False) -> None:
        self.config = config
        self.keep_warm = keep_warm
        self._warming: Any = None  # the background warm-up of the edge table (a thread), if one runs
        self._spark: SparkSession | None = None  # started under the first refresh's lock, once the data root is prepared
        self.model_loads = 0  # how often models were (re)loaded: what a warm refresher saves
        self.compactions = 0  # how often this refresher compacted the edge table
        self.checkpoints = 0  # how many Delta checkpoints of the edge and history tables it wrote
        self._models: tuple[tuple[int, int | None], Any, Any] | None = None  # (versions, scorer, policy)
        self._catalog: tuple[tuple[int, int], Any, dict[str, str]] | None = None  # (table versions, topics, titles)
        self._progress: RefreshProgress | None = None  # what the last refresh read (reused while its tables are unchanged)
        self._history: HistoryState | None = None  # gold.interest_history as this refresher's last write left it

    @property
    def spark(self) -> "SparkSession":
        from spark_jobs import io

        if self._spark is None:
            self._spark = io.get_spark(self.config.spark, "uig-refresh")
        return self._spark

    def refresh(self, as_of: datetime | None = None, *, full: bool = False) -> dict[str, Any]:
        """Refresh the interest edges of dirty users (all users with ``full``) as of ``as_of``.

        ``as_of`` defaults to the time the gold affinities were last aggregated at (what an
        Asset-triggered run, which has no logical date of its own, should use).

        Returns ``{mode, as_of, dirty_users, edges_written, model_version, policy_version,
        seconds}``; ``mode`` is ``full``, ``incremental`` or ``noop`` (nothing new: no table is
        written).
        """
        self._wait_warm()
        with writer_lock(self.config, "refresh"):
            result = self._refresh(as_of, full)
        if self.keep_warm and result["mode"] != "noop":
            from pyspark import InheritableThread  # carries the session's thread-local job settings over

            self._warming = InheritableThread(self._between_refreshes, name=WARM_THREAD, daemon=True)
            self._warming.start()
        return result

    def close(self) -> None:
        """Wait for the background compaction and warm-up to end (call before stopping the Spark session)."""
        self._wait_warm()

    def _wait_warm(self) -> None:
        if self._warming is not None:
            self._warming.join(WARM_WAIT_SECONDS)
            if self._warming.is_alive():  # a compaction holds the lock (the refresh waits for it), or a read
                log.warning("refresh: the edge table's compaction or warm-up still runs after %d s; going on",
                            WARM_WAIT_SECONDS)
            self._warming = None

    def _between_refreshes(self) -> None:
        """The background work of a warm refresher: a due compaction (when no other writer holds
        the lock), due checkpoints, then the warm-up. A failure only costs the next refresh the time it would have saved."""
        from spark_jobs import refresh_job

        try:
            if refresh_job.edges_due_for_compaction(self.spark, self.config.lake):
                with writer_lock(self.config, "refresh compaction", timeout=0):
                    self._compact_if_due()  # asked again under the lock: another writer may have done it
        except DataRootBusyError:
            log.info("refresh: another writer holds the data root; the compaction is left to a later refresh")
        self._checkpoint_if_due()
        try:
            refresh_job.warm_edges(self.spark, self.config.lake)
        except Exception as exc:  # noqa: BLE001 - e.g. the session was stopped meanwhile
            log.warning("refresh: warming the edge table failed (%s); the next refresh reads its state itself", exc)

    def _compact_if_due(self) -> int:
        """Compact the edge table when :func:`~spark_jobs.refresh_job.edges_due_for_compaction`
        (the caller holds the writer lock); the number of files written, 0 when not due or when it
        failed (a warning: the refresh before it is committed, only the layout waits for a later one)."""
        from spark_jobs import refresh_job

        try:
            if not refresh_job.edges_due_for_compaction(self.spark, self.config.lake):
                return 0
            started = time.perf_counter()
            files = refresh_job.compact_edges(self.spark, self.config.lake)
        except Exception as exc:  # noqa: BLE001 - e.g. the session was stopped meanwhile
            log.warning("refresh: compacting the edge table failed (%s); a later refresh tries again", exc)
            return 0
        self.compactions += 1
        log.info("refresh: compacted gold.interest_edges into %d files by user key in %.1f s",
                 files, time.perf_counter() - started)
        return files

    def _checkpoint_if_due(self) -> list[str]:
        """Write the edge and history tables' checkpoints where due
        (:func:`~spark_jobs.refresh_job.checkpoint_refreshed_tables`; no lock needed: a checkpoint
        writes no commit); the tables checkpointed, none when it failed (a warning, like a failed
        compaction)."""
        from spark_jobs import refresh_job

        try:
            tables = refresh_job.checkpoint_refreshed_tables(self.spark, self.config.lake)
        except Exception as exc:  # noqa: BLE001 - e.g. the session was stopped meanwhile
            log.warning("refresh: writing a Delta checkpoint failed (%s); a later refresh tries again", exc)
            return []
        self.checkpoints += len(tables)
        if tables:
            log.info("refresh: wrote the Delta checkpoint of %s", ", ".join(tables))
        return tables

    def _refresh(self, as_of: datetime | None, full: bool) -> dict[str, Any]:
        from models.interests import interest_edges, user_histories, with_communities, with_update_policy
        from spark_jobs import io, refresh_job

        config, spark = self.config, self.spark
        t0 = time.perf_counter()
        steps: dict[str, float] = {}  # seconds of each step, so a log (and the benchmark) says where the time went
        progress = self._progress = refresh_job.read_progress(spark, config.lake, self._progress)
        as_of = _checked_as_of(config, progress, as_of)
        scorer, version, policy, policy_version = self._champions()
        marker = f"{version}|{policy_version}"
        mark = progress.refreshed
        self._history = refresh_job.history_state(spark, config.lake, self._history)
        if mark is not None and self._history.edges_version != mark.edges_version:
            self._history = refresh_job.repair_history(spark, config.lake, mark)  # killed after its edge commit
        # A new (or rolled-back) champion — GCN or policy — re-materialises everyone.
        full = full or mark is None or mark.models != marker
        after = None if full else mark.batch_seq  # type: ignore[union-attr]
        result = {"mode": "full" if full else "incremental", "as_of": as_of.isoformat(), "dirty_users": 0,
                  "edges_written": 0, "model_version": version, "policy_version": policy_version}
        steps["progress and models"] = time.perf_counter() - t0

        dirty_keys = refresh_job.dirty_users(spark, config.lake, after_batch_seq=after,
                                             upto_batch_seq=progress.aggregated_batch_seq,
                                             watermarks_version=progress.watermarks_version)
        n_dirty = len(dirty_keys)
        if n_dirty == 0:
            log.info("refresh: no user has new behaviour since batch %s; nothing written", after or 0)
            return {**result, "mode": "noop", "seconds": round(time.perf_counter() - t0, 3)}
        log.info("refresh: %d dirty users (%s), model uig-gcn v%s", n_dirty, result["mode"], version)
        topics, titles = self._catalog_inputs()
        communities = with_communities(topics, scorer.communities)
        previous = None if mark is None else mark.as_of.timestamp()
        actions: Counter[str] = Counter()
        n_edges, read_seconds = 0, time.perf_counter() - t0 - sum(steps.values())

        def edge_frame(user_keys: list[str]) -> "pd.DataFrame":
            """The new edge rows of some dirty users: their histories, the policy's decision, the edges."""
            nonlocal n_edges, read_seconds
            started = time.perf_counter()
            histories = refresh_job.read_histories(spark, config.lake, user_keys)
            read_seconds += time.perf_counter() - started
            users = with_update_policy(user_histories(histories, as_of), scorer, policy, previous, as_of.timestamp())
            actions.update(u.update_action for u in users)
            edges = interest_edges(scorer, users, communities, titles)
            n_edges += len(edges)
            return refresh_job.edge_frame(edges, as_of=as_of, model_version=str(version),
                                          policy_version=policy_version)

        # Scored a chunk of users at a time, so the driver never holds every user's edges at once.
        # Up to io.FEW_USERS users, the edges reach Spark as rows made on the driver (edge_rows);
        # more users' edges are staged as Parquet files written by Arrow (stage_edges): rows made
        # on the driver travel inside a task it serialises whole.
        chunks = [dirty_keys[i:i + SCORE_CHUNK_USERS] for i in range(0, n_dirty, SCORE_CHUNK_USERS)]
        staged = len(chunks) > 1 or n_dirty > io.FEW_USERS
        if not staged:
            new_edges = refresh_job.edge_rows(spark, edge_frame(chunks[0]))
        else:
            log.info("refresh: scoring %d users in %d chunks of up to %d", n_dirty, len(chunks), SCORE_CHUNK_USERS)
            new_edges = refresh_job.stage_edges(spark, config.lake, map(edge_frame, chunks))
        result["actions"] = dict(actions)
        steps["read dirty users"] = read_seconds
        steps["decide and score"] = time.perf_counter() - t0 - sum(steps.values())
        try:
            if full:  # the model's communities become the community nodes of the graph
                refresh_job.write_communities(spark, config.lake, scorer.communities, str(version))
            mark, self._history = refresh_job.write_edges(
                spark, config.lake, new_edges, dirty_keys, as_of=as_of,
                upto_batch_seq=progress.aggregated_batch_seq, models_marker=marker,
                known_history=self._history, rewrite_all=full)
        finally:
            if staged:
                refresh_job.drop_staged_edges(config.lake)
        self._progress = replace(progress, refreshed=mark, edges_table_version=mark.edges_version)
        steps["write"] = time.perf_counter() - t0 - sum(steps.values())
        if not self.keep_warm:  # a warm refresher does both between refreshes
            if self._compact_if_due():
                steps["compact"] = time.perf_counter() - t0 - sum(steps.values())
            if self._checkpoint_if_due():
                steps["checkpoint"] = time.perf_counter() - t0 - sum(steps.values())

        result.update(dirty_users=n_dirty, edges_written=n_edges, seconds=round(time.perf_counter() - t0, 3),
                      seconds_by_step={name: round(v, 3) for name, v in steps.items()})
        log.info("refresh done: %s", result)
        return result

    def _champions(self) -> tuple[Any, int, Any, str]:
        """``(scorer, version, policy, policy_version)`` of the ``@champion`` GCN and update policy;
        loaded again only when either alias points elsewhere than at the last call."""
        from uig_common import names as C
        from uig_tasks import mlflow_store, scorer_model

        with mlflow_store.connected(self.config) as client:
            gcn = mlflow_store.model_version(client, C.GCN_MODEL, C.CHAMPION_ALIAS)
            policy = mlflow_store.champion(client, C.POLICY_MODEL)
            versions = (int(gcn.version), None if policy is None else int(policy.version))
            if self._models is None or self._models[0] != versions:
                scorer, _ = scorer_model.read_state(C.GCN_MODEL, gcn)
                loaded = None if policy is None else scorer_model.read_state(C.POLICY_MODEL, policy)[0]
                self._models = (versions, scorer_model.scorer_from_state(scorer),
                                None if loaded is None else scorer_model.scorer_from_state(loaded))
                self.model_loads += 1
                log.info("refresh: loaded uig-gcn v%s and %s", versions[0], _policy_version(versions[1]))
        (gcn_number, policy_number), scorer, policy_model = self._models
        return scorer, gcn_number, policy_model, _policy_version(policy_number)

    def _catalog_inputs(self) -> tuple[Any, dict[str, str]]:
        """The item topics and titles (:func:`spark_jobs.refresh_job.read_interest_inputs`), reread
        only when ``gold.item_topics`` or ``silver.items`` has a new Delta version."""
        from spark_jobs import io, refresh_job
        from uig_common import names as C

        versions = (io.table_version(self.spark, self.config.lake, C.GOLD_ITEM_TOPICS),
                    io.table_version(self.spark, self.config.lake, C.SILVER_ITEMS))
        if self._catalog is None or self._catalog[0] != versions:
            self._catalog = (versions, *refresh_job.read_interest_inputs(self.spark, self.config.lake))
        return self._catalog[1], self._catalog[2]


def _policy_version(number: int | None) -> str:
    """How edges name the update policy: ``uig-update-policy vN``, or the default rule without one."""
    from uig_common import names as C

    return C.DEFAULT_POLICY_VERSION if number is None else f"{C.POLICY_MODEL} v{number}"


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
