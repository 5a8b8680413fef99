"""Two ``uig ingest`` at once on one data root: the second waits for the writer lock, both succeed,
every landed line is stored once; and nothing the CLI and Spark wrote there is readable by others."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from uig_common import names as C
from spark_jobs import io
from tests.conftest import SECOND_DAY
from tests.integration.helpers import start_uig
from uig_tasks.config import UigConfig
from uig_tasks.locking import lock_path

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LOGICAL = "1997-09-22T00:00:00Z"


@pytest.fixture(scope="module")
def two_ingests(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    # No salt configured: the first ingest creates .secrets/user_salt, the second reads it.
    config = UigConfig.from_env({}, data_root=tmp_path_factory.mktemp("two-writers") / "data")
    prepared = subprocess.run(
        [sys.executable, "-m", "uig_tasks.cli", "--json", "--data-root", str(config.data_root),
         "data", "prepare", "--until", SECOND_DAY.isoformat()],
        capture_output=True, text=True, timeout=600, check=True,
    )
    landed = json.loads(prepared.stdout)["events"]

    first = start_uig(config, "ingest", "--logical-time", LOGICAL)
    deadline = time.monotonic() + 600
    while f'"pid": {first.pid},' not in (lock_path(config).read_text() if lock_path(config).exists() else ""):
        assert first.poll() is None and time.monotonic() < deadline, "the first ingest never took the lock"
        time.sleep(0.05)
    second = start_uig(config, "ingest", "--logical-time", LOGICAL)  # starts while the first one writes
    outputs = [proc.communicate(timeout=1800)[0].decode(errors="replace") for proc in (first, second)]
    return {"config": config, "landed": landed, "procs": (first, second), "outputs": outputs}


def test_the_second_ingest_waits_for_the_first_and_every_line_is_stored_once(spark, two_ingests) -> None:
    config: UigConfig = two_ingests["config"]  # type: ignore[assignment]
    first, second = two_ingests["procs"]  # type: ignore[misc]
    first_out, second_out = two_ingests["outputs"]  # type: ignore[misc]
    assert first.returncode == 0, first_out[-3000:]
    assert second.returncode == 0, second_out[-3000:]
    assert f"waiting for pid {first.pid}" in second_out and "(uig ingest, since " in second_out

    landed = two_ingests["landed"]
    assert landed > 1000  # two MovieLens days
    for table in (C.BRONZE_EVENTS_RAW, C.SILVER_EVENTS):
        assert io.read_table(spark, config.lake, table).count() == landed, table
    assert io.read_table(spark, config.lake, C.SILVER_EVENTS).select(C.EVENT_ID).distinct().count() == landed
    [batch] = io.read_table(spark, config.lake, C.OPS_BATCHES).collect()  # the second found nothing new
    assert batch[C.STATUS] == C.BATCH_COMMITTED and batch[C.N_RAW] == landed


def test_nothing_under_the_data_root_is_readable_by_others(two_ingests) -> None:
    config: UigConfig = two_ingests["config"]  # type: ignore[assignment]
    root = config.data_root
    readable = [str(p.relative_to(root)) for p in [root, *root.rglob("*")] if p.lstat().st_mode & 0o007]
    assert readable == []
    assert any(root.glob("delta/silver/events/**/*.parquet")) and any(root.glob("landing/**/*.jsonl"))

    def mode(path: Path) -> int:
        return path.stat().st_mode & 0o777

    assert mode(root) == 0o750
    assert mode(root / ".secrets") == 0o700 and mode(root / ".secrets" / "user_salt") == 0o600
