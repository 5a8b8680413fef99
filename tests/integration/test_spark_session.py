"""The Spark session get_spark starts: a driver out of heap ends the job with an error; a local
master's scratch files stay under the data root; settings changed for a block are put back; a
table is created with its contract in one commit and keeps statistics of the columns its queries
filter on; a list of keys becomes one SQL filter that selects exactly them."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from uig_common import names as C
from spark_jobs import io
from spark_jobs.io import SPARK_LOG
from spark_jobs.schemas import STATS_COLUMNS, TABLE_PARTITIONS, TABLE_PROPERTIES, TABLE_SCHEMAS
from uig_tasks.config import UigConfig

pytestmark = pytest.mark.integration

# Rows made on the driver travel inside the task that reads them, serialised whole by the driver:
# about 700 MB of them in one task cannot fit a 512 MB driver heap.
TOO_MUCH_FOR_THE_DRIVER = """
    import pandas as pd
    from pathlib import Path
    from spark_jobs import io
    from spark_jobs.settings import SparkSettings

    spark = io.get_spark(SparkSettings(**{settings!r}))
    rows = pd.DataFrame({{"s": ["x" * 200 + str(i) for i in range(3_000_000)]}})
    print("counted", spark.createDataFrame(rows).coalesce(1).count())
"""


def test_a_driver_out_of_heap_ends_the_job_with_an_error_instead_of_hanging(tmp_path) -> None:
    settings = replace(UigConfig.from_env(data_root=tmp_path).spark, driver_memory="512m", verbose=False)
    fields = {name: getattr(settings, name) for name in settings.__dataclass_fields__}
    script = textwrap.dedent(TOO_MUCH_FOR_THE_DRIVER).format(settings=fields).replace("PosixPath", "Path")
    # a hung job would sit here until the timeout, which fails the test
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "counted" not in done.stdout
    # where the heap runs out varies: the caller's call gets the error, or a Spark thread dies of it
    assert "java.lang.OutOfMemoryError" in done.stderr + (tmp_path / SPARK_LOG).read_text()


def test_an_uncaught_oom_ends_the_driver_through_sparks_handler_not_the_jvm_flag(spark) -> None:
    """Only an uncaught error ends the driver: the errors Spark catches and recovers from (a sort
    retrying a page it could not allocate) do not, as ``-XX:+ExitOnOutOfMemoryError`` made them."""
    handler = spark._jvm.java.lang.Thread.getDefaultUncaughtExceptionHandler()
    assert handler.getClass().getName() == "org.apache.spark.util.SparkUncaughtExceptionHandler"
    assert "ExitOnOutOfMemoryError" not in spark.sparkContext.getConf().get("spark.driver.extraJavaOptions")


def test_local_files_get_their_mode_and_links_their_status_without_a_process(spark, tmp_path) -> None:
    """Hadoop's own local file system runs ``chmod`` for every file it creates and ``readlink`` for
    both ends of every Delta commit's rename (15-20 ms each from the driver); the install step's
    replacement (infra/local-fs) does both inside the JVM, with the same outcome."""
    jvm, hadoop_conf = spark._jvm, spark._jsc.hadoopConfiguration()
    fs = jvm.org.apache.hadoop.fs.FileSystem.get(jvm.java.net.URI("file:///"), hadoop_conf)
    context = jvm.org.apache.hadoop.fs.FileContext.getFileContext(hadoop_conf)
    assert fs.getRawFileSystem().getClass().getName() == "uig.hadoop.NoForkRawLocalFileSystem"
    assert context.getDefaultFileSystem().getClass().getName() == "uig.hadoop.NoForkLocalFs"

    umask = int(hadoop_conf.get("fs.permissions.umask-mode"), 8)
    table = tmp_path / "table"
    spark.range(5).write.format("delta").save(str(table))  # data files, checksums and commits
    files = [p for p in table.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files) and any(p.suffix == ".json" for p in files)
    assert {p.stat().st_mode & 0o777 for p in files} == {0o666 & ~umask}
    assert {p.stat().st_mode & 0o777 for p in table.rglob("*") if p.is_dir()} == {0o777 & ~umask}

    path = jvm.org.apache.hadoop.fs.Path
    fs.setPermission(path(files[0].as_uri()), jvm.org.apache.hadoop.fs.permission.FsPermission(0o604))
    assert files[0].stat().st_mode & 0o777 == 0o604
    hadoops_own = jvm.org.apache.hadoop.fs.RawLocalFileSystem()
    hadoops_own.initialize(jvm.java.net.URI("file:///"), hadoop_conf)
    link, dangling = tmp_path / "link", tmp_path / "dangling"
    link.symlink_to(files[0])
    dangling.symlink_to(tmp_path / "gone")
    statuses = []
    # Hadoop's own sees a link by a bare path only (it runs readlink on the path's text, scheme included)
    for where in (str(link), str(dangling), link.as_uri(), files[0].as_uri(), table.as_uri()):
        ours, theirs = fs.getFileLinkStatus(path(where)), hadoops_own.getFileLinkStatus(path(where))
        statuses.append((ours.isSymlink(), ours.isDirectory(), ours.getLen()))
        assert statuses[-1] == (theirs.isSymlink(), theirs.isDirectory(), theirs.getLen()), where
    assert [symlink for symlink, _, _ in statuses] == [True, True, False, False, False]
    assert context.getFileLinkStatus(path(table.as_uri())).isDirectory()


def test_a_local_master_keeps_its_scratch_files_under_the_data_root(spark) -> None:
    # not in the system's /tmp, where a process killed mid-job would leave them for good
    local_dir = Path(spark.sparkContext.getConf().get("spark.local.dir"))
    assert local_dir.name == io.SPARK_LOCAL_DIR.name and local_dir.parent.name.startswith("spark-home")
    assert spark.range(1000).repartition(3).count() == 1000  # a shuffle: its files go there
    assert any(local_dir.glob("blockmgr-*/*"))


def test_few_rows_settings_hold_inside_the_block_and_are_put_back(spark) -> None:
    """A small refresh's replace (up to io.FEW_USERS users) runs with one shuffle partition and no
    adaptive re-planning, a larger one with the session's settings; they are back after the
    block, even when it fails."""
    keys = ("spark.sql.shuffle.partitions", "spark.sql.adaptive.enabled")
    before = [spark.conf.get(k) for k in keys]
    with io.few_rows(spark, io.FEW_USERS + 1):  # more users: the session's own settings
        assert [spark.conf.get(k) for k in keys] == before
    with pytest.raises(RuntimeError, match="the write failed"):
        with io.few_rows(spark, io.FEW_USERS):
            assert [spark.conf.get(k) for k in keys] == ["1", "false"]
            raise RuntimeError("the write failed")
    assert [spark.conf.get(k) for k in keys] == before


def test_a_listed_filter_selects_exactly_its_keys_whatever_their_characters(spark, monkeypatch) -> None:
    """Keys with quotes, backslashes, tabs or non-ASCII letters are matched as they are, both by a
    filter on a list of them and by the semi-join of_users makes of a long list; none: no row."""
    from spark_jobs import refresh_job

    keys = ["plain", "o'brien", "back\\slash", "a\\'b", "tab\there", "ünï", "x); DROP"]
    rows = spark.createDataFrame([(k, i) for i, k in enumerate([*keys, "other", "o", "back"])], "user_key string, n int")
    assert sorted(r[0] for r in rows.where(io.in_list(C.USER_KEY, keys)).collect()) == sorted(keys)
    assert rows.where(io.in_list(C.USER_KEY, [])).count() == 0
    listed = sorted(r[0] for r in refresh_job.of_users(spark, rows, keys[:3]).collect())
    monkeypatch.setattr(refresh_job, "MAX_LISTED_USERS", 2)  # the semi-join with the keys as local data
    assert sorted(r[0] for r in refresh_job.of_users(spark, rows, keys[:3]).collect()) == listed == sorted(keys[:3])


@pytest.mark.parametrize("table", [C.SILVER_EVENTS, C.GOLD_INTEREST_EDGES, C.OPS_BATCHES])
def test_a_missing_table_is_created_with_its_contract_in_one_commit_without_data(spark, config, table) -> None:
    from delta.tables import DeltaTable

    path = io.ensure_table(spark, config.lake, table)
    assert io.ensure_table(spark, config.lake, table) == path  # a second call creates nothing
    detail = DeltaTable.forPath(spark, path).detail().collect()[0]
    history = DeltaTable.forPath(spark, path).history().collect()
    assert [(h["version"], h["operation"]) for h in history] == [(0, "CREATE TABLE")]
    assert detail["numFiles"] == 0 and io.read_table(spark, config.lake, table).count() == 0
    assert io.read_table(spark, config.lake, table).schema == TABLE_SCHEMAS[table]
    assert detail["partitionColumns"] == TABLE_PARTITIONS.get(table, [])
    assert detail["properties"] == TABLE_PROPERTIES.get(table, {})


@pytest.mark.parametrize("table", sorted(STATS_COLUMNS))
def test_a_large_table_keeps_file_statistics_of_the_columns_its_queries_filter_on_only(spark, config, table) -> None:
    from pyspark.sql import functions as F

    rows = spark.range(3).select(*[F.lit(None).cast(f.dataType).alias(f.name) for f in TABLE_SCHEMAS[table].fields])
    io.append(spark, config.lake, table, rows)
    log = Path(config.lake.path(table), "_delta_log")
    stats = [json.loads(action["add"]["stats"]) for commit in sorted(log.glob("*.json"))
             for action in map(json.loads, commit.read_text().splitlines()) if "add" in action]
    assert stats and sum(s["numRecords"] for s in stats) == 3  # row counts are kept whatever the columns
    assert all(set(s["nullCount"]) == set(STATS_COLUMNS[table]) for s in stats)


def test_a_commit_tells_how_many_rows_it_added(spark, config) -> None:
    from pyspark.sql import functions as F

    table = C.GOLD_USER_ITEM_AFFINITY  # deletion vectors on: a replace marks rows, as an incremental aggregate's does

    def rows(n: int, user: str):
        return spark.range(n).select(*[F.lit(user).alias(f.name) if f.name == C.USER_KEY
                                       else F.lit(None).cast(f.dataType).alias(f.name) for f in TABLE_SCHEMAS[table].fields])

    created = io.table_version(spark, config.lake, table)
    io.append(spark, config.lake, table, rows(3, "a").unionByName(rows(2, "b")).coalesce(1))  # one file
    io.replace_groups(spark, config.lake, table, rows(4, "b"), C.USER_KEY, ["b"])  # b's 2 rows marked, 4 added
    assert io.read_table(spark, config.lake, table).count() == 7
    assert io.rows_added(spark, config.lake, table, created + 1) == 5
    assert io.rows_added(spark, config.lake, table, created + 2) == 4  # not the 3 rows of a left in their file
    assert io.rows_added(spark, config.lake, table, created) is None  # CREATE TABLE
    assert io.rows_added(spark, config.lake, table, created + 3) is None  # not written yet
