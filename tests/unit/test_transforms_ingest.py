"""Ingest transforms on small hand-written frames (real local Spark)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uig_common import names as C
from spark_jobs.landing import Segment
from spark_jobs.schemas import PARSED_EVENTS, SEGMENT, SILVER_EVENTS
from spark_jobs.transforms.ingest import (
    _utf8_valid,
    bronze_rows,
    flag_unknown_items,
    parse_events,
    split_duplicates,
    to_silver_events,
)
from spark_jobs.transforms.lines import pseudonymise_user_id

T = datetime(1997, 10, 16, tzinfo=timezone.utc)


def parsed_row(event_id: str, line_no: int, item_id: str | None = "1", file: str = "a.jsonl", batch: str = "b1",
               content: str = "h", ts: datetime = datetime(1997, 10, 1)):
    return {
        C.BATCH_ID: batch, C.SOURCE_FILE: file, C.LINE_NO: line_no, C.EVENT_ID: event_id, C.USER_KEY: "k",
        C.EVENT_TYPE: "view", C.ITEM_ID: item_id, C.QUERY: None, C.RATING: None,
        C.TS: ts, C.SOURCE: None, C.CONTENT_HASH: content, C.REASON: None, C.DETAIL: None,
        C.PREVIEW: None, C.BYTE_LENGTH: 10,
    }


def test_bronze_rows_keep_every_line_and_its_bytes(spark, tmp_path):
    landing = tmp_path / "landing"
    (landing / "events").mkdir(parents=True)
    content = b'{"x": 1}\n\n\xff\xfe bad\n' + b"y" * 100 + b"\n"
    (landing / "events" / "a:b.jsonl").write_bytes(content)  # a name Hadoop paths cannot hold
    segment = Segment("events/a:b.jsonl", 0, len(content), 1, 4, "none", "-")
    plan = spark.createDataFrame([segment.as_dict()], SEGMENT)
    rows = sorted(bronze_rows(plan, "b1", T, str(landing), max_line_bytes=64).collect(), key=lambda r: r[C.LINE_NO])
    assert [r[C.LINE_NO] for r in rows] == [1, 2, 3, 4]
    assert {r[C.SOURCE_FILE] for r in rows} == {"events/a:b.jsonl"}
    assert bytes(rows[2][C.RAW_BYTES]) == b"\xff\xfe bad" and rows[2][C.UTF8_VALID] is False
    assert bytes(rows[0][C.RAW_BYTES]) == b'{"x": 1}' and rows[1][C.BYTE_LENGTH] == 0 and rows[0][C.LINE_SHA256] is None
    # an oversized line keeps a bounded prefix, its true length and its hash
    assert (len(rows[3][C.RAW_BYTES]), rows[3][C.BYTE_LENGTH]) == (64, 100)
    assert rows[3][C.LINE_SHA256] == hashlib.sha256(b"y" * 100).hexdigest()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=12), st.text(max_size=6).map(str.encode))
                .map(lambda b: b.replace(b"\n", b"")), max_size=8))
def test_utf8_valid_judges_each_line_as_decoding_it_alone(lines):
    # lines of random bytes and of encoded text (multi-byte sequences, valid); the oracle: a line
    # is valid exactly when a lossy decode (U+FFFD for bad bytes) gives its own bytes back
    assert _utf8_valid(lines) == [line.decode("utf-8", "replace").encode() == line for line in lines]
    assert _utf8_valid([b"\xe2\x82", b"\xac"]) == [False, False]


def test_parse_events_hashes_users_and_keeps_reasons(spark):
    good = json.dumps({"event_id": "e1", "user_id": "42", "event_type": "view", "item_id": "1", "ts": 875_000_000})
    bad = b'{"user_id": "42", oops'
    rows = [("b1", "f", 1, good.encode(), len(good)), ("b1", "f", 2, bad, len(bad)), ("b1", "f", 3, b"{", 10**8)]
    bronze = spark.createDataFrame(rows, f"{C.BATCH_ID} string, {C.SOURCE_FILE} string, {C.LINE_NO} long, {C.RAW_BYTES} binary, {C.BYTE_LENGTH} long")
    out = {r[C.LINE_NO]: r for r in parse_events(bronze, user_salt="s", logical_time=T, max_line_bytes=4096, future_tolerance_seconds=0).collect()}
    assert out[1][C.USER_KEY] == pseudonymise_user_id("s", "42") and out[1][C.REASON] is None
    assert out[1][C.CONTENT_HASH] and out[1][C.PREVIEW] is None
    assert out[2][C.REASON] == "invalid_json" and out[2][C.PREVIEW] == '{"user_id": "<redacted>", oops'
    assert out[3][C.REASON] == "line_too_long" and out[3][C.BYTE_LENGTH] == 10**8  # judged by its true length


def test_unknown_items_are_flagged_but_searches_are_not(spark):
    parsed = spark.createDataFrame([parsed_row("e1", 1, "1"), parsed_row("e2", 2, "999"), parsed_row("e3", 3, None)], PARSED_EVENTS)
    items = spark.createDataFrame([("1",)], f"{C.ITEM_ID} string")
    reasons = {r[C.EVENT_ID]: r[C.REASON] for r in flag_unknown_items(parsed, items).collect()}
    assert reasons == {"e1": None, "e2": "unknown_item_id", "e3": None}


@pytest.mark.parametrize("few_rows", [False, True])  # the stored ids joined as they are, or cut to the batch's first
def test_duplicates_within_and_across_batches(spark, few_rows):
    valid = spark.createDataFrame(
        [parsed_row("e1", 1), parsed_row("e1", 5), parsed_row("e2", 2, file="b.jsonl"), parsed_row("old", 3)], PARSED_EVENTS
    )
    existing = spark.createDataFrame(
        [{**{f: None for f in SILVER_EVENTS.fieldNames()}, C.EVENT_ID: "old", C.BATCH_ID: "b0", C.CONTENT_HASH: "h"},
         {**{f: None for f in SILVER_EVENTS.fieldNames()}, C.EVENT_ID: "e2", C.BATCH_ID: "b1", C.CONTENT_HASH: "h"}],
        SILVER_EVENTS,
    )
    clean, dups = split_duplicates(valid, existing, "b1", few_rows=few_rows)
    assert sorted((r[C.EVENT_ID], r[C.LINE_NO]) for r in clean.collect()) == [("e1", 1), ("e2", 2)]
    assert sorted((r[C.EVENT_ID], r[C.LINE_NO], r[C.DUPLICATE_OF_BATCH], r[C.CONFLICT]) for r in dups.collect()) == [
        ("e1", 5, "b1", False),
        ("old", 3, "b0", False),
    ]


@pytest.mark.parametrize("files", [("a.jsonl", "z.jsonl"), ("z.jsonl", "a.jsonl")])
def test_conflicting_duplicates_keep_the_earliest_event_whatever_the_file_order(spark, files):
    early, late = datetime(1997, 10, 1), datetime(1997, 10, 3)
    valid = spark.createDataFrame(
        [parsed_row("e1", 1, file=files[0], content="late", ts=late), parsed_row("e1", 1, file=files[1], content="early", ts=early)],
        PARSED_EVENTS,
    )
    existing = spark.createDataFrame([], SILVER_EVENTS)
    clean, dups = split_duplicates(valid, existing, "b1")
    assert [r[C.CONTENT_HASH] for r in clean.collect()] == ["early"]
    [dup] = dups.collect()
    assert (dup[C.CONTENT_HASH], dup[C.KEPT_CONTENT_HASH], dup[C.CONFLICT]) == ("late", "early", True)


@pytest.mark.parametrize("few_rows", [False, True])
def test_a_conflict_with_an_earlier_batch_keeps_the_stored_event(spark, few_rows):
    valid = spark.createDataFrame([parsed_row("e1", 1, content="new")], PARSED_EVENTS)
    stored = {**{f: None for f in SILVER_EVENTS.fieldNames()}, C.EVENT_ID: "e1", C.BATCH_ID: "b0", C.CONTENT_HASH: "old"}
    clean, dups = split_duplicates(valid, spark.createDataFrame([stored], SILVER_EVENTS), "b1", few_rows=few_rows)
    assert clean.count() == 0
    [dup] = dups.collect()
    assert (dup[C.DUPLICATE_OF_BATCH], dup[C.KEPT_CONTENT_HASH], dup[C.CONFLICT]) == ("b0", "old", True)


@pytest.mark.parametrize(("watermark", "late"), [(None, False), (datetime(1997, 10, 2, tzinfo=timezone.utc), True)])
def test_silver_rows_flag_late_events(spark, watermark, late):
    clean = spark.createDataFrame([parsed_row("e1", 1)], PARSED_EVENTS)
    row = to_silver_events(clean, batch_seq=3, ingested_at=T, watermark_before=watermark).collect()[0]
    assert row[C.IS_LATE] is late and row[C.BATCH_SEQ] == 3 and str(row[C.EVENT_DATE]) == "1997-10-01"


@pytest.mark.parametrize("salt", ["s", "test-salt", "ключ", "x" * 64, "long-" * 30])
def test_the_spark_user_key_equals_the_python_keyed_hash(spark, salt):
    """The catalog hashes user ids in Spark (no Python worker); the events in the parse: same keys."""
    from spark_jobs.transforms.catalog import user_key_column

    ids = ["42", "1", "", "user 7", "ünïcødé-ユーザー", "9" * 200]
    frame = spark.createDataFrame([(i,) for i in ids], "user_id string")
    keys = [r[0] for r in frame.select(user_key_column(frame["user_id"], salt)).collect()]
    assert keys == [pseudonymise_user_id(salt, i) for i in ids]
