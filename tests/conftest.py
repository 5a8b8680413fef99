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

    session = get_spark(UigConfig.from_env(data_root=tmp_path_factory.mktemp("spark-home")), "uig-tests")
    yield session
    session.stop()


@pytest.fixture
def config(tmp_path: Path) -> UigConfig:
    """A config on a fresh data root, with a fixed salt so user keys are predictable in tests."""
    return UigConfig.from_env(data_root=tmp_path / "data", user_salt="test-salt")
