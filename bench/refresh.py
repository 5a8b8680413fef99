"""Refresh cost against the number of dirty users: a cold refresh against a warm refresher.

Two data roots:

* **MovieLens-100k** (real): all of it ingested, aggregated, encoded, a trained ``@champion``, a
  first full refresh. For each size ``n`` in 0, 1, 10, 100 and every user it lands one new
  real-looking event for ``n`` existing users (a re-rating of an item they rated, dated after
  everything else), ingests and aggregates it (not timed), and times the refresh three ways:
  the ``uig refresh`` command in a new process (JVM start, imports, model load: what a cron job
  pays), :func:`uig_tasks.refresh.run_refresh` in this process (a new refresher: model and catalog
  load, Spark already up) and one :class:`uig_tasks.refresh.Refresher` (``keep_warm``) kept across
  every run (what ``uig refresh --watch`` and a warm worker pay; its runs come one after another,
  after an untimed refresh of its own, as a worker that is the edges' only writer). Every case
  gets its own landing, so each refresh sees exactly ``n`` dirty users.
* **SYNTHETIC scale** (the drift simulator over the real catalog, ``--scale-users`` users): the
  warm refresher's full refresh of every user, then increments that dirty ``n`` users for ``n``
  up to every user.

Medians over ``--repeats``; peak RSS of the whole process tree. The MovieLens root writes the
``refresh`` section of ``bench/RESULTS.md`` and ``bench/refresh.png``, the SYNTHETIC root the
``refresh-scale`` section and ``bench/refresh_scale.png`` (seconds against dirty users); either
can be run alone.

    .venv/bin/python bench/refresh.py                          # ml-100k ×3, 50,000 synthetic users
    .venv/bin/python bench/refresh.py --scale-users 0          # ml-100k only
    .venv/bin/python bench/refresh.py --repeats 0              # the 50,000-user SYNTHETIC root only
    .venv/bin/python bench/refresh.py --repeats 1 --scale-users 2000   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine, measured, median, save_figure, stamp, write_section  # noqa: E402
from uig_tasks.config import UigConfig  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PLOT = Path(__file__).resolve().parent / "refresh.png"
SCALE_PLOT = Path(__file__).resolve().parent / "refresh_scale.png"
SALT = "bench"
#: The small model the SYNTHETIC scale root trains: the refresh's cost does not depend on its quality.
SCALE_TRAINING = {"epochs": 1, "dim": 32, "patience": 1}


@dataclass
class Case:
    """Timings of one way of refreshing, by number of dirty users."""

    name: str
    seconds: dict[int, list[float]] = field(default_factory=dict)
    peaks: dict[int, list[float]] = field(default_factory=dict)
    edges: dict[int, int] = field(default_factory=dict)
    steps: dict[int, list[dict[str, float]]] = field(default_factory=dict)  # the refresh's own seconds_by_step

    def add(self, n: int, seconds: float, peak_mb: float, edges: int = 0, steps: dict | None = None) -> None:
        self.seconds.setdefault(n, []).append(seconds)
        self.peaks.setdefault(n, []).append(peak_mb)
        self.edges[n] = edges
        if steps:
            self.steps.setdefault(n, []).append(steps)

    def median(self, n: int) -> float:
        return median(self.seconds[n])


def land_touches(config: UigConfig, rated: dict[str, str], raw_users: list[str], tag: str, when: datetime) -> None:
    """One ``rate`` event per user, for an item they interacted with before (so nothing else about them changes)."""
    path = config.landing_dir / "events" / f"bench-{tag}" / "touches.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"event_id": f"bench-{tag}-{u}", "user_id": u, "event_type": "rate", "item_id": rated[u], "rating": 4,
             "ts": when.isoformat(), "source": "bench"} for u in raw_users]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def first_items(config: UigConfig) -> dict[str, str]:
    """Each landed user's first item (raw ids): what a touch re-rates."""
    rated: dict[str, str] = {}
    for path in sorted((config.landing_dir / "events").glob("*/*.jsonl")):
        for line in path.read_text().splitlines():
            event = json.loads(line)
            rated.setdefault(str(event["user_id"]), str(event["item_id"]))
    return rated


def cli_refresh(config: UigConfig) -> dict:
    """``uig refresh`` in a new process, as a scheduler would start it."""
    env = {**os.environ, "UIG_USER_SALT": SALT}
    out = subprocess.run([sys.executable, "-m", "uig_tasks.cli", "--data-root", str(config.data_root), "--json",
                          "refresh"], cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def ready_root(config: UigConfig, land: Callable[[], None], training: dict | None, facts: dict | None = None) -> datetime:
    """Land, ingest, aggregate, encode and train a data root; returns the last aggregate's time
    (``facts`` gets the seconds of ingest + aggregate and of training)."""
    from uig_tasks.encode import run_encode
    from uig_tasks.pipeline import run_aggregate, run_ingest
    from uig_tasks.train import run_train

    land()
    days = sorted(p.name.removeprefix("date=") for p in (config.landing_dir / "events").glob("date=*"))
    last = datetime.fromisoformat(days[-1]).replace(tzinfo=timezone.utc) + timedelta(days=1, seconds=-1)
    with measured() as m:
        run_ingest(config, last)
        run_aggregate(config, last)
    print(f"  ingest + aggregate {m.seconds:.0f}s (peak RSS {m.peak_rss_mb:,.0f} MB)", flush=True)
    if facts is not None:
        facts.update(ingest_aggregate_seconds=m.seconds, ingest_aggregate_peak_mb=m.peak_rss_mb)
    run_encode(config, last)
    with measured() as m:
        run_train(config, datetime.now(timezone.utc), training)
    print(f"  train {m.seconds:.0f}s", flush=True)
    if facts is not None:
        facts.update(train_seconds=m.seconds)
    return last


def touch_and_time(config: UigConfig, rated: dict[str, str], users: list[str], tag: str, when: datetime,
                   refresh: Callable[[], dict], case: Case) -> None:
    """Land a touch for ``users``, ingest + aggregate it (not timed), then time ``refresh``."""
    from uig_tasks.pipeline import run_aggregate, run_ingest

    land_touches(config, rated, users, tag, when)
    run_ingest(config, when)
    run_aggregate(config, when)
    with measured() as m:
        result = refresh()
    assert result["dirty_users"] == len(users) and result["mode"] in {"incremental", "noop"}, result
    case.add(len(users), m.seconds, m.peak_rss_mb, int(result["edges_written"]), result.get("seconds_by_step"))
    print(f"  {case.name}: {len(users)} dirty users -> {m.seconds:.2f}s", flush=True)


#: Runs of each Delta operation :func:`delta_floor` times, and how many of them first warm up.
FLOOR_RUNS, FLOOR_WARMUP = 7, 2


def delta_floor(config: UigConfig, runs: int = FLOOR_RUNS) -> dict[str, float]:
    """Median seconds, in this process, of the Delta operations a refresh cannot do without, on
    scratch tables of the same root: collecting a 3-row table (each of the refresh's reads is at
    least one such job), appending 30 rows (the history), and replacing one user's 30 rows with a
    ``replaceWhere`` on a table with deletion vectors (the edge commit). The first
    :data:`FLOOR_WARMUP` runs warm up."""
    from spark_jobs import io
    from spark_jobs.schemas import TABLE_SCHEMAS
    from spark_jobs.settings import Lake
    from uig_common import names as C

    spark, lake = io.get_spark(config.spark), Lake(config.data_root / "bench-floor")
    edges, history = C.GOLD_INTEREST_EDGES, C.GOLD_INTEREST_HISTORY  # the contract schemas, scratch tables
    when = datetime(2020, 1, 1)

    def rows(user: str, n: int = 30):
        edge = [(user, "item", f"i{k}", "t", 0.5, k, "why", "active", None, "1", "p", "rebuild", "r", when, when)
                for k in range(n)]
        return spark.createDataFrame(edge, TABLE_SCHEMAS[edges])

    io.overwrite(spark, lake, edges, rows("u0", 3))
    seconds: dict[str, list[float]] = {"collect a 3-row table": [], "append 30 rows": [],
                                       "replace one user's 30 rows (replaceWhere, deletion vectors)": []}
    for i in range(runs):
        with measured() as m:
            io.read_table(spark, lake, edges).collect()
        seconds["collect a 3-row table"].append(m.seconds)
        with measured() as m:
            io.append(spark, lake, history, rows(f"u{i}").select(*TABLE_SCHEMAS[history].fieldNames()))
        seconds["append 30 rows"].append(m.seconds)
        with measured() as m:
            io.replace_groups(spark, lake, edges, rows("u0"), C.USER_KEY, ["u0"])
        seconds["replace one user's 30 rows (replaceWhere, deletion vectors)"].append(m.seconds)
    return {name: median(values[FLOOR_WARMUP:]) for name, values in seconds.items()}


def movielens_cases(repeats: int) -> tuple[list[Case], dict]:
    from spark_jobs.io import get_spark, read_table
    from uig_common import names as C
    from uig_tasks.movielens import prepare
    from uig_tasks.pipeline import run_aggregate, run_ingest
    from spark_jobs import refresh_job
    from uig_tasks.refresh import Refresher, run_refresh

    work = Path(tempfile.mkdtemp(prefix="uig-bench-refresh-"))
    warm: Refresher | None = None
    try:
        config = UigConfig.from_env(data_root=work / "data", user_salt=SALT)
        print("[ml-100k] land, ingest, aggregate, encode, train (defaults)", flush=True)
        last = ready_root(config, lambda: prepare(config.landing_dir), None)
        warm = Refresher(config, keep_warm=True)
        with measured() as m:
            first = warm.refresh(last)
        n_users = int(first["dirty_users"])
        edges = read_table(get_spark(config.spark), config.lake, C.GOLD_INTEREST_EDGES).count()
        print(f"  full refresh of {n_users} users: {m.seconds:.1f}s, {edges} edges", flush=True)
        facts = {"users": n_users, "edges": edges, "full_seconds": m.seconds}
        rated = first_items(config)
        raw_ids = sorted(rated, key=lambda u: int(u))
        sizes = [1, 10, 100, n_users]
        cases = [Case("uig refresh (new process)"), Case("run_refresh (new refresher)"), Case("warm Refresher")]
        ways: list[Callable[[], dict]] = [lambda: cli_refresh(config), lambda: run_refresh(config), warm.refresh]
        step = 0

        def touch(rep: int, users: list[str]) -> tuple[str, datetime]:
            """A landing tag and time for a touch of ``users``, later than every earlier touch."""
            nonlocal step
            step += 1
            return f"{rep}-{len(users)}-{step}", last + timedelta(minutes=step)

        for rep in range(repeats):
            for case, way in zip(cases, ways):
                if case is cases[-1]:
                    # a warm worker is the only writer of the edges: the cases before wrote them too,
                    # so it first refreshes one touch of its own (not timed), as it would have
                    tag, when = touch(rep, raw_ids[:1])
                    land_touches(config, rated, raw_ids[:1], tag, when)
                    run_ingest(config, when)
                    run_aggregate(config, when)
                    warm.refresh()
                for n in sizes:
                    if n > 10 and case is cases[0]:
                        continue  # the new process adds a fixed start-up cost: its small sizes show it
                    tag, when = touch(rep, raw_ids[:n])
                    touch_and_time(config, rated, raw_ids[:n], tag, when, way, case)
            warm.close()  # its background warm-up of the last write must not run beside the no-op cases
            for case, way in zip(cases[1:], ways[1:]):
                with measured() as m:
                    assert way()["mode"] == "noop"
                case.add(0, m.seconds, m.peak_rss_mb)
        facts["model_loads"], facts["compactions"], facts["checkpoints"] = (
            warm.model_loads, warm.compactions, warm.checkpoints)
        facts["compact_after"] = refresh_job.COMPACT_AFTER_COMMITS
        facts["checkpoint_after"] = refresh_job.CHECKPOINT_AFTER_COMMITS
        facts["floor"] = delta_floor(config)
        return cases, facts
    finally:
        if warm is not None:
            warm.close()
        shutil.rmtree(work, ignore_errors=True)


#: The SYNTHETIC sizes up to this many dirty users run ``--scale-repeats`` times; larger ones once.
SCALE_REPEATED_UP_TO = 1_000


def scale_cases(n_users: int, n_days: int, repeats: int = 1) -> tuple[list[Case], dict]:
    from uig_tasks.refresh import Refresher
    from uig_tasks.synthetic import generate_drift

    work = Path(tempfile.mkdtemp(prefix="uig-bench-refresh-scale-"))
    warm: Refresher | None = None
    try:
        config = UigConfig.from_env(data_root=work / "data", user_salt=SALT)
        print(f"[SYNTHETIC] drift simulator, {n_users:,} users over {n_days} days: land, ingest, aggregate, "
              f"encode, train {SCALE_TRAINING}", flush=True)
        facts: dict = {}
        last = ready_root(config, lambda: facts.update(generate_drift(config.landing_dir, n_users=n_users,
                                                                       n_days=n_days, seed=0)),
                          SCALE_TRAINING, facts)
        warm = Refresher(config, keep_warm=True)
        case = Case("warm Refresher, SYNTHETIC")
        with measured() as m:
            first = warm.refresh(last)
        users = int(first["dirty_users"])
        case.add(users, m.seconds, m.peak_rss_mb, int(first["edges_written"]))
        print(f"  full refresh of {users:,} users: {m.seconds:.1f}s, {first['edges_written']:,} edges", flush=True)
        facts.update(users=users, full_seconds=m.seconds, full_edges=int(first["edges_written"]))
        rated = first_items(config)
        raw_ids = sorted(rated)
        sizes = sorted({1, 1_000, 10_000, users} & set(range(1, users + 1)))
        runs = [(n, run) for n in sizes for run in range(repeats if n <= SCALE_REPEATED_UP_TO else 1)]
        for step, (n, run) in enumerate(runs, start=1):
            touch_and_time(config, rated, raw_ids[:n], f"scale-{n}-{run}", last + timedelta(minutes=step),
                           warm.refresh, case)
        return [case], facts
    finally:
        if warm is not None:
            warm.close()
        shutil.rmtree(work, ignore_errors=True)


def plot(cases: list[Case], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for case in cases:
        sizes = sorted(n for n in case.seconds if n > 0)
        ax.plot(sizes, [case.median(n) for n in sizes], marker="o", label=case.name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("dirty users")
    ax.set_ylabel("refresh seconds (median)")
    ax.set_title("Refresh cost against dirty users (2 cores, local[2])")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path, dpi=110)


def table(cases: list[Case], baseline: Case | None, users: int) -> list[str]:
    """Medians by dirty users; with a ``baseline``, the warm (last) case's ratio to it in the same run."""
    ratio_head = f" warm vs {baseline.name} |" if baseline is not None else ""
    lines = ["| dirty users | " + " | ".join(f"{c.name} median s" for c in cases)
             + f" |{ratio_head} warm peak RSS MB | edges written | runs |",
             "|---" * (len(cases) + 4 + (baseline is not None)) + "|"]
    warm = cases[-1]
    for n in sorted(warm.seconds):
        label = "0 (no-op)" if n == 0 else (f"{n:,} (all)" if n == users else f"{n:,}")
        cells = [f"{c.median(n):.2f}" if n in c.seconds else "–" for c in cases]
        ratio = ""
        if baseline is not None:
            ratio = f" {warm.median(n) / baseline.median(n):.2f}× |" if n in baseline.seconds else " – |"
        lines.append(f"| {label} | {' | '.join(cells)} |{ratio} {max(warm.peaks[n]):,.0f} | "
                     f"{warm.edges.get(n, 0):,} | {len(warm.seconds[n])} |")
    return lines


def step_table(case: Case) -> list[str]:
    """Median seconds of each step of ``case``'s refreshes (from the refresh's ``seconds_by_step``)."""
    names = list(dict.fromkeys(name for runs in case.steps.values() for run in runs for name in run))
    lines = ["| dirty users | " + " | ".join(names) + " | total |", "|---" * (len(names) + 2) + "|"]
    for n in sorted(case.steps):
        cells = [f"{median([run.get(name, 0.0) for run in case.steps[n]]):.2f}" for name in names]
        lines.append(f"| {n:,} | {' | '.join(cells)} | {case.median(n):.2f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each MovieLens case (median; 0: skip it)")
    parser.add_argument("--scale-users", type=int, default=50_000,
                        help="users of the SYNTHETIC scale root (0: skip it); default 50,000")
    parser.add_argument("--scale-days", type=int, default=14, help="days of the SYNTHETIC scale root")
    parser.add_argument("--scale-repeats", type=int, default=3,
                        help=f"runs of each SYNTHETIC size up to {SCALE_REPEATED_UP_TO:,} dirty users (median); "
                             "larger sizes run once")
    parser.add_argument("--no-write", action="store_true", help="print the tables, leave RESULTS.md alone")
    args = parser.parse_args(argv)
    if not (args.repeats or args.scale_users):
        parser.error("nothing to run: give --repeats or --scale-users above 0")
    if args.repeats:
        ml, ml_facts = movielens_cases(args.repeats)
        plot(ml, PLOT)
        publish("refresh", movielens_section(ml, ml_facts), PLOT, args.no_write)
    if args.scale_users:
        scale, scale_facts = scale_cases(args.scale_users, args.scale_days, max(1, args.scale_repeats))
        plot(scale, SCALE_PLOT)
        publish("refresh-scale", scale_section(scale, scale_facts, args.scale_days), SCALE_PLOT, args.no_write)
    return 0


def publish(section: str, md: list[str], plot_path: Path, no_write: bool) -> None:
    text = "\n".join([*md, "", f"![refresh seconds against dirty users]({plot_path.name})"])
    print(text)
    if not no_write:
        write_section(section, text)
        print("written to bench/RESULTS.md and", plot_path)


def movielens_section(ml: list[Case], ml_facts: dict) -> list[str]:
    return [
        "## Refresh (`bench/refresh.py`)",
        "",
        f"Run {stamp()} on {machine()}; Spark `local[2]`.",
        "",
        f"**MovieLens-100k**: fully ingested, `@champion` trained with the defaults; the warm refresher's first (full) "
        f"refresh of all {ml_facts['users']} users took {ml_facts['full_seconds']:.1f}s and the graph holds "
        f"{ml_facts['edges']:,} edges. Each case lands one re-rating per dirty user (ingest + aggregate not timed) "
        "and times the refresh alone. *uig refresh (new process)*: the command as a scheduler starts it (Python "
        "imports, JVM start, model load); *run_refresh (new refresher)*: in this process, Spark already up, models "
        "and catalog loaded per call; *warm Refresher*: one `uig_tasks.refresh.Refresher(keep_warm=True)` across "
        f"every run, as `uig refresh --watch` keeps it (it loaded the models {ml_facts['model_loads']} time(s) in "
        "all; after each write, in a background thread while the next batch is ingested, it compacts the edge "
        f"table by user key once {ml_facts['compact_after']} commits came after its last rewrite (it did "
        f"{ml_facts['compactions']} time(s); a refresher not kept warm does it inside its refresh), writes the "
        f"Delta checkpoints of the edge and history tables once {ml_facts['checkpoint_after']} commits came after the last one (it wrote "
        f"{ml_facts['checkpoints']}; Delta itself would write them inside every tenth commit) and reads the "
        "edge table's new Delta state; the next refresh waits for that thread if it still runs). Medians over the runs.",
        "",
        *table(ml, ml[1], ml_facts["users"]),
        "",
        "Where the warm refresher's seconds go (medians of its own `seconds_by_step`): *progress and models* reads "
        "the aggregate's watermark (from the note of the commit that wrote it) and the last refresh's mark (each "
        "reused while its table is unchanged), checks "
        "the history recorded that refresh, and checks the `@champion` aliases; *read dirty users* finds the users with new batches "
        "(named in the aggregate's watermark note, else queried from `silver.events`) and reads their affinities; *decide and score* is the update policy and the GCN; "
        "*write* is the edge commit (the dirty users' rows replaced; its note is the refresh's progress mark) and "
        "the history append (two Delta commits).",
        "",
        *step_table(ml[-1]),
        "",
        "The floor of those steps on this machine, measured in the same process after the runs above (medians of "
        f"{FLOOR_RUNS - FLOOR_WARMUP}): " + "; ".join(f"{name} {value:.2f} s" for name, value in ml_facts["floor"].items()) + ". A refresh "
        "reads at least two tables with Spark (affinities, current edges; the new events too where the "
        "aggregate's note does not name their users) and makes those two "
        f"commits: about {floor_sum(ml_facts['floor']):.1f} s before any work (each read of a table at a new "
        "version also rebuilds its Delta state, as the collect above does).",
    ]


def floor_sum(floor: dict[str, float]) -> float:
    """Two reads, one append and one replace (:func:`delta_floor`'s names, in that order)."""
    read, append, replace = floor.values()
    return 2 * read + append + replace


def scale_section(scale: list[Case], facts: dict, days: int) -> list[str]:
    return [
        "## Refresh at scale (SYNTHETIC, `bench/refresh.py --repeats 0`)",
        "",
        f"Run {stamp()} on {machine()}; Spark `local[2]`.",
        "",
        f"The drift simulator (`uig_tasks.synthetic.generate_drift`, seed 0) with {facts['users']:,} SYNTHETIC users "
        f"over {days} days, {int(facts.get('events', 0)):,} events, on the real MovieLens catalog. Making the root: "
        f"ingest + aggregate {facts['ingest_aggregate_seconds']:.0f} s (peak RSS "
        f"{facts['ingest_aggregate_peak_mb']:,.0f} MB), train {facts['train_seconds']:.0f} s with {SCALE_TRAINING} "
        "(the refresh's cost does not depend on the model's quality). The warm refresher's full refresh is the row "
        "of every user; then each row lands one touch for that many users (ingest + aggregate not timed) and times "
        "the warm refresher's incremental refresh, each run on a later minute than the one before; medians "
        f"where a size ran more than once (sizes up to {SCALE_REPEATED_UP_TO:,} users; the runs column says how many).",
        "",
        *table(scale, None, facts["users"]),
        "",
        "Seconds by step of the same refreshes (the refresher's own `seconds_by_step`):",
        "",
        *step_table(scale[-1]),
    ]


if __name__ == "__main__":
    sys.exit(main())
