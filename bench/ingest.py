"""Ingest + aggregate throughput, peak memory, and incremental-vs-full wall time.

Runs in one process and one Spark session, so every case is compared against a floor measured
in the same run: a bare ``spark.read.json`` → Delta write of the same landing files (no
validation, no dedupe, no accounting), and the same passes UIG makes done bare
(``same_passes_run``), which splits the ratio into what the passes cost and what UIG's own code
adds. Writes its table into ``bench/RESULTS.md``.

    .venv/bin/python bench/ingest.py                     # ml-100k ×3 + 2M synthetic ×1
    .venv/bin/python bench/ingest.py --synthetic-events 0 --repeats 1   # quick
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine, measured, median, stamp, synthetic_users, write_section  # noqa: E402
from uig_common import names as C  # noqa: E402
from uig_tasks.config import UigConfig  # noqa: E402
from uig_common.timeutil import parse_time  # noqa: E402


@dataclass
class Row:
    dataset: str
    case: str
    events: int
    seconds: list[float]
    peak_mb: list[float]

    def cells(self, floor: float | None) -> list[str]:
        s = median(self.seconds)
        ratio = f"{s / floor:.2f}×" if floor else "1.00× (floor)"
        return [
            self.dataset, self.case, f"{self.events:,}", f"{s:.1f}", f"{self.events / s:,.0f}" if self.events else "–",
            ratio, f"{max(self.peak_mb):,.0f}", str(len(self.seconds)),
        ]


def floor_run(spark, landing: Path, out: Path) -> None:
    """The floor: read the same JSONL and write it to Delta, nothing else."""
    spark.read.json(str(landing / "events" / "*" / "*.jsonl")).write.format("delta").mode("overwrite").save(str(out))


#: The events' fields, typed as the floor's schema inference types them (ints stay longs).
_EVENT_FIELDS = ", ".join(f"{name} {kind}" for name, kind in (
    (C.EVENT_ID, "string"), (C.USER_ID, "string"), (C.EVENT_TYPE, "string"), (C.ITEM_ID, "string"),
    (C.QUERY, "string"), (C.RATING, "double"), (C.TS, "long"), (C.SOURCE, "string")))


def same_passes_run(spark, landing: Path, out: Path, kg_min_items: int) -> None:
    """The passes and tables UIG's ingest + aggregate makes, done bare: raw lines → bronze; JSON
    with a schema, first row of each ``event_id`` → silver; per (user, item) and per (user, topic:
    genre, or KG entity of at least ``kg_min_items`` items) sums → two gold tables. No validation,
    pseudonymisation, quarantine, accounting or recovery steps: what the product's own code costs
    on top is its ratio to this, the rest is in the passes themselves."""
    from pyspark.sql import functions as F

    from spark_jobs.transforms.aggregate import topic_tasks

    def write(df, name: str):
        df.write.format("delta").mode("overwrite").save(str(out / name))
        return spark.read.format("delta").load(str(out / name))

    bronze = write(spark.read.text(str(landing / "events" / "*" / "*.jsonl")), "bronze")
    parsed = bronze.select(F.from_json("value", _EVENT_FIELDS).alias("e")).select("e.*")
    silver = write(parsed.dropDuplicates([C.EVENT_ID]), "silver")
    weight = F.when(F.col(C.EVENT_TYPE) == "rate", F.col(C.RATING) / 5).otherwise(F.lit(1.0))
    user_items = write(silver.where(F.col(C.ITEM_ID).isNotNull()).groupBy(C.USER_ID, C.ITEM_ID).agg(
        F.sum(weight).alias(C.WEIGHT), F.count("*").alias(C.N_EVENTS), F.max(C.TS).alias(C.LAST_TS)), "user_items")
    items = spark.read.json(str(landing / "catalog" / "items" / "*.jsonl"))
    genres = items.select(C.ITEM_ID, F.explode(C.GENRES).alias(C.TOPIC_ID))
    entities = items.select(C.ITEM_ID, F.explode(f"{C.ENTITIES}.{C.ENTITY_ID}").alias(C.TOPIC_ID))
    shared = entities.groupBy(C.TOPIC_ID).count().where(F.col("count") >= kg_min_items).select(C.TOPIC_ID)
    topics = genres.unionByName(entities.join(shared, C.TOPIC_ID, "left_semi")).distinct()
    # by user before the join, as UIG's own does: the topic sums then need no shuffle of the joined
    # rows; in as many tasks as UIG's, so that no task's map of groups spills
    by_user = user_items.repartition(topic_tasks(user_items.count()), C.USER_ID).join(F.broadcast(topics), C.ITEM_ID)
    write(by_user.groupBy(C.USER_ID, C.TOPIC_ID).agg(F.sum(C.WEIGHT).alias(C.WEIGHT), F.count("*").alias(C.N_ITEMS)),
          "user_topics")


def land_movielens(root: Path, until: date | None = None, day: date | None = None) -> int:
    from uig_tasks.movielens import prepare

    return prepare(root / "landing", until=until, day=day).events


def land_synthetic(root: Path, n_events: int, days: int) -> int:
    from uig_tasks.synthetic import generate

    return int(generate(root / "landing", n_events=n_events, n_users=synthetic_users(n_events), n_days=days)["events"])


def bench_dataset(spark, name: str, land, n_repeats: int, work: Path, last_day: date, prepare_before_last) -> list[Row]:
    from uig_tasks.pipeline import run_aggregate, run_ingest

    floor = Row(name, "floor: spark.read.json → Delta write", 0, [], [])
    bare = Row(name, "same passes, bare Spark (bronze, silver, 2 gold tables)", 0, [], [])
    full = Row(name, "uig ingest + aggregate (full)", 0, [], [])
    inc = Row(name, "incremental: land 1 more day, ingest + aggregate", 0, [], [])
    rebuild = Row(name, "rebuild from scratch incl. that day", 0, [], [])
    for rep in range(n_repeats):
        print(f"[{name}] repeat {rep + 1}/{n_repeats}", flush=True)
        root = work / f"{name}-{rep}"
        shutil.rmtree(root, ignore_errors=True)
        n = land(root)
        floor.events = bare.events = full.events = rebuild.events = n
        with measured() as m:
            floor_run(spark, root / "landing", work / f"floor-{name}-{rep}")  # one table per dataset: schemas differ
        floor.seconds.append(m.seconds), floor.peak_mb.append(m.peak_rss_mb)
        print(f"  floor {m.seconds:.1f}s", flush=True)

        config = UigConfig.from_env(data_root=root, user_salt="bench")
        with measured() as m:
            same_passes_run(spark, root / "landing", work / f"bare-{name}-{rep}", config.kg_min_items)
        bare.seconds.append(m.seconds), bare.peak_mb.append(m.peak_rss_mb)
        print(f"  same passes, bare {m.seconds:.1f}s", flush=True)
        as_of = parse_time(last_day, end_of_day=True)
        with measured() as m:
            run_ingest(config, as_of)
            run_aggregate(config, as_of, full=True)
        full.seconds.append(m.seconds), full.peak_mb.append(m.peak_rss_mb)
        print(f"  full {m.seconds:.1f}s", flush=True)

        # incremental: everything before the last day is in, then the last day lands
        inc_root = work / f"{name}-inc-{rep}"
        shutil.rmtree(inc_root, ignore_errors=True)
        prepare_before_last(inc_root)
        inc_config = UigConfig.from_env(data_root=inc_root, user_salt="bench")
        before = parse_time(last_day - timedelta(days=1), end_of_day=True)
        run_ingest(inc_config, before)
        run_aggregate(inc_config, before, full=True)
        inc_events = land(inc_root)
        with measured() as m:
            result = run_ingest(inc_config, as_of)
            run_aggregate(inc_config, as_of)
        inc.events = int(result["n_raw"])
        inc.seconds.append(m.seconds), inc.peak_mb.append(m.peak_rss_mb)
        print(f"  incremental {m.seconds:.1f}s for {inc.events} new events ({inc_events} total)", flush=True)
        rebuild.seconds.append(full.seconds[-1]), rebuild.peak_mb.append(full.peak_mb[-1])
        for done in (root, inc_root, work / f"floor-{name}-{rep}", work / f"bare-{name}-{rep}"):
            shutil.rmtree(done, ignore_errors=True)
    return [floor, bare, full, inc, rebuild]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each MovieLens case (median is reported)")
    parser.add_argument("--synthetic-events", type=int, default=2_000_000, help="size of the SYNTHETIC set (0 skips it)")
    parser.add_argument("--synthetic-days", type=int, default=30)
    parser.add_argument("--synthetic-repeats", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="print the table, leave RESULTS.md alone")
    args = parser.parse_args(argv)

    from spark_jobs.io import get_spark
    from uig_tasks.movielens import timeline

    work = Path(tempfile.mkdtemp(prefix="uig-bench-"))
    spark = get_spark(UigConfig.from_env(data_root=work).spark, "uig-bench")
    ml_last = timeline()[-1]
    rows = bench_dataset(
        spark, "ml-100k", land_movielens, args.repeats, work, ml_last,
        lambda root: land_movielens(root, until=ml_last - timedelta(days=1)),
    )
    if args.synthetic_events:
        n, d = args.synthetic_events, args.synthetic_days
        syn_last = date(2024, 1, 1) + timedelta(days=d - 1)
        per_day = n // d

        def before_last(root: Path) -> int:
            from uig_tasks.synthetic import generate

            generate(root / "landing", n_events=n, n_users=synthetic_users(n), n_days=d)
            last = root / "landing" / "events" / f"date={syn_last:%Y-%m-%d}"
            shutil.move(str(last), str(root / "held-back-day"))
            return n - per_day

        def land_syn(root: Path) -> int:
            held = root / "held-back-day"
            if held.exists():  # the incremental case: put the last day back
                shutil.move(str(held), str(root / "landing" / "events" / f"date={syn_last:%Y-%m-%d}"))
                return n
            return land_synthetic(root, n, d)

        rows += bench_dataset(spark, f"synthetic-{n // 1000}k", land_syn, args.synthetic_repeats, work, syn_last, before_last)
    spark.stop()
    shutil.rmtree(work, ignore_errors=True)

    header = ["data", "case", "events", "median s", "events/s", "vs floor", "peak RSS MB", "runs"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    floors = {r.dataset: median(r.seconds) for r in rows if r.case.startswith("floor")}
    for r in rows:
        lines.append("| " + " | ".join(r.cells(None if r.case.startswith("floor") else floors[r.dataset])) + " |")
    inc = {r.dataset: median(r.seconds) for r in rows if r.case.startswith("incremental")}
    full = {r.dataset: median(r.seconds) for r in rows if r.case.startswith("rebuild")}
    bare = {r.dataset: median(r.seconds) for r in rows if r.case.startswith("same passes")}
    notes = [f"- {d}: one-day incremental run takes {inc[d]:.1f}s vs {full[d]:.1f}s for a rebuild ({full[d] / inc[d]:.1f}× faster)." for d in inc]
    notes += [f"- {d}: the same passes done bare take {bare[d] / floors[d]:.2f}× the floor; UIG's full run takes "
              f"{full[d] / bare[d]:.2f}× that." for d in bare]
    md = "\n".join(
        [
            "## Ingest + aggregate (`bench/ingest.py`)",
            "",
            f"Run {stamp()} on {machine()}; Spark `local[2]`, one session for every case. "
            "Peak RSS is the whole process tree (Python driver + Spark JVM + Python workers), sampled every 0.1 s. "
            + ("The synthetic set is SYNTHETIC (generated by `uig data synth`, real MovieLens catalog). "
               if any(r.dataset.startswith("synthetic") for r in rows) else "")
            + "'vs floor' divides by the bare read → Delta write of the same files in the same run. "
            "'same passes, bare Spark' makes the tables UIG's full run makes (raw lines → bronze, typed and "
            "de-duplicated events → silver, per user and item and per user and topic → gold) with Spark's own "
            "functions only (`same_passes_run`): no validation, pseudonymisation, quarantine, accounting or "
            "recovery steps.",
            "",
            *lines,
            "",
            *notes,
        ]
    )
    print(md)
    if not args.no_write:
        write_section("ingest", md)
        print("written to bench/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
