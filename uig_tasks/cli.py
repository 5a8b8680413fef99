"""``uig`` — the command line of the user interest graph platform.

Every sub-command is a thin wrapper over a function in ``uig_tasks``; ``uig COMMAND --help``
says what it does. Global options come before the command: ``uig --data-root /srv/uig tables``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

from uig_tasks.config import ConfigError, UigConfig
from uig_tasks.timeutil import parse_time

log = logging.getLogger("uig")


def _print_table(rows: Sequence[dict[str, object]], columns: Sequence[str]) -> None:
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def _emit(args: argparse.Namespace, result: object, human: Callable[[], None] | None = None) -> None:
    if args.json or human is None:
        print(json.dumps(result, indent=2, default=str))
    else:
        human()


def _config(args: argparse.Namespace) -> UigConfig:
    return UigConfig.from_env(data_root=args.data_root)


# --- commands ---------------------------------------------------------------------------
def cmd_data_prepare(args: argparse.Namespace) -> int:
    from uig_tasks.movielens import prepare

    config = _config(args)
    until = parse_time(args.until).date() if args.until else None
    day = parse_time(args.day).date() if args.day else None
    result = prepare(config.landing_dir, until=until, day=day)
    _emit(
        args,
        result.__dict__,
        lambda: print(
            f"landed {result.events} MovieLens-100k rate events over days {result.first_day} .. {result.last_day} "
            f"({result.days_written} day files written, {result.days_skipped} unchanged), "
            f"{result.items} items, {result.users} users -> {config.landing_dir}"
        ),
    )
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    from uig_tasks.synthetic import generate

    config = _config(args)
    result = generate(
        config.landing_dir, n_events=args.events, n_users=args.users, n_days=args.days, seed=args.seed,
        start=parse_time(args.start),
    )
    _emit(args, result, lambda: print(f"SYNTHETIC data landed: {result}"))
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from uig_tasks.pipeline import run_ingest

    logical = parse_time(args.logical_time) if args.logical_time else datetime.now(timezone.utc)
    result = run_ingest(_config(args), logical)

    def human() -> None:
        if not result["batches"]:
            print("no new landing files: nothing to ingest")
            return
        _print_table(
            result["batches"],  # type: ignore[arg-type]
            ["batch_id", "n_files", "n_raw", "n_clean", "n_quarantined", "n_duplicates", "n_late", "resumed"],
        )

    _emit(args, result, human)
    return 0


def cmd_aggregate(args: argparse.Namespace) -> int:
    from uig_tasks.pipeline import run_aggregate

    result = run_aggregate(_config(args), parse_time(args.as_of, end_of_day=True), full=args.full)
    _emit(
        args,
        result,
        lambda: print(
            f"aggregate ({result['mode']}) at {result['as_of']}: {result['dirty_users']} users recomputed; "
            f"gold.user_item_affinity {result['user_item_rows']} rows, gold.user_topic_affinity {result['user_topic_rows']} rows"
        ),
    )
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    from uig_tasks.encode import run_encode

    result = run_encode(_config(args), datetime.now(timezone.utc), batch_size=args.batch_size)
    _emit(
        args,
        result,
        lambda: print(
            f"encoded {result['encoded']} of {result['total']} items ({result['skipped']} unchanged) "
            f"with {result['encoder_version']} on {result['device']} in {result['seconds']}s"
        ),
    )
    return 0


def cmd_tables(args: argparse.Namespace) -> int:
    from uig_tasks.pipeline import table_summary

    rows = table_summary(_config(args))
    _emit(args, rows, lambda: _print_table(rows, ["table", "rows", "version", "last_operation"]))
    return 0


def cmd_quarantine(args: argparse.Namespace) -> int:
    from uig_tasks.pipeline import quarantine_report

    rows = quarantine_report(_config(args))
    _emit(args, rows, lambda: _print_table(rows, ["reason", "lines"]) if rows else print("quarantine is empty"))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Land all of MovieLens-100k, ingest it, aggregate it at the end of its timeline, summarise."""
    from uig_tasks.movielens import prepare, timeline
    from uig_tasks.pipeline import run_aggregate, run_ingest, table_summary

    config = _config(args)
    steps = 4
    t0 = time.perf_counter()
    print(f"[1/{steps}] landing MovieLens-100k (from the installed recbole package) into {config.landing_dir}", flush=True)
    prepared = prepare(config.landing_dir)
    print(f"      {prepared.events} events over {prepared.days_written + prepared.days_skipped} days, "
          f"{prepared.items} items, {prepared.users} users", flush=True)
    end = timeline()[-1]
    logical = parse_time(end, end_of_day=True)
    print(f"[2/{steps}] ingesting landing -> bronze -> silver (batch logical time {logical:%Y-%m-%d %H:%M})", flush=True)
    ing = run_ingest(config, logical)
    print(f"      raw {ing['n_raw']} = clean {ing['n_clean']} + quarantined {ing['n_quarantined']} + "
          f"duplicates {ing['n_duplicates']} ({len(ing['batches'])} new batch(es))", flush=True)  # type: ignore[arg-type]
    print(f"[3/{steps}] aggregating gold affinities as of {logical:%Y-%m-%d %H:%M:%S}Z "
          f"(half-life {config.half_life_days} days)", flush=True)
    agg = run_aggregate(config, logical)
    print(f"      {agg['mode']}: {agg['dirty_users']} users recomputed", flush=True)
    print(f"[4/{steps}] tables under {config.delta_dir}", flush=True)
    rows = table_summary(config)
    _print_table(rows, ["table", "rows", "version", "last_operation"])
    print(f"done in {time.perf_counter() - t0:.0f}s. Next: `uig tables`, `uig quarantine`, or land more with "
          f"`uig data prepare --day YYYY-MM-DD`.")
    return 0


# --- parser -----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uig", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=None, help="data folder (default: $UIG_DATA_ROOT or ./data)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of text")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="land input files (MovieLens-100k or synthetic)")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    p = data_sub.add_parser("prepare", help="convert MovieLens-100k into landing files (catalog + one JSONL per day)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--until", help="land every day up to and including DATE (YYYY-MM-DD)")
    which.add_argument("--day", help="land exactly one DATE (replay one day at a time)")
    p.set_defaults(func=cmd_data_prepare)
    p = data_sub.add_parser("synth", help="land a SYNTHETIC event set for scale tests (says so in every event)")
    p.add_argument("--events", type=int, default=2_000_000, help="number of events (default 2,000,000)")
    p.add_argument("--users", type=int, default=50_000, help="number of synthetic users")
    p.add_argument("--days", type=int, default=60, help="number of days (one landing file each)")
    p.add_argument("--start", default="2024-01-01", help="first day (YYYY-MM-DD)")
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(func=cmd_data_synth)

    p = sub.add_parser("ingest", help="landing -> bronze -> silver for files not ingested before")
    p.add_argument("--logical-time", help="the batch's logical time (default: now); events more than a day after it are quarantined")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("aggregate", help="silver -> gold affinities at --as-of (dirty users only unless --full)")
    p.add_argument("--as-of", required=True, help="evaluation time; a bare date means the end of that day (UTC)")
    p.add_argument("--full", action="store_true", help="rebuild every user instead of only dirty ones")
    p.set_defaults(func=cmd_aggregate)

    p = sub.add_parser("encode", help="silver.items -> gold.item_embeddings (only new or changed items)")
    p.add_argument("--batch-size", type=int, default=64, help="texts per forward pass (default 64)")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("tables", help="row count, Delta version and last operation of every table")
    p.set_defaults(func=cmd_tables)
    p = sub.add_parser("quarantine", help="quarantined lines by reason")
    p.set_defaults(func=cmd_quarantine)
    p = sub.add_parser("demo", help="the main job end to end: prepare MovieLens-100k, ingest, aggregate, summarise")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("py4j").setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"uig: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
