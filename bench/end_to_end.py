"""The whole pipeline at 10M SYNTHETIC events: ingest, aggregate, encode, train, a full refresh of
every user, then one more day (+1 %) through ingest, aggregate and an incremental refresh — each
stage's wall time and the peak RSS of the whole process tree (Python, the Spark JVM, its workers).

The SYNTHETIC set is ``uig_tasks.synthetic.generate`` (Pareto user activity, Zipf item popularity,
sessions of each day's active users, the real MovieLens catalog). Stages run in order through the
product's task functions, as a scheduler runs them; with ``--work DIR`` each finished stage is kept
in ``DIR/stages.json`` and a later run with the same folder goes on from the next stage (so the
stages may be timed in more than one process; the table says which). Writes its section of
``bench/RESULTS.md``.

    .venv/bin/python bench/end_to_end.py                              # 10M events, ~1.5 h here
    .venv/bin/python bench/end_to_end.py --events 200000 --no-write  # a quick look
    .venv/bin/python bench/end_to_end.py --work /tmp/e2e --until train   # stop after a stage
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine, measured, stamp, synthetic_users, write_section  # noqa: E402
from uig_tasks.config import UigConfig  # noqa: E402

SALT = "bench"
TRAINING = {"epochs": 1, "dim": 32, "patience": 1}  # the refresh's cost does not depend on the model's quality
STAGES = ("land", "ingest", "aggregate", "encode", "train", "refresh", "land +1 %", "ingest +1 %",
          "aggregate +1 %", "refresh +1 %")
#: The stages the issue's "end to end" means (ingest, aggregate, refresh), summed in the table.
END_TO_END = ("ingest", "aggregate", "refresh")


def stage_runners(config: UigConfig, events: int, days: int) -> dict[str, Callable[[], dict]]:
    """What each stage runs, and the facts it reports."""
    from uig_common.timeutil import parse_time
    from uig_tasks.encode import run_encode
    from uig_tasks.pipeline import run_aggregate, run_ingest
    from uig_tasks.refresh import run_refresh
    from uig_tasks.synthetic import DEFAULT_START, generate
    from uig_tasks.train import run_train

    users = synthetic_users(events)
    last = parse_time((DEFAULT_START + timedelta(days=days - 1)).date(), end_of_day=True)
    day = DEFAULT_START + timedelta(days=days)
    next_day = parse_time(day.date(), end_of_day=True)
    extra = max(1, events // 100)

    def land() -> dict:
        generate(config.landing_dir, n_events=events, n_users=users, n_days=days)
        return {"events": events, "users": users}

    def ingest(at: datetime) -> dict:
        out = run_ingest(config, at)
        return {k: out[k] for k in ("n_raw", "n_clean", "n_quarantined", "n_duplicates")}

    def aggregate(at: datetime, full: bool) -> dict:
        out = run_aggregate(config, at, full=full)
        return {"mode": out["mode"], "dirty_users": out["dirty_users"]}

    def refresh(at: datetime) -> dict:
        out = run_refresh(config, at)
        return {k: out[k] for k in ("mode", "dirty_users", "edges_written")} | {"seconds_by_step": out.get("seconds_by_step")}

    def land_day() -> dict:
        generate(config.landing_dir, n_events=extra, n_users=users, n_days=1, seed=1001, start=day)
        return {"events": extra}

    def encode() -> dict:
        out = run_encode(config, last)
        return {"encoded": out["encoded"], "device": out["device"]}

    def train() -> dict:
        out = run_train(config, datetime.now(timezone.utc), TRAINING)
        return {"training": TRAINING, "version": out["gate"]["version"], "promoted": out["gate"]["promoted"]}

    return {
        "land": land,
        "ingest": lambda: ingest(last),
        "aggregate": lambda: aggregate(last, True),
        "encode": encode,
        "train": train,
        "refresh": lambda: refresh(last),
        "land +1 %": land_day,
        "ingest +1 %": lambda: ingest(next_day),
        "aggregate +1 %": lambda: aggregate(next_day, False),
        "refresh +1 %": lambda: refresh(next_day),
    }


def run(work: Path, events: int, days: int, until: str | None) -> dict:
    """Run every stage not yet in ``work/stages.json`` (up to ``until``); returns the stages."""
    state_path = work / "stages.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {"events": events, "days": days, "stages": {}}
    if (state["events"], state["days"]) != (events, days):
        raise SystemExit(f"{work} holds a run of {state['events']:,} events over {state['days']} days; "
                         "use another --work folder")
    config = UigConfig.from_env(data_root=work / "root", user_salt=SALT)
    runners = stage_runners(config, events, days)
    process = f"pid {os.getpid()}"
    for name in STAGES:
        if name in state["stages"]:
            continue
        print(f"[SYNTHETIC] {name} ...", flush=True)
        with measured(interval=0.5) as m:
            facts = runners[name]()
        state["stages"][name] = {"seconds": round(m.seconds, 1), "peak_rss_mb": round(m.peak_rss_mb),
                                 "process": process, "facts": facts}
        state_path.write_text(json.dumps(state, indent=1, default=str))
        print(f"  {name}: {m.seconds:.1f}s, peak RSS {m.peak_rss_mb:,.0f} MB, {facts}", flush=True)
        if name == until:
            break
    return state


def section(state: dict, command: str) -> str:
    stages = state["stages"]
    processes = {s["process"] for s in stages.values()}
    rows = ["| stage | seconds | peak RSS MB | what it did |", "|---|---|---|---|"]
    for name in STAGES:
        if name not in stages:
            rows.append(f"| {name} | not run | | |")
            continue
        s = stages[name]
        facts = ", ".join(f"{k} {v:,}" if isinstance(v, int) and not isinstance(v, bool) else f"{k} {v}"
                          for k, v in s["facts"].items() if k != "seconds_by_step")
        rows.append(f"| {name} | {s['seconds']:,.1f} | {s['peak_rss_mb']:,} | {facts} |")
    done = [stages[n] for n in END_TO_END if n in stages]
    total = sum(s["seconds"] for s in done)
    pipeline = [s for n, s in stages.items() if n.split(" ")[0] in END_TO_END]
    peak = max((s["peak_rss_mb"] for s in pipeline), default=0)
    peak_all = max((s["peak_rss_mb"] for s in stages.values()), default=0)
    steps = (stages.get("refresh") or {}).get("facts", {}).get("seconds_by_step")
    return "\n".join([
        "## End to end at scale (`bench/end_to_end.py`)",
        "",
        f"Run {stamp()} on {machine()}; Spark `local[2]`, driver memory as configured by default. `{command}`",
        "",
        f"A SYNTHETIC set (`uig_tasks.synthetic.generate`: Pareto user activity, Zipf item popularity, sessions of each "
        f"day's active users, the real MovieLens catalog) of {state['events']:,} events over {state['days']} days goes "
        f"through every stage as a scheduler runs them; training is one epoch ({TRAINING}): the refresh's cost does "
        "not depend on the model's quality. Then 1 % more events land as one more day and go through ingest, "
        "aggregate and an incremental refresh. Peak RSS is the whole process tree (Python, the Spark JVM and its "
        f"workers), sampled every 0.5 s; the stages ran in {len(processes)} process(es): a stage that starts a "
        "process pays the Spark start, and a stage's peak includes what its process still holds from the stages "
        "before it (the memory training kept, say), where a scheduler would run each in a process of its own.",
        "",
        *rows,
        "",
        f"- **End to end** ({' + '.join(END_TO_END)}, {len(done)} of {len(END_TO_END)} run): **{total:,.0f} s**; "
        f"peak RSS of those stages and their +1 % runs **{peak:,} MB** (target ≤ 12,288 MB: "
        f"{'met' if peak <= 12288 else 'not met'}); of every stage, encode and train included, {peak_all:,} MB.",
        *([f"- The full refresh by step (s): {steps}."] if steps else []),
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000, help="SYNTHETIC events of the base set")
    parser.add_argument("--days", type=int, default=30, help="days the base set spans")
    parser.add_argument("--work", type=Path, help="keep the data root and finished stages here (resumable); "
                                                   "default: a temporary folder, removed at the end")
    parser.add_argument("--until", choices=STAGES, help="stop after this stage (needs --work to go on later)")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave RESULTS.md alone")
    args = parser.parse_args(argv)
    if args.events <= 0 or args.days <= 0:
        parser.error("--events and --days must be positive")
    if args.until and not args.work:
        parser.error("--until needs --work (the stages after it go on from that folder)")

    command = "python bench/end_to_end.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    work = args.work or Path(tempfile.mkdtemp(prefix="uig-bench-e2e-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        state = run(work, args.events, args.days, args.until)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    md = section(state, command)
    print(md)
    if not args.no_write and not args.until:
        write_section("end-to-end", md)
        print("written to bench/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
