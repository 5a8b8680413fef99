"""The Spark session get_spark starts: a driver out of heap ends the job with an error."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import replace

import pytest

from spark_jobs.io import SPARK_LOG
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
    assert "Terminating due to java.lang.OutOfMemoryError" in (tmp_path / SPARK_LOG).read_text()
