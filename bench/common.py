"""Benchmark plumbing: peak memory of the whole process tree, machine facts, RESULTS.md sections."""

from __future__ import annotations

import os
import platform
import re
import statistics
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import psutil

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


@dataclass
class Measure:
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    samples: list[float] = field(default_factory=list)


@contextmanager
def measured(interval: float = 0.1) -> Iterator[Measure]:
    """Wall time and peak RSS of this process plus its children (the Spark JVM, Python workers)."""
    me = psutil.Process()
    result = Measure()
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            result.peak_rss_mb = max(result.peak_rss_mb, total / 2**20)
            stop.wait(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    try:
        yield result
    finally:
        result.seconds = time.perf_counter() - t0
        stop.set()
        thread.join()


def median(values: list[float]) -> float:
    return statistics.median(values)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = psutil.virtual_memory().total / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, Python {platform.python_version()}"


def _markers(name: str) -> tuple[str, str]:
    """The comment lines that open and close section ``name`` of RESULTS.md."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def write_section(name: str, markdown: str) -> None:
    """Replace (or append) the section between ``<!-- name:start -->`` and ``<!-- name:end -->``."""
    start, end = _markers(name)
    block = f"{start}\n{markdown.rstrip()}\n{end}"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\nWritten by the scripts in `bench/`; do not edit sections by hand.\n"
    if start in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)


def read_section(name: str) -> str | None:
    """The text of section ``name`` as :func:`write_section` last wrote it (None if there is none)."""
    start, end = _markers(name)
    text = RESULTS.read_text() if RESULTS.exists() else ""
    found = re.search(re.escape(start) + r"\n(.*?)\n" + re.escape(end), text, re.S)
    return None if found is None else found.group(1)


def stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def save_figure(fig, path: Path, dpi: float | str = "figure") -> None:
    """Lay out, write and close a matplotlib figure (the last three steps of every plot here)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def synthetic_users(n_events: int) -> int:
    """Users of a SYNTHETIC set of ``n_events`` (``uig_tasks.synthetic.generate``): 40 events a user on average."""
    return max(1000, n_events // 40)
