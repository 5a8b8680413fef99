"""The only module that builds Spark sessions and touches Delta tables.

Every write here is one Delta commit (overwrite of a slice, or one MERGE), so a task that is
killed part-way leaves each table either before or after that commit, never in between.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from uig_common import names as C
from uig_common.timeutil import naive_utc
from spark_jobs.schemas import TABLE_PARTITIONS, TABLE_PROPERTIES, TABLE_SCHEMAS

from spark_jobs.settings import Lake, SparkSettings
from uig_common.errors import UigError

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger(__name__)


class SparkSetupError(UigError, RuntimeError):
    """Spark cannot start with Delta (usually: the install step has not resolved the jars)."""


#: Built by the install step from ``infra/local-fs``: Hadoop's local file system with the mode of a
#: new file set, and a rename checked, in-process instead of by a ``chmod`` / ``readlink`` process
#: each (15-20 ms apiece from a driver's JVM: about 50 in a one-user refresh, hundreds per ingest).
LOCAL_FS_JAR = "uig-local-fs.jar"


def delta_jars(jars_dir: Path) -> list[str]:
    jars = sorted(str(p) for p in Path(jars_dir).glob("*.jar") if p.name != LOCAL_FS_JAR)
    if not any("delta-spark" in j for j in jars):
        raise SparkSetupError(
            f"no Delta Lake jars in {jars_dir}. Run `bash infra/bootstrap.sh` (it resolves them "
            "from Maven Central once); jobs never download jars at run time."
        )
    return jars


#: Where the JVM writes its own output (start-up notices, log4j) unless ``SparkSettings.verbose``.
SPARK_LOG = Path("logs") / "spark.log"
SPARK_LOCAL_DIR = Path("spark-local")  # under the work dir: Spark's scratch files on a local master
_SPARK_LOG_MAX_BYTES = 10 * 2**20  # then it is moved to spark.log.1 (one old log kept)


@contextmanager
def _jvm_output(settings: SparkSettings, app_name: str) -> Iterator[Path | None]:
    """Send the output of a JVM launched inside this block to ``<work_dir>/logs/spark.log``
    (yielded), or leave it on the terminal (None) when ``settings.verbose``.

    The JVM inherits the process's stdout and stderr when PySpark launches it, and its chatter
    (``Using Spark's default log4j profile``, NativeCodeLoader, incubator-module and loopback
    warnings) starts before any log4j setting applies; so both descriptors point at the log file
    while the JVM starts, and are restored before anything else is printed.
    """
    if settings.verbose:
        yield None
        return
    path = settings.work_dir / SPARK_LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size > _SPARK_LOG_MAX_BYTES:
        path.replace(path.with_name(path.name + ".1"))
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    try:
        with open(path, "ab") as jvm_log:
            jvm_log.write(f"--- {app_name}: JVM started by pid {os.getpid()}\n".encode())
            jvm_log.flush()
            for fd in saved:
                os.dup2(jvm_log.fileno(), fd)
        yield path
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)


def get_spark(settings: SparkSettings, app_name: str = "uig") -> "SparkSession":
    """A SparkSession with Delta enabled, sized for the configured master (reused if running).

    The JVM's own output goes to ``<work_dir>/logs/spark.log`` and its log level is ERROR, unless
    ``settings.verbose`` (then the terminal, at WARN).
    """
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Python workers must run the same interpreter (and so see the same packages) as the driver.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    # PySpark turns timestamps into naive datetimes in the *process* time zone; pin it to UTC so
    # what we read back compares correctly with the aware UTC datetimes we pass in.
    if os.environ.get("TZ") != "UTC":
        os.environ["TZ"] = "UTC"
        time.tzset()
    os.environ.setdefault("PYARROW_IGNORE_TIMEZONE", "1")
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = (
        SparkSession.builder.appName(app_name)
        .master(settings.master)
        .config("spark.jars", ",".join(delta_jars(settings.jars_dir)))
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(settings.shuffle_partitions))
        .config("spark.default.parallelism", str(settings.shuffle_partitions))
        .config("spark.databricks.delta.snapshotPartitions", "2")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        # an Arrow failure is an error, not a silent row-by-row Python copy of the same frame
        .config("spark.sql.execution.arrow.pyspark.fallback.enabled", "false")
        .config("spark.driver.memory", settings.driver_memory)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.warehouse.dir", str((settings.work_dir / "spark-warehouse").resolve()))
        .config("spark.driver.extraJavaOptions", f"-Dderby.system.home={settings.work_dir.resolve()}")
        .config("spark.hadoop.fs.permissions.umask-mode", f"{settings.file_umask:03o}")
    )
    if settings.master.startswith("local"):
        # shuffle, spill and Python-worker files under the data root, not the system's /tmp: Spark
        # removes them when it stops, and a process killed mid-job leaves them where its data is
        builder = builder.config("spark.local.dir", str((settings.work_dir / SPARK_LOCAL_DIR).resolve()))
    local_fs = settings.jars_dir / LOCAL_FS_JAR
    # on the JVMs' own class path (Hadoop loads file systems before spark.jars), so local masters
    # only: a cluster's workers need not hold the jar at this path
    if local_fs.exists() and settings.master.startswith("local"):
        builder = (builder.config("spark.driver.extraClassPath", str(local_fs.resolve()))
                   .config("spark.executor.extraClassPath", str(local_fs.resolve()))
                   .config("spark.hadoop.fs.file.impl", "uig.hadoop.NoForkLocalFileSystem")
                   .config("spark.hadoop.fs.AbstractFileSystem.file.impl", "uig.hadoop.NoForkLocalFs"))
    with _jvm_output(settings, app_name) as jvm_log:
        try:
            spark = builder.getOrCreate()
        except Exception as exc:
            if jvm_log is None:
                raise
            raise SparkSetupError(f"Spark did not start ({exc}); the JVM's output is in {jvm_log}") from exc
    spark.sparkContext.setLogLevel("WARN" if settings.verbose else "ERROR")
    _exit_when_a_thread_dies_of_oom(spark)
    return spark


def _exit_when_a_thread_dies_of_oom(spark: "SparkSession") -> None:
    """A driver thread that dies of an ``OutOfMemoryError`` ends the JVM (its caller sees the
    error) instead of leaving the driver alive without it: when the scheduler's thread dies
    serialising a task too large for the heap, a job waits forever. The handler is the one Spark
    gives its executors (``SparkUncaughtExceptionHandler``; with ``False`` it exits on an OOM
    only). The JVM's ``-XX:+ExitOnOutOfMemoryError`` exited too, but also at the errors Spark
    catches and recovers from (a sort retries a page it could not allocate): 10M SYNTHETIC events
    in one batch ended the ingest that way in a 2 GB driver."""
    jvm = spark._jvm
    handler = jvm.org.apache.spark.util.SparkUncaughtExceptionHandler(False)  # False: exit on OOM only
    jvm.java.lang.Thread.setDefaultUncaughtExceptionHandler(handler)


# --- table helpers ----------------------------------------------------------------------
def table_exists(spark: "SparkSession", path: str) -> bool:
    from delta.tables import DeltaTable

    return Path(path).exists() and DeltaTable.isDeltaTable(spark, path)


_KNOWN_TABLES: set[str] = set()  # paths already checked in this process (saves a JVM round trip)


def ensure_table(spark: "SparkSession", lake: Lake, table: str) -> str:
    """Create ``table`` empty with its contract schema, partitions and properties if it does not
    exist; return its path.

    One ``CREATE TABLE`` commit, which writes no data file: about 0.12 s a table here, against
    0.70 s for the empty write and the ``ALTER TABLE`` that set its properties before (a first
    ingest and aggregate create a dozen tables)."""
    from delta.tables import DeltaTable

    path = lake.path(table)
    if path in _KNOWN_TABLES and Path(path, "_delta_log").is_dir():
        return path
    if not table_exists(spark, path):
        builder = DeltaTable.createIfNotExists(spark).location(path).addColumns(TABLE_SCHEMAS[table])
        if table in TABLE_PARTITIONS:
            builder = builder.partitionedBy(*TABLE_PARTITIONS[table])
        for key, value in TABLE_PROPERTIES.get(table, {}).items():
            builder = builder.property(key, value)
        builder.execute()
    _KNOWN_TABLES.add(path)
    return path


def read_table(spark: "SparkSession", lake: Lake, table: str, version: int | None = None) -> "DataFrame":
    """The table, or its state at Delta ``version`` (time travel: what a snapshot recorded it read)."""
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", int(version))
    return reader.load(ensure_table(spark, lake, table))


def _last_commit(spark: "SparkSession", lake: Lake, table: str):
    """The table's latest row of Delta history (version, operation, userMetadata, ...)."""
    from delta.tables import DeltaTable

    return DeltaTable.forPath(spark, ensure_table(spark, lake, table)).history(1).collect()[0]


def _delta_log(spark: "SparkSession", path: str):
    """The JVM's ``DeltaLog`` of the table at ``path``, brought up to date, and its version."""
    jvm = spark._jvm
    empty = jvm.scala.Option.empty()
    log_ = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, path)
    return log_, int(log_.update(False, empty, empty).version())


def table_version(spark: "SparkSession", lake: Lake, table: str) -> int:
    """The table's latest Delta version, from the Delta log's snapshot in the JVM: no Spark job
    (about 20 ms, against 0.3–0.5 s for a history query — a warm refresher asks on every run).
    Falls back to the history query where that internal API is not there."""
    from py4j.protocol import Py4JError

    path = ensure_table(spark, lake, table)
    try:
        return _delta_log(spark, path)[1]
    except (Py4JError, AttributeError, TypeError):  # another Delta version, or a session without a JVM
        return int(_last_commit(spark, lake, table)["version"])


def last_commit_note(spark: "SparkSession", lake: Lake, table: str, depth: int = 50) -> str | None:
    """The ``commit_note`` (:func:`overwrite`) of the newest of the table's last ``depth`` commits
    that has one; None if none has. Commits that carry no note (OPTIMIZE, a table property set,
    a DELETE) change no note's meaning, so they leave the one before them standing."""
    noted = last_noted_commit(spark, lake, table, depth)
    return None if noted is None else noted[1]


def last_noted_commit(spark: "SparkSession", lake: Lake, table: str, depth: int = 50) -> tuple[int, str] | None:
    """``(version, note)`` of the commit :func:`last_commit_note` reads; None if none has a note.

    Read from the newest commit files back, in the JVM (a few ms a commit; the history query it
    falls back to, where that internal API is not there or a commit file is gone, runs a Spark
    job: 0.3-0.5 s)."""
    from py4j.protocol import Py4JError

    path = ensure_table(spark, lake, table)
    try:
        return next(((v, note) for v, note in _commit_notes(spark, path, depth) if note is not None), None)
    except (Py4JError, AttributeError, TypeError):
        from delta.tables import DeltaTable

        history = DeltaTable.forPath(spark, path).history(depth)
        notes = history.where("userMetadata IS NOT NULL").orderBy("version", ascending=False).limit(1).collect()
        return (int(notes[0]["version"]), notes[0]["userMetadata"]) if notes else None


def _commit_notes(
    spark: "SparkSession", path: str, depth: int, newest: int | None = None
) -> Iterator[tuple[int, str | None]]:
    """``(version, note)`` of the Delta table at ``path``'s last ``depth`` commits up to version
    ``newest`` (default: the latest), newest first (``note`` None where a commit has none), read
    from the commit files in the JVM. Raises Py4JError (or AttributeError) where that internal API
    is not there or a commit file is gone."""
    for v, info in _commit_infos(spark, path, depth, newest):
        noted = info is not None and info.userMetadata().isDefined()
        yield v, str(info.userMetadata().get()) if noted else None


def _commit_infos(spark: "SparkSession", path: str, depth: int, newest: int | None = None) -> Iterator[tuple[int, Any]]:
    """``(version, CommitInfo)`` (the JVM object, None where a commit has none) of the table at
    ``path``'s last ``depth`` commits up to version ``newest`` (default: the latest), newest first,
    read from the commit files in the JVM (a few ms each: no Spark job). Raises as :func:`_commit_notes`."""
    log_, latest = _delta_log(spark, path)
    version = latest if newest is None else min(int(newest), latest)
    jvm = spark._jvm
    conf, store = log_.newDeltaHadoopConf(), log_.store()
    for v in range(version, max(-1, version - depth), -1):
        commit_file = jvm.org.apache.spark.sql.delta.util.FileNames.unsafeDeltaFile(log_.logPath(), v)
        info = jvm.org.apache.spark.sql.delta.DeltaHistoryManager.getCommitInfoOpt(store, commit_file, conf)
        yield v, info.get() if info.isDefined() else None


def rows_added(spark: "SparkSession", lake: Lake, table: str, version: int) -> int | None:
    """The rows the table's commit ``version`` added, from its commit file's ``operationMetrics``
    in the JVM (no Spark job): its output rows less the ones it "copied" (Delta counts the rows
    left in files whose deletion vectors the commit rewrote as output too, though it copies none
    of them). None where that commit is not there or counts no output rows, or that internal API
    is not there."""
    from py4j.protocol import Py4JError

    try:
        for found, info in _commit_infos(spark, ensure_table(spark, lake, table), 1, newest=version):
            if found != version or info is None or not info.operationMetrics().isDefined():
                return None
            metrics = info.operationMetrics().get()
            output, copied = metrics.get("numOutputRows"), metrics.get("numCopiedRows")
            if not output.isDefined():
                return None
            return int(output.get()) - (int(copied.get()) if copied.isDefined() else 0)
    except (Py4JError, AttributeError, TypeError, ValueError):
        return None
    return None


#: Operations after which a table's files are all new: nothing written before them is left (not
#: OPTIMIZE: its bin-packing leaves large files as they are and mixes the key ranges of small ones).
_WHOLE_TABLE_OPERATIONS = ("CREATE TABLE", "REPLACE TABLE", "CREATE OR REPLACE TABLE")


def commits_since_rewrite(spark: "SparkSession", lake: Lake, table: str, depth: int) -> int:
    """How many of the table's newest commits (at most ``depth``) came after its last whole rewrite
    (an :func:`overwrite` without ``replace_where``, a :func:`compact`): each may have
    added files whose rows lie anywhere in the key order, and marked rows deleted in others, which
    :func:`compact` puts back in order. Read from the commit files (history query as a fallback)."""
    from py4j.protocol import Py4JError

    def whole(operation: str, mode: str | None, has_predicate: bool) -> bool:
        return operation in _WHOLE_TABLE_OPERATIONS or (
            operation == "WRITE" and (mode or "").strip('"') == "Overwrite" and not has_predicate)

    def described(info: Any) -> tuple[str, str | None, bool] | None:
        """A JVM CommitInfo as (operation, mode, has a predicate): whether a replaceWhere's
        predicate is there, not its text, which may be megabytes."""
        if info is None:
            return None
        params = info.operationParameters()
        mode = params.get("mode")
        return str(info.operation()), str(mode.get()) if mode.isDefined() else None, params.get("predicate").isDefined()

    path = ensure_table(spark, lake, table)
    try:  # newest first
        commits = [described(info) for _, info in _commit_infos(spark, path, depth)]
    except (Py4JError, AttributeError, TypeError):
        from delta.tables import DeltaTable

        rows = DeltaTable.forPath(spark, path).history(depth).orderBy("version", ascending=False).collect()
        commits = [(r["operation"], (r["operationParameters"] or {}).get("mode"),
                    bool((r["operationParameters"] or {}).get("predicate"))) for r in rows]
    return next((n for n, commit in enumerate(commits) if commit is not None and whole(*commit)), len(commits))


def checkpoint(spark: "SparkSession", lake: Lake, table: str, every: int) -> bool:
    """Write ``table``'s Delta checkpoint (its state in one Parquet file, where a reader starts
    instead of replaying each commit since the last one) when ``every`` commits or more came after
    the last one; whether it wrote one. For tables whose ``delta.checkpointInterval`` is set high
    (:data:`spark_jobs.schemas.TABLE_PROPERTIES`) so that Delta does not write it inside a commit."""
    log_, version = _delta_log(spark, ensure_table(spark, lake, table))
    last = log_.readLastCheckpointFile()
    if version - (last.get().version() if last.isDefined() else -1) < every:
        return False
    log_.checkpoint()
    return True


def compact(spark: "SparkSession", lake: Lake, table: str, key: str, rows_per_file: int) -> int:
    """Rewrite the (unpartitioned) ``table`` whole in ONE commit that changes no rows, each file
    holding one range of ``key`` (sorted within it) and about ``rows_per_file`` rows: a later
    change of a few keys' rows then finds them in one file by its statistics, and rows marked
    deleted are dropped. The commit says ``dataChange=false`` (readers of the table's changes see
    none) and carries no note, so the note before it stands (:func:`last_commit_note`). Returns the
    number of files written."""
    path = ensure_table(spark, lake, table)
    current = read_table(spark, lake, table)
    files = max(1, math.ceil(current.count() / rows_per_file))
    _writer(in_key_ranges(current, key, files), table, "overwrite").option("dataChange", "false").save(path)
    return files


def in_key_ranges(df: "DataFrame", key: str, partitions: int | None = None) -> "DataFrame":
    """``df``'s rows shuffled into ranges of ``key`` (``partitions`` of them; default the session's
    shuffle partitions) and sorted by it within each: each file a write makes of them holds one
    range, so a later change of a few keys' rows finds them in a few files by their statistics."""
    ranged = df.repartitionByRange(partitions, key) if partitions else df.repartitionByRange(key)
    return ranged.sortWithinPartitions(key)


def overwrite(
    spark: "SparkSession", lake: Lake, table: str, df: "DataFrame", replace_where: str | None = None,
    *, overwrite_schema: bool = False, commit_note: str | None = None, rows_per_file: int | None = None,
) -> None:
    """Replace the whole table, or only the rows matching ``replace_where``, in one commit.

    ``overwrite_schema`` (whole-table only) also replaces a stored schema that predates the
    table's contract, e.g. a column added since the table was written. ``commit_note`` is kept
    as the commit's ``userMetadata`` (:func:`last_commit_note`): what the rows were made from.
    ``rows_per_file`` caps the rows of each file written (a task's rows in order stay in order).
    """
    path = ensure_table(spark, lake, table)
    writer = _writer(df, table, "overwrite", commit_note)
    if rows_per_file is not None:
        writer = writer.option("maxRecordsPerFile", int(rows_per_file))
    if replace_where:
        writer = writer.option("replaceWhere", replace_where)
    elif overwrite_schema:
        writer = writer.option("overwriteSchema", "true")
    writer.save(path)


def append(spark: "SparkSession", lake: Lake, table: str, df: "DataFrame", *, commit_note: str | None = None) -> None:
    """Add ``df``'s rows to ``table`` in one commit (no read of the table's rows); ``commit_note``
    as in :func:`overwrite`."""
    path = ensure_table(spark, lake, table)
    _writer(df, table, "append", commit_note).save(path)


def _writer(df: "DataFrame", table: str, mode: str, commit_note: str | None = None):
    """A Delta writer of ``df``'s contract columns for ``table``, partitioned as the table is,
    its commit noted ``commit_note``.

    Rows of a partitioned table are first gathered by partition value (a rebalance: adaptive
    execution still splits a partition too large for one task), so a commit writes about one file
    per partition it touches, not one per partition and task (MovieLens' 215 days written by 4
    tasks made 847 small files of silver.events, and every later read paid for them)."""
    rows = df.select(*TABLE_SCHEMAS[table].fieldNames())
    if table in TABLE_PARTITIONS:
        rows = rows.hint("rebalance", *TABLE_PARTITIONS[table])
    writer = rows.write.format("delta").mode(mode)
    if commit_note is not None:
        writer = writer.option("userMetadata", commit_note)
    if table in TABLE_PARTITIONS:
        writer = writer.partitionBy(*TABLE_PARTITIONS[table])
    return writer


def has_rows(spark: "SparkSession", lake: Lake, table: str, where: "Column") -> bool:
    """Whether a row of ``table`` matches ``where`` (file statistics skip most files)."""
    return len(read_table(spark, lake, table).where(where).limit(1).collect()) > 0


def timestamp_literal(when: datetime) -> "Column":
    """``when`` as a Spark timestamp literal in UTC (the session's time zone), whatever its tzinfo."""
    from pyspark.sql import functions as F

    return F.lit(when.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")).cast("timestamp")


def merge_upsert(
    spark: "SparkSession",
    lake: Lake,
    table: str,
    df: "DataFrame",
    keys: Iterable[str],
    *,
    update_when: str | None = None,
    insert_only: bool = False,
    commit_note: str | None = None,
    local_source: bool = False,
) -> None:
    """MERGE ``df`` into ``table`` on ``keys``: insert new keys, update matched ones.

    ``update_when`` restricts updates (e.g. only when the content hash changed);
    ``insert_only`` never touches existing rows (first writer wins, as for de-duplication);
    ``commit_note`` becomes the commit's ``userMetadata``, as in :func:`overwrite`;
    ``local_source``: ``df`` is rows made on the driver (``createDataFrame``), which read the same
    on every pass, so Delta need not first copy them aside (a Spark job: about 0.4 s a MERGE here).
    """
    from delta.tables import DeltaTable

    path = ensure_table(spark, lake, table)
    cond = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
    merge = DeltaTable.forPath(spark, path).alias("t").merge(
        df.select(*TABLE_SCHEMAS[table].fieldNames()).alias("s"), cond
    )
    if not insert_only:
        merge = merge.whenMatchedUpdateAll(condition=update_when)
    materialize = "spark.databricks.delta.merge.materializeSource"
    as_is = _session_conf(spark, materialize, "none") if local_source else nullcontext()
    with _user_metadata(spark, commit_note), as_is:
        merge.whenNotMatchedInsertAll().execute()


@contextmanager
def _user_metadata(spark: "SparkSession", note: str | None) -> Iterator[None]:
    """Delta takes a MERGE's ``userMetadata`` from a session setting: set it for one commit."""
    if note is None:
        yield
        return
    with _session_conf(spark, "spark.databricks.delta.commitInfo.userMetadata", note):
        yield


@contextmanager
def _session_conf(spark: "SparkSession", key: str, value: str) -> Iterator[None]:
    """``key`` set to ``value`` in the session for the block, then back to what it was."""
    before = spark.conf.get(key, None)
    spark.conf.set(key, value)
    try:
        yield
    finally:
        if before is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, before)


#: Up to this many users, a job's replace of their rows runs as a query of a few rows
#: (:func:`few_rows`): a refresh's interest edges (about 30 a user), an incremental aggregate's
#: affinities (a few hundred a user).
FEW_USERS = 1_000


@contextmanager
def few_rows(spark: "SparkSession", users: int) -> Iterator[None]:
    """Session settings for the queries of the block, which handle the rows of ``users`` users:
    up to :data:`FEW_USERS` of them, one shuffle partition and no adaptive re-planning, whose
    every query stage is a Spark job of its own (a one-user edge replace here: 1.28 against
    1.54 s, medians of 12); more users, the session's own settings."""
    if users > FEW_USERS:
        yield
        return
    with _session_conf(spark, "spark.sql.adaptive.enabled", "false"), \
            _session_conf(spark, "spark.sql.shuffle.partitions", "1"):
        yield


def replace_groups(
    spark: "SparkSession",
    lake: Lake,
    table: str,
    new_rows: "DataFrame",
    group_key: str,
    groups: list[str],
    *,
    commit_note: str | None = None,
) -> None:
    """Make ``table``'s rows of each group in ``groups`` (values of ``group_key``) equal ``new_rows``, in ONE commit.

    Used to recompute the affinity rows of dirty users: a ``replaceWhere`` overwrite on
    ``group_key IN (groups)`` deletes every old row of those groups (rows no longer produced too)
    and adds ``new_rows``; rows of other groups are never rewritten. It joins nothing against the
    table: a MERGE on the row keys (the earlier way) shuffled the whole table twice and cost 2-3x
    more. Every row of ``new_rows`` must belong to one of ``groups`` (the caller derives them from
    the groups): Delta's own check of that is off here, because it tests each new row against the
    IN list one value at a time — minutes for 25,000 groups. ``commit_note`` as in :func:`overwrite`.
    """
    if not groups:
        return
    predicate = in_list(group_key, groups)
    with _session_conf(spark, "spark.databricks.delta.replaceWhere.constraintCheck.enabled", "false"):
        overwrite(spark, lake, table, new_rows, replace_where=predicate, commit_note=commit_note)


def in_list(column: str, values: Iterable[str]) -> str:
    """``column IN (values)`` as one SQL expression string: Spark parses it in one call, where
    ``Column.isin`` crosses the Py4J bridge once a value (10,000 keys: 0.77 against 6.3 s).
    No values: ``false``."""
    listed = ", ".join(sql_string(v) for v in values)
    return f"`{column}` IN ({listed})" if listed else "false"


def sql_string(value: str) -> str:
    """``value`` as a Spark SQL string literal (backslashes and quotes escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def read_watermarks(spark: "SparkSession", lake: Lake) -> dict[str, dict[str, object]]:
    """Every row of ``ops.watermarks`` by pipeline name (``ingest``, ``aggregate``, ``refresh``)."""
    return {r[C.PIPELINE]: r.asDict() for r in read_table(spark, lake, C.OPS_WATERMARKS).collect()}


#: The key of a watermark commit's note: the row the commit wrote (:func:`noted_watermark`).
WATERMARK_NOTE = "watermark"
#: The key of a watermark note naming the users with events in the batches the run took
#: (:func:`noted_new_event_users`): ``{"after_batch_seq": int, "users": [user_key, ...]}``.
NEW_EVENT_USERS_NOTE = "new_event_users"
#: The key of a watermark note giving a lower bound on the distinct users of ``silver.events``: their
#: count by this run or an earlier one (:func:`noted_users`; users are only ever added).
USERS_NOTE = "users"
_WATERMARK_TIMES = (C.MAX_EVENT_TS, C.AS_OF, C.UPDATED_AT)  # the row's times, kept as ISO text in a note


def write_watermark(
    spark: "SparkSession",
    lake: Lake,
    pipeline: str,
    *,
    last_batch_seq: int,
    updated_at: datetime,
    max_event_ts: datetime | None = None,
    as_of: datetime | None = None,
    model_version: str | None = None,
    new_event_users: tuple[int, Sequence[str]] | None = None,
    users: int | None = None,
) -> None:
    """Move ``pipeline``'s watermark (one MERGE on the pipeline name).

    ``model_version``: the model a refresh completed with, so a run killed after writing edges
    with a new ``@champion`` but before this mark is re-run in full. ``new_event_users``:
    ``(after_batch_seq, user_keys)``, the users with events in the batches this run took (those
    after ``after_batch_seq``), named in the commit's note only (:func:`noted_new_event_users`).
    ``users``: a count of the distinct users of ``silver.events``, by this run or an earlier
    one, noted only (:func:`noted_users`).
    """
    from spark_jobs.schemas import OPS_WATERMARKS

    row = {C.PIPELINE: pipeline, C.LAST_BATCH_SEQ: int(last_batch_seq), C.MAX_EVENT_TS: max_event_ts,
           C.AS_OF: as_of, C.UPDATED_AT: updated_at, C.MODEL_VERSION: model_version}
    note: dict[str, object] = {WATERMARK_NOTE: _note_row(row)}
    if new_event_users is not None:
        after, user_keys = new_event_users
        note[NEW_EVENT_USERS_NOTE] = {"after_batch_seq": int(after), "users": sorted(user_keys)}
    if users is not None:
        note[USERS_NOTE] = int(users)
    merge_upsert(spark, lake, C.OPS_WATERMARKS, spark.createDataFrame([row], OPS_WATERMARKS), [C.PIPELINE],
                 local_source=True, commit_note=json.dumps(note))


def _note_row(row: dict[str, object]) -> dict[str, object]:
    """``row`` as JSON values, its times as the table reads them back: naive UTC, ISO 8601."""
    return {k: naive_utc(v).isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


def read_watermark(
    spark: "SparkSession", lake: Lake, pipeline: str, *, version: int | None = None
) -> dict[str, object] | None:
    """``pipeline``'s row of ``ops.watermarks``: from its commit's note (:func:`noted_watermark`,
    no Spark job) where there is one, else from the table; None when it has no such row."""
    return noted_watermark(spark, lake, pipeline, version=version) or read_watermarks(spark, lake).get(pipeline)


def noted_watermark(
    spark: "SparkSession", lake: Lake, pipeline: str, depth: int = 10, *, version: int | None = None
) -> dict[str, object] | None:
    """``pipeline``'s row of ``ops.watermarks`` (as :func:`read_watermarks` gives it), from the
    note of the newest commit that wrote it, up to Delta ``version`` (default: the latest): a few
    commit files read in the JVM instead of a Spark job on the table (0.6-0.8 s, which a warm
    refresher paid on every run). None when a commit without a watermark note comes first (a table
    written before notes, or by hand), no commit of the last ``depth`` wrote the row, or that
    internal API is not there: then read the table."""
    from py4j.protocol import Py4JError

    from spark_jobs.schemas import OPS_WATERMARKS

    try:
        note = _watermark_note(spark, lake, pipeline, depth, version)
        if note is None:
            return None
        row = note[WATERMARK_NOTE]  # a column added since the note was written reads as null
        return {k: _note_time(row.get(k)) if k in _WATERMARK_TIMES else row.get(k) for k in OPS_WATERMARKS.fieldNames()}
    except (Py4JError, AttributeError, TypeError, ValueError):
        return None


def noted_users(spark: "SparkSession", lake: Lake, pipeline: str, depth: int = 10) -> int | None:
    """The count of distinct users of ``silver.events`` that ``pipeline``'s last run noted
    (:func:`write_watermark`'s ``users``): a lower bound on them now. None where it noted none."""
    from py4j.protocol import Py4JError

    try:
        note = _watermark_note(spark, lake, pipeline, depth, None)
        users = None if note is None else note.get(USERS_NOTE)
        return users if isinstance(users, int) else None
    except (Py4JError, AttributeError, TypeError, ValueError):
        return None


def _watermark_note(
    spark: "SparkSession", lake: Lake, pipeline: str, depth: int, version: int | None
) -> dict[str, Any] | None:
    """The note of the newest commit (up to ``version``) that wrote ``pipeline``'s watermark; None
    when a commit without a watermark note comes first or none of the last ``depth`` wrote it."""
    path = ensure_table(spark, lake, C.OPS_WATERMARKS)
    for _, text in _commit_notes(spark, path, depth, newest=version):
        note = json.loads(text) if text else None
        row = note.get(WATERMARK_NOTE) if isinstance(note, dict) else None
        if not isinstance(row, dict):
            return None
        if row.get(C.PIPELINE) == pipeline:
            return note
    return None


def noted_new_event_users(
    spark: "SparkSession", lake: Lake, pipeline: str, *, after_batch_seq: int, upto_batch_seq: int,
    version: int | None = None, depth: int = 50,
) -> list[str] | None:
    """The users (sorted) with events in batches ``(after_batch_seq, upto_batch_seq]``, from the
    watermark notes of ``pipeline``'s runs (:func:`write_watermark`'s ``new_event_users``) up to
    Delta ``version`` of ``ops.watermarks``: a few commit files read in the JVM, no Spark job.
    None unless the noted runs take exactly those batches, one after another from
    ``upto_batch_seq`` down to ``after_batch_seq`` (a run noted no users: a full one, or one with
    too many; a commit without a watermark note; more than ``depth`` commits back): then query."""
    from py4j.protocol import Py4JError

    users: set[str] = set()
    reached = upto_batch_seq  # the noted runs account for every batch above this one
    try:
        path = ensure_table(spark, lake, C.OPS_WATERMARKS)
        for _, note in _commit_notes(spark, path, depth, newest=version):
            if reached <= after_batch_seq:
                break
            noted = json.loads(note) if note else {}
            row = noted.get(WATERMARK_NOTE)
            if not isinstance(row, dict):
                return None
            if row.get(C.PIPELINE) != pipeline:
                continue
            taken = noted.get(NEW_EVENT_USERS_NOTE)
            if not isinstance(taken, dict) or row.get(C.LAST_BATCH_SEQ) != reached:
                return None
            users.update(taken["users"])
            reached = int(taken["after_batch_seq"])
    except (Py4JError, AttributeError, TypeError, ValueError, KeyError):
        return None
    return sorted(users) if reached == after_batch_seq else None


def _note_time(value: object) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value))


def table_summary(spark: "SparkSession", lake: Lake) -> list[dict[str, object]]:
    """Row count, Delta version and last operation of every table that exists."""
    from delta.tables import DeltaTable

    rows = []
    for table in C.ALL_TABLES:
        path = lake.path(table)
        if not table_exists(spark, path):
            rows.append({"table": table, "rows": None, "version": None, "last_operation": "(absent)"})
            continue
        last = DeltaTable.forPath(spark, path).history(1).collect()[0]
        rows.append(
            {
                "table": table,
                "rows": spark.read.format("delta").load(path).count(),
                "version": int(last["version"]),
                "last_operation": last["operation"],
            }
        )
    return rows
