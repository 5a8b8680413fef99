"""Refresh cost against the number of dirty users, and `uig evaluate --rolling` on the same data root.

Sets up a data root once (all of MovieLens-100k ingested, aggregated, encoded, a trained
``@champion``, a first full refresh), then for each size ``n`` in 1, 10, 100 and every user:
lands one new real-looking event for ``n`` existing users (a re-rating of an item they rated, dated
on the last day), ingests and aggregates it (not timed), and times ``uig refresh``. Medians over
``--repeats``; the graph is the same size throughout, so any growth is the dirty users' cost.
Writes the ``refresh`` section of ``bench/RESULTS.md``.

    .venv/bin/python bench/refresh.py
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine, measured, median, stamp, write_section  # noqa: E402
from uig_tasks.config import UigConfig  # noqa: E402


def land_touches(config: UigConfig, raw_users: list[str], tag: str, when: datetime) -> None:
    """One ``rate`` event per user, for an item they rated before (so nothing else about them changes)."""
    from uig_tasks.movielens import event_file, timeline

    rated: dict[str, str] = {}
    for day in timeline():
        for line in event_file(config.landing_dir, day).read_text().splitlines():
            event = json.loads(line)
            rated.setdefault(str(event["user_id"]), str(event["item_id"]))
    path = config.landing_dir / "events" / f"bench-{tag}" / "touches.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"event_id": f"bench-{tag}-{u}", "user_id": u, "event_type": "rate", "item_id": rated[u], "rating": 4,
             "ts": when.isoformat(), "source": "bench"} for u in raw_users]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print the tables, leave RESULTS.md alone")
    args = parser.parse_args(argv)

    from uig_common import names as C
    from spark_jobs.io import get_spark, read_table
    from uig_tasks.encode import run_encode
    from uig_tasks.movielens import prepare, timeline
    from uig_tasks.pipeline import run_aggregate, run_ingest
    from uig_tasks.refresh import run_refresh
    from uig_common.timeutil import parse_time
    from uig_tasks.train import evaluate_rolling, run_train

    work = Path(tempfile.mkdtemp(prefix="uig-bench-refresh-"))
    config = UigConfig.from_env(data_root=work / "data", user_salt="bench")
    last = parse_time(timeline()[-1], end_of_day=True)
    print("[setup] MovieLens-100k: land, ingest, aggregate, encode, train, full refresh", flush=True)
    prepare(config.landing_dir)
    run_ingest(config, last)
    run_aggregate(config, last)
    run_encode(config, last)
    trained = run_train(config, datetime.now(timezone.utc))
    with measured() as m:
        first = run_refresh(config, last)
    full_seconds = m.seconds
    spark = get_spark(config.spark)
    edges = read_table(spark, config.lake, C.GOLD_INTEREST_EDGES).count()
    n_users = first["dirty_users"]
    print(f"  full refresh of {n_users} users: {m.seconds:.1f}s, {edges} edges", flush=True)

    raw_ids = [str(u) for u in range(1, n_users + 1)]
    sizes = [1, 10, 100, n_users]
    seconds: dict[int, list[float]] = {n: [] for n in sizes}
    peaks: dict[int, list[float]] = {n: [] for n in sizes}
    step = 0
    for rep in range(args.repeats):
        for n in sizes:
            step += 1
            when = last + timedelta(minutes=step)  # later than every earlier touch: each run is new behaviour
            land_touches(config, raw_ids[:n], f"{rep}-{n}", when)
            run_ingest(config, when)
            run_aggregate(config, when)
            with measured() as m:
                result = run_refresh(config, when)
            assert result["mode"] == "incremental" and result["dirty_users"] == n, result
            seconds[n].append(m.seconds)
            peaks[n].append(m.peak_rss_mb)
            print(f"  repeat {rep + 1}: {n} dirty users -> {m.seconds:.1f}s", flush=True)
        with measured() as m:
            noop = run_refresh(config, when)
        assert noop["mode"] == "noop"
        print(f"  repeat {rep + 1}: no dirty user -> {m.seconds:.1f}s (noop)", flush=True)
        seconds.setdefault(0, []).append(m.seconds)
        peaks.setdefault(0, []).append(m.peak_rss_mb)

    print("[rolling] evaluation of the refresh loop over the test window", flush=True)
    rolling = evaluate_rolling(config, trained["snapshot"]["path"], step="1d",
                               models=[C.GCN_MODEL, "decayed-popularity", "recency-item-knn"])
    shutil.rmtree(work, ignore_errors=True)

    base = median(seconds[1])
    lines = ["| dirty users | median s | vs 1 dirty user | peak RSS MB | runs |", "|---|---|---|---|---|"]
    for n in [0, *sizes]:
        label = "0 (no-op)" if n == 0 else (f"{n} (all)" if n == n_users else str(n))
        lines.append(f"| {label} | {median(seconds[n]):.1f} | {median(seconds[n]) / base:.2f}× | "
                     f"{max(peaks[n]):,.0f} | {len(seconds[n])} |")
    roll = ["| model | fresh NDCG@10 | stale NDCG@10 | fresh Recall@20 | stale Recall@20 | user-steps |",
            "|---|---|---|---|---|---|"]
    for name, r in rolling["models"].items():
        roll.append(f"| {name} | {r['fresh']['ndcg@10']:.4f} | {r['stale']['ndcg@10']:.4f} | {r['fresh']['recall@20']:.4f} "
                    f"| {r['stale']['recall@20']:.4f} | {int(r['fresh']['user_steps'])} |")
    md = "\n".join([
        "## Refresh (`bench/refresh.py`)",
        "",
        f"Run {stamp()} on {machine()}; Spark `local[2]`. MovieLens-100k fully ingested, `@champion` trained with the "
        f"defaults; the first (full) refresh of all {n_users} users took {full_seconds:.1f}s and the graph holds "
        f"{edges:,} edges. Each case lands one re-rating per "
        "dirty user (ingest + aggregate not timed) and times `uig refresh` alone; medians over the runs.",
        "",
        *lines,
        "",
        "### `uig evaluate --rolling --step 1d` on this data root",
        "",
        "The registered `@champion` through the product's own path (snapshot → registry → rolling protocol, "
        "`models/rolling.py`): fresh = history up to each day, stale = frozen at the test start; the full "
        "comparison with every baseline and step is the `freshness` section.",
        "",
        *roll,
    ])
    print(md)
    if not args.no_write:
        write_section("refresh", md)
        print("written to bench/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
