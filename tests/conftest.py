"""Shared fixtures: one real local Spark session with Delta for the whole run, fresh data roots."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pytest

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from uig_tasks.config import UigConfig  # noqa: E402

# A few real MovieLens-100k days: small enough for seconds-long Spark jobs.
FIRST_DAY = date(1997, 9, 20)
SECOND_DAY = date(1997, 9, 21)
THIRD_DAY = date(1997, 9, 22)


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory):
    from spark_jobs.io import get_spark

    session = get_spark(UigConfig.from_env(data_root=tmp_path_factory.mktemp("spark-home")).spark, "uig-tests")
    yield session
    session.stop()


@pytest.fixture
def config(tmp_path: Path) -> UigConfig:
    """A config on a fresh data root, with a fixed salt so user keys are predictable in tests."""
    return UigConfig.from_env(data_root=tmp_path / "data", user_salt="test-salt")


#: Real MovieLens days up to this date (~9.4k ratings) are enough to split 80/10/10 and train.
TRAIN_UNTIL = date(1997, 10, 5)


@pytest.fixture(scope="session")
def trainable_root(spark, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root with real MovieLens events ingested and aggregated up to TRAIN_UNTIL, the catalog encoded.

    Built once per session; tests that write (snapshots, MLflow) work on a copy (``trainable_config``).
    """
    from datetime import datetime, time, timezone

    from uig_tasks.encode import run_encode
    from uig_tasks.movielens import prepare
    from uig_tasks.pipeline import run_aggregate, run_ingest

    root = tmp_path_factory.mktemp("trainable") / "data"
    config = UigConfig.from_env(data_root=root, user_salt="test-salt")
    prepare(config.landing_dir, until=TRAIN_UNTIL)
    end = datetime.combine(TRAIN_UNTIL, time.max, tzinfo=timezone.utc)
    run_ingest(config, end)
    run_aggregate(config, end)  # also writes gold.item_topics
    run_encode(config, end)
    return root


@pytest.fixture
def trainable_config(trainable_root: Path, tmp_path: Path) -> UigConfig:
    """A private copy of ``trainable_root`` (Delta tables are folders: a copy is a snapshot)."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(trainable_root, root)
    return UigConfig.from_env(data_root=root, user_salt="test-salt")
