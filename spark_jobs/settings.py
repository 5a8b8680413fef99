"""The narrow, typed inputs of the Spark layer, resolved by the task layer from its config.

``spark_jobs`` never sees the whole application config (nor secrets files): the task layer
builds these small frozen values and hands them down, so a job's signature says exactly what
it depends on and the same job runs on ``local[2]`` or a cluster by the values alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from uig_common.errors import InputError


@dataclass(frozen=True)
class SparkSettings:
    """How to start Spark: master URL, where the install step put the Delta jars, sizing."""

    master: str
    jars_dir: Path
    shuffle_partitions: int
    driver_memory: str
    work_dir: Path  # spark-warehouse / derby home, under the data root
    # Bits Hadoop clears on every file and folder Spark and Delta create (its own umask,
    # fs.permissions.umask-mode, is 022 by default and ignores the process's).
    file_umask: int = 0o022
    # The JVM's own output (start-up notices, log4j at WARN) on the terminal; otherwise it goes
    # to <work_dir>/logs/spark.log at ERROR (spark_jobs.io.get_spark).
    verbose: bool = False


@dataclass(frozen=True)
class Lake:
    """Where the Delta tables live: ``<delta_dir>/<layer>/<name>`` for a table ``layer.name``."""

    delta_dir: Path

    def path(self, table: str) -> str:
        """Filesystem path of a Delta table named ``layer.name`` (e.g. ``silver.events``)."""
        layer, _, name = table.partition(".")
        if not layer or not name:
            raise InputError(f"table name must look like 'layer.name', got {table!r}")
        return str((self.delta_dir / layer / name).resolve())

    def scratch(self, name: str) -> str:
        """A folder for a job's intermediate files (not a table), beside the tables."""
        return str((self.delta_dir / "_scratch" / name).resolve())


@dataclass(frozen=True)
class IngestSettings:
    """What ingestion needs besides the lake: the landing folder, the salt (a value), limits."""

    landing_dir: Path
    user_salt: str
    max_line_bytes: int
    future_tolerance_seconds: int


@dataclass(frozen=True)
class AggregateSettings:
    """Decay, event strengths and the rewrite threshold of the gold aggregation."""

    half_life_days: float
    event_weights: Mapping[str, float]
    kg_min_items: int
    max_dirty_fraction: float
