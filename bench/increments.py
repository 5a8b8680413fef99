"""Incremental ingest + aggregate against a rebuild: what 0.1 %, 1 % and 10 % new events cost.

Lands a SYNTHETIC base set (``uig_tasks.synthetic.generate``: Pareto user activity, Zipf item
popularity, each day's events in sessions of that day's active users, on the real MovieLens
catalog), ingests and aggregates it from scratch (the rebuild, timed), then lands each increment
as a new day of sessions of the same users on the same items and times ``ingest`` + ``aggregate``
of that increment alone. Increments land one after another on
the same root, each after the last. The table reports each increment's share of the users it
dirtied (a realistic day touches a few percent of users, not tens) and its cost as a share of the
rebuild measured in the same process. Writes its section of ``bench/RESULTS.md`` and a plot.

    .venv/bin/python bench/increments.py                            # 5M base events
    .venv/bin/python bench/increments.py --base-events 2000000      # smaller, ~25 min here
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine, measured, save_figure, stamp, synthetic_users, write_section  # noqa: E402
from uig_tasks.config import UigConfig  # noqa: E402
from uig_tasks.synthetic import SESSION_EVENTS  # noqa: E402

PLOT = Path(__file__).resolve().parent / "increments.png"


@dataclass
class Increment:
    fraction: float
    events: int
    seconds: float
    ingest_seconds: float
    peak_mb: float
    dirty_users: int
    mode: str


def run(base_events: int, days: int, fractions: list[float], work: Path) -> tuple[dict, list[Increment]]:
    from uig_common.timeutil import parse_time
    from uig_tasks.pipeline import run_aggregate, run_ingest
    from uig_tasks.synthetic import DEFAULT_START, generate

    root = work / "root"
    config = UigConfig.from_env(data_root=root, user_salt="bench")
    n_users = synthetic_users(base_events)
    print(f"[SYNTHETIC] landing {base_events:,} base events, {n_users:,} users, {days} days", flush=True)
    generate(config.landing_dir, n_events=base_events, n_users=n_users, n_days=days)
    last_day = (DEFAULT_START + timedelta(days=days - 1)).date()
    with measured() as m:
        ingested = run_ingest(config, parse_time(last_day, end_of_day=True))
        aggregated = run_aggregate(config, parse_time(last_day, end_of_day=True), full=True)
    rebuild = {"seconds": m.seconds, "peak_mb": m.peak_rss_mb, "events": int(ingested["n_raw"]),
               "users": int(aggregated["dirty_users"])}
    print(f"  rebuild (ingest + aggregate from scratch) {m.seconds:.1f}s, {rebuild['users']:,} users", flush=True)

    increments = []
    for step, fraction in enumerate(fractions, start=1):
        day = DEFAULT_START + timedelta(days=days - 1 + step)
        n = max(1, round(fraction * base_events))
        # a new seed draws new event ids from the same user and item ids (each user's activity redrawn);
        # the day's events come in sessions of about SESSION_EVENTS, so n / SESSION_EVENTS users are dirtied
        generate(config.landing_dir, n_events=n, n_users=n_users, n_days=1, seed=1000 + step, start=day)
        as_of = parse_time(day.date(), end_of_day=True)
        with measured() as m:
            with measured() as mi:
                ingested = run_ingest(config, as_of)
            aggregated = run_aggregate(config, as_of)
        assert int(ingested["n_raw"]) == n, ingested
        inc = Increment(fraction, n, m.seconds, mi.seconds, m.peak_rss_mb, int(aggregated["dirty_users"]),
                        str(aggregated["mode"]))
        increments.append(inc)
        print(f"  +{fraction:.1%} ({n:,} events, {inc.dirty_users:,} dirty users, {inc.mode}): {inc.seconds:.1f}s "
              f"= {inc.seconds / rebuild['seconds']:.1%} of the rebuild", flush=True)
    return rebuild, increments


def plot(rebuild: dict, increments: list[Increment], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    xs = [100 * i.fraction for i in increments]
    ax.plot(xs, [i.seconds for i in increments], marker="o", label="incremental ingest + aggregate")
    ax.plot(xs, [i.ingest_seconds for i in increments], marker=".", linestyle=":", label="of which ingest")
    ax.axhline(rebuild["seconds"], color="grey", linestyle="--", label=f"rebuild of {rebuild['events']:,} events")
    ax.axhline(0.15 * rebuild["seconds"], color="red", linestyle=":", label="15 % of the rebuild")
    ax.set_xscale("log")
    ax.set_xlabel("increment, % of the base events")
    ax.set_ylabel("seconds")
    ax.set_ylim(bottom=0)
    ax.set_title("Incremental cost against increment size (SYNTHETIC, 2 cores, local[2])")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path, dpi=110)


def section(rebuild: dict, increments: list[Increment], days: int, command: str) -> str:
    rows = [
        "| increment | new events | dirty users (share of users) | aggregate mode | ingest s | ingest + aggregate s "
        "| vs rebuild | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|",
        f"| rebuild (baseline) | {rebuild['events']:,} | {rebuild['users']:,} (100 %) | full | – | "
        f"{rebuild['seconds']:.1f} | 100 % | {rebuild['peak_mb']:,.0f} |",
    ]
    for i in increments:
        rows.append(
            f"| {i.fraction:.1%} | {i.events:,} | {i.dirty_users:,} ({i.dirty_users / rebuild['users']:.1%}) | {i.mode} "
            f"| {i.ingest_seconds:.1f} | {i.seconds:.1f} | {i.seconds / rebuild['seconds']:.1%} | {i.peak_mb:,.0f} |"
        )
    return "\n".join([
        "## Incremental cost against increment size (`bench/increments.py`)",
        "",
        f"Run {stamp()} on {machine()}; Spark `local[2]`, one process, one run each. `{command}`",
        "",
        f"A SYNTHETIC base set (`uig_tasks.synthetic.generate`: Pareto user activity, Zipf item popularity, "
        f"each day's events in sessions of about {SESSION_EVENTS} events of that day's active users, real MovieLens "
        f"catalog) of {rebuild['events']:,} events over {days} days is ingested and aggregated from "
        "scratch (the rebuild, the baseline of every ratio); then each increment lands as one more day of sessions "
        "of the same users on the same items, and its `ingest` + `aggregate` alone is timed. Increments land one after "
        "another on the same root, so each also finds the earlier ones in the tables; the rebuild does not include "
        "them (a rebuild that did would cost more, so each ratio is an upper bound).",
        "",
        *rows,
        "",
        "![incremental cost against increment size](increments.png)",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-events", type=int, default=5_000_000, help="SYNTHETIC events of the base set")
    parser.add_argument("--days", type=int, default=30, help="days the base set spans")
    parser.add_argument("--fractions", default="0.001,0.01,0.1",
                        help="increment sizes as fractions of the base, landed in this order (comma-separated)")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave RESULTS.md and the plot alone")
    args = parser.parse_args(argv)
    fractions = [float(f) for f in args.fractions.split(",")]
    if args.base_events <= 0 or args.days <= 0 or not all(0 < f <= 1 for f in fractions):
        parser.error("--base-events and --days must be positive and every fraction in (0, 1]")

    command = "python bench/increments.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    work = Path(tempfile.mkdtemp(prefix="uig-bench-increments-"))
    try:
        rebuild, increments = run(args.base_events, args.days, fractions, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    md = section(rebuild, increments, args.days, command)
    print(md)
    if not args.no_write:
        plot(rebuild, increments, PLOT)
        write_section("increments", md)
        print("written to bench/RESULTS.md and bench/increments.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
