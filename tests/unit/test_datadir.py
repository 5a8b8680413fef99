"""Private modes on creation: data root 0750, .secrets 0700, the salt and the MLflow database 0600."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from uig_tasks.config import UigConfig
from uig_tasks.datadir import ensure_private_dir, ensure_private_file, restrict_umask


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.fixture
def loose_umask():
    """A umask that grants everything, so only the helpers decide the modes."""
    previous = os.umask(0)
    yield
    os.umask(previous)


def test_dirs_get_exactly_the_mode_on_creation_and_lose_wider_bits_later(tmp_path: Path, loose_umask) -> None:
    root = ensure_private_dir(tmp_path / "a" / "data", 0o750)
    assert mode(root) == 0o750
    root.chmod(0o775)
    ensure_private_dir(root, 0o750)
    assert mode(root) == 0o750  # group write and others' bits removed
    root.chmod(0o700)
    ensure_private_dir(root, 0o750)
    assert mode(root) == 0o700  # narrower stays narrower


def test_the_salt_lives_in_a_0700_secrets_folder(tmp_path: Path, loose_umask) -> None:
    config = UigConfig.from_env({}, data_root=tmp_path / "data")
    salt = config.resolved_user_salt()
    assert len(salt) == 64 and config.resolved_user_salt() == salt
    assert mode(config.data_root) == 0o750
    assert mode(config.data_root / ".secrets") == 0o700
    assert mode(config.data_root / ".secrets" / "user_salt") == 0o600


def test_a_private_sqlite_file_is_a_usable_empty_database(tmp_path: Path, loose_umask) -> None:
    db = ensure_private_file(tmp_path / "mlflow" / "mlflow.db")
    assert mode(db) == 0o600 and db.stat().st_size == 0
    with sqlite3.connect(db) as conn:
        conn.execute("create table t (x int)")
        conn.execute("insert into t values (1)")
    assert mode(db) == 0o600
    db.chmod(0o644)
    ensure_private_file(db)
    assert mode(db) == 0o600 and db.stat().st_size > 0  # tightened, content kept


def test_restrict_umask_only_adds_bits() -> None:
    previous = os.umask(0o077)
    try:
        restrict_umask()
        assert os.umask(0o022) == 0o077
        restrict_umask()
        assert os.umask(previous) == 0o027
    finally:
        os.umask(previous)
