"""Ingestion on real local Spark + Delta: accounting, quarantine, dedupe, idempotence, late data."""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from uig_common import names as C
from spark_jobs import ingest_job, io
from spark_jobs.ingest_job import ingest_catalog, ingest_events
from tests.conftest import FIRST_DAY, SECOND_DAY, THIRD_DAY
from tests.integration.helpers import snapshot, versions
from uig_tasks.movielens import prepare
from uig_tasks.pipeline import quarantine_report, run_ingest

pytestmark = pytest.mark.integration

BATCH_TIME = datetime(1997, 10, 16, tzinfo=timezone.utc)


def ok(event_id: str, **extra) -> bytes:
    event = {"event_id": event_id, "user_id": "h1", "event_type": "view", "item_id": "1", "ts": "1997-10-01T10:00:00Z"}
    return json.dumps({**event, **extra}).encode()


# (line, expected outcome): "clean", "duplicate" or a quarantine reason.
HOSTILE = [
    (ok("h-1"), "clean"),
    (json.dumps({"event_id": "h-2", "user_id": 7, "event_type": "search", "query": "noir", "ts": 875_000_000}).encode(), "clean"),
    (ok("h-3", event_type="rate", rating=4.5), "clean"),
    (b'{"event_id": "h-4",', "invalid_json"),
    (b"[1, 2, 3]", "not_a_json_object"),
    (json.dumps({"event_id": "h-6", "event_type": "view", "item_id": "1", "ts": 875_000_000}).encode(), "missing_field"),
    (ok("h-7", user_id={"id": 1}), "wrong_type"),
    (ok("h-8", event_type="teleport"), "unknown_event_type"),
    (ok("h-9", ts="yesterday"), "bad_timestamp"),
    (ok("h-10", ts="1997-10-01T10:00:00"), "bad_timestamp"),
    (ok("h-11", ts=500_000_000), "timestamp_before_1990"),
    (ok("h-12", ts="2030-01-01T00:00:00Z"), "timestamp_in_future"),
    (ok("h-13", event_type="rate", rating=7), "rating_out_of_range"),
    (ok("h-14", event_type="rate"), "rate_without_rating"),
    (json.dumps({"event_id": "h-15", "user_id": "h1", "event_type": "search", "ts": 875_000_000}).encode(), "search_without_query"),
    (ok("h-16", item_id="999999"), "unknown_item_id"),
    (ok("h-17", source="x" * 5000), "line_too_long"),
    (b'{"event_id": "h-18", "user_id": "h\xff1", "event_type": "view", "item_id": "1", "ts": 875000000}', "invalid_utf8"),
    (b"", "empty_line"),
    (ok("h-1"), "duplicate"),
    (ok("h-21", event_type="rate", rating="five"), "wrong_type"),
]


def land(config, name: str, lines: list[bytes]) -> Path:
    path = config.landing_dir / "events" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_hostile_file_is_fully_accounted_for(spark, config):
    prepare(config.landing_dir, day=FIRST_DAY)  # the real catalog + one real day
    land(config, "hostile/mixed.jsonl", [line for line, _ in HOSTILE])
    ingest_catalog(spark, config.lake, config.ingest_settings(), BATCH_TIME)
    [batch] = ingest_events(spark, config.lake, config.ingest_settings(), BATCH_TIME)

    real_events = 915  # MovieLens-100k ratings on 1997-09-20
    assert batch.n_raw == real_events + len(HOSTILE)
    assert batch.n_clean == real_events + 3
    assert batch.n_duplicates == 1
    assert batch.n_quarantined == len(HOSTILE) - 4
    assert batch.n_raw == batch.n_clean + batch.n_quarantined + batch.n_duplicates

    hostile = "events/hostile/mixed.jsonl"
    quarantine = {
        r[C.LINE_NO]: r
        for r in io.read_table(spark, config.lake, C.SILVER_QUARANTINE).where(F.col(C.SOURCE_FILE) == hostile).collect()
    }
    clean = {r[C.LINE_NO] for r in io.read_table(spark, config.lake, C.SILVER_EVENTS).where(F.col(C.SOURCE_FILE) == hostile).collect()}
    dups = {r[C.LINE_NO] for r in io.read_table(spark, config.lake, C.SILVER_DUPLICATES).collect()}
    for line_no, (line, expected) in enumerate(HOSTILE, start=1):
        if expected == "clean":
            assert line_no in clean, line_no
        elif expected == "duplicate":
            assert line_no in dups, line_no
        else:
            assert quarantine[line_no][C.REASON] == expected, (line_no, quarantine[line_no][C.DETAIL])
            assert '"h1"' not in quarantine[line_no][C.PREVIEW]  # no raw user id outside landing and bronze
    bronze = {r[C.LINE_NO]: bytes(r[C.RAW_BYTES]) for r in
              io.read_table(spark, config.lake, C.BRONZE_EVENTS_RAW).where(F.col(C.SOURCE_FILE) == hostile).collect()}
    assert all(bronze[n] == line for n, (line, _) in enumerate(HOSTILE, start=1) if len(line) <= config.max_line_bytes)
    assert len(clean) + len(dups) + len(quarantine) == len(HOSTILE)  # each line in exactly one place

    audit = io.read_table(spark, config.lake, C.OPS_BATCHES).collect()[0]
    assert (audit[C.STATUS], audit[C.N_RAW], audit[C.N_QUARANTINED]) == ("committed", batch.n_raw, batch.n_quarantined)
    # raw user ids never reach silver
    assert io.read_table(spark, config.lake, C.SILVER_EVENTS).where(F.col(C.USER_KEY).isin("h1", "7", "196")).count() == 0


def test_rerun_changes_nothing_and_new_days_are_incremental(spark, config):
    prepare(config.landing_dir, until=SECOND_DAY)
    first = run_ingest(config, BATCH_TIME)
    assert first["n_files"] == 2 and first["n_clean"] == 915 + 825
    # one silver file per event day the batch wrote; no more bronze files than landing files
    silver_files = io.read_table(spark, config.lake, C.SILVER_EVENTS).select(C.EVENT_DATE, "_metadata.file_path").distinct()
    assert sorted(r["count"] for r in silver_files.groupBy(C.EVENT_DATE).count().collect()) == [1, 1]
    assert io.read_table(spark, config.lake, C.BRONZE_EVENTS_RAW).select("_metadata.file_path").distinct().count() <= 2
    before, before_versions = snapshot(spark, config), versions(spark, config)

    again = run_ingest(config, BATCH_TIME)
    assert again["batches"] == []
    assert snapshot(spark, config) == before
    assert versions(spark, config) == before_versions  # not even an empty commit

    prepare(config.landing_dir, day=THIRD_DAY)
    third = run_ingest(config, BATCH_TIME)
    [batch] = third["batches"]
    assert batch["n_files"] == 1 and batch["n_clean"] == 666 and batch["batch_seq"] == 2
    assert batch["n_quarantined"] == batch["n_duplicates"] == 0
    after_versions = versions(spark, config)  # a clean batch commits nothing to the tables of rejected lines
    assert all(after_versions[t] == before_versions[t] for t in (C.SILVER_QUARANTINE, C.SILVER_DUPLICATES))
    assert io.read_table(spark, config.lake, C.BRONZE_EVENTS_RAW).count() == 915 + 825 + 666


@pytest.mark.parametrize("few_lines", [ingest_job.FEW_LINES, 0])  # stored ids cut to the batch's first, or not
def test_duplicates_across_batches_point_to_the_first_batch(spark, config, monkeypatch, few_lines):
    monkeypatch.setattr(ingest_job, "FEW_LINES", few_lines)
    prepare(config.landing_dir, day=FIRST_DAY)
    [b1] = ingest_events(spark, config.lake, config.ingest_settings(), BATCH_TIME) if ingest_catalog(spark, config.lake, config.ingest_settings(), BATCH_TIME) else []
    replayed = (config.landing_dir / "events" / f"date={FIRST_DAY}").glob("*.jsonl").__next__().read_bytes().splitlines()[:10]
    land(config, "resend/again.jsonl", replayed + [ok("fresh-1")])
    [b2] = ingest_events(spark, config.lake, config.ingest_settings(), BATCH_TIME)
    assert (b2.n_raw, b2.n_clean, b2.n_duplicates, b2.n_quarantined) == (11, 1, 10, 0)
    dup_of = {r[C.DUPLICATE_OF_BATCH] for r in io.read_table(spark, config.lake, C.SILVER_DUPLICATES).collect()}
    assert dup_of == {b1.batch_id}
    assert io.read_table(spark, config.lake, C.SILVER_EVENTS).count() == 915 + 1


def test_late_events_are_ingested_and_flagged(spark, config):
    prepare(config.landing_dir, day=SECOND_DAY)
    run_ingest(config, BATCH_TIME)
    prepare(config.landing_dir, day=FIRST_DAY)  # an older day arrives after a newer one
    [late] = run_ingest(config, BATCH_TIME)["batches"]
    assert late["n_clean"] == 915 and late["n_late"] == 915
    events = io.read_table(spark, config.lake, C.SILVER_EVENTS)
    assert events.where(F.col(C.IS_LATE)).count() == 915
    wm = io.read_table(spark, config.lake, C.OPS_WATERMARKS).where(F.col(C.PIPELINE) == "ingest").collect()[0]
    assert wm[C.MAX_EVENT_TS].date() == SECOND_DAY  # late data does not move the watermark back


def test_changed_item_title_changes_only_its_hash(spark, config, caplog):
    prepare(config.landing_dir, day=FIRST_DAY)
    ingest_catalog(spark, config.lake, config.ingest_settings(), BATCH_TIME)
    before = {r[C.ITEM_ID]: r[C.CONTENT_HASH] for r in io.read_table(spark, config.lake, C.SILVER_ITEMS).collect()}
    items_file = config.landing_dir / "catalog" / "items" / "items.jsonl"
    lines = [json.loads(line) for line in items_file.read_text().splitlines()]
    original = lines[0]["title"]
    lines[0]["title"] = "Toy Story (Special Edition)"
    items_file.write_text("".join(json.dumps(i) + "\n" for i in lines))
    counts = ingest_catalog(spark, config.lake, config.ingest_settings(), BATCH_TIME)
    after = {r[C.ITEM_ID]: r[C.CONTENT_HASH] for r in io.read_table(spark, config.lake, C.SILVER_ITEMS).collect()}
    assert counts["items_changed"] == 1
    assert [k for k in before if before[k] != after[k]] == [lines[0]["item_id"]]
    version = io.table_version(spark, config.lake, C.SILVER_ITEMS)
    with caplog.at_level("INFO", logger="spark_jobs.ingest_job"):
        assert ingest_catalog(spark, config.lake, config.ingest_settings(), BATCH_TIME)["items_changed"] == 0
    assert "catalog items: files unchanged since the last upsert; not compared" in caplog.text  # its commit note
    assert io.table_version(spark, config.lake, C.SILVER_ITEMS) == version
    lines[0]["title"] = original  # back to what it was: compared again, one row changed again
    items_file.write_text("".join(json.dumps(i) + "\n" for i in lines))
    assert ingest_catalog(spark, config.lake, config.ingest_settings(), BATCH_TIME)["items_changed"] == 1
    from delta.tables import DeltaTable  # the version read from the JVM's snapshot is the history's

    history = DeltaTable.forPath(spark, config.lake.path(C.SILVER_ITEMS)).history(1).collect()[0]["version"]
    assert io.table_version(spark, config.lake, C.SILVER_ITEMS) == history == version + 1


def test_hostile_files_never_wedge_ingestion_and_nothing_is_skipped_silently(spark, config, tmp_path):
    """Odd names, gzip, links out of landing, half-written lines, reused ids: both runs commit."""
    prepare(config.landing_dir, day=FIRST_DAY)
    events = config.landing_dir / "events"
    land(config, "odd/at 12:00.jsonl", [ok("odd-1"), ok("odd-2", ts="9999-12-31T23:59:59-14:00"),
                                        b'{"event_id": "odd-3", "user_id": "\\ud800", "event_type": "view", '
                                        b'"item_id": "1", "ts": 875000000}',
                                        ok("odd-4", event_type="rate", rating=10**400)])
    (events / "zipped.jsonl.gz").write_bytes(gzip.compress(ok("gz-1") + b"\n" + ok("gz-2")))
    (events / "broken.jsonl.gz").write_bytes(b"\x1f\x8b not really gzip")
    outside = tmp_path / "outside.jsonl"
    outside.write_bytes(ok("outside-1") + b"\n")
    (events / "link.jsonl").symlink_to(outside)
    (events / "linked-dir").symlink_to(tmp_path)
    (events / ".upload.jsonl").write_bytes(ok("tmp-1") + b"\n")
    growing = events / "growing.jsonl"
    growing.write_bytes(ok("grow-1") + b"\n" + ok("grow-2")[:20])  # the writer is mid-line
    land(config, "reuse/a.jsonl", [ok("reused", ts="1997-10-02T00:00:00Z")])
    land(config, "reuse/b.jsonl", [ok("reused", ts="1997-10-01T00:00:00Z", item_id="2")])

    ingest_catalog(spark, config.lake, config.ingest_settings(), BATCH_TIME)
    [first] = ingest_events(spark, config.lake, config.ingest_settings(), BATCH_TIME)
    assert first.n_raw == first.n_clean + first.n_quarantined + first.n_duplicates
    silver = io.read_table(spark, config.lake, C.SILVER_EVENTS)
    ids = {r[C.EVENT_ID] for r in silver.where(~F.col(C.SOURCE_FILE).startswith("events/date=")).collect()}
    assert ids == {"odd-1", "gz-1", "gz-2", "grow-1", "reused"}
    reasons = {r[C.LINE_NO]: r[C.REASON] for r in io.read_table(spark, config.lake, C.SILVER_QUARANTINE)
               .where(F.col(C.SOURCE_FILE) == "events/odd/at 12:00.jsonl").collect()}
    assert reasons == {2: "value_out_of_range", 3: "invalid_unicode", 4: "value_out_of_range"}
    files = {r[C.SOURCE_FILE]: r for r in io.read_table(spark, config.lake, C.OPS_LANDING_FILES).collect()}
    skipped = {f: files[f][C.REASON] for f in files if files[f][C.STATUS] == "skipped"}
    assert skipped == {
        "events/broken.jsonl.gz": "corrupt_gzip", "events/link.jsonl": "symlink",
        "events/linked-dir": "symlink", "events/.upload.jsonl": "temporary_name"}
    assert files["events/growing.jsonl"][C.PENDING_BYTES] == 20
    assert io.read_table(spark, config.lake, C.BRONZE_EVENTS_RAW).where(F.col(C.SOURCE_FILE).contains("outside")).count() == 0
    # a reused id: the earliest event wins whatever the file names, and the conflict is visible
    kept = silver.where(F.col(C.EVENT_ID) == "reused").collect()[0]
    assert kept[C.SOURCE_FILE] == "events/reuse/b.jsonl"
    [dup] = io.read_table(spark, config.lake, C.SILVER_DUPLICATES).where(F.col(C.EVENT_ID) == "reused").collect()
    assert dup[C.CONFLICT] is True and dup[C.KEPT_CONTENT_HASH] == kept[C.CONTENT_HASH] != dup[C.CONTENT_HASH]
    report = quarantine_report(config)  # what `uig quarantine` shows
    assert [r[C.EVENT_ID] for r in report["conflicting_duplicates"]] == ["reused"]
    assert {r[C.SOURCE_FILE] for r in report["landing_files"]} == set(skipped) | {"events/growing.jsonl"}

    # the writer finishes its line and appends another: each is ingested exactly once
    with growing.open("ab") as fh:
        fh.write(ok("grow-2")[20:] + b"\n" + ok("grow-3") + b"\n")
    [second] = ingest_events(spark, config.lake, config.ingest_settings(), BATCH_TIME)
    assert (second.n_raw, second.n_clean) == (2, 2)
    grown = io.read_table(spark, config.lake, C.SILVER_EVENTS).where(F.col(C.SOURCE_FILE) == "events/growing.jsonl")
    assert sorted((r[C.LINE_NO], r[C.EVENT_ID]) for r in grown.collect()) == [(1, "grow-1"), (2, "grow-2"), (3, "grow-3")]
    assert ingest_events(spark, config.lake, config.ingest_settings(), BATCH_TIME) == []
