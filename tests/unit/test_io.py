"""spark_jobs.io without a JVM: where a JVM launched by get_spark writes its own output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from spark_jobs.io import SPARK_LOG, _jvm_output
from spark_jobs.settings import SparkSettings


def settings(tmp_path: Path, verbose: bool) -> SparkSettings:
    return SparkSettings(master="local[1]", jars_dir=tmp_path, shuffle_partitions=1, driver_memory="1g",
                         work_dir=tmp_path, verbose=verbose)


def child_chatter() -> None:
    """What a launched JVM does: write to the stdout and stderr it inherited."""
    subprocess.run([sys.executable, "-c", "import sys; print('jvm-out'); print('jvm-err', file=sys.stderr)"], check=True)


def test_a_process_started_while_quiet_writes_to_the_spark_log_not_the_terminal(tmp_path, capfd):
    with _jvm_output(settings(tmp_path, verbose=False), "uig-test") as log:
        child_chatter()
    print("after")  # the terminal is back
    out, err = capfd.readouterr()
    assert log == tmp_path / SPARK_LOG
    assert "jvm-" not in out + err and out == "after\n"
    text = log.read_text()
    assert "--- uig-test: JVM started by pid" in text and "jvm-out" in text and "jvm-err" in text


def test_verbose_leaves_the_output_on_the_terminal(tmp_path, capfd):
    with _jvm_output(settings(tmp_path, verbose=True), "uig-test") as log:
        child_chatter()
    out, err = capfd.readouterr()
    assert log is None and "jvm-out" in out and "jvm-err" in err
    assert not (tmp_path / SPARK_LOG).exists()
