"""Where the time of ingest, aggregate and refresh goes, before anything is optimised.

Runs the product's own task functions on MovieLens-100k (every day but the last: full ingest +
aggregate, encode, train, full refresh; then the last day: incremental ingest + aggregate +
refresh) and on a SYNTHETIC drift-simulator set (the same steps, its last day held back). Three
sources, joined on the wall clock:

* the Spark event log (jobs, stages, task metrics, the Python-worker metrics of ``mapInPandas``);
* a sampler of the driver's main thread every ``--sample-ms``: which project line (file:line) is
  running, and whether it waits on the JVM or runs Python — this names the line each Spark job
  comes from (stage names of DataFrame writes are only ``save at NativeMethodAccessorImpl``) and
  splits driver time outside any job into JVM calls (Delta log and commit, planning) and Python;
* the ``_delta_log`` commits each phase adds (operation, ``operationMetrics``, file times).

The ingest's ``mapInPandas`` parsing is re-run once more per dataset with Spark's UDF profiler
(``spark.sql.pyspark.udf.profiler=perf``) into a no-op sink; that run is not part of any phase.
Writes the ``profile`` section of ``bench/RESULTS.md``.

    .venv/bin/python bench/stage_profile.py                                # ~15 min on 2 cores
    .venv/bin/python bench/stage_profile.py --no-movielens --synthetic-users 1000 --no-write   # quick
"""

from __future__ import annotations

import sys
from pathlib import Path

import argparse
import json
import os
import pstats
import shutil
import tempfile
import threading
import time
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Callable, Iterator

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import machine, stamp, write_section  # noqa: E402
from uig_tasks.config import UigConfig  # noqa: E402
from uig_common.timeutil import parse_time  # noqa: E402

PROFILED_PHASES = ("ingest", "aggregate", "refresh")  # the phases broken down; encode/train only timed


# --- the driver's main thread, sampled ------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    t: float  # epoch seconds
    site: str  # the project line running (innermost project frame, with the spark_jobs.io helper it is in)
    where: str  # "JVM" (blocked in py4j), "PySpark" (driver-side PySpark code) or "Python"


def _site(stack: list[tuple[str, int, str]]) -> str:
    """``file:line function`` of the innermost project frame outside ``spark_jobs/io.py``, plus the io
    helper below it: io's helpers are shared, so the line that called them says what the work is."""
    io_func = next((f for path, _, f in reversed(stack) if path == "spark_jobs/io.py"), None)
    outer = next(((p, n, f) for p, n, f in reversed(stack) if p != "spark_jobs/io.py"), None)
    if outer is None:
        return "(outside project code)" if io_func is None else f"io.{io_func}"
    label = f"{outer[0]}:{outer[1]} {outer[2]}"
    return f"{label} → io.{io_func}" if io_func else label


class StackSampler:
    """Wall-clock sampler of one thread: cheap (a frame walk every few ms) and needs no hook in the code."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.samples: list[Sample] = []
        self._target = threading.main_thread().ident
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        repo = str(REPO) + os.sep
        while not self._stop.wait(self.interval_s):
            frame = sys._current_frames().get(self._target)  # noqa: SLF001 - the only way to see another thread
            if frame is None:
                continue
            inner = frame.f_code.co_filename
            where = "JVM" if "/py4j/" in inner or inner.endswith("socket.py") else (
                "PySpark" if "/pyspark/" in inner else "Python")
            stack: list[tuple[str, int, str]] = []
            while frame is not None:
                path = frame.f_code.co_filename
                if path.startswith(repo) and "/.venv/" not in path and "/bench/" not in path:
                    stack.append((path[len(repo):], frame.f_lineno, frame.f_code.co_name))
                frame = frame.f_back
            stack.reverse()  # outermost first
            self.samples.append(Sample(time.time(), _site(stack), where))

    def __enter__(self) -> "StackSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def between(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if start <= s.t <= end]


# --- Spark event log ------------------------------------------------------------------------
def enable_event_log(folder: Path) -> None:
    """Event log as one plain JSON-lines file (Spark 4 rolls and zstd-compresses it by default).

    Must run before the JVM starts; ``spark_jobs.io.get_spark`` has no hook for extra conf, and
    ``PYSPARK_SUBMIT_ARGS`` reaches the session's SparkConf without touching it.
    """
    conf = {"spark.eventLog.enabled": "true", "spark.eventLog.dir": folder.resolve().as_uri(),
            "spark.eventLog.compress": "false", "spark.eventLog.rolling.enabled": "false"}
    given = os.environ.get("PYSPARK_SUBMIT_ARGS", "pyspark-shell").replace("pyspark-shell", "").strip()
    os.environ["PYSPARK_SUBMIT_ARGS"] = " ".join(
        [given, *(f"--conf {k}={v}" for k, v in conf.items()), "pyspark-shell"]).strip()


@dataclass
class Stage:
    stage_id: int
    name: str
    start: float
    end: float
    metrics: dict[str, float]  # executor run/cpu/GC time and the Python-worker metrics, seconds or counts


@dataclass
class Job:
    job_id: int
    start: float
    end: float
    group: str
    description: str
    stage_ids: list[int]
    stages: list[Stage] = field(default_factory=list)
    site: str = ""

    @property
    def seconds(self) -> float:
        return self.end - self.start


_STAGE_METRICS = {  # accumulable name -> (our name, divisor to seconds or 1 for counts)
    "internal.metrics.executorRunTime": ("task_s", 1000.0),
    "internal.metrics.executorCpuTime": ("cpu_s", 1e9),
    "internal.metrics.jvmGCTime": ("gc_s", 1000.0),
    "time to execute Python code": ("python_exec_s", 1000.0),
    "time to run Python workers": ("python_run_s", 1000.0),
    "time to initialize Python workers": ("python_init_s", 1000.0),
    "time to start Python workers": ("python_start_s", 1000.0),
    "internal.metrics.input.recordsRead": ("records_in", 1.0),
}


def read_event_log(folder: Path) -> list[Job]:
    """Jobs (with their completed stages) from the one event-log file Spark wrote under ``folder``."""
    jobs: dict[int, Job] = {}
    stages: dict[int, Stage] = {}
    for path in sorted(folder.iterdir()):
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                event = json.loads(line)
                kind = event["Event"]
                if kind == "SparkListenerJobStart":
                    props = event.get("Properties") or {}
                    jobs[event["Job ID"]] = Job(
                        event["Job ID"], event["Submission Time"] / 1000, event["Submission Time"] / 1000,
                        props.get("spark.jobGroup.id") or "", props.get("spark.job.description") or "",
                        list(event.get("Stage IDs") or []))
                elif kind == "SparkListenerJobEnd" and event["Job ID"] in jobs:
                    jobs[event["Job ID"]].end = event["Completion Time"] / 1000
                elif kind == "SparkListenerStageCompleted":
                    info = event["Stage Info"]
                    metrics: dict[str, float] = defaultdict(float)
                    for acc in info.get("Accumulables") or []:
                        if acc.get("Name") in _STAGE_METRICS:
                            name, scale = _STAGE_METRICS[acc["Name"]]
                            metrics[name] += float(acc.get("Value") or 0) / scale
                    stages[info["Stage ID"]] = Stage(info["Stage ID"], info["Stage Name"],
                                                     (info.get("Submission Time") or 0) / 1000,
                                                     (info.get("Completion Time") or 0) / 1000, dict(metrics))
    for job in jobs.values():
        job.stages = [stages[s] for s in job.stage_ids if s in stages]  # skipped stages never complete
    return sorted(jobs.values(), key=lambda j: j.start)


def union_seconds(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of intervals (jobs of one phase may overlap)."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def covered(t: float, intervals: list[tuple[float, float]]) -> bool:
    return any(start <= t <= end for start, end in intervals)


# --- Delta commits --------------------------------------------------------------------------
@dataclass(frozen=True)
class Commit:
    table: str
    version: int
    operation: str
    written_at: float  # mtime of the commit file
    execution_ms: float | None  # operationMetrics.executionTimeMs (MERGE and some others)
    rows_out: int | None


def delta_commits(delta_dir: Path) -> dict[tuple[str, int], Path]:
    """Every commit file under ``<delta_dir>/<layer>/<table>/_delta_log``, by (table, version)."""
    found: dict[tuple[str, int], Path] = {}
    for log in delta_dir.glob("*/*/_delta_log"):
        table = f"{log.parent.parent.name}.{log.parent.name}"
        for path in log.glob("*.json"):
            if path.stem.isdigit():
                found[(table, int(path.stem))] = path
    return found


def read_commit(table: str, version: int, path: Path) -> Commit:
    info: dict[str, Any] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        action = json.loads(line)
        if "commitInfo" in action:
            info = action["commitInfo"]
    metrics = info.get("operationMetrics") or {}
    rows = metrics.get("numOutputRows", metrics.get("numTargetRowsInserted"))
    ms = metrics.get("executionTimeMs")
    return Commit(table, version, str(info.get("operation", "?")), path.stat().st_mtime,
                  float(ms) if ms is not None else None, int(rows) if rows is not None else None)


# --- phases ---------------------------------------------------------------------------------
@dataclass
class Phase:
    dataset: str
    name: str
    start: float = 0.0
    end: float = 0.0
    result: dict[str, Any] = field(default_factory=dict)
    commits: list[Commit] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.dataset} {self.name}"

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def job_intervals(self) -> list[tuple[float, float]]:
        return [(max(j.start, self.start), min(j.end, self.end)) for j in self.jobs]


class Recorder:
    """Runs and times each phase under its own Spark job group; keeps the commits it adds."""

    def __init__(self, spark: Any) -> None:
        self.spark = spark
        self.phases: list[Phase] = []

    @contextmanager
    def phase(self, dataset: str, name: str, delta_dir: Path) -> Iterator[Phase]:
        phase = Phase(dataset, name)
        before = set(delta_commits(delta_dir))
        # the group id alone: a job description would hide the ones Delta gives its own jobs
        self.spark.sparkContext.setLocalProperty("spark.jobGroup.id", f"{dataset}:{name}")
        print(f"[{dataset}] {name} ...", flush=True)
        phase.start = time.time()
        try:
            yield phase
        finally:
            phase.end = time.time()
            self.spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)
            after = delta_commits(delta_dir)
            phase.commits = sorted((read_commit(t, v, p) for (t, v), p in after.items() if (t, v) not in before),
                                   key=lambda c: c.written_at)
            self.phases.append(phase)
            print(f"[{dataset}] {name}: {phase.seconds:.1f}s, {len(phase.commits)} Delta commits", flush=True)


def attribute(phases: list[Phase], jobs: list[Job], sampler: StackSampler) -> None:
    """Each job to its phase (job group, else time) and to the project line it was run from."""
    by_group = {f"{p.dataset}:{p.name}": p for p in phases}
    for job in jobs:
        phase = by_group.get(job.group) or next((p for p in phases if p.start <= job.start <= p.end), None)
        if phase is None:
            continue
        phase.jobs.append(job)
        inside = sampler.between(job.start, job.end)
        if not inside:  # shorter than a sample interval: the sample just before it is in the same call
            inside = sampler.between(phase.start, job.start)[-1:]
        job.site = Counter(s.site for s in inside).most_common(1)[0][0] if inside else "(no sample)"
    for phase in phases:
        phase.samples = sampler.between(phase.start, phase.end)


# --- the work -------------------------------------------------------------------------------
@dataclass
class LoadFigure:
    """How much of the population one day's events touch (SYNTHETIC set)."""

    users: int
    events: int
    day: str
    day_events: int
    day_users: int
    median_day_users: float
    median_day_events: float


def day_folders(landing: Path) -> list[Path]:
    return sorted(p for p in (landing / "events").glob("date=*") if p.is_dir())


def day_counts(folder: Path) -> tuple[int, int]:
    """(events, distinct users) of one landed day."""
    users: set[str] = set()
    events = 0
    for path in folder.glob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            users.add(str(json.loads(line)["user_id"]))
            events += 1
    return events, len(users)


def profile_parse(spark: Any, config: UigConfig, as_of: datetime, out: Path) -> tuple[float, pstats.Stats | None]:
    """Re-run the ingest's ``mapInPandas`` parse over all of bronze with the perf UDF profiler, into
    a no-op sink; returns the wall time of that (profiled) run and the merged profile."""
    from spark_jobs.io import read_table
    from spark_jobs.transforms.ingest import parse_events
    from uig_common import names as C

    settings = config.ingest_settings()
    spark.profile.clear()
    spark.conf.set("spark.sql.pyspark.udf.profiler", "perf")
    t0 = time.perf_counter()
    try:
        parsed = parse_events(read_table(spark, config.lake, C.BRONZE_EVENTS_RAW), user_salt=settings.user_salt,
                              logical_time=as_of, max_line_bytes=settings.max_line_bytes,
                              future_tolerance_seconds=settings.future_tolerance_seconds)
        parsed.write.format("noop").mode("overwrite").save()
    finally:
        spark.conf.unset("spark.sql.pyspark.udf.profiler")
    seconds = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    spark.profile.dump(str(out), type="perf")
    files = sorted(str(p) for p in out.glob("*.pstats"))
    spark.profile.clear()
    return seconds, (pstats.Stats(*files) if files else None)


def run_dataset(
    rec: Recorder, dataset: str, config: UigConfig, land_all_but_last: Callable[[], None],
    land_last: Callable[[], None], first_as_of: datetime, last_as_of: datetime, train_epochs: int,
    profiles: dict[str, tuple[float, pstats.Stats | None]],
) -> None:
    """The product's steps in the order a deployment runs them, each one a phase."""
    from uig_tasks.encode import run_encode
    from uig_tasks.pipeline import run_aggregate, run_ingest
    from uig_tasks.refresh import run_refresh
    from uig_tasks.train import run_train

    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("ingest (all but last day)", lambda: run_ingest(config, first_as_of)),
        ("aggregate (full)", lambda: run_aggregate(config, first_as_of)),
        ("encode", lambda: run_encode(config, first_as_of)),
        ("train", lambda: run_train(config, datetime.now(timezone.utc), overrides={"epochs": train_epochs})),
        ("refresh (full)", lambda: run_refresh(config, first_as_of)),
        ("(land the last day)", lambda: land_last() or {}),
        ("ingest (+1 day)", lambda: run_ingest(config, last_as_of)),
        ("aggregate (+1 day)", lambda: run_aggregate(config, last_as_of)),
        ("refresh (+1 day)", lambda: run_refresh(config, last_as_of)),
    ]
    land_all_but_last()
    for name, step in steps:
        if name.startswith("("):
            step()
            continue
        with rec.phase(dataset, name, config.delta_dir) as phase:
            phase.result = step()
    print(f"[{dataset}] profiled re-run of the ingest's mapInPandas parse", flush=True)
    profiles[dataset] = profile_parse(rec.spark, config, last_as_of, config.data_root / "udf-profile")


# --- report ---------------------------------------------------------------------------------
def short(site: str) -> str:
    return site.replace("spark_jobs/", "")


@dataclass
class Cost:
    phase: Phase
    what: str
    kind: str  # "Spark jobs" | "driver: JVM" | "driver: PySpark" | "driver: Python"
    seconds: float
    jobs: int = 0
    stages: int = 0
    task_s: float = 0.0
    gc_s: float = 0.0
    python_s: float = 0.0


def phase_costs(phase: Phase, sample_s: float) -> list[Cost]:
    """The phase split into Spark jobs (grouped by the line they come from) and driver time outside
    any job (grouped by line and by where the driver thread was: JVM, PySpark or Python)."""
    groups: dict[str, list[Job]] = defaultdict(list)
    for job in phase.jobs:
        groups[job.site].append(job)
    costs: list[Cost] = []
    for site, jobs in groups.items():
        stages = [s for j in jobs for s in j.stages]
        costs.append(Cost(phase, site, "Spark jobs",
                          union_seconds([(max(j.start, phase.start), min(j.end, phase.end)) for j in jobs]),
                          len(jobs), len(stages), sum(s.metrics.get("task_s", 0) for s in stages),
                          sum(s.metrics.get("gc_s", 0) for s in stages),
                          sum(s.metrics.get("python_exec_s", 0) for s in stages)))
    intervals = phase.job_intervals
    outside = [s for s in phase.samples if not covered(s.t, intervals)]
    driver_s = max(0.0, phase.seconds - union_seconds(intervals))
    counts = Counter((s.site, s.where) for s in outside)
    total = sum(counts.values())
    for (site, where), n in counts.items():
        costs.append(Cost(phase, site, f"driver: {where}", driver_s * n / total))
    if not total and driver_s > sample_s:
        costs.append(Cost(phase, "(no sample)", "driver", driver_s))
    return sorted(costs, key=lambda c: -c.seconds)


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f} %" if whole > 0 else "–"


def phase_table(phases: list[Phase]) -> list[str]:
    rows = ["| data | phase | wall s | in Spark jobs s | driver: JVM s | driver: Python s | jobs | stages | "
            "task s | GC s | Delta commits |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in phases:
        in_jobs = union_seconds(p.job_intervals)
        outside = [s for s in p.samples if not covered(s.t, p.job_intervals)]
        driver = max(0.0, p.seconds - in_jobs)
        jvm = sum(1 for s in outside if s.where == "JVM")
        share = (jvm / len(outside)) if outside else 0.0
        stages = [s for j in p.jobs for s in j.stages]
        rows.append(f"| {p.dataset} | {p.name} | {p.seconds:.1f} | {in_jobs:.1f} ({pct(in_jobs, p.seconds)}) | "
                    f"{driver * share:.1f} | {driver * (1 - share):.1f} | {len(p.jobs)} | {len(stages)} | "
                    f"{sum(s.metrics.get('task_s', 0) for s in stages):.1f} | "
                    f"{sum(s.metrics.get('gc_s', 0) for s in stages):.1f} | {len(p.commits)} |")
    return rows


def breakdown_table(phases: list[Phase], sample_s: float, top: int) -> list[str]:
    rows = ["| data | phase | what (project line → io helper) | kind | s | % of phase | jobs / stages | task s | "
            "Python-worker s |", "|---|---|---|---|---|---|---|---|---|"]
    for p in phases:
        costs = phase_costs(p, sample_s)
        for c in costs[:top]:
            rows.append(f"| {p.dataset} | {p.name} | `{short(c.what)}` | {c.kind} | {c.seconds:.1f} | "
                        f"{pct(c.seconds, p.seconds)} | " + (f"{c.jobs} / {c.stages} | {c.task_s:.1f} | "
                                                           f"{c.python_s:.1f} |" if c.jobs else "– | – | – |"))
        rest = sum(c.seconds for c in costs[top:])
        if rest:
            rows.append(f"| {p.dataset} | {p.name} | {len(costs) - top} more | | {rest:.1f} | "
                        f"{pct(rest, p.seconds)} | | | |")
    return rows


def ranked(phases: list[Phase], sample_s: float, top: int) -> list[str]:
    """The biggest single costs over every profiled phase, largest first."""
    costs = sorted((c for p in phases for c in phase_costs(p, sample_s)), key=lambda c: -c.seconds)
    total = sum(p.seconds for p in phases)
    lines = []
    for n, c in enumerate(costs[:top], 1):
        lines.append(f"{n}. {c.seconds:.1f} s ({pct(c.seconds, c.phase.seconds)} of {c.phase.label}, "
                     f"{pct(c.seconds, total)} of all profiled phases): {c.kind}, `{short(c.what)}`")
    return lines


def commit_table(phases: list[Phase]) -> list[str]:
    """Commits per phase and operation; 'gap' = commit-file time minus the end of the last Spark job
    before it, an upper bound on the driver-side commit work (conflict check, log write)."""
    rows = ["| data | phase | operation | commits | tables | median gap s | sum gap s | executionTimeMs sum s |",
            "|---|---|---|---|---|---|---|---|"]
    for p in phases:
        ends = sorted(min(j.end, p.end) for j in p.jobs)
        by_op: dict[str, list[Commit]] = defaultdict(list)
        for c in p.commits:
            by_op[c.operation].append(c)
        for op, commits in sorted(by_op.items(), key=lambda kv: -len(kv[1])):
            gaps = [c.written_at - max([e for e in ends if e <= c.written_at] or [p.start]) for c in commits]
            exec_s = sum(c.execution_ms or 0 for c in commits) / 1000
            gaps.sort()
            rows.append(f"| {p.dataset} | {p.name} | {op} | {len(commits)} | {len({c.table for c in commits})} | "
                        f"{gaps[len(gaps) // 2]:.2f} | {sum(gaps):.1f} | {exec_s:.1f} |")
    return rows


def python_table(phases: list[Phase]) -> list[str]:
    """Python-worker metrics of the ingest stages that ran Python (the two ``mapInPandas``)."""
    rows = ["| data | phase | from | stages | stage wall s | task s | Python code s | Python workers run s | "
            "worker init s | rows in |", "|---|---|---|---|---|---|---|---|---|---|"]
    for p in phases:
        if not p.name.startswith("ingest"):
            continue
        groups: dict[str, list[Stage]] = defaultdict(list)
        for job in p.jobs:
            for s in job.stages:
                if s.metrics.get("python_run_s") or s.metrics.get("python_exec_s"):
                    groups[job.site].append(s)
        for site, stages in groups.items():
            m = lambda k: sum(s.metrics.get(k, 0) for s in stages)  # noqa: E731
            rows.append(f"| {p.dataset} | {p.name} | `{short(site)}` | {len(stages)} | "
                        f"{union_seconds([(s.start, s.end) for s in stages]):.1f} | {m('task_s'):.1f} | "
                        f"{m('python_exec_s'):.1f} | {m('python_run_s'):.1f} | "
                        f"{m('python_init_s') + m('python_start_s'):.1f} | {m('records_in'):,.0f} |")
    return rows


def profile_lines(profiles: dict[str, tuple[float, pstats.Stats | None]], top: int) -> list[str]:
    lines: list[str] = []
    for dataset, (seconds, stats) in profiles.items():
        if stats is None:
            lines.append(f"- {dataset}: the UDF profiler returned no result.")
            continue
        entries = stats.stats  # type: ignore[attr-defined]  # {(file, line, func): (cc, nc, tt, ct, callers)}
        total = sum(v[2] for v in entries.values())
        lines += ["", f"{dataset}: profiled re-run {seconds:.1f} s wall, {total:.1f} s of Python in the UDF "
                  "(cProfile's own overhead included: shares, not seconds, are the finding).", "",
                  "| function | own s | own % | cumulative s |", "|---|---|---|---|"]
        for (path, line, func), (_, calls, own, cum, _) in sorted(entries.items(), key=lambda kv: -kv[1][2])[:top]:
            where = path.replace(str(REPO) + os.sep, "")
            where = where.split("site-packages/")[-1] if "site-packages/" in where else where
            lines.append(f"| `{where}:{line} {func}` | {own:.1f} | {pct(own, total)} | {cum:.1f} |")
    return lines


def load_lines(load: LoadFigure | None, phases: list[Phase]) -> list[str]:
    if load is None:
        return []
    agg = next((p.result for p in phases if p.dataset.startswith("SYNTHETIC") and p.name == "aggregate (+1 day)"), {})
    ref = next((p.result for p in phases if p.dataset.startswith("SYNTHETIC") and p.name == "refresh (+1 day)"), {})
    return [
        f"Realistic load (SYNTHETIC drift simulator, lognormal user activity, Zipf item popularity, sessions in "
        f"visits): the held-back day {load.day} carries {load.day_events:,} of {load.events:,} events "
        f"({pct(load.day_events, load.events)}) and touches {load.day_users:,} of {load.users:,} users "
        f"({100 * load.day_users / load.users:.1f} %); the median day of the set: {load.median_day_events:,.0f} events, "
        f"{load.median_day_users:,.0f} users ({100 * load.median_day_users / load.users:.1f} %). The incremental "
        f"aggregate recomputed {agg.get('dirty_users', '?')} dirty users ({agg.get('mode', '?')}), the refresh "
        f"{ref.get('dirty_users', '?')} ({ref.get('mode', '?')}).",
    ]


def report(phases: list[Phase], load: LoadFigure | None, profiles: dict[str, tuple[float, pstats.Stats | None]],
           args: argparse.Namespace, startup_s: float) -> str:
    sample_s = args.sample_ms / 1000
    broken_down = [p for p in phases if p.name.split(" ")[0] in PROFILED_PHASES]
    return "\n".join([
        "## Profile: where the time of ingest, aggregate and refresh goes (`bench/stage_profile.py`)",
        "",
        f"Run {stamp()} on {machine()}; Spark `local[2]`, one session ({startup_s:.1f} s to start), every step "
        "through the product's task functions. Sources, joined on the wall clock: the Spark event log (jobs, "
        "stages, task metrics and the Python-worker metrics of `mapInPandas`), a sampler of the driver's main "
        f"thread every {args.sample_ms} ms (which project line runs, and whether it waits on the JVM or runs "
        "Python), and the `_delta_log` commits each phase adds. A Spark job is named by the project line that "
        "ran it (stage names of DataFrame writes say only `save at NativeMethodAccessorImpl.java:0`). 'driver' "
        "is wall time outside every Spark job: JVM = the driver thread waits in a JVM call that runs no job "
        "(Delta log replay and commit, query planning), Python = pandas, torch, landing scan. encode and train "
        "are only timed (train with "
        f"`epochs={args.train_epochs}`: the refresh needs a `@champion`, not a good one). The SYNTHETIC set is "
        "made up by the drift simulator (`uig_tasks.synthetic.generate_drift`) over the real MovieLens catalog.",
        "",
        *load_lines(load, phases),
        "",
        "### Wall time per phase",
        "",
        *phase_table(phases),
        "",
        "### Where the time goes (largest single costs over the ingest, aggregate and refresh phases)",
        "",
        *ranked(broken_down, sample_s, args.top),
        "",
        f"### Inside each phase (top {args.breakdown} costs)",
        "",
        *breakdown_table(broken_down, sample_s, args.breakdown),
        "",
        "### Delta commits",
        "",
        "Gap = commit-file time minus the end of the last Spark job before it: an upper bound on the "
        "driver-side commit (snapshot update, conflict check, log write). `executionTimeMs` is Delta's own "
        "figure where the operation reports it (MERGE).",
        "",
        *commit_table(broken_down),
        "",
        "### Python in the ingest's `mapInPandas`",
        "",
        "Stage metrics of the stages that ran Python workers (task-seconds summed over tasks, two run at once):",
        "",
        *python_table(broken_down),
        *profile_lines(profiles, args.top_functions),
    ])


# --- main -----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-movielens", action="store_true", help="skip MovieLens-100k")
    parser.add_argument("--synthetic-users", type=int, default=15_000,
                        help="users of the SYNTHETIC drift set, ~40 events each (0 skips it)")
    parser.add_argument("--synthetic-days", type=int, default=60)
    parser.add_argument("--train-epochs", type=int, default=2, help="epochs of the GCN the refresh uses")
    parser.add_argument("--sample-ms", type=int, default=20, help="driver stack sampling interval")
    parser.add_argument("--top", type=int, default=10, help="entries of the ranked list")
    parser.add_argument("--breakdown", type=int, default=5, help="costs shown per phase")
    parser.add_argument("--top-functions", type=int, default=8, help="functions shown from the UDF profile")
    parser.add_argument("--no-write", action="store_true", help="print the section, leave RESULTS.md alone")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="uig-bench-profile-"))
    events_dir = work / "eventlog"
    events_dir.mkdir()
    enable_event_log(events_dir)
    from spark_jobs.io import get_spark

    phases: list[Phase] = []
    profiles: dict[str, tuple[float, pstats.Stats | None]] = {}
    load: LoadFigure | None = None
    spark = None
    try:
        with StackSampler(args.sample_ms / 1000) as sampler:
            t0 = time.perf_counter()
            spark = get_spark(UigConfig.from_env(data_root=work / "spark").spark, "uig-bench-profile")
            startup_s = time.perf_counter() - t0
            rec = Recorder(spark)
            if not args.no_movielens:
                from uig_tasks.movielens import prepare, timeline

                config = UigConfig.from_env(data_root=work / "ml", user_salt="bench")
                last = timeline()[-1]
                run_dataset(rec, "ml-100k", config, lambda: prepare(config.landing_dir, until=last - timedelta(days=1)),
                            lambda: prepare(config.landing_dir, day=last),
                            parse_time(last - timedelta(days=1), end_of_day=True), parse_time(last, end_of_day=True),
                            args.train_epochs, profiles)
            if args.synthetic_users:
                load = run_synthetic(rec, work, args, profiles)
            spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)
        spark.stop()  # flushes and closes the event log
        spark = None
        phases = rec.phases
        attribute(phases, read_event_log(events_dir), sampler)
        markdown = report(phases, load, profiles, args, startup_s)
    finally:
        if spark is not None:
            spark.stop()
        for _ in range(3):  # the JVM may still be closing its event log when stop() returns
            shutil.rmtree(work, ignore_errors=True)
            if not work.exists():
                break
            time.sleep(1)
    print(markdown)
    if not args.no_write:
        write_section("profile", markdown)
        print("written to bench/RESULTS.md")
    return 0


def run_synthetic(rec: Recorder, work: Path, args: argparse.Namespace,
                  profiles: dict[str, tuple[float, pstats.Stats | None]]) -> LoadFigure:
    """The drift simulator's set, its last day held back and landed as the incremental day."""
    from uig_tasks.synthetic import generate_drift

    config = UigConfig.from_env(data_root=work / "synthetic", user_salt="bench")
    print(f"[SYNTHETIC] simulating {args.synthetic_users:,} users over {args.synthetic_days} days", flush=True)
    made = generate_drift(config.landing_dir, n_users=args.synthetic_users, n_days=args.synthetic_days, seed=0)
    days = day_folders(config.landing_dir)
    counts = [day_counts(d) for d in days]
    last, held = days[-1], work / "held-back-day"
    shutil.move(str(last), str(held))
    last_day = date.fromisoformat(last.name.removeprefix("date="))
    per_day_events = sorted(c[0] for c in counts)
    per_day_users = sorted(c[1] for c in counts)
    dataset = f"SYNTHETIC drift {int(made['events']) // 1000}k"
    run_dataset(rec, dataset, config, lambda: None, lambda: shutil.move(str(held), str(last)),
                parse_time(last_day - timedelta(days=1), end_of_day=True), parse_time(last_day, end_of_day=True),
                args.train_epochs, profiles)
    return LoadFigure(users=int(made["users"]), events=int(made["events"]), day=last_day.isoformat(),
                      day_events=counts[-1][0], day_users=counts[-1][1],
                      median_day_users=per_day_users[len(days) // 2], median_day_events=per_day_events[len(days) // 2])


if __name__ == "__main__":
    sys.exit(main())
